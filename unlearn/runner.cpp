// unlearn/runner.cpp: the unlearning loop.
#include "unlearn/runner.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/progress.h"
#include "models/models.h"
#include "unlearn/gradients.h"
#include "unlearn/parallel.h"
#include "unlearn/update.h"

namespace hamu {

void validate_unlearn_options(const UnlearnOptions& opt, size_t forget_size, size_t retain_size) {
  if (forget_size == 0) throw InputError("--split: the forget set is empty, nothing to unlearn");
  if (retain_size == 0) throw InputError("--split: the retain set is empty");
  if (!(opt.params.lr > 0) || !std::isfinite(opt.params.lr)) throw InputError("--lr: must be a positive number");
  if (opt.steps < 1) throw InputError("--steps: must be at least 1, got " + std::to_string(opt.steps));
  if (opt.steps > 10000000) throw InputError("--steps: " + std::to_string(opt.steps) + " is absurdly large");
  if (opt.batch < 1 || opt.forget_batch < 1) throw InputError("--batch and --forget-batch must be at least 1");
  if (opt.params.clip < 0) throw InputError("--clip: must be >= 0");
  if (opt.eval_every < 0) throw InputError("--eval-every: must be >= 0");
  if (!opt.method) throw InputError("--method: no method given");
  opt.method->validate(opt);
}

namespace {

std::string branch_mix(const HamuReport& r) {
  char b[96];
  std::snprintf(b, sizeof b, "d%d/r%d/c%d/i%d", r.n_direct, r.n_rectified, r.n_colinear, r.n_infeasible);
  return b;
}

// One step of `method` from the gradients in `update`: its own step where it takes one (sgd), else its
// coefficients from the host statistics, applied exactly (sgd) or fed to AdamW as the pseudo-gradient
// -step/lr (the ablation: no per-step guarantee).
StepDecision take_step(const Method& method, const UnlearnOptions& opt, FusedUpdate& update, AdamW* adamw) {
  update.compute_stats();
  if (!adamw)
    if (std::optional<StepDecision> own = method.own_step(opt, update)) return *own;
  StepDecision d = method.coefficients(opt, update.count(), update.stats_host());
  if (d.report.applied && !d.report.nonfinite) {
    if (adamw) {
      update.write_pseudo_grads(d.coef, opt.params.lr);
      adamw->step();
      update.release_grads();
    } else {
      update.apply(d.coef);
    }
  }
  return d;
}

std::string collateral_notice(const StepLog& log) {
  char b[512];
  std::snprintf(b, sizeof b,
                "step %lld: in %d of %d parameter blocks the forget and retain gradients are now so aligned "
                "(kappa > kappa2) that every step which keeps forgetting must also raise the retain loss: "
                "collateral forgetting is unavoidable from here on (kappa %.3g, kappa2 %.3g).",
                (long long)log.step, log.report.n_collateral, log.report.n_blocks, log.report.kappa, log.report.kappa2);
  return b;
}

std::string progress_status(const Method& method, const StepLog& log) {
  char status[160];
  if (method.is_hamu())
    std::snprintf(status, sizeof status, "kappa %+.3g %s retain %.4f forget %.4f", log.report.kappa,
                  branch_mix(log.report).c_str(), log.retain_loss, log.forget_loss);
  else
    std::snprintf(status, sizeof status, "kappa %+.3g retain %.4f forget %.4f", log.report.kappa, log.retain_loss,
                  log.forget_loss);
  return status;
}

// Batches from an index list that cycles forever (reshuffled each pass, seeded).
class CyclicBatches {
 public:
  CyclicBatches(const ImageDataset& ds, const std::vector<int64_t>& subset, const Normalizer& norm, int64_t batch,
                uint64_t seed, Device device) {
    BatchOptions bo;
    bo.batch_size = std::min<int64_t>(batch, int64_t(subset.size()));
    bo.shuffle = true;
    bo.seed = seed;
    bo.device = device;
    bo.drop_last = true;  // every step sees a full batch
    batcher_ = std::make_unique<Batcher>(ds, subset, norm, bo);
  }
  Batch next() {
    Batch b;
    if (!batcher_->next(b)) batcher_->next(b);  // an epoch ended: continue with the next one
    return b;
  }

 private:
  std::unique_ptr<Batcher> batcher_;
};

class ImageTask final : public UnlearnTask {
 public:
  ImageTask(const ImageDataset& train, const Split& split, const Normalizer& norm, const UnlearnOptions& opt)
      : retain_size_(split.retain.size()),
        forget_size_(split.forget.size()),
        retain_(train, split.retain, norm, opt.batch, opt.seed * 2 + 1, opt.device),
        forget_(train, split.forget, norm, opt.forget_batch, opt.seed * 2 + 2, opt.device) {}
  size_t retain_size() const override { return retain_size_; }
  size_t forget_size() const override { return forget_size_; }
  void next_pair(Batch& retain, Batch& forget) override {
    retain = retain_.next();
    forget = forget_.next();
  }
  Tensor logits(nn::Module& model, const Tensor& inputs) const override { return model.forward(inputs); }

 private:
  size_t retain_size_, forget_size_;
  CyclicBatches retain_, forget_;
};

}  // namespace

Tensor UnlearnTask::concat_inputs(const Tensor& retain, const Tensor& forget) const { return concat({retain, forget}, 0); }

std::unique_ptr<UnlearnTask> make_image_task(const ImageDataset& train, const Split& split, const Normalizer& norm,
                                             const UnlearnOptions& opt) {
  return std::make_unique<ImageTask>(train, split, norm, opt);
}

UnlearnResult run_unlearning(nn::Module& model, nn::Module* original, const ImageDataset& train, const Split& split,
                             const Normalizer& norm, const UnlearnOptions& opt, const UnlearnHooks& hooks) {
  validate_unlearn_options(opt, split.forget.size(), split.retain.size());
  std::unique_ptr<UnlearnTask> task = make_image_task(train, split, norm, opt);
  return run_unlearning(model, original, *task, opt, hooks);
}

UnlearnResult run_unlearning(nn::Module& model, nn::Module* original, UnlearnTask& task, const UnlearnOptions& opt,
                             const UnlearnHooks& hooks) {
  validate_unlearn_options(opt, task.forget_size(), task.retain_size());
  const Method& method = *opt.method;
  UnlearnResult res;
  // Frozen BatchNorm: running statistics, no updates, samples independent (HAMU.md §5).
  models::set_batchnorm_frozen(model, true);
  model.train(true);
  if (original) original->eval();
  FusedUpdate update(model.parameters());
  std::unique_ptr<AdamW> adamw;
  if (opt.optimizer == OptimizerKind::adamw) {
    AdamWOptions ao;
    ao.lr = opt.params.lr;
    ao.weight_decay = 0.0;
    adamw = std::make_unique<AdamW>(model.parameters(), ao);
  }
  // Many processes (unlearn/parallel.h): this rank's rows of every batch, one exchange per step.
  Collectives& comm = opt.comm ? *opt.comm : world();
  const RankPlan plan = plan_ranks(opt.pairing, comm.rank(), comm.size(), std::min<int64_t>(opt.batch, int64_t(task.retain_size())),
                                   std::min<int64_t>(opt.forget_batch, int64_t(task.forget_size())));
  GradientExchange exchange(comm, update, plan);

  auto evaluate = [&](int64_t step, bool final) {
    if (!hooks.evaluate) return;
    const double t0 = now_s();
    EvalPoint p;
    p.step = step;
    p.seconds = res.seconds;
    p.report = hooks.evaluate(step, final);
    res.eval_seconds += now_s() - t0;
    if (hooks.on_eval) hooks.on_eval(p);
    res.evals.push_back(std::move(p));
  };
  evaluate(0, false);

  std::unique_ptr<Progress> bar;
  if (opt.progress) bar = std::make_unique<Progress>(opt.steps, "unlearn " + method.name(), "step/s");
  int64_t nan_run = 0;
  StopMonitor monitor(opt.stop, hooks.stop_probe);
  for (int64_t step = 1; step <= opt.steps; ++step) {
    const double t0 = now_s();
    StepLog log;
    log.step = step;
    std::string fallback;
    Batch rb, fb;
    task.next_pair(rb, fb);
    if (step == 1 && comm.size() > 1)
      check_same_on_all_ranks(comm, "unlearning configuration (options, model, data, split, seed)",
                              unlearn_fingerprint(opt, update.params(), rb, fb));
    const int64_t retain_global = rb.size(), forget_global = fb.size();
    if (comm.size() > 1) take_shares(plan, rb, fb);
    GradientResult g;
    if (plan.retain && plan.forget) {
      g = compute_gradients(model, original, update, rb, fb, method, opt.params, opt.paired, &fallback, &task);
    } else {  // split pairing: this rank's side only
      g = compute_side_gradient(model, original, update, plan.retain ? rb : fb, method, opt.params, plan.retain, &task);
      fallback = "split pairing: each rank computes one side";
    }
    exchange.reduce(g, rb.size(), retain_global, fb.size(), forget_global);
    log.retain_loss = g.retain_loss;
    log.forget_loss = g.forget_loss;
    log.paired = g.paired;
    if (!g.paired && res.paired_fallback.empty()) res.paired_fallback = fallback;
    bool stop = false;
    if (!g.finite) {
      log.skipped = true;
      log.report.nonfinite = 1;
    } else {
      const StepDecision d = take_step(method, opt, update, adamw.get());
      log.report = d.report;
      log.projected = d.projected;
      log.skipped = d.report.nonfinite != 0;
      if (!log.skipped && !log.report.applied) {
        stop = true;
        res.stop_reason = d.stop;
      }
    }
    res.seconds += now_s() - t0;
    log.seconds = res.seconds;
    if (log.skipped) {
      ++res.skipped;
      if (++nan_run >= opt.max_nan_steps) {
        stop = true;
        res.stop_reason = StopReason::nan;
      }
    } else {
      nan_run = 0;
      if (log.report.applied) ++res.steps_done;
    }
    // Only HAMU's solver counts collateral blocks (baselines report none).
    if (!log.skipped && !res.collateral_warned && log.report.n_collateral * 2 > log.report.n_blocks) {
      res.collateral_warned = true;
      if (hooks.notice) hooks.notice(collateral_notice(log));
    }
    if (!stop && !log.skipped) {  // reference-free stopping; its probes count as evaluation time
      const double tp = now_s();
      if (std::optional<StopReason> why = monitor.after_step(step, log.report, log.report.applied)) {
        stop = true;
        res.stop_reason = *why;
      }
      log.probed = monitor.probed();
      if (log.probed) {
        log.probe_auc = monitor.last_auc();
        log.probe_forget_loss = monitor.last_forget_loss();
        log.probe_heldout_loss = monitor.last_heldout_loss();
      }
      res.eval_seconds += now_s() - tp;
    }
    if (stop || step == opt.steps) log.stop = stop_reason_name(res.stop_reason);
    if (hooks.on_step) hooks.on_step(log);
    if (bar) bar->update(step, progress_status(method, log));
    res.log.push_back(log);
    if (stop) break;
    if (opt.eval_every > 0 && step % opt.eval_every == 0 && step != opt.steps) evaluate(step, false);
  }
  if (bar) bar->finish(stop_reason_name(res.stop_reason));
  res.collective_seconds = exchange.collective_seconds();
  // The final evaluation is of the model after the last step that changed it; when that point was
  // just evaluated (on a subsample), it is evaluated again in full and replaces that point.
  int64_t last_applied = 0;
  for (const StepLog& s : res.log)
    if (!s.skipped && s.report.applied) last_applied = s.step;
  if (!res.evals.empty() && res.evals.back().step == last_applied && last_applied > 0) res.evals.pop_back();
  evaluate(last_applied, true);
  models::set_batchnorm_frozen(model, false);
  return res;
}

}  // namespace hamu
