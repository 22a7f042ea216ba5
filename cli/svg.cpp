// cli/svg.cpp: the SVG writer.
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
}  // namespace

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
  static const std::vector<std::string> colors = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                                  "#56B4E9", "#F0E442", "#000000", "#999999", "#8B4513"};
  return colors[i % colors.size()];
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

void Svg::label(double x, double y, const std::string& s, double size, const std::string& anchor,
                const std::string& fill, bool bold) {
  body_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(size) + "\" text-anchor=\"" + anchor +
           "\" fill=\"" + fill + "\"" + (bold ? " font-weight=\"bold\"" : "") +
           " stroke=\"white\" stroke-width=\"3\" stroke-linejoin=\"round\" paint-order=\"stroke\">" + svg_escape(s) +
           "</text>\n";
}

void Svg::text(double x, double y, const std::string& s, double size, const std::string& anchor,
               const std::string& fill, bool bold, double rotate) {
  body_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(size) + "\" text-anchor=\"" + anchor +
           "\" fill=\"" + fill + "\"" + (bold ? " font-weight=\"bold\"" : "") +
           (rotate != 0 ? " transform=\"rotate(" + num(rotate) + " " + num(x) + " " + num(y) + ")\"" : std::string()) +
           ">" + svg_escape(s) + "</text>\n";
}

void Svg::label_parts(double x, double y, const std::vector<std::pair<std::string, std::string>>& parts, double size,
                      bool bold) {
  body_ += "<text xml:space=\"preserve\" x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(size) + "\"" +
           (bold ? " font-weight=\"bold\"" : "") +
           " stroke=\"white\" stroke-width=\"3\" stroke-linejoin=\"round\" paint-order=\"stroke\">";
  for (const auto& [text, fill] : parts) body_ += "<tspan fill=\"" + fill + "\">" + svg_escape(text) + "</tspan>";
  body_ += "</text>\n";
}

void Svg::begin_clip(double x, double y, double w, double h) {
  const std::string id = "clip" + std::to_string(++clip_count_);
  body_ += "<defs><clipPath id=\"" + id + "\"><rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) +
           "\" height=\"" + num(h) + "\"/></clipPath></defs>\n<g clip-path=\"url(#" + id + ")\">\n";
}

void Svg::end_clip() { body_ += "</g>\n"; }

std::string Svg::str() const {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(w_) + "\" height=\"" + num(h_) +
         "\" viewBox=\"0 0 " + num(w_) + " " + num(h_) +
         "\" font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n" +
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

double text_width(const std::string& s, double size) {
  // Count code points, not bytes (labels may hold non-ASCII names).
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return 0.58 * size * double(n);
}

void PlotArea::draw_axes(Svg& svg, const std::string& xlabel, const std::string& ylabel, int nticks,
                         const char* tick_format, int nticks_y) const {
  svg.rect(left, top, width, height, "none", "#444");
  if (nticks_y <= 0) nticks_y = nticks;
  char b[32];
  for (int i = 0; i <= nticks; ++i) {
    const double fx = x0 + (x1 - x0) * i / nticks;
    const double X = px(fx);
    svg.line(X, top, X, top + height, "#e5e5e5", 1);
    std::snprintf(b, sizeof b, tick_format, fx);
    svg.text(X, top + height + 16, b, 11, "middle", "#444");
  }
  for (int i = 0; i <= nticks_y; ++i) {
    const double fy = y0 + (y1 - y0) * i / nticks_y;
    const double Y = py(fy);
    svg.line(left, Y, left + width, Y, "#e5e5e5", 1);
    std::snprintf(b, sizeof b, tick_format, fy);
    svg.text(left - 6, Y + 4, b, 11, "end", "#444");
  }
  svg.text(left + width / 2, top + height + 36, xlabel, 13, "middle");
  svg.text(left - 44, top + height / 2, ylabel, 13, "middle", "#222", false, -90);
}

}  // namespace hamu::cli
