// Plain C++ compute kernels of dacer2's fused ops. No torch headers here (they cost ~20 s of compile per
// unit): these files see raw pointers only; csrc/ops.cpp is the only unit that includes ATen and does the
// GEMMs, the argument checks and the op registration.
//
// Layouts shared with dacer2/ops (see dacer2/ops/packing.py, the single source of truth):
//   dims   = [S, A, T, H1, ..., HL]                       (L >= 1 hidden layers)
//   packed = w1o_t [S,H1] | w1x_t [A,H1] | step_bias [T,H1] | (W_l_t [H_{l-1},H_l] | b_l [H_l]) l=2..L
//            | wo_t [HL,A] | bo [A]                           (every weight transposed: [in, out])
//   sched  = [5, T]: rows coef_x, coef_eps, c1, c2, std, indexed by step t
//   chain arrays [T, B, A] are indexed by visit order k = 0..T-1, step t = T-1-k.
//   noise  = [T+1, B, A]: row 0 the initial x, row k+1 (k < T-1) the posterior noise after visit k,
//            row T the exploration noise xi.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace dacer2 {

// ---- counter-based normal noise (bit-identical integer part in C++, Triton and the torch twin) ------------
inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// z(seed, n): one N(0,1) draw for 64-bit counter n.
template <typename T>
inline T normal_at(uint64_t seed, uint64_t n) {
  const uint32_t lo = static_cast<uint32_t>(n), hi = static_cast<uint32_t>(n >> 32);
  const uint32_t key = hash32(static_cast<uint32_t>(seed) ^ hash32(hi ^ 0x68bc21ebu));
  const uint32_t a = hash32(key ^ hash32(lo));
  const uint32_t b = hash32(a ^ 0x9e3779b9u);
  const float u1 = static_cast<float>((a >> 8) + 1u) * 5.9604644775390625e-8f;  // (0, 1]
  const float u2 = static_cast<float>(b >> 8) * 5.9604644775390625e-8f;         // [0, 1)
  const T r = std::sqrt(T(-2) * std::log(static_cast<T>(u1)));
  return r * std::cos(static_cast<T>(6.283185307179586) * static_cast<T>(u2));
}

template <typename T>
void fill_normal(uint64_t seed, uint64_t offset, int64_t begin, int64_t end, T* out);

// ---- bfloat16 as raw bits: widening is a shift; rounding is to nearest even (as c10::BFloat16 rounds) ---------
inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float bf16_to_float(uint16_t bits) { return bits_to_float(static_cast<uint32_t>(bits) << 16); }
inline float round_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return f;  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ---- mish with one exp: tanh(softplus(x)) = n / (n + 2), n = e^x (e^x + 2) ---------------------------------
template <typename T>
inline T mish_val(T x) {
  const T e = std::exp(x < T(20) ? x : T(20));
  const T n = e * (e + T(2));
  return x * n / (n + T(2));
}
template <typename T>
inline void mish_both(T x, T& h, T& d) {
  const T e = std::exp(x < T(20) ? x : T(20));
  const T n = e * (e + T(2));
  const T tq = n / (n + T(2));
  h = x * tq;
  d = tq + x * (T(1) - tq * tq) * e / (T(1) + e);
}

// ---- batch-1-style sampler: whole chain per row in plain loops (no GEMM library) ------------------------
struct ChainDims {
  int64_t S, A, T, L;
  const int64_t* H;  // L hidden sizes
};

template <typename T>
void sample_chain_rows(const T* obs, int64_t B, const T* packed, const ChainDims& d, const T* sched,
                       T alpha_scale, bool chain_noise, bool explore, uint64_t seed, uint64_t offset,
                       const T* noise, T* out, int64_t row_begin, int64_t row_end);

// The same chain with bf16 GEMM semantics, for acting in bf16 at small batch: the weight matrices (the
// observation's share of layer 1, the hidden and the output layers) come from packed_bf16, the packed buffer
// rounded to bf16 (raw bits, same offsets: half the bytes to stream); their inputs and products are rounded to
// bf16 as the GEMM path rounds them, with fp32 accumulation. Biases, the step bias and the action share x @ w1x
// stay fp32, read from packed.
void sample_chain_rows_bf16(const float* obs, int64_t B, const float* packed, const uint16_t* packed_bf16,
                            const ChainDims& d, const float* sched, float alpha_scale, bool chain_noise,
                            bool explore, uint64_t seed, uint64_t offset, const float* noise, float* out,
                            int64_t row_begin, int64_t row_end);

// ---- elementwise pieces of the batched (GEMM) paths, each over rows [r0, r1) ------------------------------
// h = mish(pre), d = mish'(pre) with pre = P + bias + x @ wx_t  (wx_t [A, H]); d may be null.
template <typename T>
void layer1_mish(const T* P, const T* bias, const T* x, const T* wx_t, int64_t A, int64_t H, T* h, T* d,
                 int64_t r0, int64_t r1);
// In place: z -> mish(z), d = mish'(z) (d may be null).
template <typename T>
void mish_inplace(T* z, T* d, int64_t n0, int64_t n1);
// x_next = c1 clip(cx x - ce eps, -1, 1) + c2 x + std z  (z may be null), elements [n0, n1).
template <typename T>
void posterior_step(const T* x, const T* eps, T cx, T ce, T c1, T c2, T sd, const T* z, T* x_next, int64_t n0,
                    int64_t n1);
// out = clip(x + s xi, -1, 1)
template <typename T>
void explore_clip(const T* x, const T* xi, T s, T* out, int64_t n0, int64_t n1);
// Backward of posterior_step: given g = dL/dx_next, add dL/dx (direct part) into gx, write dL/deps into geps.
template <typename T>
void posterior_step_backward(const T* x, const T* eps, T cx, T ce, T c1, T c2, const T* g, T* gx, T* geps,
                             int64_t n0, int64_t n1);
// delta[s] *= d for each of `streams` stacked [B, H] blocks; sum (if non-null) = sum over streams.
template <typename T>
void mask_streams(T* delta, const T* d, int64_t streams, int64_t BH, T* sum, int64_t n0, int64_t n1);
// out[j] += sum_r m[r, j] (column sums, [R, C] row-major), columns [c0, c1).
template <typename T>
void colsum_add(const T* m, int64_t R, int64_t C, T* out, int64_t c0, int64_t c1);

// ---- L_g: mean over (T, B, A) of (eps - u)^2, u = -w_t g / (||g|| + 1e-8) ---------------------------------
// w is indexed by visit order k. Returns the partial sum over rows [r0, r1) of the [T*B] rows.
template <typename T>
double qgrad_loss_rows(const T* eps, const T* g, const T* w, int64_t B, int64_t A, int64_t r0, int64_t r1);
// geps = scale * 2 (eps - u) over rows [r0, r1).
template <typename T>
void qgrad_loss_backward_rows(const T* eps, const T* g, const T* w, int64_t B, int64_t A, T scale, T* geps,
                              int64_t r0, int64_t r1);

// ---- critic action-gradient pieces ------------------------------------------------------------------------
// Per-row mu of both critics -> q (min / mean / q1) and the upstream coefficients c0, c1 for each critic.
template <typename T>
void critic_select(const T* mu0, const T* mu1, int64_t mode, T* q, T* c0, T* c1, int64_t r0, int64_t r1);
// delta[r, j] = c[r] * w[j] * d[r, j]   (backward of the last layer's mu column times mish')
template <typename T>
void outer_mask(const T* c, const T* w, int64_t wstride, const T* d, int64_t H, T* delta, int64_t r0, int64_t r1);
// delta *= d elementwise
template <typename T>
void mul_inplace(T* delta, const T* d, int64_t n0, int64_t n1);

}  // namespace dacer2
