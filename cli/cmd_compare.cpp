// cli/cmd_compare.cpp: `hamu compare` — several unlearning methods, each from a fresh copy of the same
// original, on the same split and budget: one table, optional JSON, and an SVG trade-off plot.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>

#include "cli/commands.h"
#include "cli/svg.h"
#include "cli/unlearn_setup.h"
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
  std::snprintf(b, sizeof b, "%-10s %8s %8s %8s %9.4f %9.4f %8s %8s %8s %6s  %s\n", name.c_str(), pct(r.forget.acc).c_str(),
                pct(r.retain.acc).c_str(), pct(r.test.acc).c_str(), r.retain_forget_auc, r.forget_test_auc,
                r.has_reference ? fmt("%.2f", 100 * r.avg_gap).c_str() : "-", seconds.c_str(), eval_seconds.c_str(),
                steps.c_str(), stop.c_str());
  return b;
}

std::string compare_table(const EvalReport& original, const EvalReport& retrained, const std::vector<MethodRun>& runs) {
  char head[320];
  std::snprintf(head, sizeof head, "%-10s %8s %8s %8s %9s %9s %8s %8s %8s %6s  %s\n", "method", "forget%", "retain%",
                "test%", "AUC r-f", "AUC f-t", "avg gap", "seconds", "eval s", "steps", "stop");
  std::string s = head;
  s += table_row("original", original, "-", "-", "-", "");
  s += table_row("retrained", retrained, "-", "-", "-", "");
  for (const MethodRun& m : runs) {
    const UnlearnResult& r = m.result;
    s += table_row(method_name(*m.method), r.evals.back().report, fmt("%.2f", r.seconds), fmt("%.2f", r.eval_seconds),
                   std::to_string(r.steps_done), stop_reason_name(r.stop_reason));
  }
  s += "accuracies in %; AUC r-f: retain-vs-forget loss AUC, AUC f-t: forget-vs-test (0.5 = forget looks unseen);\n"
       "avg gap: mean |accuracy - retrained accuracy| over the three splits, in points; seconds: unlearning loop only\n";
  return s;
}

// ---- the plot ------------------------------------------------------------------------------------

// Ten distinct colours that read as text on white (the palette's yellow, black and grey are left out:
// black marks the original and the retrained model).
const std::string& method_colour(size_t i) {
  static const std::vector<std::string> colours = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                                   "#56B4E9", "#8B4513", "#6A3D9A", "#117733", "#882255"};
  return colours[i % colours.size()];
}

struct Box {
  double x0, y0, x1, y1;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
  bool inside(const Box& o) const { return x0 >= o.x0 && y0 >= o.y0 && x1 <= o.x1 && y1 <= o.y1; }
};

using LabelParts = std::vector<std::pair<std::string, std::string>>;  // (text, colour)

// Puts labels near their points without covering earlier labels or markers and without leaving
// `bounds` (the plot area and the margin right of it): tries eight spots around the point, then the
// same spots further out, with a thin leader line once the label sits away from its point.
class LabelPlacer {
 public:
  explicit LabelPlacer(Box bounds) : bounds_(bounds) {}
  void block(double x, double y, double r) { taken_.push_back({x - r, y - r, x + r, y + r}); }

  void place(Svg& svg, double x, double y, const LabelParts& parts, double size, bool bold) {
    std::string text;
    for (const auto& p : parts) text += p.first;
    const double tw = text_width(text, size) * (bold ? 1.08 : 1.0), th = size, gap = 8;
    // Left end and baseline of the text relative to the point, for: right, right-up, right-down, left,
    // left-up, left-down, above, below.
    const double mid = th * 0.35;
    const std::vector<std::pair<double, double>> spots = {
        {gap, mid}, {gap, -gap}, {gap, th + gap}, {-gap - tw, mid}, {-gap - tw, -gap}, {-gap - tw, th + gap},
        {-tw / 2, -gap - 2}, {-tw / 2, th + gap + 2}};
    for (int ring = 0; ring < 8; ++ring) {
      const double push = ring * (th + 2);
      for (auto [dx, dy] : spots) {
        const double sx = dx > 0 ? dx + push : (dx < -tw / 2 - 1 ? dx - push : dx);
        const double sy = dy == mid ? dy : (dy < 0 ? dy - push : dy + push);
        const Box b{x + sx - 2, y + sy - th, x + sx + tw + 2, y + sy + 3};
        if (!b.inside(bounds_)) continue;
        bool clash = false;
        for (const Box& t : taken_) clash = clash || b.overlaps(t);
        if (clash) continue;
        taken_.push_back(b);
        if (ring > 0) {
          const double lx = std::clamp(x, b.x0, b.x1), ly = std::clamp(y, b.y0, b.y1);
          svg.line(x, y, lx, ly, parts.front().second, 0.8, "2,2");
        }
        svg.label_parts(x + sx, y + sy, parts, size, bold);
        return;
      }
    }
    svg.label_parts(x + gap, y + mid, parts, size, bold);  // crowded: overlap rather than drop it
  }

 private:
  Box bounds_;
  std::vector<Box> taken_;
};

void star(Svg& svg, double cx, double cy, double r, const std::string& fill, const std::string& stroke) {
  std::vector<std::pair<double, double>> pts;
  for (int k = 0; k < 10; ++k) {
    const double a = -M_PI / 2 + k * M_PI / 5, rr = k % 2 ? r * 0.45 : r;
    pts.push_back({cx + rr * std::cos(a), cy + rr * std::sin(a)});
  }
  svg.polygon(pts, fill, stroke, 1.2);
}

struct PlotInfo {
  std::string data, split;
  int64_t steps = 0, eval_every = 0;
  double lr = 0, ratio = 0;
  int64_t batch = 0, forget_batch = 0;
  bool sampled = false;  // intermediate evaluations on a subsample
};

// A padded axis range in percent inside [0, 100], at least `min_span` wide.
NiceAxis percent_axis(double lo, double hi, double min_span) {
  const double pad = std::max(0.5, 0.04 * (hi - lo));
  lo -= pad;
  hi += pad;
  if (hi - lo < min_span) {
    const double c = (lo + hi) / 2;
    lo = c - min_span / 2;
    hi = c + min_span / 2;
  }
  if (lo < 0) hi = std::min(100.0, hi - lo), lo = 0;
  if (hi > 100) lo = std::max(0.0, lo - (hi - 100)), hi = 100;
  return nice_axis(lo, hi, 6);
}

using Pt = std::pair<double, double>;  // (retain accuracy, forget accuracy) in percent

Pt acc_point(const EvalReport& r) { return {100 * r.retain.acc, 100 * r.forget.acc}; }

// What the plot shows, in data coordinates.
struct PlotData {
  Pt original, retrained;
  std::vector<std::vector<Pt>> paths;  // per method: step 0 (the original), intermediate, final
  std::vector<std::string> names;      // per method, with the stop reason when it stopped early
  std::vector<bool> hamu;
};

// One plot area: axes, the clipped trajectories, markers and the labels of what falls inside.
// `labelled`: which methods this panel names (each method is named once in the whole figure).
void draw_panel(Svg& svg, const PlotArea& area, int xticks, int yticks, double label_right, const PlotData& d,
                const std::string& caption, const std::vector<bool>& labelled, bool note_outside) {
  svg.text(area.left, area.top - 8, caption, 12, "start", "#333", true);
  area.draw_axes(svg, "retain accuracy (%)", "forget accuracy (%)", xticks, "%g", yticks);
  auto P = [&](const Pt& p) { return Pt{area.px(p.first), area.py(p.second)}; };
  auto inside = [&](const Pt& p) {
    return p.first >= area.x0 - 1e-9 && p.first <= area.x1 + 1e-9 && p.second >= area.y0 - 1e-9 && p.second <= area.y1 + 1e-9;
  };
  const Pt po = P(d.original), pr = P(d.retrained);
  svg.begin_clip(area.left - 7, area.top - 7, area.width + 14, area.height + 14);
  // Guide: the retrained model's forget accuracy, where forgetting should level off.
  if (inside(d.retrained)) svg.line(area.left, pr.second, area.left + area.width, pr.second, "#999", 0.8, "5,4");
  for (size_t i = 0; i < d.paths.size(); ++i) {
    std::vector<Pt> px;
    for (const Pt& p : d.paths[i]) px.push_back(P(p));
    svg.polyline(px, method_colour(i), d.hamu[i] ? 2.6 : 1.8, "", 0.9);
    for (size_t k = 1; k + 1 < px.size(); ++k) svg.circle(px[k].first, px[k].second, 2.6, method_colour(i));
  }
  svg.end_clip();

  LabelPlacer labels(Box{area.left + 2, area.top + 2, label_right, area.top + area.height - 2});
  if (inside(d.original)) labels.block(po.first, po.second, 7);
  if (inside(d.retrained)) labels.block(pr.first, pr.second, 9);
  for (size_t i = 0; i < d.paths.size(); ++i) {
    const Pt f = P(d.paths[i].back());
    if (inside(d.paths[i].back())) labels.block(f.first, f.second, 6);
  }
  if (inside(d.original)) svg.rect(po.first - 5.5, po.second - 5.5, 11, 11, "#222", "white");
  if (inside(d.retrained)) star(svg, pr.first, pr.second, 9, "#222", "white");
  for (size_t i = 0; i < d.paths.size(); ++i)
    if (inside(d.paths[i].back())) {
      const Pt f = P(d.paths[i].back());
      svg.circle(f.first, f.second, 5.2, method_colour(i), "white", 1.4);
    }
  if (inside(d.original)) labels.place(svg, po.first, po.second, {{"original", "#222"}}, 12, true);
  if (inside(d.retrained)) labels.place(svg, pr.first, pr.second, {{"retrained", "#222"}}, 12, true);
  // Methods that end on (nearly) the same spot share one label, each name in its colour.
  std::vector<bool> done(d.paths.size(), false);
  for (size_t i = 0; i < d.paths.size(); ++i) {
    if (done[i] || !labelled[i] || !inside(d.paths[i].back())) continue;
    const Pt fi = P(d.paths[i].back());
    LabelParts parts;
    for (size_t j = i; j < d.paths.size(); ++j) {
      const Pt fj = P(d.paths[j].back());
      if (done[j] || !labelled[j] || !inside(d.paths[j].back()) || std::hypot(fj.first - fi.first, fj.second - fi.second) > 5)
        continue;
      done[j] = true;
      if (!parts.empty()) parts.push_back({", ", "#666"});
      parts.push_back({d.names[j], method_colour(j)});
    }
    labels.place(svg, fi.first, fi.second, parts, 12.5, true);
  }
  // Methods whose end lies outside a zoomed panel: say where they went, at the edge they left by.
  if (note_outside)
    for (size_t i = 0; i < d.paths.size(); ++i) {
      const Pt f = d.paths[i].back();
      if (inside(f)) continue;
      const double y = area.py(std::clamp(f.second, area.y0, area.y1));
      const bool left = f.first < area.x0;
      char b[160];
      std::snprintf(b, sizeof b, "%s%s ends at retain %.1f%%, forget %.1f%%%s", left ? "\u2190 " : "", d.names[i].c_str(),
                    f.first, f.second, left ? "" : " \u2192");
      labels.place(svg, left ? area.left : area.left + area.width, y, {{b, method_colour(i)}}, 11, false);
    }
}

Svg trade_off_plot(const EvalReport& original, const EvalReport& retrained, const std::vector<MethodRun>& runs,
                   const PlotInfo& info) {
  // x = retain accuracy, y = forget accuracy: unlearning moves a curve down (forgetting) and, when it
  // costs utility, left; the retrained model marks where "down" should stop.
  PlotData d;
  d.original = acc_point(original);
  d.retrained = acc_point(retrained);
  std::vector<Pt> all = {d.original, d.retrained};
  for (const MethodRun& m : runs) {
    std::vector<Pt> path;
    for (const EvalPoint& p : m.result.evals) path.push_back(acc_point(p.report));
    all.insert(all.end(), path.begin(), path.end());
    d.paths.push_back(path);
    std::string name = method_name(*m.method);
    if (m.result.stop_reason != StopReason::max_steps)
      name += " (" + std::string(stop_reason_name(m.result.stop_reason)) + " @" + std::to_string(m.result.steps_done) + ")";
    d.names.push_back(name);
    d.hamu.push_back(m.method->is_hamu());
  }
  auto range = [](const std::vector<Pt>& pts, bool x) {
    double lo = 100, hi = 0;
    for (const Pt& p : pts) {
      const double v = x ? p.first : p.second;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    return std::make_pair(lo, hi);
  };
  const auto [xmin, xmax] = range(all, true);
  const auto [ymin, ymax] = range(all, false);
  // A method that wrecks retain accuracy (e.g. ga) would squeeze every other curve into a sliver: then
  // a second panel zooms on the points within 8 points of the reference models' retain accuracy.
  const double near_x = std::min(d.original.first, d.retrained.first) - 8;
  std::vector<Pt> near;
  for (const Pt& p : all)
    if (p.first >= near_x) near.push_back(p);
  const auto [nxmin, nxmax] = range(near, true);
  const bool zoom = xmax - xmin > 20 && near.size() < all.size() && nxmax - nxmin < 0.5 * (xmax - xmin);

  const double W = zoom ? 1250 : 860, H = 660;
  Svg svg(W, H);
  svg.text(20, 28, "Unlearning trade-off: forget accuracy (y) vs retain accuracy (x), in %", 17, "start", "#222", true);
  std::string sub = "data " + info.data + " · split " + info.split + " · " + std::to_string(info.steps) + " steps, lr " +
                    fmt("%g", info.lr) + ", HAMU ratio " + fmt("%g", info.ratio) + ", batch " +
                    std::to_string(info.batch) + "/" + std::to_string(info.forget_batch);
  svg.text(20, 50, sub, 12, "start", "#444");
  std::string how = "Each line runs from the original (square) through an evaluation";
  const std::string dots = info.sampled ? " (dots, on a subsample)" : " (dots)";
  if (info.eval_every == 1) how += " every step" + dots;
  else if (info.eval_every > 1) how += " every " + std::to_string(info.eval_every) + " steps" + dots;
  how += " to the method's final point (named).";
  svg.text(20, 68, how, 11.5, "start", "#555");
  svg.text(20, 84, "Down = forgets more; right = keeps more retain accuracy. The retrained model (star) is the target.",
           11.5, "start", "#555");

  const NiceAxis ax = percent_axis(xmin, xmax, 10), ay = percent_axis(ymin, ymax, 10);
  if (!zoom) {
    const PlotArea area{80, 116, 560, 460, ax.lo, ax.hi, ay.lo, ay.hi};
    draw_panel(svg, area, ax.ticks, ay.ticks, W - 6, d, "", std::vector<bool>(runs.size(), true), false);
    return svg;
  }
  const NiceAxis zx = percent_axis(nxmin, nxmax, 4);
  const auto [nymin, nymax] = range(near, false);
  const NiceAxis zy = percent_axis(nymin, nymax, 10);
  const PlotArea full{80, 116, 380, 460, ax.lo, ax.hi, ay.lo, ay.hi};
  const PlotArea zoomed{640, 116, 470, 460, zx.lo, zx.hi, zy.lo, zy.hi};
  // The overview names only what the zoom cannot show; the zoom names the rest.
  std::vector<bool> outside(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    const Pt f = d.paths[i].back();
    outside[i] = f.first < zx.lo || f.first > zx.hi || f.second < zy.lo || f.second > zy.hi;
  }
  draw_panel(svg, full, ax.ticks, ay.ticks, full.left + full.width + 90, d, "all methods", outside, false);
  // The zoom window in the overview.
  svg.rect(full.px(zx.lo), full.py(zy.hi), full.px(zx.hi) - full.px(zx.lo), full.py(zy.lo) - full.py(zy.hi), "none",
           "#777");
  svg.text(full.px(zx.lo) - 4, full.py(zy.hi) - 5, "zoom \u2192", 11, "end", "#555");
  char cap[96];
  std::snprintf(cap, sizeof cap, "zoom: retain accuracy %g-%g%%", zx.lo, zx.hi);
  draw_panel(svg, zoomed, zx.ticks, zy.ticks, W - 6, d, cap, std::vector<bool>(runs.size(), true), true);
  return svg;
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
  };
  for (Flag f : unlearn_option_flags()) {
    if (f.name == "--eval-every") {
      f.help = "evaluate (subsampled) every N steps for the plot; -1: steps/8; 0: before and after only";
      f.default_value = std::to_string(kAutoEvalEvery);
    }
    flags.push_back(f);
  }
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
  for (const std::string& p : {json_path, svg_path})
    if (!p.empty() && (p == model_path || p == reference_path)) throw InputError("refusing to overwrite the input checkpoint " + p);
  if (!json_path.empty() && json_path == svg_path) throw InputError("--json and --svg name the same file " + json_path);
  const Device device = apply_common(args);
  UnlearnOptions opt = read_unlearn_options(args, device);
  if (opt.eval_every == kAutoEvalEvery) opt.eval_every = std::max<int64_t>(1, opt.steps / kPlotPoints);
  const uint64_t seed = uint64_t(args.integer("--seed"));
  for (const Method* m : methods) {  // option checks that need no data (e.g. --ratio) fail fast
    UnlearnOptions o = opt;
    o.method = m;
    validate_unlearn_options(o, 1, 1);
  }
  UnlearnContext ctx = load_unlearn_context(model_path, args.str_or("--data", ""), args.str_or("--split", ""),
                                            reference_path, device, seed, args.integer("--eval-batch"),
                                            args.integer("--eval-samples"));
  for (const Method* m : methods) {
    UnlearnOptions o = opt;
    o.method = m;
    validate_unlearn_options(o, ctx.data.split.forget.size(), ctx.data.split.retain.size());
  }

  std::fprintf(stderr, "hamu compare: %zu methods on %s, forget %zu / retain %zu (%s), %lld steps, lr %g, %s\n",
               methods.size(), ctx.original.spec.describe().c_str(), ctx.data.split.forget.size(),
               ctx.data.split.retain.size(), ctx.data.split.spec.c_str(), (long long)opt.steps, opt.params.lr,
               device.str().c_str());
  EvalReport original = evaluate_full(*ctx.original.model, ctx, model_path);
  EvalReport retrained = *ctx.reference_report;
  compare_to_reference(retrained, *ctx.reference_report);  // gaps of 0 by definition, so the table reads uniformly
  retrained.model = reference_path;
  retrained.data = original.data;
  retrained.split = original.split;

  // One frozen original for kl/scrub/npo, shared by the runs (they only read it).
  std::unique_ptr<models::LoadedModel> frozen;
  std::vector<MethodRun> runs;
  for (size_t i = 0; i < methods.size(); ++i) {
    const Method* m = methods[i];
    const char* name = method_name(*m);
    std::fprintf(stderr, "hamu compare: [%zu/%zu] %s: start\n", i + 1, methods.size(), name);
    if (m->needs_original() && !frozen) frozen = std::make_unique<models::LoadedModel>(fresh_copy(ctx));
    models::LoadedModel work = fresh_copy(ctx);
    UnlearnOptions o = opt;
    o.method = m;
    UnlearnHooks hooks;
    hooks.evaluate = [&](int64_t step, bool final) {
      if (step == 0 && !final) return original;  // every run starts from the same, already evaluated model
      return final ? evaluate_full(*work.model, ctx, name) : evaluate_sampled(*work.model, ctx, name);
    };
    hooks.notice = [&](const std::string& msg) { std::fprintf(stderr, "\nhamu compare: %s: %s\n", name, msg.c_str()); };
    MethodRun run{m, run_unlearning(*work.model, m->needs_original() ? frozen->model.get() : nullptr, ctx.data.data.train,
                                    ctx.data.split, ctx.norm, o, hooks)};
    const EvalReport& after = run.result.evals.back().report;
    std::fprintf(stderr,
                 "hamu compare: [%zu/%zu] %s: done, %lld steps in %.2f s (%s), evaluation %.2f s; forget %.2f%%, "
                 "retain %.2f%%, test %.2f%%\n",
                 i + 1, methods.size(), name, (long long)run.result.steps_done, run.result.seconds,
                 stop_reason_name(run.result.stop_reason), run.result.eval_seconds, 100 * after.forget.acc, 100 * after.retain.acc,
                 100 * after.test.acc);
    runs.push_back(std::move(run));
  }

  std::printf("hamu compare: %s, split %s, %lld steps, lr %g, ratio %g, batch %lld/%lld\n", ctx.data.data.spec.c_str(),
              ctx.data.split.spec.c_str(), (long long)opt.steps, opt.params.lr, opt.ratio, (long long)opt.batch,
              (long long)opt.forget_batch);
  std::printf("%s", compare_table(original, retrained, runs).c_str());

  if (!svg_path.empty()) {
    const size_t largest = std::max({ctx.data.split.forget.size(), ctx.data.split.retain.size(), ctx.data.test.size()});
    PlotInfo info{ctx.data.data.spec, ctx.data.split.spec, opt.steps, opt.eval_every, opt.params.lr, opt.ratio,
                  opt.batch, opt.forget_batch, ctx.eval_samples > 0 && int64_t(largest) > ctx.eval_samples};
    trade_off_plot(original, retrained, runs, info).save(svg_path);
    std::printf("saved %s\n", svg_path.c_str());
  }
  if (!json_path.empty()) {
    Json list = Json::array();
    for (const MethodRun& r : runs) list.push_back(run_json(r));
    Json j = Json::object({{"data", Json(ctx.data.data.spec)}, {"split", Json(ctx.data.split.spec)}, {"steps", Json(opt.steps)}});
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
    save_json(json_path, j);
    std::printf("saved %s\n", json_path.c_str());
  }
  return 0;
}

}  // namespace hamu::cli
