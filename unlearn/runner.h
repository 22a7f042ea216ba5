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
#include "engine/run_state.h"
#include "loaders/data.h"
#include "unlearn/hamu_config.h"
#include "unlearn/method.h"
#include "unlearn/method_registry.h"
#include "unlearn/metrics.h"
#include "unlearn/options.h"
#include "unlearn/stopping.h"
#include "unlearn/task.h"

namespace hamu {

struct StepLog {
  int64_t step = 0;
  double seconds = 0;               // unlearning time so far (evaluation excluded)
  double retain_loss = 0, forget_loss = 0;
  HamuReport report;                // HAMU: the solver's report; baselines: norms, kappa, angle
  bool skipped = false;             // non-finite loss or gradient: no update
  bool paired = false;              // gradients from the single paired pass
  bool projected = false;           // gru/pcgrad projected
  // Reference-free stopping (unlearn/stopping.h): a probe ran after this step, and what it measured.
  bool probed = false;
  double probe_auc = 0.5, probe_forget_loss = 0, probe_heldout_loss = 0, probe_retain_loss = 0;
  const char* stop = nullptr;       // the stop reason, on the run's last step only
};

struct EvalPoint {
  int64_t step = 0;
  double seconds = 0;               // unlearning time at this point
  EvalReport report;
};

struct UnlearnResult {
  std::vector<StepLog> log;
  std::vector<EvalPoint> evals;     // step 0 (before), every eval_every, and the end (after)
  StopReason stop_reason = StopReason::max_steps;
  int64_t steps_done = 0;           // steps that updated the model
  int64_t skipped = 0;
  double seconds = 0;               // unlearning loop only
  double eval_seconds = 0;
  bool collateral_warned = false;
  std::string paired_fallback;      // why the paired pass was not used (empty when it was)
  // --cuda-graph: steps replayed as a captured graph, captures made, and why graphing was not used or
  // given up (empty when every step after the warm-ups was replayed).
  int64_t graph_replays = 0, graph_captures = 0;
  int64_t one_wait_steps = 0;  // steps queued whole with one wait at the end (OneWaitSteps; the GPU's HAMU step)
  std::string graph_fallback;
  double collective_seconds = 0;    // in the exchanges between ranks (0 for one process)
};

// Validates options (InputError naming the flag): non-positive lr or steps, empty forget set, then the
// method's own checks (e.g. HAMU: a ratio that can never be feasible with the lr radius and the clip).
void validate_unlearn_options(const UnlearnOptions& opt, size_t forget_size, size_t retain_size);

struct UnlearnHooks {
  std::function<EvalReport(int64_t step, bool final)> evaluate;  // evaluation at step (may be null)
  std::function<void(const StepLog&)> on_step;             // e.g. CSV rows
  std::function<void(const EvalPoint&)> on_eval;
  std::function<void(const std::string&)> notice;          // plain-language messages (stderr)
  // Per-sample losses of the current model on forget and held-out same-class samples, for --stop mia and
  // loss-rise (unlearn/stopping.h; may be null: those rules then refuse to run).
  std::function<StopProbe()> stop_probe;
  // Resumable runs (engine/run_state.h; one process): after every checkpoint_every-th step that does not end
  // the run (0 = never), the loop's state goes to write_state, which adds the caller's records and writes
  // the file: parameters and buffers, AdamW moments, both batch cycles' positions, the stop rule's window,
  // the step log and the counters. A non-null resume continues after such a state's step; the step-0
  // evaluation is recomputed (the model is still the original then) without calling on_eval again, the
  // other earlier evaluation points keep their step and time only (their rows are in the caller's log).
  int64_t checkpoint_every = 0;
  std::function<void(RunState&)> write_state;
  const RunState* resume = nullptr;
};

// model: the model to unlearn (modified in place); original: a frozen copy for kl/scrub/npo (may be
// null otherwise). BatchNorm is frozen for the run and restored afterwards.
UnlearnResult run_unlearning(nn::Module& model, nn::Module* original, const ImageDataset& train, const Split& split,
                             const Normalizer& norm, const UnlearnOptions& opt, const UnlearnHooks& hooks);
// The same loop over any task (text: unlearn/text_task.h); the image form above builds an image task.
UnlearnResult run_unlearning(nn::Module& model, nn::Module* original, UnlearnTask& task, const UnlearnOptions& opt,
                             const UnlearnHooks& hooks);

}  // namespace hamu
