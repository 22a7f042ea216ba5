// unlearn/hardness/layernorm.cpp: hardness rule of LayerNorm ("layer_norm" records: x and G
// [N*T, d], mean and 1/std per row). Both affine parameters are materialised (d values per sample).
#include "unlearn/hardness/norm_affine.h"

namespace hamu {
namespace {

class LayerNormRule : public HardnessRule {
 public:
  void plan(const CaptureRecord& rec, HardnessBlock& b) const override {
    b.kind = b.role == ParamRole::weight ? "layer_norm weight" : "layer_norm bias";
    b.in = b.out = b.numel;
  }

  BlockRep rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, bool) const override {
    const int64_t c = rec.weight.numel(), t = rec.positions;
    // [n * t, c] rows with statistics per row; sums over a sample's t rows.
    const NormLayout l{.per = t * c, .ndim = 2, .shape = {n * t, c}, .x_strides = {c, 1}, .stat_strides = {1, 0},
                       .stat_offset = s0 * t, .outer = n, .len = t, .inner = c};
    return norm_affine_rep(rec, b, s0, n, l);
  }
};

const HardnessRuleRegistrar layer_norm_rule("layer_norm", std::make_unique<LayerNormRule>());

}  // namespace
}  // namespace hamu
