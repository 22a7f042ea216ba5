// tests/test_plots.cpp: the report figures (cli/plots.h, cli/svg.h): label spreading, the kappa
// histogram's zero edge, text-box bookkeeping, and the two figures drawn from the demo's real reports
// (tests/fixtures/plots, made by scripts/make_plot_fixtures.py) and from random data: no two texts
// overlap, none leaves the canvas, every method and class is named. HAMU_SVG_OUT=DIR also writes the
// figures there (tests/svg_test.sh renders them with rsvg-convert).
#include <doctest/doctest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>

#include "cli/plots.h"
#include "cli/svg.h"
#include "engine/json.h"

using namespace hamu;
using namespace hamu::cli;

namespace {

const std::string kFixtures = std::filesystem::path(__FILE__).parent_path().string() + "/fixtures/plots/";

std::string describe_overlaps(const Svg& svg) {
  std::string s;
  for (auto [i, j] : svg.overlapping_texts())
    s += "'" + svg.text_boxes()[i].text + "' overlaps '" + svg.text_boxes()[j].text + "'\n";
  for (size_t i : svg.texts_off_canvas()) s += "'" + svg.text_boxes()[i].text + "' leaves the canvas\n";
  return s;
}

void maybe_save(const Svg& svg, const std::string& name) {
  const char* dir = getenv("HAMU_SVG_OUT");
  if (dir && *dir) svg.save(std::string(dir) + "/" + name);
}

size_t count_text(const Svg& svg, const std::string& text) {
  size_t n = 0;
  for (const TextBox& t : svg.text_boxes()) n += t.text == text;
  return n;
}

}  // namespace

TEST_CASE("spread_positions keeps labels apart, in range, and in order") {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng() % 12;
    const double lo = 0, hi = 300, gap = 12;
    std::vector<double> want(n);
    for (double& w : want) w = std::uniform_real_distribution<double>(-20, 320)(rng);
    std::sort(want.begin(), want.end());
    const std::vector<double> at = spread_positions(want, gap, lo, hi);
    REQUIRE(at.size() == n);
    for (size_t i = 0; i < n; ++i) {
      CHECK(at[i] >= lo - 1e-9);
      CHECK(at[i] <= hi + 1e-9);
      if (i) CHECK(at[i] - at[i - 1] >= gap - 1e-9);
    }
  }
  // Labels with room stay where they are wanted.
  const std::vector<double> at = spread_positions({10, 100, 200}, 12, 0, 300);
  CHECK(at == std::vector<double>{10, 100, 200});
}

TEST_CASE("kappa_histogram: zero is a bin edge, so no bin mixes easy and hard samples") {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<double> v(1 + rng() % 3000);
    const double shift = std::uniform_real_distribution<double>(-3, 1)(rng);
    const double scale = std::pow(10.0, std::uniform_real_distribution<double>(-4, 2)(rng));
    for (double& x : v) x = scale * (std::normal_distribution<double>(0, 1)(rng) + shift);
    const KappaHistogram h = kappa_histogram(v, 30);
    REQUIRE(h.width > 0);
    int64_t total = 0;
    for (int64_t c : h.counts) total += c;
    CHECK(total == int64_t(v.size()));
    CHECK(std::fabs(h.lo + h.width * double(h.counts.size()) - h.hi) < 1e-6 * (h.hi - h.lo));
    if (h.lo < 0 && h.hi > 0) {
      const double k = -h.lo / h.width;  // the bin index where zero falls must be whole
      CHECK(std::fabs(k - std::round(k)) < 1e-6);
    }
    // Every sample inside the axis sits in a bin entirely on its side of zero.
    for (double x : v) {
      if (x < h.lo || x >= h.hi) continue;
      const double a = h.lo + h.width * std::floor((x - h.lo) / h.width);
      if (x > 0) CHECK(a >= -1e-9 * h.width);
      if (x < 0) CHECK(a + h.width <= 1e-9 * h.width);
    }
  }
}

TEST_CASE("Svg records text boxes and finds overlaps, rotated text included") {
  Svg svg(400, 200);
  svg.text(10, 50, "hello world", 12);
  svg.text(60, 52, "overlaps", 12);    // starts inside "hello world"
  svg.text(10, 150, "far away", 12);
  svg.text(300, 100, "vertical label", 12, "middle", "#222", false, -90);
  svg.text(295, 40, "x", 12);           // within the rotated label's column, above its top
  const auto pairs = svg.overlapping_texts();
  REQUIRE(pairs.size() == 1);
  CHECK(svg.text_boxes()[pairs[0].first].text == "hello world");
  CHECK(svg.text_boxes()[pairs[0].second].text == "overlaps");
  const Box& v = svg.text_boxes()[3].box;
  CHECK(v.y1 - v.y0 > v.x1 - v.x0);  // a -90 degree label is tall and thin
  svg.text(395, 100, "off the edge", 12);
  CHECK(svg.texts_off_canvas() == std::vector<size_t>{5});
  // Widths: wider strings, bigger sizes and bold are wider.
  CHECK(text_width("WWW", 12) > text_width("iii", 12));
  CHECK(text_width("abc", 24) == doctest::Approx(2 * text_width("abc", 12)));
  CHECK(text_width("abc", 12, true) > text_width("abc", 12));
}

TEST_CASE("the label placer never overlaps while there is room") {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 20; ++trial) {
    Svg svg(600, 400);
    LabelPlacer placer(Box{0, 0, 600, 400});
    const double cx = std::uniform_real_distribution<double>(100, 500)(rng);
    const double cy = std::uniform_real_distribution<double>(100, 300)(rng);
    for (int k = 0; k < 8; ++k)  // eight labels on (nearly) one point
      CHECK(placer.place(svg, cx + (rng() % 3), cy + (rng() % 3), {{"method-" + std::to_string(k), "#000"}}, 12, true));
    CHECK(describe_overlaps(svg) == "");
  }
}

TEST_CASE("compare figure from the demo's compare.json: zoom, one label per method, no text overlap") {
  const Json report = load_json(kFixtures + "compare_demo.json");
  const TradeOffFigure fig = trade_off_from_json(report);
  REQUIRE(fig.methods.size() == 7);
  const Svg svg = trade_off_svg(fig);
  maybe_save(svg, "compare_demo.svg");
  CHECK(describe_overlaps(svg) == "");
  for (const TradeOffMethod& m : fig.methods) CHECK_MESSAGE(count_text(svg, m.name) == 1, m.name);
  CHECK(count_text(svg, "original") == 1);
  CHECK(count_text(svg, "retrained") == 1);
  bool zoom = false;
  for (const TextBox& t : svg.text_boxes()) zoom = zoom || t.text.rfind("zoom on the retrained model", 0) == 0;
  CHECK(zoom);
  // No two methods share a colour.
  std::set<std::string> colours;
  for (size_t i = 0; i < fig.methods.size(); ++i) colours.insert(palette(i));
  CHECK(colours.size() == fig.methods.size());
  // No large blank margin: the canvas ends shortly after the zoom panel's frame.
  double right = 0;
  for (const TextBox& t : svg.text_boxes()) right = std::max(right, t.box.x1);
  CHECK(svg.width() - right < 140);
}

TEST_CASE("compare figure from random trajectories: no text overlap, every method named") {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 30; ++trial) {
    TradeOffFigure f;
    f.data = "fashion-mnist", f.split = "class=" + std::to_string(rng() % 10), f.steps = 100, f.eval_every = 12;
    f.lr = 0.01, f.ratio = 0.1, f.batch = 128, f.forget_batch = 128, f.sampled = true;
    std::uniform_real_distribution<double> u(0, 1);
    f.original = {85 + 10 * u(rng), 80 + 15 * u(rng)};
    f.retrained = {85 + 10 * u(rng), 5 * u(rng)};
    const size_t n = 1 + rng() % 9;
    for (size_t i = 0; i < n; ++i) {
      TradeOffMethod m;
      m.name = "method" + std::to_string(i);
      m.hamu = i < 2;
      m.path.push_back(f.original);
      // Most ends crowd near the retrained model (as in practice); some wander off.
      const bool crowd = u(rng) < 0.7;
      const std::pair<double, double> end =
          crowd ? std::make_pair(f.retrained.first - 2 * u(rng), std::max(0.0, f.retrained.second + 2 * u(rng) - 1))
                : std::make_pair(100 * u(rng), 100 * u(rng));
      for (int k = 1; k <= 8; ++k) {
        const double t = k / 8.0;
        m.path.push_back({f.original.first + t * (end.first - f.original.first) + u(rng),
                          std::max(0.0, f.original.second + t * (end.second - f.original.second))});
      }
      m.path.push_back(end);
      f.methods.push_back(m);
    }
    const Svg svg = trade_off_svg(f);
    CHECK(describe_overlaps(svg) == "");
    for (const TradeOffMethod& m : f.methods) CHECK_MESSAGE(count_text(svg, m.name) == 1, m.name);
  }
}

TEST_CASE("hardness figure from a real hardness.json: every class named, no text overlap, maths as symbols") {
  const Json report = load_json(kFixtures + "hardness_demo.json");
  const HardnessFigure fig = hardness_from_json(report);
  REQUIRE(fig.class_names.size() == 10);
  const Svg svg = hardness_svg(fig);
  maybe_save(svg, "hardness_demo.svg");
  CHECK(describe_overlaps(svg) == "");
  for (const std::string& c : fig.class_names) CHECK_MESSAGE(count_text(svg, c) == 1, c);
  bool kappa_j = false, colour_bar = false;
  for (const TextBox& t : svg.text_boxes()) {
    kappa_j = kappa_j || t.text.find("\u03ba\u2c7c = \u27e8\u2207\u2113(f\u2c7c)") != std::string::npos;
    colour_bar = colour_bar || t.text == "cosine";
  }
  CHECK(kappa_j);
  CHECK(colour_bar);
  // Counts as plain integers on the y axis, never e-notation.
  for (const TextBox& t : svg.text_boxes()) CHECK_MESSAGE(t.text.find("e+") == std::string::npos, t.text);
}

TEST_CASE("hardness figure with many forget and retain classes (random split): labels all shown, apart") {
  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 10; ++trial) {
    HardnessFigure f;
    f.split = "random=0.1", f.verdict = "moderate", f.n_forget = 6000, f.n_retain = 4000;
    f.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
    for (int i = 0; i < 3000; ++i) f.sample_kappa.push_back(std::normal_distribution<double>(0.1, 1)(rng));
    f.share_hard = 0.5, f.kappa = 0.1;
    for (int i = 0; i < 32; ++i) {
      f.rows.push_back({std::normal_distribution<double>(0, 1)(rng), 1 + double(rng() % 5), int64_t(rng() % 10)});
      f.col_labels.push_back(int64_t(rng() % 10));
      f.col_norms.push_back(1 + double(rng() % 5));
    }
    for (int i = 0; i < 32; ++i) {
      f.k.emplace_back();
      for (int j = 0; j < 32; ++j) f.k.back().push_back(std::normal_distribution<double>(0, 2)(rng));
    }
    const Svg svg = hardness_svg(f);
    if (trial == 0) maybe_save(svg, "hardness_random.svg");
    CHECK(describe_overlaps(svg) == "");
    std::set<int64_t> rows, cols;
    for (const auto& r : f.rows) rows.insert(r.label);
    for (int64_t c : f.col_labels) cols.insert(c);
    for (size_t c = 0; c < 10; ++c)
      CHECK(count_text(svg, f.class_names[c]) == size_t(rows.count(int64_t(c))) + size_t(cols.count(int64_t(c))));
  }
}
