// cli/cmd_unlearn.cpp: `hamu unlearn` — make a trained model forget a split, with a per-step log,
// before/after evaluation, and the plain-language hardness warning.
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <utility>

#include "cli/commands.h"
#include "cli/provenance.h"
#include "cli/resume.h"
#include "cli/text_setup.h"
#include "cli/unlearn_output.h"
#include "cli/unlearn_setup.h"
#include "engine/collectives.h"
#include "models/checkpoint.h"

namespace hamu::cli {
namespace {

// The --log CSV: one row per step and one per evaluation, both kinds and the header from one column
// table. A column's cell is empty in the row kind it does not apply to.
struct CsvColumn {
  const char* name;
  std::function<std::string(const StepLog&)> step;   // null: empty in step rows
  std::function<std::string(const EvalPoint&)> eval;  // null: empty in evaluation rows
};

std::string cell(const char* format, double v) {
  std::string out(size_t(std::snprintf(nullptr, 0, format, v)), '\0');
  std::snprintf(out.data(), out.size() + 1, format, v);
  return out;
}

// Cells of the step's solver report and of the evaluation's report, in the given printf format.
std::function<std::string(const StepLog&)> report_cell(const char* format, double (*get)(const HamuReport&)) {
  return [format, get](const StepLog& s) { return cell(format, get(s.report)); };
}
std::function<std::string(const StepLog&)> report_count(int32_t (*get)(const HamuReport&)) {
  return [get](const StepLog& s) { return std::to_string(get(s.report)); };
}
std::function<std::string(const EvalPoint&)> eval_cell(double (*get)(const EvalReport&)) {
  return [get](const EvalPoint& p) { return cell("%.6f", get(p.report)); };
}

const std::vector<CsvColumn>& csv_columns() {
  using R = HamuReport;
  using E = EvalReport;
  static const std::vector<CsvColumn> columns = {
      {"row", [](const StepLog&) { return std::string("step"); }, [](const EvalPoint&) { return std::string("eval"); }},
      {"step", [](const StepLog& s) { return std::to_string(s.step); }, [](const EvalPoint& p) { return std::to_string(p.step); }},
      {"seconds", [](const StepLog& s) { return cell("%.4f", s.seconds); }, [](const EvalPoint& p) { return cell("%.4f", p.seconds); }},
      {"retain_loss", [](const StepLog& s) { return cell("%.6g", s.retain_loss); },
       [](const EvalPoint& p) { return cell("%.6g", p.report.retain.loss); }},
      {"forget_loss", [](const StepLog& s) { return cell("%.6g", s.forget_loss); },
       [](const EvalPoint& p) { return cell("%.6g", p.report.forget.loss); }},
      {"kappa", report_cell("%.6g", [](const R& r) { return r.kappa; }), {}},
      {"kappa1", report_cell("%.6g", [](const R& r) { return r.kappa1; }), {}},
      {"kappa2", report_cell("%.6g", [](const R& r) { return r.kappa2; }), {}},
      {"retain_grad_norm", report_cell("%.6g", [](const R& r) { return r.retain_norm; }), {}},
      {"forget_grad_norm", report_cell("%.6g", [](const R& r) { return r.forget_norm; }), {}},
      {"angle", report_cell("%.3f", [](const R& r) { return r.angle_deg; }), {}},
      {"direct", report_count([](const R& r) { return r.n_direct; }), {}},
      {"rectified", report_count([](const R& r) { return r.n_rectified; }), {}},
      {"colinear", report_count([](const R& r) { return r.n_colinear; }), {}},
      {"infeasible", report_count([](const R& r) { return r.n_infeasible; }), {}},
      {"feasibility_margin", report_cell("%.6g", [](const R& r) { return r.feasibility_margin; }), {}},
      {"stopping_margin", report_cell("%.6g", [](const R& r) { return r.stopping_margin; }), {}},
      {"forget_acc", {}, eval_cell([](const E& r) { return r.forget.acc; })},
      {"retain_acc", {}, eval_cell([](const E& r) { return r.retain.acc; })},
      {"test_acc", {}, eval_cell([](const E& r) { return r.test.acc; })},
      {"retain_forget_auc", {}, eval_cell([](const E& r) { return r.retain_forget_auc; })},
      {"forget_test_auc", {}, eval_cell([](const E& r) { return r.forget_test_auc; })},
      {"paired", [](const StepLog& s) { return std::string(s.paired ? "1" : "0"); }, {}},
      // Reference-free stopping: the probe's measurements on the steps it ran, the reason on the last step.
      {"stop_auc", [](const StepLog& s) { return s.probed ? cell("%.6f", s.probe_auc) : std::string(); }, {}},
      {"stop_forget_loss", [](const StepLog& s) { return s.probed ? cell("%.6g", s.probe_forget_loss) : std::string(); }, {}},
      {"stop_heldout_loss", [](const StepLog& s) { return s.probed ? cell("%.6g", s.probe_heldout_loss) : std::string(); }, {}},
      {"stop_retain_loss", [](const StepLog& s) { return s.probed ? cell("%.6g", s.probe_retain_loss) : std::string(); }, {}},
      {"stop_reason", [](const StepLog& s) { return std::string(s.stop ? s.stop : ""); }, {}},
  };
  return columns;
}

std::string csv_header() {
  std::string line;
  for (const CsvColumn& c : csv_columns()) {
    if (!line.empty()) line += ',';
    line += c.name;
  }
  return line + "\n";
}

// One row of either kind: `which` picks the step or the evaluation cells.
template <class Row, class Cell> std::string csv_row(const Row& row, Cell CsvColumn::*which) {
  std::string line;
  const std::vector<CsvColumn>& columns = csv_columns();
  for (size_t i = 0; i < columns.size(); ++i) {
    if (i > 0) line += ',';
    if (columns[i].*which) line += (columns[i].*which)(row);
  }
  return line + "\n";
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

std::string unlearn_csv_header() { return csv_header(); }
std::string unlearn_csv_step_row(const StepLog& s) { return csv_row(s, &CsvColumn::step); }
std::string unlearn_csv_eval_row(const EvalPoint& p) { return csv_row(p, &CsvColumn::eval); }

int cmd_unlearn(int argc, char** argv) {
  if (is_text_command(argc, argv)) return cmd_unlearn_text(argc, argv);
  std::vector<Flag> flags = {
      {"--model", "CKPT", "the original model (trained on retain + forget)", ""},
      {"--data", "SPEC", "data set (default: the checkpoint's)", ""},
      {"--split", "SPEC", "the forget set: class=C, class=C,rho=X, random=X, indices=FILE (default: the checkpoint's)", ""},
      {"--method", "M", method_list(), "hamu-q"},
      {"--reference", "CKPT", "the retrained model: report gaps and forget KL against it", ""},
      {"--out", "CKPT", "write the unlearned model here", ""},
      {"--log", "CSV", "one row per step (and per evaluation)", ""},
      {"--json", "FILE", "summary with the before and after evaluations", ""},
  };
  for (Flag f : unlearn_option_flags()) flags.push_back(f);
  for (Flag f : resume_flags("unlearning steps")) flags.push_back(f);
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("unlearn", "--model CKPT [--split SPEC] [--method M] [--reference CKPT] [--out CKPT] [--log CSV] [--json FILE]",
            flags);
  args.add_help_section("methods", method_help());
  args.add_help_section("language models", {{"--model DIR", "a Hugging Face or LoRA adapter directory unlearns QA pairs "
                                                            "(hamu unlearn --model DIR --help: its flags and defaults)"}});
  if (!args.parse(argc, argv)) return 0;
  // Everything is read and checked before anything is written.
  const std::string model_path = args.required("--model");
  const std::string out_path = args.str_or("--out", ""), log_path = args.str_or("--log", ""),
                    json_path = args.str_or("--json", "");
  if (!out_path.empty()) check_output_path("--out", out_path);
  if (!log_path.empty()) check_output_path("--log", log_path, OutputKind::streamed);
  if (!json_path.empty()) check_output_path("--json", json_path);
  for (const auto& [flag, p] : {std::pair{"--out", out_path}, {"--log", log_path}, {"--json", json_path}})
    if (!p.empty() && (p == model_path || p == args.str_or("--reference", "")))
      throw InputError(std::string(flag) + ": refusing to overwrite the input checkpoint " + p);
  const Device device = apply_common(args);
  UnlearnOptions opt = read_unlearn_options(args, device);
  opt.method = &parse_method(args.str("--method"));
  const uint64_t seed = uint64_t(args.integer("--seed"));
  UnlearnContext ctx = load_unlearn_context(model_path, args.str_or("--data", ""), args.str_or("--split", ""),
                                            args.str_or("--reference", ""), device, seed, args.integer("--eval-batch"),
                                            args.integer("--eval-samples"), args.on("--force-reference"));
  validate_unlearn_options(opt, ctx.data.split.forget.size(), ctx.data.split.retain.size());
  EvalGraphs eval_graphs;  // --cuda-graph graphs the evaluations too, whatever the steps do
  if (opt.graph) ctx.eval_graphs = &eval_graphs;
  // A resumed run must see the options and inputs it started with (checked before any work).
  const ResumableRun run(args, "unlearn", out_path, [&] {
    Json id = Json::object({{"data", Json(dataset_hash(ctx.data.data))}, {"--model", parent_json(model_path)}});
    if (ctx.reference) id.set("--reference", parent_json(ctx.reference->path));
    return id;
  });

  models::LoadedModel work = fresh_copy(ctx);
  std::unique_ptr<models::LoadedModel> original;
  if (opt.method->needs_original()) original = std::make_unique<models::LoadedModel>(fresh_copy(ctx));

  UnlearnLog log;
  if (is_output_rank()) log = open_unlearn_log(log_path, run);  // under mpirun rank 0 alone writes
  std::fprintf(stderr, "hamu unlearn: %s on %s, forget %zu / retain %zu (%s), %lld steps, lr %g%s, %s\n",
               method_name(*opt.method), ctx.original.spec.describe().c_str(), ctx.data.split.forget.size(),
               ctx.data.split.retain.size(), ctx.data.split.spec.c_str(), (long long)opt.steps, opt.params.lr,
               opt.method->is_hamu() ? (", ratio " + fmt("%g", opt.ratio)).c_str() : "", device.str().c_str());
  UnlearnHooks hooks;
  attach_resumable(hooks, run, log);
  hooks.evaluate = [&](int64_t step, bool final) {
    return (step == 0 || final) ? evaluate_full(*work.model, ctx, "unlearned")
                                : evaluate_sampled(*work.model, ctx, "unlearned");
  };
  log.attach(hooks);
  hooks.notice = [](const std::string& msg) { std::fprintf(stderr, "\nhamu unlearn: %s\n", msg.c_str()); };
  hooks.stop_probe = make_stop_probe(*work.model, ctx, opt.stop.samples);
  UnlearnResult res = log.run([&] {
    return run_unlearning(*work.model, original ? original->model.get() : nullptr, ctx.data.data.train, ctx.data.split,
                          ctx.norm, opt, hooks);
  });
  EvalReport before = res.evals.front().report;
  EvalReport after = res.evals.back().report;
  before.model = model_path;
  after.model = out_path.empty() ? "unlearned" : out_path;

  if (!res.paired_fallback.empty() && opt.paired)
    std::fprintf(stderr, "hamu unlearn: gradients from two passes (%s)\n", res.paired_fallback.c_str());
  if (opt.graph)
    std::fprintf(stderr, "hamu unlearn: --cuda-graph: %lld of %lld steps replayed from %lld capture(s)%s%s\n",
                 (long long)res.graph_replays, (long long)res.log.size(), (long long)res.graph_captures,
                 res.graph_fallback.empty() ? "" : "; not used: ", res.graph_fallback.c_str());
  if (opt.graph) std::fprintf(stderr, "hamu unlearn: --cuda-graph: evaluation %s\n", eval_graphs.summary().c_str());
  std::printf("%s: %lld steps in %.1f s (stopped: %s), evaluation %.1f s\n", method_name(*opt.method),
              (long long)res.steps_done, res.seconds, stop_reason_name(res.stop_reason), res.eval_seconds);
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
  print_stop_reason(res, opt);

  // A run that applied no step left the original as it was: no checkpoint may claim it is unlearned.
  const bool no_step = res.steps_done == 0;
  if (unlearned_output_wanted("hamu unlearn", "--out", out_path, res) && is_output_rank()) {
    save_unlearned_checkpoint(out_path, work, model_path, ctx, opt, res, after, seed, args, device);
    std::printf("saved %s\n", out_path.c_str());
  }
  if (!json_path.empty() && is_output_rank()) {
    Json j = unlearn_summary_json(opt, res, seed);
    if (opt.method->is_hamu()) j.set("branches", step_summary_json(res));
    if (opt.graph) j.set("cuda_graph_eval", eval_graphs_json(eval_graphs));
    j.set("before", eval_to_json(before));
    j.set("after", eval_to_json(after));
    Json prov = provenance_json(args, device);
    prov.set("data", data_identity_json(ctx.data.data));
    prov.set("parent", parent_json(model_path));
    if (ctx.reference) prov.set("reference", parent_json(ctx.reference->path));
    j.set("provenance", prov);
    save_json(json_path, j);
  }
  if (is_output_rank()) run.finish();
  return no_step && !out_path.empty() ? 1 : 0;
}

}  // namespace hamu::cli
