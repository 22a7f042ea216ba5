// cli/svg.h: a small SVG writer for the reports (scatter/line plots, histograms, heat maps), with
// plot-area mapping and axes, marker shapes and a label placer, so figures need no plotting library.
// Every text element's bounding box is recorded (estimated from DejaVu Sans advance widths, the font
// rsvg and most Linux viewers fall back to; Helvetica and Arial are narrower), so tests can assert that
// no two texts of a figure overlap.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace hamu::cli {

struct Box {
  double x0, y0, x1, y1;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
  bool inside(const Box& o) const { return x0 >= o.x0 && y0 >= o.y0 && x1 <= o.x1 && y1 <= o.y1; }
};

struct TextBox {
  Box box;
  std::string text;
};

enum class Marker { circle, square, diamond, triangle_up, triangle_down, pentagon, hexagon, star };

class Svg {
 public:
  Svg(double width, double height);
  double width() const { return w_; }
  double height() const { return h_; }
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
  // A marker of radius r centred on (cx, cy).
  void marker(Marker shape, double cx, double cy, double r, const std::string& fill, const std::string& stroke,
              double stroke_width = 1.5);
  // A vertical linear gradient (top colour first) filling a rectangle (colour bars).
  void gradient_rect(double x, double y, double w, double h, const std::vector<std::string>& top_to_bottom);
  // anchor: start | middle | end; rotate in degrees about (x, y), clockwise.
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

  // The estimated box of every text drawn so far, in drawing order.
  const std::vector<TextBox>& text_boxes() const { return texts_; }
  // Pairs (i, j), i < j, of text boxes that overlap; texts that leave the canvas.
  std::vector<std::pair<size_t, size_t>> overlapping_texts() const;
  std::vector<size_t> texts_off_canvas() const;

 private:
  void record_text(double x, double y, const std::string& s, double size, const std::string& anchor, bool bold,
                   double rotate);
  double w_, h_;
  std::string body_;
  int clip_count_ = 0, gradient_count_ = 0;
  std::vector<TextBox> texts_;
};

// The box a text occupies: anchor start | middle | end at baseline y, unrotated.
Box text_box(double x, double y, const std::string& s, double size, const std::string& anchor, bool bold = false);

// A rectangular plot area with linear axes from data coordinates to pixels. Ticks fall on multiples
// of the step (xstep / ystep; 0: six even divisions) inside [tick_lo, tick_hi], so a padded range
// (markers clear of the frame) keeps round tick values.
struct PlotArea {
  double left, top, width, height;  // pixels
  double x0, x1, y0, y1;            // data range (y grows upwards)
  double xstep = 0, ystep = 0;
  double x_tick_lo = -1e300, x_tick_hi = 1e300, y_tick_lo = -1e300, y_tick_hi = 1e300;
  double px(double x) const { return left + (x - x0) / (x1 - x0) * width; }
  double py(double y) const { return top + height - (y - y0) / (y1 - y0) * height; }
  Box box() const { return {left, top, left + width, top + height}; }
  // Frame, ticks, grid and axis titles; the y title sits clear of the widest tick label.
  // yfmt empty: the same as xfmt.
  void draw_axes(Svg& svg, const std::string& xlabel, const std::string& ylabel, const char* xfmt = "%g",
                 const char* yfmt = nullptr) const;
};

// A "nice" axis range covering [lo, hi]: round ends on a step of 1, 2 or 5 x 10^k, about `target` ticks.
struct NiceAxis {
  double lo, hi;
  int ticks;
  double step() const { return (hi - lo) / ticks; }
};
NiceAxis nice_axis(double lo, double hi, int target = 5);

// A tick value as text: printf format, a true minus sign (U+2212), no "-0".
std::string tick_text(double v, const char* format);

// Estimated rendered width of `s` (UTF-8) at font size `size`, from DejaVu Sans advance widths
// (bold about 10% wider); a slight overestimate for Helvetica/Arial.
double text_width(const std::string& s, double size, bool bold = false);

// Okabe-Ito's colour-blind-safe colours without black (which marks reference points): blue,
// vermillion, bluish green, reddish purple, orange, sky blue, yellow; then cycled.
const std::string& palette(size_t i);
// A readable text colour for a palette colour (the yellow is darkened for text on white).
const std::string& palette_text(size_t i);
// Escapes &, <, >, " for SVG text.
std::string svg_escape(const std::string& s);

using LabelParts = std::vector<std::pair<std::string, std::string>>;  // (text, colour)

// Places labels near their points without covering each other, blocked areas (markers) or any text
// already in the SVG, inside `bounds`: eight spots around the point, then the same further out (with a
// dashed leader line back to the point), then a scan of the whole bounds, so a label is never dropped
// and never overlaps while there is room.
class LabelPlacer {
 public:
  explicit LabelPlacer(Box bounds) : bounds_(bounds) {}
  void block(double x, double y, double r) { taken_.push_back({x - r, y - r, x + r, y + r}); }
  void block(const Box& b) { taken_.push_back(b); }
  // Returns false when no free spot was found (the label is then drawn at the first spot).
  bool place(Svg& svg, double x, double y, const LabelParts& parts, double size, bool bold);

 private:
  bool free(const Svg& svg, const Box& b) const;
  Box bounds_;
  std::vector<Box> taken_;
};

}  // namespace hamu::cli
