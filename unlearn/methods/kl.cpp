// unlearn/methods/kl.cpp: KL minimisation (HAMU.md §6): g_eq = 1/2 (grad KL_r - grad L_f), with
// KL_r = KL(p_orig || p_theta) on the retain batch against the frozen original model.
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"

namespace hamu {
namespace {

class Kl final : public BaselineMethod {
 public:
  Kl()
      : BaselineMethod("kl", "stay close to the original model on retain (KL), ascend the forget loss",
                       {.needs_original = true}) {}
  Tensor retain_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                          const Tensor& original_logits) const override {
    return task_kl(original_logits, logits, labels);
  }
  BaselineRule rule(const MethodParams& p, double, double, double) const override { return {-p.lr / 2, p.lr / 2}; }
};

const MethodRegistration kRegistration(std::make_unique<Kl>(), 60);

}  // namespace
}  // namespace hamu
