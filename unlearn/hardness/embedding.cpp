// unlearn/hardness/embedding.cpp: hardness rule of Embedding ("embedding" records: int32 indices
// [N*T], G [N*T, dim]). The per-sample gradient scatters G's rows into the rows its indices pick:
// factored with one-hot x (a . a' = [index == index']) and y = g.
#include <vector>

#include "unlearn/hardness_rule.h"

namespace hamu {
namespace {

class EmbeddingRule : public HardnessRule {
 public:
  void plan(const CaptureRecord& rec, HardnessBlock& b) const override {
    b.kind = "embedding";
    b.factored = true;
    b.in = rec.weight.shape()[0];  // vocabulary
    b.out = rec.weight.shape()[1];
  }

  BlockRep rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, bool ghost) const override {
    const Tensor& g = rec.output_grad;
    const DType dt = g.dtype();
    const Device dev = g.device();
    const int64_t t = rec.positions, vocab = b.in, dim = b.out;
    const int32_t* idx = rec.input.data<int32_t>() + s0 * t;
    Tensor gy = sample_rows(g, dim, s0 * t, n * t);
    BlockRep rep;
    if (ghost) {
      // One-hot rows: a.a' = [x == x'], through a GEMM like every other block.
      std::vector<double> eye(size_t(vocab * vocab), 0.0);
      for (int64_t v = 0; v < vocab; ++v) eye[size_t(v * vocab + v)] = 1.0;
      Tensor table = Tensor::from_doubles(eye, {vocab, vocab}, dt).to(dev);
      rep.x = Tensor::empty({n * t, vocab}, dt, dev);
      rep.y = gy;
      hardness_kernels(g, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::embedding_forward(ctx, n * t, vocab, idx, table.data<T>(), rep.x.data<T>());
      });
      return rep;
    }
    rep.p = Tensor::zeros({n, b.numel}, dt, dev);
    hardness_kernels(g, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      for (int64_t i = 0; i < n; ++i)
        kernels::embedding_backward(ctx, t, dim, vocab, idx + i * t, gy.data<T>() + i * t * dim,
                                    rep.p.data<T>() + i * b.numel);
    });
    return rep;
  }

  void row_form(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, const Tensor& h,
                Tensor& out) const override {
    const int64_t t = rec.positions;
    hardness_kernels(out, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      // Q = H[x_{j,t}], then row dots with G.
      Tensor gy = sample_rows(rec.output_grad, b.out, s0 * t, n * t);
      Tensor q = Tensor::empty({n * t, b.out}, out.dtype(), out.device());
      kernels::embedding_forward(ctx, n * t, b.out, rec.input.data<int32_t>() + s0 * t, h.data<T>(), q.data<T>());
      kernels::segment_rowdot(ctx, n, t, b.out, q.data<T>(), gy.data<T>(), out.data<T>());
    });
  }
};

const HardnessRuleRegistrar embedding_rule("embedding", std::make_unique<EmbeddingRule>());

}  // namespace
}  // namespace hamu
