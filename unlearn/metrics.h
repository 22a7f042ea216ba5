// unlearn/metrics.h: evaluation of a model on the forget, retain and test splits (HAMU.md §8):
// accuracy, mean loss, mean prediction entropy, loss-based membership AUCs, and gaps to a retrained
// reference model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/json.h"
#include "engine/nn.h"
#include "loaders/data.h"
#include "unlearn/graph_eval.h"

namespace hamu {

struct SplitEval {
  int64_t n = 0;
  double acc = 0, loss = 0, entropy = 0;
  std::vector<float> losses;     // per-sample cross-entropy, in index order
  std::vector<int32_t> predicted;
  std::vector<float> probs;      // [n, classes] softmax, only when requested (reference comparisons)
  // Text (unlearn/text_metrics.h): acc = teacher-forced answer-token accuracy, loss = answer-token NLL over
  // all the split's answer tokens, losses = per-sequence mean answer-token NLL (the membership score).
  int64_t tokens = 0;            // scored answer tokens
  double prob = 0;               // mean answer-token probability
  double min_k = 0;              // mean over sequences of the Min-K% log-prob (K = 10%)
  std::vector<float> min_k_scores;  // per sequence
  int64_t gen_n = 0;             // sequences answered by greedy generation (0: not run)
  double exact_match = 0, rouge_l = 0;  // over those: share answered exactly, mean ROUGE-L recall
};

struct EvalOptions {
  int64_t batch = 1000;
  Device device;
  bool keep_probs = false;
  // Label of a progress line on stderr over the whole evaluation (engine/progress.h: silent when it
  // ends within a second); empty: none (evaluations inside a loop that has its own bar).
  std::string progress;
  // Full batches replayed as a captured CUDA graph (unlearn/graph_eval.h; the CPU runs its emulation): the same
  // results, bit for bit. `graphs` (caller-owned) keeps the captures and counts across evaluations and says why
  // graphing was given up; null: each evaluate_* call keeps its own.
  bool graph = false;
  EvalGraphs* graphs = nullptr;
};

// Eval mode (BatchNorm running statistics), no gradients; the model's train/eval mode is restored.
SplitEval evaluate_indices(nn::Module& model, const ImageDataset& ds, const std::vector<int64_t>& indices,
                           const Normalizer& norm, const EvalOptions& opt);

// Exact ROC-AUC = P(score_pos > score_neg) + 0.5 P(equal); 0.5 when either side is empty.
double roc_auc(const std::vector<float>& negatives, const std::vector<float>& positives);

struct EvalReport {
  std::string model, data, split;
  SplitEval forget, retain, test;
  double retain_forget_auc = 0.5;  // P(loss_forget > loss_retain)
  double forget_test_auc = 0.5;    // P(loss_test > loss_forget): 0.5 = forget looks unseen
  bool has_reference = false;
  double gap_forget = 0, gap_retain = 0, gap_test = 0, avg_gap = 0;  // |acc - acc_ref| in points of 1
  double forget_kl = 0;             // mean KL(p_ref || p) on the forget split
  // Text reports only.
  bool text = false;
  SplitEval duplicate;              // the semantic/exact duplicates added to retain (n = 0: none)
  double retain_forget_mink_auc = 0.5;  // P(Min-K_retain > Min-K_forget), the published code's orientation
  double forget_test_mink_auc = 0.5;    // P(Min-K_forget > Min-K_test)
  double ks_stat = 0, ks_p = 1;     // two-sample KS test of the forget losses against the reference's
};

struct SplitIndices {
  const std::vector<int64_t>* forget;
  const std::vector<int64_t>* retain;
  const std::vector<int64_t>* test;
};

// Evaluates all three splits (keep_probs is forced on the forget split when a reference is given).
EvalReport evaluate_model(nn::Module& model, const DataBundle& data, const SplitIndices& splits,
                          const Normalizer& norm, const EvalOptions& opt);
// Adds the accuracy gaps and the forget KL against a reference model's report (the KL when both carry forget
// probs, else 0: text reports keep none).
void compare_to_reference(EvalReport& report, const EvalReport& reference);

// {"model", "data", "split", "splits": {"forget": {"n","acc","loss","entropy"}, ...},
//  "mia": {...}, "reference": {...} (when present)}
Json eval_to_json(const EvalReport& r);
// {"replays", "captures", "not_used"} of graphed evaluations (the CLI's JSON, beside the steps' cuda_graph).
Json eval_graphs_json(const EvalGraphs& graphs);
// A fixed-width table (one row per split) for stdout.
std::string eval_table(const EvalReport& r);
// Side-by-side table of several reports (columns = reports).
std::string eval_side_by_side(const std::vector<std::pair<std::string, const EvalReport*>>& reports);

}  // namespace hamu
