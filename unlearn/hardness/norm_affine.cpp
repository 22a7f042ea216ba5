// unlearn/hardness/norm_affine.cpp: per-sample gradients of normalisation affine parameters.
#include "unlearn/hardness/norm_affine.h"

namespace hamu {

BlockRep norm_affine_rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, const NormLayout& l) {
  const Tensor& g = rec.output_grad;
  const DType dt = g.dtype();
  const Device dev = g.device();
  const int64_t c = rec.weight.numel();
  BlockRep rep;
  rep.p = Tensor::empty({n, c}, dt, dev);
  hardness_kernels(g, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    const T* gy = g.data<T>() + s0 * l.per;
    if (b.role == ParamRole::bias) {
      kernels::reduce_axis(ctx, kernels::Reduce::sum, l.outer, l.len, l.inner, gy, rep.p.data<T>(), nullptr);
      return;
    }
    Tensor centred = Tensor::empty({n * l.per}, dt, dev), xhat = Tensor::empty({n * l.per}, dt, dev);
    const T* x = rec.input.data<T>() + s0 * l.per;
    const T* base = x;  // RMSNorm records no mean: x_hat = x * stat_b
    if (rec.stat_a.defined()) {
      kernels::binary_bcast(ctx, kernels::Binary::sub, l.ndim, l.shape, l.x_strides, l.stat_strides, x,
                            rec.stat_a.data<T>() + l.stat_offset, centred.data<T>());
      base = centred.data<T>();
    }
    kernels::binary_bcast(ctx, kernels::Binary::mul, l.ndim, l.shape, l.x_strides, l.stat_strides, base,
                          rec.stat_b.data<T>() + l.stat_offset, xhat.data<T>());
    kernels::binary(ctx, kernels::Binary::mul, n * l.per, xhat.data<T>(), gy, centred.data<T>());
    kernels::reduce_axis(ctx, kernels::Reduce::sum, l.outer, l.len, l.inner, centred.data<T>(), rep.p.data<T>(), nullptr);
  });
  return rep;
}

BlockRep row_norm_rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n) {
  const int64_t c = rec.weight.numel(), t = rec.positions;
  const NormLayout l{.per = t * c, .ndim = 2, .shape = {n * t, c}, .x_strides = {c, 1}, .stat_strides = {1, 0},
                     .stat_offset = s0 * t, .outer = n, .len = t, .inner = c};
  return norm_affine_rep(rec, b, s0, n, l);
}

}  // namespace hamu
