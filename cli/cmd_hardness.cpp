// cli/cmd_hardness.cpp: `hamu hardness` — how hard is this forget set? Per-sample forget x retain
// gradient similarity (unlearn/hardness.h): kappa and the solver's thresholds, the blocks where
// forgetting conflicts most, the hardest forget samples with their most similar retain sample, a
// histogram of kappa_j and a plain-language verdict; --json and --svg for the details.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/hardness_report.h"
#include "cli/plots.h"
#include "cli/provenance.h"
#include "cli/text_setup.h"
#include "models/checkpoint.h"
#include "unlearn/hamu_config.h"
#include "unlearn/hardness.h"

namespace hamu::cli {
namespace {

const char* kAbout =
    "\nWhat it computes (HAMU.md §2): K[j,i] = <grad l(f_j), grad l(r_i)>, the inner product of the per-sample\n"
    "cross-entropy gradients of forget sample f_j and retain sample r_i, over the forget set and a retain sample.\n"
    "  kappa    = mean of K = <g_r, g_f> (mean gradients); > 0: descending the retain loss also lowers the forget\n"
    "             loss, so forgetting conflicts with keeping utility (hard); < 0: retain descent already raises it\n"
    "  kappa_j  = <grad l(f_j), g_r> = row mean of K; a forget sample is HARD when kappa_j > 0\n"
    "  verdict  = hard: expect collateral forgetting when kappa_l > kappa2_l in more than half of the blocks\n"
    "             (HAMU.md §3: every forgetting step there also raises the retain loss, the condition hamu\n"
    "             unlearn warns about); easy when kappa <= 0 and at most 10% of the forget samples are hard;\n"
    "             moderate otherwise\n"
    "  kappa1, kappa2, margins: the HAMU-Q solver's thresholds for these mean gradients at --ratio/--lr with\n"
    "             clipping to --clip (what hamu unlearn would see on these batches); kappa > kappa2 in a block\n"
    "             means collateral forgetting is unavoidable there (a block where B cannot be gained within R,\n"
    "             infeasible, is not counted as collateral)\n"
    "Most similar retain sample: the largest cosine K[j,i] / (||grad l(f_j)|| ||grad l(r_i)||).\n"
    "Memory: the retain sample's per-sample data is kept (ghost factors or materialised gradients per block);\n"
    "by default as many retain images as --memory-mb holds, at random (seeded).\n"
    "Language models: --model a Hugging Face or LoRA adapter directory scores QA pairs (see\n"
    "`hamu hardness --model DIR --help`).\n";

std::string class_name(const ImageDataset& ds, int32_t label) {
  if (label >= 0 && size_t(label) < ds.class_names.size()) return ds.class_names[size_t(label)];
  return std::to_string(label);
}

void print_samples(const HardnessReport& r, const ImageDataset& ds, int64_t top) {
  const std::vector<size_t> hard = hardest_first(r);
  std::printf("\nhardest forget samples (largest kappa_j = <grad l(f_j), g_r>):\n");
  std::printf("  %8s %-12s %11s %8s %8s   %-28s %11s %8s\n", "index", "label", "kappa_j", "cosine", "loss",
              "most similar retain (label)", "K", "cosine");
  for (size_t k = 0; k < hard.size() && int64_t(k) < top; ++k) {
    const SampleHardness& x = r.samples[hard[k]];
    const std::string sim = x.similar_index < 0 ? std::string("- (zero gradient)")
                                                : std::to_string(x.similar_index) + " (" + class_name(ds, x.similar_label) + ")";
    std::printf("  %8lld %-12s %11.3e %8.4f %8.4f   %-28s %11.3e %8.4f\n", (long long)x.index,
                class_name(ds, x.label).c_str(), x.kappa, x.cosine, x.loss, sim.c_str(), x.similar_k, x.similar_cosine);
  }
}

}  // namespace

int cmd_hardness(int argc, char** argv) {
  if (is_text_command(argc, argv)) return cmd_hardness_text(argc, argv);
  std::vector<Flag> flags = {
      {"--model", "CKPT", "the original model (trained on retain + forget)", ""},
      {"--data", "SPEC", "data set (default: the checkpoint's)", ""},
      {"--split", "SPEC", "the forget set: class=C, class=C,rho=X, random=X, indices=FILE (default: the checkpoint's)", ""},
  };
  for (Flag f : hardness_option_flags({})) flags.push_back(f);
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("hardness",
            "--model CKPT [--split SPEC] [--retain-samples N] [--memory-mb N] [--ratio X] [--lr X] [--json FILE] "
            "[--svg FILE]",
            flags);
  if (args.parse(argc, argv) == false) {
    std::fputs(kAbout, stdout);
    return 0;
  }
  // Everything is read and checked before any work or output.
  const std::string model_path = args.required("--model");
  const std::string json_path = args.str_or("--json", ""), svg_path = args.str_or("--svg", "");
  check_hardness_outputs(args, model_path);
  const Device device = apply_common(args);
  int64_t top = 0;
  HardnessOptions opt = hardness_options(args, &top);

  models::LoadedModel m = load_image_model("--model", model_path, device);
  const std::string data_spec = args.str_or("--data", m.meta_or("data", "fashion-mnist"));
  const std::string split_spec = args.str_or("--split", m.meta_or("split", ""));
  if (split_spec.empty() || split_spec == "none")
    throw InputError("--split: no forget set given and the checkpoint records none");
  DataAndSplit ds = load_data_split(data_spec, split_spec, opt.seed);
  check_model_fits_data(m, ds.data.train);
  const Normalizer norm = model_normalizer(m, ds.data.train);
  if (opt.forget_samples > int64_t(ds.split.forget.size()))
    throw InputError("--forget-samples " + std::to_string(opt.forget_samples) + ": the forget set " + ds.split.spec +
                     " has only " + std::to_string(ds.split.forget.size()) + " samples");
  if (opt.retain_samples > int64_t(ds.split.retain.size()))
    throw InputError("--retain-samples " + std::to_string(opt.retain_samples) + ": the retain set has only " +
                     std::to_string(ds.split.retain.size()) + " samples");
  std::fprintf(stderr, "hamu hardness: %s, forget %zu / retain %zu (%s), %s\n", m.spec.describe().c_str(),
               ds.split.forget.size(), ds.split.retain.size(), ds.split.spec.c_str(), device.str().c_str());

  HardnessReport r = compute_hardness(*m.model, ds.data.train, norm, ds.split.forget, ds.split.retain, opt);
  const std::string model_desc = m.spec.describe() + ", " + device.str() + ", " + fmt("%.1f s", r.seconds);
  print_hardness_overview(r, ds.split.spec, model_desc, opt, "of the same class");
  print_samples(r, ds.data.train, top);
  print_hardness_closing(r);
  Json class_names = Json::array();
  for (const std::string& n : ds.data.train.class_names) class_names.push_back(Json(n));
  Json report = hardness_report_json(
      r, ds.split.spec, model_path, opt,
      [&](const SampleHardness& x, Json& o) { o.set("class", Json(class_name(ds.data.train, x.label))); }, class_names);
  Json prov = provenance_json(args, device);
  prov.set("data", data_identity_json(ds.data));
  prov.set("parent", parent_json(model_path));
  report.set("provenance", prov);
  // Under mpirun every rank holds the whole report; rank 0 alone writes it.
  if (!json_path.empty() && is_output_rank()) save_json(json_path, report);
  // The figure is drawn from the report itself, so any saved --json redraws the same picture.
  if (!svg_path.empty() && is_output_rank()) hardness_svg(hardness_from_json(report)).save(svg_path);
  return 0;
}

}  // namespace hamu::cli
