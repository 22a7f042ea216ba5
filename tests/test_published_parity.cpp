// tests/test_published_parity.cpp: hamu's unlearning steps against an outside PyTorch reference of the
// published code's math (tests/fixtures/unlearn_step, made by make_fixture.py there from
// /work/shared/reference/hamu-reference-behaviour.md §5, not from hamu's code): every method (hamu-q/u in
// layer and global scope, the three constraint splits, the lr and a fixed radius, B = 0 and B > 0,
// infeasible with and without --continue-on-infeasible, the stopping criterion; ft, ga, gdiff, kl, scrub,
// npo, gru, pcgrad, --paper-compat, AdamW) with per-objective clipping that bites, a few steps each on a
// tiny MLP and a tiny CNN with frozen BatchNorm, run through what `hamu unlearn` runs (the method
// registry, UnlearnOptions, run_unlearning with its fused update) on fixed batches; and the text
// objectives (answer-token CE, npo, kl, scrub) with their logit gradients.
//
// Compared: the parameters after the run (float64: relative to the size of the update; float32, the CLI's
// dtype: relative to the parameters), each step's report (losses, kappa, norms, clip factors, branch
// counts, feasibility and stopping margins, kappa1/kappa2, projection), the applied steps and the stop
// reason. Where HAMU.md §7 makes hamu differ from the published code on purpose, the fixture holds hamu's
// documented value (the published one beside it, printed here):
//   §7.1 gru/pcgrad project on conflict (<g_r,g_f> > 0); the published test (< 0) is the --paper-compat case;
//   §7.2 global scope is the exact global solution (the published --full_grad step is longer: printed);
//   §7.3 the stopping margin is one-sided (the published margin is printed where they differ);
//   §7.4 branch counts are per step (published: cumulative fractions).
// Differences outside §7, documented elsewhere and not exercised by random data: the colinear test also
// takes ||a_perp||^2 <= 1e-6 ||a||^2 (README "Where hamu differs" 7; the published test ||a_perp|| < 1e-12 on
// a float tensor sends one-element blocks a rounding-directed "rectified" step); npo (not published) takes
// the average of its two clipped gradients (README 8); AdamW gets -step/lr also with a fixed radius
// (HAMU.md §5; measured below); the text KL is averaged over answer positions (measured below). The
// published per-sample clamp of the KL at 0 only acts on rounding-level negatives at the original model.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine/json.h"
#include "engine/nn.h"
#include "engine/rng.h"
#include "engine/safetensors.h"
#include "unlearn/method_registry.h"
#include "unlearn/runner.h"

using namespace hamu;

namespace {

const std::string kDir = (std::filesystem::path(__FILE__).parent_path() / "fixtures" / "unlearn_step").string();

// The fixture's models, layer for layer (nn::Sequential names its children "0", "1", ... as torch does).
std::shared_ptr<nn::Module> build(const std::string& arch) {
  Rng rng(1);
  auto m = std::make_shared<nn::Sequential>();
  if (arch == "mlp") {
    m->add(std::make_shared<nn::Flatten>());
    m->add(std::make_shared<nn::Linear>(12, 8, true, rng));
    m->add(std::make_shared<nn::ReLU>());
    m->add(std::make_shared<nn::Linear>(8, 6, true, rng));
    m->add(std::make_shared<nn::ReLU>());
    m->add(std::make_shared<nn::Linear>(6, 4, true, rng));
  } else {
    m->add(std::make_shared<nn::Conv2d>(2, 3, 3, 1, 1, false, rng));
    m->add(std::make_shared<nn::BatchNorm2d>(3));
    m->add(std::make_shared<nn::ReLU>());
    m->add(std::make_shared<nn::MaxPool2d>(2, 2));
    m->add(std::make_shared<nn::Flatten>());
    m->add(std::make_shared<nn::Linear>(12, 4, true, rng));
  }
  m->assign_names();
  return m;
}

// The model with the fixture's initial weights and BatchNorm statistics, in `dtype`.
std::shared_ptr<nn::Module> load(const std::string& arch, DType dtype) {
  auto m = build(arch);
  m->to(dtype);
  const Checkpoint ck = load_safetensors(kDir + "/model_" + arch + ".safetensors");
  NoGradGuard ng;
  nn::Named all = m->named_weights();
  for (auto& b : m->named_buffers()) all.push_back(b);
  for (auto& [name, t] : all) {
    INFO(arch << " " << name);
    const Tensor& src = ck.get(name);
    REQUIRE(src.shape() == t.shape());
    t.copy_(src);
  }
  return m;
}

// Retain and forget batches cycled in the fixture's order: step k (from 0) uses pair (k + offset) % pairs.
class FixedTask final : public UnlearnTask {
 public:
  FixedTask(const std::string& arch, DType dtype, int offset) : offset_(offset) {
    const Checkpoint ck = load_safetensors(kDir + "/batches_" + arch + ".safetensors");
    for (const char* side : {"retain", "forget"}) {
      const Tensor x = ck.get(std::string(side) + "_x").to(dtype), y = ck.get(std::string(side) + "_y");
      for (int64_t k = 0; k < x.shape()[0]; ++k) {
        Batch b;
        b.images = x.narrow(0, k, 1).contiguous();
        Shape s(b.images.shape().begin() + 1, b.images.shape().end());
        b.images = b.images.reshape(s);
        b.labels = y.narrow(0, k, 1).contiguous().reshape({y.shape()[1]});
        for (int64_t i = 0; i < b.images.shape()[0]; ++i) b.indices.push_back(i);
        (side[0] == 'r' ? retain_ : forget_).push_back(b);
      }
    }
  }
  size_t retain_size() const override { return size_t(retain_[0].size()); }
  size_t forget_size() const override { return size_t(forget_[0].size()); }
  void next_pair(Batch& r, Batch& f) override {
    const size_t k = (step_++ + size_t(offset_)) % retain_.size();
    r = retain_[k];
    f = forget_[k];
  }
  std::vector<int64_t> position() const override { return {int64_t(step_), 0, 0, 0}; }
  void seek(const std::vector<int64_t>& p) override { step_ = size_t(p.at(0)); }
  Tensor logits(nn::Module& model, const Tensor& inputs) const override { return model.forward(inputs); }
  bool fixed_shapes() const override { return true; }

 private:
  std::vector<Batch> retain_, forget_;
  size_t step_ = 0;
  int offset_ = 0;
};

// The options `hamu unlearn` would read from the case's flags (cli/unlearn_setup.cpp).
UnlearnOptions options_for(const Json& c, bool paired) {
  UnlearnOptions o;
  o.method = &parse_method(c["method"].as_string());
  o.params.lr = c["lr"].as_number();
  o.params.clip = c["clip"].as_number();
  o.params.paper_compat = c.contains("paper_compat") && c["paper_compat"].as_bool();
  o.ratio = c["ratio"].as_number();
  if (c.contains("radius")) {
    o.fixed_radius = true;
    o.radius = c["radius"].as_number();
  }
  if (c.contains("scope")) o.scope = parse_scope(c["scope"].as_string());
  if (c.contains("split")) o.split = parse_constraint_split(c["split"].as_string());
  o.continue_on_infeasible = c.contains("continue_on_infeasible") && c["continue_on_infeasible"].as_bool();
  if (c.contains("stop_on_criterion") && c["stop_on_criterion"].as_bool()) {
    o.stop.rule = StopRule::criterion;  // --stop criterion
    o.stop_on_criterion = true;
  }
  if (c.contains("optimizer")) o.optimizer = parse_optimizer(c["optimizer"].as_string());
  o.steps = c["steps"].as_int();
  o.batch = 6;
  o.forget_batch = 4;
  o.paired = paired;
  o.progress = false;
  return o;
}

// One report value of a step as the fixture names it.
double report_value(const StepLog& s, const std::string& col) {
  const HamuReport& r = s.report;
  static const std::map<std::string, double HamuReport::*> doubles = {
      {"kappa", &HamuReport::kappa},           {"retain_norm", &HamuReport::retain_norm},
      {"forget_norm", &HamuReport::forget_norm}, {"retain_scale", &HamuReport::retain_scale},
      {"forget_scale", &HamuReport::forget_scale}, {"feasibility_margin", &HamuReport::feasibility_margin},
      {"stopping_margin", &HamuReport::stopping_margin}, {"kappa1", &HamuReport::kappa1},
      {"kappa2", &HamuReport::kappa2}};
  static const std::map<std::string, int32_t HamuReport::*> ints = {
      {"applied", &HamuReport::applied},       {"n_direct", &HamuReport::n_direct},
      {"n_rectified", &HamuReport::n_rectified}, {"n_colinear", &HamuReport::n_colinear},
      {"n_infeasible", &HamuReport::n_infeasible}};
  if (col == "retain_loss") return s.retain_loss;
  if (col == "forget_loss") return s.forget_loss;
  if (col == "projected") return s.projected ? 1 : 0;
  if (auto it = doubles.find(col); it != doubles.end()) return r.*(it->second);
  if (auto it = ints.find(col); it != ints.end()) return r.*(it->second);
  return NAN;  // a published-only value (printed, not compared)
}

struct Fixture {
  Json cases;
  std::vector<std::string> columns;
  Checkpoint expected;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture out;
    std::ifstream in(kDir + "/cases.json");
    std::stringstream ss;
    ss << in.rdbuf();
    const Json j = Json::parse(ss.str());
    out.cases = j["cases"];
    for (const Json& c : j["report_columns"].as_array()) out.columns.push_back(c.as_string());
    out.expected = load_safetensors(kDir + "/expected.safetensors");
    return out;
  }();
  return f;
}

struct CaseResult {
  double param_err = 0;  // max |hamu - ref| / scale over all parameters (scale: see run_case)
  double report_err = 0;  // max relative error over the compared report values
};

// Runs one case in `dtype` and checks it against the fixture. f64: errors relative to the largest
// element of the update (theta_end - theta_0), so a wrong step of any size shows; f32 (hamu unlearn's
// dtype): relative to the largest parameter, the task's 1e-5.
CaseResult run_case(const Json& c, DType dtype, bool paired) {
  const Fixture& fx = fixture();
  const std::string name = c["name"].as_string(), arch = c["model"].as_string();
  INFO("case " << name << std::string(dtype == DType::f64 ? " f64" : " f32") << std::string(paired ? "" : " --no-paired"));
  auto model = load(arch, dtype);
  const Method& method = parse_method(c["method"].as_string());
  std::shared_ptr<nn::Module> original = method.needs_original() ? load(arch, dtype) : nullptr;
  const UnlearnOptions opt = options_for(c, paired);
  FixedTask task(arch, dtype, c.contains("pair_offset") ? int(c["pair_offset"].as_int()) : 0);
  const UnlearnResult res = run_unlearning(*model, original.get(), task, opt, UnlearnHooks{});

  CHECK(res.steps_done == c["expect_applied_steps"].as_int());
  CHECK(std::string(stop_reason_name(res.stop_reason)) == c["expect_stop"].as_string());

  CaseResult out;
  const bool f64 = dtype == DType::f64;
  // Report, step by step.
  const Tensor& rep = fx.expected.get(name + "/report");
  const int64_t rows = rep.shape()[0], cols = rep.shape()[1];
  REQUIRE(cols == int64_t(fx.columns.size()));
  REQUIRE(int64_t(res.log.size()) == rows);
  const std::vector<double> want = rep.to_vector<double>();
  for (int64_t s = 0; s < rows; ++s) {
    for (int64_t j = 0; j < cols; ++j) {
      const std::string& col = fx.columns[size_t(j)];
      const double w = want[size_t(s * cols + j)], got = report_value(res.log[size_t(s)], col);
      if (std::isnan(got)) continue;
      INFO("step " << s + 1 << " " << col << ": hamu " << got << " reference " << w);
      if (col.rfind("n_", 0) == 0 || col == "applied" || col == "projected") {
        CHECK(got == w);
        continue;
      }
      // Relative, with a floor for values that are 0 up to rounding (the KL gradient at the original
      // model, its kappa and norm): f64 1e-15 absolute, f32 1e-6.
      const double err = std::fabs(got - w) / std::max(std::fabs(w), f64 ? 1e-6 : 1e-2);
      out.report_err = std::max(out.report_err, err);
      CHECK(err <= (f64 ? 1e-9 : 1e-4));
    }
  }
  // Parameters after the run.
  const auto init = load(arch, DType::f64);
  const nn::Named got = model->named_parameters(), start = init->named_parameters();
  double scale = 0, worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const std::vector<double> w = fx.expected.get(name + "/" + got[i].first).to_vector<double>();
    const std::vector<double> g = got[i].second.to(DType::f64).to_vector<double>();
    const std::vector<double> s0 = start[i].second.to_vector<double>();
    REQUIRE(w.size() == g.size());
    for (size_t k = 0; k < w.size(); ++k) {
      scale = std::max(scale, f64 ? std::fabs(w[k] - s0[k]) : std::fabs(w[k]));
      worst = std::max(worst, std::fabs(g[k] - w[k]));
    }
  }
  out.param_err = scale > 0 ? worst / scale : worst;
  if (res.steps_done == 0) {
    CHECK(worst == 0.0);  // a refused step moves nothing
  } else {
    CHECK(scale > 0);
    CHECK(out.param_err <= (f64 ? 1e-9 : 1e-5));
  }
  return out;
}

}  // namespace

TEST_CASE("published parity: every method's steps match the PyTorch reference of the published math") {
  const Fixture& fx = fixture();
  REQUIRE(fx.cases.size() >= 30);
  double worst64 = 0, worst32 = 0, worst_rep32 = 0;
  for (const Json& c : fx.cases.as_array()) {
    const CaseResult a = run_case(c, DType::f64, true);
    const CaseResult b = run_case(c, DType::f64, false);  // two passes (the published sequential pairing)
    const CaseResult d = run_case(c, DType::f32, true);   // hamu unlearn's dtype
    worst64 = std::max({worst64, a.param_err, b.param_err, a.report_err, b.report_err});
    worst32 = std::max(worst32, d.param_err);
    worst_rep32 = std::max(worst_rep32, d.report_err);
    MESSAGE(c["name"].as_string() << ": f64 params " << a.param_err << " report " << a.report_err << "; f32 params "
                                  << d.param_err << " report " << d.report_err);
  }
  MESSAGE("worst: f64 " << worst64 << ", f32 params " << worst32 << ", f32 report " << worst_rep32);
}

TEST_CASE("published parity: the deliberate differences of HAMU.md §7, measured") {
  const Fixture& fx = fixture();
  auto col = [&](const std::string& n) {
    return size_t(std::find(fx.columns.begin(), fx.columns.end(), n) - fx.columns.begin());
  };
  for (const Json& c : fx.cases.as_array()) {
    const std::string name = c["name"].as_string();
    // Not in §7 but HAMU.md §5: AdamW gets -step/lr also with a fixed radius (published: -step/1.0, its
    // internal lr), which changes the step through AdamW's eps only.
    if (c.contains("published_update_rel_diff"))
      MESSAGE(name << ": the published pseudo-gradient scale would change the update by up to "
                   << c["published_update_rel_diff"].as_number() << " (relative, max element)");
    const Tensor& rep = fx.expected.get(name + "/report");
    const int64_t cols = rep.shape()[1];
    const std::vector<double> v = rep.to_vector<double>();
    for (int64_t s = 0; s < rep.shape()[0]; ++s) {
      const double* row = v.data() + s * cols;
      // §7.3: one-sided margin >= the published margin, equal when every block has d > 0.
      CHECK(row[col("stopping_margin")] >= row[col("published_stopping_margin")] - 1e-15);
      if (row[col("stopping_margin")] != row[col("published_stopping_margin")])
        MESSAGE(name << " step " << s + 1 << ": stopping margin " << row[col("stopping_margin")] << " (one-sided) vs "
                     << row[col("published_stopping_margin")] << " (published)");
      // §7.2: global scope in the rectified branch: hamu's step has norm R, the published one more.
      if (c.contains("scope") && row[col("n_rectified")] > 0) {
        CHECK(row[col("published_global_delta_norm")] > row[col("delta_norm")]);
        MESSAGE(name << " step " << s + 1 << ": global step norm " << row[col("delta_norm")] << " (exact) vs "
                     << row[col("published_global_delta_norm")] << " (published --full_grad)");
      }
      if (c.contains("scope") && row[col("n_direct")] > 0)  // the direct branch: the same step
        CHECK(std::fabs(row[col("published_global_delta_norm")] - row[col("delta_norm")]) <=
              1e-12 * row[col("delta_norm")]);
    }
  }
}

TEST_CASE("published parity: text objectives and their logit gradients (Hugging Face causal-LM semantics)") {
  // Completion-only labels: position t predicts label t+1, -100 on prompt and padding. ce and npo are
  // what the published code (ce; npo: HAMU.md §6) computes; kl is hamu's mean over the answer-predicting
  // positions, where the published code averages over every attention-mask position (prompt included,
  // reference §8.9): that difference (the answer-token normalisation of HAMU.md §7.5, applied to the KL
  // too; README "Text unlearning") is measured below.
  const Checkpoint ck = load_safetensors(kDir + "/text_objectives.safetensors");
  const Tensor orig = ck.get("original_logits").to(DType::f64), labels = ck.get("labels");
  MethodParams p;
  struct Objective {
    const char* name;
    std::function<Tensor(const Tensor&)> f;
  };
  const Method &kl = parse_method("kl"), &npo = parse_method("npo"), &scrub = parse_method("scrub"),
               &gdiff = parse_method("gdiff");
  const std::vector<Objective> objectives = {
      {"ce", [&](const Tensor& z) { return gdiff.retain_objective(p, z, labels, Tensor()); }},
      {"kl_hamu", [&](const Tensor& z) { return kl.retain_objective(p, z, labels, orig); }},
      {"npo", [&](const Tensor& z) { return npo.forget_objective(p, z, labels, orig); }},
      {"scrub_retain", [&](const Tensor& z) { return scrub.retain_objective(p, z, labels, orig); }},
  };
  for (const Objective& o : objectives) {
    INFO(o.name);
    Tensor z = ck.get("logits").to(DType::f64);
    z.requires_grad_();
    Tensor v = o.f(z);
    v.backward();
    const double want = ck.get(std::string(o.name) + "/value").to_vector<double>()[0];
    CHECK(std::fabs(v.item() - want) <= 1e-12 * std::fabs(want));
    const std::vector<double> g = z.grad().to_vector<double>(),
                              w = ck.get(std::string(o.name) + "/grad").to_vector<double>();
    REQUIRE(g.size() == w.size());
    double err = 0, scale = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      err = std::max(err, std::fabs(g[i] - w[i]));
      scale = std::max(scale, std::fabs(w[i]));
    }
    CHECK(scale > 0);
    CHECK(err <= 1e-12 * scale);
  }
  const double mine = ck.get("kl_hamu/value").to_vector<double>()[0], pub = ck.get("kl_published/value").to_vector<double>()[0];
  CHECK(mine != pub);
  MESSAGE("text KL: hamu (answer positions) " << mine << ", published (all attention-mask positions) " << pub);
}
