// unlearn/stopping.cpp: the reference-free stopping rules and the monitor the runner consults per step.
#include "unlearn/stopping.h"

#include <algorithm>
#include <cmath>

#include "engine/tensor.h"
#include "unlearn/metrics.h"

namespace hamu {

const char* stop_rule_name(StopRule r) {
  switch (r) {
    case StopRule::none: return "none";
    case StopRule::criterion: return "criterion";
    case StopRule::mia: return "mia";
    case StopRule::loss_rise: return "loss-rise";
    case StopRule::kappa: return "kappa";
    case StopRule::retain_rise: return "retain-rise";
    case StopRule::automatic: return "auto";
  }
  return "?";
}

StopRule parse_stop_rule(const std::string& name) {
  for (StopRule r : {StopRule::none, StopRule::criterion, StopRule::mia, StopRule::loss_rise, StopRule::kappa,
                     StopRule::retain_rise, StopRule::automatic})
    if (name == stop_rule_name(r)) return r;
  throw InputError("--stop: '" + name + "' is not auto, none, criterion, mia, loss-rise, kappa or retain-rise");
}

StopRule resolve_stop_rule(StopRule r, bool has_probe) {
  if (r != StopRule::automatic) return r;
  // The sweep (README "Stopping"): loss-rise alone stops class-forgetting splits in time but never fires
  // when the forget set mixes in retain-like samples; retain-rise catches those.
  return has_probe ? StopRule::automatic : StopRule::none;
}

bool stop_rule_needs_probe(StopRule r) {
  return r == StopRule::mia || r == StopRule::loss_rise || r == StopRule::retain_rise || r == StopRule::automatic;
}

double forget_heldout_auc(const StopProbe& p) { return roc_auc(p.forget, p.heldout); }

double mean_loss(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += x;
  return v.empty() ? 0.0 : s / double(v.size());
}

bool mia_rule_met(const StopProbe& p, double band) {
  if (p.forget.empty() || p.heldout.empty()) return false;
  return forget_heldout_auc(p) <= 0.5 + band;
}

bool loss_rise_rule_met(const StopProbe& p) {
  if (p.forget.empty() || p.heldout.empty()) return false;
  return mean_loss(p.forget) >= mean_loss(p.heldout);
}

bool retain_rise_rule_met(const StopProbe& p, double baseline, double tol) {
  if (p.retain.empty() || !(baseline > 0)) return false;
  return mean_loss(p.retain) > baseline * (1.0 + tol);
}

bool kappa_rule_met(const std::vector<bool>& collateral_majority, double share) {
  if (collateral_majority.empty()) return false;
  const auto hits = std::count(collateral_majority.begin(), collateral_majority.end(), true);
  return double(hits) >= share * double(collateral_majority.size());
}

StopMonitor::StopMonitor(const StopSettings& s, std::function<StopProbe()> probe)
    : s_(s), rule_(resolve_stop_rule(s.rule, bool(probe))), probe_(std::move(probe)) {
  if (s_.check_every < 1) throw InputError("--stop-check-every: must be at least 1");
  if (!(s_.retain_tol >= 0) || !std::isfinite(s_.retain_tol))
    throw InputError("--stop-retain-tol: must be a finite fraction >= 0");
  if (stop_rule_needs_probe(rule_) && !probe_)
    throw InputError(std::string("--stop ") + stop_rule_name(rule_) +
                     ": needs held-out samples of the forget set's classes, which this run does not have");
}

void StopMonitor::start() {
  if (rule_ != StopRule::retain_rise && rule_ != StopRule::automatic) return;
  const StopProbe p = probe_();
  retain_base_ = mean_loss(p.retain);
}

std::optional<StopReason> StopMonitor::after_step(int64_t step, const HamuReport& r, bool applied) {
  probed_ = false;
  if (rule_ == StopRule::kappa) {
    window_.push_back(applied && r.n_blocks > 0 && r.n_collateral * 2 > r.n_blocks);
    if (int64_t(window_.size()) > s_.check_every) window_.erase(window_.begin());
    // Sustained: judged only on a full window.
    if (int64_t(window_.size()) == s_.check_every && kappa_rule_met(window_, s_.kappa_share)) return StopReason::kappa;
    return std::nullopt;
  }
  if (!stop_rule_needs_probe(rule_) || step % s_.check_every != 0) return std::nullopt;
  const StopProbe p = probe_();
  probed_ = true;
  auc_ = forget_heldout_auc(p);
  forget_loss_ = mean_loss(p.forget);
  heldout_loss_ = mean_loss(p.heldout);
  retain_loss_ = mean_loss(p.retain);
  const bool any = rule_ == StopRule::automatic;
  if (rule_ == StopRule::mia && mia_rule_met(p, s_.mia_band)) return StopReason::mia;
  if ((rule_ == StopRule::loss_rise || any) && loss_rise_rule_met(p)) return StopReason::loss_rise;
  if ((rule_ == StopRule::retain_rise || any) && retain_rise_rule_met(p, retain_base_, s_.retain_tol))
    return StopReason::retain_rise;
  return std::nullopt;
}

}  // namespace hamu
