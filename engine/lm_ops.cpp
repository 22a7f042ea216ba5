// engine/lm_ops.cpp: language-model ops (RMSNorm, GELU-tanh, SwiGLU, rotary embeddings, grouped-query
// causal attention with a padding mask, fused token cross-entropy) with their backward passes.
#include <cmath>
#include <cstdlib>
#include <string>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/ops_internal.h"
#include "engine/paired.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"

namespace hamu {
namespace {

[[noreturn]] void shape_error(const char* op, const std::string& what) { throw InputError(std::string(op) + ": " + what); }

// Int32 [B,T] tensors (labels, masks, positions) on the op's device, validated on the host when there.
void check_int_bt(const char* op, const char* what, const Tensor& t, int64_t b, int64_t len, Device device) {
  if (t.dtype() != DType::i32) shape_error(op, std::string(what) + " must be int32, got " + dtype_name(t.dtype()));
  if (t.dim() != 2 || t.shape()[0] != b || t.shape()[1] != len)
    shape_error(op, std::string(what) + " " + shape_str(t.shape()) + " must be [" + std::to_string(b) + ", " +
                        std::to_string(len) + "]");
  if (t.device() != device) shape_error(op, std::string(what) + " on " + t.device().str() + ", data on " + device.str());
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// RMSNorm

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  check_same("rms_norm", x, weight);
  if (x.dim() < 1) shape_error("rms_norm", "scalar input");
  const int64_t d = x.shape().back();
  if (weight.numel() != d)
    shape_error("rms_norm", "weight " + shape_str(weight.shape()) + " does not match input " + shape_str(x.shape()));
  const int64_t rows = d ? x.numel() / d : 0;
  Tensor xc = x.contiguous(), wc = weight.contiguous();
  Tensor y = empty_like(xc);
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  dispatch("rms_norm", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::rmsnorm_forward(ctx, rows, d, xc.data<T>(), wc.data<T>(), T(eps), y.data<T>(), rstd.data<T>());
  });
  const int64_t samples = x.dim() >= 2 ? x.shape()[0] : 1;
  const int64_t per_sample = samples ? rows / samples : 0;
  // Per-sample capture (hardness): the input rows and 1/rms per row; no mean (unlearn/hardness/rmsnorm.cpp).
  CaptureTicket ticket = capture_norm("rms_norm", weight, Tensor(), xc, Tensor(), rstd, samples, per_sample, false);
  const PairedTicket paired = paired_ticket("rms_norm", weight, Tensor(), samples);
  if (needs_grad({&xc, &wc})) {
    const SavedTensor xs(xc);
    const Tensor wd = wc.detach();
    const bool route = wc.requires_grad() && paired.weight;
    const int64_t split_rows = paired.split * per_sample;
    record(y, "rms_norm", {xc, wc}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      const Tensor xd = xs.get();
      capture_output_grad(ticket, gc);
      Tensor gx = empty_like(xd);
      Tensor gw = route ? Tensor() : zeros_like(wd);
      dispatch("rms_norm_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        if (route) {
          // The weight gradient of each row range goes to its own buffer (engine/paired.h).
          const int64_t r0[2] = {0, split_rows}, nr[2] = {split_rows, rows - split_rows};
          for (int h = 0; h < 2; ++h)
            kernels::rmsnorm_backward(ctx, nr[h], d, xd.data<T>() + r0[h] * d, gc.data<T>() + r0[h] * d, wd.data<T>(),
                                      rstd.data<T>() + r0[h], gx.data<T>() + r0[h] * d,
                                      (h ? paired.weight->second : paired.weight->first).template data<T>());
        } else {
          kernels::rmsnorm_backward(ctx, rows, d, xd.data<T>(), gc.data<T>(), wd.data<T>(), rstd.data<T>(),
                                    gx.data<T>(), gw.data<T>());
        }
      });
      return std::vector<Tensor>{gx, gw};
    });
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// Activations

Tensor gelu_tanh(const Tensor& x) {
  Tensor xc = x.contiguous();
  Tensor y = empty_like(xc);
  dispatch("gelu_tanh", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gelu_tanh_forward(ctx, xc.numel(), xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    const SavedTensor xs(xc);
    record(y, "gelu_tanh", {xc}, [xs](const Tensor& g) {
      Tensor gc = g.contiguous();
      const Tensor xd = xs.get();
      Tensor gx = empty_like(gc);
      dispatch("gelu_tanh_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::gelu_tanh_backward(ctx, gc.numel(), xd.data<T>(), gc.data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  check_same("swiglu", gate, up);
  if (gate.shape() != up.shape())
    shape_error("swiglu", "gate " + shape_str(gate.shape()) + " and up " + shape_str(up.shape()) + " differ");
  Tensor gc = gate.contiguous(), uc = up.contiguous();
  Tensor y = empty_like(gc);
  dispatch("swiglu", gc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::swiglu_forward(ctx, gc.numel(), gc.data<T>(), uc.data<T>(), y.data<T>());
  });
  if (needs_grad({&gc, &uc})) {
    const SavedTensor gs(gc), us(uc);
    record(y, "swiglu", {gc, uc}, [gs, us](const Tensor& g) {
      Tensor gy = g.contiguous();
      const Tensor gd = gs.get(), ud = us.get();
      Tensor ggate = empty_like(gy), gup = empty_like(gy);
      dispatch("swiglu_backward", gy, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::swiglu_backward(ctx, gy.numel(), gd.data<T>(), ud.data<T>(), gy.data<T>(), ggate.data<T>(),
                                 gup.data<T>());
      });
      return std::vector<Tensor>{ggate, gup};
    });
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// Rotary embeddings

namespace {

template <class F>
void fill_rope(const std::vector<int32_t>& pos, int64_t head_dim, double theta, std::vector<F>& c, std::vector<F>& s) {
  // Hugging Face: inv_freq = 1 / theta^(arange(0, dim, 2) / dim) and freqs = pos * inv_freq, both in
  // float32 for a float32 model; emb = cat(freqs, freqs).
  const int64_t half = head_dim / 2;
  std::vector<F> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv[size_t(i)] = F(1) / std::pow(F(theta), F(2 * i) / F(head_dim));
  c.resize(pos.size() * size_t(head_dim));
  s.resize(c.size());
  for (size_t p = 0; p < pos.size(); ++p)
    for (int64_t i = 0; i < half; ++i) {
      const F angle = F(pos[p]) * inv[size_t(i)];
      const F cv = std::cos(angle), sv = std::sin(angle);
      c[p * size_t(head_dim) + size_t(i)] = c[p * size_t(head_dim) + size_t(i + half)] = cv;
      s[p * size_t(head_dim) + size_t(i)] = s[p * size_t(head_dim) + size_t(i + half)] = sv;
    }
}

}  // namespace

RopeTables rope_tables(const Tensor& positions, int64_t head_dim, double theta, DType dtype, Device device) {
  if (positions.dtype() != DType::i32 || (positions.dim() != 1 && positions.dim() != 2))
    shape_error("rope", "positions must be int32 [T] or [B,T], got " + std::string(dtype_name(positions.dtype())) + " " +
                            shape_str(positions.shape()));
  if (head_dim < 2 || head_dim % 2) shape_error("rope", "head_dim " + std::to_string(head_dim) + " must be even and >= 2");
  if (!(theta > 1.0) || !std::isfinite(theta)) shape_error("rope", "rope_theta " + std::to_string(theta) + " must be > 1");
  if (dtype != DType::f32 && dtype != DType::f64) shape_error("rope", "tables must be float32 or float64");
  const int64_t b = positions.dim() == 2 ? positions.shape()[0] : 1, t = positions.shape().back();
  const std::vector<int32_t> pos = positions.to_vector<int32_t>();
  for (int32_t p : pos)
    if (p < 0) shape_error("rope", "negative position " + std::to_string(p));
  RopeTables out;
  const Shape shape{b, t, head_dim};
  if (dtype == DType::f32) {
    std::vector<float> c, s;
    fill_rope(pos, head_dim, theta, c, s);
    out.cos = Tensor::from_vector(c, shape, device);
    out.sin = Tensor::from_vector(s, shape, device);
  } else {
    std::vector<double> c, s;
    fill_rope(pos, head_dim, theta, c, s);
    out.cos = Tensor::from_vector(c, shape, device);
    out.sin = Tensor::from_vector(s, shape, device);
  }
  return out;
}

Tensor rope(const Tensor& x, const RopeTables& tables) {
  check_same("rope", x, tables.cos);
  check_same("rope", x, tables.sin);
  if (x.dim() != 4) shape_error("rope", "expected [B,T,H,Dh] input, got " + shape_str(x.shape()));
  const int64_t b = x.shape()[0], t = x.shape()[1], h = x.shape()[2], dh = x.shape()[3];
  const Shape& cs = tables.cos.shape();
  if (tables.cos.dim() != 3 || (cs[0] != 1 && cs[0] != b) || cs[1] != t || cs[2] != dh || tables.sin.shape() != cs)
    shape_error("rope", "tables " + shape_str(cs) + " do not fit input " + shape_str(x.shape()) + " (need [1 or " +
                            std::to_string(b) + ", " + std::to_string(t) + ", " + std::to_string(dh) + "])");
  const int64_t cs_stride = cs[0] == 1 ? 0 : t * dh;
  Tensor xc = x.contiguous(), cc = tables.cos.detach().contiguous(), sc = tables.sin.detach().contiguous();
  Tensor y = empty_like(xc);
  dispatch("rope", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::rope_forward(ctx, b, t, h, dh, cc.data<T>(), sc.data<T>(), cs_stride, xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    record(y, "rope", {xc}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = empty_like(gc);
      dispatch("rope_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::rope_backward(ctx, b, t, h, dh, cc.data<T>(), sc.data<T>(), cs_stride, gc.data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// Attention

#ifdef HAMU_CUDA
namespace {

// HAMU_ATTENTION=unfused makes CUDA attention take the GEMM + softmax path (bench/bench_attention compares).
bool fused_attention_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("HAMU_ATTENTION");
    return !(v && std::string(v) == "unfused");
  }();
  return on;
}

// The fused CUDA path (kernels/cuda/attention.cu, or attention_tc.cu in bfloat16 on the tensor cores when the
// run opted into bfloat16: PerfOptions::bf16_attention): saves y and the per-query log-sum-exp [B,H,T] instead
// of the [B,H,T,T] probabilities. The backward uses the same kernels as its forward whatever the switch says
// by then.
Tensor gqa_attention_fused(const Tensor& qc, const Tensor& kc, const Tensor& vc, const Tensor& mask, int64_t b,
                           int64_t h, int64_t hkv, int64_t t, int64_t dh, double scale) {
  const Device dev = qc.device();
  const bool bf16 = kernels::perf_options().bf16_attention && kernels::flash_attention_bf16_supported(dev.index, dh);
  Tensor y = empty_like(qc);
  Tensor lse = Tensor::empty({b, h, t}, DType::f32, dev);
  const int32_t* mp = mask.defined() ? mask.data<int32_t>() : nullptr;
  {
    const kernels::ProfScope prof("gqa_attention", dev.index);
    (bf16 ? kernels::flash_attention_bf16_forward : kernels::flash_attention_forward)(
        kernels::cuda_context(dev.index), b, h, hkv, t, dh, float(scale), mp, qc.data<float>(), kc.data<float>(),
        vc.data<float>(), y.data<float>(), lse.data<float>());
  }
  if (needs_grad({&qc, &kc, &vc})) {
    const SavedTensor q_saved(qc), k_saved(kc), v_saved(vc), y_saved(y);
    record(y, "gqa_attention", {qc, kc, vc}, [=](const Tensor& grad) {
      Tensor gy = grad.contiguous();
      const Tensor qd = q_saved.get(), kd = k_saved.get(), vd = v_saved.get(), yd = y_saved.get();
      Tensor gq = empty_like(qd), gk = empty_like(kd), gv = empty_like(vd);
      Tensor dsum = Tensor::empty({b, h, t}, DType::f32, dev);
      const kernels::ProfScope prof("gqa_attention_backward", dev.index);
      (bf16 ? kernels::flash_attention_bf16_backward : kernels::flash_attention_backward)(
          kernels::cuda_context(dev.index), b, h, hkv, t, dh, float(scale),
          mask.defined() ? mask.data<int32_t>() : nullptr, qd.data<float>(), kd.data<float>(), vd.data<float>(),
          yd.data<float>(), lse.data<float>(), gy.data<float>(), dsum.data<float>(), gq.data<float>(),
          gk.data<float>(), gv.data<float>());
      return std::vector<Tensor>{gq, gk, gv};
    });
  }
  return y;
}

}  // namespace
#endif

Tensor gqa_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask) {
  const char* op = "gqa_attention";
  check_same(op, q, k);
  check_same(op, q, v);
  if (q.dim() != 4 || k.dim() != 4 || k.shape() != v.shape())
    shape_error(op, "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape()) +
                        " must be [B,H,T,Dh], [B,Hkv,T,Dh], [B,Hkv,T,Dh]");
  const int64_t b = q.shape()[0], h = q.shape()[1], t = q.shape()[2], dh = q.shape()[3], hkv = k.shape()[1];
  if (k.shape()[0] != b || k.shape()[2] != t || k.shape()[3] != dh || hkv < 1 || h % hkv != 0)
    shape_error(op, "q " + shape_str(q.shape()) + " and k/v " + shape_str(k.shape()) +
                        " do not fit (equal B, T, Dh; query heads a multiple of key/value heads)");
  if (key_mask.defined()) check_int_bt(op, "key_mask", key_mask, b, t, q.device());
  const int64_t g = h / hkv;         // query heads per key/value head
  const int64_t bkv = b * hkv;        // GEMM batch: one per key/value head
  const int64_t qs = g * t * dh, ks = t * dh, ss = g * t * t;  // per-batch strides of q-group, k/v, scores
  const double scale = 1.0 / std::sqrt(double(std::max<int64_t>(dh, 1)));
  Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  Tensor mask = key_mask.defined() ? key_mask.contiguous() : Tensor();
#ifdef HAMU_CUDA
  if (qc.is_cuda() && qc.dtype() == DType::f32 && dh <= kernels::kMaxFlashHeadDim && fused_attention_enabled())
    return gqa_attention_fused(qc, kc, vc, mask, b, h, hkv, t, dh, scale);
#endif
  // The g query heads of one key/value head are adjacent in [B,H,T,Dh], so they form one [g*T, Dh]
  // matrix against that head's [T, Dh] keys: GQA needs no repeated keys, only taller GEMMs.
  Tensor probs = Tensor::empty({b, h, t, t}, q.dtype(), q.device());
  Tensor y = empty_like(qc);
  dispatch(op, qc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm_batched(ctx, false, true, g * t, t, dh, T(1), qc.data<T>(), dh, qs, kc.data<T>(), dh, ks, T(0),
                          probs.data<T>(), t, ss, bkv);
    kernels::attention_softmax_forward(ctx, b, h, t, T(scale), mask.defined() ? mask.data<int32_t>() : nullptr,
                                       probs.data<T>(), probs.data<T>());
    kernels::gemm_batched(ctx, false, false, g * t, dh, t, T(1), probs.data<T>(), t, ss, vc.data<T>(), dh, ks, T(0),
                          y.data<T>(), dh, qs, bkv);
  });
  if (needs_grad({&qc, &kc, &vc})) {
    const SavedTensor q_saved(qc), k_saved(kc), v_saved(vc);
    record(y, op, {qc, kc, vc}, [=](const Tensor& grad) {
      Tensor gy = grad.contiguous();
      const Tensor qd = q_saved.get(), kd = k_saved.get(), vd = v_saved.get();
      Tensor gq = empty_like(qd), gk = empty_like(kd), gv = empty_like(vd);
      Tensor gprobs = Tensor::empty({b, h, t, t}, gy.dtype(), gy.device());
      Tensor gscores = Tensor::empty({b, h, t, t}, gy.dtype(), gy.device());
      dispatch("gqa_attention_backward", gy, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        // dP = dY V^T; dV = P^T dY (sums the group's heads); dS = softmax'(dP); dQ = dS K; dK = dS^T Q.
        kernels::gemm_batched(ctx, false, true, g * t, t, dh, T(1), gy.data<T>(), dh, qs, vd.data<T>(), dh, ks, T(0),
                              gprobs.data<T>(), t, ss, bkv);
        kernels::gemm_batched(ctx, true, false, t, dh, g * t, T(1), probs.data<T>(), t, ss, gy.data<T>(), dh, qs, T(0),
                              gv.data<T>(), dh, ks, bkv);
        kernels::causal_softmax_backward(ctx, b * h, t, T(scale), probs.data<T>(), gprobs.data<T>(),
                                         gscores.data<T>());
        kernels::gemm_batched(ctx, false, false, g * t, dh, t, T(1), gscores.data<T>(), t, ss, kd.data<T>(), dh, ks,
                              T(0), gq.data<T>(), dh, qs, bkv);
        kernels::gemm_batched(ctx, true, false, t, dh, g * t, T(1), gscores.data<T>(), t, ss, qd.data<T>(), dh, qs,
                              T(0), gk.data<T>(), dh, ks, bkv);
      });
      return std::vector<Tensor>{gq, gk, gv};
    });
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// Token cross-entropy

Tensor token_cross_entropy(const Tensor& logits, const Tensor& labels, int shift, int ignore_index) {
  const char* op = "token_cross_entropy";
  if (logits.dim() != 3) shape_error(op, "expected [B,T,V] logits, got " + shape_str(logits.shape()));
  if (!logits.is_floating()) shape_error(op, "logits must be floating point");
  const int64_t b = logits.shape()[0], t = logits.shape()[1], vocab = logits.shape()[2];
  check_int_bt(op, "labels", labels, b, t, logits.device());
  if (shift < 0) shape_error(op, "negative shift " + std::to_string(shift));
  if (vocab < 1) shape_error(op, "empty vocabulary");
  Tensor yc = labels.contiguous();
  if (!yc.is_cuda()) {
    const int32_t* p = yc.data<int32_t>();
    for (int64_t i = 0; i < yc.numel(); ++i)
      if ((p[i] < 0 || p[i] >= vocab) && p[i] != ignore_index)
        shape_error(op, "label " + std::to_string(p[i]) + " at position " + std::to_string(i) + " is outside [0, " +
                            std::to_string(vocab) + ") and not the ignore index " + std::to_string(ignore_index));
  }
  Tensor lc = logits.contiguous();
  Tensor losses = Tensor::empty({b, t}, logits.dtype(), logits.device());
  Tensor lse = Tensor::empty({b, t}, logits.dtype(), logits.device());
  dispatch(op, lc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::token_cross_entropy_forward(ctx, b, t, vocab, lc.data<T>(), yc.data<int32_t>(), shift, ignore_index,
                                         losses.data<T>(), lse.data<T>());
  });
  if (needs_grad({&lc})) {
    Tensor ld = lc.detach();
    record(losses, op, {lc}, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = empty_like(ld);
      dispatch("token_cross_entropy_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::token_cross_entropy_backward(ctx, b, t, vocab, ld.data<T>(), yc.data<int32_t>(), shift, ignore_index,
                                              lse.data<T>(), gc.data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return losses;
}

int64_t count_scored_tokens(const Tensor& labels, int shift, int ignore_index) {
  if (labels.dtype() != DType::i32 || labels.dim() != 2)
    shape_error("count_scored_tokens", "labels must be int32 [B,T], got " + shape_str(labels.shape()));
  const std::vector<int32_t> v = labels.to_vector<int32_t>();
  const int64_t b = labels.shape()[0], t = labels.shape()[1];
  int64_t n = 0;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = shift; j < t; ++j) n += v[size_t(i * t + j)] != ignore_index;
  return n;
}

}  // namespace hamu
