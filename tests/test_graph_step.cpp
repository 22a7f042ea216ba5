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
#include <vector>

#include "engine/allocator.h"
#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"
#include "loaders/batch.h"
#include "models/models.h"
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
  kernels::PerfOptions saved = kernels::perf_options(), det = saved;
  det.deterministic = true;
  kernels::set_perf_options(det);
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
  // The pool: blocks the graph used are not handed out again while it exists.
  const AllocatorStats st = allocator_stats(gpu);
  CHECK(st.in_use <= st.peak_in_use);
  kernels::set_perf_options(saved);
}
#endif
