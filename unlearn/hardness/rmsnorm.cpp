// unlearn/hardness/rmsnorm.cpp: hardness rule of RMSNorm ("rms_norm" records: x and G [N*T, d], 1/rms per
// row; Llama's norms). The weight is materialised (d values per sample: the sum over a sample's rows of
// x * (1/rms) * g).
#include "unlearn/hardness/norm_affine.h"

namespace hamu {
namespace {

class RmsNormRule : public HardnessRule {
 public:
  void plan(const CaptureRecord&, HardnessBlock& b) const override {
    b.kind = "rms_norm weight";
    b.in = b.out = b.numel;
  }

  BlockRep rep(const CaptureRecord& rec, const HardnessBlock& b, int64_t s0, int64_t n, bool) const override {
    return row_norm_rep(rec, b, s0, n);
  }
};

const HardnessRuleRegistrar rms_norm_rule("rms_norm", std::make_unique<RmsNormRule>());

}  // namespace
}  // namespace hamu
