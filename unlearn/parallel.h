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
// Exchange: every rank scales its side means by (rows it took)/(global batch) and one all-reduce over
// the packed [r; f] sums them (engine/collectives.h), plus one small all-reduce of the two losses. The
// objectives of every method are means of per-sample terms and BatchNorm is frozen while unlearning,
// so the sum equals the 1-rank gradient up to float rounding.
#pragma once
#include <cstdint>
#include <string>

#include "engine/collectives.h"
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

class GradientExchange {
 public:
  GradientExchange(Collectives& c, FusedUpdate& update, const RankPlan& plan) : c_(c), update_(update), plan_(plan), reducer_(c) {}

  // After this rank computed r and f (the sides it computes) as means over its `retain_rows` of the
  // global retain batch of `retain_global` rows (forget alike), with the losses in g: every rank's r, f
  // and losses become the global batch means and g.finite is recomputed from them. Every rank ends with
  // the same r, f and g. A no-op for one rank.
  void reduce(GradientResult& g, int64_t retain_rows, int64_t retain_global, int64_t forget_rows, int64_t forget_global);
  double collective_seconds() const { return reducer_.collective_seconds() + host_seconds_; }

 private:
  Collectives& c_;
  FusedUpdate& update_;
  RankPlan plan_;
  TensorReducer reducer_;
  double host_seconds_ = 0;
};

}  // namespace hamu
