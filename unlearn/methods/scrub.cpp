// unlearn/methods/scrub.cpp: SCRUB (HAMU.md §6): g_eq = 1/2 (grad(alpha KL_r + gamma L_r) - grad KL_f),
// alpha = 0.001, gamma = 0.99: stay with the original on retain, move away from it on forget.
#include "engine/ops.h"
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"

namespace hamu {
namespace {

class Scrub final : public BaselineMethod {
 public:
  Scrub()
      : BaselineMethod("scrub", "SCRUB: retain KL + cross-entropy down, forget KL to the original model up",
                       {.needs_original = true}) {}
  Tensor retain_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                          const Tensor& original_logits) const override {
    return add(mul_scalar(task_kl(original_logits, logits, labels), p.scrub_alpha),
               mul_scalar(task_loss(logits, labels), p.scrub_gamma));
  }
  Tensor forget_objective(const MethodParams& p, const Tensor& logits, const Tensor& labels,
                          const Tensor& original_logits) const override {
    return task_kl(original_logits, logits, labels);
  }
  BaselineRule rule(const MethodParams& p, double, double, double) const override { return {-p.lr / 2, p.lr / 2}; }
};

const MethodRegistration kRegistration(std::make_unique<Scrub>(), 70);

}  // namespace
}  // namespace hamu
