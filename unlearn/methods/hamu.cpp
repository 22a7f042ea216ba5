// unlearn/methods/hamu.cpp: HAMU-Q and HAMU-U (HAMU.md §3-5): per block, the least first-order cost on
// the objective gradient a subject to a guaranteed gain B on the constraint gradient c within radius R;
// Q uses (a, c) = (r, f), U uses (a, c) = (-f, -r). The solver itself is per-block math in
// kernels/hamu_math.h; its step runs on the parameters' device fused with the apply pass (own_step),
// and on the host when the step is fed to AdamW instead (coefficients).
#include <cmath>
#include <cstdio>

#include "unlearn/method_registry.h"
#include "unlearn/update.h"

namespace hamu {
namespace {

std::string fmt_g(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

int32_t scope_code(HamuScope s) { return s == HamuScope::global ? kernels::scope_global : kernels::scope_layer; }

int32_t split_code(ConstraintSplit s) {
  switch (s) {
    case ConstraintSplit::uniform: return kernels::split_uniform;
    case ConstraintSplit::softmax_dp: return kernels::split_softmax_dp;
    case ConstraintSplit::grad_norm: break;
  }
  return kernels::split_grad_norm;
}

class Hamu final : public Method {
 public:
  Hamu(kernels::HamuVariant variant, const char* name, const char* help)
      : Method(name, help, {.hamu = true}), variant_(variant) {}

  kernels::HamuConfig config(const UnlearnOptions& opt) const {
    kernels::HamuConfig c;
    c.variant = variant_;
    c.scope = scope_code(opt.scope);
    c.split = split_code(opt.split);
    c.fixed_radius = opt.fixed_radius ? 1 : 0;
    c.constraint = opt.ratio * opt.params.lr;
    c.lr = opt.params.lr;
    c.radius = opt.radius;
    c.continue_on_infeasible = opt.continue_on_infeasible ? 1 : 0;
    c.stop_on_criterion = opt.stop_on_criterion ? 1 : 0;
    c.clip = opt.params.clip;
    return c;
  }

  void validate(const UnlearnOptions& opt) const override {
    if (!(opt.ratio >= 0) || !std::isfinite(opt.ratio)) throw InputError("--ratio: must be >= 0");
    if (opt.fixed_radius && !(opt.radius > 0)) throw InputError("--radius: must be positive");
    // With R = lr * ||a|| and gradients clipped to C, the largest gain is lr * C^2 per step
    // (HAMU.md §4): a ratio above C^2 can never be met.
    const double c = opt.params.clip;
    if (!opt.fixed_radius && c > 0 && opt.ratio > c * c)
      throw InputError("--ratio " + fmt_g(opt.ratio) + " can never be feasible with the learning-rate radius and --clip " +
                       fmt_g(c) + " (the forget gain per step is at most lr * clip^2): use --ratio <= " + fmt_g(c * c));
  }

  // On the host (the AdamW ablation): the same solver over the host copy of the statistics.
  StepDecision coefficients(const UnlearnOptions& opt, int count, const std::vector<double>& stats) const override {
    StepDecision out;
    out.coef.resize(size_t(2 * count));
    kernels::hamu_solve_step(config(opt), count, stats.data(), out.coef.data(), &out.report);
    out.stop = stop_reason(opt, out.report);
    return out;
  }

  // On the parameters' device: coefficients and apply pass fused, one small report copy.
  std::optional<StepDecision> own_step(const UnlearnOptions& opt, FusedUpdate& update) const override {
    return own_decision(opt, update.hamu_step(config(opt)));
  }

  bool own_step_async(const UnlearnOptions& opt, FusedUpdate& update, HamuReport* host_report) const override {
    update.hamu_step_async(config(opt), host_report);
    return true;
  }

  StepDecision own_decision(const UnlearnOptions& opt, const HamuReport& report) const override {
    StepDecision out;
    out.report = report;
    out.stop = stop_reason(opt, report);
    return out;
  }

 private:
  // Why a refused step ends the run: no block could gain its B, or no retain-neutral progress is left.
  static StopReason stop_reason(const UnlearnOptions& opt, const HamuReport& r) {
    return r.n_infeasible > 0 && !opt.continue_on_infeasible ? StopReason::infeasible : StopReason::criterion;
  }

  kernels::HamuVariant variant_;
};

const MethodRegistration kHamuQ(std::make_unique<Hamu>(kernels::hamu_q, "hamu-q",
                                                       "HAMU-Q: least retain-loss increase subject to a guaranteed "
                                                       "forget gain B = ratio*lr per step"),
                                10);
const MethodRegistration kHamuU(std::make_unique<Hamu>(kernels::hamu_u, "hamu-u",
                                                       "HAMU-U: most forgetting subject to a guaranteed retain-loss "
                                                       "decrease B = ratio*lr per step"),
                                20);

}  // namespace

kernels::HamuConfig hamu_config(const UnlearnOptions& opt) {
  const auto* h = dynamic_cast<const Hamu*>(opt.method);
  if (!h) throw Error("hamu_config: method " + (opt.method ? opt.method->name() : std::string("(none)")) + " is not HAMU");
  return h->config(opt);
}

}  // namespace hamu
