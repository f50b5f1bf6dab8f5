// dacer2 CPU compute kernels (plain loops, no torch headers; see kernels.h for the layouts).
//
// sample_chain_rows fuses, per row, the whole acting chain: the observation's share of layer 1 once per
// call (it is the same for all T steps), layer 1 = that share + the per-step bias (time embedding's share +
// bias, precomputed in the packed buffer) + x @ w1x_t, the hidden mish MLP in axpy form over transposed
// weights, the posterior update, in-op counter-based chain noise and the alpha-noise + clip.
// The batched pieces below are the elementwise halves of the GEMM paths in ops.cpp (layer 1 with the x share
// folded in + mish and mish' from one exp, posterior step and its backward, two-stream delta masking, L_g).
//
// Measured gain (2-core AMD EPYC Zen 4, AVX2, quiet machine: the benchmark alone, load average 1.0-1.4; torch 2.13
// CPU; 2026-11-30; medians, ratios against the eager reference in the same run; every row and the load log are in
// benchmarks/results/cpu-amd-epyc-2c.{md,load.txt}, the figures docs/performance.md quotes):
//   acting, batch 1, 1 thread, obs 17 / act 6 / 3x256 mish / T=5, DACER2Agent.act: 1.82 ms -> 98 us (19x).
//     Bound: the ten 256x256 matvecs alone stream 2.6 MB from L2 and take ~51 us here (docs/performance.md).
//   acting in bf16, batch 1, 1 thread, same dims, Policy.act (sample_chain_rows_bf16 against the bf16 GEMM path it
//     replaced below batch 16; 2-core AMD EPYC Zen 5, AVX512-BF16 unused by this x86-64-v3 build, trainings paused,
//     2026-12-05): 275 us -> 32.6 us (8.4x); fp32's row kernel in the same run: 38.5 us.
//   critic action-gradient, min mode, batch 256: 15.8 -> 7.4 ms (2.1x); the backward runs only over each
//     critic's own rows (halves the backward GEMMs).
//   full update, batch 256 (critic + policy L_q + L_g, delay 1): 206 -> 112 ms at 1 thread (1.8x), 138 -> 86 ms
//     at 2 threads (1.6x); Humanoid dims (348/17), T = 20: 1039 -> 359 ms (2.9x).
#include "kernels.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace dacer2 {

template <typename T>
void fill_normal(uint64_t seed, uint64_t offset, int64_t begin, int64_t end, T* out) {
  for (int64_t i = begin; i < end; ++i) out[i] = normal_at<T>(seed, offset + static_cast<uint64_t>(i));
}

// out[0:N] = bias + sum_k in[k] * w_t[k, 0:N]   (axpy form; w_t is [K, N] row-major)
template <typename T>
static inline void matvec_axpy(const T* __restrict in, int64_t K, const T* __restrict w_t, const T* __restrict bias,
                               int64_t N, T* __restrict out) {
  // Column blocks of 64 outputs whose accumulators stay in registers across the whole k loop: only the weights
  // stream from cache (the plain axpy form also loads and stores `out` once per k).
  constexpr int64_t JB = 64;
  int64_t j0 = 0;
  for (; j0 + JB <= N; j0 += JB) {
    T acc[JB];
    for (int64_t jj = 0; jj < JB; ++jj) acc[jj] = bias[j0 + jj];
    for (int64_t k = 0; k < K; ++k) {
      const T a = in[k];
      const T* __restrict row = w_t + k * N + j0;
      for (int64_t jj = 0; jj < JB; ++jj) acc[jj] += a * row[jj];
    }
    for (int64_t jj = 0; jj < JB; ++jj) out[j0 + jj] = acc[jj];
  }
  if (j0 == N) return;
  for (int64_t j = j0; j < N; ++j) out[j] = bias[j];
  for (int64_t k = 0; k < K; ++k) {
    const T a = in[k];
    const T* __restrict row = w_t + k * N;
    for (int64_t j = j0; j < N; ++j) out[j] += a * row[j];
  }
}

// out[0:N] = bias + bf16(sum_k in[k] * w_t[k, 0:N]) with bf16 weights (raw bits, widened in registers) and
// inputs already rounded to bf16: what a bf16 GEMM with fp32 accumulation and a bf16 product computes, with half
// the weight bytes of the fp32 form to stream. Weights are read as 32-bit words of two columns each: the high
// column is the word with its low half cleared, the low column the word shifted up, one instruction each.
static inline void matvec_bf16(const float* __restrict in, int64_t K, const uint16_t* __restrict w_t,
                               const float* __restrict bias, int64_t N, float* __restrict out) {
  constexpr int64_t JB = 64, WB = JB / 2;
  int64_t j0 = 0;
  for (; j0 + JB <= N; j0 += JB) {
    float even[WB] = {}, odd[WB] = {};
    for (int64_t k = 0; k < K; ++k) {
      const float a = in[k];
      const uint16_t* __restrict row = w_t + k * N + j0;
      for (int64_t i = 0; i < WB; ++i) {
        uint32_t w;
        std::memcpy(&w, row + 2 * i, sizeof w);  // columns 2i (low half, little-endian) and 2i + 1
        even[i] += a * bits_to_float(w << 16);
        odd[i] += a * bits_to_float(w & 0xffff0000u);
      }
    }
    for (int64_t i = 0; i < WB; ++i) {
      out[j0 + 2 * i] = bias[j0 + 2 * i] + round_bf16(even[i]);
      out[j0 + 2 * i + 1] = bias[j0 + 2 * i + 1] + round_bf16(odd[i]);
    }
  }
  for (int64_t j = j0; j < N; ++j) {
    float acc = 0.f;
    for (int64_t k = 0; k < K; ++k) acc += in[k] * bf16_to_float(w_t[k * N + j]);
    out[j] = bias[j] + round_bf16(acc);
  }
}

// The acting chain per row; `matvec(offset, in, K, bias, N, out)` computes out = bias + in @ W for the weight
// matrix at `offset` in the packed buffer (the observation's share of layer 1, the hidden and output layers).
template <typename T, typename MatVec>
static void chain_rows(const T* obs, int64_t B, const T* packed, const ChainDims& d, const T* sched, T alpha_scale,
                       bool chain_noise, bool explore, uint64_t seed, uint64_t offset, const T* noise, T* out,
                       int64_t row_begin, int64_t row_end, const MatVec& matvec) {
  const int64_t S = d.S, A = d.A, Tn = d.T, L = d.L;
  const int64_t H1 = d.H[0];
  int64_t Hmax = 0;
  for (int64_t l = 0; l < L; ++l) Hmax = std::max(Hmax, d.H[l]);
  // Offsets into the packed buffer.
  const T* w1x = packed + S * H1;
  const T* sb = w1x + A * H1;
  int64_t off = (S + A + Tn) * H1;
  std::vector<int64_t> W(L);
  std::vector<const T*> bvec(L);
  for (int64_t l = 1; l < L; ++l) {
    W[l] = off;
    off += d.H[l - 1] * d.H[l];
    bvec[l] = packed + off;
    off += d.H[l];
  }
  const int64_t wo = off;
  const T* bo = packed + wo + d.H[L - 1] * A;

  std::vector<T> buf(H1 + 2 * Hmax + 3 * A + H1);
  T* P = buf.data();          // obs share of layer 1 [H1]
  T* ha = P + H1;             // ping
  T* hb = ha + Hmax;          // pong
  T* x = hb + Hmax;           // chain state [A]
  T* eps = x + A;             // [A]
  T* zero = eps + A;          // zeros [A] (reused as zero bias)
  T* zH = zero + A;           // zeros [H1]
  std::fill(zero, zero + A, T(0));
  std::fill(zH, zH + H1, T(0));

  for (int64_t b = row_begin; b < row_end; ++b) {
    const T* s = obs + b * S;
    matvec(0, s, S, zH, H1, P);
    auto draw = [&](int64_t j, int64_t a) -> T {
      const int64_t idx = (j * B + b) * A + a;
      return noise ? noise[idx] : normal_at<T>(seed, offset + static_cast<uint64_t>(idx));
    };
    for (int64_t a = 0; a < A; ++a) x[a] = draw(0, a);
    for (int64_t k = 0; k < Tn; ++k) {
      const int64_t t = Tn - 1 - k;
      // layer 1: P + step_bias[t] + x @ w1x_t, then mish
      const T* sbt = sb + t * H1;
      for (int64_t j = 0; j < H1; ++j) ha[j] = P[j] + sbt[j];
      for (int64_t a = 0; a < A; ++a) {
        const T xa = x[a];
        const T* __restrict row = w1x + a * H1;
        for (int64_t j = 0; j < H1; ++j) ha[j] += xa * row[j];
      }
      for (int64_t j = 0; j < H1; ++j) ha[j] = mish_val(ha[j]);
      T* cur = ha;
      T* nxt = hb;
      for (int64_t l = 1; l < L; ++l) {
        matvec(W[l], cur, d.H[l - 1], bvec[l], d.H[l], nxt);
        for (int64_t j = 0; j < d.H[l]; ++j) nxt[j] = mish_val(nxt[j]);
        std::swap(cur, nxt);
      }
      matvec(wo, cur, d.H[L - 1], bo, A, eps);
      const T cx = sched[t], ce = sched[Tn + t], c1 = sched[2 * Tn + t], c2 = sched[3 * Tn + t],
              sd = sched[4 * Tn + t];
      const bool add_noise = chain_noise && t > 0;
      for (int64_t a = 0; a < A; ++a) {
        T x0 = cx * x[a] - ce * eps[a];
        x0 = std::min(std::max(x0, T(-1)), T(1));
        T nx = c1 * x0 + c2 * x[a];
        if (add_noise) nx += sd * draw(k + 1, a);
        x[a] = nx;
      }
    }
    T* o = out + b * A;
    for (int64_t a = 0; a < A; ++a) {
      T v = x[a];
      if (explore) v = std::min(std::max(v + alpha_scale * draw(Tn, a), T(-1)), T(1));
      o[a] = v;
    }
  }
}

template <typename T>
void sample_chain_rows(const T* obs, int64_t B, const T* packed, const ChainDims& d, const T* sched,
                       T alpha_scale, bool chain_noise, bool explore, uint64_t seed, uint64_t offset,
                       const T* noise, T* out, int64_t row_begin, int64_t row_end) {
  chain_rows<T>(obs, B, packed, d, sched, alpha_scale, chain_noise, explore, seed, offset, noise, out, row_begin,
                row_end, [packed](int64_t w, const T* in, int64_t K, const T* bias, int64_t N, T* o) {
                  matvec_axpy(in, K, packed + w, bias, N, o);
                });
}

void sample_chain_rows_bf16(const float* obs, int64_t B, const float* packed, const uint16_t* packed_bf16,
                            const ChainDims& d, const float* sched, float alpha_scale, bool chain_noise,
                            bool explore, uint64_t seed, uint64_t offset, const float* noise, float* out,
                            int64_t row_begin, int64_t row_end) {
  int64_t widest = d.S;
  for (int64_t l = 0; l < d.L; ++l) widest = std::max(widest, d.H[l]);
  std::vector<float> rounded(widest);
  chain_rows<float>(obs, B, packed, d, sched, alpha_scale, chain_noise, explore, seed, offset, noise, out, row_begin,
                    row_end, [&](int64_t w, const float* in, int64_t K, const float* bias, int64_t N, float* o) {
                      for (int64_t k = 0; k < K; ++k) rounded[k] = round_bf16(in[k]);
                      matvec_bf16(rounded.data(), K, packed_bf16 + w, bias, N, o);
                    });
}

template <typename T>
void layer1_mish(const T* P, const T* bias, const T* x, const T* wx_t, int64_t A, int64_t H, T* h, T* d,
                 int64_t r0, int64_t r1) {
  std::vector<T> pre(H);
  for (int64_t r = r0; r < r1; ++r) {
    const T* pr = P + r * H;
    for (int64_t j = 0; j < H; ++j) pre[j] = pr[j] + bias[j];
    for (int64_t a = 0; a < A; ++a) {
      const T xa = x[r * A + a];
      const T* __restrict row = wx_t + a * H;
      for (int64_t j = 0; j < H; ++j) pre[j] += xa * row[j];
    }
    T* hr = h + r * H;
    if (d) {
      T* dr = d + r * H;
      for (int64_t j = 0; j < H; ++j) mish_both(pre[j], hr[j], dr[j]);
    } else {
      for (int64_t j = 0; j < H; ++j) hr[j] = mish_val(pre[j]);
    }
  }
}

template <typename T>
void mish_inplace(T* z, T* d, int64_t n0, int64_t n1) {
  if (d) {
    for (int64_t i = n0; i < n1; ++i) {
      T h, dd;
      mish_both(z[i], h, dd);
      z[i] = h;
      d[i] = dd;
    }
  } else {
    for (int64_t i = n0; i < n1; ++i) z[i] = mish_val(z[i]);
  }
}

template <typename T>
void posterior_step(const T* x, const T* eps, T cx, T ce, T c1, T c2, T sd, const T* z, T* x_next, int64_t n0,
                    int64_t n1) {
  for (int64_t i = n0; i < n1; ++i) {
    T x0 = std::min(std::max(cx * x[i] - ce * eps[i], T(-1)), T(1));
    T v = c1 * x0 + c2 * x[i];
    if (z) v += sd * z[i];
    x_next[i] = v;
  }
}

template <typename T>
void explore_clip(const T* x, const T* xi, T s, T* out, int64_t n0, int64_t n1) {
  for (int64_t i = n0; i < n1; ++i) out[i] = std::min(std::max(x[i] + s * xi[i], T(-1)), T(1));
}

template <typename T>
void posterior_step_backward(const T* x, const T* eps, T cx, T ce, T c1, T c2, const T* g, T* gx, T* geps,
                             int64_t n0, int64_t n1) {
  for (int64_t i = n0; i < n1; ++i) {
    const T v = cx * x[i] - ce * eps[i];
    // clamp passes the gradient inside [-1, 1] (torch.clamp: boundary values included)
    const T g0 = (v >= T(-1) && v <= T(1)) ? c1 * g[i] : T(0);
    gx[i] += c2 * g[i] + cx * g0;
    geps[i] = -ce * g0;
  }
}

template <typename T>
void mask_streams(T* delta, const T* d, int64_t streams, int64_t BH, T* sum, int64_t n0, int64_t n1) {
  for (int64_t s = 0; s < streams; ++s) {
    T* ds = delta + s * BH;
    for (int64_t i = n0; i < n1; ++i) ds[i] *= d[i];
  }
  if (sum) {
    for (int64_t i = n0; i < n1; ++i) {
      T acc = T(0);
      for (int64_t s = 0; s < streams; ++s) acc += delta[s * BH + i];
      sum[i] = acc;
    }
  }
}

template <typename T>
void colsum_add(const T* m, int64_t R, int64_t C, T* out, int64_t c0, int64_t c1) {
  for (int64_t r = 0; r < R; ++r) {
    const T* row = m + r * C;
    for (int64_t j = c0; j < c1; ++j) out[j] += row[j];
  }
}

// L_g's target for row r is -w_k g_r / (||g_r|| + 1e-8); this is its scalar factor.
template <typename T>
static inline T qgrad_target_scale(const T* gr, const T* w, int64_t r, int64_t B, int64_t A) {
  T nrm = T(0);
  for (int64_t a = 0; a < A; ++a) nrm += gr[a] * gr[a];
  return -w[r / B] / (std::sqrt(nrm) + T(1e-8));
}

template <typename T>
double qgrad_loss_rows(const T* eps, const T* g, const T* w, int64_t B, int64_t A, int64_t r0, int64_t r1) {
  double acc = 0.0;
  for (int64_t r = r0; r < r1; ++r) {
    const T* gr = g + r * A;
    const T* er = eps + r * A;
    const T scale = qgrad_target_scale(gr, w, r, B, A);
    for (int64_t a = 0; a < A; ++a) {
      const T e = er[a] - scale * gr[a];
      acc += static_cast<double>(e * e);
    }
  }
  return acc;
}

template <typename T>
void qgrad_loss_backward_rows(const T* eps, const T* g, const T* w, int64_t B, int64_t A, T scale, T* geps,
                              int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* gr = g + r * A;
    const T* er = eps + r * A;
    const T us = qgrad_target_scale(gr, w, r, B, A);
    for (int64_t a = 0; a < A; ++a) geps[r * A + a] = scale * T(2) * (er[a] - us * gr[a]);
  }
}

template <typename T>
void critic_select(const T* mu0, const T* mu1, int64_t mode, T* q, T* c0, T* c1, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    if (mode == 0) {  // min; ties go to critic 0 like torch.min's backward picks one index
      const bool first = mu0[r] <= mu1[r];
      q[r] = first ? mu0[r] : mu1[r];
      c0[r] = first ? T(1) : T(0);
      c1[r] = first ? T(0) : T(1);
    } else if (mode == 1) {  // mean
      q[r] = T(0.5) * (mu0[r] + mu1[r]);
      c0[r] = T(0.5);
      c1[r] = T(0.5);
    } else {  // q1
      q[r] = mu0[r];
      c0[r] = T(1);
      c1[r] = T(0);
    }
  }
}

template <typename T>
void outer_mask(const T* c, const T* w, int64_t wstride, const T* d, int64_t H, T* delta, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T cr = c[r];
    for (int64_t j = 0; j < H; ++j) delta[r * H + j] = cr * w[j * wstride] * d[r * H + j];
  }
}

template <typename T>
void mul_inplace(T* delta, const T* d, int64_t n0, int64_t n1) {
  for (int64_t i = n0; i < n1; ++i) delta[i] *= d[i];
}

#define DACER2_INSTANTIATE(T)                                                                                  \
  template void fill_normal<T>(uint64_t, uint64_t, int64_t, int64_t, T*);                                    \
  template void sample_chain_rows<T>(const T*, int64_t, const T*, const ChainDims&, const T*, T, bool, bool,  \
                                     uint64_t, uint64_t, const T*, T*, int64_t, int64_t);                      \
  template void layer1_mish<T>(const T*, const T*, const T*, const T*, int64_t, int64_t, T*, T*, int64_t,       \
                               int64_t);                                                                     \
  template void mish_inplace<T>(T*, T*, int64_t, int64_t);                                                   \
  template void posterior_step<T>(const T*, const T*, T, T, T, T, T, const T*, T*, int64_t, int64_t);         \
  template void explore_clip<T>(const T*, const T*, T, T*, int64_t, int64_t);                                \
  template void posterior_step_backward<T>(const T*, const T*, T, T, T, T, const T*, T*, T*, int64_t, int64_t); \
  template void mask_streams<T>(T*, const T*, int64_t, int64_t, T*, int64_t, int64_t);                       \
  template void colsum_add<T>(const T*, int64_t, int64_t, T*, int64_t, int64_t);                             \
  template double qgrad_loss_rows<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t);      \
  template void qgrad_loss_backward_rows<T>(const T*, const T*, const T*, int64_t, int64_t, T, T*, int64_t,   \
                                            int64_t);                                                        \
  template void critic_select<T>(const T*, const T*, int64_t, T*, T*, T*, int64_t, int64_t);                 \
  template void outer_mask<T>(const T*, const T*, int64_t, const T*, int64_t, T*, int64_t, int64_t);         \
  template void mul_inplace<T>(T*, const T*, int64_t, int64_t);

DACER2_INSTANTIATE(float)
DACER2_INSTANTIATE(double)

}  // namespace dacer2
