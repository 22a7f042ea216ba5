// unlearn/hardness/batchnorm.cpp: hardness rule of BatchNorm on fixed statistics ("batch_norm"
// records: x and G [N, C, HW], mean and 1/std per channel). With batch statistics a sample's output
// depends on the whole batch, so per-sample gradients do not exist: planning refuses it.
#include "unlearn/hardness/norm_affine.h"

namespace hamu {
namespace {

class BatchNormRule : public HardnessRule {
 public:
  void plan(const CaptureRecord& rec, HardnessBlock& b) const override {
    if (rec.mixes_samples)
      throw InputError("hardness: BatchNorm '" + rec.name +
                       "' normalises with batch statistics, where per-sample gradients do not exist; evaluate the "
                       "model in eval mode (running statistics)");
    b.kind = b.role == ParamRole::weight ? "batch_norm weight" : "batch_norm bias";
    b.in = b.out = b.numel;
  }

  BlockRep rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, bool) const override {
    const int64_t c = rec.weight.numel(), t = rec.positions;
    // [n, c, t] with statistics per channel; sums over t.
    const NormLayout l{.per = c * t, .ndim = 3, .shape = {n, c, t}, .x_strides = {c * t, t, 1},
                       .stat_strides = {0, 1, 0}, .stat_offset = 0, .outer = n * c, .len = t, .inner = 1};
    return norm_affine_rep(rec, b, s0, n, l);
  }

  void row_form(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, const Tensor& h,
                Tensor& out) const override {
    if (b.role == ParamRole::bias) return HardnessRule::row_form(rec, b, s0, n, h, out);
    // Gamma without forming x_hat: sum_{c,t} h_c g (x - mu_c) s_c = S1 . (h s) - S2 . (h s mu) with
    // S1[j,c] = sum_t g x and S2[j,c] = sum_t g per sample, which reads x and G once each instead of
    // four elementwise passes.
    const int64_t c = b.numel, t = rec.positions, per = c * t;
    const Tensor& g = rec.output_grad;
    Tensor prod = Tensor::empty({n * per}, out.dtype(), out.device());
    Tensor s1 = Tensor::empty({n, c}, out.dtype(), out.device()), s2 = Tensor::empty({n, c}, out.dtype(), out.device());
    Tensor hs = Tensor::empty({c}, out.dtype(), out.device()), hsm = Tensor::empty({c}, out.dtype(), out.device());
    hardness_kernels(out, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      const T* gy = g.data<T>() + s0 * per;
      kernels::binary(ctx, kernels::Binary::mul, n * per, rec.input.data<T>() + s0 * per, gy, prod.data<T>());
      kernels::reduce_axis(ctx, kernels::Reduce::sum, n * c, t, 1, prod.data<T>(), s1.data<T>(), nullptr);
      kernels::reduce_axis(ctx, kernels::Reduce::sum, n * c, t, 1, gy, s2.data<T>(), nullptr);
      kernels::binary(ctx, kernels::Binary::mul, c, h.data<T>(), rec.stat_b.data<T>(), hs.data<T>());
      kernels::binary(ctx, kernels::Binary::mul, c, hs.data<T>(), rec.stat_a.data<T>(), hsm.data<T>());
      kernels::gemm(ctx, false, false, n, 1, c, T(1), s1.data<T>(), c, hs.data<T>(), 1, T(1), out.data<T>(), 1);
      kernels::gemm(ctx, false, false, n, 1, c, T(-1), s2.data<T>(), c, hsm.data<T>(), 1, T(1), out.data<T>(), 1);
    });
  }
};

const HardnessRuleRegistrar batch_norm_rule("batch_norm", std::make_unique<BatchNormRule>());

}  // namespace
}  // namespace hamu
