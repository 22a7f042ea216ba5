// tests/test_stopping.cpp: the reference-free stopping rules (unlearn/stopping.h) on synthetic loss
// sequences, and the monitor the runner consults.
#include <doctest/doctest.h>

#include <random>

#include "unlearn/stopping.h"

using namespace hamu;

namespace {

// n losses ~ |N(mean, 0.3)|, fresh each call.
std::vector<float> losses(std::mt19937& g, int n, double mean) {
  std::normal_distribution<double> d(mean, 0.3);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(std::abs(d(g)));
  return v;
}

HamuReport report(int collateral, int blocks) {
  HamuReport r;
  r.n_blocks = blocks;
  r.n_collateral = collateral;
  r.applied = 1;
  return r;
}

}  // namespace

TEST_CASE("stopping: rule names round-trip and bad names name --stop") {
  for (StopRule r : {StopRule::none, StopRule::criterion, StopRule::mia, StopRule::loss_rise, StopRule::kappa,
                     StopRule::automatic})
    CHECK(parse_stop_rule(stop_rule_name(r)) == r);
  CHECK_THROWS_WITH_AS(parse_stop_rule("soon"), doctest::Contains("--stop"), InputError);
  CHECK(std::string(stop_reason_name(StopReason::mia)) == "mia");
  CHECK(std::string(stop_reason_name(StopReason::loss_rise)) == "loss_rise");
  CHECK(std::string(stop_reason_name(StopReason::kappa)) == "kappa");
}

TEST_CASE("stopping: mia fires once the forget losses reach the held-out ones, and stays fired above them") {
  std::mt19937 g(std::random_device{}());
  StopProbe p;
  p.heldout = losses(g, 400, 1.0);
  p.forget = losses(g, 400, 0.2);  // memorised: far below held-out
  CHECK(forget_heldout_auc(p) > 0.9);
  CHECK_FALSE(mia_rule_met(p, 0.05));
  p.forget = losses(g, 400, 1.0);  // indistinguishable
  CHECK(std::abs(forget_heldout_auc(p) - 0.5) < 0.08);
  CHECK(mia_rule_met(p, 0.1));
  p.forget = losses(g, 400, 3.0);  // class forgetting: above the held-out same-class losses (one-sided)
  CHECK(forget_heldout_auc(p) < 0.1);
  CHECK(mia_rule_met(p, 0.05));
  CHECK_FALSE(mia_rule_met(StopProbe{}, 0.05));  // no data: never fires
}

TEST_CASE("stopping: loss-rise compares mean forget loss with the held-out mean") {
  std::mt19937 g(std::random_device{}());
  StopProbe p;
  p.heldout = losses(g, 300, 1.0);
  p.forget = losses(g, 300, 0.7);
  CHECK_FALSE(loss_rise_rule_met(p));
  p.forget = losses(g, 300, 1.3);
  CHECK(loss_rise_rule_met(p));
  p.forget = p.heldout;  // equal means count as reached
  CHECK(loss_rise_rule_met(p));
}

TEST_CASE("stopping: kappa needs a sustained majority over the window") {
  CHECK_FALSE(kappa_rule_met({}, 0.75));
  CHECK(kappa_rule_met({true, true, true, false}, 0.75));
  CHECK_FALSE(kappa_rule_met({true, false, true, false}, 0.75));
  StopSettings s;
  s.rule = StopRule::kappa;
  s.check_every = 4;
  StopMonitor m(s, {});
  // 5 of 10 blocks is not a majority: a window of such steps never fires.
  for (int step = 1; step <= 12; ++step) CHECK_FALSE(m.after_step(step, report(5, 10), true));
}

TEST_CASE("stopping: kappa fires on the first full window with enough collateral steps") {
  StopSettings s;
  s.rule = StopRule::kappa;
  s.check_every = 4;
  s.kappa_share = 1.0;
  StopMonitor m(s, {});
  int fired_at = 0;
  const int collateral[] = {8, 8, 2, 8, 8, 8, 8, 8};  // of 10 blocks
  for (int step = 1; step <= 8 && !fired_at; ++step)
    if (std::optional<StopReason> why = m.after_step(step, report(collateral[step - 1], 10), true)) {
      CHECK(*why == StopReason::kappa);
      fired_at = step;
    }
  CHECK(fired_at == 7);  // steps 4..7 are the first window of four collateral steps
  // A skipped (not applied) step never counts as collateral.
  StopMonitor m2(s, {});
  for (int step = 1; step <= 8; ++step) CHECK_FALSE(m2.after_step(step, report(10, 10), false));
}

TEST_CASE("stopping: the monitor probes every K steps and stops on the first check that meets the rule") {
  std::mt19937 g(std::random_device{}());
  for (StopRule rule : {StopRule::mia, StopRule::loss_rise}) {
    CAPTURE(stop_rule_name(rule));
    StopSettings s;
    s.rule = rule;
    s.check_every = 5;
    int probes = 0;
    double forget_mean = 0.1;  // the forget loss rises 0.05 per step towards and past the held-out 1.0
    StopMonitor m(s, [&] {
      ++probes;
      StopProbe p;
      p.heldout = losses(g, 500, 1.0);
      p.forget = losses(g, 500, forget_mean);
      return p;
    });
    int64_t stopped = 0;
    for (int64_t step = 1; step <= 60 && !stopped; ++step) {
      forget_mean += 0.05;
      const std::optional<StopReason> why = m.after_step(step, report(0, 10), true);
      CHECK(m.probed() == (step % 5 == 0));
      if (why) {
        CHECK(*why == (rule == StopRule::mia ? StopReason::mia : StopReason::loss_rise));
        stopped = step;
      }
    }
    CHECK(probes == stopped / 5);
    // The forget mean passes the held-out 1.0 at step 18 (0.1 + 0.05*18 = 1.0): loss-rise on the check at 20;
    // mia (AUC <= 0.55) on the same check or the one before.
    if (rule == StopRule::loss_rise) CHECK(stopped == 20);
    else CHECK((stopped == 15 || stopped == 20));
  }
}

TEST_CASE("stopping: none never stops; probe rules without held-out data are refused") {
  StopSettings s;
  s.rule = StopRule::none;
  StopMonitor m(s, {});
  for (int step = 1; step <= 30; ++step) CHECK_FALSE(m.after_step(step, report(10, 10), true));
  s.rule = StopRule::mia;
  CHECK_THROWS_WITH_AS(StopMonitor(s, {}), doctest::Contains("held-out"), InputError);
  s.rule = StopRule::kappa;
  s.check_every = 0;
  CHECK_THROWS_WITH_AS(StopMonitor(s, {}), doctest::Contains("--stop-check-every"), InputError);
}
