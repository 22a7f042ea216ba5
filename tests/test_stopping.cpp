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
                     StopRule::retain_rise, StopRule::automatic})
    CHECK(parse_stop_rule(stop_rule_name(r)) == r);
  CHECK(std::string(stop_reason_name(StopReason::retain_rise)) == "retain_rise");
  // auto is loss-rise or retain-rise where held-out data exists (images), none where it does not (text).
  CHECK(resolve_stop_rule(StopRule::automatic, true) == StopRule::automatic);
  CHECK(resolve_stop_rule(StopRule::automatic, false) == StopRule::none);
  CHECK(resolve_stop_rule(StopRule::kappa, false) == StopRule::kappa);
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

TEST_CASE("stopping: retain-rise compares the retain mean loss with the original model's, relatively") {
  std::mt19937 g(std::random_device{}());
  StopProbe p;
  p.retain = losses(g, 2000, 0.5);
  const double base = mean_loss(p.retain);
  CHECK_FALSE(retain_rise_rule_met(p, base, 0.05));  // unchanged
  for (float& x : p.retain) x *= 1.04f;
  CHECK_FALSE(retain_rise_rule_met(p, base, 0.05));  // +4%
  for (float& x : p.retain) x *= 1.02f;
  CHECK(retain_rise_rule_met(p, base, 0.05));  // +6.1%
  CHECK_FALSE(retain_rise_rule_met(p, 0.0, 0.05));  // no baseline measured: never fires
  CHECK_FALSE(retain_rise_rule_met(StopProbe{}, base, 0.05));
  CHECK(retain_rise_rule_met(p, base, 0.0));
}

TEST_CASE("stopping: auto stops on whichever of loss-rise and retain-rise fires first, against start()'s baseline") {
  std::mt19937 g(std::random_device{}());
  struct Path {
    double forget_per_step, retain_per_step;
    StopReason want;
    int64_t at;
  };
  // Forget loss from 0.1 towards the held-out 1.0; retain loss from 0.2, rising (or falling) per step.
  for (const Path& path : {Path{0.05, 0.0, StopReason::loss_rise, 20}, Path{0.01, 0.002, StopReason::retain_rise, 10},
                           Path{0.05, -0.001, StopReason::loss_rise, 20}, Path{0.002, 0.0008, StopReason::retain_rise, 15}}) {
    CAPTURE(path.forget_per_step);
    CAPTURE(path.retain_per_step);
    StopSettings s;
    s.rule = StopRule::automatic;
    s.check_every = 5;
    double forget_mean = 0.1, retain_mean = 0.2;
    int probes = 0;
    StopMonitor m(s, [&] {
      ++probes;
      StopProbe p;
      p.heldout = losses(g, 500, 1.0);
      p.forget = losses(g, 500, forget_mean);
      p.retain = std::vector<float>(2000, float(retain_mean));
      return p;
    });
    m.start();
    CHECK(probes == 1);
    CHECK(std::abs(m.retain_baseline() - 0.2) < 1e-6);
    int64_t stopped = 0;
    for (int64_t step = 1; step <= 60 && !stopped; ++step) {
      forget_mean += path.forget_per_step;
      retain_mean += path.retain_per_step;
      if (std::optional<StopReason> why = m.after_step(step, report(0, 10), true)) {
        CHECK(*why == path.want);
        stopped = step;
      }
    }
    // retain +5% of 0.2 = 0.01: passed after 5.x steps at 0.002 (check at 10), 12.5 steps at 0.0008 (check at 15).
    CHECK(stopped == path.at);
  }
  // Only retain-rise and auto spend a probe on start().
  StopSettings s;
  s.rule = StopRule::loss_rise;
  int probes = 0;
  StopMonitor m(s, [&] {
    ++probes;
    return StopProbe{};
  });
  m.start();
  CHECK(probes == 0);
}
