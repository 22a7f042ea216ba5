// bench/bench_unlearn_step.cpp: one full HAMU-Q unlearning step of resnet20 (CIFAR shape, retain batch
// + forget batch, BatchNorm frozen): gradients of both objectives, clipping, the per-block solve and
// the update, as `hamu unlearn` runs it. GPU by default (prints "skipped: no GPU" without one), or
// --device cpu. The PyTorch eager peer of the same step is bench/peer/hamu_step_torch.py.
//
// usage: bench_unlearn_step [--batch 512] [--steps 20] [--device cuda|cpu] [--no-paired] [--profile] [--tf32]
//                           [--deterministic] [--no-find] [--cuda-graph]
// --profile: after the timed steps, one more step with the per-op-kind profiler on (kernels/perf.h: CUDA
// events on the GPU, the wall clock on the CPU), printed as a table. --tf32, --deterministic, --no-find: the
// speed switches of kernels/perf.h (TF32 math; deterministic cuDNN algorithms only; heuristic instead of
// measured cuDNN algorithm choice). --cuda-graph (GPU): capture one whole step (gradients, statistics,
// coefficients, apply, the report copied asynchronously into pinned memory) as a CUDA graph and time its
// replays too; when the capture fails (a host synchronisation or allocation inside the step) the reason is
// printed and only the ordinary step is timed. The "one wait" row is the step as `hamu unlearn` takes it on
// a GPU (unlearn/graph_step.h OneWaitSteps): nothing read back until the report and the losses, together.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/progress.h"
#include "engine/ops.h"
#include "bench/bench_common.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"
#include "models/models.h"
#include "unlearn/gradients.h"
#include "unlearn/graph_step.h"
#include "unlearn/runner.h"
#include "unlearn/update.h"

using namespace hamu;

namespace {
using bench::median;
using bench::sync;
#ifdef HAMU_CUDA
// Captures step(pinned_report) once as a CUDA graph and times `steps` replays (median), each followed by a
// synchronisation so the number is comparable with the ordinary step's. The report of replay i is read
// after replay i+1 is queued, as a runner would.
template <class Step> void time_graph_step(Device device, Step step, int steps) {
  auto* pinned = static_cast<kernels::HamuReport*>(kernels::cuda_host_alloc_pinned(2 * sizeof(kernels::HamuReport)));
  std::string why;
  void* g = nullptr;
  try {
    kernels::cuda_graph_begin(device.index);
    step(pinned);
    g = kernels::cuda_graph_end(device.index, &why);
  } catch (const std::exception& e) {
    kernels::cuda_graph_abort(device.index);
    why = std::string("capture aborted: ") + e.what();
  }
  if (!g) {
    std::printf("  cuda graph: not used (%s); the ordinary step above stands\n", why.c_str());
    kernels::cuda_host_free_pinned(pinned);
    return;
  }
  std::vector<double> t;
  for (int s = 0; s < steps + 3; ++s) {
    sync(device);
    const double t0 = now_s();
    kernels::cuda_graph_launch(device.index, g);
    sync(device);
    if (s >= 3) t.push_back(now_s() - t0);
  }
  std::printf("| whole step, CUDA graph replay | %.3f |\n", 1e3 * median(t));
  std::printf("  cuda graph: captured once, replayed %d times; last report: applied %d, n_blocks %d\n", steps + 3,
              int(pinned->applied), int(pinned->n_blocks));
  kernels::cuda_graph_destroy(g);
  kernels::cuda_host_free_pinned(pinned);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  int batch = 512, steps = 20;
  bool paired = true, profile = false, graph = false;
  kernels::PerfOptions perf = kernels::perf_options();
  std::string device_name = "cuda";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--device") && i + 1 < argc) device_name = argv[++i];
    else if (!std::strcmp(argv[i], "--no-paired")) paired = false;
    else if (!std::strcmp(argv[i], "--profile")) profile = true;
    else if (!std::strcmp(argv[i], "--tf32")) perf.tf32 = true;
    else if (!std::strcmp(argv[i], "--deterministic")) perf.deterministic = true;
    else if (!std::strcmp(argv[i], "--no-find")) perf.conv_find = false;
    else if (!std::strcmp(argv[i], "--cuda-graph")) graph = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_unlearn_step [--batch N] [--steps N] [--device cuda|cpu] [--no-paired] [--profile] "
                   "[--tf32] [--deterministic] [--no-find] [--cuda-graph]\n");
      return 2;
    }
  }
  if (batch < 2 || steps < 1) {
    std::fprintf(stderr, "bench_unlearn_step: --batch must be >= 2 and --steps >= 1\n");
    return 2;
  }
  kernels::set_perf_options(perf);
  Device device;
  if (device_name != "cpu") {
#ifdef HAMU_CUDA
    if (kernels::cuda_device_count() == 0) {
      std::printf("bench_unlearn_step: skipped: no GPU\n");
      return 0;
    }
    device = Device::parse(device_name);
#else
    std::printf("bench_unlearn_step: skipped: no GPU (built without CUDA)\n");
    return 0;
#endif
  }
  Rng rng(3);
  models::ModelSpec spec{"resnet20", 3, 32, 32, 10};
  auto model = models::build_model(spec, rng);
  model->to(device);
  models::set_batchnorm_frozen(*model, true);
  model->train(true);
  auto make_batch = [&](int n) {
    Batch b;
    Tensor x = Tensor::empty({n, 3, 32, 32});
    rng.fill_normal(x, 0.0, 1.0);
    std::vector<int32_t> y(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) y[size_t(i)] = int32_t(rng.below(10));
    b.images = x.to(device);
    b.labels = Tensor::from_vector<int32_t>(y, {n}).to(device);
    b.indices.resize(size_t(n));
    return b;
  };
  Batch retain = make_batch(batch), forget = make_batch(batch);
  FusedUpdate update(model->parameters());
  UnlearnOptions opt;
  opt.params.lr = 1e-4;  // the paper's setting: the model barely moves, so every step costs the same
  opt.ratio = 0.5;
  const kernels::HamuConfig cfg = hamu_config(opt);
  std::vector<double> t_grad, t_update, t_total;
  std::string fallback;
  bool used_paired = false;
  for (int s = 0; s < steps + 3; ++s) {
    sync(device);
    const double t0 = now_s();
    GradientResult g = compute_gradients(*model, nullptr, update, retain, forget, *opt.method, opt.params, paired, &fallback);
    sync(device);
    const double t1 = now_s();
    update.compute_stats();
    kernels::HamuReport rep = update.hamu_step(cfg);  // returns after the report copy: synchronised
    const double t2 = now_s();
    used_paired = g.paired;
    (void)rep;
    if (s >= 3) {
      t_grad.push_back(t1 - t0);
      t_update.push_back(t2 - t1);
      t_total.push_back(t2 - t0);
    }
  }
  std::printf("bench_unlearn_step: resnet20 (272,474 params, 65 blocks), HAMU-Q, batch %d retain + %d forget, 3x32x32, %s\n",
              batch, batch, device.str().c_str());
#ifdef HAMU_CUDA
  if (device.is_cuda()) std::printf("  card: %s\n", kernels::cuda_device_name(device.index));
#endif
  std::printf("  gradients: %s%s\n", used_paired ? "one paired pass" : "two passes",
              used_paired ? "" : (" (" + fallback + ")").c_str());
  std::printf("| phase | median ms |\n|---|---|\n");
  std::printf("| gradients (forward+backward, both objectives) | %.3f |\n", 1e3 * median(t_grad));
  std::printf("| fused update (stats + coefficients + apply + report copy) | %.3f |\n", 1e3 * median(t_update));
  std::printf("| whole step | %.3f |\n", 1e3 * median(t_total));
  // The step as `hamu unlearn` takes it on a GPU (unlearn/graph_step.h OneWaitSteps): everything queued, the
  // losses not read between forward and backward, one wait at the end for the report and the losses.
  std::vector<double> t_one;
  {
    opt.paired = paired;
    OneWaitSteps one_wait(update, opt, nullptr);
    for (int s = 0; s < steps + 3; ++s) {
      sync(device);
      const double t0 = now_s();
      (void)one_wait.step(*model, retain, forget);
      if (s >= 3) t_one.push_back(now_s() - t0);
    }
  }
  std::printf("| whole step, one wait (as hamu unlearn takes it on a GPU) | %.3f |\n", 1e3 * median(t_one));
  std::printf("  images/s through the step: %.0f (one wait: %.0f)\n", 2.0 * batch / median(t_total),
              2.0 * batch / median(t_one));
#ifdef HAMU_CUDA
  // The captured step reads nothing back (compute_gradients_deferred) and takes the path the ordinary steps took.
  if (graph && device.is_cuda()) time_graph_step(device, [&](kernels::HamuReport* pinned) {
      compute_gradients_deferred(*model, update, retain, forget, *opt.method, opt.params, used_paired);
      update.compute_stats();
      update.hamu_step_async(cfg, pinned);
    }, steps);
#else
  if (graph) std::printf("  cuda graph: not available (built without CUDA)\n");
#endif
  if (profile) {
    // One more step, every op timed by kind (the first steps above were the warm-up: plans, caches).
    sync(device);
    kernels::profile_begin(device.is_cuda() ? device.index : -1);
    compute_gradients(*model, nullptr, update, retain, forget, *opt.method, opt.params, paired, &fallback);
    update.compute_stats();
    (void)update.hamu_step(cfg);
    const kernels::ProfTable t = kernels::profile_end();
    std::printf("\nprofile of one step (%s; tf32 %s, cuDNN algorithms %s%s):\n", t.clock.c_str(), perf.tf32 ? "on" : "off",
                perf.conv_find ? "measured" : "heuristic", perf.deterministic ? ", deterministic only" : "");
    std::printf("%s", kernels::format_profile(t).c_str());
  }
  return 0;
}
