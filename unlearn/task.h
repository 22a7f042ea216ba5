// unlearn/task.h: what the unlearning loop runs on: where its retain and forget batches come from and how
// a batch's inputs become logits. Images and text share the one runner (unlearn/runner.cpp) through it.
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

#include "engine/nn.h"
#include "loaders/batch.h"
#include "loaders/data.h"
#include "unlearn/options.h"

namespace hamu {

class UnlearnTask {
 public:
  virtual ~UnlearnTask() = default;
  virtual size_t retain_size() const = 0;
  virtual size_t forget_size() const = 0;
  // The next retain batch and the next forget batch (each set cycles, reshuffled every pass, seeded; full
  // batches only). Their inputs concatenate along dim 0 (text: both padded to one length), so the paired
  // pass can run over [retain; forget].
  virtual void next_pair(Batch& retain, Batch& forget) = 0;
  // Where the two cycles stand (pass and batch of each: {retain pass, retain batch, forget pass, forget
  // batch}), and a jump back there: a resumed run (engine/run_state.h) continues with the same batches.
  virtual std::vector<int64_t> position() const = 0;
  virtual void seek(const std::vector<int64_t>& position) = 0;
  // The model's logits for a batch's inputs: images [N,C]; text [B,T,V] (labels [B,T], -100 = no loss).
  virtual Tensor logits(nn::Module& model, const Tensor& inputs) const = 0;
  // [retain; forget] along dim 0, the paired pass's input (text: int32 token ids).
  virtual Tensor concat_inputs(const Tensor& retain, const Tensor& forget) const;
  // Whether every batch of a side has the same shapes and the loss reads nothing on the host (images: yes;
  // text: batches are padded to their own length and the answer tokens are counted on the host), so a
  // step can be captured once and replayed (unlearn/graph_step.h).
  virtual bool fixed_shapes() const { return false; }
};

// Images: normalised batches of the split's retain and forget indices; logits = model.forward(images).
// Seeds (opt.seed*2+1 for retain, opt.seed*2+2 for forget) as the runner has always used.
std::unique_ptr<UnlearnTask> make_image_task(const ImageDataset& train, const Split& split, const Normalizer& norm,
                                             const UnlearnOptions& opt);

}  // namespace hamu
