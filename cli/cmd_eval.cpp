// cli/cmd_eval.cpp: `hamu eval` — accuracy, loss, entropy and membership AUCs on forget/retain/test.
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "models/checkpoint.h"
#include "unlearn/metrics.h"

namespace hamu::cli {

int cmd_eval(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--model", "CKPT", "the checkpoint to evaluate", ""},
      {"--data", "SPEC", "data set (default: the one the checkpoint was trained on)", ""},
      {"--split", "SPEC", "forget/retain split (default: the checkpoint's)", ""},
      {"--reference", "CKPT", "a retrained model: report accuracy gaps and forget KL against it", ""},
      {"--batch", "N", "evaluation batch size", "1000"},
      {"--json", "FILE", "write the evaluation as JSON", ""},
  };
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("eval", "--model CKPT [--data SPEC] [--split SPEC] [--reference CKPT] [--json FILE]", flags);
  if (!args.parse(argc, argv)) return 0;
  const std::string ckpt = args.required("--model");
  const std::string json_path = args.str_or("--json", "");
  if (!json_path.empty()) check_output_path("--json", json_path);
  const Device device = apply_common(args);
  const int64_t batch = args.integer("--batch");
  if (batch < 1) throw InputError("--batch: must be at least 1");
  models::LoadedModel m = models::load_model(ckpt, device);
  const std::string data_spec = args.str_or("--data", m.meta_or("data", "fashion-mnist"));
  std::string split_spec = args.str_or("--split", m.meta_or("split", "none"));
  DataAndSplit ds = load_data_split(data_spec, split_spec, uint64_t(args.integer("--seed")));
  check_model_fits_data(m, ds.data.train);
  const Normalizer norm = model_normalizer(m, ds.data.train);
  EvalOptions eo;
  eo.batch = batch;
  eo.device = device;
  eo.keep_probs = args.has("--reference");
  EvalReport report = evaluate_model(*m.model, ds.data, {&ds.split.forget, &ds.split.retain, &ds.test}, norm, eo);
  report.model = ckpt;
  report.data = ds.data.spec;
  report.split = ds.split.spec;
  EvalReport ref_report;
  if (args.has("--reference")) {
    models::LoadedModel ref = models::load_model(args.str("--reference"), device);
    check_model_fits_data(ref, ds.data.train);
    if (ref.spec.arch != m.spec.arch)
      throw InputError("--reference: " + ref.path + " is a " + ref.spec.arch + ", the model is a " + m.spec.arch);
    ref_report = evaluate_model(*ref.model, ds.data, {&ds.split.forget, &ds.split.retain, &ds.test},
                                model_normalizer(ref, ds.data.train), eo);
    compare_to_reference(report, ref_report);
  }
  std::printf("%s: %s on %s, split %s\n", ckpt.c_str(), m.spec.describe().c_str(), ds.data.spec.c_str(),
              ds.split.spec.c_str());
  if (args.has("--reference")) {
    std::printf("%s", eval_side_by_side({{"model", &report}, {"reference", &ref_report}}).c_str());
    std::printf("gap to reference: forget %.2f, retain %.2f, test %.2f points (avg %.2f); forget KL %.4f\n",
                100 * report.gap_forget, 100 * report.gap_retain, 100 * report.gap_test, 100 * report.avg_gap,
                report.forget_kl);
  } else {
    std::printf("%s", eval_table(report).c_str());
  }
  if (!json_path.empty()) save_json(json_path, eval_to_json(report));
  return 0;
}

}  // namespace hamu::cli
