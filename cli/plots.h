// cli/plots.h: the report figures, drawn from the reports' own JSON (so a figure can be redrawn, and
// tested, from any saved report): the unlearning trade-off of `hamu compare` and the forget-set
// hardness of `hamu hardness`.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cli/svg.h"
#include "engine/json.h"

namespace hamu::cli {

// ---- hamu compare: forget accuracy (y) against retain accuracy (x), in percent --------------------
struct TradeOffMethod {
  std::string name;                                 // with the stop reason when it stopped early
  bool hamu = false;                                // drawn a little heavier
  std::vector<std::pair<double, double>> path;      // (retain %, forget %): the original, evaluations, the end
};
struct TradeOffFigure {
  std::string data, split;
  int64_t steps = 0, eval_every = 0, batch = 0, forget_batch = 0;
  double lr = 0, ratio = 0;
  bool sampled = false;  // intermediate evaluations on a subsample
  std::pair<double, double> original, retrained;
  std::vector<TradeOffMethod> methods;
};
// From compare.json (hamu compare --json); InputError naming the key when something is missing.
TradeOffFigure trade_off_from_json(const Json& report);
Svg trade_off_svg(const TradeOffFigure& fig);

// ---- hamu hardness: histogram of kappa_j and a heat map of the cosines --------------------------------
struct HardnessFigure {
  std::string split, verdict;
  int64_t n_forget = 0, n_retain = 0;
  double share_hard = 0, kappa = 0;
  std::vector<double> sample_kappa;  // kappa_j of every scored forget sample
  std::vector<std::string> class_names;
  struct Row {
    double kappa, norm;
    int64_t label;
  };
  std::vector<Row> rows;           // heat-map rows (forget samples)
  std::vector<int64_t> col_labels;  // heat-map columns (retain samples)
  std::vector<double> col_norms;
  std::vector<std::vector<double>> k;  // K[row][col]
};
// From hardness.json (hamu hardness --json).
HardnessFigure hardness_from_json(const Json& report);
Svg hardness_svg(const HardnessFigure& fig);

// Histogram of kappa_j over the 0.5%..99.5% range of the values (the tails counted in the edge bins,
// so one extreme sample does not flatten the picture), on a nice axis that reaches zero when the
// values stop short of it; the bin width divides the tick step, so zero is always a bin edge and no
// bin mixes easy and hard samples.
struct KappaHistogram {
  double lo = 0, hi = 0, step = 0, width = 0;  // axis range, tick step, bin width
  std::vector<int64_t> counts;
  int64_t below = 0, above = 0;  // samples outside [lo, hi), counted in the first / last bin
};
KappaHistogram kappa_histogram(const std::vector<double>& values, int target_bins);

// Positions for labels wanted at `want` (sorted ascending), at least `gap` apart and inside [lo, hi],
// each as close to its wish as that allows. Exposed for tests.
std::vector<double> spread_positions(const std::vector<double>& want, double gap, double lo, double hi);

}  // namespace hamu::cli
