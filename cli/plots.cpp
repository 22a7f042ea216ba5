// cli/plots.cpp: the trade-off figure of `hamu compare` and the hardness figure of `hamu hardness`.
#include "cli/plots.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>

namespace hamu::cli {

namespace {

std::string printf_str(const char* format, double v) {
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

std::string with_minus(std::string s) {
  for (size_t p; (p = s.find('-')) != std::string::npos && p + 1 < s.size() && (std::isdigit((unsigned char)s[p + 1]) || s[p + 1] == '.');)
    s.replace(p, 1, "\u2212");
  return s;
}

}  // namespace

std::vector<double> spread_positions(const std::vector<double>& want, double gap, double lo, double hi) {
  const size_t n = want.size();
  std::vector<double> p(n);
  if (n == 0) return p;
  if (double(n - 1) * gap > hi - lo) {  // no room: evenly over the range (the caller's test will say so)
    for (size_t i = 0; i < n; ++i) p[i] = n == 1 ? (lo + hi) / 2 : lo + (hi - lo) * double(i) / double(n - 1);
    return p;
  }
  for (size_t i = 0; i < n; ++i) p[i] = std::clamp(want[i], lo, hi);
  for (size_t i = 1; i < n; ++i) p[i] = std::max(p[i], p[i - 1] + gap);
  p[n - 1] = std::min(p[n - 1], hi);
  for (size_t i = n - 1; i-- > 0;) p[i] = std::min(p[i], p[i + 1] - gap);
  // A run pushed against one side is centred on its wishes where the other side allows.
  size_t a = 0;
  while (a < n) {
    size_t b = a;
    while (b + 1 < n && p[b + 1] - p[b] <= gap + 1e-9) ++b;
    double shift = 0;
    for (size_t i = a; i <= b; ++i) shift += want[i] - p[i];
    shift /= double(b - a + 1);
    const double lo_room = (a == 0 ? lo : p[a - 1] + gap) - p[a];
    const double hi_room = (b + 1 == n ? hi : p[b + 1] - gap) - p[b];
    shift = std::clamp(shift, std::min(0.0, lo_room), std::max(0.0, hi_room));
    for (size_t i = a; i <= b; ++i) p[i] += shift;
    a = b + 1;
  }
  return p;
}

// ================================ the trade-off figure ================================

TradeOffFigure trade_off_from_json(const Json& j) {
  TradeOffFigure f;
  f.data = j.at("data").as_string();
  f.split = j.at("split").as_string();
  f.steps = j.at("steps").as_int();
  const Json& o = j.at("options");
  f.lr = o.at("lr").as_number();
  f.ratio = o.at("ratio").as_number();
  f.batch = o.at("batch").as_int();
  f.forget_batch = o.at("forget_batch").as_int();
  f.eval_every = o.at("eval_every").as_int();
  f.sampled = o.get_or<bool>("eval_sampled", f.eval_every > 0);
  auto point = [](const Json& eval) {
    const Json& s = eval.at("splits");
    return std::make_pair(100 * s.at("retain").at("acc").as_number(), 100 * s.at("forget").at("acc").as_number());
  };
  f.original = point(j.at("original"));
  f.retrained = point(j.at("retrained"));
  for (const Json& m : j.at("methods").as_array()) {
    TradeOffMethod t;
    t.name = m.at("method").as_string();
    t.hamu = t.name.rfind("hamu", 0) == 0;
    const std::string stop = m.get_or("stop_reason", "max_steps");
    if (stop != "max_steps") t.name += " (" + stop + " @" + std::to_string(m.at("steps_done").as_int()) + ")";
    for (const Json& p : m.at("trajectory").as_array())
      t.path.push_back({100 * p.at("retain_acc").as_number(), 100 * p.at("forget_acc").as_number()});
    if (t.path.empty()) throw InputError("method " + t.name + ": empty trajectory");
    f.methods.push_back(std::move(t));
  }
  return f;
}

namespace {

using Pt = std::pair<double, double>;

Marker method_marker(size_t i) {
  static const Marker shapes[] = {Marker::circle,        Marker::square,   Marker::diamond, Marker::triangle_up,
                                  Marker::triangle_down, Marker::pentagon, Marker::hexagon};
  return shapes[(i + i / 7) % 7];  // past seven methods the colours repeat with another shape
}

// One axis of a panel: the data span padded so markers stay clear of the frame, ticks on a nice step
// inside [0, 100].
struct PanelAxis {
  double lo, hi, step;
};
PanelAxis panel_axis(double lo, double hi, double min_span, int ticks) {
  if (hi - lo < min_span) {
    const double c = (lo + hi) / 2;
    lo = c - min_span / 2, hi = c + min_span / 2;
  }
  const NiceAxis n = nice_axis(std::max(0.0, lo), std::min(100.0, hi), ticks);
  const double pad = 0.045 * (n.hi - n.lo);
  return {std::min(n.lo, lo) - pad, std::max(n.hi, hi) + pad, n.step()};
}

struct Panel {
  PlotArea area;
  std::vector<bool> name;  // which methods this panel labels
  bool name_original = false, name_retrained = false;
};

bool inside(const PlotArea& a, const Pt& p) {
  return p.first >= a.x0 && p.first <= a.x1 && p.second >= a.y0 && p.second <= a.y1;
}

void draw_panel(Svg& svg, const Panel& panel, const TradeOffFigure& f, const std::string& caption) {
  const PlotArea& a = panel.area;
  svg.text(a.left, a.top - 9, caption, 12, "start", "#333", true);
  a.draw_axes(svg, "retain accuracy (%)", "forget accuracy (%)");
  auto P = [&](const Pt& p) { return Pt{a.px(p.first), a.py(p.second)}; };
  svg.begin_clip(a.left, a.top, a.width, a.height);
  if (inside(a, f.retrained)) {  // where forgetting should level off
    const double y = a.py(f.retrained.second);
    svg.line(a.left, y, a.left + a.width, y, "#999", 0.8, "5,4");
  }
  for (size_t i = 0; i < f.methods.size(); ++i) {
    std::vector<Pt> px;
    for (const Pt& p : f.methods[i].path) px.push_back(P(p));
    svg.polyline(px, palette(i), f.methods[i].hamu ? 2.6 : 1.8, i >= 7 ? "6,3" : "", 0.9);
    for (size_t k = 1; k + 1 < px.size(); ++k) svg.circle(px[k].first, px[k].second, 2.4, palette(i));
  }
  svg.end_clip();

  // Markers: the original (square), the retrained model (star), each method's end (its own hollow shape,
  // so ends on one spot stay visible).
  LabelPlacer labels(Box{a.left + 2, a.top + 2, a.left + a.width - 2, a.top + a.height - 2});
  const Pt po = P(f.original), pr = P(f.retrained);
  if (inside(a, f.original)) labels.block(po.first, po.second, 8);
  if (inside(a, f.retrained)) labels.block(pr.first, pr.second, 10);
  for (const TradeOffMethod& m : f.methods)
    if (inside(a, m.path.back())) labels.block(P(m.path.back()).first, P(m.path.back()).second, 8);
  if (inside(a, f.original)) svg.marker(Marker::square, po.first, po.second, 5.5, "#222", "white", 1.2);
  for (size_t i = 0; i < f.methods.size(); ++i)
    if (inside(a, f.methods[i].path.back())) {
      const Pt e = P(f.methods[i].path.back());
      svg.marker(method_marker(i), e.first, e.second, 6, "none", palette(i), 2.2);
    }
  if (inside(a, f.retrained)) svg.marker(Marker::star, pr.first, pr.second, 9, "#222", "white", 1.2);
  if (panel.name_original && inside(a, f.original)) labels.place(svg, po.first, po.second, {{"original", "#222"}}, 12, true);
  if (panel.name_retrained && inside(a, f.retrained))
    labels.place(svg, pr.first, pr.second, {{"retrained", "#222"}}, 12, true);
  // Labels go to the ends nearest the retrained model first: that is where they crowd.
  std::vector<size_t> order(f.methods.size());
  std::iota(order.begin(), order.end(), 0);
  auto dist = [&](size_t i) {
    const Pt e = P(f.methods[i].path.back());
    return std::hypot(e.first - pr.first, e.second - pr.second);
  };
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return dist(x) < dist(y); });
  for (size_t i : order)
    if (panel.name[i] && inside(a, f.methods[i].path.back())) {
      const Pt e = P(f.methods[i].path.back());
      labels.place(svg, e.first, e.second, {{f.methods[i].name, palette_text(i)}}, 12, true);
    }
}

}  // namespace

Svg trade_off_svg(const TradeOffFigure& f) {
  // x = retain accuracy, y = forget accuracy: unlearning moves a curve down (forgetting) and, when it
  // costs utility, left; the retrained model marks where "down" should stop.
  std::vector<Pt> all = {f.original, f.retrained};
  for (const TradeOffMethod& m : f.methods) all.insert(all.end(), m.path.begin(), m.path.end());
  auto range = [](const std::vector<Pt>& pts) {
    double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
    for (const Pt& p : pts) x0 = std::min(x0, p.first), x1 = std::max(x1, p.first), y0 = std::min(y0, p.second), y1 = std::max(y1, p.second);
    return std::array<double, 4>{x0, x1, y0, y1};
  };
  const auto [xmin, xmax, ymin, ymax] = range(all);
  // The zoom: the ends within 6 points (then 12) of the retrained model on both axes, with the model
  // itself; shown when it is much smaller than the whole picture, so ends that crowd there separate.
  std::vector<Pt> near;
  std::vector<bool> in_zoom(f.methods.size(), false);
  for (double reach : {6.0, 12.0}) {
    near = {f.retrained};
    for (size_t i = 0; i < f.methods.size(); ++i) {
      const Pt e = f.methods[i].path.back();
      in_zoom[i] = std::fabs(e.first - f.retrained.first) <= reach && std::fabs(e.second - f.retrained.second) <= reach;
      if (in_zoom[i]) near.push_back(e);
    }
    if (near.size() >= 3) break;
  }
  const auto [nx0, nx1, ny0, ny1] = range(near);
  const double nspan = std::max({nx1 - nx0, ny1 - ny0, 1.0});
  const bool zoom = near.size() >= 2 && nspan < 0.25 * std::max(xmax - xmin, ymax - ymin);

  const double top = 118, height = 440;
  std::vector<std::string> header = {
      "Unlearning trade-off: forget accuracy (y) against retain accuracy (x), in %",
      "data " + f.data + " \u00b7 split " + f.split + " \u00b7 " + std::to_string(f.steps) + " steps, lr " +
          printf_str("%g", f.lr) + ", HAMU ratio " + printf_str("%g", f.ratio) + ", batch " + std::to_string(f.batch) +
          "/" + std::to_string(f.forget_batch)};
  std::string how = "Each line runs from the original (black square) through an evaluation";
  const std::string dots = f.sampled ? " (dots, on a subsample)" : " (dots)";
  if (f.eval_every == 1) how += " every step" + dots;
  else if (f.eval_every > 1) how += " every " + std::to_string(f.eval_every) + " steps" + dots;
  how += " to the method's end (hollow marker, named).";
  header.push_back(how);
  header.push_back("Down = forgets more; right = keeps more retain accuracy. The retrained model (star) is the target.");
  const double header_w = std::max({text_width(header[0], 17, true), text_width(header[1], 12), text_width(header[2], 11.5),
                                    text_width(header[3], 11.5)}) + 40;

  Panel full, zoomed;
  const PanelAxis ax = panel_axis(xmin, xmax, 10, 6), ay = panel_axis(ymin, ymax, 10, 6);
  double right;
  if (!zoom) {
    full.area = PlotArea{78, top, 600, height, ax.lo, ax.hi, ay.lo, ay.hi, ax.step, ay.step, 0, 100, 0, 100};
    full.name.assign(f.methods.size(), true);
    full.name_original = full.name_retrained = true;
    right = full.area.left + full.area.width;
  } else {
    // Both zoom axes on one scale (points per pixel), so distances read the same either way.
    const double zw = 560, zh = height;
    double zx0 = nx0, zx1 = nx1, zy0 = ny0, zy1 = ny1;
    const double pad = 0.12 * std::max(zx1 - zx0, (zy1 - zy0) * zw / zh) + 0.2;
    zx0 -= pad, zx1 += pad;
    const double yspan = (zx1 - zx0) * zh / zw;
    const double yc = std::max((zy0 + zy1) / 2, ny0 - 0.06 * yspan + yspan / 2);
    zy0 = yc - yspan / 2, zy1 = yc + yspan / 2;
    if (zy1 - zy0 < ny1 - ny0 + 2 * pad) zy0 = ny0 - pad, zy1 = ny1 + pad;
    const NiceAxis tx = nice_axis(zx0, zx1, 6), ty = nice_axis(zy0, zy1, 5);
    full.area = PlotArea{78, top, 330, height, ax.lo, ax.hi, ay.lo, ay.hi, ax.step, ay.step, 0, 100, 0, 100};
    zoomed.area = PlotArea{full.area.left + full.area.width + 100, top, zw, zh, zx0, zx1, zy0, zy1, tx.step(), ty.step(),
                           0, 100, 0, 100};
    for (size_t i = 0; i < f.methods.size(); ++i) in_zoom[i] = inside(zoomed.area, f.methods[i].path.back());
    full.name.resize(f.methods.size());
    for (size_t i = 0; i < f.methods.size(); ++i) full.name[i] = !in_zoom[i];
    full.name_original = !inside(zoomed.area, f.original);
    full.name_retrained = !inside(zoomed.area, f.retrained);
    zoomed.name = in_zoom;
    zoomed.name_original = !full.name_original;
    zoomed.name_retrained = !full.name_retrained;
    right = zoomed.area.left + zoomed.area.width;
  }
  Svg svg(std::max(right + 24, header_w), top + height + 56);
  svg.text(20, 28, header[0], 17, "start", "#222", true);
  svg.text(20, 50, header[1], 12, "start", "#444");
  svg.text(20, 68, header[2], 11.5, "start", "#555");
  svg.text(20, 84, header[3], 11.5, "start", "#555");
  draw_panel(svg, full, f, zoom ? "all methods" : "");
  if (zoom) {
    const PlotArea& z = zoomed.area;
    const PlotArea& o = full.area;
    // The zoom window in the overview.
    const double rx0 = o.px(z.x0), rx1 = o.px(z.x1), ry0 = o.py(z.y1), ry1 = o.py(z.y0);
    svg.rect(rx0, ry0, std::max(2.0, rx1 - rx0), std::max(2.0, ry1 - ry0), "none", "#777");
    char cap[160];
    std::snprintf(cap, sizeof cap, "zoom on the retrained model: retain %s\u2013%s%%, forget %s\u2013%s%%",
                  tick_text(std::max(0.0, z.x0), "%.1f").c_str(), tick_text(std::min(100.0, z.x1), "%.1f").c_str(),
                  tick_text(std::max(0.0, z.y0), "%.1f").c_str(), tick_text(std::min(100.0, z.y1), "%.1f").c_str());
    draw_panel(svg, zoomed, f, cap);
  }
  return svg;
}

// ================================ the hardness figure ================================

HardnessFigure hardness_from_json(const Json& j) {
  HardnessFigure f;
  f.split = j.at("split").as_string();
  f.verdict = j.at("verdict").as_string();
  f.n_forget = j.at("n_forget").as_int();
  f.n_retain = j.at("n_retain").as_int();
  f.share_hard = j.at("share_hard").as_number();
  f.kappa = j.at("kappa").as_number();
  if (const Json* names = j.find("class_names"))
    for (const Json& n : names->as_array()) f.class_names.push_back(n.as_string());
  std::map<int64_t, size_t> by_index;
  const Json::Array& samples = j.at("samples").as_array();
  for (size_t i = 0; i < samples.size(); ++i) {
    f.sample_kappa.push_back(samples[i].at("kappa").as_number());
    by_index[samples[i].at("index").as_int()] = i;
  }
  const Json& h = j.at("heatmap");
  for (const Json& idx : h.at("forget_index").as_array()) {
    const auto it = by_index.find(idx.as_int());
    if (it == by_index.end()) throw InputError("heatmap: forget index " + std::to_string(idx.as_int()) + " is not among the samples");
    const Json& s = samples[it->second];
    f.rows.push_back({s.at("kappa").as_number(), s.at("norm").as_number(), s.at("label").as_int()});
  }
  for (const Json& l : h.at("retain_label").as_array()) f.col_labels.push_back(l.as_int());
  for (const Json& n : h.at("retain_norm").as_array()) f.col_norms.push_back(n.as_number());
  for (const Json& row : h.at("k").as_array()) {
    f.k.emplace_back();
    for (const Json& v : row.as_array()) f.k.back().push_back(v.as_number());
    if (f.k.back().size() != f.col_labels.size()) throw InputError("heatmap: a row of k does not match retain_label");
  }
  if (f.k.size() != f.rows.size() || f.col_norms.size() != f.col_labels.size())
    throw InputError("heatmap: k, forget_index, retain_label and retain_norm disagree in size");
  return f;
}

KappaHistogram kappa_histogram(const std::vector<double>& v, int target_bins) {
  KappaHistogram h;
  if (v.empty()) {
    h.lo = -1, h.hi = 1, h.counts.assign(2, 0);
    return h;
  }
  std::vector<double> s = v;
  std::sort(s.begin(), s.end());
  const size_t n = s.size();
  double lo = s[size_t(double(n - 1) * 0.005)], hi = s[size_t(double(n - 1) * 0.995)];
  if (!(hi > lo)) lo = s.front(), hi = s.back();
  // Zero is the line between easy and hard: keep it on the axis when the values stop short of it.
  if (hi < 0 && -hi < 0.35 * (hi - lo + 1e-300)) hi = 0;
  if (lo > 0 && lo < 0.35 * (hi - lo + 1e-300)) lo = 0;
  if (!(hi > lo)) lo -= 0.5 * (std::fabs(lo) + 1e-12), hi += 0.5 * (std::fabs(hi) + 1e-12);
  const NiceAxis a = nice_axis(lo, hi, 5);
  // Bin width: the tick step split evenly, so every tick (zero among them) is a bin edge.
  const int per_tick = std::max(1, int(std::lround(double(target_bins) / a.ticks)));
  h.lo = a.lo, h.hi = a.hi, h.step = a.step();
  h.width = h.step / per_tick;
  const int bins = a.ticks * per_tick;
  h.counts.assign(size_t(bins), 0);
  for (double x : v) {
    int b = int(std::floor((x - h.lo) / h.width));
    if (x < h.lo) ++h.below;
    if (x >= h.hi) ++h.above;
    b = std::clamp(b, 0, bins - 1);
    ++h.counts[size_t(b)];
  }
  return h;
}

namespace {

// Blue (negative) - white - red (positive), t in [-1, 1].
std::string diverging(double t) {
  t = std::clamp(t, -1.0, 1.0);
  const double a = std::abs(t);
  int r, g, b;
  if (t >= 0) {
    r = 255, g = int(255 - a * (255 - 60)), b = int(255 - a * (255 - 50));
  } else {
    r = int(255 - a * (255 - 40)), g = int(255 - a * (255 - 100)), b = 255;
  }
  char s[16];
  std::snprintf(s, sizeof s, "#%02x%02x%02x", r, g, b);
  return s;
}

std::string class_name(const HardnessFigure& f, int64_t label) {
  if (label >= 0 && size_t(label) < f.class_names.size()) return f.class_names[size_t(label)];
  return "class " + std::to_string(label);
}

// Runs of equal labels in an ordered list: (first, one past the last).
std::vector<std::pair<size_t, size_t>> groups(const std::vector<int64_t>& labels) {
  std::vector<std::pair<size_t, size_t>> g;
  for (size_t i = 0; i < labels.size(); ++i)
    if (i == 0 || labels[i] != labels[i - 1]) g.push_back({i, i + 1});
    else g.back().second = i + 1;
  return g;
}

}  // namespace

Svg hardness_svg(const HardnessFigure& f) {
  constexpr double kLabel = 9.5;
  const double top = 92, side = 330;
  // ---- left: histogram of kappa_j ----
  const KappaHistogram h = kappa_histogram(f.sample_kappa, 30);
  const int64_t peak = std::max<int64_t>(1, *std::max_element(h.counts.begin(), h.counts.end()));
  const NiceAxis ya = nice_axis(0, double(peak), 5);
  PlotArea pa{96, top, 380, side, h.lo, h.hi, 0, ya.hi, h.step, ya.step(), -1e300, 1e300, -1e300, 1e300};

  // ---- right: heat map geometry (labels decide the width of its left margin) ----
  const size_t nrow = f.rows.size(), ncol = nrow ? f.col_labels.size() : 0;
  std::vector<size_t> rows(nrow), cols(ncol);
  std::iota(rows.begin(), rows.end(), 0);
  std::iota(cols.begin(), cols.end(), 0);
  // Rows by forget class, hardest first within a class; columns by retain class.
  std::stable_sort(rows.begin(), rows.end(), [&](size_t a, size_t b) {
    return f.rows[a].label != f.rows[b].label ? f.rows[a].label < f.rows[b].label : f.rows[a].kappa > f.rows[b].kappa;
  });
  std::stable_sort(cols.begin(), cols.end(), [&](size_t a, size_t b) { return f.col_labels[a] < f.col_labels[b]; });
  std::vector<int64_t> row_labels, col_labels;
  for (size_t r : rows) row_labels.push_back(f.rows[r].label);
  for (size_t c : cols) col_labels.push_back(f.col_labels[c]);
  const auto row_groups = groups(row_labels), col_groups = groups(col_labels);
  double row_label_w = 0, col_label_w = 0;
  for (auto [a, b] : row_groups) row_label_w = std::max(row_label_w, text_width(class_name(f, row_labels[a]), kLabel));
  for (auto [a, b] : col_groups) col_label_w = std::max(col_label_w, text_width(class_name(f, col_labels[a]), kLabel));
  const double hx = pa.left + pa.width + 46 + row_label_w + 30;  // heat map left edge
  const double bar_x = hx + side + 16;
  const double width = bar_x + 14 + 8 + text_width("\u22120.5", 11) + 30;
  const double height = top + side + 9 + col_label_w + 34;

  Svg svg(width, height);
  svg.text(width / 2, 26, "hamu hardness: " + f.split + ", " + std::to_string(f.n_forget) + " forget \u00d7 " +
                              std::to_string(f.n_retain) + " retain samples",
           15, "middle", "#222", true);
  svg.text(width / 2, 46, "verdict: " + f.verdict, 13, "middle", f.verdict == "easy" ? "#009E73" : "#D55E00", true);

  // Histogram: bars left of zero blue (easy), right of zero vermillion (hard); zero is a bin edge.
  pa.draw_axes(svg, "\u03ba\u2c7c = \u27e8\u2207\u2113(f\u2c7c), g\u1d63\u27e9", "forget samples", "%g", "%.0f");
  for (size_t b = 0; b < h.counts.size(); ++b) {
    const double a = h.lo + h.width * double(b), e = a + h.width;
    const double c = double(h.counts[b]);
    if (c <= 0) continue;
    svg.rect(pa.px(a) + 0.5, pa.py(c), std::max(0.5, pa.px(e) - pa.px(a) - 1), pa.py(0) - pa.py(c),
             a >= -1e-12 * h.width ? "#D55E00" : "#0072B2");
  }
  if (h.lo < 0 && h.hi > 0) svg.line(pa.px(0), pa.top, pa.px(0), pa.top + pa.height, "#222", 1.2, "4,3");
  svg.text(pa.left + pa.width / 2, pa.top - 28,
           with_minus("hard (\u03ba\u2c7c > 0, vermillion): " + printf_str("%.1f", 100 * f.share_hard) + "% \u00b7 mean \u03ba = " +
                      printf_str("%.3g", f.kappa)),
           12, "middle");
  if (h.below || h.above)
    svg.text(pa.left + pa.width / 2, pa.top - 12,
             "the edge bins also hold " + std::to_string(h.below) + " below / " + std::to_string(h.above) +
                 " above the axis (0.5% tails)",
             10, "middle", "#666");

  if (nrow && ncol) {
    // Cosines K / (|∇ℓ(f_j)| |∇ℓ(r_i)|), so that a few large gradients do not wash out the rest.
    auto cosine = [&](size_t i, size_t j) {
      const double den = f.rows[i].norm * f.col_norms[j];
      return den > 0 ? f.k[i][j] / den : 0.0;
    };
    const double cw = side / double(ncol), ch = side / double(nrow);
    for (size_t i = 0; i < nrow; ++i)
      for (size_t j = 0; j < ncol; ++j)
        svg.rect(hx + double(j) * cw, top + double(i) * ch, cw + 0.3, ch + 0.3, diverging(cosine(rows[i], cols[j])));
    // Class-group boundaries.
    for (size_t g = 1; g < col_groups.size(); ++g)
      svg.line(hx + double(col_groups[g].first) * cw, top, hx + double(col_groups[g].first) * cw, top + side, "#333", 0.9);
    for (size_t g = 1; g < row_groups.size(); ++g)
      svg.line(hx, top + double(row_groups[g].first) * ch, hx + side, top + double(row_groups[g].first) * ch, "#333", 0.9);
    svg.rect(hx, top, side, side, "none", "#444");
    // Row labels: one per forget class at its group's middle, spread apart where groups are thin.
    {
      std::vector<double> want;
      for (auto [a, b] : row_groups) want.push_back(top + (double(a) + double(b)) / 2 * ch);
      const std::vector<double> at = spread_positions(want, kLabel * 1.25, top + kLabel / 2, top + side - kLabel / 2);
      for (size_t g = 0; g < row_groups.size(); ++g) {
        if (std::fabs(at[g] - want[g]) > 1) svg.line(hx - 1, want[g], hx - 9, at[g], "#999", 0.7);
        svg.text(hx - 11, at[g] + kLabel * 0.35, class_name(f, row_labels[row_groups[g].first]), kLabel, "end", "#444");
      }
      svg.text(hx - 11 - row_label_w - 10 - 0.26 * 11, top + side / 2, "forget samples (by class, hardest first)", 11,
               "middle", "#222", false, -90);
    }
    // Column labels: vertical, one per retain class, spread apart where groups are thin.
    {
      std::vector<double> want;
      for (auto [a, b] : col_groups) want.push_back(hx + (double(a) + double(b)) / 2 * cw);
      const std::vector<double> at = spread_positions(want, kLabel * 1.25, hx + kLabel / 2, hx + side - kLabel / 2);
      for (size_t g = 0; g < col_groups.size(); ++g) {
        if (std::fabs(at[g] - want[g]) > 1) svg.line(want[g], top + side + 1, at[g], top + side + 7, "#999", 0.7);
        svg.text(at[g] + kLabel * 0.35, top + side + 9, class_name(f, col_labels[col_groups[g].first]), kLabel, "end",
                 "#444", false, -90);
      }
      svg.text(hx + side / 2, top + side + 9 + col_label_w + 18, "retain samples (by class)", 11, "middle");
    }
    svg.text(hx + side / 2, top - 12, "cos(\u2207\u2113(f\u2c7c), \u2207\u2113(r\u1d62)) on a sample of pairs", 12, "middle");
    // Colour bar.
    std::vector<std::string> stops;
    for (int k = 0; k <= 20; ++k) stops.push_back(diverging(1.0 - k / 10.0));
    svg.gradient_rect(bar_x, top, 14, side, stops);
    for (double v : {1.0, 0.5, 0.0, -0.5, -1.0}) {
      const double y = top + (1 - v) / 2 * side;
      svg.line(bar_x + 14, y, bar_x + 18, y, "#444", 1);
      svg.text(bar_x + 21, y + 4, tick_text(v, "%g"), 11, "start", "#444");
    }
    svg.text(bar_x + 21 + text_width("\u22120.5", 11) + 6 + 0.26 * 11 + 1, top + side / 2, "cosine", 11, "middle", "#222",
             false, 90);
  }
  return svg;
}

}  // namespace hamu::cli
