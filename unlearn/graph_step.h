// unlearn/graph_step.h: unlearning steps replayed as captured CUDA graphs (`hamu unlearn --cuda-graph`,
// issue #12 item 4).
//
// One step of a method with an asynchronous own step (HAMU-Q/U) is captured whole: the paired (or
// two-pass) forward and backward, the block statistics, the coefficients, the apply pass, and the copies
// of the report and of the two losses into pinned memory. A replay is one launch; the host waits once,
// after it, to read the report. Per batch shape the first step runs the ordinary way on the fixed buffers
// (the warm-up: cuDNN's algorithm search, plans and scratch, and whether the paired pass is valid), the
// next is captured, and every later one copies its batch into the fixed buffers and replays. The result
// equals the ordinary steps' (bitwise under deterministic algorithms): the same kernels on the same data.
// A non-finite loss cannot skip the backward inside a graph; it reaches the statistics instead, and the
// update refuses the step, as the ordinary step's skip does (no parameter moves).
//
// Graphing is refused up front (objection) for what a graph cannot repeat faithfully: host-side
// coefficients (every method but HAMU, and the AdamW ablation), active dropout (a replay repeats the
// captured mask), text tasks (batch shapes change, token counts are read on the host), many processes
// (the exchange). A capture that fails gives up graphing for the rest of the run, with the reason
// (disabled()), and the caller takes ordinary steps. On the CPU the "graph" is the step's closure run
// again under engine/graph.h's HostSyncGuard: what the CPU tests use to prove the step is capturable.
//
// OneWaitSteps is the same step without a capture: the ordinary HAMU step on a GPU (issue #12 item 4, "no
// host synchronisation inside a step"). Everything is queued before anything is read (the losses are not
// read between the forward and the backward, the report is not waited for between the statistics and the
// apply pass); the host waits once, at the end, for the report and both losses in pinned memory. It needs no
// warm-up (the paired pass falls back to two passes inside the step, as the ordinary step does) and no
// fixed buffers, so dropout and text batches of any shape are fine. Same kernels, same data: the parameters
// and the log equal the three-wait step's bitwise; a non-finite loss is refused by the update as above.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/graph.h"
#include "unlearn/gradients.h"

namespace hamu {

struct GraphedStep {
  GradientResult gradients;  // losses read back; finite as the ordinary step sets it
  StepDecision decision;     // meaningful when gradients.finite
  std::string fallback;      // why the gradients took two passes (as compute_gradients says)
  bool replayed = false;     // false: this step ran the ordinary way (a new shape's warm-up)
};

class OneWaitSteps {
 public:
  // Why this run's steps cannot take one wait (empty: they can): a method without a device-side step, the
  // AdamW ablation, the original model, many processes. ranks: the processes of the run.
  static std::string objection(const UnlearnOptions& opt, int ranks);
  // Whether a run takes them: opt.one_wait (> 0 always, 0 never, < 0 on a GPU) and no objection.
  static bool wanted(const UnlearnOptions& opt, int ranks);

  // task: how a batch's inputs become logits (null: model.forward, the image case), as compute_gradients takes it.
  OneWaitSteps(FusedUpdate& update, const UnlearnOptions& opt, const UnlearnTask* task);
  ~OneWaitSteps();
  OneWaitSteps(const OneWaitSteps&) = delete;
  OneWaitSteps& operator=(const OneWaitSteps&) = delete;

  GraphedStep step(nn::Module& model, const Batch& retain, const Batch& forget);
  int64_t steps() const { return steps_; }

 private:
  FusedUpdate& update_;
  const UnlearnOptions& opt_;
  const UnlearnTask* task_;
  std::unique_ptr<HostBuffer> host_;  // [HamuReport][retain loss][forget loss]
  int64_t steps_ = 0;
};

class GraphedSteps {
 public:
  // Why this run's steps cannot be graphed (empty: they can). ranks: the processes of the run.
  static std::string objection(const nn::Module& model, const UnlearnOptions& opt, const UnlearnTask& task, int ranks);

  GraphedSteps(nn::Module& model, FusedUpdate& update, const UnlearnOptions& opt, const UnlearnTask& task);
  ~GraphedSteps();
  GraphedSteps(const GraphedSteps&) = delete;
  GraphedSteps& operator=(const GraphedSteps&) = delete;

  // One step on these batches; nothing once graphing was given up (then the caller takes the ordinary
  // step, and disabled() says why).
  std::optional<GraphedStep> step(const Batch& retain, const Batch& forget);
  const std::string& disabled() const { return disabled_; }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }

 private:
  void queue_step();  // what the graph holds
  bool same_shapes(const Batch& retain, const Batch& forget) const;

  nn::Module& model_;
  FusedUpdate& update_;
  const UnlearnOptions& opt_;
  const UnlearnTask& task_;
  Batch fixed_retain_, fixed_forget_;  // the graph's inputs: every step's batch is copied here
  bool warm_ = false, paired_ = false;
  std::string fallback_;               // the warm-up's reason for two passes (empty: paired)
  DType loss_dtype_ = DType::f32;
  std::unique_ptr<HostBuffer> host_;   // [HamuReport][retain loss][forget loss], written by the replay
  StepGraph graph_;                    // after host_: destroyed first (it waits for a replay in flight)
  std::string disabled_;
  int64_t captures_ = 0, replays_ = 0;
};

}  // namespace hamu
