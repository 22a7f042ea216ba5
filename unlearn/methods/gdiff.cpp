// unlearn/methods/gdiff.cpp: gradient difference (HAMU.md §6): g_eq = 1/2 (grad L_r - grad L_f).
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"

namespace hamu {
namespace {

class Gdiff final : public BaselineMethod {
 public:
  Gdiff() : BaselineMethod("gdiff", "gradient difference: descend the retain loss, ascend the forget loss", {}) {}
  BaselineRule rule(const MethodParams& p, double, double, double) const override { return {-p.lr / 2, p.lr / 2}; }
};

const MethodRegistration kRegistration(std::make_unique<Gdiff>(), 50);

}  // namespace
}  // namespace hamu
