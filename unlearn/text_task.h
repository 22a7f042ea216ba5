// unlearn/text_task.h: unlearning a causal language model on tokenised QA pairs: retain and forget batches
// of right-padded sequences (each pair of batches padded to one length, so the paired pass concatenates
// them), logits from the model with per-row positions (every parametric op then sees the batch in dim 0,
// so GPT-2's position table takes the paired backward too).
#pragma once
#include <memory>
#include <vector>

#include "loaders/template.h"
#include "unlearn/task.h"

namespace hamu {

// retain and forget must outlive the task. Seeds: opt.seed*2+1 (retain) and opt.seed*2+2 (forget), each
// pass over a set reshuffled from (seed, pass); batches of min(opt.batch, |set|), partial ones dropped.
std::unique_ptr<UnlearnTask> make_text_task(const std::vector<QaTokens>& retain, const std::vector<QaTokens>& forget,
                                            int32_t pad_id, const UnlearnOptions& opt);

// The logits of a causal LM for ids [B,T] (right-padded), positions 0..T-1 per row. Error when `model`
// is not a models::CausalLM.
Tensor text_logits(nn::Module& model, const Tensor& ids);

}  // namespace hamu
