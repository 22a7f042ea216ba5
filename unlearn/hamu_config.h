// unlearn/hamu_config.h: HAMU's user-facing types, owned by unlearn/ so that callers (cli/, capi/) never
// name kernels/: the scope and constraint-split choices with their flag spellings, the per-step
// report, and the mapping of an unlearning run's options onto the solver's POD configuration.
//
// kernels/hamu_math.h keeps only what the per-block math needs on host and device: a POD config with
// int32 fields and the POD report that the CUDA backend copies back asynchronously. HamuReport here is
// that same POD under unlearn's name (one definition, so the device kernel and the CPU host path stay
// byte-identical); HamuScope and ConstraintSplit are converted to the POD's codes in hamu_config().
#pragma once
#include <string>

#include "kernels/hamu_math.h"

namespace hamu {

// What one step did: norms, kappa, angle for every method; HAMU adds the thresholds, branch counts,
// margins and whether the step was applied.
using HamuReport = kernels::HamuReport;

enum class HamuScope { layer, global };                     // per parameter tensor, or one global block
enum class ConstraintSplit { grad_norm, uniform, softmax_dp };  // how B is split over blocks (layer scope)

HamuScope parse_scope(const std::string& s);                  // InputError naming --scope
const char* scope_name(HamuScope s);                          // "layer" | "global"
ConstraintSplit parse_constraint_split(const std::string& s);  // InputError naming --constraint-split
const char* constraint_split_name(ConstraintSplit s);         // "grad-norm" | "uniform" | "softmax-dp"

struct UnlearnOptions;
// The solver configuration that a run's options map to (opt.method must be hamu-q or hamu-u; Error
// otherwise). Defined with the HAMU methods (unlearn/methods/hamu.cpp).
kernels::HamuConfig hamu_config(const UnlearnOptions& opt);

}  // namespace hamu
