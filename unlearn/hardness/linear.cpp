// unlearn/hardness/linear.cpp: hardness rule of Linear ("linear" records: A [N*T, in], G [N*T, out]).
// Weight: per-sample gradient G_i^T A_i over the sample's T rows (factored: x = a, y = g); bias: the
// sum of G over the rows.
#include "unlearn/hardness_rule.h"

namespace hamu {
namespace {

class LinearRule : public HardnessRule {
 public:
  void plan(const CaptureRecord& rec, HardnessBlock& b) const override {
    const bool weight = b.role == ParamRole::weight;
    b.kind = weight ? "linear" : "linear bias";
    b.factored = weight;
    b.in = rec.input.shape().back();
    b.out = rec.weight.shape()[0];
  }

  BlockRep rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, bool ghost) const override {
    const Tensor& g = rec.output_grad;
    const int64_t t = rec.positions;
    BlockRep rep;
    if (b.role == ParamRole::bias) {
      Tensor gy = sample_rows(g, b.numel, s0 * t, n * t);
      rep.p = Tensor::empty({n, b.numel}, g.dtype(), g.device());
      hardness_kernels(g, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::reduce_axis(ctx, kernels::Reduce::sum, n, t, b.numel, gy.data<T>(), rep.p.data<T>(), nullptr);
      });
      return rep;
    }
    Tensor a = sample_rows(rec.input, b.in, s0 * t, n * t), gy = sample_rows(g, b.out, s0 * t, n * t);
    if (ghost) {
      rep.x = a;
      rep.y = gy;
      return rep;
    }
    rep.p = Tensor::empty({n, b.numel}, g.dtype(), g.device());
    hardness_kernels(g, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      // P_i [out, in] = G_i^T A_i over the sample's T rows.
      kernels::gemm_batched(ctx, true, false, b.out, b.in, t, T(1), gy.data<T>(), b.out, t * b.out, a.data<T>(), b.in,
                            t * b.in, T(0), rep.p.data<T>(), b.in, b.numel, n);
    });
    return rep;
  }

  void row_form(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, const Tensor& h,
                Tensor& out) const override {
    if (b.role == ParamRole::bias) return HardnessRule::row_form(rec, b, s0, n, h, out);
    const int64_t t = rec.positions;
    hardness_kernels(out, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      // kappa_j = sum_t g_{j,t} . (H a_{j,t}): Q = A H^T, then per-sample row dots with G.
      Tensor a = sample_rows(rec.input, b.in, s0 * t, n * t), gy = sample_rows(rec.output_grad, b.out, s0 * t, n * t);
      Tensor q = Tensor::empty({n * t, b.out}, out.dtype(), out.device());
      kernels::gemm(ctx, false, true, n * t, b.out, b.in, T(1), a.data<T>(), b.in, h.data<T>(), b.in, T(0), q.data<T>(),
                    b.out);
      kernels::segment_rowdot(ctx, n, t, b.out, q.data<T>(), gy.data<T>(), out.data<T>());
    });
  }
};

const HardnessRuleRegistrar linear_rule("linear", std::make_unique<LinearRule>());

}  // namespace
}  // namespace hamu
