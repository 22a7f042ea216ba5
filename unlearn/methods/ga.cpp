// unlearn/methods/ga.cpp: gradient ascent on the forget set only (HAMU.md §6): g_eq = -grad L_f.
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"

namespace hamu {
namespace {

class Ga final : public BaselineMethod {
 public:
  Ga() : BaselineMethod("ga", "gradient ascent on the forget loss only", {.uses_retain = false}) {}
  BaselineRule rule(const MethodParams& p, double, double, double) const override { return {0, p.lr}; }
};

const MethodRegistration kRegistration(std::make_unique<Ga>(), 40);

}  // namespace
}  // namespace hamu
