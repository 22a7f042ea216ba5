// unlearn/options.h: what an unlearning run is configured with: the method (a registered object,
// unlearn/method.h), its parameters, the optimizer and the loop's budget, and why a run stops.
#pragma once
#include <cstdint>
#include <string>

#include "engine/tensor.h"
#include "unlearn/hamu_config.h"

namespace hamu {

class Method;
class Collectives;

// How the ranks of a multi-process run share a step (unlearn/parallel.h): data (every rank a share of
// both batches) or split (retain on even ranks, forget on odd ranks: HAMU's split-gpu pairing).
enum class Pairing { data, split };
const Method& default_method();  // hamu-q (unlearn/method_registry.cpp)

// sgd: theta moves by exactly the method's step; adamw: the step is fed to AdamW as the pseudo-gradient
// -step/lr (an ablation: no per-step guarantee).
enum class OptimizerKind { sgd, adamw };
const char* optimizer_name(OptimizerKind o);                 // "sgd" | "adamw"
OptimizerKind parse_optimizer(const std::string& name);  // InputError naming --optimizer

enum class StopReason { max_steps, infeasible, criterion, nan, mia, loss_rise, kappa, retain_rise };
// "max_steps" | "infeasible" | "criterion" | "nan" | "mia" | "loss_rise" | "kappa" | "retain_rise"
const char* stop_reason_name(StopReason r);

// Reference-free stopping (unlearn/stopping.h): --stop none|criterion|mia|loss-rise|kappa|retain-rise|auto
// (auto: loss-rise or retain-rise, whichever fires first).
enum class StopRule { none, criterion, mia, loss_rise, kappa, retain_rise, automatic };
const char* stop_rule_name(StopRule r);              // as --stop spells it
StopRule parse_stop_rule(const std::string& name);   // InputError naming --stop
struct StopSettings {
  StopRule rule = StopRule::none;
  int64_t check_every = 10;         // probe (mia, loss-rise) or kappa window every this many steps
  int64_t samples = 500;            // forget and held-out samples per probe (retain: 4 times as many)
  double mia_band = 0.05;           // mia: stop at forget-vs-held-out AUC <= 0.5 + band
  double kappa_share = 0.75;        // kappa: share of the window's steps with kappa > kappa2 in most blocks
  double retain_tol = 0.05;         // retain-rise: stop once the retain probe's mean loss exceeds the
                                    // original model's by more than this fraction
};

// The constants of the methods' objectives and step rules.
struct MethodParams {
  double lr = 0.01;
  double clip = 1.0;             // each objective gradient clipped to this total norm (0 = off)
  bool paper_compat = false;     // gru/pcgrad: the published (inverted) conflict test, HAMU.md §7.1
  double scrub_alpha = 0.001, scrub_gamma = 0.99, npo_beta = 0.1;
};

struct UnlearnOptions {
  const Method* method = &default_method();
  MethodParams params;              // lr, clip, paper_compat, scrub/npo constants
  double ratio = 0.1;               // B = ratio * lr (HAMU)
  bool fixed_radius = false;        // HAMU: R = radius instead of lr * ||a||
  double radius = 0.0;
  HamuScope scope = HamuScope::layer;
  ConstraintSplit split = ConstraintSplit::grad_norm;
  bool stop_on_criterion = false;   // set by --stop criterion (HAMU refuses the step and stops)
  StopSettings stop;
  bool continue_on_infeasible = false;
  OptimizerKind optimizer = OptimizerKind::sgd;
  int64_t steps = 100;
  int64_t batch = 128;              // retain batch
  int64_t forget_batch = 128;       // forget batch
  int64_t eval_every = 0;           // 0: evaluate only before and after
  uint64_t seed = 0;
  Device device;
  bool paired = true;               // one pass over [retain; forget] where valid (else two passes)
  bool graph = false;               // --cuda-graph: capture the whole step once per shape and replay it
                                    // (unlearn/graph_step.h; on the CPU the emulation the tests use)
  int one_wait = -1;                // the ordinary HAMU step queued whole, one wait at its end
                                    // (unlearn/graph_step.h OneWaitSteps): < 0 on a GPU, 0 never, > 0 always
  bool progress = true;
  int64_t max_nan_steps = 10;       // consecutive non-finite steps before stopping with "nan"
  Pairing pairing = Pairing::data;
  Collectives* comm = nullptr;      // the ranks (null: world(): one process unless launched by mpirun)
};

}  // namespace hamu
