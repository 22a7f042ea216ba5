// loaders/text_batch.h: tokenised QA pairs (loaders/template.h) as right-padded tensor batches, the form the
// text training loop, the unlearning runner and the text metrics feed a causal language model.
#pragma once
#include <cstdint>
#include <vector>

#include "loaders/batch.h"
#include "loaders/template.h"

namespace hamu {

// Batch.images = token ids [B,T] int32, Batch.labels = labels [B,T] int32 (-100 on prompt and padding),
// Batch.indices = the rows' indices into `seqs`. T = `length` (0: the longest listed sequence); each row
// is right-padded with pad_id. No attention mask is needed: with right padding and causal attention no
// real token ever sees a padding token, and padding carries no loss, so the scored logits are exactly those
// of the unpadded sequences. InputError when a sequence is longer than `length`.
Batch make_text_batch(const std::vector<QaTokens>& seqs, const std::vector<int64_t>& indices, int32_t pad_id,
                      int64_t length = 0, Device device = {});
// The longest of the listed sequences (of all of them when `indices` is empty).
int64_t longest_sequence(const std::vector<QaTokens>& seqs, const std::vector<int64_t>& indices = {});
// Positions 0..T-1 for every row of ids [B,T]: int32 [B,T] on ids' device. Passing them per row (not [T])
// keeps dim 0 the batch in every parametric op, which the paired backward needs (GPT-2's position table).
Tensor row_positions(const Tensor& ids);

}  // namespace hamu
