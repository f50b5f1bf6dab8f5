// CPU implementations of the dacer2:: ops (schemas are defined in Python, dacer2/ops/_registry.py, so the
// reference twins work without this extension). This is the only unit that includes ATen: it checks the
// arguments, allocates outputs, runs the GEMMs through ATen and calls the plain-loop kernels of kernels.cpp
// for everything elementwise. Layouts: see kernels.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <vector>

#include "kernels.h"

namespace dacer2 {
namespace {

using at::Tensor;

struct Layout {
  int64_t S, A, T, L;
  std::vector<int64_t> H;
  int64_t numel;  // packed size
  // offsets into packed
  int64_t w1o, w1x, sb;
  std::vector<int64_t> W, b;  // index l = 1..L-1
  int64_t wo, bo;
  int64_t sumH;
};

Layout make_layout(c10::IntArrayRef dims) {
  TORCH_CHECK(dims.size() >= 4, "dacer2: dims must be [S, A, T, H1, ..., HL] with at least one hidden layer, got ",
              dims.size(), " entries");
  Layout l;
  l.S = dims[0];
  l.A = dims[1];
  l.T = dims[2];
  l.L = static_cast<int64_t>(dims.size()) - 3;
  TORCH_CHECK(l.S >= 1 && l.A >= 1 && l.T >= 1, "dacer2: dims S, A, T must be positive, got ", dims);
  for (int64_t i = 0; i < l.L; ++i) {
    TORCH_CHECK(dims[3 + i] >= 1, "dacer2: hidden sizes must be positive, got ", dims);
    l.H.push_back(dims[3 + i]);
  }
  int64_t off = 0;
  l.w1o = off;
  off += l.S * l.H[0];
  l.w1x = off;
  off += l.A * l.H[0];
  l.sb = off;
  off += l.T * l.H[0];
  l.W.assign(l.L, 0);
  l.b.assign(l.L, 0);
  for (int64_t i = 1; i < l.L; ++i) {
    l.W[i] = off;
    off += l.H[i - 1] * l.H[i];
    l.b[i] = off;
    off += l.H[i];
  }
  l.wo = off;
  off += l.H[l.L - 1] * l.A;
  l.bo = off;
  off += l.A;
  l.numel = off;
  l.sumH = 0;
  for (auto h : l.H) l.sumH += h;
  return l;
}

void check_float(const Tensor& t, const char* name, const Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "dacer2: ", name,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "dacer2: ", name, " has dtype ", t.scalar_type(),
              " but obs has ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "dacer2: ", name, " is on ", t.device(), " but obs is on ", ref.device());
  TORCH_CHECK(t.is_contiguous(), "dacer2: ", name, " must be contiguous");
}

// check_float, then the exact shape.
void check_tensor(const Tensor& t, const char* name, const Tensor& ref, std::vector<int64_t> shape) {
  check_float(t, name, ref);
  TORCH_CHECK(t.sizes().vec() == shape, "dacer2: ", name, " must have shape ", c10::IntArrayRef(shape), ", got ",
              t.sizes());
}

void check_common(const Tensor& obs, const Tensor& packed, const Tensor& sched, const Layout& l) {
  TORCH_CHECK(obs.dim() == 2 && obs.size(1) == l.S, "dacer2: obs must be [B, ", l.S, "], got ", obs.sizes());
  check_float(obs, "obs", obs);
  check_tensor(packed, "packed", obs, {l.numel});
  check_tensor(sched, "sched", obs, {5, l.T});
}

// [rows, cols] view of the flat packed buffer at offset off.
Tensor view2(const Tensor& flat, int64_t off, int64_t rows, int64_t cols) {
  return flat.narrow(0, off, rows * cols).view({rows, cols});
}

// The op's GEMMs at its precision (dacer2/algo/precision.py): fp32 straight through ATen, or, with a gemm dtype
// (bf16), both operands rounded to it, oneDNN's fp32 accumulation, the product rounded to it and widened back.
// Weight operands come from `weights(packed)`, cast once per call; biases and the elementwise loops stay fp32.
struct Gemm {
  std::optional<at::ScalarType> dtype;

  Tensor weights(const Tensor& packed) const { return dtype ? packed.to(*dtype) : packed; }
  Tensor mm(const Tensor& a, const Tensor& b) const {
    return dtype ? mm_rounded(a, b).to(a.scalar_type()) : a.mm(b);
  }
  Tensor mm_rounded(const Tensor& a, const Tensor& b) const { return at::mm(a.to(*dtype), b.to(*dtype)); }
  // With a gemm dtype the widening to fp32 happens inside the add (type promotion): the same values as widening
  // first, one pass and one temporary fewer.
  void addmm_out(Tensor out, const Tensor& bias, const Tensor& a, const Tensor& b) const {  // out = bias + a b
    if (dtype) {
      at::add_out(out, mm_rounded(a, b), bias);
    } else {
      at::addmm_out(out, bias, a, b);
    }
  }
  void addmm_(const Tensor& acc, const Tensor& a, const Tensor& b) const {  // acc += a b
    if (dtype) {
      acc.add_(mm_rounded(a, b));
    } else {
      acc.addmm_(a, b);
    }
  }
};

void check_gemm_dtype(const std::optional<at::ScalarType>& dtype) {
  TORCH_CHECK(!dtype || *dtype == at::kBFloat16, "dacer2: gemm_dtype must be None (the inputs' dtype) or bfloat16, got ",
              *dtype);
}

template <typename T>
T* ptr(const Tensor& t) {
  return t.data_ptr<T>();
}

template <typename F>
void par_rows(int64_t n, int64_t grain, const F& f) {
  if (n <= grain) {
    f(0, n);
  } else {
    at::parallel_for(0, n, grain, f);
  }
}

// ---- the chain forward over a batch with GEMMs (training forward, and large-batch acting) ----------------
template <typename T>
void chain_forward_impl(const Tensor& obs, const Tensor& packed, const Layout& l, const Tensor& sched,
                        const Tensor& noise, bool chain_noise, const Gemm& g, Tensor& action, Tensor* visited,
                        Tensor* eps_out, Tensor* saved_h, Tensor* saved_d) {
  const int64_t B = obs.size(0), A = l.A, Tn = l.T, L = l.L;
  const T* pk = packed.data_ptr<T>();
  const T* sc = sched.data_ptr<T>();
  const T* nz = noise.data_ptr<T>();
  const Tensor wg = g.weights(packed);
  Tensor P = g.mm(obs, view2(wg, l.w1o, l.S, l.H[0]));  // the observation's share, once for all steps
  const T* Pp = P.data_ptr<T>();
  Tensor x = at::empty({B, A}, obs.options());
  std::copy(nz, nz + B * A, x.data_ptr<T>());
  Tensor eps_tmp = at::empty({B, A}, obs.options());
  std::vector<Tensor> tmp_h(L);
  if (!saved_h)
    for (int64_t i = 0; i < L; ++i) tmp_h[i] = at::empty({B, l.H[i]}, obs.options());
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, l.sumH));
  for (int64_t k = 0; k < Tn; ++k) {
    const int64_t t = Tn - 1 - k;
    if (visited) std::copy(x.data_ptr<T>(), x.data_ptr<T>() + B * A, visited->data_ptr<T>() + k * B * A);
    auto layer = [&](int64_t i, bool d) -> Tensor {
      int64_t off = k * B * l.sumH;
      for (int64_t j = 0; j < i; ++j) off += B * l.H[j];
      Tensor* src = d ? saved_d : saved_h;
      return src->narrow(0, off, B * l.H[i]).view({B, l.H[i]});
    };
    Tensor h = saved_h ? layer(0, false) : tmp_h[0];
    T* dptr = saved_d ? ptr<T>(layer(0, true)) : nullptr;
    {
      T* hp = h.data_ptr<T>();
      const T* xp = x.data_ptr<T>();
      const T* sbt = pk + l.sb + t * l.H[0];
      const T* w1x = pk + l.w1x;
      const int64_t H1 = l.H[0];
      par_rows(B, grain, [&](int64_t r0, int64_t r1) {
        layer1_mish<T>(Pp, sbt, xp, w1x, A, H1, hp, dptr, r0, r1);
      });
    }
    for (int64_t i = 1; i < L; ++i) {
      Tensor hn = saved_h ? layer(i, false) : tmp_h[i];
      g.addmm_out(hn, view2(packed, l.b[i], 1, l.H[i]), h, view2(wg, l.W[i], l.H[i - 1], l.H[i]));
      T* hp = hn.data_ptr<T>();
      T* dp = saved_d ? ptr<T>(layer(i, true)) : nullptr;
      par_rows(B * l.H[i], 16384, [&](int64_t n0, int64_t n1) { mish_inplace<T>(hp, dp, n0, n1); });
      h = hn;
    }
    Tensor e = eps_out ? eps_out->select(0, k) : eps_tmp;
    g.addmm_out(e, view2(packed, l.bo, 1, A), h, view2(wg, l.wo, l.H[L - 1], A));
    const bool add = chain_noise && t > 0;
    Tensor xn = (k == Tn - 1) ? action : at::empty({B, A}, obs.options());
    posterior_step<T>(x.data_ptr<T>(), e.data_ptr<T>(), sc[t], sc[Tn + t], sc[2 * Tn + t], sc[3 * Tn + t],
                      sc[4 * Tn + t], add ? nz + (k + 1) * B * A : nullptr, xn.data_ptr<T>(), 0, B * A);
    x = xn;
  }
}

// ---- op: sample_chain (acting, no grad) -------------------------------------------------------------------
Tensor sample_chain_cpu(const Tensor& obs, const Tensor& packed, c10::IntArrayRef dims, const Tensor& sched,
                        const Tensor& alpha_scale, const Tensor& rng, const std::optional<Tensor>& noise,
                        bool chain_noise, bool explore, std::optional<at::ScalarType> gemm_dtype,
                        const std::optional<Tensor>& packed_gemm) {
  const Layout l = make_layout(dims);
  check_gemm_dtype(gemm_dtype);
  if (packed_gemm.has_value()) {
    TORCH_CHECK(gemm_dtype.has_value() && packed_gemm->scalar_type() == *gemm_dtype,
                "dacer2: packed_gemm must be packed cast to gemm_dtype, got ", packed_gemm->scalar_type(),
                " with gemm_dtype ", gemm_dtype ? c10::toString(*gemm_dtype) : "None");
    TORCH_CHECK(packed_gemm->numel() == packed.numel() && packed_gemm->is_contiguous(),
                "dacer2: packed_gemm must be a contiguous copy of packed (", packed.numel(), " values), got shape ",
                packed_gemm->sizes());
    TORCH_CHECK(packed_gemm->device() == obs.device(), "dacer2: packed_gemm is on ", packed_gemm->device(),
                " but obs is on ", obs.device());
  }
  check_common(obs, packed, sched, l);
  check_float(alpha_scale, "alpha_scale", obs);
  TORCH_CHECK(alpha_scale.numel() == 1, "dacer2: alpha_scale must hold one value, got shape ", alpha_scale.sizes());
  TORCH_CHECK(rng.scalar_type() == at::kLong && rng.numel() == 2 && rng.is_contiguous(),
              "dacer2: rng must be a contiguous int64 tensor [seed, offset], got ", rng.scalar_type(), " ",
              rng.sizes());
  TORCH_CHECK(rng.device() == obs.device(), "dacer2: rng is on ", rng.device(), " but obs is on ", obs.device());
  const int64_t B = obs.size(0), A = l.A, Tn = l.T;
  if (noise.has_value()) check_tensor(*noise, "noise", obs, {Tn + 1, B, A});
  Tensor out = at::empty({B, A}, obs.options());
  if (B == 0) return out;
  int64_t* st = rng.data_ptr<int64_t>();
  const uint64_t seed = static_cast<uint64_t>(st[0]), offset = static_cast<uint64_t>(st[1]);
  if (!noise.has_value()) st[1] = static_cast<int64_t>(offset + static_cast<uint64_t>((Tn + 1) * B * A));
  if (B < 16 && packed_gemm.has_value() && obs.scalar_type() == at::kFloat) {
    // Small batches in bf16 (acting in the environment): the chain per row in plain loops that read the caller's
    // bf16 copy of the weights (casting per call would cost more than the chain itself).
    std::vector<int64_t> H = l.H;
    ChainDims d{l.S, A, Tn, l.L, H.data()};
    sample_chain_rows_bf16(obs.data_ptr<float>(), B, packed.data_ptr<float>(),
                           reinterpret_cast<const uint16_t*>(packed_gemm->data_ptr<at::BFloat16>()), d,
                           sched.data_ptr<float>(), alpha_scale.data_ptr<float>()[0], chain_noise, explore, seed,
                           offset, noise.has_value() ? noise->data_ptr<float>() : nullptr, out.data_ptr<float>(), 0,
                           B);
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(obs.scalar_type(), "dacer2::sample_chain", [&] {
    using T = scalar_t;
    const T as = alpha_scale.data_ptr<T>()[0];
    if (B < 16 && !gemm_dtype) {
      // Small batches (acting in the environment): the whole chain per row in plain loops (in bf16 without a bf16
      // copy of the weights, the GEMM path below runs, whose matrix multiplies are the ones that round).
      std::vector<int64_t> H = l.H;
      ChainDims d{l.S, A, Tn, l.L, H.data()};
      sample_chain_rows<T>(obs.data_ptr<T>(), B, packed.data_ptr<T>(), d, sched.data_ptr<T>(), as, chain_noise,
                           explore, seed, offset, noise.has_value() ? noise->data_ptr<T>() : nullptr,
                           out.data_ptr<T>(), 0, B);
      return;
    }
    Tensor nz;
    if (noise.has_value()) {
      nz = *noise;
    } else {
      nz = at::empty({Tn + 1, B, A}, obs.options());
      T* p = nz.data_ptr<T>();
      at::parallel_for(0, nz.numel(), 8192, [&](int64_t a, int64_t b) { fill_normal<T>(seed, offset, a, b, p); });
    }
    Tensor x = explore ? at::empty({B, A}, obs.options()) : out;
    chain_forward_impl<T>(obs, packed, l, sched, nz, chain_noise, Gemm{gemm_dtype}, x, nullptr, nullptr, nullptr,
                          nullptr);
    if (explore) explore_clip<T>(x.data_ptr<T>(), nz.data_ptr<T>() + Tn * B * A, as, out.data_ptr<T>(), 0, B * A);
  });
  return out;
}

// ---- op: chain_forward (training) -------------------------------------------------------------------------
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> chain_forward_cpu(const Tensor& obs, const Tensor& packed,
                                                                     c10::IntArrayRef dims, const Tensor& sched,
                                                                     const Tensor& noise, bool eps_stop_grad,
                                                                     std::optional<at::ScalarType> gemm_dtype) {
  (void)eps_stop_grad;  // only the backward uses it
  const Layout l = make_layout(dims);
  check_gemm_dtype(gemm_dtype);
  check_common(obs, packed, sched, l);
  const int64_t B = obs.size(0), A = l.A, Tn = l.T;
  check_tensor(noise, "noise", obs, {Tn, B, A});
  Tensor action = at::empty({B, A}, obs.options());
  Tensor visited = at::empty({Tn, B, A}, obs.options());
  Tensor eps = at::empty({Tn, B, A}, obs.options());
  Tensor saved_h = at::empty({Tn * B * l.sumH}, obs.options());
  Tensor saved_d = at::empty({Tn * B * l.sumH}, obs.options());
  if (B == 0) return {action, visited, eps, saved_h, saved_d};
  AT_DISPATCH_FLOATING_TYPES(obs.scalar_type(), "dacer2::chain_forward", [&] {
    chain_forward_impl<scalar_t>(obs, packed, l, sched, noise, true, Gemm{gemm_dtype}, action, &visited, &eps,
                                 &saved_h, &saved_d);
  });
  return {action, visited, eps, saved_h, saved_d};
}

// ---- op: chain_backward -----------------------------------------------------------------------------------
std::tuple<Tensor, Tensor> chain_backward_cpu(const Tensor& grad_action, const std::optional<Tensor>& grad_visited,
                                              const std::optional<Tensor>& grad_eps, const Tensor& obs,
                                              const Tensor& packed, c10::IntArrayRef dims, const Tensor& sched,
                                              const Tensor& noise, const Tensor& visited, const Tensor& eps, const Tensor& saved_h,
                                              const Tensor& saved_d, bool eps_stop_grad,
                                              std::optional<at::ScalarType> gemm_dtype) {
  const Layout l = make_layout(dims);
  check_gemm_dtype(gemm_dtype);
  const Gemm g{gemm_dtype};
  check_common(obs, packed, sched, l);
  const int64_t B = obs.size(0), A = l.A, Tn = l.T, L = l.L;
  check_tensor(grad_action, "grad_action", obs, {B, A});
  check_tensor(noise, "noise", obs, {Tn, B, A});  // unused here; the reference twin recomputes from it
  check_tensor(visited, "visited", obs, {Tn, B, A});
  check_tensor(eps, "eps", obs, {Tn, B, A});
  check_tensor(saved_h, "saved_h", obs, {Tn * B * l.sumH});
  check_tensor(saved_d, "saved_d", obs, {Tn * B * l.sumH});
  if (grad_visited.has_value()) check_tensor(*grad_visited, "grad_visited", obs, {Tn, B, A});
  if (grad_eps.has_value()) check_tensor(*grad_eps, "grad_eps", obs, {Tn, B, A});
  Tensor grad_packed = at::zeros({l.numel}, obs.options());
  Tensor grad_obs = at::zeros({B, l.S}, obs.options());
  if (B == 0) return {grad_obs, grad_packed};
  // Two gradient streams when L_g's gradient must reach the weights but not x_t: stream 0 carries L_q's
  // (and everything that flows along the chain), stream 1 L_g's. Weight gradients use their sum (one GEMM).
  const int64_t S = (grad_eps.has_value() && eps_stop_grad) ? 2 : 1;
  AT_DISPATCH_FLOATING_TYPES(obs.scalar_type(), "dacer2::chain_backward", [&] {
    using T = scalar_t;
    const T* sc = sched.data_ptr<T>();
    const T* gv = grad_visited.has_value() ? grad_visited->data_ptr<T>() : nullptr;
    const T* ge = grad_eps.has_value() ? grad_eps->data_ptr<T>() : nullptr;
    auto opts = obs.options();
    Tensor dx = grad_action.clone();
    Tensor gx = at::empty({B, A}, opts);
    Tensor dout = at::empty({S, B, A}, opts);
    Tensor dsum_out = S == 2 ? at::empty({B, A}, opts) : dout.select(0, 0);
    std::vector<Tensor> sums(L);
    for (int64_t i = 0; i < L; ++i) sums[i] = S == 2 ? at::empty({B, l.H[i]}, opts) : Tensor();
    Tensor d1_acc = at::zeros({B, l.H[0]}, opts);
    const Tensor wg = g.weights(packed);
    Tensor gW1x = view2(grad_packed, l.w1x, A, l.H[0]);
    Tensor gWo = view2(grad_packed, l.wo, l.H[L - 1], A);
    T* gbo = grad_packed.data_ptr<T>() + l.bo;
    for (int64_t k = Tn - 1; k >= 0; --k) {
      const int64_t t = Tn - 1 - k;
      auto layer = [&](const Tensor& src, int64_t i) -> Tensor {
        int64_t off = k * B * l.sumH;
        for (int64_t j = 0; j < i; ++j) off += B * l.H[j];
        return src.narrow(0, off, B * l.H[i]).view({B, l.H[i]});
      };
      const T* xk = visited.data_ptr<T>() + k * B * A;
      const T* ek = eps.data_ptr<T>() + k * B * A;
      T* gxp = gx.data_ptr<T>();
      if (gv) {
        std::copy(gv + k * B * A, gv + (k + 1) * B * A, gxp);
      } else {
        std::fill(gxp, gxp + B * A, T(0));
      }
      T* d0 = dout.data_ptr<T>();
      posterior_step_backward<T>(xk, ek, sc[t], sc[Tn + t], sc[2 * Tn + t], sc[3 * Tn + t], dx.data_ptr<T>(), gxp,
                                 d0, 0, B * A);
      if (ge) {
        const T* gek = ge + k * B * A;
        if (S == 2) {
          T* d1 = d0 + B * A;
          T* ds = dsum_out.data_ptr<T>();
          for (int64_t i = 0; i < B * A; ++i) {
            d1[i] = gek[i];
            ds[i] = d0[i] + gek[i];
          }
        } else {
          for (int64_t i = 0; i < B * A; ++i) d0[i] += gek[i];
        }
      }
      // output layer
      Tensor hL = layer(saved_h, L - 1);
      g.addmm_(gWo, hL.t(), dsum_out);
      colsum_add<T>(dsum_out.data_ptr<T>(), B, A, gbo, 0, A);
      Tensor delta = g.mm(dout.view({S * B, A}), view2(wg, l.wo, l.H[L - 1], A).t());
      for (int64_t i = L - 1; i >= 0; --i) {
        const int64_t H = l.H[i];
        Tensor di = layer(saved_d, i);
        Tensor sum = S == 2 ? sums[i] : delta;
        {
          T* dp = delta.data_ptr<T>();
          const T* dd = di.data_ptr<T>();
          T* sp = S == 2 ? sum.data_ptr<T>() : nullptr;
          par_rows(B * H, 16384, [&](int64_t n0, int64_t n1) { mask_streams<T>(dp, dd, S, B * H, sp, n0, n1); });
        }
        if (i > 0) {
          Tensor hprev = layer(saved_h, i - 1);
          g.addmm_(view2(grad_packed, l.W[i], l.H[i - 1], H), hprev.t(), sum);
          colsum_add<T>(sum.data_ptr<T>(), B, H, grad_packed.data_ptr<T>() + l.b[i], 0, H);
          delta = g.mm(delta, view2(wg, l.W[i], l.H[i - 1], H).t());
        } else {
          // layer 1: obs share accumulates over steps, step bias per step, x share per step.
          d1_acc.add_(sum);
          colsum_add<T>(sum.data_ptr<T>(), B, H, grad_packed.data_ptr<T>() + l.sb + t * H, 0, H);
          Tensor xk_t = visited.select(0, k);
          g.addmm_(gW1x, xk_t.t(), sum);
          Tensor d_q = S == 2 ? delta.narrow(0, 0, B) : delta;
          g.addmm_(gx, d_q, view2(wg, l.w1x, A, H).t());
        }
      }
      std::swap(dx, gx);
    }
    g.addmm_(view2(grad_packed, l.w1o, l.S, l.H[0]), obs.t(), d1_acc);
    g.addmm_(grad_obs, d1_acc, view2(wg, l.w1o, l.S, l.H[0]).t());
  });
  return {grad_obs, grad_packed};
}

// ---- op: qgrad_loss and its backward -----------------------------------------------------------------------
void check_qgrad(const Tensor& eps, const Tensor& g, const Tensor& w) {
  TORCH_CHECK(eps.dim() == 3, "dacer2: eps must be [T, B, A], got ", eps.sizes());
  check_float(eps, "eps", eps);
  check_tensor(g, "g", eps, eps.sizes().vec());
  check_tensor(w, "weight", eps, {eps.size(0)});
}

Tensor qgrad_loss_cpu(const Tensor& eps, const Tensor& g, const Tensor& w) {
  check_qgrad(eps, g, w);
  const int64_t Tn = eps.size(0), B = eps.size(1), A = eps.size(2);
  Tensor out = at::empty({}, eps.options());
  AT_DISPATCH_FLOATING_TYPES(eps.scalar_type(), "dacer2::qgrad_loss", [&] {
    const double s = qgrad_loss_rows<scalar_t>(eps.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                               w.data_ptr<scalar_t>(), B, A, 0, Tn * B);
    out.data_ptr<scalar_t>()[0] = static_cast<scalar_t>(s / static_cast<double>(std::max<int64_t>(1, Tn * B * A)));
  });
  return out;
}

Tensor qgrad_loss_backward_cpu(const Tensor& grad, const Tensor& eps, const Tensor& g, const Tensor& w) {
  check_qgrad(eps, g, w);
  check_float(grad, "grad", eps);
  TORCH_CHECK(grad.numel() == 1, "dacer2: grad of the loss must be a scalar, got ", grad.sizes());
  const int64_t Tn = eps.size(0), B = eps.size(1), A = eps.size(2);
  Tensor out = at::empty_like(eps);
  AT_DISPATCH_FLOATING_TYPES(eps.scalar_type(), "dacer2::qgrad_loss_backward", [&] {
    using T = scalar_t;
    const T scale = grad.data_ptr<T>()[0] / static_cast<T>(std::max<int64_t>(1, Tn * B * A));
    qgrad_loss_backward_rows<T>(eps.data_ptr<T>(), g.data_ptr<T>(), w.data_ptr<T>(), B, A, scale, out.data_ptr<T>(), 0,
                                Tn * B);
  });
  return out;
}

// ---- op: critic_action_grad --------------------------------------------------------------------------------
// Critic packed layout: per layer i (dims [S, A, H1..HL], outputs 2): weight [2, in, out] then bias [2, out].
std::tuple<Tensor, Tensor> critic_action_grad_cpu(const Tensor& obs, const Tensor& action, const Tensor& packed,
                                                  c10::IntArrayRef dims, int64_t mode,
                                                  std::optional<at::ScalarType> gemm_dtype) {
  check_gemm_dtype(gemm_dtype);
  const Gemm g{gemm_dtype};
  TORCH_CHECK(dims.size() >= 3, "dacer2: critic dims must be [S, A, H1, ..., HL], got ", dims);
  TORCH_CHECK(mode >= 0 && mode <= 2, "dacer2: critic mode must be 0 (min), 1 (mean) or 2 (q1), got ", mode);
  const int64_t S = dims[0], A = dims[1], L = static_cast<int64_t>(dims.size()) - 2;
  std::vector<int64_t> sizes{S + A};
  for (int64_t i = 0; i < L; ++i) sizes.push_back(dims[2 + i]);
  sizes.push_back(2);
  std::vector<int64_t> woff, boff;
  int64_t off = 0;
  for (size_t i = 0; i + 1 < sizes.size(); ++i) {
    woff.push_back(off);
    off += 2 * sizes[i] * sizes[i + 1];
    boff.push_back(off);
    off += 2 * sizes[i + 1];
  }
  TORCH_CHECK(obs.dim() == 2 && obs.size(1) == S, "dacer2: obs must be [B, ", S, "], got ", obs.sizes());
  check_float(obs, "obs", obs);
  check_float(action, "action", obs);
  const int64_t B = obs.size(0);
  TORCH_CHECK(action.dim() == 3 && action.size(1) == B && action.size(2) == A, "dacer2: action must be [N, ", B, ", ",
              A, "], got ", action.sizes());
  check_tensor(packed, "critic packed", obs, {off});
  const int64_t N = action.size(0), M = N * B;
  Tensor q = at::empty({N, B}, obs.options());
  Tensor grad = at::zeros({N, B, A}, obs.options());
  if (M == 0) return {q, grad};
  auto opts = obs.options();
  AT_DISPATCH_FLOATING_TYPES(obs.scalar_type(), "dacer2::critic_action_grad", [&] {
    using T = scalar_t;
    const T* pk = packed.data_ptr<T>();
    const Tensor a2 = action.view({M, A});
    const Tensor wg = g.weights(packed);
    std::vector<std::vector<Tensor>> hs(2), ds(2);
    Tensor mu = at::empty({2, M}, opts);
    for (int64_t c = 0; c < 2; ++c) {
      const int64_t in0 = sizes[0], H1 = sizes[1];
      Tensor P = g.mm(obs, view2(wg, woff[0] + c * in0 * H1, in0, H1).narrow(0, 0, S));  // once for all N stacks
      Tensor h = at::empty({M, H1}, opts), d = at::empty({M, H1}, opts);
      {
        const T* Pp = P.data_ptr<T>();
        const T* b1 = pk + boff[0] + c * H1;
        const T* wa = pk + woff[0] + c * in0 * H1 + S * H1;
        const T* ap = a2.data_ptr<T>();
        T* hp = h.data_ptr<T>();
        T* dp = d.data_ptr<T>();
        par_rows(M, 64, [&](int64_t r0, int64_t r1) {
          // rows r of the stack share obs row r % B: run per obs-block so P is indexed directly
          for (int64_t r = r0; r < r1;) {
            const int64_t n = r / B, rb = r % B, len = std::min(r1 - r, B - rb);
            layer1_mish<T>(Pp, b1, ap + n * B * A, wa, A, H1, hp + n * B * H1, dp + n * B * H1,
                           rb, rb + len);
            r += len;
          }
        });
      }
      hs[c].push_back(h);
      ds[c].push_back(d);
      for (int64_t i = 1; i < L; ++i) {
        const int64_t in = sizes[i], out = sizes[i + 1];
        Tensor hn = at::empty({M, out}, opts);
        g.addmm_out(hn, view2(packed, boff[i] + c * out, 1, out), h, view2(wg, woff[i] + c * in * out, in, out));
        Tensor dn = at::empty({M, out}, opts);
        T* hp = hn.data_ptr<T>();
        T* dp = dn.data_ptr<T>();
        par_rows(M * out, 16384, [&](int64_t n0, int64_t n1) { mish_inplace<T>(hp, dp, n0, n1); });
        hs[c].push_back(hn);
        ds[c].push_back(dn);
        h = hn;
      }
      // mu = h_L @ wout[:, 0] + bout[0]
      const int64_t HL = sizes[L];
      Tensor mu_c = at::empty({M, 2}, opts);
      g.addmm_out(mu_c, view2(packed, boff[L] + c * 2, 1, 2), h, view2(wg, woff[L] + c * HL * 2, HL, 2));
      mu.select(0, c).copy_(mu_c.select(1, 0));
    }
    Tensor c0 = at::empty({M}, opts), c1 = at::empty({M}, opts);
    critic_select<T>(mu.data_ptr<T>(), mu.data_ptr<T>() + M, mode, q.data_ptr<T>(), c0.data_ptr<T>(),
                     c1.data_ptr<T>(), 0, M);
    Tensor g2 = grad.view({M, A});
    for (int64_t c = 0; c < 2; ++c) {
      // Backward only over the rows whose upstream coefficient is non-zero: with min, each row reaches one
      // critic, so the two backward passes together cost one pass over the stack instead of two.
      const T* cc = (c == 0 ? c0 : c1).data_ptr<T>();
      std::vector<int64_t> idx;
      idx.reserve(M);
      for (int64_t r = 0; r < M; ++r)
        if (cc[r] != T(0)) idx.push_back(r);
      const int64_t n = static_cast<int64_t>(idx.size());
      if (n == 0) continue;
      const bool all = n == M;
      auto gather = [&](const Tensor& src, int64_t H) -> Tensor {
        if (all) return src;
        Tensor dst = at::empty({n, H}, opts);
        const T* sp = src.data_ptr<T>();
        T* dp = dst.data_ptr<T>();
        par_rows(n, 64, [&](int64_t a, int64_t b) {
          for (int64_t r = a; r < b; ++r) std::copy(sp + idx[r] * H, sp + (idx[r] + 1) * H, dp + r * H);
        });
        return dst;
      };
      std::vector<T> csub(n);
      for (int64_t r = 0; r < n; ++r) csub[r] = cc[idx[r]];
      const int64_t HL = sizes[L];
      Tensor delta = at::empty({n, HL}, opts);
      const T* wcol = pk + woff[L] + c * HL * 2;  // [HL, 2] row-major: column 0 at stride 2
      {
        Tensor dL = gather(ds[c][L - 1], HL);
        const T* dp = dL.data_ptr<T>();
        T* out = delta.data_ptr<T>();
        par_rows(n, 64, [&](int64_t r0, int64_t r1) { outer_mask<T>(csub.data(), wcol, 2, dp, HL, out, r0, r1); });
      }
      for (int64_t i = L - 1; i >= 1; --i) {
        const int64_t in = sizes[i], out = sizes[i + 1];
        delta = g.mm(delta, view2(wg, woff[i] + c * in * out, in, out).t());
        Tensor di = gather(ds[c][i - 1], in);
        T* dp = delta.data_ptr<T>();
        const T* dd = di.data_ptr<T>();
        par_rows(n * in, 16384, [&](int64_t n0, int64_t n1) { mul_inplace<T>(dp, dd, n0, n1); });
      }
      const int64_t in0 = sizes[0], H1 = sizes[1];
      Tensor Wa = view2(wg, woff[0] + c * in0 * H1, in0, H1).narrow(0, S, A);
      if (all) {
        g.addmm_(g2, delta, Wa.t());
      } else {
        Tensor gs = g.mm(delta, Wa.t());
        const T* gp = gs.data_ptr<T>();
        T* g2p = g2.data_ptr<T>();
        for (int64_t r = 0; r < n; ++r)
          for (int64_t a = 0; a < A; ++a) g2p[idx[r] * A + a] += gp[r * A + a];
      }
    }
  });
  return {q, grad};
}

// ---- op: mish (the eager critic's activation in bf16 runs) -------------------------------------------------
// h = mish(x) and mish'(x) from one exp per element (the loops the chain ops use), so autograd's backward is one
// multiply instead of aten::mish_backward recomputing softplus, tanh and sigmoid.
std::tuple<Tensor, Tensor> mish_cpu(const Tensor& x) {
  check_float(x, "x", x);
  Tensor h = x.clone(), d = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dacer2::mish", [&] {
    scalar_t* hp = h.data_ptr<scalar_t>();
    scalar_t* dp = d.data_ptr<scalar_t>();
    par_rows(x.numel(), 16384, [&](int64_t n0, int64_t n1) { mish_inplace<scalar_t>(hp, dp, n0, n1); });
  });
  return {h, d};
}

}  // namespace
}  // namespace dacer2

TORCH_LIBRARY_IMPL(dacer2, CPU, m) {
  m.impl("sample_chain", &dacer2::sample_chain_cpu);
  m.impl("chain_forward", &dacer2::chain_forward_cpu);
  m.impl("chain_backward", &dacer2::chain_backward_cpu);
  m.impl("qgrad_loss", &dacer2::qgrad_loss_cpu);
  m.impl("qgrad_loss_backward", &dacer2::qgrad_loss_backward_cpu);
  m.impl("critic_action_grad", &dacer2::critic_action_grad_cpu);
  m.impl("mish", &dacer2::mish_cpu);
}
