// tests/test_graph_step.cpp: whole unlearning steps captured once and replayed (engine/graph.h,
// unlearn/graph_step.h, `hamu unlearn --cuda-graph`). On the CPU the "graph" is the step's closure run
// again under the host-transfer guard, so these tests prove (1) the step does no host transfer (the same
// call on a GPU would end the capture), (2) it reads only the fixed buffers its batches are copied into
// (a replay on stale inputs would diverge from the ordinary run), and (3) the runner's bookkeeping around
// replays (losses, reports, non-finite steps, shape changes, refusals) equals the ordinary steps'. The
// cuda: case runs the real capture on a GPU and compares the parameters bitwise.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/allocator.h"
#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/rng.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"
#include "tests/perf_scope.h"
#include "tests/synthetic_images.h"
#include "loaders/batch.h"
#include "models/models.h"
#include "train/graph_train.h"
#include "train/train.h"
#include "unlearn/graph_step.h"
#include "unlearn/method_registry.h"
#include "unlearn/runner.h"

using namespace hamu;

namespace {

std::vector<float> flat_params(nn::Module& m) {
  std::vector<float> out;
  for (const Tensor& p : m.parameters()) {
    const std::vector<float> v = p.to(Device{}).to_vector<float>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

struct RunOut {
  UnlearnResult res;
  std::vector<float> params;
};

// One unlearning run of `arch` from the same initialisation (seeded), graphed or not.
// one_wait: OneWaitSteps (1), the three-wait ordinary step (0), or the default (-1: one wait on a GPU).
RunOut run(const std::string& arch, const std::string& method, bool graph, bool paired, Device device,
           int64_t steps = 5, OptimizerKind optimizer = OptimizerKind::sgd, int one_wait = 0) {
  const ImageDataset ds = testing::random_images(96, arch == "resnet20" ? 3 : 1, arch == "resnet20" ? 8 : 12, 4, 11);
  Split split;
  for (int64_t i = 0; i < ds.n; ++i) (ds.labels[size_t(i)] == 1 ? split.forget : split.retain).push_back(i);
  split.spec = "class=1";
  const Normalizer norm = compute_normalizer(ds);
  Rng rng(5);
  auto model = models::build_model({arch, ds.c, ds.h, ds.w, ds.num_classes}, rng);
  model->to(device);
  UnlearnOptions opt;
  opt.method = &parse_method(method);
  opt.params.lr = 0.05;
  opt.ratio = 0.2;
  opt.steps = steps;
  opt.batch = 16;
  opt.forget_batch = 8;
  opt.seed = 2;
  opt.progress = false;
  opt.stop.rule = StopRule::none;
  opt.optimizer = optimizer;
  opt.paired = paired;
  opt.graph = graph;
  opt.one_wait = one_wait;
  opt.device = device;
  std::vector<std::string> notices;
  UnlearnHooks hooks;
  hooks.notice = [&](const std::string& m) { notices.push_back(m); };
  RunOut out;
  out.res = run_unlearning(*model, nullptr, ds, split, norm, opt, hooks);
  out.params = flat_params(*model);
  if (graph && !out.res.graph_fallback.empty()) CHECK(!notices.empty());  // a refusal is never silent
  return out;
}

void check_same_log(const UnlearnResult& a, const UnlearnResult& b) {
  REQUIRE(a.log.size() == b.log.size());
  for (size_t i = 0; i < a.log.size(); ++i) {
    INFO("step " << a.log[i].step);
    CHECK(a.log[i].retain_loss == b.log[i].retain_loss);
    CHECK(a.log[i].forget_loss == b.log[i].forget_loss);
    CHECK(a.log[i].paired == b.log[i].paired);
    CHECK(a.log[i].skipped == b.log[i].skipped);
    CHECK(a.log[i].report.applied == b.log[i].report.applied);
    CHECK(a.log[i].report.kappa == b.log[i].report.kappa);
    CHECK(a.log[i].report.n_direct == b.log[i].report.n_direct);
    CHECK(a.log[i].report.n_rectified == b.log[i].report.n_rectified);
  }
  CHECK(a.steps_done == b.steps_done);
  CHECK(a.paired_fallback == b.paired_fallback);
}

// A model and its twin (same initialisation) on a small data set, with the HAMU-Q options and the image task
// the step tests share: `model` takes the steps under test, `twin` the three-wait ordinary steps (ordinary()).
struct Twins {
  ImageDataset ds = testing::random_images(64, 1, 10, 4, 3);
  Normalizer norm = compute_normalizer(ds);
  std::shared_ptr<nn::Module> model, twin;
  UnlearnOptions opt;
  std::unique_ptr<UnlearnTask> task;
  std::unique_ptr<FusedUpdate> update, twin_update;

  explicit Twins(const std::string& arch) {
    Rng rng(9), rng2(9);
    model = models::build_model({arch, 1, 10, 10, 4}, rng);
    twin = models::build_model({arch, 1, 10, 10, 4}, rng2);
    opt.method = &parse_method("hamu-q");
    opt.params.lr = 0.05;
    opt.ratio = 0.2;
    opt.stop.rule = StopRule::none;
    task = make_image_task(ds, Split{{0, 1}, {2, 3}, "indices", 0}, norm, opt);
    model->train(true);
    twin->train(true);
  }
  void make_updates() {
    update = std::make_unique<FusedUpdate>(model->parameters());
    twin_update = std::make_unique<FusedUpdate>(twin->parameters());
  }
  Batch batch(int64_t start, int64_t n) const {
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = start + i;
    return gather_batch(ds, idx, norm);
  }
  // The twin's ordinary step: gradients (losses read back), then HAMU's own step unless a loss is not finite.
  std::pair<GradientResult, std::optional<StepDecision>> ordinary(const Batch& r, const Batch& f, std::string* fb) {
    GradientResult g = compute_gradients(*twin, nullptr, *twin_update, r, f, *opt.method, opt.params, true, fb, task.get());
    std::optional<StepDecision> d;
    if (g.finite) {
      twin_update->compute_stats();
      d = opt.method->own_step(opt, *twin_update);
    }
    return {g, d};
  }
};

}  // namespace

TEST_CASE("graph: the host-transfer guard names the call, nests, and lets host-resident reads through") {
  Tensor t = Tensor::from_vector<float>({1.5f, 2.5f}, {2});
  {
    HostSyncGuard guard;
    CHECK_THROWS_WITH_AS(t.to_vector<float>(), doctest::Contains("to_vector/item"), Error);
    CHECK_THROWS_WITH_AS((void)sum(t).item(), doctest::Contains("inside a captured step"), Error);
    CHECK_THROWS_WITH_AS(Tensor::from_vector<float>({1.f}, {1}), doctest::Contains("from_vector"), Error);
    {
      HostSyncGuard inner;
      CHECK_THROWS_AS(t.to_vector<float>(), Error);
    }
    CHECK_THROWS_AS(t.to_vector<float>(), Error);  // the outer guard still holds
    {
      const HostReadScope labels;
      CHECK(t.to_vector<float>()[1] == 2.5f);
    }
    CHECK_THROWS_AS(t.to_vector<float>(), Error);
    // Work that stays on the device is fine.
    Tensor u = add(t, t);
    CHECK(u.numel() == 2);
  }
  CHECK(t.to_vector<float>()[0] == 1.5f);  // no guard: reads again
}

TEST_CASE("graph: a CPU StepGraph replays its closure under the guard; reset drops it") {
  StepGraph g(Device{});
  CHECK_FALSE(g.captured());
  CHECK_THROWS_AS(g.replay(), Error);
  Tensor acc = Tensor::zeros({3});
  Tensor one = Tensor::full({3}, 1.0);
  std::string why;
  int runs = 0;
  REQUIRE(g.capture([&] {
    ++runs;
    acc.copy_(add(acc, one));
  }, &why));
  CHECK(runs == 0);  // capturing runs nothing (as on a GPU)
  g.replay();
  g.replay();
  CHECK(runs == 2);
  CHECK(acc.to_vector<float>() == std::vector<float>{2, 2, 2});
  REQUIRE(g.capture([&] { (void)sum(acc).item(); }, &why));
  CHECK_THROWS_WITH_AS(g.replay(), doctest::Contains("inside a captured step"), Error);
  g.reset();
  CHECK_FALSE(g.captured());
}

TEST_CASE("graph: graphed HAMU runs equal the ordinary runs step for step (mlp, cnn, resnet20; paired and two passes)") {
  for (const char* arch : {"mlp", "cnn", "resnet20"})
    for (const char* method : {"hamu-q", "hamu-u"})
      for (bool paired : {true, false}) {
        if (std::string(arch) == "resnet20" && std::string(method) == "hamu-u") continue;  // time
        INFO(arch << " " << method << (paired ? " paired" : " two passes"));
        const RunOut plain = run(arch, method, false, paired, Device{});
        const RunOut graphed = run(arch, method, true, paired, Device{});
        check_same_log(plain.res, graphed.res);
        CHECK(graphed.params == plain.params);
        CHECK(graphed.res.graph_fallback == "");
        CHECK(graphed.res.graph_captures == 1);            // one shape: one capture
        CHECK(graphed.res.graph_replays == int64_t(plain.res.log.size()) - 1);  // all but the warm-up
        CHECK(graphed.res.log.front().paired == paired);
      }
}

TEST_CASE("graph: what cannot be graphed is refused up front, with the reason, and runs the ordinary way") {
  const RunOut ga_plain = run("mlp", "ga", false, true, Device{}, 3);
  const RunOut ga = run("mlp", "ga", true, true, Device{}, 3);
  CHECK(ga.res.graph_fallback.find("host") != std::string::npos);
  CHECK(ga.res.graph_replays == 0);
  CHECK(ga.params == ga_plain.params);
  const RunOut adamw = run("mlp", "hamu-q", true, true, Device{}, 3, OptimizerKind::adamw);
  CHECK(adamw.res.graph_fallback.find("adamw") != std::string::npos);
  CHECK(adamw.res.graph_replays == 0);
}

TEST_CASE("graph: GraphedSteps warms up per shape, refuses a non-finite step as the ordinary step does, and follows new data") {
  Twins t("mlp");
  t.make_updates();
  auto& model = t.model;
  auto& twin = t.twin;
  REQUIRE(GraphedSteps::objection(*model, t.opt, *t.task, 1).empty());
  GraphedSteps steps(*model, *t.update, t.opt, *t.task);
  auto batch = [&](int64_t start, int64_t n) { return t.batch(start, n); };
  auto ordinary = [&](const Batch& r, const Batch& f) {
    std::string fb;
    auto [g, d] = t.ordinary(r, f, &fb);
    REQUIRE(d.has_value());
    return std::make_pair(g, *d);
  };
  int64_t start = 0;
  for (int k = 0; k < 6; ++k) {
    const int64_t n = k < 3 ? 8 : 6;  // the shape changes at k = 3: warm-up again, then a new capture
    Batch r = batch(start, n), f = batch(start + n, n / 2);
    start = (start + 7) % 40;
    std::optional<GraphedStep> s = steps.step(r, f);
    REQUIRE(s.has_value());
    const auto [g, d] = ordinary(r, f);
    INFO("step " << k);
    CHECK(s->replayed == (k != 0 && k != 3));
    CHECK(s->gradients.retain_loss == g.retain_loss);
    CHECK(s->gradients.forget_loss == g.forget_loss);
    CHECK(s->decision.report.kappa == d.report.kappa);
    CHECK(flat_params(*model) == flat_params(*twin));
  }
  CHECK(steps.captures() == 2);
  CHECK(steps.replays() == 4);
  // A NaN input: the ordinary step skips it (no backward); the replay backpropagates the NaN into the
  // statistics, and the update refuses the step: the parameters stay as they were, bitwise.
  Batch r = batch(0, 6), f = batch(6, 3);
  float* px = static_cast<float*>(f.images.raw());
  px[5] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> before = flat_params(*model);
  std::optional<GraphedStep> s = steps.step(r, f);
  REQUIRE(s.has_value());
  CHECK(s->replayed);
  CHECK_FALSE(s->gradients.finite);
  CHECK(std::isnan(s->gradients.forget_loss));
  CHECK(flat_params(*model) == before);
  // And the next finite step goes on as the ordinary one.
  Batch r2 = batch(10, 6), f2 = batch(20, 3);
  s = steps.step(r2, f2);
  const auto [g2, d2] = ordinary(r2, f2);
  CHECK(s->gradients.retain_loss == g2.retain_loss);
  CHECK(flat_params(*model) == flat_params(*twin));
}

TEST_CASE("one wait: HAMU runs queued whole with one wait per step equal the three-wait runs (mlp, cnn, resnet20)") {
  for (const char* arch : {"mlp", "cnn", "resnet20"})
    for (const char* method : {"hamu-q", "hamu-u"})
      for (bool paired : {true, false}) {
        if (std::string(arch) == "resnet20" && std::string(method) == "hamu-u") continue;  // time
        INFO(arch << " " << method << (paired ? " paired" : " two passes"));
        const RunOut plain = run(arch, method, false, paired, Device{}, 5, OptimizerKind::sgd, 0);
        const RunOut one = run(arch, method, false, paired, Device{}, 5, OptimizerKind::sgd, 1);
        check_same_log(plain.res, one.res);
        CHECK(one.params == plain.params);
        CHECK(plain.res.one_wait_steps == 0);
        CHECK(one.res.one_wait_steps == int64_t(one.res.log.size()));
        CHECK(one.res.graph_replays == 0);
      }
  // The default (-1) takes one wait on a GPU only: on the CPU there is nothing to wait for.
  const RunOut dflt = run("mlp", "hamu-q", false, true, Device{}, 2, OptimizerKind::sgd, -1);
  CHECK(dflt.res.one_wait_steps == 0);
  // --cuda-graph takes precedence: its warm-up and replays are the steps, none of them a one-wait step.
  const RunOut graphed = run("mlp", "hamu-q", true, true, Device{}, 4, OptimizerKind::sgd, 1);
  CHECK(graphed.res.graph_replays == 3);
  CHECK(graphed.res.one_wait_steps == 0);  // the warm-up step is the graph's own ordinary step
}

TEST_CASE("one wait: methods without a device-side step, AdamW and many processes take the three-wait step") {
  UnlearnOptions opt;
  opt.method = &parse_method("ga");
  CHECK(OneWaitSteps::objection(opt, 1).find("host") != std::string::npos);
  opt.method = &parse_method("hamu-q");
  CHECK(OneWaitSteps::objection(opt, 1).empty());
  CHECK(OneWaitSteps::objection(opt, 2).find("2 processes") != std::string::npos);
  opt.optimizer = OptimizerKind::adamw;
  CHECK(OneWaitSteps::objection(opt, 1).find("adamw") != std::string::npos);
  opt.one_wait = 1;
  CHECK_FALSE(OneWaitSteps::wanted(opt, 1));
  opt.optimizer = OptimizerKind::sgd;
  CHECK(OneWaitSteps::wanted(opt, 1));
  opt.one_wait = -1;
  CHECK_FALSE(OneWaitSteps::wanted(opt, 1));  // the CPU
  opt.device = Device{Device::cuda, 0};
  CHECK(OneWaitSteps::wanted(opt, 1));
  opt.one_wait = 0;
  CHECK_FALSE(OneWaitSteps::wanted(opt, 1));
  const RunOut ga_plain = run("mlp", "ga", false, true, Device{}, 3, OptimizerKind::sgd, 0);
  const RunOut ga = run("mlp", "ga", false, true, Device{}, 3, OptimizerKind::sgd, 1);
  CHECK(ga.res.one_wait_steps == 0);
  CHECK(ga.params == ga_plain.params);
  const RunOut adamw = run("mlp", "hamu-q", false, true, Device{}, 3, OptimizerKind::adamw, 1);
  CHECK(adamw.res.one_wait_steps == 0);
}

TEST_CASE("one wait: a non-finite step is refused by the update, the paired pass falls back inside the step") {
  for (bool train_bn : {false, true}) {
    INFO((train_bn ? "cnn with BatchNorm in training mode (two passes)" : "mlp (paired)"));
    Twins t(train_bn ? "cnn" : "mlp");
    auto& model = t.model;
    auto& twin = t.twin;
    t.make_updates();
    OneWaitSteps steps(*t.update, t.opt, t.task.get());
    for (int k = 0; k < 4; ++k) {
      INFO("step " << k);
      const int64_t n = k < 2 ? 8 : 6;  // a new shape needs nothing: no warm-up, no fixed buffers
      Batch r = t.batch(4 * k, n), f = t.batch(4 * k + n, n / 2);
      const GraphedStep s = steps.step(*model, r, f);
      std::string fb;
      const auto [g, d] = t.ordinary(r, f, &fb);
      REQUIRE(d.has_value());
      CHECK_FALSE(s.replayed);
      CHECK(s.gradients.paired == !train_bn);
      CHECK(s.gradients.paired == g.paired);
      CHECK(s.fallback == fb);
      CHECK(s.gradients.retain_loss == g.retain_loss);
      CHECK(s.gradients.forget_loss == g.forget_loss);
      CHECK(s.decision.report.kappa == d->report.kappa);
      CHECK(s.decision.report.applied == d->report.applied);
      CHECK(flat_params(*model) == flat_params(*twin));
    }
    // A NaN input: the three-wait step reads the loss and skips the backward; the one-wait step backpropagates
    // the NaN into the statistics and the update refuses the step. Neither moves a parameter.
    Batch r = t.batch(0, 6), f = t.batch(6, 3);
    static_cast<float*>(r.images.raw())[3] = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> before = flat_params(*model);
    const GraphedStep s = steps.step(*model, r, f);
    CHECK_FALSE(s.gradients.finite);
    CHECK(std::isnan(s.gradients.retain_loss));
    CHECK(std::isfinite(s.gradients.forget_loss));
    CHECK(flat_params(*model) == before);
    std::string fb;
    const auto [gn, dn] = t.ordinary(r, f, &fb);
    CHECK_FALSE(gn.finite);
    CHECK_FALSE(dn.has_value());
    CHECK(flat_params(*twin) == before);
    Batch r2 = t.batch(10, 6), f2 = t.batch(20, 3);
    const GraphedStep s2 = steps.step(*model, r2, f2);
    const auto [g2, d2] = t.ordinary(r2, f2, &fb);
    CHECK(s2.gradients.retain_loss == g2.retain_loss);
    CHECK(flat_params(*model) == flat_params(*twin));
    CHECK(steps.steps() == 6);
  }
}

namespace {
// adamw_step_dev against adamw_step on fresh random tensors, on `device` (float; CPU also double).
// n fresh normal values of standard deviation `scale`.
template <class T> std::vector<T> random_values(std::mt19937& g, int64_t n, double scale) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<T> v(static_cast<size_t>(n));
  for (T& x : v) x = T(nd(g));
  return v;
}

template <class T> void check_adamw_dev(Device device) {
  std::mt19937 g(std::random_device{}());
  const int64_t n = 5000;
  auto rand_vec = [&](double scale) { return random_values<T>(g, n, scale); };
  const std::vector<T> p0 = rand_vec(1), gr = rand_vec(0.1), m0 = rand_vec(0.01);
  std::vector<T> v0 = rand_vec(0.01);
  for (T& x : v0) x = x * x;
  const T lr = T(3e-3), b1 = T(0.9), b2 = T(0.999), eps = T(1e-8), wd = T(0.01);
  for (int64_t step : {1, 2, 37}) {
    for (bool skip : {false, true}) {
      INFO("step " << step << (skip ? " skipped" : ""));
      Tensor p1 = Tensor::from_vector<T>(p0, {n}).to(device), m1 = Tensor::from_vector<T>(m0, {n}).to(device);
      Tensor v1 = Tensor::from_vector<T>(v0, {n}).to(device), gt = Tensor::from_vector<T>(gr, {n}).to(device);
      Tensor p2 = p1.clone(), m2 = m1.clone(), v2 = v1.clone();
      const kernels::AdamwScalars<T> sc = kernels::adamw_scalars(lr, b1, b2, wd, step);
      Tensor scalars = Tensor::from_vector<T>({sc.step_size, sc.inv_sqrt_bc2, sc.decay}, {3}).to(device);
      Tensor flag = Tensor::from_vector<T>({T(skip ? 1 : 0)}, {1}).to(device);
      if (device.is_cuda()) {
#ifdef HAMU_CUDA
        if constexpr (std::is_same_v<T, float>) {
          const kernels::CudaCtx& ctx = kernels::cuda_context(device.index);
          kernels::adamw_step(ctx, n, p1.data<T>(), gt.data<T>(), m1.data<T>(), v1.data<T>(), lr, b1, b2, eps, wd, step);
          kernels::adamw_step_dev(ctx, n, p2.data<T>(), gt.data<T>(), m2.data<T>(), v2.data<T>(), scalars.data<T>(),
                                  flag.data<T>(), b1, b2, eps);
        }
#endif
      } else {
        kernels::CpuCtx ctx;
        kernels::adamw_step(ctx, n, p1.data<T>(), gt.data<T>(), m1.data<T>(), v1.data<T>(), lr, b1, b2, eps, wd, step);
        kernels::adamw_step_dev(ctx, n, p2.data<T>(), gt.data<T>(), m2.data<T>(), v2.data<T>(), scalars.data<T>(),
                                flag.data<T>(), b1, b2, eps);
      }
      if (skip) {
        CHECK(p2.to(Device{}).template to_vector<T>() == p0);
        CHECK(m2.to(Device{}).template to_vector<T>() == m0);
        CHECK(v2.to(Device{}).template to_vector<T>() == v0);
      } else {
        CHECK(p2.to(Device{}).template to_vector<T>() == p1.to(Device{}).template to_vector<T>());
        CHECK(m2.to(Device{}).template to_vector<T>() == m1.to(Device{}).template to_vector<T>());
        CHECK(v2.to(Device{}).template to_vector<T>() == v1.to(Device{}).template to_vector<T>());
        CHECK(p2.to(Device{}).template to_vector<T>() != p0);
      }
    }
  }
}
}  // namespace

namespace {
template <class T> std::vector<T> host_of(const Tensor& t) { return t.to(Device{}).template to_vector<T>(); }

// sgd_step_dev against sgd_step on fresh random tensors, on `device`: momentum 0 and 0.9, dampening, Nesterov,
// first steps and later ones, and the skip flag.
template <class T> void check_sgd_dev(Device device) {
  std::mt19937 g(std::random_device{}());
  const int64_t n = 5000;
  auto rand_vec = [&](double scale) { return random_values<T>(g, n, scale); };
  const std::vector<T> p0 = rand_vec(1), gr = rand_vec(0.1), b0 = rand_vec(0.05);
  const T lr = T(0.037), wd = T(1e-3);
  for (double momentum : {0.0, 0.9})
    for (bool nesterov : {false, true})
      for (double dampening : {0.0, 0.3})
        for (bool first : {true, false})
          for (bool skip : {false, true}) {
            if (momentum == 0 && (nesterov || dampening != 0 || !first)) continue;
            INFO("momentum " << momentum << (nesterov ? " nesterov" : "") << " dampening " << dampening
                             << (first ? " first" : "") << (skip ? " skipped" : ""));
            Tensor p1 = Tensor::from_vector<T>(p0, {n}).to(device), b1 = Tensor::from_vector<T>(b0, {n}).to(device);
            Tensor gt = Tensor::from_vector<T>(gr, {n}).to(device);
            Tensor p2 = p1.clone(), b2 = b1.clone();
            Tensor scalars = Tensor::from_vector<T>({lr, T(first ? 1 : 0)}, {2}).to(device);
            Tensor flag = Tensor::from_vector<T>({T(skip ? 1 : 0)}, {1}).to(device);
            T* buf1 = momentum != 0 ? b1.data<T>() : nullptr;
            T* buf2 = momentum != 0 ? b2.data<T>() : nullptr;
            if (device.is_cuda()) {
#ifdef HAMU_CUDA
              if constexpr (std::is_same_v<T, float>) {
                const kernels::CudaCtx& ctx = kernels::cuda_context(device.index);
                kernels::sgd_step(ctx, n, p1.data<T>(), gt.data<T>(), buf1, lr, T(momentum), T(dampening), wd,
                                  nesterov, first);
                kernels::sgd_step_dev(ctx, n, p2.data<T>(), gt.data<T>(), buf2, scalars.data<T>(),
                                      scalars.data<T>() + 1, flag.data<T>(), T(momentum), T(dampening), wd, nesterov);
              }
#endif
            } else {
              kernels::CpuCtx ctx;
              kernels::sgd_step(ctx, n, p1.data<T>(), gt.data<T>(), buf1, lr, T(momentum), T(dampening), wd, nesterov,
                                first);
              kernels::sgd_step_dev(ctx, n, p2.data<T>(), gt.data<T>(), buf2, scalars.data<T>(), scalars.data<T>() + 1,
                                    flag.data<T>(), T(momentum), T(dampening), wd, nesterov);
            }
            if (skip) {
              CHECK(host_of<T>(p2) == p0);
              CHECK(host_of<T>(b2) == b0);
            } else {
              CHECK(host_of<T>(p2) == host_of<T>(p1));
              CHECK(host_of<T>(b2) == host_of<T>(b1));
              CHECK(host_of<T>(p2) != p0);
              if (momentum != 0) {
                // The CPU reference of one element: the first step seeds the buffer with d, undamped.
                const double d = double(gr[7]) + double(wd) * double(p0[7]);
                const double b = first ? d : momentum * double(b0[7]) + (1 - dampening) * d;
                CHECK(double(host_of<T>(b2)[7]) == doctest::Approx(b).epsilon(1e-5));
              }
            }
          }
}

// clip_coef and scale_by_coef on `device` against the double arithmetic of the ordinary clip (and, on a GPU,
// against the CPU's bits): a clipping and a non-clipping max_norm, and a non-finite sum of squares.
template <class T> void check_clip_kernels(Device device) {
  std::mt19937 g(std::random_device{}());
  std::uniform_real_distribution<double> ud(0.1, 3.0);
  std::vector<T> sq(7);
  for (T& x : sq) x = T(ud(g));
  double total = 0;
  for (T x : sq) total += double(x);
  const double norm = std::sqrt(total);
  const std::vector<T> x0 = {T(1.5), T(-2.25), T(0), T(-0.0), T(1e-30), T(7)};
  for (double max_norm : {0.5 * norm, 2.0 * norm, norm}) {
    for (bool bad : {false, true}) {
      for (T skip0 : {T(0), T(1)}) {
        INFO("max_norm " << max_norm << (bad ? " non-finite" : "") << " skip " << double(skip0));
        std::vector<T> sqv = sq;
        if (bad) sqv[3] = std::numeric_limits<T>::infinity();
        Tensor sqt = Tensor::from_vector<T>(sqv, {7}).to(device);
        Tensor out = Tensor::zeros({2}, dtype_of<T>(), device);
        Tensor skip = Tensor::from_vector<T>({skip0}, {1}).to(device);
        Tensor x = Tensor::from_vector<T>(x0, {6}).to(device);
        Tensor out_cpu = Tensor::zeros({2}, dtype_of<T>(), Device{});
        if (device.is_cuda()) {
#ifdef HAMU_CUDA
          if constexpr (std::is_same_v<T, float>) {
            const kernels::CudaCtx& ctx = kernels::cuda_context(device.index);
            kernels::clip_coef(ctx, 7, sqt.data<T>(), max_norm, out.data<T>(), skip.data<T>());
            kernels::scale_by_coef(ctx, 6, x.data<T>(), out.data<T>());
          }
#endif
        } else {
          kernels::CpuCtx ctx;
          kernels::clip_coef(ctx, 7, sqt.data<T>(), max_norm, out.data<T>(), skip.data<T>());
          kernels::scale_by_coef(ctx, 6, x.data<T>(), out.data<T>());
        }
        Tensor sq_cpu = Tensor::from_vector<T>(sqv, {7});
        kernels::clip_coef(kernels::CpuCtx{}, 7, sq_cpu.data<T>(), max_norm, out_cpu.data<T>(), (T*)nullptr);
        const std::vector<T> o = host_of<T>(out);
        CHECK(o == out_cpu.to_vector<T>());  // the GPU's double arithmetic is the CPU's
        const double coef = max_norm / (norm + 1e-6);
        if (bad) {
          CHECK(o[0] == T(1));
          CHECK(std::isinf(double(o[1])));
          CHECK(host_of<T>(skip)[0] == T(1));
          CHECK(host_of<T>(x) == x0);
        } else {
          CHECK(o[0] == (coef < 1 ? T(coef) : T(1)));
          CHECK(o[1] == T(norm));
          CHECK(host_of<T>(skip)[0] == skip0);  // left as it was
          std::vector<T> want = x0;
          if (coef < 1)
            for (T& v : want) v *= T(coef);
          const std::vector<T> got = host_of<T>(x);
          CHECK(got == want);
          CHECK(std::signbit(double(got[3])));  // -0 stays -0
        }
      }
    }
  }
}
}  // namespace

TEST_CASE("graph: sgd_step_dev equals sgd_step to the bit and moves nothing on the skip flag (float, double)") {
  check_sgd_dev<float>(Device{});
  check_sgd_dev<double>(Device{});
}

TEST_CASE("graph: clip_coef and scale_by_coef form the ordinary clip's norm and coefficient (float, double)") {
  check_clip_kernels<float>(Device{});
  check_clip_kernels<double>(Device{});
}

TEST_CASE("graph: clip_grad_norm_dev scales as clip_grad_norm, reads nothing back, and flags a non-finite norm") {
  auto param = [](std::vector<float> grad) {
    Tensor p = Tensor::zeros({int64_t(grad.size())});
    p.requires_grad_(true);
    p.set_grad(Tensor::from_vector<float>(grad, {int64_t(grad.size())}));
    return p;
  };
  const std::vector<float> ga = {6.f, 0.f, -3.f}, gb = {8.f, 4.f};
  const double norm = std::sqrt(36.0 + 9 + 64 + 16);
  for (double max_norm : {0.3, 100.0}) {
    INFO("max_norm " << max_norm);
    Tensor c = Tensor::zeros({1});
    c.requires_grad_(true);  // no gradient: not counted
    Tensor a = param(ga), b = param(gb), a2 = param(ga), b2 = param(gb);
    CHECK(clip_grad_norm({a2, b2, c}, max_norm) == doctest::Approx(norm));
    Tensor skip = Tensor::zeros({1});
    Tensor out;
    {
      HostSyncGuard guard;  // nothing read back: capturable
      out = clip_grad_norm_dev({a, b, c}, max_norm, &skip);
    }
    CHECK(out.to_vector<float>()[1] == float(norm));
    CHECK(a.grad().to_vector<float>() == a2.grad().to_vector<float>());
    CHECK(b.grad().to_vector<float>() == b2.grad().to_vector<float>());
    CHECK((a.grad().to_vector<float>() != ga) == (max_norm < norm));
    CHECK(skip.to_vector<float>()[0] == 0.f);
  }
  Tensor a = param({std::numeric_limits<float>::infinity(), 1.f});
  Tensor skip = Tensor::zeros({1});
  clip_grad_norm_dev({a}, 1.0, &skip);
  CHECK(skip.to_vector<float>()[0] == 1.f);
  CHECK(std::isinf(clip_grad_norm({a}, 1.0)));
  CHECK(a.grad().to_vector<float>()[1] == 1.f);  // nothing scaled
  Tensor none = Tensor::zeros({2});
  none.requires_grad_(true);
  CHECK(clip_grad_norm({none}, 1.0) == 0.0);  // no gradient at all
  Tensor d = Tensor::zeros({1}, DType::f64);
  d.requires_grad_(true);
  d.set_grad(Tensor::from_vector<double>({1.0}, {1}));
  CHECK_THROWS_WITH_AS(clip_grad_norm({a, d}, 1.0), doctest::Contains("one dtype"), Error);
}

TEST_CASE("graph: adamw_step_dev equals adamw_step to the bit and moves nothing on the skip flag (float, double)") {
  check_adamw_dev<float>(Device{});
  check_adamw_dev<double>(Device{});
}


// ---- training steps (train/graph_train.h) ------------------------------------------------------------

namespace {

struct TrainRun {
  std::vector<EpochSummary> epochs;
  std::vector<float> params, buffers;
  std::vector<int64_t> counters;
  int64_t adam_steps = 0;
  TrainGraphReport report;
};

void collect_counters(nn::Module& m, std::vector<int64_t>& out) {
  if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(&m)) out.push_back(bn->num_batches_tracked);
  for (const auto& child : m.children()) collect_counters(*child.second, out);
}

// Trains `arch` from the same initialisation on 100 images (batch 16: six full batches and a partial one
// of 4 per epoch), graphed or not.
TrainRun train_run(const std::string& arch, bool graph, Device device, const std::string& optimizer = "adamw",
                   double clip = 0, double momentum = 0.9) {
  const ImageDataset ds = testing::random_images(100, arch == "resnet20" ? 3 : 1, arch == "resnet20" ? 8 : 12, 4, 21);
  std::vector<int64_t> subset(size_t(ds.n));
  for (int64_t i = 0; i < ds.n; ++i) subset[size_t(i)] = i;
  const Normalizer norm = compute_normalizer(ds);
  Rng rng(4);
  auto model = models::build_model({arch, ds.c, ds.h, ds.w, ds.num_classes}, rng);
  model->to(device);
  TrainOptions to;
  to.epochs = 2;
  to.batch = 16;
  to.lr = 3e-3;
  to.weight_decay = 0.01;
  to.seed = 5;
  to.progress = false;
  to.device = device;
  to.optimizer = optimizer;
  if (optimizer == "sgd") to.lr = 0.05;
  to.momentum = momentum;
  to.clip = clip;
  to.graph = graph;
  TrainRun out;
  to.graph_report = &out.report;
  out.epochs = train_model(*model, ds, subset, norm, to);
  out.params = flat_params(*model);
  for (const auto& named : model->named_buffers()) {
    const Tensor& b = named.second;
    if (b.dtype() != DType::f32) continue;
    const std::vector<float> v = b.to(Device{}).to_vector<float>();
    out.buffers.insert(out.buffers.end(), v.begin(), v.end());
  }
  collect_counters(*model, out.counters);
  return out;
}

}  // namespace

// Graphed == ordinary for every variant the loop has (train_run: 2 epochs of six full batches and a partial
// one, cosine lr, weight decay): adamw, sgd with and without momentum, adamw and sgd with --clip.
void check_graphed_training(const TrainRun& plain, const TrainRun& graphed) {
  CHECK(graphed.report.not_used == "");
  CHECK(graphed.report.captures == 1);
  // 2 epochs x (6 full batches + 1 partial): all full batches but the first (the warm-up) replayed.
  CHECK(graphed.report.replays == 11);
  CHECK(graphed.params == plain.params);
  CHECK(graphed.buffers == plain.buffers);    // BatchNorm running statistics
  CHECK(graphed.counters == plain.counters);  // num_batches_tracked moved per replay as per ordinary step
  REQUIRE(graphed.epochs.size() == plain.epochs.size());
  for (size_t e = 0; e < plain.epochs.size(); ++e) {
    CHECK(graphed.epochs[e].train_loss == plain.epochs[e].train_loss);
    CHECK(graphed.epochs[e].train_acc == plain.epochs[e].train_acc);
    CHECK(graphed.epochs[e].skipped_steps == plain.epochs[e].skipped_steps);
  }
}

TEST_CASE("graph: graphed training equals the ordinary loop bit for bit (mlp, cnn, resnet20; cosine lr, partial batches)") {
  for (const char* arch : {"mlp", "cnn", "resnet20"}) {
    INFO(arch);
    check_graphed_training(train_run(arch, false, Device{}), train_run(arch, true, Device{}));
  }
}

TEST_CASE("graph: training graphs are refused for several ranks and active dropout, not for sgd or --clip") {
  Rng rng(1);
  auto model = models::build_model({"mlp", 1, 12, 12, 4}, rng);
  TrainOptions to;
  CHECK(GraphedTrainSteps::objection(*model, to, 1).empty());
  CHECK(GraphedTrainSteps::objection(*model, to, 2).find("2 processes") != std::string::npos);
  to.optimizer = "sgd";
  to.clip = 1;
  CHECK(GraphedTrainSteps::objection(*model, to, 1).empty());
}

TEST_CASE("graph: graphed sgd training equals the ordinary loop bit for bit (mlp, cnn; momentum 0 and 0.9)") {
  for (const char* arch : {"mlp", "cnn"})
    for (double momentum : {0.0, 0.9}) {
      INFO(arch << " momentum " << momentum);
      const TrainRun plain = train_run(arch, false, Device{}, "sgd", 0, momentum);
      const TrainRun graphed = train_run(arch, true, Device{}, "sgd", 0, momentum);
      check_graphed_training(plain, graphed);
    }
}

TEST_CASE("graph: graphed training with --clip equals the ordinary loop bit for bit (adamw, sgd; mlp, cnn)") {
  for (const char* arch : {"mlp", "cnn"})
    for (const char* optimizer : {"adamw", "sgd"}) {
      const TrainRun unclipped = train_run(arch, false, Device{}, optimizer);
      // 0.05 clips (the weights end elsewhere than unclipped); 1e6 never does (the same bits as unclipped).
      for (double clip : {0.05, 1e6}) {
        INFO(arch << " " << optimizer << " --clip " << clip);
        const TrainRun plain = train_run(arch, false, Device{}, optimizer, clip);
        const TrainRun graphed = train_run(arch, true, Device{}, optimizer, clip);
        check_graphed_training(plain, graphed);
        if (clip < 1) CHECK(plain.params != unclipped.params);
        else CHECK(plain.params == unclipped.params);
      }
    }
}

TEST_CASE("graph: a replayed training step skips a NaN batch as the ordinary step does") {
  const ImageDataset ds = testing::random_images(40, 1, 10, 4, 8);
  const Normalizer norm = compute_normalizer(ds);
  std::vector<int64_t> idx(8);
  for (int64_t i = 0; i < 8; ++i) idx[size_t(i)] = i;
  Rng rng(2);
  auto model = models::build_model({"cnn", 1, 10, 10, 4}, rng);
  model->train(true);
  AdamW opt(model->parameters(), {});
  GraphedTrainSteps steps(*model, opt, Device{});
  Batch b = gather_batch(ds, idx, norm);
  CHECK_FALSE(steps.step(b).has_value());  // the warm-up: the caller's ordinary step
  opt.zero_grad();
  cross_entropy(model->forward(b.images), b.labels).backward();
  opt.step();
  std::optional<GraphedTrainSteps::Result> r = steps.step(b);
  REQUIRE(r.has_value());
  CHECK(std::isfinite(r->loss));
  CHECK(opt.steps() == 2);
  std::vector<int64_t> before_counters;
  collect_counters(*model, before_counters);
  static_cast<float*>(b.images.raw())[3] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> before = flat_params(*model);
  r = steps.step(b);
  REQUIRE(r.has_value());
  CHECK(std::isnan(r->loss));
  CHECK(opt.steps() == 2);                 // not counted
  CHECK(flat_params(*model) == before);    // not applied
  std::vector<int64_t> after_counters;
  collect_counters(*model, after_counters);
  for (size_t i = 0; i < after_counters.size(); ++i) CHECK(after_counters[i] == before_counters[i] + 1);  // the forward ran
  // Another shape: the ordinary way.
  Batch small = gather_batch(ds, {0, 1, 2}, norm);
  CHECK_FALSE(steps.step(small).has_value());
}

// GraphedTrainSteps with SGD (momentum, dampening, Nesterov, weight decay) and clipping against a twin model
// stepped the ordinary way (train.cpp's step), batch by batch. The first batch is NaN: the warm-up step is
// skipped, so the first replay is every parameter's first SGD step (the momentum buffer seeded with the
// gradient: the scalars' per-parameter flag; with dampening a wrong flag gives other bits). Returns how many
// steps the twin clipped and how many it did not.
// Between the gradient norms of check_sgd_replays' steps (about 2.2 to 2.7): some steps clip, some do not.
constexpr double kMidClip = 2.35;
std::pair<int, int> check_sgd_replays(bool nesterov, double dampening, double clip) {
  const ImageDataset ds = testing::random_images(48, 1, 10, 4, 12);
  const Normalizer norm = compute_normalizer(ds);
  Rng rng(6), rng2(6);
  auto model = models::build_model({"cnn", 1, 10, 10, 4}, rng);
  auto twin = models::build_model({"cnn", 1, 10, 10, 4}, rng2);
  model->train(true);
  twin->train(true);
  SgdOptions so;
  so.lr = 0.05;
  so.momentum = 0.9;
  so.dampening = dampening;
  so.weight_decay = 1e-3;
  so.nesterov = nesterov;
  Sgd opt(model->parameters(), so), twin_opt(twin->parameters(), so);
  GraphedTrainSteps steps(*model, opt, Device{}, clip);
  int clipped = 0, unclipped = 0;
  // train.cpp's ordinary step; false when it was skipped.
  auto ordinary = [&](nn::Module& m, Sgd& o, const Batch& b, bool count) {
    o.zero_grad();
    Tensor loss = cross_entropy(m.forward(b.images), b.labels);
    if (!std::isfinite(loss.item())) return false;
    loss.backward();
    if (clip > 0) {
      const double n = clip_grad_norm(o.params(), clip);
      if (!std::isfinite(n)) return false;
      if (count) ++(clip / (n + 1e-6) < 1 ? clipped : unclipped);
    }
    o.step();
    return true;
  };
  for (int k = 0; k < 8; ++k) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < 8; ++i) idx.push_back((k * 5 + i * 3) % ds.n);
    Batch b = gather_batch(ds, idx, norm);
    if (k == 0 || k == 5) static_cast<float*>(b.images.raw())[7] = std::numeric_limits<float>::quiet_NaN();
    const double lr = 0.05 * (1.0 - 0.1 * k);  // a schedule: the replay reads each step's lr
    opt.lr = twin_opt.lr = lr;
    INFO("step " << k);
    const bool twin_took = ordinary(*twin, twin_opt, b, true);
    std::optional<GraphedTrainSteps::Result> r = steps.step(b);
    CHECK(r.has_value() == (k != 0));
    if (r) {
      CHECK(r->taken == twin_took);
      CHECK(std::isfinite(r->loss) == twin_took);
    } else {
      CHECK(ordinary(*model, opt, b, false) == twin_took);
    }
    CHECK(flat_params(*model) == flat_params(*twin));
  }
  CHECK(steps.replays() == 7);
  return {clipped, unclipped};
}

TEST_CASE("graph: replayed SGD steps (first steps, momentum, dampening, Nesterov, NaN batches) equal ordinary ones") {
  for (bool nesterov : {false, true})
    for (double dampening : {0.0, 0.25}) {
      INFO((nesterov ? "nesterov" : "momentum") << " dampening " << dampening);
      check_sgd_replays(nesterov, dampening, 0);
    }
}

TEST_CASE("graph: replayed SGD steps with --clip equal the ordinary steps on clipped and unclipped steps") {
  const auto [clipped, unclipped] = check_sgd_replays(false, 0.25, kMidClip);
  CHECK(clipped > 0);    // both sides of the coefficient's test were taken
  CHECK(unclipped > 0);
}

TEST_CASE("graph: the training graph learns the full batch shape, also after a partial batch came first") {
  const ImageDataset ds = testing::random_images(40, 1, 10, 4, 9);
  const Normalizer norm = compute_normalizer(ds);
  Rng rng(3);
  auto model = models::build_model({"mlp", 1, 10, 10, 4}, rng);
  model->train(true);
  AdamW opt(model->parameters(), {});
  GraphedTrainSteps steps(*model, opt, Device{});
  const Batch partial = gather_batch(ds, {0, 1, 2}, norm);
  const Batch full = gather_batch(ds, {3, 4, 5, 6, 7, 8, 9, 10}, norm);
  const Batch full2 = gather_batch(ds, {11, 12, 13, 14, 15, 16, 17, 18}, norm);
  CHECK_FALSE(steps.step(partial).has_value());  // learnt [3]: the caller's ordinary step
  CHECK_FALSE(steps.step(full).has_value());     // larger, nothing captured yet: learnt [8] instead
  CHECK_FALSE(steps.step(partial).has_value());  // smaller: the ordinary way, [8] stays
  CHECK(steps.step(full2).has_value());          // captured and replayed
  CHECK(steps.step(full).has_value());
  CHECK_FALSE(steps.step(partial).has_value());
  CHECK(steps.captures() == 1);
  CHECK(steps.replays() == 2);
}

#ifdef HAMU_CUDA
TEST_CASE("cuda: a graph pool keeps its blocks from everyone else until it is released") {
  if (kernels::cuda_device_count() == 0) return;
  const Device gpu{Device::cuda, 0};
  const size_t bytes = (size_t(3) << 20) + 4096;  // an unusual size: no cached block of another test fits
  const int pool = allocator_pool_begin(gpu);
  CHECK_THROWS_AS(allocator_pool_begin(gpu), Error);  // one capture at a time
  void* a = device_allocate(bytes, gpu);
  device_deallocate(a, bytes, gpu);  // freed inside the window: stays the pool's
  void* b = device_allocate(bytes, gpu);
  CHECK(b == a);                     // reused within the pool (stream order)
  allocator_pool_end(gpu);
  void* outside = device_allocate(bytes, gpu);
  CHECK(outside != a);               // never lent outside the window ...
  device_deallocate(b, bytes, gpu);  // ... also after a late free
  void* outside2 = device_allocate(bytes, gpu);
  CHECK(outside2 != a);
  allocator_pool_release(gpu, pool);
  // The released pool's blocks are the cache's again (other tests may have left blocks of this size class
  // there too, handed out first: take until it shows up).
  std::vector<void*> taken;
  bool found = false;
  for (int i = 0; i < 64 && !found; ++i) {
    taken.push_back(device_allocate(bytes, gpu));
    found = taken.back() == a;
  }
  CHECK(found);
  taken.push_back(outside);
  taken.push_back(outside2);
  for (void* p : taken) device_deallocate(p, bytes, gpu);
}

TEST_CASE("cuda: --cuda-graph steps replay to the ordinary steps' parameters (resnet20, cnn; deterministic)") {
  if (kernels::cuda_device_count() == 0) return;
  const testing::PerfScope det(testing::deterministic_algorithms);
  const Device gpu{Device::cuda, 0};
  for (const char* arch : {"cnn", "resnet20"}) {
    INFO(arch);
    const RunOut plain = run(arch, "hamu-q", false, true, gpu, 6, OptimizerKind::sgd, 0);
    const RunOut graphed = run(arch, "hamu-q", true, true, gpu, 6, OptimizerKind::sgd, 0);
    MESSAGE(arch << ": graph captures " << graphed.res.graph_captures << ", replays " << graphed.res.graph_replays
                 << (graphed.res.graph_fallback.empty() ? "" : ", not used: " + graphed.res.graph_fallback));
    CHECK(graphed.res.graph_fallback == "");
    CHECK(graphed.res.graph_replays == int64_t(plain.res.log.size()) - 1);
    check_same_log(plain.res, graphed.res);
    CHECK(graphed.params == plain.params);
  }
}

TEST_CASE("cuda: the GPU's one-wait HAMU steps equal the three-wait steps (resnet20, cnn; paired, two passes; deterministic)") {
  if (kernels::cuda_device_count() == 0) return;
  const testing::PerfScope det(testing::deterministic_algorithms);
  const Device gpu{Device::cuda, 0};
  for (const char* arch : {"cnn", "resnet20"})
    for (bool paired : {true, false}) {
      INFO(arch << (paired ? " paired" : " two passes"));
      const RunOut plain = run(arch, "hamu-q", false, paired, gpu, 6, OptimizerKind::sgd, 0);
      const RunOut dflt = run(arch, "hamu-q", false, paired, gpu, 6, OptimizerKind::sgd, -1);  // one wait on a GPU
      CHECK(plain.res.one_wait_steps == 0);
      CHECK(dflt.res.one_wait_steps == int64_t(dflt.res.log.size()));
      check_same_log(plain.res, dflt.res);
      CHECK(dflt.params == plain.params);
    }
}

TEST_CASE("cuda: adamw_step_dev equals adamw_step to the bit and moves nothing on the skip flag") {
  if (kernels::cuda_device_count() == 0) return;
  check_adamw_dev<float>(Device{Device::cuda, 0});
}

TEST_CASE("cuda: sgd_step_dev equals sgd_step to the bit and moves nothing on the skip flag") {
  if (kernels::cuda_device_count() == 0) return;
  check_sgd_dev<float>(Device{Device::cuda, 0});
}

TEST_CASE("cuda: clip_coef and scale_by_coef give the CPU's bits") {
  if (kernels::cuda_device_count() == 0) return;
  check_clip_kernels<float>(Device{Device::cuda, 0});
}

TEST_CASE("cuda: --cuda-graph training with sgd and --clip replays to the ordinary loop's weights (cnn)") {
  if (kernels::cuda_device_count() == 0) return;
  const testing::PerfScope det(testing::deterministic_algorithms);
  const Device gpu{Device::cuda, 0};
  for (double clip : {0.0, 0.05}) {
    INFO("--clip " << clip);
    const TrainRun plain = train_run("cnn", false, gpu, "sgd", clip);
    const TrainRun graphed = train_run("cnn", true, gpu, "sgd", clip);
    MESSAGE("sgd --clip " << clip << ": training graph replays " << graphed.report.replays
                          << (graphed.report.not_used.empty() ? "" : ", not used: " + graphed.report.not_used));
    CHECK(graphed.report.not_used == "");
    CHECK(graphed.report.replays == 11);
    CHECK(graphed.params == plain.params);
    CHECK(graphed.buffers == plain.buffers);
  }
  const TrainRun plain = train_run("cnn", false, gpu, "adamw", 0.05);
  const TrainRun graphed = train_run("cnn", true, gpu, "adamw", 0.05);
  CHECK(graphed.report.replays == 11);
  CHECK(graphed.params == plain.params);
}

TEST_CASE("cuda: --cuda-graph training replays to the ordinary loop's weights (cnn, resnet20; deterministic)") {
  if (kernels::cuda_device_count() == 0) return;
  const testing::PerfScope det(testing::deterministic_algorithms);
  const Device gpu{Device::cuda, 0};
  for (const char* arch : {"cnn", "resnet20"}) {
    INFO(arch);
    const TrainRun plain = train_run(arch, false, gpu);
    const TrainRun graphed = train_run(arch, true, gpu);
    MESSAGE(arch << ": training graph captures " << graphed.report.captures << ", replays " << graphed.report.replays
                 << (graphed.report.not_used.empty() ? "" : ", not used: " + graphed.report.not_used));
    CHECK(graphed.report.not_used == "");
    CHECK(graphed.report.replays == 11);
    CHECK(graphed.params == plain.params);
    CHECK(graphed.buffers == plain.buffers);
    CHECK(graphed.counters == plain.counters);
  }
  }
#endif
