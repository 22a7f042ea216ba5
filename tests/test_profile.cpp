// tests/test_profile.cpp: the per-op-kind profiler (kernels/perf.h) on the CPU: one unlearning step of
// resnet20 and one of the cnn lists the op kinds the step is made of, the rows add up to the whole span,
// profiling changes no number, and the speed switches round-trip. (The CUDA-event clock is the same timeline
// with events for marks: the cuda: cases below run it on a GPU, with deterministic algorithms run to run and
// a CUDA-graph replay of the whole step against the ordinary step.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "kernels/kernels.h"
#include "kernels/perf.h"
#include "models/models.h"
#include "tests/gradcheck.h"
#include "tests/perf_scope.h"
#include "unlearn/gradients.h"
#include "unlearn/method_registry.h"
#include "unlearn/update.h"
#include "tests/gpu_skip.h"

using namespace hamu;
using kernels::ProfKind;

namespace {

Batch profile_batch(int64_t n, const models::ModelSpec& spec, Device device = {}) {
  Batch b;
  b.images = testing::random_tensor({n, spec.in_channels, spec.height, spec.width}, -1, 1, DType::f32).to(device);
  b.labels = testing::random_labels(n, int(spec.num_classes)).to(device);
  for (int64_t i = 0; i < n; ++i) b.indices.push_back(i);
  return b;
}

// One HAMU-Q step (paired gradients, statistics, coefficients, apply) with the profiler on; also returns the
// first parameter after the step, to compare with an unprofiled step.
// A model, its batches and its fused update, ready for HAMU-Q steps.
struct StepRig {
  std::shared_ptr<nn::Module> model;
  Batch r, f;
  std::unique_ptr<FusedUpdate> update;
  kernels::HamuConfig cfg;
  StepRig(const models::ModelSpec& spec, Device device) {
    Rng rng(11);
    model = models::build_model(spec, rng);
    model->to(device);
    models::set_batchnorm_frozen(*model, true);
    model->train(true);
    testing::test_rng().seed(5);  // the same batches in every rig
    r = profile_batch(4, spec, device);
    f = profile_batch(4, spec, device);
    update = std::make_unique<FusedUpdate>(model->parameters());
    cfg.lr = 1e-2;
    cfg.constraint = 5e-3;
  }
  // Queues one step; the report lands in *report once the device gets there. `deferred`: the gradients
  // without reading the losses back (compute_gradients_deferred), as a captured step must.
  void step_async(kernels::HamuReport* report, bool deferred = false) {
    std::string why;
    if (deferred) compute_gradients_deferred(*model, *update, r, f, parse_method("hamu-q"), MethodParams{}, true);
    else compute_gradients(*model, nullptr, *update, r, f, parse_method("hamu-q"), MethodParams{}, true, &why);
    update->compute_stats();
    update->hamu_step_async(cfg, report);
  }
  void step() {
    kernels::HamuReport rep;
    step_async(&rep);
    update->synchronize();
  }
  std::vector<double> theta0() { return testing::as_doubles(model->parameters()[0].to(Device{})); }
};

kernels::ProfTable profiled_step(const models::ModelSpec& spec, bool profile, std::vector<double>* theta0,
                                 Device device = {}) {
  StepRig rig(spec, device);
  if (profile) kernels::profile_begin(device.is_cuda() ? device.index : -1);
  rig.step();
  kernels::ProfTable t;
  if (profile) t = kernels::profile_end();
  *theta0 = rig.theta0();
  return t;
}

}  // namespace

TEST_CASE("profile: a resnet20 unlearning step on the CPU lists its op kinds and adds up") {
  REQUIRE_FALSE(kernels::profile_on());
  std::vector<double> with, without;
  const models::ModelSpec spec{"resnet20", 3, 16, 16, 10};
  const kernels::ProfTable t = profiled_step(spec, true, &with);
  REQUIRE_FALSE(kernels::profile_on());
  CHECK(t.clock == "wall clock (CPU)");
  // BatchNorm is frozen: BN + ReLU (+ add) run fused unless HAMU_FUSE_BN=0; the shortcuts' BN runs alone.
  const ProfKind act = nn::batchnorm_fusion_enabled() ? ProfKind::fused_elementwise : ProfKind::relu;
  for (ProfKind k : {ProfKind::conv_fwd, ProfKind::conv_bwd_data, ProfKind::conv_bwd_filter, ProfKind::batchnorm,
                     act, ProfKind::add, ProfKind::gemm, ProfKind::cross_entropy,
                     ProfKind::reduction, ProfKind::update}) {
    INFO("kind: " << std::string(kernels::prof_kind_name(k)) << "\n" << kernels::format_profile(t));
    CHECK(t.calls_of(k) > 0);
    CHECK(t.ms_of(k) > 0);
  }
  // 19 convolutions + 2 projection shortcuts = 21 forward calls (paired: one pass over both batches, whose
  // filter gradients are formed per half: 42 backward-filter calls).
  CHECK(t.calls_of(ProfKind::conv_fwd) == 21);
  CHECK(t.calls_of(ProfKind::conv_bwd_filter) == 42);
  double sum = 0;
  for (const kernels::ProfRow& row : t.rows) sum += row.ms;
  CHECK(std::abs(sum - t.total_ms) <= 1e-9 * (1 + t.total_ms));
  for (size_t i = 1; i < t.rows.size(); ++i) CHECK(t.rows[i - 1].ms >= t.rows[i].ms);
  const std::string table = kernels::format_profile(t);
  CHECK(table.find("| conv forward |") != std::string::npos);
  CHECK(table.find("whole step") != std::string::npos);
  // Profiling only reads clocks: the step's result is the same to the bit.
  profiled_step(spec, false, &without);
  CHECK(with == without);
}

TEST_CASE("profile: the cnn's max pooling is its own kind; a second begin is refused; end without begin throws") {
  std::vector<double> theta;
  const kernels::ProfTable t = profiled_step(models::ModelSpec{"cnn", 1, 28, 28, 10}, true, &theta);
  CHECK(t.calls_of(ProfKind::pooling) > 0);
  CHECK(t.ms_of(ProfKind::pooling) > 0);
  kernels::profile_begin(-1);
  CHECK_THROWS(kernels::profile_begin(-1));
  const kernels::ProfTable empty = kernels::profile_end();
  CHECK(empty.calls_of(ProfKind::conv_fwd) == 0);
  CHECK_THROWS(kernels::profile_end());
}

TEST_CASE("profile: op names map to kinds; the speed switches round-trip") {
  CHECK(kernels::prof_kind_of("conv2d") == ProfKind::conv_fwd);
  CHECK(kernels::prof_kind_of("conv2d_backward") == ProfKind::conv_bwd_data);
  CHECK(kernels::prof_kind_of("batch_norm_backward") == ProfKind::batchnorm);
  CHECK(kernels::prof_kind_of("linear_backward") == ProfKind::gemm);
  CHECK(kernels::prof_kind_of("fused_update") == ProfKind::update);
  CHECK(kernels::prof_kind_of("accumulate_grad") == ProfKind::accumulate);
  CHECK(kernels::prof_kind_of("conv2d_bn_act") == ProfKind::conv_fwd);
  CHECK(kernels::prof_kind_of("gqa_attention_backward") == ProfKind::attention);
  CHECK(kernels::prof_kind_of("causal_attention") == ProfKind::attention);
  CHECK(kernels::prof_kind_of("rope_backward") == ProfKind::attention);
  CHECK(kernels::prof_kind_of("rms_norm") == ProfKind::norm);
  CHECK(kernels::prof_kind_of("layer_norm_backward") == ProfKind::norm);
  CHECK(kernels::prof_kind_of("gelu_tanh_backward") == ProfKind::activation);
  CHECK(kernels::prof_kind_of("swiglu") == ProfKind::activation);
  CHECK(kernels::prof_kind_of("embedding_backward") == ProfKind::embedding);
  CHECK(kernels::prof_kind_of("no such op") == ProfKind::other_op);
  for (int k = 0; k < int(ProfKind::count); ++k) CHECK(std::string(kernels::prof_kind_name(ProfKind(k))) != "?");
  const kernels::PerfOptions saved = kernels::perf_options();
  kernels::PerfOptions o;
  o.tf32 = true;
  o.deterministic = true;
  o.conv_find = false;
  kernels::set_perf_options(o);
  const kernels::PerfOptions back = kernels::perf_options();
  CHECK(back.tf32);
  CHECK(back.deterministic);
  CHECK_FALSE(back.conv_find);
  kernels::set_perf_options(saved);
}

#ifdef HAMU_CUDA
namespace {
bool profile_have_gpu() {
  static const bool g = testing::gpu_or_say("cuda profile/graph tests");
  return g;
}
}  // namespace

TEST_CASE("cuda: profile of a resnet20 step with CUDA events; deterministic algorithms repeat to the bit") {
  if (!profile_have_gpu()) return;
  const testing::PerfScope det(testing::deterministic_algorithms);
  const Device gpu{Device::cuda, 0};
  const models::ModelSpec spec{"resnet20", 3, 16, 16, 10};
  std::vector<double> plain, again, profiled;
  profiled_step(spec, false, &plain, gpu);
  profiled_step(spec, false, &again, gpu);
  CHECK(plain == again);
  const kernels::ProfTable t = profiled_step(spec, true, &profiled, gpu);
  CHECK(profiled == plain);
  CHECK(t.clock == "CUDA events on cuda:0");
  for (ProfKind k : {ProfKind::conv_fwd, ProfKind::conv_bwd_data, ProfKind::conv_bwd_filter, ProfKind::batchnorm,
                     ProfKind::relu, ProfKind::add, ProfKind::cross_entropy, ProfKind::update}) {
    INFO("kind: " << std::string(kernels::prof_kind_name(k)) << "\n" << kernels::format_profile(t));
    CHECK(t.calls_of(k) > 0);
    CHECK(t.ms_of(k) > 0);
  }
  double sum = 0;
  for (const kernels::ProfRow& row : t.rows) sum += row.ms;
  CHECK(std::abs(sum - t.total_ms) <= 1e-6 * (1 + t.total_ms));
}

TEST_CASE("cuda: a CUDA-graph capture of the whole step replays to the ordinary step's parameters") {
  if (!profile_have_gpu()) return;
  const testing::PerfScope det(testing::deterministic_algorithms);
  const Device gpu{Device::cuda, 0};
  const models::ModelSpec spec{"resnet20", 3, 16, 16, 10};
  // Ordinary: warm-up step, then two steps.
  StepRig plain(spec, gpu);
  plain.step();
  plain.step();
  plain.step();
  // Graph: the same warm-up step (plans, caches, scratch), then capture one step and replay it twice.
  StepRig rig(spec, gpu);
  rig.step();
  auto* pinned = static_cast<kernels::HamuReport*>(kernels::cuda_host_alloc_pinned(sizeof(kernels::HamuReport)));
  std::string why;
  void* g = nullptr;
  try {
    kernels::cuda_graph_begin(0);
    rig.step_async(pinned, true);
    g = kernels::cuda_graph_end(0, &why);
  } catch (const std::exception& e) {
    kernels::cuda_graph_abort(0);
    why = e.what();
  }
  // The deferred step reads nothing back (the CPU tests of tests/test_graph_step.cpp prove it under the
  // host-transfer guard), so its capture must succeed.
  CHECK_MESSAGE(g != nullptr, "cuda graph capture failed: " << why);
  if (g) {
    kernels::cuda_graph_launch(0, g);
    kernels::cuda_graph_launch(0, g);
    kernels::cuda_synchronize(kernels::cuda_context(0));
    CHECK(pinned->n_blocks == rig.update->count());
    CHECK(rig.theta0() == plain.theta0());
    kernels::cuda_graph_destroy(g);
  }
  kernels::cuda_host_free_pinned(pinned);
}
#endif
