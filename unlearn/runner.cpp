// unlearn/runner.cpp: the unlearning loop.
#include "unlearn/runner.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <type_traits>

#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/progress.h"
#include "models/models.h"
#include "train/train.h"
#include "unlearn/gradients.h"
#include "unlearn/graph_step.h"
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
  int64_t epoch() const { return batcher_->epoch(); }
  int64_t cursor() const { return batcher_->cursor(); }
  void seek(int64_t epoch, int64_t cursor) { batcher_->seek(epoch, cursor); }

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
  std::vector<int64_t> position() const override {
    return {retain_.epoch(), retain_.cursor(), forget_.epoch(), forget_.cursor()};
  }
  void seek(const std::vector<int64_t>& p) override {
    if (p.size() != 4) throw InputError("resume: an image task's batch position has 4 entries");
    retain_.seek(p[0], p[1]);
    forget_.seek(p[2], p[3]);
  }
  Tensor logits(nn::Module& model, const Tensor& inputs) const override { return model.forward(inputs); }
  bool fixed_shapes() const override { return true; }  // full batches only (drop_last)

 private:
  size_t retain_size_, forget_size_;
  CyclicBatches retain_, forget_;
};

// The step log in a state file: one row of doubles per step (counts and flags exactly representable).
constexpr int64_t kStepColumns = 31;

// The columns of a step row in order: the one list that writing and reading share (S: StepLog or const StepLog).
template <class S, class F>
void for_each_step_column(S& s, F f) {
  auto& r = s.report;
  f(s.step), f(s.seconds), f(s.retain_loss), f(s.forget_loss), f(r.kappa), f(r.kappa1), f(r.kappa2);
  f(r.retain_norm), f(r.forget_norm), f(r.retain_scale), f(r.forget_scale), f(r.angle_deg), f(r.feasibility_margin);
  f(r.stopping_margin), f(r.n_direct), f(r.n_rectified), f(r.n_colinear), f(r.n_infeasible), f(r.n_collateral);
  f(r.n_blocks), f(r.nonfinite), f(r.criterion_met), f(r.applied), f(s.skipped), f(s.paired), f(s.projected);
  f(s.probed), f(s.probe_auc), f(s.probe_forget_loss), f(s.probe_heldout_loss), f(s.probe_retain_loss);
}

void append_step_row(std::vector<double>& out, const StepLog& s) {
  for_each_step_column(s, [&](const auto& v) { out.push_back(double(v)); });
}

StepLog step_from_row(const double* v) {
  StepLog s;
  int64_t i = 0;
  // Integers and flags were stored exactly; a flag is set when its column is non-zero.
  for_each_step_column(s, [&](auto& x) { x = static_cast<std::remove_reference_t<decltype(x)>>(v[i++]); });
  return s;
}

// Everything the loop carries from one step to the next, after step `step`.
RunState unlearn_state(nn::Module& model, const AdamW* adamw, const UnlearnTask& task, const StopMonitor& monitor,
                       const UnlearnResult& res, int64_t step, int64_t nan_run) {
  RunState st;
  st.kind = "unlearn";
  put_module_state(st, model, "model/");
  if (adamw) adamw->save_state(st, "optim/");
  st.put_counter("loop.step", step);
  st.put_counter("loop.nan_run", nan_run);
  st.put_counter("loop.steps_done", res.steps_done);
  st.put_counter("loop.skipped", res.skipped);
  st.put_counter("loop.collateral_warned", res.collateral_warned ? 1 : 0);
  st.put_doubles("loop.seconds", {res.seconds, res.eval_seconds});
  std::vector<double> pos;
  for (int64_t p : task.position()) pos.push_back(double(p));
  st.put_doubles("loop.batch_position", pos);
  std::vector<double> window;
  for (bool b : monitor.window()) window.push_back(b ? 1 : 0);
  st.put_doubles("loop.stop_window", window);
  st.put_doubles("loop.stop_retain_baseline", {monitor.retain_baseline()});
  std::vector<double> rows;
  for (const StepLog& s : res.log) append_step_row(rows, s);
  st.put_doubles("loop.step_log", rows);
  std::vector<double> evals;
  for (const EvalPoint& p : res.evals) evals.insert(evals.end(), {double(p.step), p.seconds});
  st.put_doubles("loop.evals", evals);
  st.meta.set("paired_fallback", Json(res.paired_fallback));
  return st;
}

// Restores unlearn_state's state into the loop's pieces; returns the step it was written after. res.evals
// must hold the recomputed step-0 evaluation.
int64_t restore_unlearn_state(const RunState& st, nn::Module& model, AdamW* adamw, UnlearnTask& task,
                              StopMonitor& monitor, UnlearnResult& res, int64_t& nan_run, int64_t max_steps) {
  const int64_t step = st.counter("loop.step");
  if (step < 1 || step >= max_steps)
    throw InputError(st.path() + ": its step " + std::to_string(step) + " is outside this run's 1.." +
                     std::to_string(max_steps - 1));
  restore_module_state(st, model, "model/");
  if (adamw) adamw->load_state(st, "optim/");
  nan_run = st.counter("loop.nan_run");
  res.steps_done = st.counter("loop.steps_done");
  res.skipped = st.counter("loop.skipped");
  res.collateral_warned = st.counter("loop.collateral_warned") != 0;
  const std::vector<double> secs = st.get_doubles("loop.seconds", 2);
  res.seconds = secs[0];
  res.eval_seconds = secs[1];
  std::vector<int64_t> pos;
  for (double p : st.get_doubles("loop.batch_position", 4)) pos.push_back(int64_t(p));
  task.seek(pos);
  std::vector<bool> window;
  for (double w : st.get_doubles("loop.stop_window")) window.push_back(w != 0);
  monitor.restore_window(std::move(window));
  monitor.restore_retain_baseline(st.get_doubles("loop.stop_retain_baseline", 1)[0]);
  const std::vector<double> rows = st.get_doubles("loop.step_log", step * kStepColumns);
  res.log.clear();
  for (int64_t i = 0; i < step; ++i) res.log.push_back(step_from_row(rows.data() + i * kStepColumns));
  const std::vector<double> evals = st.get_doubles("loop.evals");
  if (evals.size() < 2 || evals.size() % 2 != 0 || evals[0] != 0)
    throw InputError(st.path() + ": its evaluation points are malformed");
  for (size_t i = 2; i < evals.size(); i += 2) {  // the points after step 0: step and time only
    EvalPoint p;
    p.step = int64_t(evals[i]);
    p.seconds = evals[i + 1];
    res.evals.push_back(std::move(p));
  }
  res.paired_fallback = st.meta_at("paired_fallback").as_string();
  return step;
}

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
  GradientExchange exchange(comm, update, plan, overlap_bucket_bytes());

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
  if ((hooks.checkpoint_every > 0 || hooks.resume) && comm.size() > 1)
    throw InputError("--checkpoint-every/--resume: resumable runs are single-process (this run has " +
                     std::to_string(comm.size()) + " ranks)");
  int64_t nan_run = 0, first_step = 1;
  StopMonitor monitor(opt.stop, hooks.stop_probe);
  if (hooks.resume) {
    // The step-0 point of the original model (its row is already in the caller's log), then the state.
    if (hooks.evaluate) res.evals.push_back(EvalPoint{0, 0.0, hooks.evaluate(0, false)});
    first_step = restore_unlearn_state(*hooks.resume, model, adamw.get(), task, monitor, res, nan_run, opt.steps) + 1;
    if (!hooks.evaluate) res.evals.clear();
  } else {
    evaluate(0, false);
    const double tp = now_s();
    monitor.start();  // the original model's retain-probe loss (retain-rise, auto)
    res.eval_seconds += now_s() - tp;
  }

  // --cuda-graph: whole steps captured once per batch shape and replayed (unlearn/graph_step.h).
  std::unique_ptr<GraphedSteps> graphs;
  if (opt.graph) {
    res.graph_fallback = GraphedSteps::objection(model, opt, task, comm.size());
    if (res.graph_fallback.empty()) graphs = std::make_unique<GraphedSteps>(model, update, opt, task);
    else if (hooks.notice) hooks.notice("--cuda-graph not used: " + res.graph_fallback + "; the steps run the ordinary way");
  }
  // The ordinary step of HAMU on a GPU: queued whole, one wait at its end (unlearn/graph_step.h).
  std::unique_ptr<OneWaitSteps> one_wait;
  if (OneWaitSteps::wanted(opt, comm.size())) one_wait = std::make_unique<OneWaitSteps>(update, opt, &task);

  std::unique_ptr<Progress> bar;
  if (opt.progress) bar = std::make_unique<Progress>(opt.steps, "unlearn " + method.name(), "step/s");
  for (int64_t step = first_step; step <= opt.steps; ++step) {
    const double t0 = now_s();
    StepLog log;
    log.step = step;
    std::string fallback;
    Batch rb, fb;
    task.next_pair(rb, fb);
    if (step == 1 && comm.size() > 1)
      check_same_on_all_ranks(comm, "unlearning configuration (options, model, data, split, seed)",
                              unlearn_fingerprint(opt, update.params(), rb, fb));
    ShareWeights shares;
    if (comm.size() > 1) {
      const Batch rg = rb, fg = fb;
      take_shares(plan, rb, fb);
      shares = share_weights(plan, method, rg, fg, rb, fb);
    }
    GradientResult g;
    std::optional<GraphedStep> graphed = graphs ? graphs->step(rb, fb) : std::nullopt;
    if (graphs && !graphed && res.graph_fallback.empty()) {
      res.graph_fallback = graphs->disabled();
      if (hooks.notice) hooks.notice("--cuda-graph given up at step " + std::to_string(step) + ": " +
                                     res.graph_fallback + "; the remaining steps run the ordinary way");
    }
    if (!graphed && one_wait) graphed = one_wait->step(model, rb, fb);
    GradientObserver* overlap = comm.size() > 1 ? exchange.prepare(shares) : nullptr;
    if (graphed) {
      g = graphed->gradients;
      fallback = graphed->fallback;
    } else if (plan.retain && plan.forget) {
      g = compute_gradients(model, original, update, rb, fb, method, opt.params, opt.paired, &fallback, &task, overlap);
    } else {  // split pairing: this rank's side only
      g = compute_side_gradient(model, original, update, plan.retain ? rb : fb, method, opt.params, plan.retain, &task,
                                overlap);
      fallback = "split pairing: each rank computes one side";
    }
    exchange.reduce(g, shares);
    log.retain_loss = g.retain_loss;
    log.forget_loss = g.forget_loss;
    log.paired = g.paired;
    if (!g.paired && res.paired_fallback.empty()) res.paired_fallback = fallback;
    bool stop = false;
    if (!g.finite) {
      log.skipped = true;
      log.report.nonfinite = 1;
    } else {
      const StepDecision d = graphed ? graphed->decision : take_step(method, opt, update, adamw.get());
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
        log.probe_retain_loss = monitor.last_retain_loss();
      }
      res.eval_seconds += now_s() - tp;
    }
    if (stop || step == opt.steps) log.stop = stop_reason_name(res.stop_reason);
    if (hooks.on_step) hooks.on_step(log);
    if (bar) bar->update(step, progress_status(method, log));
    res.log.push_back(log);
    if (stop) break;
    if (opt.eval_every > 0 && step % opt.eval_every == 0 && step != opt.steps) evaluate(step, false);
    if (checkpoint_due(hooks.checkpoint_every, bool(hooks.write_state), step, opt.steps)) {
      RunState st = unlearn_state(model, adamw.get(), task, monitor, res, step, nan_run);
      hooks.write_state(st);
    }
  }
  if (bar) bar->finish(stop_reason_name(res.stop_reason));
  res.collective_seconds = exchange.collective_seconds();
  if (graphs) {
    res.graph_replays = graphs->replays();
    res.graph_captures = graphs->captures();
  }
  if (one_wait) res.one_wait_steps = one_wait->steps();
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
