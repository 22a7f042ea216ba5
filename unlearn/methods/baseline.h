// unlearn/methods/baseline.h: what the baselines (HAMU.md §6) share: a step that is the same for every
// block, theta += a * r' + b * f' on the clipped gradients r', f', from the global statistics. A baseline
// only says how (a, b) follow from the clipped statistics (its rule) and, where it is not cross-entropy,
// its objectives.
#pragma once
#include "unlearn/method.h"

namespace hamu {

// The step on the clipped gradients: theta += a * r' + b * f'.
struct BaselineRule {
  double a = 0, b = 0;
  bool projected = false;  // gru/pcgrad projected this step
};

// A baseline's step theta += coef_r * r + coef_f * f on the raw gradients (clipping folded in).
struct BaselineStep {
  double coef_r = 0, coef_f = 0;
  bool projected = false;       // gru/pcgrad projected this step
  double kappa = 0;             // <r,f> after clipping
  double retain_scale = 1, forget_scale = 1;
};

class BaselineMethod : public Method {
 public:
  using Method::Method;
  // (a, b) from the clipped statistics crr = ||r'||^2, cff = ||f'||^2, d = <r', f'>.
  virtual BaselineRule rule(const MethodParams& p, double crr, double cff, double d) const = 0;
  // Clips (each gradient to total norm p.clip) and applies the rule, from the raw global statistics
  // rr = ||r||^2, ff = ||f||^2, rf = <r,f>.
  BaselineStep step(const MethodParams& p, double rr, double ff, double rf) const;
  // Sums the block statistics, reports norms, kappa and angle, and gives every block the same step.
  StepDecision coefficients(const UnlearnOptions& opt, int count, const std::vector<double>& stats) const override;
};

// The step of baseline `m` (Error for a method that is not a baseline, e.g. HAMU).
BaselineStep baseline_step(const Method& m, const MethodParams& p, double rr, double ff, double rf);


}  // namespace hamu
