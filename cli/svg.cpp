// cli/svg.cpp: the SVG writer, its text-box bookkeeping, axes and the label placer.
#include "cli/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/atomic_file.h"

namespace hamu::cli {

namespace {
std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

// DejaVu Sans advance widths of ASCII 32..126, in 1/2048 em.
constexpr int kAsciiWidth[95] = {
    651,  821,  942,  1716, 1303, 1946, 1597, 563,  799,  799,  1024, 1716, 651,  739,  651,  690,   // ' '../
    1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 690,  690,  1716, 1716, 1716, 1087,  // 0..?
    2048, 1401, 1405, 1430, 1577, 1294, 1178, 1587, 1540, 604,  604,  1343, 1141, 1767, 1532, 1612,  // @..O
    1235, 1612, 1423, 1300, 1251, 1499, 1401, 2025, 1403, 1251, 1403, 799,  690,  799,  1716, 1024,  // P.._
    1024, 1255, 1300, 1126, 1300, 1260, 721,  1300, 1298, 569,  569,  1186, 569,  1995, 1298, 1253,  // `..o
    1300, 1300, 842,  1067, 803,  1298, 1212, 1675, 1212, 1212, 1075, 1303, 690,  1303, 1716};       // p..~

// Ascent and descent of the font, as fractions of the size (DejaVu Sans: 0.76 and 0.24).
constexpr double kAscent = 0.78, kDescent = 0.26;
// White halo of label(): stroke-width 3, half of it outside the glyphs.
constexpr double kHalo = 1.5;
}  // namespace

double text_width(const std::string& s, double size, bool bold) {
  double em = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 32 && c < 127) em += kAsciiWidth[c - 32] / 2048.0;
    else if ((c & 0xC0) != 0x80) em += 0.84;  // one non-ASCII code point (Greek, arrows, maths): generous
  }
  return em * size * (bold ? 1.1 : 1.0);
}

Box text_box(double x, double y, const std::string& s, double size, const std::string& anchor, bool bold) {
  const double w = text_width(s, size, bold);
  const double x0 = anchor == "middle" ? x - w / 2 : anchor == "end" ? x - w : x;
  return {x0, y - kAscent * size, x0 + w, y + kDescent * size};
}

std::string svg_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

const std::string& palette(size_t i) {
  static const std::vector<std::string> colors = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                                  "#E69F00", "#56B4E9", "#F0E442"};
  return colors[i % colors.size()];
}

const std::string& palette_text(size_t i) {
  static const std::vector<std::string> colors = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                                  "#C98500", "#3A9AD9", "#A89A00"};
  return colors[i % colors.size()];
}

std::string tick_text(double v, const char* format) {
  if (std::fabs(v) < 1e-12) v = 0;
  char b[48];
  std::snprintf(b, sizeof b, format, v);
  std::string s = b;
  if (s == "-0") s = "0";
  if (!s.empty() && s[0] == '-') s = "\u2212" + s.substr(1);
  return s;
}

Svg::Svg(double width, double height) : w_(width), h_(height) {}

void Svg::rect(double x, double y, double w, double h, const std::string& fill, const std::string& stroke,
               double opacity) {
  body_ += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) +
           "\" fill=\"" + fill + "\" stroke=\"" + stroke + "\"" +
           (opacity < 1.0 ? " fill-opacity=\"" + num(opacity) + "\"" : std::string()) + "/>\n";
}

void Svg::line(double x1, double y1, double x2, double y2, const std::string& stroke, double width,
               const std::string& dash) {
  body_ += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) +
           "\" stroke=\"" + stroke + "\" stroke-width=\"" + num(width) + "\"" +
           (dash.empty() ? std::string() : " stroke-dasharray=\"" + dash + "\"") + "/>\n";
}

void Svg::polyline(const std::vector<std::pair<double, double>>& pts, const std::string& stroke, double width,
                   const std::string& dash, double opacity) {
  std::string p;
  for (auto& [x, y] : pts) p += num(x) + "," + num(y) + " ";
  body_ += "<polyline points=\"" + p + "\" fill=\"none\" stroke=\"" + stroke + "\" stroke-width=\"" + num(width) +
           "\" stroke-linejoin=\"round\" stroke-linecap=\"round\"" +
           (dash.empty() ? std::string() : " stroke-dasharray=\"" + dash + "\"") +
           (opacity < 1.0 ? " stroke-opacity=\"" + num(opacity) + "\"" : std::string()) + "/>\n";
}

void Svg::polygon(const std::vector<std::pair<double, double>>& pts, const std::string& fill, const std::string& stroke,
                  double stroke_width) {
  std::string p;
  for (auto& [x, y] : pts) p += num(x) + "," + num(y) + " ";
  body_ += "<polygon points=\"" + p + "\" fill=\"" + fill + "\" stroke=\"" + stroke + "\" stroke-width=\"" +
           num(stroke_width) + "\" stroke-linejoin=\"round\"/>\n";
}

void Svg::circle(double cx, double cy, double r, const std::string& fill, const std::string& stroke,
                 double stroke_width) {
  body_ += "<circle cx=\"" + num(cx) + "\" cy=\"" + num(cy) + "\" r=\"" + num(r) + "\" fill=\"" + fill +
           "\" stroke=\"" + stroke + "\"" +
           (stroke != "none" ? " stroke-width=\"" + num(stroke_width) + "\"" : std::string()) + "/>\n";
}

void Svg::marker(Marker shape, double cx, double cy, double r, const std::string& fill, const std::string& stroke,
                 double stroke_width) {
  if (shape == Marker::circle) return circle(cx, cy, r, fill, stroke, stroke_width);
  // Regular polygons with the same visual weight as the circle; the star alternates two radii.
  auto regular = [&](int n, double start, double rr) {
    std::vector<std::pair<double, double>> pts;
    for (int k = 0; k < n; ++k) {
      const double a = start + 2 * M_PI * k / n;
      pts.push_back({cx + rr * std::cos(a), cy + rr * std::sin(a)});
    }
    return pts;
  };
  std::vector<std::pair<double, double>> pts;
  switch (shape) {
    case Marker::square: pts = regular(4, M_PI / 4, r * 1.2); break;
    case Marker::diamond: pts = regular(4, -M_PI / 2, r * 1.3); break;
    case Marker::triangle_up: pts = regular(3, -M_PI / 2, r * 1.35); break;
    case Marker::triangle_down: pts = regular(3, M_PI / 2, r * 1.35); break;
    case Marker::pentagon: pts = regular(5, -M_PI / 2, r * 1.15); break;
    case Marker::hexagon: pts = regular(6, 0, r * 1.1); break;
    case Marker::star:
      for (int k = 0; k < 10; ++k) {
        const double a = -M_PI / 2 + k * M_PI / 5, rr = k % 2 ? r * 0.45 : r;
        pts.push_back({cx + rr * std::cos(a), cy + rr * std::sin(a)});
      }
      break;
    case Marker::circle: break;
  }
  polygon(pts, fill, stroke, stroke_width);
}

void Svg::gradient_rect(double x, double y, double w, double h, const std::vector<std::string>& top_to_bottom) {
  const std::string id = "grad" + std::to_string(++gradient_count_);
  body_ += "<defs><linearGradient id=\"" + id + "\" x1=\"0\" y1=\"0\" x2=\"0\" y2=\"1\">";
  for (size_t i = 0; i < top_to_bottom.size(); ++i)
    body_ += "<stop offset=\"" + num(top_to_bottom.size() > 1 ? double(i) / double(top_to_bottom.size() - 1) : 0) +
             "\" stop-color=\"" + top_to_bottom[i] + "\"/>";
  body_ += "</linearGradient></defs>\n";
  rect(x, y, w, h, "url(#" + id + ")", "#444");
}

void Svg::record_text(double x, double y, const std::string& s, double size, const std::string& anchor, bool bold,
                      double rotate) {
  Box b = text_box(x, y, s, size, anchor, bold);
  if (rotate != 0) {
    // The axis-aligned box of the rotated rectangle (SVG rotates clockwise about (x, y)).
    const double a = rotate * M_PI / 180, c = std::cos(a), sn = std::sin(a);
    double lo_x = 1e300, hi_x = -1e300, lo_y = 1e300, hi_y = -1e300;
    for (double px : {b.x0, b.x1})
      for (double py : {b.y0, b.y1}) {
        const double rx = x + (px - x) * c - (py - y) * sn, ry = y + (px - x) * sn + (py - y) * c;
        lo_x = std::min(lo_x, rx), hi_x = std::max(hi_x, rx), lo_y = std::min(lo_y, ry), hi_y = std::max(hi_y, ry);
      }
    b = {lo_x, lo_y, hi_x, hi_y};
  }
  texts_.push_back({b, s});
}

void Svg::label(double x, double y, const std::string& s, double size, const std::string& anchor,
                const std::string& fill, bool bold) {
  body_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(size) + "\" text-anchor=\"" + anchor +
           "\" fill=\"" + fill + "\"" + (bold ? " font-weight=\"bold\"" : "") +
           " stroke=\"white\" stroke-width=\"3\" stroke-linejoin=\"round\" paint-order=\"stroke\">" + svg_escape(s) +
           "</text>\n";
  record_text(x, y, s, size, anchor, bold, 0);
}

void Svg::text(double x, double y, const std::string& s, double size, const std::string& anchor,
               const std::string& fill, bool bold, double rotate) {
  body_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(size) + "\" text-anchor=\"" + anchor +
           "\" fill=\"" + fill + "\"" + (bold ? " font-weight=\"bold\"" : "") +
           (rotate != 0 ? " transform=\"rotate(" + num(rotate) + " " + num(x) + " " + num(y) + ")\"" : std::string()) +
           ">" + svg_escape(s) + "</text>\n";
  record_text(x, y, s, size, anchor, bold, rotate);
}

void Svg::label_parts(double x, double y, const std::vector<std::pair<std::string, std::string>>& parts, double size,
                      bool bold) {
  body_ += "<text xml:space=\"preserve\" x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(size) + "\"" +
           (bold ? " font-weight=\"bold\"" : "") +
           " stroke=\"white\" stroke-width=\"3\" stroke-linejoin=\"round\" paint-order=\"stroke\">";
  std::string all;
  for (const auto& [text, fill] : parts) {
    body_ += "<tspan fill=\"" + fill + "\">" + svg_escape(text) + "</tspan>";
    all += text;
  }
  body_ += "</text>\n";
  record_text(x, y, all, size, "start", bold, 0);
}

void Svg::begin_clip(double x, double y, double w, double h) {
  const std::string id = "clip" + std::to_string(++clip_count_);
  body_ += "<defs><clipPath id=\"" + id + "\"><rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) +
           "\" height=\"" + num(h) + "\"/></clipPath></defs>\n<g clip-path=\"url(#" + id + ")\">\n";
}

void Svg::end_clip() { body_ += "</g>\n"; }

std::vector<std::pair<size_t, size_t>> Svg::overlapping_texts() const {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t i = 0; i < texts_.size(); ++i)
    for (size_t j = i + 1; j < texts_.size(); ++j)
      if (texts_[i].box.overlaps(texts_[j].box)) out.push_back({i, j});
  return out;
}

std::vector<size_t> Svg::texts_off_canvas() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < texts_.size(); ++i)
    if (!texts_[i].box.inside(Box{0, 0, w_, h_})) out.push_back(i);
  return out;
}

std::string Svg::str() const {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(w_) + "\" height=\"" + num(h_) +
         "\" viewBox=\"0 0 " + num(w_) + " " + num(h_) +
         "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" "
         "fill=\"white\"/>\n" +
         body_ + "</svg>\n";
}

void Svg::save(const std::string& path) const {
  AtomicFile f(path);
  f.write(str());
  f.commit();
}

NiceAxis nice_axis(double lo, double hi, int target) {
  if (!(hi > lo)) {
    const double pad = std::fabs(lo) > 0 ? std::fabs(lo) * 0.05 : 0.5;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  NiceAxis a;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  a.ticks = std::max(1, int(std::lround((a.hi - a.lo) / step)));
  return a;
}

namespace {
// Tick values: multiples of `step` inside [lo, hi] and [tick_lo, tick_hi]; six even divisions without a step.
std::vector<double> ticks(double lo, double hi, double step, double tick_lo, double tick_hi) {
  std::vector<double> t;
  if (!(step > 0)) {
    for (int i = 0; i <= 6; ++i) t.push_back(lo + (hi - lo) * i / 6);
    return t;
  }
  const double eps = 1e-9 * step;
  for (double k = std::ceil((std::max(lo, tick_lo) - eps) / step); k * step <= std::min(hi, tick_hi) + eps; k += 1)
    t.push_back(k * step);
  return t;
}
}  // namespace

void PlotArea::draw_axes(Svg& svg, const std::string& xlabel, const std::string& ylabel, const char* xfmt,
                         const char* yfmt) const {
  if (!yfmt) yfmt = xfmt;
  constexpr double kTick = 11, kTitle = 13;
  for (double v : ticks(x0, x1, xstep, x_tick_lo, x_tick_hi)) {
    const double X = px(v);
    svg.line(X, top, X, top + height, "#e5e5e5", 1);
    svg.line(X, top + height, X, top + height + 4, "#444", 1);
    svg.text(X, top + height + 17, tick_text(v, xfmt), kTick, "middle", "#444");
  }
  double widest = 0;
  for (double v : ticks(y0, y1, ystep, y_tick_lo, y_tick_hi)) {
    const double Y = py(v);
    const std::string t = tick_text(v, yfmt);
    svg.line(left, Y, left + width, Y, "#e5e5e5", 1);
    svg.line(left - 4, Y, left, Y, "#444", 1);
    svg.text(left - 7, Y + 4, t, kTick, "end", "#444");
    widest = std::max(widest, text_width(t, kTick));
  }
  svg.rect(left, top, width, height, "none", "#444");
  svg.text(left + width / 2, top + height + 38, xlabel, kTitle, "middle");
  // Rotated -90 degrees, the title's glyphs rise to the left of its baseline: keep the ascent clear
  // of the widest tick label.
  svg.text(left - 7 - widest - 8 - kDescent * kTitle, top + height / 2, ylabel, kTitle, "middle", "#222", false, -90);
}

bool LabelPlacer::free(const Svg& svg, const Box& b) const {
  if (!b.inside(bounds_)) return false;
  for (const Box& t : taken_)
    if (b.overlaps(t)) return false;
  for (const TextBox& t : svg.text_boxes())
    if (b.overlaps(t.box)) return false;
  return true;
}

bool LabelPlacer::place(Svg& svg, double x, double y, const LabelParts& parts, double size, bool bold) {
  std::string text;
  for (const auto& p : parts) text += p.first;
  // gap: clear of the point's own marker (blocked with a radius up to 10)
  const double tw = text_width(text, size, bold), gap = 12;
  // The label's box relative to its baseline start, halo included.
  auto box_at = [&](double bx, double by) {
    return Box{bx - kHalo, by - kAscent * size - kHalo, bx + tw + kHalo, by + kDescent * size + kHalo};
  };
  auto put = [&](double bx, double by, bool leader) {
    const Box b = box_at(bx, by);
    taken_.push_back(b);
    if (leader) {
      const double lx = std::clamp(x, b.x0, b.x1), ly = std::clamp(y, b.y0, b.y1);
      svg.line(x, y, lx, ly, parts.front().second, 0.8, "2,2");
    }
    svg.label_parts(bx, by, parts, size, bold);
  };
  // Baseline start for: right, right-up, right-down, left, left-up, left-down, above, below.
  const double mid = size * (kAscent - kDescent) / 2, up = -gap, down = gap + kAscent * size;
  const std::vector<std::pair<double, double>> spots = {{gap, mid},       {gap, up},       {gap, down},
                                                        {-gap - tw, mid}, {-gap - tw, up}, {-gap - tw, down},
                                                        {-tw / 2, up},    {-tw / 2, down}};
  for (int ring = 0; ring < 10; ++ring) {
    const double push = ring * (size + 3);
    for (auto [dx, dy] : spots) {
      const double sx = dx > 0 ? dx + push : (dx < -tw / 2 - 1 ? dx - push : dx);
      const double sy = dy == mid ? dy : (dy < 0 ? dy - push : dy + push);
      if (free(svg, box_at(x + sx, y + sy))) {
        put(x + sx, y + sy, ring > 0);
        return true;
      }
    }
  }
  // Crowded: the free spot nearest the point anywhere in the bounds, with a leader line.
  double best = 1e300, bx = 0, by = 0;
  for (double sy = bounds_.y0 + kAscent * size + kHalo; sy + kDescent * size + kHalo <= bounds_.y1; sy += 3)
    for (double sx = bounds_.x0 + kHalo; sx + tw + kHalo <= bounds_.x1; sx += 3) {
      const double d = std::hypot(sx + tw / 2 - x, sy - mid - y);
      if (d < best && free(svg, box_at(sx, sy))) best = d, bx = sx, by = sy;
    }
  if (best < 1e300) {
    put(bx, by, true);
    return true;
  }
  svg.label_parts(x + gap, y + mid, parts, size, bold);
  return false;
}

}  // namespace hamu::cli
