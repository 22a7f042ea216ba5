// train/graph_train.h: training steps replayed as captured CUDA graphs (`hamu train --cuda-graph`, issue
// #12 item 4's "the same for training steps").
//
// A step of the image training loop (forward, cross-entropy, backward, [clipping,] the optimizer step) is
// captured once for the run's full batch shape and replayed for every full batch: one launch and one wait per
// step. What the ordinary step decides on the host becomes data the replay reads: the optimizer's scalars for
// the step (Optimizer::write_next_scalars into pinned memory, copied in at the start of the replay: the
// learning rate, AdamW's bias corrections, SGD's per-parameter "first step" flags that seed the momentum
// buffers), and the skip of a non-finite loss or gradient norm (a flag the forward and the clipping compute;
// Optimizer::step_from then moves nothing). --clip computes the norm and the coefficient on the device with
// the kernels clip_grad_norm itself runs (clip_grad_norm_dev), so the ordinary loop's arithmetic is the
// same. BatchNorm's host-side num_batches_tracked moves by what the captured forward moved it, after each
// replay. The loss, the skip flag and the predictions come back in pinned memory. The first full batch runs
// the ordinary way (the warm-up: algorithm search, plans, scratch), and so does a batch of another shape (the
// last, partial batch of an epoch). The result equals the ordinary loop's, bit for bit.
//
// Refused up front (objection) where a replay could not repeat the step faithfully: active dropout, several
// processes. A failed capture gives graphing up for the run, with the reason (disabled()). On the CPU the
// "graph" is the step's closure run again under engine/graph.h's HostSyncGuard, which is how the CPU tests
// prove the step capturable and equal to the ordinary step.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/optim.h"
#include "loaders/batch.h"
#include "train/train.h"

namespace hamu {

class GraphedTrainSteps {
 public:
  // Why this run's steps cannot be graphed (empty: they can).
  static std::string objection(const nn::Module& model, const TrainOptions& opt, int ranks);

  // clip > 0: total-norm gradient clipping before the optimizer step (TrainOptions::clip).
  GraphedTrainSteps(nn::Module& model, Optimizer& optimizer, Device device, double clip = 0);
  ~GraphedTrainSteps();
  GraphedTrainSteps(const GraphedTrainSteps&) = delete;
  GraphedTrainSteps& operator=(const GraphedTrainSteps&) = delete;

  struct Result {
    double loss = 0;             // the batch's mean loss
    bool taken = true;           // false: the step was skipped (a non-finite loss or gradient norm)
    const int32_t* predicted;    // b.size() predicted classes (valid until the next step)
  };
  // One step on `b` at the optimizer's current lr (the caller zeroes, clips and steps nothing: the replay
  // does all that, and counts the step in the optimizer when it was taken). Nothing when this step is to run the
  // ordinary way: the first batch (the warm-up; the shape is learnt from it), a batch of another shape, or
  // once graphing was given up (disabled() says why).
  std::optional<Result> step(const Batch& b);
  const std::string& disabled() const { return disabled_; }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }

 private:
  void queue_step();  // what the graph holds

  nn::Module& model_;
  Optimizer& optimizer_;
  Device device_;
  double clip_;
  std::vector<nn::BatchNorm2d*> norms_;   // whose num_batches_tracked a CUDA replay moves on the host
  std::vector<int64_t> norm_delta_;       // by how much one step moves each
  Tensor x_, y_;                          // the graph's inputs: every batch is copied here
  Tensor scalars_, skip_;                 // the optimizer's step scalars (copied in from host_) and the skip flag
  DType loss_dtype_ = DType::f32;
  bool warm_ = false;
  std::unique_ptr<HostBuffer> host_;      // [scalars][skip][loss][predictions], 8 bytes a slot
  size_t skip_offset_ = 0, loss_offset_ = 0, pred_offset_ = 0;
  StepGraph graph_;                       // after host_: destroyed first
  std::string disabled_;
  int64_t captures_ = 0, replays_ = 0;
};

}  // namespace hamu
