// unlearn/parallel.h: one unlearning step on many ranks (README "Many processes"): which rows of the
// retain and forget batches each rank takes, and the one exchange per step that turns every rank's
// partial gradients into the 1-rank run's batch-mean gradients r and f on every rank, so that every
// rank applies the identical fused update.
//
//   data   every rank takes its share of both batches (rows [floor(B*k/N), floor(B*(k+1)/N)) of the
//          same global batch the 1-rank run draws) and computes r and f on it;
//   split  HAMU's split-gpu pairing: even ranks compute r on shares of the retain batch, odd ranks f on
//          shares of the forget batch, at the same time; a rank contributes zeros for the side it skips.
//
// Exchange: every rank scales its side means by (rows it took)/(global batch) and the ranks sum them,
// plus one small all-reduce of the two losses. The objectives of every method are means of per-sample
// terms and BatchNorm is frozen while unlearning, so the sum equals the 1-rank gradient up to float
// rounding. The sum overlaps the backward (engine/overlap.h): r and f are cut into buckets in the order
// the backward finishes them (last parameter first; r and f of a parameter side by side when one
// backward makes both, all of r before all of f when two passes do), and each bucket is reduced as
// soon as it is final. HAMU_OVERLAP=0 (or HAMU_BUCKET_KB=0) reduces the packed [r; f] after the
// backward instead; both give bitwise the same r and f.
#pragma once
#include <cstdint>
#include <string>

#include "engine/collectives.h"
#include "engine/overlap.h"
#include "loaders/batch.h"
#include "unlearn/gradients.h"

namespace hamu {

const char* pairing_name(Pairing p);            // "data" | "split"
Pairing parse_pairing(const std::string& name);  // InputError naming --pairing

// What this rank computes in each step.
struct RankPlan {
  bool retain = true, forget = true;  // the sides this rank computes
  int retain_part = 0, retain_parts = 1;
  int forget_part = 0, forget_parts = 1;
  int64_t retain_batch = 0, forget_batch = 0;  // the global batch sizes
};
// InputError for split pairing on an odd rank count or one rank, or a batch smaller than its sharers.
RankPlan plan_ranks(Pairing pairing, int rank, int size, int64_t retain_batch, int64_t forget_batch);

// Everything every rank must agree on, taken before the first step: the options, the method, the
// parameters' values, the first global retain and forget batches (which fix data, split and seed) and,
// on the CPU, the thread count (it fixes the order of the reductions).
uint64_t unlearn_fingerprint(const UnlearnOptions& opt, const std::vector<Tensor>& params, const Batch& retain,
                             const Batch& forget);

// This rank's rows of the step's global batches (in place); the sides it does not compute become empty.
void take_shares(const RankPlan& plan, Batch& retain, Batch& forget);

// How much this rank's side means count in the global batch's mean (0 for a side it skips): its rows
// over the global rows for objectives that average over samples (images; npo's sequence-level forget
// term on text), its answer tokens over the global batch's answer tokens for those that average over
// tokens (every other text objective), so that the sum over the ranks is the 1-rank batch mean. The
// logged losses (task_loss: a token mean on text) get their own weights. Call with the step's global
// batches and this rank's shares of them (take_shares).
struct ShareWeights {
  double retain = 0, forget = 0;            // gradients r and f
  double retain_loss = 0, forget_loss = 0;  // the logged losses
};
ShareWeights share_weights(const RankPlan& plan, const Method& method, const Batch& retain_global,
                           const Batch& forget_global, const Batch& retain_mine, const Batch& forget_mine);

class GradientExchange final : public GradientObserver {
 public:
  // bucket_bytes: engine/overlap.h (0: no overlap, one packed all-reduce after the backward).
  GradientExchange(Collectives& c, FusedUpdate& update, const RankPlan& plan, size_t bucket_bytes)
      : c_(c), update_(update), plan_(plan), reducer_(c), overlap_(c, bucket_bytes) {
    use_overlap_ = bucket_bytes > 0 && c.size() > 1;
  }

  // Before this rank computes r and f of a step: the observer to hand to compute_gradients /
  // compute_side_gradient, or null when the exchange does not overlap.
  GradientObserver* prepare(const ShareWeights& w);
  void start(bool both_sides_at_once) override;
  void ready(int param, bool retain_side) override;
  void done() override;

  // After this rank computed r and f (the sides it computes) as means over its shares of the global
  // batches, with the losses in g: every rank's r, f and losses become the global batch means and
  // g.finite is recomputed from them. Every rank ends with the same r, f and g. A no-op for one rank.
  void reduce(GradientResult& g, const ShareWeights& w);
  double collective_seconds() const {
    return reducer_.collective_seconds() + overlap_.collective_seconds() + host_seconds_;
  }
  // The part of the exchange the backward did not hide (waiting for the last buckets, and the losses).
  double exposed_seconds() const { return reducer_.collective_seconds() + overlap_.wait_seconds() + host_seconds_; }

 private:
  Collectives& c_;
  FusedUpdate& update_;
  RankPlan plan_;
  TensorReducer reducer_;
  OverlappedReducer overlap_;
  bool use_overlap_ = false;
  ShareWeights w_;
  bool interleaved_ = false;
  bool reduced_ = false;  // this step's r and f went through the overlapped reducer
  double host_seconds_ = 0;
};

}  // namespace hamu
