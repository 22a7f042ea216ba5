// unlearn/methods/gru.cpp: GRU (HAMU.md §6): forget ascent, projected off the retain gradient when the
// two conflict.
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"

namespace hamu {
namespace {

class Gru final : public BaselineMethod {
 public:
  Gru() : BaselineMethod("gru", "forget ascent, projected off the retain gradient when they conflict", {}) {}
  BaselineRule rule(const MethodParams& p, double crr, double cff, double d) const override {
    // Forget ascent u = f'; when it would raise the retain loss (<r', f'> > 0) take its part
    // orthogonal to r'. The published code tests the opposite sign (paper_compat).
    const double eta = p.lr;
    BaselineRule r;
    const bool conflict = p.paper_compat ? d < 0 : d > 0;
    r.b = eta;
    if (conflict && crr > 1e-20) {
      r.a = -eta * d / crr;
      r.projected = true;
    }
    return r;
  }
};

const MethodRegistration kRegistration(std::make_unique<Gru>(), 90);

}  // namespace
}  // namespace hamu
