// unlearn/hardness_text.h: `hamu hardness` on QA pairs (issue #11 item 6): a causal LM's per-sample loss is
// the pair's completion-only mean answer-token loss (the loss text unlearning descends, per pair), and the
// samples are tokenised pairs padded to one length so the capture sees T = tokens per sample in every
// Linear / Embedding layer (the ghost and materialised paths of unlearn/hardness.h work unchanged).
#pragma once
#include <cstdint>
#include <vector>

#include "loaders/template.h"
#include "unlearn/hardness.h"

namespace hamu {

// Per-sequence mean answer-token NLL [B] of a causal LM on right-padded ids [B,T] with labels [B,T]
// (-100 on prompt and padding; position t predicts label t+1). A sequence without an answer token has
// loss 0 (and a zero gradient).
Tensor text_sample_losses(nn::Module& model, const Tensor& ids, const Tensor& labels);

// Tokenised QA pairs in one index space. label(i) = answer_ids[i]: pairs with the same answer (an exact
// duplicate or a synonym paraphrase) share it, so the report's "same class" reads "same answer". Every
// batch is padded with pad_id to the longest sequence of the source.
class TextHardnessSource final : public HardnessSource {
 public:
  TextHardnessSource(std::vector<QaTokens> seqs, std::vector<int32_t> answer_ids, int32_t pad_id);
  Batch gather(const std::vector<int64_t>& idx, DType dt, Device dev) const override;
  const SampleLoss& loss() const override { return loss_; }
  int32_t label(int64_t index) const override { return answer_ids_.at(size_t(index)); }
  const char* unit() const override { return "seq/s"; }
  const char* same_label() const override { return "has their answer (a paraphrase or duplicate)"; }
  int64_t length() const { return length_; }

 private:
  std::vector<QaTokens> seqs_;
  std::vector<int32_t> answer_ids_;
  int32_t pad_id_;
  int64_t length_ = 0;
  SampleLoss loss_ = text_sample_losses;
};

}  // namespace hamu
