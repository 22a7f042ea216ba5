// tests/test_method_registry.cpp: the method registry: every built-in method is registered in listing
// order with the traits the runner and the gradients rely on; unknown names are refused with the
// choices; a method defined and registered in this file alone (the cost of a new method) appears in
// the registry and runs through the unchanged runner; HAMU's own (fused) step equals its coefficients
// applied by the runner.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/rng.h"
#include "models/models.h"
#include "unlearn/method_registry.h"
#include "unlearn/runner.h"
#include "unlearn/update.h"

using namespace hamu;

namespace {

// A new method, as a new file would add one: half-step gradient ascent on the forget loss only.
class HalfAscent final : public Method {
 public:
  HalfAscent() : Method("test-half-ascent", "test only: gradient ascent at half the learning rate", {.uses_retain = false}) {}
  StepDecision coefficients(const UnlearnOptions& opt, int count, const std::vector<double>& stats) const override {
    StepDecision d;
    d.report.n_blocks = count;
    for (int i = 0; i < count; ++i) {
      d.coef.push_back(0.0);
      d.coef.push_back(opt.params.lr / 2);
    }
    d.report.applied = 1;
    return d;
  }
};

const MethodRegistration kHalfAscent(std::make_unique<HalfAscent>(), 1000);

const std::vector<std::string> kBuiltIn = {"hamu-q", "hamu-u", "ft", "ga", "gdiff", "kl", "scrub", "npo", "gru", "pcgrad"};

}  // namespace

TEST_CASE("method registry: every built-in method is registered, in listing order, with its traits") {
  const std::vector<std::string>& names = method_names();
  REQUIRE(names.size() >= kBuiltIn.size());
  CHECK(std::vector<std::string>(names.begin(), names.begin() + long(kBuiltIn.size())) == kBuiltIn);
  CHECK(method_list().rfind("hamu-q, hamu-u, ft, ga, gdiff, kl, scrub, npo, gru, pcgrad", 0) == 0);
  CHECK(registered_methods().size() == names.size());
  for (const std::string& n : kBuiltIn) {
    CAPTURE(n);
    const Method& m = parse_method(n);
    CHECK(m.name() == n);
    CHECK(find_method(n) == &m);
    CHECK_FALSE(m.help().empty());
    CHECK(m.is_hamu() == (n == "hamu-q" || n == "hamu-u"));
    CHECK(m.needs_original() == (n == "kl" || n == "scrub" || n == "npo"));
    CHECK(m.uses_retain() == (n != "ga"));
    CHECK(m.uses_forget() == (n != "ft"));
    CHECK(m.traits().sequence_level == (n == "npo"));  // npo compares whole-sequence log-likelihoods
  }
  CHECK(&default_method() == &parse_method("hamu-q"));
  CHECK(UnlearnOptions{}.method == &parse_method("hamu-q"));
}

TEST_CASE("method registry: unknown names are refused with the choices") {
  CHECK(find_method("hamu") == nullptr);
  CHECK(find_method("") == nullptr);
  CHECK(find_method("HAMU-Q") == nullptr);
  try {
    parse_method("forget-everything");
    FAIL("no error");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()) == "--method: unknown method 'forget-everything' (choose " + method_list() + ")");
  }
}

TEST_CASE("method registry: a method registered from one test-local file is listed and runs") {
  const std::vector<std::string>& names = method_names();
  CHECK(names.back() == "test-half-ascent");  // rank 1000: after every built-in method
  const Method& m = parse_method("test-half-ascent");
  CHECK(std::string(method_name(m)) == "test-half-ascent");
  CHECK_FALSE(m.is_hamu());
  CHECK_FALSE(m.uses_retain());

  // Through the runner, untouched: a tiny two-class image set, forget class 1.
  ImageDataset ds;
  ds.n = 32;
  ds.c = 1;
  ds.h = ds.w = 4;
  ds.num_classes = 2;
  ds.class_names = {"a", "b"};
  Rng rng(5);
  Split split;
  for (int64_t i = 0; i < ds.n; ++i) {
    const int32_t y = int32_t(i % 2);
    ds.labels.push_back(y);
    for (int64_t k = 0; k < 16; ++k) ds.pixels.push_back(uint8_t((k < 8) == (y == 0) ? 200 : 30 + int(40 * rng.uniform())));
    (y == 1 ? split.forget : split.retain).push_back(i);
  }
  auto model = models::build_model({"mlp", 1, 4, 4, 2}, rng);
  UnlearnOptions opt;
  opt.method = &m;
  opt.params.lr = 0.05;
  opt.steps = 4;
  opt.batch = opt.forget_batch = 8;
  opt.progress = false;
  opt.paired = false;
  const std::vector<Tensor> params = model->parameters();
  std::vector<std::vector<float>> before;
  for (const Tensor& p : params) before.push_back(p.to_vector<float>());
  const UnlearnResult res = run_unlearning(*model, nullptr, ds, split, Normalizer::identity(1), opt, {});
  CHECK(res.steps_done == 4);
  CHECK(res.stop_reason == StopReason::max_steps);
  REQUIRE(res.log.size() == 4);
  CHECK(res.log.back().report.n_blocks == int(params.size()));
  bool moved = false;
  for (size_t i = 0; i < params.size(); ++i) moved = moved || params[i].to_vector<float>() != before[i];
  CHECK(moved);
}

TEST_CASE("method registry: HAMU's own fused step equals its coefficients applied by the runner") {
  for (const char* name : {"hamu-q", "hamu-u"}) {
    CAPTURE(name);
    Rng rng(17);
    std::vector<Tensor> a, b;
    for (int64_t n : {7, 30, 3}) {
      Tensor t = Tensor::empty({n});
      rng.fill_normal(t, 0.0, 1.0);
      a.push_back(t);
      b.push_back(t.clone());
    }
    FusedUpdate ua(a), ub(b);
    for (int i = 0; i < ua.count(); ++i) {
      rng.fill_normal(ua.retain_grads()[size_t(i)], 0.0, 0.3);
      rng.fill_normal(ua.forget_grads()[size_t(i)], 0.1, 0.3);
      ub.retain_grads()[size_t(i)].copy_(ua.retain_grads()[size_t(i)]);
      ub.forget_grads()[size_t(i)].copy_(ua.forget_grads()[size_t(i)]);
    }
    UnlearnOptions opt;
    opt.method = &parse_method(name);
    opt.params.lr = 0.1;
    opt.ratio = 0.2;
    ua.compute_stats();
    ub.compute_stats();
    const std::optional<StepDecision> own = opt.method->own_step(opt, ua);
    REQUIRE(own.has_value());
    const StepDecision host = opt.method->coefficients(opt, ub.count(), ub.stats_host());
    REQUIRE(host.report.applied == 1);
    CHECK(own->report.applied == 1);
    CHECK(own->report.n_direct + own->report.n_rectified + own->report.n_colinear == host.report.n_direct +
                                                                                        host.report.n_rectified +
                                                                                        host.report.n_colinear);
    CHECK(own->report.kappa == host.report.kappa);
    ub.apply(host.coef);
    for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].to_vector<float>() == b[i].to_vector<float>());
  }
}

TEST_CASE("method registry: options are validated by the method that reads them") {
  UnlearnOptions opt;
  opt.ratio = 2;  // above clip^2 = 1: never feasible with the learning-rate radius
  opt.method = &parse_method("hamu-u");
  CHECK_THROWS_AS(validate_unlearn_options(opt, 1, 1), InputError);
  opt.method = &parse_method("ga");  // baselines do not read --ratio
  CHECK_NOTHROW(validate_unlearn_options(opt, 1, 1));
  CHECK_THROWS_AS(hamu_config(opt), Error);
  opt.method = &parse_method("hamu-u");
  opt.ratio = 0.5;
  opt.scope = HamuScope::global;
  opt.split = ConstraintSplit::softmax_dp;
  const kernels::HamuConfig c = hamu_config(opt);
  CHECK(c.variant == kernels::hamu_u);
  CHECK(c.scope == kernels::scope_global);
  CHECK(c.split == kernels::split_softmax_dp);
  CHECK(c.constraint == doctest::Approx(0.5 * opt.params.lr));
  CHECK(parse_scope(scope_name(HamuScope::global)) == HamuScope::global);
  for (ConstraintSplit s : {ConstraintSplit::grad_norm, ConstraintSplit::uniform, ConstraintSplit::softmax_dp})
    CHECK(parse_constraint_split(constraint_split_name(s)) == s);
  CHECK_THROWS_AS(parse_scope("everywhere"), InputError);
  CHECK(parse_optimizer(optimizer_name(OptimizerKind::adamw)) == OptimizerKind::adamw);
  CHECK_THROWS_AS(parse_optimizer("adam"), InputError);
  CHECK(std::string(stop_reason_name(StopReason::criterion)) == "criterion");
}
