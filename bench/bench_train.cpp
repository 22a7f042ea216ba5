// bench/bench_train.cpp: training throughput (forward + backward + AdamW update on a batch already on the
// device, batch 128, all cores) of mlp, cnn and resnet20, with each model's FLOPs per image and, on the CPU,
// the achieved GFLOP/s beside our own 1024^3 GEMM measured in the same run (the ceiling the layers are built
// on). `--device cuda --batch 512 --models cnn` is the step bench/peer/train_cnn_torch.py times in PyTorch
// (the same model, AdamW lr 1e-3, zero_grad + cross-entropy + backward + step, no data loading, img/s as the
// median of windows): issue #12's training row, one number against the other.
//
// --cuda-graph 1: each step replayed from a captured CUDA graph (train/graph_train.h, as hamu train
// --cuda-graph runs it: the batch copied in, one launch, one wait for the loss and the predictions).
// --optimizer sgd (momentum 0.9, lr 1e-2) and --clip X time hamu train's other step variants. --profile 1:
// after each model's row, one more (ordinary) step with the per-op-kind profiler on (kernels/perf.h), as a table.
//
// usage: bench_train [--steps N] [--reps R] [--batch B] [--device cpu|cuda|auto] [--models mlp,cnn,resnet20]
//                    [--cuda-graph 1] [--optimizer adamw|sgd] [--clip X] [--profile 1]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "engine/progress.h"
#include "engine/capture.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"
#include "models/models.h"
#include "train/graph_train.h"

using namespace hamu;

namespace {


using bench::median;

double gemm_gflops() {
  const int64_t n = 1024;
  std::vector<float> a(size_t(n * n)), b(size_t(n * n)), c(size_t(n * n));
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = float((i * 7919) % 1000) / 1000.0f - 0.5f;
    b[i] = float((i * 104729) % 1000) / 1000.0f - 0.5f;
  }
  kernels::CpuCtx ctx;
  kernels::gemm(ctx, false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  std::vector<double> t;
  for (int r = 0; r < 5; ++r) {
    const double t0 = now_s();
    kernels::gemm(ctx, false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    t.push_back(now_s() - t0);
  }
  return 2.0 * n * n * n / median(t) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 10, reps = 5, batch = 128;
  std::string device_name = "cpu", models_list, optimizer = "adamw";
  bool graph = false, profile = false;
  double clip = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--device")) device_name = argv[i + 1];
    else if (!std::strcmp(argv[i], "--models")) models_list = argv[i + 1];
    else if (!std::strcmp(argv[i], "--cuda-graph")) graph = std::atoi(argv[i + 1]) != 0;
    else if (!std::strcmp(argv[i], "--optimizer")) optimizer = argv[i + 1];
    else if (!std::strcmp(argv[i], "--clip")) clip = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--profile")) profile = std::atoi(argv[i + 1]) != 0;
    else steps = 0;  // unknown flag: usage below
  }
  if (steps < 1 || reps < 1 || batch < 2 || argc % 2 == 0 || (optimizer != "adamw" && optimizer != "sgd") ||
      !(clip >= 0)) {
    std::fprintf(stderr, "usage: bench_train [--steps N>=1] [--reps R>=1] [--batch B>=2] [--device cpu|cuda|auto] "
                         "[--models mlp,cnn,resnet20] [--cuda-graph 1] [--optimizer adamw|sgd] [--clip X>=0] "
                         "[--profile 1]\n");
    return 2;
  }
  if (!bench::resolve_device("bench_train", device_name)) return 0;
  const Device device = Device::parse(device_name);
  if (device.is_cuda()) {
#ifdef HAMU_CUDA
    std::printf("bench_train: %s training throughput, batch %d, median of %d windows of %d steps\n",
                kernels::cuda_device_name(device.index), batch, reps, steps);
#endif
  } else {
    std::printf("bench_train: CPU training throughput, batch %d, %d threads, median of %d windows of %d steps\n", batch,
                omp_get_max_threads(), reps, steps);
  }
  std::printf("optimizer %s%s\n", optimizer.c_str(), clip > 0 ? (", --clip " + std::to_string(clip)).c_str() : "");
  const double peak = device.is_cuda() ? 0.0 : gemm_gflops();
  if (!device.is_cuda()) std::printf("our f32 GEMM 1024^3 in the same run: %.1f GFLOP/s\n\n", peak);
  std::printf("%-10s %-12s %10s %12s %12s %11s %10s\n", "model", "input", "params", "MFLOP/img", "img/s", "GFLOP/s",
              "of GEMM");
  struct Case {
    const char* arch;
    int64_t c, h, w;
  };
  const Case cases[] = {{"mlp", 1, 28, 28}, {"cnn", 1, 28, 28}, {"resnet20", 1, 28, 28}, {"resnet20", 3, 32, 32}};
  auto wanted = [&](const char* arch) {
    if (models_list.empty()) return true;
    size_t start = 0;
    while (start <= models_list.size()) {
      const size_t end = std::min(models_list.find(',', start), models_list.size());
      if (models_list.compare(start, end - start, arch) == 0) return true;
      start = end + 1;
    }
    return false;
  };
  for (const Case& cs : cases) {
    if (!wanted(cs.arch) || (!models_list.empty() && cs.c == 3)) continue;  // a list: the 28x28 shapes only
    Rng rng(1);
    models::ModelSpec spec{cs.arch, cs.c, cs.h, cs.w, 10};
    auto model = models::build_model(spec, rng);
    model->train(true);
    Tensor x = Tensor::empty({batch, cs.c, cs.h, cs.w});
    rng.fill_normal(x, 0.0, 1.0);
    std::vector<int32_t> yv(static_cast<size_t>(batch));
    for (int i = 0; i < batch; ++i) yv[size_t(i)] = i % 10;
    Tensor y = Tensor::from_vector<int32_t>(yv, {batch});
    // FLOPs per image of one training step: count forward MACs with a capture of every layer's
    // input and weight shapes, then training = forward + 2x backward (data and weight gradients).
    double macs = 0;
    {
      CaptureScope scope;
      Tensor loss = cross_entropy(model->forward(x.narrow(0, 0, 2)), y.narrow(0, 0, 2));
      for (const auto& rec : scope.records()) {
        const Tensor& w = rec->weight;
        if (rec->op == "conv2d" || rec->op == "linear") macs += double(w.numel()) * double(rec->positions);
      }
    }
    const double flops_per_img = 2.0 * macs * 3.0;
    model->to(device);
    x = x.to(device);
    y = y.to(device);
    std::unique_ptr<Optimizer> opt;
    if (optimizer == "sgd") opt = std::make_unique<Sgd>(model->parameters(), SgdOptions{1e-2, 0.9});
    else opt = std::make_unique<AdamW>(model->parameters(), AdamWOptions{});
    std::unique_ptr<GraphedTrainSteps> graphs;
    if (graph) graphs = std::make_unique<GraphedTrainSteps>(*model, *opt, device, clip);
    Batch b;
    b.images = x;
    b.labels = y;
    b.indices.resize(size_t(batch));
    auto step = [&](bool ordinary = false) {
      if (!ordinary && graphs && graphs->step(b)) return;  // replayed (the first call: the warm-up, below)
      opt->zero_grad();
      Tensor loss = cross_entropy(model->forward(x), y);
      loss.backward();
      if (clip > 0 && !std::isfinite(clip_grad_norm(opt->params(), clip))) return;
      opt->step();
    };
    for (int w = 0; w < (device.is_cuda() ? 5 : 1); ++w) step();  // warm-up (allocations, caches, algorithms)
    std::vector<double> rates;
    for (int r = 0; r < reps; ++r) {
      bench::sync(device);
      const double t0 = now_s();
      for (int s = 0; s < steps; ++s) step();
      bench::sync(device);
      rates.push_back(double(steps) * batch / (now_s() - t0));
    }
    const double ips = median(rates);
    const double gflops = ips * flops_per_img / 1e9;
    char input[32];
    std::snprintf(input, sizeof input, "%lldx%lldx%lld", (long long)cs.c, (long long)cs.h, (long long)cs.w);
    if (graphs)
      std::printf("  %s steps replayed from a capture (%s): %lld replays from %lld capture(s)%s%s\n", cs.arch,
                  device.is_cuda() ? "CUDA graph" : "the CPU's emulation", (long long)graphs->replays(),
                  (long long)graphs->captures(), graphs->disabled().empty() ? "" : "; not used: ",
                  graphs->disabled().c_str());
    if (device.is_cuda())
      std::printf("%-10s %-12s %10lld %12.2f %12.0f %11.1f %10s\n", cs.arch, input, (long long)model->num_parameters(),
                  flops_per_img / 1e6, ips, gflops, "-");
    else
      std::printf("%-10s %-12s %10lld %12.2f %12.0f %11.1f %9.0f%%\n", cs.arch, input,
                  (long long)model->num_parameters(), flops_per_img / 1e6, ips, gflops, 100.0 * gflops / peak);
    if (profile) {
      bench::sync(device);
      kernels::profile_begin(device.is_cuda() ? device.index : -1);
      step(true);
      const kernels::ProfTable t = kernels::profile_end();
      std::printf("\nprofile of one %s training step (%s):\n%s\n", cs.arch, t.clock.c_str(),
                  kernels::format_profile(t).c_str());
    }
  }
  return 0;
}
