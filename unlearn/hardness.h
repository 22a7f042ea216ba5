// unlearn/hardness.h: per-sample hardness (HAMU.md §2): forget x retain per-sample gradient
// similarity K[j,i] = <grad l(f_j), grad l(r_i)>, its row form kappa_j = <grad l(f_j), g_r>, per-sample
// gradient norms, and the report behind `hamu hardness`.
//
// How (engine-anchors.md §B): one forward/backward of sum_i l_i inside a CaptureScope records, per
// layer, each sample's input A and output gradient G (engine/capture.h). Per block (one parameter
// tensor) the per-sample gradients are then either
//   ghost:       never formed; K_l[j,i] = sum_{t,s} (a_{j,t}.a_{i,s}) (g_{j,t}.g_{i,s}): two Gram GEMMs
//                (A_f A_r^T, G_f G_r^T) and the fused Hadamard reduction (kernels::ghost_hadamard_reduce);
//   materialise: P_i = G_i^T A_i per sample (a batched GEMM; conv: unfold with im2col first), then
//                K_l = P_f P_r^T (one GEMM). Biases and BatchNorm/LayerNorm affine parameters are
//                always materialised (they are tiny).
// The choice is the cost model's, per block, from exact FLOP counts per (forget, retain) pair:
//   ghost 2 T^2 (p+d) + T^2   versus   materialise 2 p d (+ 2 T p d per sample, shared by all pairs),
// with T positions per sample, p outputs and d inputs (conv: d = C*R*S, T = OH*OW). For T = 1 (plain
// Linear) ghost wins whenever p + d < p d; for the convolutions of cnn and resnet20 materialising wins.
// (The per-sample-norm rule T (p+d) < p d of ghost clipping is the same model for one sample with
// itself; it decides the same way for every block of our model zoo.)
// The row form never needs a T^2 term: kappa_j = sum_t g_{j,t}^T H a_{j,t} is one GEMM per block
// against the aggregated retain gradient H (conv: a convolution of x_j with H).
// A parameter the capture cannot handle (reached by another op, or shared by several layers) is
// named in the notices and materialised by one backward per sample (exact, slow).
//
// What a block is made of and how its per-sample data and row form are computed is the business of
// the hardness rule of its layer kind (unlearn/hardness_rule.h, one file per kind in unlearn/hardness/);
// this file holds the generic part: capture, plan and cost model, K and norms from the rules' data,
// tiling and the report. Everything runs through kernels/ on the model's device and dtype (CPU f32/f64,
// CUDA f32).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/capture.h"
#include "engine/collectives.h"
#include "engine/nn.h"
#include "kernels/hamu_math.h"
#include "loaders/batch.h"
#include "loaders/data.h"
#include "unlearn/hardness_rule.h"

namespace hamu {

enum class GhostPath { automatic, ghost, materialise };
GhostPath parse_ghost_path(const std::string& s);  // auto | ghost | materialise (InputError naming --path)

// The per-sample losses [n] of a model on a batch: what a sample's gradient is the gradient of. Images:
// the cross-entropy of logits [N, C] (image_sample_losses, the default everywhere); text: each QA pair's
// mean answer-token loss (unlearn/hardness_text.h).
using SampleLoss = std::function<Tensor(nn::Module& model, const Tensor& inputs, const Tensor& labels)>;
Tensor image_sample_losses(nn::Module& model, const Tensor& inputs, const Tensor& labels);

// One forward/backward of sum_i loss_i over a batch under a CaptureScope.
struct CapturedBatch {
  Tensor inputs, labels;                              // what the model saw (kept for the fallback)
  std::vector<std::shared_ptr<CaptureRecord>> records;
  std::unordered_map<TensorImpl*, std::vector<std::shared_ptr<CaptureRecord>>> by_param;
  std::vector<Tensor> param_grads;                    // sum over the batch, one per model parameter
                                                      // (empty when param_grads was false)
  std::vector<double> losses;                         // per sample
  int64_t n = 0;
  SampleLoss loss;                                    // the loss it was captured with (for the fallback)
};
// param_grads false: parameters are not differentiated (only what the capture needs), which skips
// the weight-gradient GEMMs of the backward (floating inputs only).
CapturedBatch capture_batch(nn::Module& model, const Tensor& inputs, const Tensor& labels, bool param_grads,
                            const SampleLoss& loss = image_sample_losses);

// Per-sample gradients by one forward/backward per sample (the reference and the fallback):
// [n, sum of numel] in the order of `params`, on the model's device.
Tensor per_sample_gradients(nn::Module& model, const Tensor& inputs, const Tensor& labels,
                            const std::vector<Tensor>& params, const SampleLoss& loss = image_sample_losses);

struct BlockPlan {
  std::vector<HardnessBlock> blocks;
  std::vector<std::string> notices;  // uncaptured / unused parameters, named, with the fallback used
  int64_t rep_elems = 0;             // per sample, all blocks
  int64_t max_ghost_t = 0;           // largest T among ghost blocks (sizes the Gram tiles)
};
// From a probe capture made with param_grads = true: one block per captured parameter whose op has a
// rule (the rule describes it), the rest in the fallback block. The rules throw InputError for layers
// without per-sample gradients (BatchNorm on batch statistics: use eval mode).
BlockPlan plan_blocks(nn::Module& model, const CapturedBatch& probe, GhostPath path);

// Per-block per-sample data (BlockRep, unlearn/hardness_rule.h) of a set of samples.
struct SampleReps {
  std::vector<BlockRep> blocks;
  int64_t n = 0;
};

// Samples [s0, s0 + n) of a captured batch.
SampleReps build_reps(nn::Module& model, const BlockPlan& plan, const CapturedBatch& cb, int64_t s0, int64_t n);
// Owned storage for `n` samples, and copying reps into it at sample offset `at`.
SampleReps allocate_reps(const BlockPlan& plan, int64_t n, DType dtype, Device device);
void store_reps(const BlockPlan& plan, const SampleReps& src, SampleReps& dst, int64_t at);

// out[j] += ||grad l_j||^2 over every block (out: [n] tensor of the model's dtype/device).
void add_sample_norms(const BlockPlan& plan, const SampleReps& reps, Tensor& out);
// k[j, i] += sum over blocks of <grad l(f_j), grad l(r_{r0+i})> for the retain slice [r0, r0 + nr);
// k is [f.n, nr] contiguous. gram: workspace of at least gram_elems(plan, f.n, nr) elements.
void add_similarity(const BlockPlan& plan, const SampleReps& f, const SampleReps& r, int64_t r0, int64_t nr,
                    Tensor& k, Tensor& gram);
int64_t gram_elems(const BlockPlan& plan, int64_t nf, int64_t nr);
// out[j] += <grad l(f_j), h> for samples [s0, s0+n) of cb, h: one tensor per model parameter (the
// aggregated retain gradient). One GEMM (or convolution) per captured weight, no T^2 term.
void add_row_form(nn::Module& model, const BlockPlan& plan, const CapturedBatch& cb, int64_t s0, int64_t n,
                  const std::vector<Tensor>& h, Tensor& out);

// The row form for a forget batch in one paired pass (engine/paired.h): one forward and one backward
// of sum_i loss_i over [retain; forget] with the capture on yields the summed retain and forget
// gradients separately and the forget samples' captured data, then kappa_j = <grad l(f_j), g_r>
// (g_r = the mean retain gradient) by add_row_form. Needs the model in eval mode (fixed BatchNorm
// statistics, no dropout); throws Error when the paired pass is not valid for it.
struct PairedRowForm {
  Tensor kappa;                                // [nf]
  std::vector<Tensor> retain_mean, forget_mean;  // per model parameter (g_r, g_f)
};
PairedRowForm row_form_paired(nn::Module& model, const BlockPlan& plan, const Tensor& retain_x, const Tensor& retain_y,
                              const Tensor& forget_x, const Tensor& forget_y);

// FLOPs of the full K (nf x nr) by the plan's paths, of the row form, and of the per-sample-gradient
// baseline's final GEMM (2 nf nr P), for the bench's GFLOP/s columns (capture passes not included).
struct SimilarityFlops {
  double full_k = 0, row_form = 0, baseline_gemm = 0;
};
SimilarityFlops similarity_flops(const BlockPlan& plan, int64_t nf, int64_t nr);

// ------------------------------------------------------------------------------------------------
// The `hamu hardness` report.

struct HardnessOptions {
  int64_t memory_bytes = int64_t(512) << 20;  // similarity buffers: retain-side store + tiles
  int64_t retain_samples = 0;                 // 0: all that fit the budget
  int64_t forget_samples = 0;                 // 0: the whole forget set
  int64_t chunk = 128;                        // samples per capture forward/backward
  int64_t forget_tile = 0, retain_tile = 0;   // 0: from the budget (tests force small tiles)
  GhostPath path = GhostPath::automatic;
  double lr = 0.01, ratio = 0.1, clip = 1.0;  // for kappa1/kappa2 and the margins (hamu unlearn's defaults)
  int heat_size = 32;                         // K over a heat_size x heat_size sample for the heat map
  uint64_t seed = 0;                          // which retain (and forget) samples when subsampling
  std::vector<int64_t> retain_priority;       // retain indices taken before the random rest when the
                                              // budget holds only part of the retain set (text: the added
                                              // duplicates, so a forget pair's paraphrase is compared)
  bool progress = false;
  // The ranks that share the work (null: world(), one process unless launched by mpirun). Each rank
  // captures its share of the retain sample's chunks (the store, the norms and g_r are then summed over
  // the ranks: every rank holds all of it) and of the forget tiles (their rows of K against the whole
  // store); the per-sample results are gathered, so every rank returns the whole report. The chunks and
  // tiles are the 1-rank run's, so only sums over samples change order with the number of ranks.
  Collectives* comm = nullptr;
};

struct BlockHardness {
  std::string name, kind, path;
  int64_t numel = 0, positions = 1;
  double kappa = 0;                        // <g_r^l, g_f^l> = mean of K_l over all pairs
  double retain_norm = 0, forget_norm = 0; // of the mean gradients
  double cosine = 0;
  double kappa1 = 0, kappa2 = 0;           // this block's thresholds at --ratio/--lr, after clipping
  bool collateral = false;                 // clipped kappa_l > kappa2_l
  double ghost_pair_flops = 0, mat_pair_flops = 0;
};

struct SampleHardness {
  int64_t index = 0;       // training-set index (text: the source's index)
  int32_t label = 0;       // text: the answer's id (pairs with the same answer share it)
  double loss = 0;
  double kappa = 0;        // <grad l(f_j), g_r> (row form)
  double kappa_k = 0;      // the row mean of K (the same number by another route)
  double norm = 0;         // ||grad l(f_j)||
  double cosine = 0;       // kappa / (norm ||g_r||)
  int64_t similar_index = -1;  // the retain sample with the largest cosine to f_j (-1: f_j or every
                               // retain sample has a zero gradient)
  int32_t similar_label = -1;
  double similar_k = 0, similar_cosine = 0;
};

struct HardnessReport {
  int64_t n_forget = 0, n_retain = 0, retain_total = 0, forget_total = 0;
  double kappa = 0;            // <g_r, g_f> of the mean gradients = mean(K), before clipping
  double retain_norm = 0, forget_norm = 0, cosine = 0;
  kernels::HamuReport solver;  // kappa (clipped), kappa1, kappa2, margins at the given ratio/lr
  double share_hard = 0;       // fraction of forget samples with kappa_j > 0
  double mean_sample_cosine = 0;
  double row_form_check = 0;   // max |kappa_j(row form) - kappa_j(mean of K)| / max |kappa_j|
  double share_same_class = 0; // forget samples whose most similar retain sample has their label (text:
                               // their answer, i.e. a paraphrase or duplicate of the pair)
  double mean_similar_cosine = 0;  // mean over forget samples of that largest cosine
  std::vector<BlockHardness> blocks;    // model order
  std::vector<SampleHardness> samples;  // forget order
  std::vector<std::string> notices;
  std::string verdict;          // "easy", "moderate", "hard: expect collateral forgetting"
  std::string verdict_detail;   // the numbers behind it, in words
  // K on a sample of pairs (heat map): rows = forget samples heat_rows (positions in `samples`),
  // columns = retain sample indices; heat[r][c].
  std::vector<int64_t> heat_rows, heat_cols;
  std::vector<int32_t> heat_col_labels;
  std::vector<double> heat_col_norms;   // ||grad l(r_i)|| of the heat-map columns
  std::vector<std::vector<double>> heat;
  double seconds = 0;
  int64_t forget_tile = 0, retain_tile = 0;
};

// The samples a `hamu hardness` run scores: one index space (forget and retain are lists of its
// indices), batches of any of them, the per-sample loss and each sample's class.
class HardnessSource {
 public:
  virtual ~HardnessSource() = default;
  // The samples `idx` as one batch on `dev`, floating inputs in `dt`. Every batch of one source has the
  // same positions per sample (the retain store keeps each block's data at one T).
  virtual Batch gather(const std::vector<int64_t>& idx, DType dt, Device dev) const = 0;
  virtual const SampleLoss& loss() const = 0;
  virtual int32_t label(int64_t index) const = 0;
  virtual const char* unit() const { return "img/s"; }  // of the progress bar
  // How the verdict words "the most similar retain sample ..." for a match of labels.
  virtual const char* same_label() const { return "is of their own class"; }
};

// Images of a data set, normalised, cross-entropy per image.
class ImageHardnessSource final : public HardnessSource {
 public:
  ImageHardnessSource(const ImageDataset& train, const Normalizer& norm) : train_(train), norm_(norm) {}
  Batch gather(const std::vector<int64_t>& idx, DType dt, Device dev) const override;
  const SampleLoss& loss() const override { return loss_; }
  int32_t label(int64_t index) const override { return train_.labels[size_t(index)]; }

 private:
  const ImageDataset& train_;
  const Normalizer& norm_;
  SampleLoss loss_ = image_sample_losses;
};

// model: evaluated as is in eval mode (BatchNorm on running statistics, dropout off); it is put back
// into its previous training mode afterwards. InputError for bad sizes (more samples asked than exist,
// a budget too small for one tile, a budget that cannot hold the asked retain sample).
HardnessReport compute_hardness(nn::Module& model, const HardnessSource& source, const std::vector<int64_t>& forget,
                                const std::vector<int64_t>& retain, const HardnessOptions& opt);
// Images (an ImageHardnessSource).
HardnessReport compute_hardness(nn::Module& model, const ImageDataset& train, const Normalizer& norm,
                                const std::vector<int64_t>& forget, const std::vector<int64_t>& retain,
                                const HardnessOptions& opt);

// The verdict from the numbers (documented in README "## Hardness" and `hamu hardness --help`), in
// HAMU's own terms (HAMU.md §2-3) on the clipped mean gradients at the given --ratio/--lr:
//   "hard: expect collateral forgetting"  kappa_l > kappa2_l in more than half of the blocks: there
//            every step that keeps forgetting also raises the retain loss (hamu unlearn warns the same);
//   "easy"   kappa <= 0 (descending the retain loss already raises the forget loss) and at most
//            kEasyHardShare of the forget samples are hard;
//   "moderate" otherwise: the goals overlap (kappa > 0), or the mean gradients do not conflict but many
//            forget samples are retain-like; forget steps that leave the retain loss unchanged to first
//            order still exist.
// A forget SAMPLE is hard when kappa_j > 0 (a retain-descent step also lowers its loss).
constexpr double kEasyHardShare = 0.10;
std::string hardness_verdict(double kappa, int collateral_blocks, int blocks, double share_hard);

}  // namespace hamu
