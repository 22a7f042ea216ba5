// unlearn/methods/ft.cpp: fine-tuning on the retain set only (HAMU.md §6): g_eq = grad L_r.
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"

namespace hamu {
namespace {

class Ft final : public BaselineMethod {
 public:
  Ft() : BaselineMethod("ft", "fine-tune: gradient descent on the retain loss only", {.uses_forget = false}) {}
  BaselineRule rule(const MethodParams& p, double, double, double) const override { return {-p.lr, 0}; }
};

const MethodRegistration kRegistration(std::make_unique<Ft>(), 30);

}  // namespace
}  // namespace hamu
