// unlearn/gradients.h: the two objective gradients of one unlearning step, written into the fused
// update's r and f buffers.
#pragma once
#include <string>

#include "engine/nn.h"
#include "loaders/batch.h"
#include "unlearn/method.h"
#include "unlearn/task.h"
#include "unlearn/update.h"

namespace hamu {

// Told, during the backward, when parts of r and f are final, so that the exchange of a many-rank run
// (unlearn/parallel.h) overlaps them with the rest of the backward. One computation calls start(),
// then ready() for each parameter's side as it becomes final (not necessarily all), then done() after
// its last backward; a paired pass that is discarded is still one computation (start ... done), and
// the two passes that replace it another.
class GradientObserver {
 public:
  virtual ~GradientObserver() = default;
  virtual void start(bool both_sides_at_once) = 0;  // one paired backward (true) or one side after the other
  virtual void ready(int param, bool retain_side) = 0;
  virtual void done() = 0;
};

struct GradientResult {
  double retain_loss = 0, forget_loss = 0;  // task_loss of each batch (for the log)
  Tensor retain_loss_device, forget_loss_device;  // the same, scalars on the batches' device (undefined: side not run)
  bool finite = true;                       // both losses finite
  bool paired = false;                      // one pass over [retain; forget] produced both
};

// Computes r = grad of the method's retain objective on `retain` and f = grad of its forget
// objective on `forget` (zero when the method does not use that side). With allow_paired, one
// forward/backward over the concatenated batch is used where it is valid (BatchNorm frozen, no
// dropout, every parametric layer able to split its weight gradient by rows; see gradients.cpp);
// otherwise two passes, and *fallback_reason says why (it is cleared when the paired pass was used).
// Both paths give the same r and f (up to float rounding); GradientResult::paired says which ran.
// task: how a batch's inputs become logits (null: model.forward, the image case); the logged losses are
// task_loss (cross-entropy of images, mean answer-token loss of text).
// defer: read nothing back (the one-wait step of unlearn/graph_step.h): the losses stay on the device
// (retain_loss/forget_loss are not set; finite is true) and both objectives are always backpropagated, so a
// non-finite loss shows up as non-finite statistics and the update refuses the step. Without defer each
// loss is read back after its forward and a non-finite one skips the backward.
GradientResult compute_gradients(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& retain,
                                 const Batch& forget, const Method& method, const MethodParams& params, bool allow_paired,
                                 std::string* fallback_reason, const UnlearnTask* task = nullptr,
                                 GradientObserver* observer = nullptr, bool defer = false);

// compute_gradients without reading anything back, for a step captured as a CUDA graph (unlearn/graph_step.h):
// the losses stay on the device (retain_loss/forget_loss are not set; finite is true), both objectives are
// always backpropagated (a non-finite loss shows up as non-finite statistics, and the update refuses the
// step), and `paired` says which path to take (the one an ordinary step on these shapes took; Error if
// the paired pass turns out invalid). Methods that need the original model are not deferrable.
GradientResult compute_gradients_deferred(nn::Module& model, FusedUpdate& update, const Batch& retain,
                                          const Batch& forget, const Method& method, const MethodParams& params,
                                          bool paired, const UnlearnTask* task = nullptr);

// One side alone (split pairing: a rank computes either r or f): the retain (retain_side) or forget
// objective's gradient on `batch` into its buffer, the other buffer zeroed; the side's loss in the result.
GradientResult compute_side_gradient(nn::Module& model, nn::Module* original, FusedUpdate& update, const Batch& batch,
                                     const Method& method, const MethodParams& params, bool retain_side,
                                     const UnlearnTask* task = nullptr, GradientObserver* observer = nullptr);

}  // namespace hamu
