// unlearn/methods/pcgrad.cpp: PCGrad (HAMU.md §6) on the objectives (L_r, -L_f): each gradient projected
// off the other when they conflict, then averaged.
#include "unlearn/method_registry.h"
#include "unlearn/methods/baseline.h"

namespace hamu {
namespace {

class PcGrad final : public BaselineMethod {
 public:
  PcGrad() : BaselineMethod("pcgrad", "PCGrad on (retain loss, -forget loss): project each off the other on conflict", {}) {}
  BaselineRule rule(const MethodParams& p, double crr, double cff, double d) const override {
    // Objectives L_r and -L_f with gradients g1 = r', g2 = -f'; they conflict when <g1,g2> < 0.
    const double eta = p.lr;
    BaselineRule r;
    const bool conflict = p.paper_compat ? d < 0 : d > 0;
    if (conflict && crr > 1e-20 && cff > 1e-20) {
      // g_eq = 1/2 [(g1 - <g1,g2>/|g2|^2 g2) + (g2 - <g2,g1>/|g1|^2 g1)], <g1,g2> = -d
      r.a = -eta / 2 * (1.0 + d / crr);
      r.b = eta / 2 * (1.0 + d / cff);
      r.projected = true;
    } else {
      r.a = -eta / 2;
      r.b = eta / 2;
    }
    return r;
  }
};

const MethodRegistration kRegistration(std::make_unique<PcGrad>(), 100);

}  // namespace
}  // namespace hamu
