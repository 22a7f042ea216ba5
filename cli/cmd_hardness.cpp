// cli/cmd_hardness.cpp: `hamu hardness` — how hard is this forget set? Per-sample forget x retain
// gradient similarity (unlearn/hardness.h): kappa and the solver's thresholds, the blocks where
// forgetting conflicts most, the hardest forget samples with their most similar retain sample, a
// histogram of kappa_j and a plain-language verdict; --json and --svg for the details.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "cli/commands.h"
#include "cli/provenance.h"
#include "cli/common.h"
#include "cli/plots.h"
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
    "             means collateral forgetting is unavoidable there\n"
    "Most similar retain sample: the largest cosine K[j,i] / (||grad l(f_j)|| ||grad l(r_i)||).\n"
    "Memory: the retain sample's per-sample data is kept (ghost factors or materialised gradients per block);\n"
    "by default as many retain images as --memory-mb holds, at random (seeded).\n";

std::string class_name(const ImageDataset& ds, int32_t label) {
  if (label >= 0 && size_t(label) < ds.class_names.size()) return ds.class_names[size_t(label)];
  return std::to_string(label);
}

void print_report(const HardnessReport& r, const ImageDataset& ds, const std::string& split, const std::string& model,
                  const HardnessOptions& opt, int64_t top) {
  const HamuReport& s = r.solver;
  std::printf("hardness of %s: %lld forget samples against %lld retain samples (%s)\n", split.c_str(),
              (long long)r.n_forget, (long long)r.n_retain, model.c_str());
  std::printf("  kappa = <g_r, g_f> = mean K = %.4g   (cosine %.4f, |g_r| %.4g, |g_f| %.4g)\n", r.kappa, r.cosine,
              r.retain_norm, r.forget_norm);
  std::printf("  as hamu unlearn sees it (clip %g, ratio %g, lr %g, layer scope): kappa %.4g, kappa1 %.4g, kappa2 %.4g\n",
              opt.clip, opt.ratio, opt.lr, s.kappa, s.kappa1, s.kappa2);
  std::printf("  feasibility margin %.4g (%s), stopping margin %.4g (%s), collateral unavoidable in %d of %d blocks\n",
              s.feasibility_margin, s.feasibility_margin >= 0 ? "feasible" : "INFEASIBLE", s.stopping_margin,
              s.stopping_margin >= 0 ? "forgetting can go on" : "criterion met", s.n_collateral, s.n_blocks);
  std::printf("  hard samples (kappa_j > 0): %.1f%%   mean cosine(grad l(f_j), g_r) %.4f   row-form check %.1e\n",
              100.0 * r.share_hard, r.mean_sample_cosine, r.row_form_check);
  std::printf("  most similar retain sample of the same class: %.1f%% of forget samples (mean cosine %.3f)\n",
              100.0 * r.share_same_class, r.mean_similar_cosine);

  std::vector<size_t> order(r.blocks.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return r.blocks[a].kappa > r.blocks[b].kappa; });
  std::printf("\nblocks where forgetting conflicts most (kappa_l = <g_r, g_f> of the block, largest first):\n");
  std::printf("  %-28s %-18s %-12s %5s %11s %8s %10s %10s %s\n", "block", "kind", "path", "T", "kappa_l", "cos",
              "|g_r|", "|g_f|", "collateral");
  for (size_t k = 0; k < order.size() && k < 12; ++k) {
    const BlockHardness& b = r.blocks[order[k]];
    std::printf("  %-28s %-18s %-12s %5lld %11.3e %8.4f %10.3e %10.3e %s\n", b.name.c_str(), b.kind.c_str(),
                b.path.c_str(), (long long)b.positions, b.kappa, b.cosine, b.retain_norm, b.forget_norm,
                b.collateral ? "yes" : "");
  }
  if (order.size() > 12) std::printf("  ... %zu more in --json\n", order.size() - 12);

  std::vector<size_t> hard(r.samples.size());
  std::iota(hard.begin(), hard.end(), 0);
  std::sort(hard.begin(), hard.end(), [&](size_t a, size_t b) { return r.samples[a].kappa > r.samples[b].kappa; });
  std::printf("\nhardest forget samples (largest kappa_j = <grad l(f_j), g_r>):\n");
  std::printf("  %8s %-12s %11s %8s %8s   %-28s %11s %8s\n", "index", "label", "kappa_j", "cosine", "loss",
              "most similar retain (label)", "K", "cosine");
  for (size_t k = 0; k < hard.size() && int64_t(k) < top; ++k) {
    const SampleHardness& x = r.samples[hard[k]];
    const std::string sim = std::to_string(x.similar_index) + " (" + class_name(ds, x.similar_label) + ")";
    std::printf("  %8lld %-12s %11.3e %8.4f %8.4f   %-28s %11.3e %8.4f\n", (long long)x.index,
                class_name(ds, x.label).c_str(), x.kappa, x.cosine, x.loss, sim.c_str(), x.similar_k, x.similar_cosine);
  }

  std::vector<double> kap;
  for (const SampleHardness& x : r.samples) kap.push_back(x.kappa);
  const KappaHistogram h = kappa_histogram(kap, 16);
  const int64_t peak = std::max<int64_t>(1, *std::max_element(h.counts.begin(), h.counts.end()));
  std::printf("\nhistogram of kappa_j (%lld samples; edge bins include %lld below / %lld above the range):\n",
              (long long)kap.size(), (long long)h.below, (long long)h.above);
  for (size_t b = 0; b < h.counts.size(); ++b) {
    const double a = h.lo + h.width * double(b), e = a + h.width;
    const int bar = int(std::lround(40.0 * double(h.counts[b]) / double(peak)));
    std::printf("  [%10.3e, %10.3e) %s%s %lld\n", a, e, std::string(size_t(bar), '#').c_str(),
                std::fabs(a) < 1e-9 * h.width ? " <- 0: hard from here" : "", (long long)h.counts[b]);
  }
  for (const std::string& n : r.notices) std::printf("note: %s\n", n.c_str());
  std::printf("\nverdict: %s\n  %s\n", r.verdict.c_str(), r.verdict_detail.c_str());
}

Json report_json(const HardnessReport& r, const ImageDataset& ds, const std::string& split, const std::string& model,
                 const HardnessOptions& opt) {
  const HamuReport& s = r.solver;
  Json blocks = Json::array();
  for (const BlockHardness& b : r.blocks)
    blocks.push_back(Json::object({{"name", Json(b.name)},
                                   {"kind", Json(b.kind)},
                                   {"path", Json(b.path)},
                                   {"numel", Json(b.numel)},
                                   {"positions", Json(b.positions)},
                                   {"kappa", Json(b.kappa)},
                                   {"cosine", Json(b.cosine)},
                                   {"retain_norm", Json(b.retain_norm)},
                                   {"forget_norm", Json(b.forget_norm)},
                                   {"kappa1", Json(b.kappa1)},
                                   {"kappa2", Json(b.kappa2)},
                                   {"collateral", Json(b.collateral)},
                                   {"ghost_pair_flops", Json(b.ghost_pair_flops)},
                                   {"materialise_pair_flops", Json(b.mat_pair_flops)}}));
  Json samples = Json::array();
  for (const SampleHardness& x : r.samples)
    samples.push_back(Json::object({{"index", Json(x.index)},
                                    {"label", Json(x.label)},
                                    {"class", Json(class_name(ds, x.label))},
                                    {"kappa", Json(x.kappa)},
                                    {"cosine", Json(x.cosine)},
                                    {"norm", Json(x.norm)},
                                    {"loss", Json(x.loss)},
                                    {"similar_index", Json(x.similar_index)},
                                    {"similar_label", Json(x.similar_label)},
                                    {"similar_k", Json(x.similar_k)},
                                    {"similar_cosine", Json(x.similar_cosine)}}));
  Json heat = Json::object({{"forget_index", Json::array()}, {"retain_index", Json(r.heat_cols)},
                            {"retain_label", Json(std::vector<int64_t>(r.heat_col_labels.begin(), r.heat_col_labels.end()))},
                            {"retain_norm", Json(r.heat_col_norms)},
                            {"k", Json::array()}});
  for (int64_t row : r.heat_rows) heat["forget_index"].push_back(Json(r.samples[size_t(row)].index));
  for (const auto& row : r.heat) heat["k"].push_back(Json(row));
  Json notices = Json::array();
  for (const std::string& n : r.notices) notices.push_back(Json(n));
  Json class_names = Json::array();
  for (const std::string& n : ds.class_names) class_names.push_back(Json(n));
  return Json::object({{"model", Json(model)},
                       {"split", Json(split)},
                       {"n_forget", Json(r.n_forget)},
                       {"n_retain", Json(r.n_retain)},
                       {"retain_total", Json(r.retain_total)},
                       {"kappa", Json(r.kappa)},
                       {"kappa1", Json(s.kappa1)},
                       {"kappa2", Json(s.kappa2)},
                       {"kappa_clipped", Json(s.kappa)},
                       {"cosine", Json(r.cosine)},
                       {"retain_grad_norm", Json(r.retain_norm)},
                       {"forget_grad_norm", Json(r.forget_norm)},
                       {"feasibility_margin", Json(s.feasibility_margin)},
                       {"stopping_margin", Json(s.stopping_margin)},
                       {"collateral_blocks", Json(s.n_collateral)},
                       {"share_hard", Json(r.share_hard)},
                       {"mean_sample_cosine", Json(r.mean_sample_cosine)},
                       {"share_same_class", Json(r.share_same_class)},
                       {"mean_similar_cosine", Json(r.mean_similar_cosine)},
                       {"row_form_check", Json(r.row_form_check)},
                       {"verdict", Json(r.verdict)},
                       {"verdict_detail", Json(r.verdict_detail)},
                       {"options", Json::object({{"ratio", Json(opt.ratio)},
                                                 {"lr", Json(opt.lr)},
                                                 {"clip", Json(opt.clip)},
                                                 {"memory_mb", Json(double(opt.memory_bytes) / (1 << 20))},
                                                 {"seed", Json(int64_t(opt.seed))}})},
                       {"seconds", Json(r.seconds)},
                       {"notices", notices},
                       {"class_names", class_names},
                       {"blocks", blocks},
                       {"samples", samples},
                       {"heatmap", heat}});
}

}  // namespace

int cmd_hardness(int argc, char** argv) {
  std::vector<Flag> flags = {
      {"--model", "CKPT", "the original model (trained on retain + forget)", ""},
      {"--data", "SPEC", "data set (default: the checkpoint's)", ""},
      {"--split", "SPEC", "the forget set: class=C, class=C,rho=X, random=X, indices=FILE (default: the checkpoint's)", ""},
      {"--retain-samples", "N", "retain images to compare against (0: all that --memory-mb holds)", "0"},
      {"--forget-samples", "N", "forget images to score (0: the whole forget set)", "0"},
      {"--memory-mb", "N", "budget for the similarity buffers (retain-side per-sample data and tiles)", "512"},
      {"--batch", "N", "samples per capture forward/backward", "128"},
      {"--ratio", "X", "HAMU constraint ratio for kappa1/kappa2 and the margins", "0.1"},
      {"--lr", "X", "learning rate (radius) for kappa1/kappa2 and the margins", "0.01"},
      {"--clip", "X", "clip the mean gradients to this norm before the solver (as hamu unlearn; 0 = off)", "1"},
      {"--path", "P", "per-block similarity path: auto (cost model), ghost or materialise", "auto"},
      {"--top", "K", "hardest forget samples to list", "10"},
      {"--json", "FILE", "everything: kappa, kappa1, kappa2, margins, blocks, per-sample scores, heat map", ""},
      {"--svg", "FILE", "histogram of kappa_j and a heat map of K over a sample", ""},
  };
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
  if (!json_path.empty()) check_output_path("--json", json_path);
  if (!svg_path.empty()) check_output_path("--svg", svg_path);
  for (const std::string& p : {json_path, svg_path})
    if (!p.empty() && p == model_path) throw InputError("refusing to overwrite the input checkpoint " + p);
  if (!json_path.empty() && json_path == svg_path) throw InputError("--json and --svg name the same file");
  const Device device = apply_common(args);
  HardnessOptions opt;
  opt.retain_samples = args.integer("--retain-samples");
  opt.forget_samples = args.integer("--forget-samples");
  const int64_t mem_mb = args.integer("--memory-mb");
  if (mem_mb < 1 || mem_mb > (int64_t(1) << 24)) throw InputError("--memory-mb: must be between 1 and 16777216");
  opt.memory_bytes = mem_mb << 20;
  opt.chunk = args.integer("--batch");
  if (opt.chunk < 1 || opt.chunk > 100000) throw InputError("--batch: must be between 1 and 100000");
  opt.ratio = args.number("--ratio");
  opt.lr = args.number("--lr");
  opt.clip = args.number("--clip");
  if (opt.clip < 0) throw InputError("--clip: must be >= 0");
  opt.path = parse_ghost_path(args.str("--path"));
  const int64_t top = args.integer("--top");
  if (top < 0) throw InputError("--top: must be >= 0");
  opt.seed = uint64_t(args.integer("--seed"));
  opt.progress = true;

  models::LoadedModel m = models::load_model(model_path, device);
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
  print_report(r, ds.data.train, ds.split.spec, model_desc, opt, top);
  Json report = report_json(r, ds.data.train, ds.split.spec, model_path, opt);
  Json prov = provenance_json(args, device);
  prov.set("data", data_identity_json(ds.data));
  prov.set("parent", parent_json(model_path));
  report.set("provenance", prov);
  if (!json_path.empty()) save_json(json_path, report);
  // The figure is drawn from the report itself, so any saved --json redraws the same picture.
  if (!svg_path.empty()) hardness_svg(hardness_from_json(report)).save(svg_path);
  return 0;
}

}  // namespace hamu::cli
