// bench/bench_capi.cpp: the C API's step against the engine's own FusedUpdate step on the same blocks: what
// libhamu adds (validation of the config, the method lookup, the report conversion; hamu_step also compares
// the block array with its cached plan). One HAMU-Q step = statistics pass + coefficients + apply pass.
//   engine       FusedUpdate over engine tensors, compute_stats + the method's own step (the runner's path)
//   capi plan    hamu_plan_step on caller-owned memory (this binary's static copy of the C API)
//   capi step    hamu_step with the same block array every call (the context's cached plan)
//   libhamu.so   hamu_step through the shared library (position-independent, -fvisibility=hidden build),
//                loaded with dlopen when its path is given
// CPU always; CUDA too in a CUDA=1 build with a GPU (the C API on the default stream, the engine on its own;
// each step ends with the report copy, so per-step times include the synchronisation both pay).
//
// Usage: bench_capi [--quick] [--reps N] [--so PATH/libhamu.so] [--cpu-time]
#include <dlfcn.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "capi/hamu.h"
#include "engine/progress.h"
#include "engine/rng.h"
#include "kernels/kernels.h"
#include "unlearn/method_registry.h"
#include "unlearn/update.h"

using namespace hamu;

namespace {

using StepFn = int (*)(hamu_context*, const hamu_block*, int64_t, const hamu_step_config*, hamu_report*, hamu_block_stats*);
using CreateFn = int (*)(const char*, hamu_context**);
using DestroyFn = void (*)(hamu_context*);
using InitFn = void (*)(hamu_step_config*);

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Block sizes of a ResNet-like model scaled to `total` parameters: 20 large tensors and 40 small ones.
std::vector<int64_t> block_sizes(int64_t total) {
  std::vector<int64_t> s(40, 64);
  const int64_t rest = total - 40 * 64;
  for (int i = 0; i < 20; ++i) s.push_back(rest / 20 + (i < rest % 20 ? 1 : 0));
  return s;
}

// Median ms of each function, run interleaved (f0, f1, ..., f0, f1, ...) so that load changes on a shared
// machine hit every variant alike; one untimed warm-up round first (first touch, scratch, plan).
// With --cpu-time the clock is the process's CPU time: on a machine shared with other jobs it counts the
// work done rather than the time spent waiting for a core (meaningful with OMP_NUM_THREADS=1).
bool g_cpu_clock = false;

double clock_s() {
  if (!g_cpu_clock) return now_s();
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

std::vector<double> interleaved_ms(int reps, const std::vector<std::function<void()>>& fns) {
  for (const auto& f : fns) f();
  std::vector<std::vector<double>> t(fns.size());
  for (int i = 0; i < reps; ++i)
    for (size_t k = 0; k < fns.size(); ++k) {
      const double t0 = clock_s();
      fns[k]();
      t[k].push_back(1e3 * (clock_s() - t0));
    }
  std::vector<double> out;
  for (auto& v : t) out.push_back(median(v));
  return out;
}

void run(const char* label, Device dev, int64_t total, int reps, void* so) {
  const std::vector<int64_t> sizes = block_sizes(total);
  Rng rng(1);
  std::vector<Tensor> params, r, f;
  for (int64_t n : sizes) {
    std::vector<float> a(static_cast<size_t>(n)), b(a), c(a);
    for (int64_t i = 0; i < n; ++i) {
      a[size_t(i)] = float(rng.normal());
      b[size_t(i)] = float(rng.normal() * 1e-3);
      c[size_t(i)] = float(0.3 * b[size_t(i)] + rng.normal() * 1e-3);
    }
    params.push_back(Tensor::from_vector<float>(a, {n}).to(dev));
    r.push_back(Tensor::from_vector<float>(b, {n}).to(dev));
    f.push_back(Tensor::from_vector<float>(c, {n}).to(dev));
  }
  UnlearnOptions opt;
  opt.method = &parse_method("hamu-q");
  opt.params.lr = 1e-4;
  FusedUpdate engine(params);
  for (size_t i = 0; i < params.size(); ++i) {
    engine.retain_grads()[i].copy_(r[i]);
    engine.forget_grads()[i].copy_(f[i]);
  }
  std::vector<hamu_block> blocks;
  for (size_t i = 0; i < params.size(); ++i)
    blocks.push_back({params[i].data<float>(), r[i].data<float>(), f[i].data<float>(), params[i].numel()});
  const std::string devname = dev.str();
  hamu_context* ctx = nullptr;
  hamu_context_create(devname.c_str(), &ctx);
  hamu_step_config cfg;
  hamu_step_config_init(&cfg);
  cfg.lr = opt.params.lr;
  hamu_report rep;
  hamu_plan* plan = nullptr;
  if (hamu_plan_create(ctx, blocks.data(), int64_t(blocks.size()), &plan) != HAMU_OK) {
    std::fprintf(stderr, "bench_capi: %s\n", hamu_last_error(ctx));
    std::exit(1);
  }
  std::vector<std::function<void()>> fns = {
      [&] {
        engine.compute_stats();
        (void)opt.method->own_step(opt, engine);
      },
      [&] { hamu_plan_step(plan, &cfg, &rep, nullptr); },
      [&] { hamu_step(ctx, blocks.data(), int64_t(blocks.size()), &cfg, &rep, nullptr); }};
  hamu_context* sc = nullptr;
  hamu_step_config scfg;
  StepFn so_step = nullptr;
  DestroyFn so_destroy = nullptr;
  if (so) {
    auto create = reinterpret_cast<CreateFn>(dlsym(so, "hamu_context_create"));
    auto init = reinterpret_cast<InitFn>(dlsym(so, "hamu_step_config_init"));
    so_destroy = reinterpret_cast<DestroyFn>(dlsym(so, "hamu_context_destroy"));
    so_step = reinterpret_cast<StepFn>(dlsym(so, "hamu_step"));
    init(&scfg);
    scfg.lr = opt.params.lr;
    if (create(devname.c_str(), &sc) == HAMU_OK)
      fns.push_back([&] { so_step(sc, blocks.data(), int64_t(blocks.size()), &scfg, &rep, nullptr); });
  }
  const std::vector<double> t = interleaved_ms(reps, fns);
  hamu_plan_destroy(plan);
  hamu_context_destroy(ctx);
  if (sc) so_destroy(sc);
  const double t_engine = t[0], t_plan = t[1], t_step = t[2], t_so = t.size() > 3 ? t[3] : 0;
  auto pct = [&](double t) { return 100.0 * (t / t_engine - 1.0); };
  std::printf("| %s | %.1fM | %zu | %.3f | %.3f (%+.1f%%) | %.3f (%+.1f%%) | ", label, double(total) / 1e6, sizes.size(),
              t_engine, t_plan, pct(t_plan), t_step, pct(t_step));
  if (t.size() > 3) std::printf("%.3f (%+.1f%%) |\n", t_so, pct(t_so));
  else std::printf("- |\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int reps = 21;
  const char* so_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(3, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--so") && i + 1 < argc) so_path = argv[++i];
    else if (!std::strcmp(argv[i], "--cpu-time")) g_cpu_clock = true;
    else {
      std::fprintf(stderr, "usage: bench_capi [--quick] [--reps N] [--so PATH/libhamu.so] [--cpu-time]\n");
      return 2;
    }
  }
  void* so = nullptr;
  if (so_path) {
    so = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
    if (!so) std::fprintf(stderr, "bench_capi: %s (libhamu.so column skipped)\n", dlerror());
  }
  std::printf("bench_capi: one HAMU-Q step (stats + coefficients + apply), median ms of %d (%s)\n", reps,
              g_cpu_clock ? "process CPU time" : "wall clock");
  std::printf("| device | params | blocks | engine ms | capi plan ms | capi hamu_step ms | libhamu.so hamu_step ms |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  const std::vector<int64_t> totals = quick ? std::vector<int64_t>{1 << 20} : std::vector<int64_t>{1 << 20, 20 << 20};
  for (int64_t t : totals) run("cpu", Device{}, t, reps, so);
#ifdef HAMU_CUDA
  if (kernels::cuda_device_count() > 0) {
    for (int64_t t : totals) run("cuda:0", Device{Device::cuda, 0}, t, reps * 5, so);
  } else {
    std::printf("bench_capi: cuda rows skipped: no GPU\n");
  }
#endif
  return 0;
}
