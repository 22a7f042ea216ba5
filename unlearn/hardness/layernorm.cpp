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
    return row_norm_rep(rec, b, s0, n);
  }
};

const HardnessRuleRegistrar layer_norm_rule("layer_norm", std::make_unique<LayerNormRule>());

}  // namespace
}  // namespace hamu
