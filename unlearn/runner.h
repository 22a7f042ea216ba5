// unlearn/runner.h: the unlearning loop: pair one retain batch with one forget batch per step (the
// forget set cycles), compute the two objective gradients, take the method's step through the fused
// update, log, evaluate, and stop on max_steps, infeasible, criterion or nan.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"
#include "kernels/hamu_math.h"
#include "loaders/data.h"
#include "unlearn/methods.h"
#include "unlearn/metrics.h"

namespace hamu {

struct UnlearnOptions {
  Method method = Method::hamu_q;
  MethodParams params;              // lr, clip, paper_compat, scrub/npo constants
  double ratio = 0.1;               // B = ratio * lr (HAMU)
  bool fixed_radius = false;        // HAMU: R = radius instead of lr * ||a||
  double radius = 0.0;
  int32_t scope = kernels::scope_layer;
  int32_t split = kernels::split_grad_norm;
  bool stop_on_criterion = false;
  bool continue_on_infeasible = false;
  std::string optimizer = "sgd";    // sgd: theta moves by exactly the step; adamw: step fed as -step/lr
  int64_t steps = 100;
  int64_t batch = 128;              // retain batch
  int64_t forget_batch = 128;       // forget batch
  int64_t eval_every = 0;           // 0: evaluate only before and after
  uint64_t seed = 0;
  Device device;
  bool paired = true;               // one pass over [retain; forget] where valid (else two passes)
  bool progress = true;
  int64_t max_nan_steps = 10;       // consecutive non-finite steps before stopping with "nan"
};

struct StepLog {
  int64_t step = 0;
  double seconds = 0;               // unlearning time so far (evaluation excluded)
  double retain_loss = 0, forget_loss = 0;
  kernels::HamuReport report;       // HAMU: the solver's report; baselines: norms, kappa, angle
  bool skipped = false;             // non-finite loss or gradient: no update
  bool paired = false;              // gradients from the single paired pass
  bool projected = false;           // gru/pcgrad projected
};

struct EvalPoint {
  int64_t step = 0;
  double seconds = 0;               // unlearning time at this point
  EvalReport report;
};

struct UnlearnResult {
  std::vector<StepLog> log;
  std::vector<EvalPoint> evals;     // step 0 (before), every eval_every, and the end (after)
  std::string stop_reason;          // max_steps | infeasible | criterion | nan
  int64_t steps_done = 0;           // steps that updated the model
  int64_t skipped = 0;
  double seconds = 0;               // unlearning loop only
  double eval_seconds = 0;
  bool collateral_warned = false;
  std::string paired_fallback;      // why the paired pass was not used (empty when it was)
};

// Validates options (InputError naming the flag): unknown combinations, ratio > 1 with the lr radius
// and clipping at 1, non-positive lr or steps, empty forget set.
void validate_unlearn_options(const UnlearnOptions& opt, size_t forget_size, size_t retain_size);

struct UnlearnHooks {
  std::function<EvalReport(int64_t step, bool final)> evaluate;  // evaluation at step (may be null)
  std::function<void(const StepLog&)> on_step;             // e.g. CSV rows
  std::function<void(const EvalPoint&)> on_eval;
  std::function<void(const std::string&)> notice;          // plain-language messages (stderr)
};

// model: the model to unlearn (modified in place); original: a frozen copy for kl/scrub/npo (may be
// null otherwise). BatchNorm is frozen for the run and restored afterwards.
UnlearnResult run_unlearning(nn::Module& model, nn::Module* original, const ImageDataset& train, const Split& split,
                             const Normalizer& norm, const UnlearnOptions& opt, const UnlearnHooks& hooks);

// The HamuConfig that options map to.
kernels::HamuConfig hamu_config(const UnlearnOptions& opt);

}  // namespace hamu
