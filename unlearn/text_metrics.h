// unlearn/text_metrics.h: evaluation of a causal language model on tokenised QA splits (HAMU.md §8, issue
// #11 item 5): answer-token loss, probability and teacher-forced accuracy, Min-K% log-prob, the published
// code's loss and Min-K% membership AUCs, greedy-generation exact match and ROUGE-L recall, and against a
// retrained reference the accuracy gaps plus the two-sample KS test of the forget losses (TOFU's "forget
// quality").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "loaders/template.h"
#include "loaders/tokenizer.h"
#include "models/lm/lm.h"
#include "unlearn/metrics.h"

namespace hamu {

struct TextEvalOptions {
  int64_t batch = 64;        // sequences per forward pass
  double k_pct = 0.1;        // Min-K%: the mean of the max(1, floor(k_pct * n)) lowest answer-token log-probs
  int32_t pad_id = 0;
};

// Teacher-forced scoring of `seqs` (labels -100 on prompt tokens): n, tokens, acc (answer tokens whose
// label is the argmax at the position before), loss (summed NLL / tokens), prob (mean token probability),
// losses (per sequence: mean answer-token NLL), min_k and min_k_scores. No gradients; batches sorted by
// length so little padding is scored.
SplitEval evaluate_text_split(models::CausalLM& model, const std::vector<QaTokens>& seqs, const TextEvalOptions& opt);

struct TextSplits {
  const std::vector<QaTokens>* forget = nullptr;
  const std::vector<QaTokens>* retain = nullptr;
  const std::vector<QaTokens>* test = nullptr;
  const std::vector<QaTokens>* duplicate = nullptr;  // may be null or empty
};
// All splits, with the loss AUCs (retain-vs-forget P(loss_f > loss_r), forget-vs-test P(loss_t > loss_f)) and
// the Min-K% AUCs in the published code's orientation (retain-vs-forget: P(MinK_r > MinK_f); forget-vs-test:
// P(MinK_f > MinK_t)). report.text is set.
EvalReport evaluate_text_model(models::CausalLM& model, const TextSplits& splits, const TextEvalOptions& opt);

// Gaps |acc - acc_ref| per split and their mean (forget, retain, test), and the KS test between the
// per-sequence forget losses of the model and of the reference.
void compare_text_to_reference(EvalReport& report, const EvalReport& reference);

// Two-sample Kolmogorov-Smirnov test, two-sided, as scipy.stats.ks_2samp's default method='auto': the
// exact p-value when max(n1, n2) <= 10000 (and the exact computation stays finite), else the asymptotic
// one. Empty samples: statistic 0, p 1.
struct KsResult {
  double statistic = 0, p_value = 1;
};
KsResult ks_2samp(std::vector<double> a, std::vector<double> b);

// ROUGE-L recall of `candidate` against `reference`: the longest common subsequence of their words
// (lower-cased runs of letters and digits, as rouge_score tokenises; no stemming) over the reference's
// word count. 0 when the reference has no word.
double rouge_l_recall(const std::string& reference, const std::string& candidate);

}  // namespace hamu
