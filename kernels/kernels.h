// kernels/kernels.h: the one kernel interface every backend implements (raw pointers, sizes, a context).
//
// Conventions (all backends):
// - Row-major, contiguous unless a stride argument says otherwise. Sizes are int64_t.
// - A kernel allocates nothing. Where it needs scratch memory the caller passes a workspace whose
//   size comes from the matching *_workspace_elems() function of the same backend.
// - "Overwrite" outputs are written with =, parameter-gradient outputs marked "accumulates" use +=
//   (so gradients of shared parameters add up), as in llm.c.
// - Scalar results (dot, sum_squares, ...) are written through a pointer that lives on the same device
//   as the inputs.
// - The CPU backend is templated on float and double; the CUDA backend implements float only.
//   Both have the same function names; the first argument (CpuCtx or CudaCtx) picks the backend.
// - Bad sizes are the caller's job to reject (the engine validates shapes and names the op); kernels
//   trust their arguments.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/hamu_math.h"

namespace hamu::kernels {

// ------------------------------------------------------------------------------------------------
// Contexts

struct CpuCtx {};

// Largest head dimension of the fused CUDA attention kernels (larger heads take the unfused path).
constexpr int64_t kMaxFlashHeadDim = 128;

#ifdef HAMU_CUDA
// Opaque handles so this header needs no CUDA include. Filled by cuda_context().
struct CudaCtx {
  int device = 0;
  void* stream = nullptr;     // cudaStream_t
  void* blas = nullptr;       // cublasHandle_t
  void* dnn = nullptr;        // cudnnHandle_t (null when built without cuDNN)
  bool tf32 = false;          // allow TF32 tensor-core GEMM (explicit opt-in)
};
#endif

// ------------------------------------------------------------------------------------------------
// Shared descriptions

enum class Binary : int { add, sub, mul, div, max, min };
enum class Unary : int { neg, relu, gelu, tanh, exp, log, sigmoid, sqrt, square, abs };
enum class Reduce : int { sum, mean, max };

// 2-D convolution (NCHW input, KCRS weight) and pooling geometry.
struct ConvShape {
  int64_t n = 1, c = 1, h = 1, w = 1;   // input
  int64_t k = 1, r = 1, s = 1;          // output channels, kernel height, kernel width
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t oh() const { return (h + 2 * pad_h - r) / stride_h + 1; }
  int64_t ow() const { return (w + 2 * pad_w - s) / stride_w + 1; }
};

struct PoolShape {
  int64_t n = 1, c = 1, h = 1, w = 1;
  int64_t r = 2, s = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  int64_t oh() const { return (h + 2 * pad_h - r) / stride_h + 1; }
  int64_t ow() const { return (w + 2 * pad_w - s) / stride_w + 1; }
};

// ------------------------------------------------------------------------------------------------
// CPU backend (kernels/cpu/*.cpp), float and double.

template <class T> void fill(const CpuCtx&, int64_t n, T value, T* y);
template <class T> void copy(const CpuCtx&, int64_t n, const T* x, T* y);
// y[i] = x[strided index i] for a view of ndim dims (shape, element strides); y contiguous.
template <class T>
void strided_copy(const CpuCtx&, int ndim, const int64_t* shape, const int64_t* strides, const T* x, T* y);
// 2-D block copy: y[i*ldy + j] = x[i*ldx + j] for i < rows, j < cols (slices, concatenation).
template <class T>
void copy_rows(const CpuCtx&, int64_t rows, int64_t cols, const T* x, int64_t ldx, T* y, int64_t ldy);
// y = a*x + b*y
template <class T> void axpby(const CpuCtx&, int64_t n, T a, const T* x, T b, T* y);
// y = a*x + b (elementwise affine with scalars)
template <class T> void affine(const CpuCtx&, int64_t n, const T* x, T a, T b, T* y);
void cast_f32_f64(const CpuCtx&, int64_t n, const float* x, double* y);
void cast_f64_f32(const CpuCtx&, int64_t n, const double* x, float* y);
// bfloat16 (stored as uint16_t bit patterns) <-> float32, rounding to nearest even (kernels/bf16.h).
void cast_f32_bf16(const CpuCtx&, int64_t n, const float* x, uint16_t* y);
void cast_bf16_f32(const CpuCtx&, int64_t n, const uint16_t* x, float* y);

// Same-shape binary op.
template <class T> void binary(const CpuCtx&, Binary op, int64_t n, const T* a, const T* b, T* y);
// Broadcast binary op: y is contiguous with `shape` (ndim dims); a and b are read through element
// strides (0 on broadcast dims).
template <class T>
void binary_bcast(const CpuCtx&, Binary op, int ndim, const int64_t* shape, const int64_t* stride_a,
                  const int64_t* stride_b, const T* a, const T* b, T* y);
// y = sum of x over the dims where out_shape[d] == 1 and in_shape[d] != 1 (the reverse of a
// broadcast). y is contiguous with out_shape; x contiguous with in_shape.
template <class T>
void sum_to(const CpuCtx&, int ndim, const int64_t* in_shape, const int64_t* out_shape, const T* x, T* y);

template <class T> void unary(const CpuCtx&, Unary op, int64_t n, const T* x, T* y);
// gx = gy * f'(x). x is the op's input, y its output (each kernel reads whichever it needs).
template <class T>
void unary_backward(const CpuCtx&, Unary op, int64_t n, const T* x, const T* y, const T* gy, T* gx);

// Reductions over the middle axis of an [outer, n, inner] view. argmax (int32, [outer, inner]) is
// written for Reduce::max when non-null.
template <class T>
void reduce_axis(const CpuCtx&, Reduce op, int64_t outer, int64_t n, int64_t inner, const T* x, T* y,
                 int32_t* argmax);
// gx overwritten ([outer, n, inner]) from gy ([outer, inner]).
template <class T>
void reduce_axis_backward(const CpuCtx&, Reduce op, int64_t outer, int64_t n, int64_t inner, const T* gy,
                          const int32_t* argmax, T* gx);
template <class T> void sum_all(const CpuCtx&, int64_t n, const T* x, T* out);
template <class T> void dot(const CpuCtx&, int64_t n, const T* a, const T* b, T* out);
template <class T> void sum_squares(const CpuCtx&, int64_t n, const T* x, T* out);
// out = 1 if any element of x is NaN or Inf, else 0 (written as T).
template <class T> void nonfinite_any(const CpuCtx&, int64_t n, const T* x, T* out);

// C = alpha * op(A) * op(B) + beta * C, row-major; op(A) is m x k, op(B) is k x n.
// beta == 0 means C is not read (may hold garbage/NaN).
template <class T>
void gemm(const CpuCtx&, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);
// The same over `batch` independent problems at fixed element strides.
template <class T>
void gemm_batched(const CpuCtx&, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha,
                  const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b, T beta,
                  T* c, int64_t ldc, int64_t stride_c, int64_t batch);

// im2col of ONE image: x [c, h, w] -> col [c*r*s, oh*ow]. col2im overwrites x_image.
template <class T> void im2col(const CpuCtx&, const ConvShape&, const T* x_image, T* col);
template <class T> void col2im(const CpuCtx&, const ConvShape&, const T* col, T* x_image);
// Convolution via im2col + GEMM. x [n,c,h,w], w [k,c,r,s], bias [k] or null, y [n,k,oh,ow].
int64_t conv2d_workspace_elems(const CpuCtx&, const ConvShape&);
template <class T>
void conv2d_forward(const CpuCtx&, const ConvShape&, const T* x, const T* w, const T* bias, T* y, T* ws);
// conv2d_forward whose every image's output then gets the batchnorm_act_forward pass (BatchNorm on the
// running statistics, + residual [n,k,oh,ow] when non-null, ReLU when relu) while it is still in cache: one
// pass over y instead of two, the same bits as the two calls. For gradient-free forwards (nothing saved).
// gamma, beta may be null (1 and 0). ws: conv2d_workspace_elems() elements.
template <class T>
void conv2d_bn_act_forward(const CpuCtx&, const ConvShape&, const T* x, const T* w, const T* bias, const T* gamma,
                           const T* beta, const T* running_mean, const T* running_var, T eps, const T* residual,
                           bool relu, T* y, T* ws);
template <class T> void conv2d_backward_data(const CpuCtx&, const ConvShape&, const T* gy, const T* w, T* gx, T* ws);
// gw (and gb when non-null) accumulate.
template <class T>
void conv2d_backward_filter(const CpuCtx&, const ConvShape&, const T* x, const T* gy, T* gw, T* gb, T* ws);

// Pooling. Average pooling counts padded cells (PyTorch count_include_pad=True). Backward overwrites gx.
template <class T> void maxpool2d_forward(const CpuCtx&, const PoolShape&, const T* x, T* y, int32_t* argmax);
template <class T> void maxpool2d_backward(const CpuCtx&, const PoolShape&, const T* gy, const int32_t* argmax, T* gx);
template <class T> void avgpool2d_forward(const CpuCtx&, const PoolShape&, const T* x, T* y);
template <class T> void avgpool2d_backward(const CpuCtx&, const PoolShape&, const T* gy, T* gx);

// BatchNorm over x [n, c, hw]. Training: batch statistics (biased variance for normalising, unbiased
// for the running update: running = (1-momentum)*running + momentum*batch). save_mean/save_invstd [c].
template <class T>
void batchnorm_forward_train(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                             const T* beta, T eps, T momentum, T* y, T* save_mean, T* save_invstd,
                             T* running_mean, T* running_var);
// Inference: running statistics; writes save_mean/save_invstd from them for the backward.
template <class T>
void batchnorm_forward_infer(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                             const T* beta, const T* running_mean, const T* running_var, T eps, T* y,
                             T* save_mean, T* save_invstd);
// batch_stats: the forward used batch statistics (gradient flows through mean and variance) or fixed
// ones (frozen / eval: a per-channel affine map). gx overwritten; ggamma, gbeta accumulate.
template <class T>
void batchnorm_backward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, bool batch_stats, const T* x,
                        const T* gy, const T* gamma, const T* save_mean, const T* save_invstd, T* gx, T* ggamma,
                        T* gbeta);

// Fused BatchNorm on fixed statistics (eval / frozen) + optional residual add + optional ReLU, x [n, c, hw]:
// y = act((x - mean) * gamma / sqrt(var + eps) + beta + residual), mean/var the running statistics; one pass.
// residual may be null. save_mean/save_invstd [c] written as batchnorm_forward_infer writes them.
template <class T>
void batchnorm_act_forward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                           const T* beta, const T* running_mean, const T* running_var, T eps, const T* residual,
                           bool relu, T* y, T* save_mean, T* save_invstd);
// Its backward in one pass. relu: the mask is recomputed from the forward output y (y <= 0: no gradient, as
// the unfused relu decides on its input), so no mask is stored; y may be null without relu.
// gz = gy masked; gx = gz * gamma * invstd (overwritten); gresidual = gz and gz (the pre-activation gradient,
// for per-sample capture) overwritten when not null. Samples [0, split) accumulate sum(gz * xhat) and sum(gz)
// into ggamma/gbeta, samples [split, n) into ggamma2/gbeta2 (the paired backward; split = n: one range);
// every parameter-gradient pointer may be null. ws: batchnorm_act_workspace_elems() elements.
int64_t batchnorm_act_workspace_elems(const CpuCtx&, int64_t n, int64_t c, int64_t hw);
template <class T>
void batchnorm_act_backward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, int64_t split, const T* x, const T* y,
                            const T* gy, bool relu, const T* gamma, const T* save_mean, const T* save_invstd, T* gx,
                            T* gresidual, T* gz, T* ggamma, T* gbeta, T* ggamma2, T* gbeta2, T* ws);

// Training-mode BatchNorm (batch statistics) + optional residual add + optional ReLU in one kernel, CPU only (on
// a GPU the engine runs batch_norm, add and relu): y = act(batchnorm_forward_train's output + residual), with
// the same bits, statistics and running update as those ops. residual may be null.
template <class T>
void batchnorm_train_act_forward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* gamma,
                                 const T* beta, T eps, T momentum, const T* residual, bool relu, T* y, T* save_mean,
                                 T* save_invstd, T* running_mean, T* running_var);
// Its backward, the bits of relu's, add's and batchnorm_backward's (batch statistics): gz = gy masked by y as
// batchnorm_act_backward masks it; gx overwritten; gresidual = gz and gz (the gradient at the normalisation's
// output, for per-sample capture) overwritten when not null; ggamma, gbeta (nullable) accumulate.
template <class T>
void batchnorm_train_act_backward(const CpuCtx&, int64_t n, int64_t c, int64_t hw, const T* x, const T* y,
                                  const T* gy, bool relu, const T* gamma, const T* save_mean, const T* save_invstd,
                                  T* gx, T* gresidual, T* gz, T* ggamma, T* gbeta);

// LayerNorm over the last dim d of x [rows, d]. mean, rstd [rows]. ggamma, gbeta accumulate.
template <class T>
void layernorm_forward(const CpuCtx&, int64_t rows, int64_t d, const T* x, const T* gamma, const T* beta, T eps,
                       T* y, T* mean, T* rstd);
template <class T>
void layernorm_backward(const CpuCtx&, int64_t rows, int64_t d, const T* x, const T* gy, const T* gamma,
                        const T* mean, const T* rstd, T* gx, T* ggamma, T* gbeta);

// Softmax / log-softmax over the last dim of [rows, d]. Backward takes the forward output y.
template <class T> void softmax_forward(const CpuCtx&, int64_t rows, int64_t d, const T* x, T* y);
template <class T> void softmax_backward(const CpuCtx&, int64_t rows, int64_t d, const T* y, const T* gy, T* gx);
template <class T> void log_softmax_forward(const CpuCtx&, int64_t rows, int64_t d, const T* x, T* y);
template <class T>
void log_softmax_backward(const CpuCtx&, int64_t rows, int64_t d, const T* y, const T* gy, T* gx);

// Cross-entropy from logits [rows, classes] and int32 labels, fused with its gradient: one pass over the
// logits. losses[i] = -log softmax(x_i)[y_i], 0 for rows whose label == ignore_index. grad (null: losses
// only, for evaluation; the same losses) receives [rows, classes] d losses[i] / d x_i = softmax(x_i) -
// onehot(y_i), zero rows where ignored: the backward then only scales it and never reads the logits.
template <class T>
void cross_entropy_forward(const CpuCtx&, int64_t rows, int64_t classes, const T* logits, const int32_t* labels,
                           int32_t ignore_index, T* losses, T* grad);
// The mean of the losses over the rows whose label is not ignore_index: loss[0] = sum / count and
// inv_count[0] = 1 / count (both 0 when every row is ignored), counted where the labels live (no host copy).
template <class T>
void cross_entropy_mean(const CpuCtx&, int64_t rows, const T* losses, const int32_t* labels, int32_t ignore_index,
                        T* loss, T* inv_count);
// glogits (overwritten) = (gloss[i * gloss_stride] * scale[0]) * grad[i, :], 0 on ignored rows whatever the
// upstream value. gloss_stride 1: per-row upstream gradients, scale null (1); 0: the mean's one upstream
// scalar, scale its inv_count. glogits may be grad itself (scaled in place).
template <class T>
void cross_entropy_backward(const CpuCtx&, int64_t rows, int64_t classes, const T* grad, const int32_t* labels,
                            int32_t ignore_index, const T* gloss, int64_t gloss_stride, const T* scale, T* glogits);

// Embedding: out[i] = table[idx[i]] ([n_idx, dim]); backward scatter-adds into gtable (accumulates).
template <class T>
void embedding_forward(const CpuCtx&, int64_t n_idx, int64_t dim, const int32_t* idx, const T* table, T* out);
template <class T>
void embedding_backward(const CpuCtx&, int64_t n_idx, int64_t dim, int64_t vocab, const int32_t* idx,
                        const T* gout, T* gtable);

// Causal masked softmax over scores [batch, t, t]: probs[b,i,j] = softmax_j<=i(scale*scores[b,i,j]),
// 0 for j > i. Backward writes gscores (overwritten, includes the scale).
template <class T>
void causal_softmax_forward(const CpuCtx&, int64_t batch, int64_t t, T scale, const T* scores, T* probs);
template <class T>
void causal_softmax_backward(const CpuCtx&, int64_t batch, int64_t t, T scale, const T* probs, const T* gprobs,
                             T* gscores);

// Dropout with a counter-based generator: element i is kept iff counter_uniform(seed, i) >= p
// (kernels/counter_hash.h); kept elements are scaled by 1/(1-p). mask [n] receives 1/0.
// Deterministic and backend-independent.
template <class T> void dropout_forward(const CpuCtx&, int64_t n, T p, uint64_t seed, const T* x, T* y, uint8_t* mask);
template <class T> void dropout_backward(const CpuCtx&, int64_t n, T p, const uint8_t* mask, const T* gy, T* gx);

// Optimizer updates (in place). SGD: g' = g + wd*p; buf = momentum*buf + (1-dampening)*g' (buf = g' on
// the first step); p -= lr * (nesterov ? g' + momentum*buf : buf). momentum == 0 skips buf (may be null).
template <class T>
void sgd_step(const CpuCtx&, int64_t n, T* p, const T* g, T* buf, T lr, T momentum, T dampening, T weight_decay,
              bool nesterov, bool first_step);
// AdamW (decoupled weight decay, bias-corrected; `step` counts from 1).
template <class T>
void adamw_step(const CpuCtx&, int64_t n, T* p, const T* g, T* m, T* v, T lr, T beta1, T beta2, T eps,
                T weight_decay, int64_t step);
// The three per-step scalars of adamw_step, formed as it forms them (bias corrections in double: for beta2
// near 1 and a small step, 1 - beta2^t loses digits in float): {lr / bc1, 1 / sqrt(bc2), 1 - lr * wd}.
template <class T> struct AdamwScalars {
  T step_size, inv_sqrt_bc2, decay;
};
template <class T> AdamwScalars<T> adamw_scalars(T lr, T beta1, T beta2, T weight_decay, int64_t step) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  return {T(double(lr) / bc1), T(1.0 / std::sqrt(bc2)), T(T(1) - lr * weight_decay)};
}
// adamw_step with its scalars read from memory of the tensors' device (a CUDA graph replays the addresses,
// so the host can change them between replays): scalars = {step_size, inv_sqrt_bc2, decay} as adamw_scalars
// gives them; nothing moves where *skip != 0 (a non-finite loss). The same bits as adamw_step.
template <class T>
void adamw_step_dev(const CpuCtx&, int64_t n, T* p, const T* g, T* m, T* v, const T* scalars, const T* skip, T beta1,
                    T beta2, T eps);
// sgd_step with what a CUDA graph cannot repeat as captured read from memory of the tensors' device: *lr, and
// *first (!= 0: this parameter's first step, the buffer seeded with the gradient); nothing moves where
// *skip != 0. momentum, dampening, weight decay and nesterov are the run's constants. The same bits as sgd_step.
template <class T>
void sgd_step_dev(const CpuCtx&, int64_t n, T* p, const T* g, T* buf, const T* lr, const T* first, const T* skip,
                  T momentum, T dampening, T weight_decay, bool nesterov);
// Total-norm gradient clipping on the device (a graphed step cannot read the norm back). From sq[count] (each
// gradient's sum of squares as sum_squares writes it): norm = sqrt(the sq summed in double, in order), coef =
// max_norm / (norm + 1e-6), all in double as PyTorch forms them; out[0] = T(coef) where coef < 1, else 1 (no
// clipping), out[1] = T(norm). A non-finite norm leaves out[0] = 1 and sets *skip = 1 (skip may be null;
// otherwise it is left as it is, so that it combines with an earlier flag).
template <class T> void clip_coef(const CpuCtx&, int count, const T* sq, double max_norm, T* out, T* skip);
// x *= *coef, unless *coef == 1 (clip_coef's "no clipping").
template <class T> void scale_by_coef(const CpuCtx&, int64_t n, T* x, const T* coef);

// Multi-tensor reductions and updates over `count` tensors given by pointer tables (host memory for
// the CPU backend, device memory for CUDA).
// sq[i] = sum of squares of tensor i.
template <class T> void multi_sum_squares(const CpuCtx&, int count, const T* const* x, const int64_t* sizes, T* sq);
// x_i *= scale[i] for every tensor.
template <class T> void multi_scale(const CpuCtx&, int count, T* const* x, const int64_t* sizes, const T* scale);

// ------------------------------------------------------------------------------------------------
// The fused HAMU update (HAMU.md §3; the per-block math is in kernels/hamu_math.h).
// The statistics and coefficients are double on every backend whatever the parameter dtype: for nearly
// colinear r and f the step is mostly a_perp = a - (<a,c>/||c||^2) c, whose norm comes from the
// cancellation ||a||^2 - <a,c>^2/||c||^2, so every relative error of the statistics is multiplied by
// (||a||/||a_perp||)^2 (f32 statistics: 0.3-2% error in the step at ||a_perp||/||a|| ~ 1e-3..1e-2).
// Pass 1: stats[3*i + {0,1,2}] = (<r_i,r_i>, <f_i,f_i>, <r_i,f_i>) for every block i, summed in double.
template <class T>
void hamu_block_stats(const CpuCtx&, int count, const T* const* r, const T* const* f, const int64_t* sizes,
                      double* stats);
// Pass 2: theta_i += coef[2*i] * r_i + coef[2*i + 1] * f_i (each coefficient cast to T once per block).
// Between the passes: coef[2*i + {0,1}] = coefficients on (r_i, f_i) and the step report, from stats
// (HAMU.md §3-5; the math is hamu_solve_step in kernels/hamu_math.h).
void hamu_coefficients(const CpuCtx&, const HamuConfig& cfg, int count, const double* stats, double* coef,
                       HamuReport* report);
template <class T>
void hamu_apply(const CpuCtx&, int count, T* const* theta, const T* const* r, const T* const* f,
                const int64_t* sizes, const double* coef);

// ------------------------------------------------------------------------------------------------
// Per-sample gradient similarity (ghost products).
// K[j, i] += sum_{t<tf, s<tr} gram_a[j*tf + t, i*tr + s] * gram_g[j*tf + t, i*tr + s]
// for gram matrices of shape [nf*tf, nr*tr] (row-major, leading dimension ld).
template <class T>
void ghost_hadamard_reduce(const CpuCtx&, int64_t nf, int64_t nr, int64_t tf, int64_t tr, const T* gram_a,
                           const T* gram_g, int64_t ld, T* k);
// out[j] += sum_{t<seg} dot(p[j*seg + t, :], g[j*seg + t, :]) over `width` columns, for nseg segments.
template <class T>
void segment_rowdot(const CpuCtx&, int64_t nseg, int64_t seg, int64_t width, const T* p, const T* g, T* out);

// ------------------------------------------------------------------------------------------------
// Language-model kernels (kernels/cpu/lm.cpp, kernels/cuda/lm.cu).

// RMSNorm over the last dim d of x [rows, d]: y = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps), the
// mean accumulated in double (f32 on CUDA). rstd [rows] is saved for the backward. gw accumulates.
template <class T>
void rmsnorm_forward(const CpuCtx&, int64_t rows, int64_t d, const T* x, const T* w, T eps, T* y, T* rstd);
template <class T>
void rmsnorm_backward(const CpuCtx&, int64_t rows, int64_t d, const T* x, const T* gy, const T* w, const T* rstd,
                      T* gx, T* gw);

// Rotary embedding in the Hugging Face "rotate half" convention over x [b, t, h, dh] (dh even):
// y[..., i] = x[i]*cos[i] + r[i]*sin[i] with r = (-x[dh/2:], x[:dh/2]). cos, sin are [b or 1, t, dh]
// (cs_batch_stride = t*dh or 0). The backward is the transpose: gx = gy*cos + R^T(gy*sin). Out of
// place (y must not alias x, nor gx alias gy).
template <class T>
void rope_forward(const CpuCtx&, int64_t b, int64_t t, int64_t h, int64_t dh, const T* cos, const T* sin,
                  int64_t cs_batch_stride, const T* x, T* y);
template <class T>
void rope_backward(const CpuCtx&, int64_t b, int64_t t, int64_t h, int64_t dh, const T* cos, const T* sin,
                   int64_t cs_batch_stride, const T* gy, T* gx);

// GELU, tanh approximation (GPT-2's "gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class T> void gelu_tanh_forward(const CpuCtx&, int64_t n, const T* x, T* y);
template <class T> void gelu_tanh_backward(const CpuCtx&, int64_t n, const T* x, const T* gy, T* gx);

// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g). Backward overwrites ggate and gup.
template <class T> void swiglu_forward(const CpuCtx&, int64_t n, const T* gate, const T* up, T* y);
template <class T>
void swiglu_backward(const CpuCtx&, int64_t n, const T* gate, const T* up, const T* gy, T* ggate, T* gup);

// Causal attention softmax over scores [b, h, t, t] (query rows, key columns): probs = softmax of
// scale*scores over the keys a query may see: key j <= query i and key_mask[batch, j] != 0 (key_mask
// [b, t], 1 attend / 0 padding, or null). A row with no visible key gets all-zero probabilities. probs may
// alias scores. The backward is causal_softmax_backward (masked probabilities are 0, so it holds as is).
template <class T>
void attention_softmax_forward(const CpuCtx&, int64_t b, int64_t h, int64_t t, T scale, const int32_t* key_mask,
                               const T* scores, T* probs);

// Token cross-entropy fused with log-softmax over logits [b, t, vocab]: row (i, j) is scored against
// labels[i, j + shift] (ignore_index when j + shift >= t, or the label equals ignore_index), so shift 1 is
// the next-token loss of a causal LM with unshifted labels. losses [b*t] (0 on ignored rows), lse [b*t]
// (the row's log-sum-exp, kept for the backward instead of a [rows, vocab] log-probability buffer).
// Labels outside [0, vocab) other than ignore_index are the caller's job to reject.
template <class T>
void token_cross_entropy_forward(const CpuCtx&, int64_t b, int64_t t, int64_t vocab, const T* logits,
                                 const int32_t* labels, int64_t shift, int32_t ignore_index, T* losses, T* lse);
// glogits (overwritten) = gloss[row] * (softmax - onehot), 0 on ignored rows.
template <class T>
void token_cross_entropy_backward(const CpuCtx&, int64_t b, int64_t t, int64_t vocab, const T* logits,
                                  const int32_t* labels, int64_t shift, int32_t ignore_index, const T* lse,
                                  const T* gloss, T* glogits);

// ------------------------------------------------------------------------------------------------
// CUDA backend (kernels/cuda/*.cu), float only; the same names with a CudaCtx.
#ifdef HAMU_CUDA
// Device management (the only place the CUDA runtime is called from; errors throw std::runtime_error
// naming the call, with the requested size for out-of-memory).
int cuda_device_count();
CudaCtx& cuda_context(int device);
void* cuda_malloc(int device, size_t bytes);
void cuda_free(int device, void* ptr);
void cuda_memcpy_h2d(const CudaCtx&, void* dst, const void* src, size_t bytes);   // synchronous
void cuda_memcpy_d2h(const CudaCtx&, void* dst, const void* src, size_t bytes);   // synchronous
void cuda_memcpy_d2d(const CudaCtx&, void* dst, const void* src, size_t bytes);   // async on the stream
void cuda_memcpy_d2h_async(const CudaCtx&, void* dst_pinned, const void* src, size_t bytes);
void cuda_memcpy_h2d_async(const CudaCtx&, void* dst, const void* src_pinned, size_t bytes);
void* cuda_host_alloc_pinned(size_t bytes);
void cuda_host_free_pinned(void* ptr);
void cuda_synchronize(const CudaCtx&);
// A second stream of the device for work that overlaps the main one (the gradient all-reduce of
// engine/overlap.h): the context of cuda_context(device) with its own non-blocking stream. Only
// elementwise kernels and copies run on it (its cuBLAS/cuDNN handles are null).
CudaCtx& cuda_side_context(int device);
// Work queued on `waiter` from now on starts after everything queued on `signaler` so far (an event
// recorded on signaler and waited for on waiter; the host does not wait).
void cuda_stream_wait(const CudaCtx& waiter, const CudaCtx& signaler);
const char* cuda_device_name(int device);
size_t cuda_free_bytes(int device);
// The device whose memory p points into (device or managed memory), or -1 for host memory (pageable or
// pinned) and pointers CUDA does not know. Never throws.
int cuda_pointer_device(const void* p);

void fill(const CudaCtx&, int64_t n, float value, float* y);
void copy(const CudaCtx&, int64_t n, const float* x, float* y);
void strided_copy(const CudaCtx&, int ndim, const int64_t* shape, const int64_t* strides, const float* x, float* y);
void copy_rows(const CudaCtx&, int64_t rows, int64_t cols, const float* x, int64_t ldx, float* y, int64_t ldy);
void axpby(const CudaCtx&, int64_t n, float a, const float* x, float b, float* y);
void affine(const CudaCtx&, int64_t n, const float* x, float a, float b, float* y);
void binary(const CudaCtx&, Binary op, int64_t n, const float* a, const float* b, float* y);
void binary_bcast(const CudaCtx&, Binary op, int ndim, const int64_t* shape, const int64_t* stride_a,
                  const int64_t* stride_b, const float* a, const float* b, float* y);
void sum_to(const CudaCtx&, int ndim, const int64_t* in_shape, const int64_t* out_shape, const float* x, float* y);
void unary(const CudaCtx&, Unary op, int64_t n, const float* x, float* y);
void unary_backward(const CudaCtx&, Unary op, int64_t n, const float* x, const float* y, const float* gy, float* gx);
void reduce_axis(const CudaCtx&, Reduce op, int64_t outer, int64_t n, int64_t inner, const float* x, float* y,
                 int32_t* argmax);
void reduce_axis_backward(const CudaCtx&, Reduce op, int64_t outer, int64_t n, int64_t inner, const float* gy,
                          const int32_t* argmax, float* gx);
void sum_all(const CudaCtx&, int64_t n, const float* x, float* out);
void dot(const CudaCtx&, int64_t n, const float* a, const float* b, float* out);
void sum_squares(const CudaCtx&, int64_t n, const float* x, float* out);
void nonfinite_any(const CudaCtx&, int64_t n, const float* x, float* out);
void gemm(const CudaCtx&, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm_batched(const CudaCtx&, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b,
                  float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch);
// bfloat16 storage (frozen base weights, issue #10): casts with __float2bfloat16_rn (round to nearest even) and
// back, and C (float32) = alpha op(A) op(B) + beta C with A and B bfloat16 (uint16_t bit patterns), through
// cublasGemmEx with float32 accumulation (CUBLAS_COMPUTE_32F, tensor cores); row-major as gemm above.
void cast_f32_bf16(const CudaCtx&, int64_t n, const float* x, uint16_t* y);
void cast_bf16_f32(const CudaCtx&, int64_t n, const uint16_t* x, float* y);
void gemm_bf16(const CudaCtx&, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc);
void im2col(const CudaCtx&, const ConvShape&, const float* x_image, float* col);
void col2im(const CudaCtx&, const ConvShape&, const float* col, float* x_image);
int64_t conv2d_workspace_elems(const CudaCtx&, const ConvShape&);
void conv2d_forward(const CudaCtx&, const ConvShape&, const float* x, const float* w, const float* bias, float* y,
                    float* ws);
void conv2d_backward_data(const CudaCtx&, const ConvShape&, const float* gy, const float* w, float* gx, float* ws);
void conv2d_backward_filter(const CudaCtx&, const ConvShape&, const float* x, const float* gy, float* gw, float* gb,
                            float* ws);
void maxpool2d_forward(const CudaCtx&, const PoolShape&, const float* x, float* y, int32_t* argmax);
void maxpool2d_backward(const CudaCtx&, const PoolShape&, const float* gy, const int32_t* argmax, float* gx);
void avgpool2d_forward(const CudaCtx&, const PoolShape&, const float* x, float* y);
void avgpool2d_backward(const CudaCtx&, const PoolShape&, const float* gy, float* gx);
void batchnorm_forward_train(const CudaCtx&, int64_t n, int64_t c, int64_t hw, const float* x, const float* gamma,
                             const float* beta, float eps, float momentum, float* y, float* save_mean,
                             float* save_invstd, float* running_mean, float* running_var);
void batchnorm_forward_infer(const CudaCtx&, int64_t n, int64_t c, int64_t hw, const float* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var, float eps,
                             float* y, float* save_mean, float* save_invstd);
void batchnorm_backward(const CudaCtx&, int64_t n, int64_t c, int64_t hw, bool batch_stats, const float* x,
                        const float* gy, const float* gamma, const float* save_mean, const float* save_invstd,
                        float* gx, float* ggamma, float* gbeta);
void batchnorm_act_forward(const CudaCtx&, int64_t n, int64_t c, int64_t hw, const float* x, const float* gamma,
                           const float* beta, const float* running_mean, const float* running_var, float eps,
                           const float* residual, bool relu, float* y, float* save_mean, float* save_invstd);
int64_t batchnorm_act_workspace_elems(const CudaCtx&, int64_t n, int64_t c, int64_t hw);
void batchnorm_act_backward(const CudaCtx&, int64_t n, int64_t c, int64_t hw, int64_t split, const float* x,
                            const float* y, const float* gy, bool relu, const float* gamma, const float* save_mean,
                            const float* save_invstd, float* gx, float* gresidual, float* gz, float* ggamma,
                            float* gbeta, float* ggamma2, float* gbeta2, float* ws);
void layernorm_forward(const CudaCtx&, int64_t rows, int64_t d, const float* x, const float* gamma,
                       const float* beta, float eps, float* y, float* mean, float* rstd);
void layernorm_backward(const CudaCtx&, int64_t rows, int64_t d, const float* x, const float* gy, const float* gamma,
                        const float* mean, const float* rstd, float* gx, float* ggamma, float* gbeta);
void softmax_forward(const CudaCtx&, int64_t rows, int64_t d, const float* x, float* y);
void softmax_backward(const CudaCtx&, int64_t rows, int64_t d, const float* y, const float* gy, float* gx);
void log_softmax_forward(const CudaCtx&, int64_t rows, int64_t d, const float* x, float* y);
void log_softmax_backward(const CudaCtx&, int64_t rows, int64_t d, const float* y, const float* gy, float* gx);
void cross_entropy_forward(const CudaCtx&, int64_t rows, int64_t classes, const float* logits, const int32_t* labels,
                           int32_t ignore_index, float* losses, float* grad);
void cross_entropy_mean(const CudaCtx&, int64_t rows, const float* losses, const int32_t* labels, int32_t ignore_index,
                        float* loss, float* inv_count);
void cross_entropy_backward(const CudaCtx&, int64_t rows, int64_t classes, const float* grad, const int32_t* labels,
                            int32_t ignore_index, const float* gloss, int64_t gloss_stride, const float* scale,
                            float* glogits);
void embedding_forward(const CudaCtx&, int64_t n_idx, int64_t dim, const int32_t* idx, const float* table, float* out);
void embedding_backward(const CudaCtx&, int64_t n_idx, int64_t dim, int64_t vocab, const int32_t* idx,
                        const float* gout, float* gtable);
void causal_softmax_forward(const CudaCtx&, int64_t batch, int64_t t, float scale, const float* scores, float* probs);
void causal_softmax_backward(const CudaCtx&, int64_t batch, int64_t t, float scale, const float* probs,
                             const float* gprobs, float* gscores);
void dropout_forward(const CudaCtx&, int64_t n, float p, uint64_t seed, const float* x, float* y, uint8_t* mask);
void dropout_backward(const CudaCtx&, int64_t n, float p, const uint8_t* mask, const float* gy, float* gx);
void sgd_step(const CudaCtx&, int64_t n, float* p, const float* g, float* buf, float lr, float momentum,
              float dampening, float weight_decay, bool nesterov, bool first_step);
void adamw_step(const CudaCtx&, int64_t n, float* p, const float* g, float* m, float* v, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t step);
void adamw_step_dev(const CudaCtx&, int64_t n, float* p, const float* g, float* m, float* v, const float* scalars,
                    const float* skip, float beta1, float beta2, float eps);
void sgd_step_dev(const CudaCtx&, int64_t n, float* p, const float* g, float* buf, const float* lr, const float* first,
                  const float* skip, float momentum, float dampening, float weight_decay, bool nesterov);
void clip_coef(const CudaCtx&, int count, const float* sq, double max_norm, float* out, float* skip);
void scale_by_coef(const CudaCtx&, int64_t n, float* x, const float* coef);
void multi_sum_squares(const CudaCtx&, int count, const float* const* x, const int64_t* sizes, float* sq);
void multi_scale(const CudaCtx&, int count, float* const* x, const int64_t* sizes, const float* scale);
void hamu_block_stats(const CudaCtx&, int count, const float* const* r, const float* const* f, const int64_t* sizes,
                      double* stats);
// report points to device memory; the caller copies it back asynchronously.
void hamu_coefficients(const CudaCtx&, const HamuConfig& cfg, int count, const double* stats, double* coef,
                       HamuReport* report);
void hamu_apply(const CudaCtx&, int count, float* const* theta, const float* const* r, const float* const* f,
                const int64_t* sizes, const double* coef);
// The three calls above as ONE cooperative launch (issue #12 item 5: small steps are launch-bound), with the
// same stats, coef, report and theta to the bit. total: the sum of the sizes (sizes the grid only). Returns
// false, having queued nothing and cleared any launch error, where cooperative launches are unsupported or
// fail (then for good on that device): the caller runs the three calls instead. No host synchronisation
// and, after the first call with this many tensors on this stream (scratch is per stream), no allocation:
// capturable in a CUDA graph.
bool hamu_fused_step(const CudaCtx&, const HamuConfig& cfg, int count, float* const* theta, const float* const* r,
                     const float* const* f, const int64_t* sizes, int64_t total, double* stats, double* coef,
                     HamuReport* report);
void ghost_hadamard_reduce(const CudaCtx&, int64_t nf, int64_t nr, int64_t tf, int64_t tr, const float* gram_a,
                           const float* gram_g, int64_t ld, float* k);
void segment_rowdot(const CudaCtx&, int64_t nseg, int64_t seg, int64_t width, const float* p, const float* g,
                    float* out);
// Language-model kernels (kernels/cuda/lm.cu); see the CPU declarations above.
void rmsnorm_forward(const CudaCtx&, int64_t rows, int64_t d, const float* x, const float* w, float eps, float* y,
                     float* rstd);
void rmsnorm_backward(const CudaCtx&, int64_t rows, int64_t d, const float* x, const float* gy, const float* w,
                      const float* rstd, float* gx, float* gw);
void rope_forward(const CudaCtx&, int64_t b, int64_t t, int64_t h, int64_t dh, const float* cos, const float* sin,
                  int64_t cs_batch_stride, const float* x, float* y);
void rope_backward(const CudaCtx&, int64_t b, int64_t t, int64_t h, int64_t dh, const float* cos, const float* sin,
                   int64_t cs_batch_stride, const float* gy, float* gx);
void gelu_tanh_forward(const CudaCtx&, int64_t n, const float* x, float* y);
void gelu_tanh_backward(const CudaCtx&, int64_t n, const float* x, const float* gy, float* gx);
void swiglu_forward(const CudaCtx&, int64_t n, const float* gate, const float* up, float* y);
void swiglu_backward(const CudaCtx&, int64_t n, const float* gate, const float* up, const float* gy, float* ggate,
                     float* gup);
void attention_softmax_forward(const CudaCtx&, int64_t b, int64_t h, int64_t t, float scale, const int32_t* key_mask,
                               const float* scores, float* probs);
// Fused causal attention (kernels/cuda/attention.cu; the CPU computes the same with gemm_batched and
// attention_softmax_forward): q [b,h,t,dh], k, v [b,hkv,t,dh] (h % hkv == 0), dh <= kMaxFlashHeadDim,
// key_mask int32 [b,t] or null; y like q and lse [b,h,t] (log-sum-exp of the scaled visible scores,
// -inf for a query that sees no key: its y row is 0). Never materialises the t x t scores. The backward
// takes the forward's y and lse and dsum scratch [b,h,t]; writes gq, gk, gv (no accumulation, no atomics).
void flash_attention_forward(const CudaCtx&, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh, float scale,
                             const int32_t* key_mask, const float* q, const float* k, const float* v, float* y,
                             float* lse);
void flash_attention_backward(const CudaCtx&, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh, float scale,
                              const int32_t* key_mask, const float* q, const float* k, const float* v, const float* y,
                              const float* lse, const float* gy, float* dsum, float* gq, float* gk, float* gv);
// The same contract on the tensor cores in bfloat16 (kernels/cuda/attention_tc.cu): q, k, v, dY, the
// probabilities and the score gradients are rounded to bfloat16 as they enter the matrix units; products
// accumulate and the softmax runs in float32 (~1e-2 relative error against the float32 kernels). Compute
// capability 8.0 or newer, with the shared memory the kernels for head dim dh take (flash_attention_bf16_supported;
// the default dh asks for every head dim up to 128).
bool flash_attention_bf16_supported(int device, int64_t dh = 128);
void flash_attention_bf16_forward(const CudaCtx&, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh,
                                  float scale, const int32_t* key_mask, const float* q, const float* k,
                                  const float* v, float* y, float* lse);
void flash_attention_bf16_backward(const CudaCtx&, int64_t b, int64_t h, int64_t hkv, int64_t t, int64_t dh,
                                   float scale, const int32_t* key_mask, const float* q, const float* k,
                                   const float* v, const float* y, const float* lse, const float* gy, float* dsum,
                                   float* gq, float* gk, float* gv);
void token_cross_entropy_forward(const CudaCtx&, int64_t b, int64_t t, int64_t vocab, const float* logits,
                                 const int32_t* labels, int64_t shift, int32_t ignore_index, float* losses, float* lse);
void token_cross_entropy_backward(const CudaCtx&, int64_t b, int64_t t, int64_t vocab, const float* logits,
                                  const int32_t* labels, int64_t shift, int32_t ignore_index, const float* lse,
                                  const float* gloss, float* glogits);
#endif

}  // namespace hamu::kernels
