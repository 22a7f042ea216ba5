// engine/ops.h: differentiable tensor ops over the kernel interface (each records its backward).
//
// Shape errors name the op and both shapes (InputError). Inputs of one op share dtype and device.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace hamu {

// ---- elementwise, with NumPy-style broadcasting
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor affine(const Tensor& x, double scale, double shift);  // scale*x + shift
inline Tensor mul_scalar(const Tensor& x, double s) { return affine(x, s, 0.0); }
inline Tensor add_scalar(const Tensor& x, double s) { return affine(x, 1.0, s); }
Tensor neg(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // exact (erf) form
Tensor tanh(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor square(const Tensor& x);
Tensor abs(const Tensor& x);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator*(const Tensor& a, double s) { return mul_scalar(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul_scalar(a, s); }
inline Tensor operator+(const Tensor& a, double s) { return add_scalar(a, s); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

// Reverse of a broadcast: sums x down to `shape` (which x's shape broadcasts from).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- reductions
Tensor sum(const Tensor& x);                                  // all elements -> scalar
Tensor mean(const Tensor& x);                                 // all elements -> scalar
Tensor sum(const Tensor& x, int dim, bool keepdim = false);
Tensor mean(const Tensor& x, int dim, bool keepdim = false);
Tensor max(const Tensor& x, int dim, bool keepdim = false);   // values; gradient to the first maximum
Tensor argmax(const Tensor& x, int dim);                      // int32, not differentiable
Tensor dot(const Tensor& a, const Tensor& b);                 // flattened inner product -> scalar
Tensor sum_squares(const Tensor& x);                          // -> scalar

// ---- shape ops
Tensor concat(const std::vector<Tensor>& parts, int dim);
Tensor permute(const Tensor& x, const std::vector<int>& order);  // contiguous result
// Rows of x (along dim 0) at `index` (int32 [k]); gradient scatter-adds.
Tensor index_select0(const Tensor& x, const Tensor& index);

// ---- linear algebra
// [m,k] x [k,n] -> [m,n]; batched [..., m, k] x [..., k, n] with equal leading dims.
Tensor matmul(const Tensor& a, const Tensor& b);
// y = x W^T + b for x [..., in], W [out, in] (PyTorch layout), b [out] or undefined.
// W may be bfloat16 on cuda (a frozen base weight, models/lm/lora.h cast_frozen_linear_weights): x and b stay
// float32, x is rounded to bfloat16 for a tensor-core GEMM that accumulates and writes float32 (the backward's
// dx likewise); W and b must be frozen (no weight gradient, no paired route, no per-sample capture).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

// ---- neural-network ops
struct Conv2dOptions {
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};
// x [N,C,H,W], w [K,C,R,S], b [K] or undefined -> [N,K,OH,OW]
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& opt = {});
struct Pool2dOptions {
  int kernel_h = 2, kernel_w = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
};
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& opt);
Tensor avg_pool2d(const Tensor& x, const Pool2dOptions& opt);
Tensor global_avg_pool2d(const Tensor& x);  // [N,C,H,W] -> [N,C]

// BatchNorm over x [N,C,H,W] (or [N,C]). batch_stats: normalise with the batch's statistics (training)
// and, when running stats are given, update them in place; otherwise use the running statistics
// (eval / frozen), a per-channel affine map for the gradient.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                  const Tensor& running_var, bool batch_stats, double momentum, double eps);
// BatchNorm on fixed (running) statistics, an optional residual add and an optional ReLU in one pass,
// forward and backward: y = relu?(batch_norm(x, eval) + residual). The same gradients, paired routing and
// per-sample capture (a "batch_norm" record whose G is the gradient before the add/ReLU) as the three
// separate ops. Only valid when the statistics are fixed (eval or frozen BatchNorm): nn::BatchNorm2d's
// forward_act picks it. residual may be undefined (no add); otherwise the shape of x.
Tensor batch_norm_act(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                      const Tensor& running_var, double eps, const Tensor& residual, bool relu);
// Training-mode BatchNorm (batch statistics; running_mean/running_var, when defined, updated in place as
// batch_norm updates them), an optional residual add and an optional ReLU: y = relu?(batch_norm(x, train) +
// residual). On the CPU one kernel forward and one backward (the add and the ReLU applied while each value is
// in a register, the ReLU mask taken from y), with batch_norm's statistics, paired-pass refusal and per-sample
// capture record; on a GPU the three ops.
Tensor batch_norm_train_act(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                            const Tensor& running_var, double momentum, double eps, const Tensor& residual, bool relu);
// batch_norm_act(conv2d(x, w, b, opt), gamma, beta, running_mean, running_var, eps, residual, relu): frozen
// BatchNorm folded into the convolution. Where no gradient is needed and no per-sample capture is active
// (evaluation, metrics), on the CPU, it is one kernel that applies the BatchNorm pass (and the add and ReLU)
// to each image's output while it is still in cache, with the same bits; otherwise it is the two ops.
// residual: undefined or the convolution's output shape.
Tensor conv2d_bn_act(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& opt,
                     const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var,
                     double eps, const Tensor& residual, bool relu);
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);  // last dim

Tensor softmax(const Tensor& x);      // last dim
Tensor log_softmax(const Tensor& x);  // last dim

// Cross-entropy of logits [N,C] with int32 labels [N]. Per-sample losses [N] (0 on ignored rows).
Tensor cross_entropy_per_sample(const Tensor& logits, const Tensor& labels, int ignore_index = -100);
// Mean over the rows whose label is not ignore_index.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, int ignore_index = -100);
// KL(p_ref || p) per row from two logit sets [N,C]; ref_logits carries no gradient.
Tensor kl_div_per_sample(const Tensor& ref_logits, const Tensor& logits);

// Rows of table [V,D] at int32 indices [...] -> [..., D]. Out-of-range indices are an InputError.
Tensor embedding(const Tensor& indices, const Tensor& table);
// Causal scaled-dot-product attention: q, k, v [B,H,T,Dh] -> [B,H,T,Dh].
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v);
// Inverted dropout (identity when !training or p == 0).
Tensor dropout(const Tensor& x, double p, bool training, uint64_t seed);

// ---- language-model ops (engine/lm_ops.cpp)
// RMSNorm over the last dim: x * rsqrt(mean(x^2) + eps) * weight (Llama).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);
// GELU with the tanh approximation (GPT-2's "gelu_new").
Tensor gelu_tanh(const Tensor& x);
// SwiGLU: silu(gate) * up, equal shapes.
Tensor swiglu(const Tensor& gate, const Tensor& up);
// Rotary tables for integer positions [T] or [B,T]: cos, sin [1 or B, T, head_dim] in `dtype`, computed
// as Hugging Face does (inverse frequencies theta^(-2i/head_dim) and angles in float32 for f32 runs,
// emb = cat(freqs, freqs)). Not differentiable.
struct RopeTables {
  Tensor cos, sin;
};
RopeTables rope_tables(const Tensor& positions, int64_t head_dim, double theta, DType dtype, Device device);
// Rotary embedding ("rotate half") of x [B,T,H,Dh] with tables from rope_tables (batch 1 or B).
Tensor rope(const Tensor& x, const RopeTables& tables);
// Causal scaled-dot-product attention with grouped-query heads: q [B,H,T,Dh], k, v [B,Hkv,T,Dh] with
// H % Hkv == 0 (query head h reads key/value head h / (H/Hkv)), scale 1/sqrt(Dh). key_mask: int32 [B,T]
// (1 attend, 0 padding) or undefined. A query that sees no key (padding under left padding) outputs 0.
Tensor gqa_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask = {});
// Next-token cross-entropy of logits [B,T,V] against int32 labels [B,T] (fused with the log-softmax):
// losses [B,T] where position t scores labels[:, t + shift] (0 where that label is ignore_index or
// t + shift >= T). shift 1 with unshifted labels is Hugging Face's causal-LM loss.
Tensor token_cross_entropy(const Tensor& logits, const Tensor& labels, int shift = 1, int ignore_index = -100);
// Number of scored targets of token_cross_entropy (labels on any device; read on the host).
int64_t count_scored_tokens(const Tensor& labels, int shift = 1, int ignore_index = -100);

// Checks dtype/device agreement and names the op; used by ops and modules.
void check_same(const char* op, const Tensor& a, const Tensor& b);

}  // namespace hamu
