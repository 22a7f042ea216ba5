// unlearn/runner.cpp: the unlearning loop.
#include "unlearn/runner.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "engine/optim.h"
#include "engine/progress.h"
#include "models/models.h"
#include "unlearn/gradients.h"
#include "unlearn/update.h"

namespace hamu {

kernels::HamuConfig hamu_config(const UnlearnOptions& opt) {
  kernels::HamuConfig c;
  c.variant = opt.method == Method::hamu_u ? kernels::hamu_u : kernels::hamu_q;
  c.scope = opt.scope;
  c.split = opt.split;
  c.fixed_radius = opt.fixed_radius ? 1 : 0;
  c.constraint = opt.ratio * opt.params.lr;
  c.lr = opt.params.lr;
  c.radius = opt.radius;
  c.continue_on_infeasible = opt.continue_on_infeasible ? 1 : 0;
  c.stop_on_criterion = opt.stop_on_criterion ? 1 : 0;
  c.clip = opt.params.clip;
  return c;
}

namespace {
std::string fmt_g(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}
}  // namespace

void validate_unlearn_options(const UnlearnOptions& opt, size_t forget_size, size_t retain_size) {
  if (forget_size == 0) throw InputError("--split: the forget set is empty, nothing to unlearn");
  if (retain_size == 0) throw InputError("--split: the retain set is empty");
  if (!(opt.params.lr > 0) || !std::isfinite(opt.params.lr)) throw InputError("--lr: must be a positive number");
  if (opt.steps < 1) throw InputError("--steps: must be at least 1, got " + std::to_string(opt.steps));
  if (opt.steps > 10000000) throw InputError("--steps: " + std::to_string(opt.steps) + " is absurdly large");
  if (opt.batch < 1 || opt.forget_batch < 1) throw InputError("--batch and --forget-batch must be at least 1");
  if (opt.params.clip < 0) throw InputError("--clip: must be >= 0");
  if (opt.eval_every < 0) throw InputError("--eval-every: must be >= 0");
  if (opt.optimizer != "sgd" && opt.optimizer != "adamw")
    throw InputError("--optimizer: '" + opt.optimizer + "' is not sgd or adamw");
  if (is_hamu(opt.method)) {
    if (!(opt.ratio >= 0) || !std::isfinite(opt.ratio)) throw InputError("--ratio: must be >= 0");
    if (opt.fixed_radius && !(opt.radius > 0)) throw InputError("--radius: must be positive");
    // With R = lr * ||a|| and gradients clipped to C, the largest gain is lr * C^2 per step
    // (HAMU.md §4): a ratio above C^2 can never be met.
    const double c = opt.params.clip;
    if (!opt.fixed_radius && c > 0 && opt.ratio > c * c)
      throw InputError("--ratio " + fmt_g(opt.ratio) + " can never be feasible with the learning-rate radius and --clip " +
                       fmt_g(c) + " (the forget gain per step is at most lr * clip^2): use --ratio <= " + fmt_g(c * c));
  }
}

namespace {

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

std::string branch_mix(const kernels::HamuReport& r) {
  char b[96];
  std::snprintf(b, sizeof b, "d%d/r%d/c%d/i%d", r.n_direct, r.n_rectified, r.n_colinear, r.n_infeasible);
  return b;
}

}  // namespace

UnlearnResult run_unlearning(nn::Module& model, nn::Module* original, const ImageDataset& train, const Split& split,
                             const Normalizer& norm, const UnlearnOptions& opt, const UnlearnHooks& hooks) {
  validate_unlearn_options(opt, split.forget.size(), split.retain.size());
  UnlearnResult res;
  // Frozen BatchNorm: running statistics, no updates, samples independent (HAMU.md §5).
  models::set_batchnorm_frozen(model, true);
  model.train(true);
  if (original) {
    original->eval();
  }
  FusedUpdate update(model.parameters());
  std::unique_ptr<AdamW> adamw;
  if (opt.optimizer == "adamw") {
    AdamWOptions ao;
    ao.lr = opt.params.lr;
    ao.weight_decay = 0.0;
    adamw = std::make_unique<AdamW>(model.parameters(), ao);
  }
  const kernels::HamuConfig cfg = hamu_config(opt);
  CyclicBatches retain_batches(train, split.retain, norm, opt.batch, opt.seed * 2 + 1, opt.device);
  CyclicBatches forget_batches(train, split.forget, norm, opt.forget_batch, opt.seed * 2 + 2, opt.device);

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
  if (opt.progress) bar = std::make_unique<Progress>(opt.steps, std::string("unlearn ") + method_name(opt.method), "step/s");
  int64_t nan_run = 0;
  res.stop_reason = "max_steps";
  for (int64_t step = 1; step <= opt.steps; ++step) {
    const double t0 = now_s();
    Batch rb = retain_batches.next();
    Batch fb = forget_batches.next();
    StepLog log;
    log.step = step;
    std::string fallback;
    GradientResult g = compute_gradients(model, original, update, rb, fb, opt.method, opt.params, opt.paired, &fallback);
    log.retain_loss = g.retain_loss;
    log.forget_loss = g.forget_loss;
    log.paired = g.paired;
    if (!g.paired && res.paired_fallback.empty()) res.paired_fallback = fallback;
    bool stop = false;
    if (!g.finite) {
      log.skipped = true;
      log.report.nonfinite = 1;
    } else {
      update.compute_stats();
      if (is_hamu(opt.method)) {
        if (adamw) {
          // Ablation: the solver's step as a pseudo-gradient for AdamW (no per-step guarantee).
          kernels::HamuConfig c = cfg;
          std::vector<double> stats = update.stats_host();
          std::vector<double> coef(size_t(2 * update.count()));
          kernels::hamu_solve_step(c, update.count(), stats.data(), coef.data(), &log.report);
          if (log.report.applied && !log.report.nonfinite) {
            update.write_pseudo_grads(coef, opt.params.lr);
            adamw->step();
            update.release_grads();
          }
        } else {
          log.report = update.hamu_step(cfg);
        }
        log.skipped = log.report.nonfinite != 0;
        if (!log.skipped && !log.report.applied) {
          stop = true;
          res.stop_reason = log.report.n_infeasible > 0 && !opt.continue_on_infeasible ? "infeasible" : "criterion";
        }
      } else {
        std::vector<double> stats = update.stats_host();
        double rr = 0, ff = 0, rf = 0;
        for (int i = 0; i < update.count(); ++i) {
          rr += stats[size_t(3 * i)];
          ff += stats[size_t(3 * i + 1)];
          rf += stats[size_t(3 * i + 2)];
        }
        log.report.retain_norm = std::sqrt(rr);
        log.report.forget_norm = std::sqrt(ff);
        log.report.n_blocks = update.count();
        if (!std::isfinite(rr) || !std::isfinite(ff) || !std::isfinite(rf)) {
          log.skipped = true;
          log.report.nonfinite = 1;
        } else {
          BaselineStep bs = baseline_step(opt.method, opt.params, rr, ff, rf);
          log.projected = bs.projected;
          log.report.kappa = bs.kappa;
          log.report.retain_scale = bs.retain_scale;
          log.report.forget_scale = bs.forget_scale;
          const double denom = std::sqrt(rr) * std::sqrt(ff);
          log.report.angle_deg = denom > 0 ? std::acos(std::max(-1.0, std::min(1.0, rf / denom))) * 57.29577951308232 : 90.0;
          std::vector<double> coef;
          for (int i = 0; i < update.count(); ++i) {
            coef.push_back(bs.coef_r);
            coef.push_back(bs.coef_f);
          }
          if (adamw) {
            update.write_pseudo_grads(coef, opt.params.lr);
            adamw->step();
            update.release_grads();
          } else {
            update.apply(coef);
          }
          log.report.applied = 1;
        }
      }
    }
    res.seconds += now_s() - t0;
    log.seconds = res.seconds;
    if (log.skipped) {
      ++res.skipped;
      if (++nan_run >= opt.max_nan_steps) {
        stop = true;
        res.stop_reason = "nan";
      }
    } else {
      nan_run = 0;
      if (log.report.applied) ++res.steps_done;
    }
    if (is_hamu(opt.method) && !log.skipped && !res.collateral_warned &&
        log.report.n_collateral * 2 > log.report.n_blocks) {
      res.collateral_warned = true;
      if (hooks.notice) {
        char b[512];
        std::snprintf(b, sizeof b,
                      "step %lld: in %d of %d parameter blocks the forget and retain gradients are now so aligned "
                      "(kappa > kappa2) that every step which keeps forgetting must also raise the retain loss: "
                      "collateral forgetting is unavoidable from here on (kappa %.3g, kappa2 %.3g).",
                      (long long)step, log.report.n_collateral, log.report.n_blocks, log.report.kappa,
                      log.report.kappa2);
        hooks.notice(b);
      }
    }
    if (hooks.on_step) hooks.on_step(log);
    if (bar) {
      char status[160];
      if (is_hamu(opt.method))
        std::snprintf(status, sizeof status, "kappa %+.3g %s retain %.4f forget %.4f", log.report.kappa,
                      branch_mix(log.report).c_str(), log.retain_loss, log.forget_loss);
      else
        std::snprintf(status, sizeof status, "kappa %+.3g retain %.4f forget %.4f", log.report.kappa, log.retain_loss,
                      log.forget_loss);
      bar->update(step, status);
    }
    res.log.push_back(log);
    if (stop) break;
    if (opt.eval_every > 0 && step % opt.eval_every == 0 && step != opt.steps) evaluate(step, false);
  }
  if (bar) bar->finish(res.stop_reason);
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
