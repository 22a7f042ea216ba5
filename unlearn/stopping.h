// unlearn/stopping.h: reference-free stopping rules (issue #17): decide when to stop unlearning from
// data the run already has (the forget set and held-out test samples of the same classes) and from the
// HAMU solver's per-step report, never from a retrained model.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kernels/hamu_math.h"
#include "unlearn/options.h"

namespace hamu {

// Per-sample losses of the current model on a fixed forget subsample, on held-out test samples drawn
// with the forget subsample's class mix (the "unseen data of the same classes" the forget set should come
// to look like), and on a fixed retain subsample (what unlearning must not damage).
struct StopProbe {
  std::vector<float> forget, heldout, retain;
};

// P(loss_heldout > loss_forget) + 0.5 P(equal): 0.5 = the forget set looks like unseen data; below 0.5
// its losses are above the held-out ones (class forgetting goes there).
double forget_heldout_auc(const StopProbe& p);
double mean_loss(const std::vector<float>& v);

// mia: the loss-based membership attack can no longer tell forget from held-out: AUC <= 0.5 + band. One
// sided: an AUC below 0.5 (forget losses above the held-out ones, as in class forgetting where the held-out
// same-class samples are the only comparison) also counts.
bool mia_rule_met(const StopProbe& p, double band);
// loss-rise: the forget set's mean loss has reached the held-out same-class mean loss.
bool loss_rise_rule_met(const StopProbe& p);
// kappa: in at least `share` of the window's steps, most blocks had kappa > kappa2 (collateral forgetting
// unavoidable: the one-sided HAMU criterion). An empty window never fires.
bool kappa_rule_met(const std::vector<bool>& collateral_majority, double share);
// retain-rise: the retain probe's mean loss has risen more than `tol` (relative) above the original
// model's `baseline`: forgetting has started to cost the retained data. Never fires without a baseline.
bool retain_rise_rule_met(const StopProbe& p, double baseline, double tol);

// Applies opt.stop.rule after each step: every check_every steps for the probe rules (one probe each
// check), over the last check_every steps for kappa. criterion is HAMU's own stop (the method refuses the
// step), none never stops. auto (with a probe) checks loss-rise and retain-rise at each probe.
class StopMonitor {
 public:
  StopMonitor(const StopSettings& s, std::function<StopProbe()> probe);
  // Before the first step of a fresh run: the original model's retain-probe loss (retain-rise and auto
  // compare against it; no probe for the other rules). A resumed run restores it instead.
  void start();
  // After step `step` with the solver's report: the reason to stop now, if any.
  std::optional<StopReason> after_step(int64_t step, const HamuReport& r, bool applied);
  bool probed() const { return probed_; }  // whether the last after_step ran a probe
  double last_auc() const { return auc_; }
  double last_forget_loss() const { return forget_loss_; }
  double last_heldout_loss() const { return heldout_loss_; }
  double last_retain_loss() const { return retain_loss_; }
  double retain_baseline() const { return retain_base_; }
  void restore_retain_baseline(double b) { retain_base_ = b; }
  // The kappa rule's window of recent steps: all the state a resumed run needs (the probe rules keep none).
  const std::vector<bool>& window() const { return window_; }
  void restore_window(std::vector<bool> w) { window_ = std::move(w); }

 private:
  StopSettings s_;
  StopRule rule_;  // auto resolved
  std::function<StopProbe()> probe_;
  std::vector<bool> window_;
  bool probed_ = false;
  double auc_ = 0.5, forget_loss_ = 0, heldout_loss_ = 0, retain_loss_ = 0;
  double retain_base_ = 0;  // 0: not measured (the rules that need it never fire)
};

// Which rule `auto` means (the default chosen by the sweep in the README "Stopping"): with held-out data
// (`has_probe`: images yes, text no) auto itself, i.e. loss-rise or retain-rise; without it none.
StopRule resolve_stop_rule(StopRule r, bool has_probe);
bool stop_rule_needs_probe(StopRule r);

}  // namespace hamu
