// cli/cmd_unlearn.cpp: `hamu unlearn` — make a trained model forget a split, with a per-step log,
// before/after evaluation, and the plain-language hardness warning.
#include <cstdio>
#include <fstream>
#include <memory>

#include "cli/commands.h"
#include "cli/unlearn_setup.h"
#include "models/checkpoint.h"

namespace hamu::cli {
namespace {

const char* kCsvHeader =
    "row,step,seconds,retain_loss,forget_loss,kappa,kappa1,kappa2,retain_grad_norm,forget_grad_norm,angle,direct,"
    "rectified,colinear,infeasible,feasibility_margin,stopping_margin,forget_acc,retain_acc,test_acc,"
    "retain_forget_auc,forget_test_auc,paired\n";

std::string csv_step(const StepLog& s) {
  const kernels::HamuReport& r = s.report;
  char b[512];
  std::snprintf(b, sizeof b, "step,%lld,%.4f,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.3f,%d,%d,%d,%d,%.6g,%.6g,,,,,,%d\n",
                (long long)s.step, s.seconds, s.retain_loss, s.forget_loss, r.kappa, r.kappa1, r.kappa2, r.retain_norm,
                r.forget_norm, r.angle_deg, r.n_direct, r.n_rectified, r.n_colinear, r.n_infeasible,
                r.feasibility_margin, r.stopping_margin, s.paired ? 1 : 0);
  return b;
}

std::string csv_eval(const EvalPoint& p) {
  const EvalReport& r = p.report;
  char b[512];
  std::snprintf(b, sizeof b, "eval,%lld,%.4f,%.6g,%.6g,,,,,,,,,,,,,%.6f,%.6f,%.6f,%.6f,%.6f,\n", (long long)p.step,
                p.seconds, r.retain.loss, r.forget.loss, r.forget.acc, r.retain.acc, r.test.acc, r.retain_forget_auc,
                r.forget_test_auc);
  return b;
}

Json step_summary_json(const UnlearnResult& res) {
  int64_t direct = 0, rectified = 0, colinear = 0, infeasible = 0;
  for (const StepLog& s : res.log) {
    direct += s.report.n_direct;
    rectified += s.report.n_rectified;
    colinear += s.report.n_colinear;
    infeasible += s.report.n_infeasible;
  }
  Json j = Json::object({{"direct", Json(direct)}, {"rectified", Json(rectified)}, {"colinear", Json(colinear)},
                         {"infeasible", Json(infeasible)}});
  return j;
}

}  // namespace

int cmd_unlearn(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--model", "CKPT", "the original model (trained on retain + forget)", ""},
      {"--data", "SPEC", "data set (default: the checkpoint's)", ""},
      {"--split", "SPEC", "the forget set: class=C, class=C,rho=X, random=X, indices=FILE (default: the checkpoint's)", ""},
      {"--method", "M", "hamu-q, hamu-u, ft, ga, gdiff, kl, scrub, npo, gru, pcgrad", "hamu-q"},
      {"--reference", "CKPT", "the retrained model: report gaps and forget KL against it", ""},
      {"--out", "CKPT", "write the unlearned model here", ""},
      {"--log", "CSV", "one row per step (and per evaluation)", ""},
      {"--json", "FILE", "summary with the before and after evaluations", ""},
  };
  for (Flag f : unlearn_option_flags()) flags.push_back(f);
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("unlearn", "--model CKPT [--split SPEC] --method M [--reference CKPT] [--out CKPT] [--log CSV] [--json FILE]",
            flags);
  if (!args.parse(argc, argv)) return 0;
  // Everything is read and checked before anything is written.
  const std::string model_path = args.required("--model");
  const std::string out_path = args.str_or("--out", ""), log_path = args.str_or("--log", ""),
                    json_path = args.str_or("--json", "");
  if (!out_path.empty()) check_output_path("--out", out_path);
  if (!log_path.empty()) check_output_path("--log", log_path);
  if (!json_path.empty()) check_output_path("--json", json_path);
  for (const std::string& p : {out_path, log_path, json_path})
    if (!p.empty() && (p == model_path || p == args.str_or("--reference", "")))
      throw InputError("refusing to overwrite the input checkpoint " + p);
  const Device device = apply_common(args);
  UnlearnOptions opt = read_unlearn_options(args, device);
  opt.method = parse_method(args.str("--method"));
  const uint64_t seed = uint64_t(args.integer("--seed"));
  UnlearnContext ctx = load_unlearn_context(model_path, args.str_or("--data", ""), args.str_or("--split", ""),
                                            args.str_or("--reference", ""), device, seed, args.integer("--eval-batch"),
                                            args.integer("--eval-samples"));
  validate_unlearn_options(opt, ctx.data.split.forget.size(), ctx.data.split.retain.size());

  models::LoadedModel work = fresh_copy(ctx);
  std::unique_ptr<models::LoadedModel> original;
  if (needs_original(opt.method)) original = std::make_unique<models::LoadedModel>(fresh_copy(ctx));

  std::fprintf(stderr, "hamu unlearn: %s on %s, forget %zu / retain %zu (%s), %lld steps, lr %g%s, %s\n",
               method_name(opt.method), ctx.original.spec.describe().c_str(), ctx.data.split.forget.size(),
               ctx.data.split.retain.size(), ctx.data.split.spec.c_str(), (long long)opt.steps, opt.params.lr,
               is_hamu(opt.method) ? (", ratio " + fmt("%g", opt.ratio)).c_str() : "", device.str().c_str());

  std::ofstream csv;
  if (!log_path.empty()) {
    csv.open(log_path, std::ios::trunc);
    if (!csv) throw InputError("--log: cannot write " + log_path);
    csv << kCsvHeader;
  }
  UnlearnHooks hooks;
  hooks.evaluate = [&](int64_t step, bool final) {
    return (step == 0 || final) ? evaluate_full(*work.model, ctx, "unlearned")
                                : evaluate_sampled(*work.model, ctx, "unlearned");
  };
  hooks.on_step = [&](const StepLog& s) {
    if (csv.is_open()) csv << csv_step(s) << std::flush;
  };
  hooks.on_eval = [&](const EvalPoint& p) {
    if (csv.is_open()) csv << csv_eval(p) << std::flush;
  };
  hooks.notice = [](const std::string& msg) { std::fprintf(stderr, "\nhamu unlearn: %s\n", msg.c_str()); };
  UnlearnResult res =
      run_unlearning(*work.model, original ? original->model.get() : nullptr, ctx.data.data.train, ctx.data.split,
                     ctx.norm, opt, hooks);
  EvalReport before = res.evals.front().report;
  EvalReport after = res.evals.back().report;
  before.model = model_path;
  after.model = out_path.empty() ? "unlearned" : out_path;

  if (!res.paired_fallback.empty() && opt.paired)
    std::fprintf(stderr, "hamu unlearn: gradients from two passes (%s)\n", res.paired_fallback.c_str());
  std::printf("%s: %lld steps in %.1f s (stopped: %s), evaluation %.1f s\n", method_name(opt.method),
              (long long)res.steps_done, res.seconds, res.stop_reason.c_str(), res.eval_seconds);
  std::vector<std::pair<std::string, const EvalReport*>> cols = {{"before", &before}, {"after", &after}};
  EvalReport ref_copy;
  if (ctx.reference_report) {
    ref_copy = *ctx.reference_report;
    cols.push_back({"retrained", &ref_copy});
  }
  std::printf("%s", eval_side_by_side(cols).c_str());
  if (after.has_reference)
    std::printf("gap to retrained: forget %.2f, retain %.2f, test %.2f points (avg %.2f); forget KL %.4f\n",
                100 * after.gap_forget, 100 * after.gap_retain, 100 * after.gap_test, 100 * after.avg_gap, after.forget_kl);
  if (res.stop_reason == "infeasible")
    std::printf("stopped: the forget gain B = %g per step is no longer reachable within the step radius "
                "(retain and forget gradients too aligned or too small); lower --ratio or raise --lr\n",
                opt.ratio * opt.params.lr);
  else if (res.stop_reason == "criterion")
    std::printf("stopped: no retain-neutral forget progress of size B is left (stopping criterion)\n");
  else if (res.stop_reason == "nan")
    std::printf("stopped: %lld consecutive steps had non-finite losses or gradients\n", (long long)opt.max_nan_steps);

  if (!out_path.empty()) {
    std::map<std::string, std::string> facts = work.metadata;
    facts["kind"] = "unlearned";
    facts["unlearn_method"] = method_name(opt.method);
    facts["unlearn_steps"] = std::to_string(res.steps_done);
    facts["unlearn_lr"] = fmt("%g", opt.params.lr);
    facts["unlearn_ratio"] = fmt("%g", opt.ratio);
    facts["unlearn_stop_reason"] = res.stop_reason;
    facts["split"] = ctx.data.split.spec;
    facts["metrics"] = eval_to_json(after)["splits"].dump();
    models::save_model(out_path, *work.model, work.spec, facts);
    std::printf("saved %s\n", out_path.c_str());
  }
  if (!json_path.empty()) {
    Json j = Json::object({{"method", Json(method_name(opt.method))},
                           {"steps", Json(res.steps_done)},
                           {"stop_reason", Json(res.stop_reason)},
                           {"seconds", Json(res.seconds)},
                           {"eval_seconds", Json(res.eval_seconds)},
                           {"skipped_steps", Json(res.skipped)},
                           {"collateral_warning", Json(res.collateral_warned)},
                           {"paired_gradients", Json(res.paired_fallback.empty())}});
    j.set("options", Json::object({{"lr", Json(opt.params.lr)},
                                   {"ratio", Json(opt.ratio)},
                                   {"batch", Json(opt.batch)},
                                   {"forget_batch", Json(opt.forget_batch)},
                                   {"max_steps", Json(opt.steps)},
                                   {"clip", Json(opt.params.clip)},
                                   {"optimizer", Json(opt.optimizer)},
                                   {"seed", Json(int64_t(seed))}}));
    if (is_hamu(opt.method)) j.set("branches", step_summary_json(res));
    j.set("before", eval_to_json(before));
    j.set("after", eval_to_json(after));
    save_json(json_path, j);
  }
  return 0;
}

}  // namespace hamu::cli
