// unlearn/parallel.cpp: shares of the batches per rank, the configuration fingerprint and the one
// gradient exchange per step.
#include "unlearn/parallel.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "engine/ops.h"
#include "engine/progress.h"

namespace hamu {

const char* pairing_name(Pairing p) { return p == Pairing::split ? "split" : "data"; }

Pairing parse_pairing(const std::string& name) {
  if (name == "data") return Pairing::data;
  if (name == "split") return Pairing::split;
  throw InputError("--pairing: '" + name + "' is not data or split");
}

RankPlan plan_ranks(Pairing pairing, int rank, int size, int64_t retain_batch, int64_t forget_batch) {
  RankPlan p;
  p.retain_batch = retain_batch;
  p.forget_batch = forget_batch;
  if (pairing == Pairing::split) {
    if (size < 2 || size % 2 != 0)
      throw InputError("--pairing split: needs an even number of ranks (retain on even ranks, forget on odd ranks), got " +
                       std::to_string(size) + " (run it with mpirun -np 2, 4, ...)");
    p.retain = rank % 2 == 0;
    p.forget = !p.retain;
    p.retain_part = p.forget_part = rank / 2;
    p.retain_parts = p.forget_parts = size / 2;
  } else {
    p.retain_part = p.forget_part = rank;
    p.retain_parts = p.forget_parts = size;
  }
  if (retain_batch < p.retain_parts)
    throw InputError("--batch: a retain batch of " + std::to_string(retain_batch) + " cannot be shared by " +
                     std::to_string(p.retain_parts) + " ranks");
  if (forget_batch < p.forget_parts)
    throw InputError("--forget-batch: a forget batch of " + std::to_string(forget_batch) + " cannot be shared by " +
                     std::to_string(p.forget_parts) + " ranks");
  return p;
}

uint64_t unlearn_fingerprint(const UnlearnOptions& opt, const std::vector<Tensor>& params, const Batch& retain,
                             const Batch& forget) {
  char text[512];
  std::snprintf(text, sizeof text,
                "method=%s lr=%.17g clip=%.17g compat=%d scrub=%.17g,%.17g npo=%.17g ratio=%.17g radius=%d,%.17g "
                "scope=%d csplit=%d stop=%d cont=%d opt=%d steps=%lld batch=%lld,%lld eval=%lld seed=%llu device=%s "
                "paired=%d pairing=%d nan=%lld threads=%d bucket=%zu",
                opt.method ? opt.method->name().c_str() : "", opt.params.lr, opt.params.clip, int(opt.params.paper_compat),
                opt.params.scrub_alpha, opt.params.scrub_gamma, opt.params.npo_beta, opt.ratio, int(opt.fixed_radius),
                opt.radius, int(opt.scope), int(opt.split), int(opt.stop_on_criterion), int(opt.continue_on_infeasible),
                int(opt.optimizer), (long long)opt.steps, (long long)opt.batch, (long long)opt.forget_batch,
                (long long)opt.eval_every, (unsigned long long)opt.seed, opt.device.str().c_str(), int(opt.paired),
                int(opt.pairing), (long long)opt.max_nan_steps, opt.device.is_cuda() ? 0 : omp_get_max_threads(),
                overlap_bucket_bytes());
  uint64_t h = hash_tensors(params, hash_string(text));
  h = hash_tensors({retain.images, retain.labels, forget.images, forget.labels}, h);
  h = hash_bytes(retain.indices.data(), retain.indices.size() * sizeof(int64_t), h);
  return hash_bytes(forget.indices.data(), forget.indices.size() * sizeof(int64_t), h);
}

void take_shares(const RankPlan& plan, Batch& retain, Batch& forget) {
  const Shard r = plan.retain ? shard_of(retain.size(), plan.retain_part, plan.retain_parts) : Shard{};
  const Shard f = plan.forget ? shard_of(forget.size(), plan.forget_part, plan.forget_parts) : Shard{};
  retain = plan.retain ? batch_rows(retain, r.start, r.count) : Batch{};
  forget = plan.forget ? batch_rows(forget, f.start, f.count) : Batch{};
}

namespace {

// Text batches carry labels [B,T] (images [N]): a side's units are then its answer tokens.
int64_t tokens_of(const Batch& b) {
  if (!b.labels.defined() || b.size() == 0) return 0;
  return count_scored_tokens(b.labels, 1, -100);
}

double fraction(int64_t part, int64_t whole) { return whole > 0 ? double(part) / double(whole) : 0.0; }

}  // namespace

ShareWeights share_weights(const RankPlan& plan, const Method& method, const Batch& retain_global,
                           const Batch& forget_global, const Batch& retain_mine, const Batch& forget_mine) {
  ShareWeights w;
  const bool text = retain_global.labels.defined() && retain_global.labels.dim() == 2;
  if (plan.retain) {
    w.retain_loss = text ? fraction(tokens_of(retain_mine), tokens_of(retain_global))
                         : fraction(retain_mine.size(), retain_global.size());
    w.retain = w.retain_loss;  // every retain objective averages over samples (images) or tokens (text)
  }
  if (plan.forget) {
    const double rows = fraction(forget_mine.size(), forget_global.size());
    w.forget_loss = text ? fraction(tokens_of(forget_mine), tokens_of(forget_global)) : rows;
    w.forget = text && !method.traits().sequence_level ? w.forget_loss : rows;
  }
  return w;
}

GradientObserver* GradientExchange::prepare(const ShareWeights& w) {
  reduced_ = false;
  w_ = w;
  return use_overlap_ ? this : nullptr;
}

void GradientExchange::start(bool both_sides_at_once) {
  // Every rank must cut the same buckets: split pairing always interleaves (each rank makes one side,
  // at the same time as the others make theirs).
  interleaved_ = both_sides_at_once || !(plan_.retain && plan_.forget);
  const int P = update_.count();
  std::vector<Tensor> bufs(size_t(2 * P));
  std::vector<double> factors(size_t(2 * P));
  for (int p = 0; p < P; ++p)
    for (int side = 0; side < 2; ++side) {
      const size_t k = interleaved_ ? size_t(2 * (P - 1 - p) + side) : size_t(side * P + (P - 1 - p));
      bufs[k] = (side == 0 ? update_.retain_grads() : update_.forget_grads())[size_t(p)];
      factors[k] = side == 0 ? w_.retain : w_.forget;
    }
  overlap_.begin(bufs, factors);
  // The side this rank skips (split pairing) was zeroed before and is not written again in this step.
  for (int p = 0; p < P; ++p)
    for (int side = 0; side < 2; ++side)
      if (!(side == 0 ? plan_.retain : plan_.forget)) ready(p, side == 0);
}

void GradientExchange::ready(int param, bool retain_side) {
  const int P = update_.count(), side = retain_side ? 0 : 1;
  overlap_.ready(interleaved_ ? size_t(2 * (P - 1 - param) + side) : size_t(side * P + (P - 1 - param)));
}

void GradientExchange::done() {
  overlap_.finish();
  reduced_ = true;
}

void GradientExchange::reduce(GradientResult& g, const ShareWeights& w) {
  if (c_.size() == 1) return;
  if (!reduced_) {
    std::vector<Tensor*> bufs;
    std::vector<double> factors;
    for (Tensor& t : update_.retain_grads()) {
      bufs.push_back(&t);
      factors.push_back(w.retain);
    }
    for (Tensor& t : update_.forget_grads()) {
      bufs.push_back(&t);
      factors.push_back(w.forget);
    }
    reducer_.all_reduce(bufs, factors);
  }
  reduced_ = false;
  std::vector<double> losses = {plan_.retain ? g.retain_loss * w.retain_loss : 0.0,
                                plan_.forget ? g.forget_loss * w.forget_loss : 0.0};
  const double t0 = now_s();
  all_reduce_host(c_, losses);
  host_seconds_ += now_s() - t0;
  g.retain_loss = losses[0];
  g.forget_loss = losses[1];
  g.finite = std::isfinite(g.retain_loss) && std::isfinite(g.forget_loss);
}

}  // namespace hamu
