// loaders/text_batch.cpp: right-padded tensor batches of tokenised QA pairs.
#include "loaders/text_batch.h"

#include <algorithm>
#include <string>

#include "engine/error.h"

namespace hamu {

int64_t longest_sequence(const std::vector<QaTokens>& seqs, const std::vector<int64_t>& indices) {
  int64_t t = 0;
  if (indices.empty())
    for (const QaTokens& s : seqs) t = std::max(t, s.length());
  for (int64_t i : indices) t = std::max(t, seqs.at(size_t(i)).length());
  return t;
}

Batch make_text_batch(const std::vector<QaTokens>& seqs, const std::vector<int64_t>& indices, int32_t pad_id,
                      int64_t length, Device device) {
  const int64_t b = int64_t(indices.size());
  const int64_t t = length > 0 ? length : std::max<int64_t>(1, longest_sequence(seqs, indices));
  std::vector<int32_t> ids(size_t(b * t), pad_id), labels(size_t(b * t), kIgnoreLabel);
  for (int64_t r = 0; r < b; ++r) {
    const QaTokens& s = seqs.at(size_t(indices[size_t(r)]));
    if (s.length() > t)
      throw InputError("text batch: a sequence of " + std::to_string(s.length()) + " tokens does not fit length " +
                       std::to_string(t));
    std::copy(s.ids.begin(), s.ids.end(), ids.begin() + r * t);
    std::copy(s.labels.begin(), s.labels.end(), labels.begin() + r * t);
  }
  Batch out;
  out.images = Tensor::from_vector<int32_t>(ids, {b, t}, device);
  out.labels = Tensor::from_vector<int32_t>(labels, {b, t}, device);
  out.indices = indices;
  return out;
}

Tensor row_positions(const Tensor& ids) {
  const int64_t b = ids.shape()[0], t = ids.shape()[1];
  std::vector<int32_t> p(size_t(b * t));
  for (int64_t r = 0; r < b; ++r)
    for (int64_t j = 0; j < t; ++j) p[size_t(r * t + j)] = int32_t(j);
  return Tensor::from_vector<int32_t>(p, {b, t}, ids.device());
}

}  // namespace hamu
