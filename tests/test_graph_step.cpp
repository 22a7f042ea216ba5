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
#include "loaders/batch.h"
#include "models/models.h"
#include "train/graph_train.h"
#include "train/train.h"
#include "unlearn/graph_step.h"
#include "unlearn/method_registry.h"
#include "unlearn/runner.h"

using namespace hamu;

namespace {

ImageDataset graph_images(int64_t n, int64_t channels, int64_t side, int32_t classes, uint64_t seed) {
  ImageDataset ds;
  ds.n = n;
  ds.c = channels;
  ds.h = ds.w = side;
  ds.num_classes = classes;
  for (int32_t k = 0; k < classes; ++k) ds.class_names.push_back(std::string(1, char('a' + k)));
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> px(0, 255);
  ds.pixels.resize(size_t(n * ds.image_size()));
  for (uint8_t& p : ds.pixels) p = uint8_t(px(g));
  for (int64_t i = 0; i < n; ++i) ds.labels.push_back(int32_t(i % classes));
  ds.source = "synthetic";
  return ds;
}

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
RunOut run(const std::string& arch, const std::string& method, bool graph, bool paired, Device device,
           int64_t steps = 5, OptimizerKind optimizer = OptimizerKind::sgd) {
  const ImageDataset ds = graph_images(96, arch == "resnet20" ? 3 : 1, arch == "resnet20" ? 8 : 12, 4, 11);
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
  const ImageDataset ds = graph_images(64, 1, 10, 4, 3);
  const Normalizer norm = compute_normalizer(ds);
  std::vector<int64_t> all(size_t(ds.n));
  for (int64_t i = 0; i < ds.n; ++i) all[size_t(i)] = i;
  Rng rng(9);
  auto model = models::build_model({"mlp", 1, 10, 10, 4}, rng);
  Rng rng2(9);
  auto twin = models::build_model({"mlp", 1, 10, 10, 4}, rng2);  // the ordinary steps' model
  UnlearnOptions opt;
  opt.method = &parse_method("hamu-q");
  opt.params.lr = 0.05;
  opt.ratio = 0.2;
  opt.stop.rule = StopRule::none;
  Split split{{0, 1}, {2, 3}, "indices", 0};
  std::unique_ptr<UnlearnTask> task = make_image_task(ds, split, norm, opt);
  model->train(true);
  twin->train(true);
  FusedUpdate update(model->parameters()), twin_update(twin->parameters());
  REQUIRE(GraphedSteps::objection(*model, opt, *task, 1).empty());
  GraphedSteps steps(*model, update, opt, *task);
  auto batch = [&](int64_t start, int64_t n) {
    std::vector<int64_t> idx(all.begin() + start, all.begin() + start + n);
    return gather_batch(ds, idx, norm);
  };
  auto ordinary = [&](const Batch& r, const Batch& f) {
    std::string fb;
    GradientResult g = compute_gradients(*twin, nullptr, twin_update, r, f, *opt.method, opt.params, true, &fb, task.get());
    twin_update.compute_stats();
    StepDecision d = *opt.method->own_step(opt, twin_update);
    return std::make_pair(g, d);
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

namespace {
// adamw_step_dev against adamw_step on fresh random tensors, on `device` (float; CPU also double).
template <class T> void check_adamw_dev(Device device) {
  std::mt19937 g(std::random_device{}());
  std::normal_distribution<double> nd(0.0, 1.0);
  const int64_t n = 5000;
  auto rand_vec = [&](double scale) {
    std::vector<T> v(static_cast<size_t>(n));
    for (T& x : v) x = T(scale * nd(g));
    return v;
  };
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
                   double clip = 0) {
  const ImageDataset ds = graph_images(100, arch == "resnet20" ? 3 : 1, arch == "resnet20" ? 8 : 12, 4, 21);
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

TEST_CASE("graph: graphed training equals the ordinary loop bit for bit (mlp, cnn, resnet20; cosine lr, partial batches)") {
  for (const char* arch : {"mlp", "cnn", "resnet20"}) {
    INFO(arch);
    const TrainRun plain = train_run(arch, false, Device{});
    const TrainRun graphed = train_run(arch, true, Device{});
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
}

TEST_CASE("graph: training graphs are refused for sgd and --clip, with the reason, and train the ordinary way") {
  const TrainRun sgd_plain = train_run("mlp", false, Device{}, "sgd");
  const TrainRun sgd = train_run("mlp", true, Device{}, "sgd");
  CHECK(sgd.report.not_used.find("sgd") != std::string::npos);
  CHECK(sgd.report.replays == 0);
  CHECK(sgd.params == sgd_plain.params);
  const TrainRun clip = train_run("mlp", true, Device{}, "adamw", 1.0);
  CHECK(clip.report.not_used.find("--clip") != std::string::npos);
  CHECK(clip.report.replays == 0);
}

TEST_CASE("graph: a replayed training step skips a NaN batch as the ordinary step does") {
  const ImageDataset ds = graph_images(40, 1, 10, 4, 8);
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

TEST_CASE("graph: the training graph learns the full batch shape, also after a partial batch came first") {
  const ImageDataset ds = graph_images(40, 1, 10, 4, 9);
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
    const RunOut plain = run(arch, "hamu-q", false, true, gpu, 6);
    const RunOut graphed = run(arch, "hamu-q", true, true, gpu, 6);
    MESSAGE(arch << ": graph captures " << graphed.res.graph_captures << ", replays " << graphed.res.graph_replays
                 << (graphed.res.graph_fallback.empty() ? "" : ", not used: " + graphed.res.graph_fallback));
    CHECK(graphed.res.graph_fallback == "");
    CHECK(graphed.res.graph_replays == int64_t(plain.res.log.size()) - 1);
    check_same_log(plain.res, graphed.res);
    CHECK(graphed.params == plain.params);
  }
}

TEST_CASE("cuda: adamw_step_dev equals adamw_step to the bit and moves nothing on the skip flag") {
  if (kernels::cuda_device_count() == 0) return;
  check_adamw_dev<float>(Device{Device::cuda, 0});
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
