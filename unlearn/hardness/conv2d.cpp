// unlearn/hardness/conv2d.cpp: hardness rule of Conv2d ("conv2d" records: input images, geometry,
// G [N, K, OH, OW]). Weight: P_i = G_i U_i^T with U_i the sample's im2col unfolding (factored over the
// T = OH*OW output positions: x = U_i^T rows, y = G_i^T rows); bias: the sum of G over positions.
#include <algorithm>

#include "unlearn/hardness_rule.h"

namespace hamu {
namespace {

class Conv2dRule : public HardnessRule {
 public:
  void plan(const CaptureRecord& rec, HardnessBlock& b) const override {
    const bool weight = b.role == ParamRole::weight;
    b.kind = weight ? "conv2d" : "conv2d bias";
    b.factored = weight;
    b.in = rec.conv.c * rec.conv.r * rec.conv.s;
    b.out = rec.conv.k;
  }

  BlockRep rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, bool ghost) const override {
    const Tensor& g = rec.output_grad;
    const DType dt = g.dtype();
    const Device dev = g.device();
    const int64_t t = rec.positions;
    BlockRep rep;
    if (b.role == ParamRole::bias) {
      const int64_t k = rec.conv.k;
      rep.p = Tensor::empty({n, k}, dt, dev);
      hardness_kernels(g, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::reduce_axis(ctx, kernels::Reduce::sum, n * k, t, 1, g.data<T>() + s0 * k * t, rep.p.data<T>(), nullptr);
      });
      return rep;
    }
    const kernels::ConvShape& cs = rec.conv;
    const int64_t d = b.in, k = b.out, img = cs.c * cs.h * cs.w;
    Tensor u = Tensor::empty({n, d, t}, dt, dev);
    if (ghost) {
      rep.x = Tensor::empty({n * t, d}, dt, dev);
      rep.y = Tensor::empty({n * t, k}, dt, dev);
    } else {
      rep.p = Tensor::empty({n, b.numel}, dt, dev);
    }
    hardness_kernels(g, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      const T* x = rec.input.data<T>() + s0 * img;
      const T* gy = g.data<T>() + s0 * k * t;
      kernels::ConvShape one = cs;
      one.n = 1;
      for (int64_t i = 0; i < n; ++i) kernels::im2col(ctx, one, x + i * img, u.data<T>() + i * d * t);
      if (ghost) {
        // Rows per output position: U_i^T [T, D] and G_i^T [T, K].
        const int64_t shape_u[3] = {n, t, d}, stride_u[3] = {d * t, 1, t};
        kernels::strided_copy(ctx, 3, shape_u, stride_u, u.data<T>(), rep.x.data<T>());
        const int64_t shape_g[3] = {n, t, k}, stride_g[3] = {k * t, 1, t};
        kernels::strided_copy(ctx, 3, shape_g, stride_g, gy, rep.y.data<T>());
      } else {
        // P_i [K, D] = G_i [K, T] U_i^T.
        kernels::gemm_batched(ctx, false, true, k, d, t, T(1), gy, t, k * t, u.data<T>(), t, d * t, T(0),
                              rep.p.data<T>(), d, k * d, n);
      }
    });
    return rep;
  }

  void row_form(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, const Tensor& h,
                Tensor& out) const override {
    if (b.role == ParamRole::bias) return HardnessRule::row_form(rec, b, s0, n, h, out);
    const int64_t t = rec.positions;
    hardness_kernels(out, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      // The same through the convolution itself: Q = conv(x_j; H), then <Q_j, G_j>.
      kernels::ConvShape cs = rec.conv;
      cs.n = n;
      const int64_t img = cs.c * cs.h * cs.w;
      Tensor q = Tensor::empty({n, cs.k, t}, out.dtype(), out.device());
      Tensor ws = Tensor::empty({std::max<int64_t>(1, kernels::conv2d_workspace_elems(ctx, cs))}, out.dtype(), out.device());
      kernels::conv2d_forward(ctx, cs, rec.input.data<T>() + s0 * img, h.data<T>(), static_cast<const T*>(nullptr),
                              q.data<T>(), ws.data<T>());
      kernels::segment_rowdot(ctx, n, 1, cs.k * t, q.data<T>(), rec.output_grad.data<T>() + s0 * cs.k * t, out.data<T>());
    });
  }
};

const HardnessRuleRegistrar conv2d_rule("conv2d", std::make_unique<Conv2dRule>());

}  // namespace
}  // namespace hamu
