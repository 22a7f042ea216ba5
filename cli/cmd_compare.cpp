// cli/cmd_compare.cpp: `hamu compare` — several unlearning methods, each from a fresh copy of the same
// original, on the same split and budget: one table, optional JSON, and an SVG trade-off plot. Images
// (hamu checkpoints) and text (causal LM directories, text metrics) share everything after loading.
#include <algorithm>
#include <functional>
#include <optional>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
#include <utility>

#include "cli/commands.h"
#include "cli/provenance.h"
#include "cli/plots.h"
#include "cli/text_setup.h"
#include "cli/unlearn_output.h"
#include "cli/unlearn_setup.h"
#include "engine/progress.h"
#include "unlearn/graph_eval.h"
#include "unlearn/text_task.h"
#include "models/checkpoint.h"

namespace hamu::cli {
namespace {

// --eval-every default: about eight intermediate points per method for the plot.
constexpr int64_t kAutoEvalEvery = -1;
constexpr int64_t kPlotPoints = 8;

struct MethodRun {
  const Method* method;
  UnlearnResult result;  // result.evals: step 0 (the original), intermediate (sampled), final (full)
};

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// "a,b,c" -> methods, rejecting unknown names and repeats before anything runs.
std::vector<const Method*> parse_methods(const std::string& list) {
  std::vector<const Method*> out;
  std::set<std::string> seen;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    const std::string name = trim(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    start = comma == std::string::npos ? list.size() + 1 : comma + 1;
    if (name.empty()) throw InputError("--methods: empty method name in '" + list + "'");
    const Method* m = find_method(name);
    if (!m) throw InputError("--methods: unknown method '" + name + "' (choose from " + method_list() + ")");
    if (!seen.insert(name).second) throw InputError("--methods: '" + name + "' is listed twice");
    out.push_back(m);
  }
  return out;
}

std::string pct(double v) { return fmt("%.2f", 100 * v); }

// ---- the table -----------------------------------------------------------------------------------

std::string table_row(const std::string& name, const EvalReport& r, const std::string& seconds,
                      const std::string& eval_seconds, const std::string& steps, const std::string& stop) {
  char b[320];
  if (r.text) {  // text: the Min-K% membership AUC and the KS test of the forget losses against the retrained model
    const bool test = r.test.n > 0;  // a split without holdout=/test=: no test columns to fill
    std::snprintf(b, sizeof b, "%-10s %8s %8s %8s %9.4f %9s %9s %8s %9s %8s %8s %6s  %s\n", name.c_str(),
                  pct(r.forget.acc).c_str(), pct(r.retain.acc).c_str(), test ? pct(r.test.acc).c_str() : "-",
                  r.retain_forget_auc, test ? fmt("%.4f", r.forget_test_auc).c_str() : "-",
                  test ? fmt("%.4f", r.forget_test_mink_auc).c_str() : "-",
                  r.has_reference ? fmt("%.2f", 100 * r.avg_gap).c_str() : "-",
                  r.has_reference ? fmt("%.3g", r.ks_p).c_str() : "-", seconds.c_str(), eval_seconds.c_str(), steps.c_str(),
                  stop.c_str());
    return b;
  }
  std::snprintf(b, sizeof b, "%-10s %8s %8s %8s %9.4f %9.4f %8s %8s %8s %6s  %s\n", name.c_str(), pct(r.forget.acc).c_str(),
                pct(r.retain.acc).c_str(), pct(r.test.acc).c_str(), r.retain_forget_auc, r.forget_test_auc,
                r.has_reference ? fmt("%.2f", 100 * r.avg_gap).c_str() : "-", seconds.c_str(), eval_seconds.c_str(),
                steps.c_str(), stop.c_str());
  return b;
}

std::string compare_table(const EvalReport& original, const EvalReport& retrained, const std::vector<MethodRun>& runs) {
  char head[320];
  if (original.text)
    std::snprintf(head, sizeof head, "%-10s %8s %8s %8s %9s %9s %9s %8s %9s %8s %8s %6s  %s\n", "method", "forget%",
                  "retain%", "test%", "AUC r-f", "AUC f-t", "MinK f-t", "avg gap", "KS p", "seconds", "eval s", "steps", "stop");
  else
    std::snprintf(head, sizeof head, "%-10s %8s %8s %8s %9s %9s %8s %8s %8s %6s  %s\n", "method", "forget%", "retain%",
                  "test%", "AUC r-f", "AUC f-t", "avg gap", "seconds", "eval s", "steps", "stop");
  std::string s = head;
  s += table_row("original", original, "-", "-", "-", "");
  s += table_row("retrained", retrained, "-", "-", "-", "");
  for (const MethodRun& m : runs) {
    const UnlearnResult& r = m.result;
    s += table_row(method_name(*m.method), r.evals.back().report, fmt("%.2f", r.seconds), fmt("%.2f", r.eval_seconds),
                   std::to_string(r.steps_done),
                   std::string(stop_reason_name(r.stop_reason)) + (r.steps_done == 0 ? " (no step applied: the original)" : ""));
  }
  s += "accuracies in %; AUC r-f: retain-vs-forget loss AUC, AUC f-t: forget-vs-test (0.5 = forget looks unseen);\n"
       "avg gap: mean |accuracy - retrained accuracy| over forget, retain and test (if any), in points; seconds: unlearning loop only\n";
  if (original.text)
    s += "text: accuracies are teacher-forced answer-token accuracies; MinK f-t: Min-K% (K = 10%) log-prob AUC forget-vs-test;\n"
         "KS p: two-sample KS test of the per-pair forget losses against the retrained model's (high = indistinguishable)\n";
  return s;
}

// ---- the plot (drawn by cli/plots.h) ---------------------------------------------------------------

struct PlotInfo {
  std::string data, split;
  int64_t steps = 0, eval_every = 0;
  double lr = 0, ratio = 0;
  int64_t batch = 0, forget_batch = 0;
  bool sampled = false;  // intermediate evaluations on a subsample
};

Svg trade_off_plot(const EvalReport& original, const EvalReport& retrained, const std::vector<MethodRun>& runs,
                   const PlotInfo& info) {
  auto point = [](const EvalReport& r) { return std::make_pair(100 * r.retain.acc, 100 * r.forget.acc); };
  TradeOffFigure f;
  f.data = info.data, f.split = info.split, f.steps = info.steps, f.eval_every = info.eval_every;
  f.batch = info.batch, f.forget_batch = info.forget_batch, f.lr = info.lr, f.ratio = info.ratio, f.sampled = info.sampled;
  f.original = point(original);
  f.retrained = point(retrained);
  for (const MethodRun& m : runs) {
    TradeOffMethod t;
    t.name = method_name(*m.method);
    if (m.result.stop_reason != StopReason::max_steps)
      t.name += " (" + std::string(stop_reason_name(m.result.stop_reason)) + " @" + std::to_string(m.result.steps_done) + ")";
    t.hamu = m.method->is_hamu();
    for (const EvalPoint& p : m.result.evals) t.path.push_back(point(p.report));
    f.methods.push_back(std::move(t));
  }
  return trade_off_svg(f);
}

// ---- JSON ----------------------------------------------------------------------------------------

Json run_json(const MethodRun& m) {
  const UnlearnResult& r = m.result;
  Json traj = Json::array();
  for (const EvalPoint& p : r.evals)
    traj.push_back(Json::object({{"step", Json(p.step)},
                                 {"forget_acc", Json(p.report.forget.acc)},
                                 {"retain_acc", Json(p.report.retain.acc)},
                                 {"test_acc", Json(p.report.test.acc)}}));
  return Json::object({{"method", Json(method_name(*m.method))},
                       {"after", eval_to_json(r.evals.back().report)},
                       {"seconds", Json(r.seconds)},
                       {"eval_seconds", Json(r.eval_seconds)},
                       {"steps_done", Json(r.steps_done)},
                       {"skipped_steps", Json(r.skipped)},
                       {"no_step_applied", Json(r.steps_done == 0)},
                       {"stop_reason", Json(stop_reason_name(r.stop_reason))},
                       {"collateral_warning", Json(r.collateral_warned)},
                       {"trajectory", traj}});
}

}  // namespace

int cmd_compare(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--model", "CKPT", "the original model (trained on retain + forget)", ""},
      {"--reference", "CKPT", "the retrained model (retain only): the target every method is judged against", ""},
      {"--data", "SPEC", "data set (default: the checkpoint's)", ""},
      {"--split", "SPEC", "the forget set: class=C, class=C,rho=X, random=X, indices=FILE (default: the checkpoint's)", ""},
      {"--methods", "LIST", "comma-separated: " + method_list(), ""},
      {"--json", "FILE", "every method's final evaluation and trajectory, the original and the retrained model", ""},
      {"--svg", "FILE", "trade-off plot: forget vs retain accuracy per method and evaluation step", ""},
      {"--save-dir", "DIR", "keep each method's unlearned model and per-step log DIR/<method>.csv, as hamu unlearn "
                            "--out/--log write them: DIR/<method>.safetensors for images, the model (or LoRA adapter) "
                            "directory DIR/<method> for text", ""},
  };
  for (Flag f : unlearn_option_flags(is_text_command(argc, argv))) {
    if (f.name == "--eval-every") {
      f.help = "evaluate (subsampled) every N steps for the plot; -1: steps/8; 0: before and after only";
      f.default_value = std::to_string(kAutoEvalEvery);
    }
    flags.push_back(f);
  }
  for (Flag f : text_context_flags()) flags.push_back(f);
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("compare", "--model CKPT --reference CKPT [--data SPEC] [--split SPEC] --methods a,b,... [--json FILE] [--svg FILE]",
            flags);
  args.add_help_section("methods", method_help());
  if (!args.parse(argc, argv)) return 0;

  // Everything is read and checked before anything runs or is written.
  const std::string model_path = args.required("--model");
  const std::string reference_path = args.required("--reference");
  const std::vector<const Method*> methods = parse_methods(args.required("--methods"));
  const std::string json_path = args.str_or("--json", ""), svg_path = args.str_or("--svg", "");
  if (!json_path.empty()) check_output_path("--json", json_path);
  if (!svg_path.empty()) check_output_path("--svg", svg_path);
  for (const auto& [flag, p] : {std::pair{"--json", json_path}, {"--svg", svg_path}})
    if (!p.empty() && (p == model_path || p == reference_path))
      throw InputError(std::string(flag) + ": refusing to overwrite the input checkpoint " + p);
  if (!json_path.empty() && json_path == svg_path) throw InputError("--json and --svg name the same file " + json_path);
  const std::string save_dir = args.str_or("--save-dir", "");
  if (!save_dir.empty()) check_output_dir("--save-dir", save_dir);
  const Device device = apply_common(args);
  UnlearnOptions opt = read_unlearn_options(args, device);
  if (opt.eval_every == kAutoEvalEvery) opt.eval_every = std::max<int64_t>(1, opt.steps / kPlotPoints);
  const uint64_t seed = uint64_t(args.integer("--seed"));
  for (const Method* m : methods) {  // option checks that need no data (e.g. --ratio) fail fast
    UnlearnOptions o = opt;
    o.method = m;
    validate_unlearn_options(o, 1, 1);
  }
  // The modality: images (hamu checkpoints) or text (causal LM directories); the rest is shared.
  struct Source {
    std::string describe, data, split;
    size_t forget_n = 0, retain_n = 0, test_n = 0;
    int64_t eval_samples = 0;
    EvalReport original, retrained;
    // One method from a fresh copy of the original: the evaluation hook is filled in here.
    std::function<UnlearnResult(const Method*, const UnlearnOptions&, UnlearnHooks&)> run;
  } src;
  std::optional<UnlearnContext> image_ctx;
  std::optional<TextContext> text_ctx;
  std::unique_ptr<models::LoadedModel> frozen;       // one frozen original for kl/scrub/npo, shared by the runs
  std::shared_ptr<models::CausalLM> frozen_lm;
  if (is_text_command(argc, argv)) {
    text_ctx.emplace(load_text_context(model_path, args, device, seed));
    TextContext& ctx = *text_ctx;
    src = {ctx.original.lm->config().describe(), ctx.run.spec.canonical, ctx.run.split.spec, ctx.run.forget.size(),
           ctx.run.retain.size(), ctx.run.test.size(), ctx.eval_samples, {}, {}, {}};
    src.original = evaluate_text_full(*ctx.original.lm, ctx, model_path, true);
    src.retrained = *ctx.reference_report;
    src.run = [&](const Method* m, const UnlearnOptions& o, UnlearnHooks& hooks) {
      if (m->needs_original() && !frozen_lm) frozen_lm = fresh_text_lm(ctx.original, device);  // base + original adapter
      std::shared_ptr<models::CausalLM> work = fresh_text_lm(ctx.original, device);
      const std::string name = method_name(*m);
      const EvalReport original = src.original;
      hooks.evaluate = [&, work, name, original](int64_t step, bool final) {
        if (step == 0 && !final) return original;
        return final ? evaluate_text_full(*work, ctx, name, true) : evaluate_text_sampled(*work, ctx, name);
      };
      std::unique_ptr<UnlearnTask> task = make_text_task(ctx.run.retain, ctx.run.forget, ctx.run.pad_id, o);
      UnlearnResult r = run_unlearning(*work, m->needs_original() ? frozen_lm.get() : nullptr, *task, o, hooks);
      // The same model directory as hamu unlearn --out, and like it none for a run that applied no step.
      if (unlearned_output_wanted("\nhamu compare: " + name, "--save-dir", save_dir.empty() ? "" : save_dir + "/" + name, r))
        save_unlearned_text_model(save_dir + "/" + name, "", *work, ctx, o, r, r.evals.back().report, seed, args, device);
      return r;
    };
  } else {
    image_ctx.emplace(load_unlearn_context(model_path, args.str_or("--data", ""), args.str_or("--split", ""), reference_path,
                                           device, seed, args.integer("--eval-batch"), args.integer("--eval-samples"),
                                           args.on("--force-reference")));
    UnlearnContext& ctx = *image_ctx;
    src = {ctx.original.spec.describe(), ctx.data.data.spec, ctx.data.split.spec, ctx.data.split.forget.size(),
           ctx.data.split.retain.size(), ctx.data.test.size(), ctx.eval_samples, {}, {}, {}};
    src.original = evaluate_full(*ctx.original.model, ctx, model_path);
    src.retrained = *ctx.reference_report;
    src.run = [&](const Method* m, const UnlearnOptions& o, UnlearnHooks& hooks) {
      if (m->needs_original() && !frozen) frozen = std::make_unique<models::LoadedModel>(fresh_copy(ctx));
      auto work = std::make_shared<models::LoadedModel>(fresh_copy(ctx));
      const std::string name = method_name(*m);
      const EvalReport original = src.original;
      hooks.evaluate = [&, work, name, original](int64_t step, bool final) {
        if (step == 0 && !final) return original;  // every run starts from the same, already evaluated model
        return final ? evaluate_full(*work->model, ctx, name) : evaluate_sampled(*work->model, ctx, name);
      };
      hooks.stop_probe = make_stop_probe(*work->model, ctx, o.stop.samples);  // each run probes its own model
      // --cuda-graph: this run's evaluations and probes replay their full batches too (unlearn/graph_eval.h);
      // the captures are of this run's model, so they end with the run, before the model does.
      EvalGraphs run_graphs;
      struct GraphsScope {
        UnlearnContext& c;
        ~GraphsScope() { c.eval_graphs = nullptr; }
      } graphs_scope{ctx};
      ctx.eval_graphs = o.graph ? &run_graphs : nullptr;
      UnlearnResult r = run_unlearning(*work->model, m->needs_original() ? frozen->model.get() : nullptr,
                                       ctx.data.data.train, ctx.data.split, ctx.norm, o, hooks);
      if (o.graph)
        std::fprintf(stderr, "hamu compare: %s: --cuda-graph: %lld of %lld steps replayed%s%s; evaluation %s\n",
                     name.c_str(), (long long)r.graph_replays, (long long)r.log.size(),
                     r.graph_fallback.empty() ? "" : " (not used: ", r.graph_fallback.empty() ? "" : (r.graph_fallback + ")").c_str(),
                     run_graphs.summary().c_str());
      // The same checkpoint as hamu unlearn --out, and like it none for a run that applied no step.
      if (unlearned_output_wanted("\nhamu compare: " + name, "--save-dir", save_dir.empty() ? "" : save_dir + "/" + name + ".safetensors", r))
        save_unlearned_checkpoint(save_dir + "/" + name + ".safetensors", *work, model_path, ctx, o, r,
                                  r.evals.back().report, seed, args, device);
      return r;
    };
  }
  for (const Method* m : methods) {
    UnlearnOptions o = opt;
    o.method = m;
    validate_unlearn_options(o, src.forget_n, src.retain_n);
  }

  std::fprintf(stderr, "hamu compare: %zu methods on %s, forget %zu / retain %zu (%s), %lld steps, lr %g, %s\n",
               methods.size(), src.describe.c_str(), src.forget_n, src.retain_n, src.split.c_str(), (long long)opt.steps,
               opt.params.lr, device.str().c_str());
  const EvalReport& original = src.original;
  EvalReport retrained = src.retrained;
  if (retrained.text) compare_text_to_reference(retrained, src.retrained);
  else compare_to_reference(retrained, src.retrained);  // gaps of 0 by definition, so the table reads uniformly
  retrained.model = reference_path;
  retrained.data = original.data;
  retrained.split = original.split;

  if (!save_dir.empty()) create_save_dir("--save-dir", save_dir);  // every input read and checked by now
  std::vector<MethodRun> runs;
  for (size_t i = 0; i < methods.size(); ++i) {
    const Method* m = methods[i];
    const char* name = method_name(*m);
    const bool progress = !Progress::disabled_by_env();  // --quiet: no per-method start and done lines
    if (progress) std::fprintf(stderr, "hamu compare: [%zu/%zu] %s: start\n", i + 1, methods.size(), name);
    UnlearnOptions o = opt;
    o.method = m;
    UnlearnHooks hooks;
    hooks.notice = [&](const std::string& msg) { std::fprintf(stderr, "\nhamu compare: %s: %s\n", name, msg.c_str()); };
    UnlearnLog log;  // --save-dir: the same per-step CSV as hamu unlearn --log
    if (!save_dir.empty()) log = UnlearnLog(save_dir + "/" + name + ".csv", "--save-dir");
    log.attach(hooks);
    MethodRun run{m, log.run([&] { return src.run(m, o, hooks); })};
    const EvalReport& after = run.result.evals.back().report;
    if (progress)
      std::fprintf(stderr,
                   "hamu compare: [%zu/%zu] %s: done, %lld steps in %.2f s (%s), evaluation %.2f s; forget %.2f%%, "
                   "retain %.2f%%%s\n",
                   i + 1, methods.size(), name, (long long)run.result.steps_done, run.result.seconds,
                   stop_reason_name(run.result.stop_reason), run.result.eval_seconds, 100 * after.forget.acc,
                   100 * after.retain.acc, after.test.n > 0 ? (", test " + pct(after.test.acc) + "%").c_str() : "");
    runs.push_back(std::move(run));
  }

  std::printf("hamu compare: %s, split %s, %lld steps, lr %g, ratio %g, batch %lld/%lld\n", src.data.c_str(),
              src.split.c_str(), (long long)opt.steps, opt.params.lr, opt.ratio, (long long)opt.batch,
              (long long)opt.forget_batch);
  std::printf("%s", compare_table(original, retrained, runs).c_str());

  if (!svg_path.empty()) {
    const size_t largest = std::max({src.forget_n, src.retain_n, src.test_n});
    PlotInfo info{src.data, src.split, opt.steps, opt.eval_every, opt.params.lr, opt.ratio,
                  opt.batch, opt.forget_batch, src.eval_samples > 0 && int64_t(largest) > src.eval_samples};
    trade_off_plot(original, retrained, runs, info).save(svg_path);
    std::printf("saved %s\n", svg_path.c_str());
  }
  if (!json_path.empty()) {
    Json list = Json::array();
    for (const MethodRun& r : runs) list.push_back(run_json(r));
    Json j = Json::object({{"data", Json(src.data)}, {"split", Json(src.split)}, {"steps", Json(opt.steps)}});
    j.set("options", Json::object({{"lr", Json(opt.params.lr)},
                                   {"ratio", Json(opt.ratio)},
                                   {"batch", Json(opt.batch)},
                                   {"forget_batch", Json(opt.forget_batch)},
                                   {"clip", Json(opt.params.clip)},
                                   {"optimizer", Json(optimizer_name(opt.optimizer))},
                                   {"eval_every", Json(opt.eval_every)},
                                   {"seed", Json(int64_t(seed))}}));
    j.set("methods", list);
    j.set("original", eval_to_json(original));
    j.set("retrained", eval_to_json(retrained));
    Json prov = provenance_json(args, device);
    if (image_ctx) {
      prov.set("data", data_identity_json(image_ctx->data.data));
      prov.set("parent", parent_json(model_path));
      prov.set("reference", parent_json(reference_path));
    } else {
      prov = text_provenance_json(args, device, *text_ctx);  // the parent is the adapter with LoRA, "base" its base
    }
    j.set("provenance", prov);
    save_json(json_path, j);
    std::printf("saved %s\n", json_path.c_str());
  }
  return 0;
}

}  // namespace hamu::cli
