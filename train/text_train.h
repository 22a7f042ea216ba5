// train/text_train.h: training a causal language model on tokenised QA pairs (completion-only: the loss is
// the mean next-token cross-entropy over the batch's answer tokens), for the original model (retain ∪
// forget) and the retrained reference (retain only) of text unlearning.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/run_state.h"
#include "train/train.h"
#include "loaders/template.h"
#include "models/lm/lm.h"

namespace hamu {

// LoopOptions (train/train.h) with the text defaults; AdamW always. Resumable as the image loop: the state also
// holds the LoRA dropout mask positions.
struct TextTrainOptions : LoopOptions {
  TextTrainOptions() {
    lr = 3e-3;
    clip = 1.0;
    epochs = 10;
    batch = 32;
  }
  int64_t warmup_steps = 0;  // linear warmup from 0
  int32_t pad_id = 0;
};

struct TextEpochSummary {
  int64_t epoch = 0;          // 1-based
  double train_loss = 0;      // answer-token loss over the epoch (token-weighted)
  double train_acc = 0;       // teacher-forced answer-token accuracy during the epoch
  double seconds = 0;         // training time of this epoch (evaluation excluded)
  double tokens_per_s = 0;    // all tokens (prompt and answer) through forward and backward per second
  int64_t skipped_steps = 0;  // non-finite loss: step skipped
};

// AdamW (betas 0.9/0.999, eps 1e-8) on `seqs`: each epoch a seeded shuffle (seed, epoch), batches of
// opt.batch sequences right-padded to their longest (the last one partial), one step per batch. on_epoch
// runs after each epoch (evaluation, logging); its time is not counted. InputError for bad options or no data.
std::vector<TextEpochSummary> train_text_model(models::CausalLM& model, const std::vector<QaTokens>& seqs,
                                               const TextTrainOptions& opt,
                                               const std::function<void(const TextEpochSummary&)>& on_epoch = {});

}  // namespace hamu
