// unlearn/options.cpp: names of the optimizer and stop-reason choices (as the CLI, CSV and JSON spell them).
#include "unlearn/options.h"

namespace hamu {

const char* optimizer_name(OptimizerKind o) { return o == OptimizerKind::adamw ? "adamw" : "sgd"; }

OptimizerKind parse_optimizer(const std::string& name) {
  if (name == "sgd") return OptimizerKind::sgd;
  if (name == "adamw") return OptimizerKind::adamw;
  throw InputError("--optimizer: '" + name + "' is not sgd or adamw");
}

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::max_steps: return "max_steps";
    case StopReason::infeasible: return "infeasible";
    case StopReason::criterion: return "criterion";
    case StopReason::nan: return "nan";
    case StopReason::mia: return "mia";
    case StopReason::loss_rise: return "loss_rise";
    case StopReason::kappa: return "kappa";
    case StopReason::retain_rise: return "retain_rise";
  }
  return "?";
}

}  // namespace hamu
