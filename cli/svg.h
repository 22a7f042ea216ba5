// cli/svg.h: a small SVG writer for the reports (scatter/line plots, histograms, heat maps), with
// plot-area mapping and axes, so figures need no plotting library.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace hamu::cli {

class Svg {
 public:
  Svg(double width, double height);
  void rect(double x, double y, double w, double h, const std::string& fill, const std::string& stroke = "none",
            double opacity = 1.0);
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1.0,
            const std::string& dash = "");
  void polyline(const std::vector<std::pair<double, double>>& pts, const std::string& stroke, double width = 1.5,
                const std::string& dash = "", double opacity = 1.0);
  // A closed shape (markers: diamonds, squares, stars).
  void polygon(const std::vector<std::pair<double, double>>& pts, const std::string& fill,
               const std::string& stroke = "none", double stroke_width = 1.0);
  void circle(double cx, double cy, double r, const std::string& fill, const std::string& stroke = "none",
              double stroke_width = 1.0);
  // anchor: start | middle | end
  void text(double x, double y, const std::string& s, double size = 12, const std::string& anchor = "start",
            const std::string& fill = "#222", bool bold = false, double rotate = 0);
  // Text with a white halo, so a label stays readable where it crosses lines or grid.
  void label(double x, double y, const std::string& s, double size = 12, const std::string& anchor = "start",
             const std::string& fill = "#222", bool bold = false);
  // One haloed label made of differently coloured parts (e.g. several method names at one point).
  void label_parts(double x, double y, const std::vector<std::pair<std::string, std::string>>& parts, double size = 12,
                   bool bold = false);
  // Everything drawn between these two is clipped to the rectangle (lines leaving a zoomed plot area).
  void begin_clip(double x, double y, double w, double h);
  void end_clip();
  std::string str() const;
  void save(const std::string& path) const;  // atomic write

 private:
  double w_, h_;
  std::string body_;
  int clip_count_ = 0;
};

// A rectangular plot area with linear axes from data coordinates to pixels.
struct PlotArea {
  double left, top, width, height;   // pixels
  double x0, x1, y0, y1;             // data range (y grows upwards)
  double px(double x) const { return left + (x - x0) / (x1 - x0) * width; }
  double py(double y) const { return top + height - (y - y0) / (y1 - y0) * height; }
  // Frame, ticks (nticks per axis), grid and axis titles.
  // nticks_y = 0: the same count as x.
  void draw_axes(Svg& svg, const std::string& xlabel, const std::string& ylabel, int nticks = 5,
                 const char* tick_format = "%g", int nticks_y = 0) const;
};

// A "nice" axis range covering [lo, hi]: round ends on a step of 1, 2 or 5 x 10^k, about `target` ticks.
struct NiceAxis {
  double lo, hi;
  int ticks;
};
NiceAxis nice_axis(double lo, double hi, int target = 5);

// Approximate rendered width of `s` at font size `size` (Helvetica-like average glyph width), for
// placing labels without a text-measuring library.
double text_width(const std::string& s, double size);

// Distinct, colour-blind-friendly colours (Okabe-Ito), cycled.
const std::string& palette(size_t i);
// Escapes &, <, >, " for SVG text.
std::string svg_escape(const std::string& s);

}  // namespace hamu::cli
