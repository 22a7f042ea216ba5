// unlearn/hardness_text.cpp: the per-pair answer-token loss and the QA-pair sample source of `hamu hardness`.
#include "unlearn/hardness_text.h"

#include "engine/ops.h"
#include "loaders/text_batch.h"
#include "unlearn/text_task.h"

namespace hamu {

Tensor text_sample_losses(nn::Module& model, const Tensor& ids, const Tensor& labels) {
  if (ids.dim() != 2 || labels.dim() != 2 || labels.shape() != ids.shape())
    throw Error("hardness: text batches are ids and labels of one shape [B,T]");
  Tensor logits = text_logits(model, ids);
  Tensor per_token = token_cross_entropy(logits, labels, 1, kIgnoreLabel);  // [B,T]
  // Each pair's own answer-token count: the loss of a pair is the mean over its answer tokens.
  const Tensor host = labels.to(Device{}).contiguous();
  const std::vector<int32_t> l = host.to_vector<int32_t>();
  const int64_t b = labels.shape()[0], t = labels.shape()[1];
  std::vector<double> inv(size_t(b), 0.0);
  for (int64_t i = 0; i < b; ++i) {
    int64_t n = 0;
    for (int64_t j = 1; j < t; ++j) n += l[size_t(i * t + j)] != kIgnoreLabel;
    inv[size_t(i)] = n ? 1.0 / double(n) : 0.0;
  }
  return mul(sum(per_token, 1), Tensor::from_doubles(inv, {b}, logits.dtype(), logits.device()));
}

TextHardnessSource::TextHardnessSource(std::vector<QaTokens> seqs, std::vector<int32_t> answer_ids, int32_t pad_id)
    : seqs_(std::move(seqs)), answer_ids_(std::move(answer_ids)), pad_id_(pad_id) {
  if (answer_ids_.size() != seqs_.size()) throw Error("TextHardnessSource: one answer id per sequence");
  length_ = longest_sequence(seqs_);
}

Batch TextHardnessSource::gather(const std::vector<int64_t>& idx, DType, Device dev) const {
  return make_text_batch(seqs_, idx, pad_id_, length_, dev);
}

}  // namespace hamu
