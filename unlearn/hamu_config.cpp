// unlearn/hamu_config.cpp: the flag spellings of HAMU's scope and constraint-split choices.
#include "unlearn/hamu_config.h"

#include "engine/error.h"

namespace hamu {

HamuScope parse_scope(const std::string& s) {
  if (s == "layer") return HamuScope::layer;
  if (s == "global") return HamuScope::global;
  throw InputError("--scope: '" + s + "' is not layer or global");
}

const char* scope_name(HamuScope s) { return s == HamuScope::global ? "global" : "layer"; }

ConstraintSplit parse_constraint_split(const std::string& s) {
  if (s == "grad-norm") return ConstraintSplit::grad_norm;
  if (s == "uniform") return ConstraintSplit::uniform;
  if (s == "softmax-dp") return ConstraintSplit::softmax_dp;
  throw InputError("--constraint-split: '" + s + "' is not grad-norm, uniform or softmax-dp");
}

const char* constraint_split_name(ConstraintSplit s) {
  switch (s) {
    case ConstraintSplit::grad_norm: return "grad-norm";
    case ConstraintSplit::uniform: return "uniform";
    case ConstraintSplit::softmax_dp: return "softmax-dp";
  }
  return "?";
}

}  // namespace hamu
