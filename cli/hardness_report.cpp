// cli/hardness_report.cpp: the shared parts of the `hamu hardness` report (printed and --json).
#include "cli/hardness_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <utility>

#include "cli/common.h"
#include "cli/plots.h"
#include "cli/unlearn_setup.h"

namespace hamu::cli {

std::vector<Flag> hardness_option_flags(const HardnessFlagDefaults& d) {
  const std::string w = d.what, as_unlearn = d.text ? " (as hamu unlearn on text)" : " (as hamu unlearn on images)";
  return {
      {"--retain-samples", "N", "retain " + w + " to compare against (0: all that --memory-mb holds)", "0"},
      {"--forget-samples", "N", "forget " + w + " to score (0: the whole forget set)", "0"},
      {"--memory-mb", "N", "budget for the similarity buffers (retain-side per-sample data and tiles)", d.memory_mb},
      {"--batch", "N", w + " per capture forward/backward", d.batch},
      {"--ratio", "X", "HAMU constraint ratio for kappa1/kappa2 and the margins" + as_unlearn, unlearn_default("--ratio", d.text)},
      {"--lr", "X", "learning rate (radius) for kappa1/kappa2 and the margins" + as_unlearn, unlearn_default("--lr", d.text)},
      {"--clip", "X", "clip the mean gradients to this norm before the solver (as hamu unlearn; 0 = off)",
       unlearn_default("--clip", d.text)},
      {"--path", "P", "per-block similarity path: auto (cost model), ghost or materialise", "auto"},
      {"--top", "K", "hardest forget " + w + " to list", d.top},
      {"--json", "FILE", "everything: kappa, kappa1, kappa2, margins, blocks, per-sample scores, heat map", ""},
      {"--svg", "FILE", "histogram of kappa_j and a heat map of K over a sample", ""},
  };
}

HardnessOptions hardness_options(const Args& args, int64_t* top) {
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
  *top = args.integer("--top");
  if (*top < 0) throw InputError("--top: must be >= 0");
  opt.seed = uint64_t(args.integer("--seed"));
  opt.progress = true;
  return opt;
}

void check_hardness_outputs(const Args& args, const std::string& input) {
  const std::string json_path = args.str_or("--json", ""), svg_path = args.str_or("--svg", "");
  if (!json_path.empty()) check_output_path("--json", json_path);
  if (!svg_path.empty()) check_output_path("--svg", svg_path);
  for (const auto& [flag, p] : {std::pair{"--json", json_path}, {"--svg", svg_path}})
    if (!p.empty() && p == input) throw InputError(std::string(flag) + ": refusing to overwrite the input " + p);
  if (!json_path.empty() && json_path == svg_path) throw InputError("--json and --svg name the same file");
}

void print_hardness_overview(const HardnessReport& r, const std::string& split, const std::string& model,
                             const HardnessOptions& opt, const std::string& same_label) {
  const kernels::HamuReport& s = r.solver;
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
  std::printf("  most similar retain sample %s: %.1f%% of forget samples (mean cosine %.3f)\n", same_label.c_str(),
              100.0 * r.share_same_class, r.mean_similar_cosine);

  std::vector<size_t> order(r.blocks.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return r.blocks[a].kappa > r.blocks[b].kappa; });
  std::printf("\nblocks where forgetting conflicts most (kappa_l = <g_r, g_f> of the block, largest first):\n");
  // Columns as wide as their longest entry (a shared block's kind, "embedding + linear (shared)", is 27 wide).
  int kind_w = 18, path_w = 19;
  for (size_t k = 0; k < order.size() && k < 12; ++k) {
    kind_w = std::max(kind_w, int(r.blocks[order[k]].kind.size()));
    path_w = std::max(path_w, int(r.blocks[order[k]].path.size()));
  }
  std::printf("  %-44s %-*s %-*s %5s %11s %8s %10s %10s %s\n", "block", kind_w, "kind", path_w, "path", "T", "kappa_l",
              "cos", "|g_r|", "|g_f|", "collateral");
  for (size_t k = 0; k < order.size() && k < 12; ++k) {
    const BlockHardness& b = r.blocks[order[k]];
    std::printf("  %-44s %-*s %-*s %5lld %11.3e %8.4f %10.3e %10.3e %s\n", b.name.c_str(), kind_w, b.kind.c_str(), path_w,
                b.path.c_str(), (long long)b.positions, b.kappa, b.cosine, b.retain_norm, b.forget_norm,
                b.collateral ? "yes" : "");
  }
  if (order.size() > 12) std::printf("  ... %zu more in --json\n", order.size() - 12);
}

std::vector<size_t> hardest_first(const HardnessReport& r) {
  std::vector<size_t> hard(r.samples.size());
  std::iota(hard.begin(), hard.end(), 0);
  std::stable_sort(hard.begin(), hard.end(), [&](size_t a, size_t b) { return r.samples[a].kappa > r.samples[b].kappa; });
  return hard;
}

void print_hardness_closing(const HardnessReport& r) {
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

Json hardness_report_json(const HardnessReport& r, const std::string& split, const std::string& model,
                          const HardnessOptions& opt, const std::function<void(const SampleHardness&, Json&)>& sample_extra,
                          const Json& class_names) {
  const kernels::HamuReport& s = r.solver;
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
  for (const SampleHardness& x : r.samples) {
    Json o = Json::object({{"index", Json(x.index)},
                           {"label", Json(x.label)},
                           {"kappa", Json(x.kappa)},
                           {"cosine", Json(x.cosine)},
                           {"norm", Json(x.norm)},
                           {"loss", Json(x.loss)},
                           {"similar_index", Json(x.similar_index)},
                           {"similar_label", Json(x.similar_label)},
                           {"similar_k", Json(x.similar_k)},
                           {"similar_cosine", Json(x.similar_cosine)}});
    if (sample_extra) sample_extra(x, o);
    samples.push_back(o);
  }
  Json heat = Json::object({{"forget_index", Json::array()}, {"retain_index", Json(r.heat_cols)},
                            {"retain_label", Json(std::vector<int64_t>(r.heat_col_labels.begin(), r.heat_col_labels.end()))},
                            {"retain_norm", Json(r.heat_col_norms)},
                            {"k", Json::array()}});
  for (int64_t row : r.heat_rows) heat["forget_index"].push_back(Json(r.samples[size_t(row)].index));
  for (const auto& row : r.heat) heat["k"].push_back(Json(row));
  Json notices = Json::array();
  for (const std::string& n : r.notices) notices.push_back(Json(n));
  Json out = Json::object({{"model", Json(model)},
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
                           {"ranks", Json(int64_t(world().size()))},
                           {"notices", notices},
                           {"blocks", blocks},
                           {"samples", samples},
                           {"heatmap", heat}});
  if (!class_names.is_null()) out.set("class_names", class_names);
  return out;
}

}  // namespace hamu::cli
