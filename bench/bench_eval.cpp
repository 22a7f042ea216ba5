// bench/bench_eval.cpp: evaluation throughput (issue #12 item 6: "evaluation of the demo's 70,000 images
// should take well under a second on an H200"). Times evaluate_indices, the path `hamu eval` and every
// unlearning report take (gather and normalise each batch on the host, copy it over, forward, per-sample
// loss, entropy and prediction back), over a Fashion-MNIST-shaped data set of N images, and beside it the
// model's forward alone on one batch already on the device, repeated as often: the difference is the data
// pipeline's share, which says where the time goes before anything is tuned. --cuda-graph 1 adds the same
// evaluation with its full batches replayed as a captured graph (unlearn/graph_eval.h: `hamu eval --cuda-graph`),
// checked to give the ordinary results bit for bit. --profile 1: then one more forward of one batch with the
// per-op-kind profiler on (kernels/perf.h: CUDA events on the GPU, the wall clock on the CPU), as a table.
//
// usage: bench_eval [--device auto|cpu|cuda] [--images N] [--batch B] [--reps R] [--model mlp|cnn|resnet20]
//                   [--cuda-graph 0|1] [--profile 0|1]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "engine/ops.h"
#include "engine/progress.h"
#include "kernels/perf.h"
#include "loaders/batch.h"
#include "models/models.h"
#include "unlearn/metrics.h"

using namespace hamu;

int main(int argc, char** argv) {
  std::string device_name = "auto", arch = "cnn";
  int64_t images = 70000, batch = 1000;
  int reps = 3;
  int graph = 0, profile = 0;
  bool bad = argc % 2 == 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--device")) device_name = argv[i + 1];
    else if (!std::strcmp(argv[i], "--images")) images = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--model")) arch = argv[i + 1];
    else if (!std::strcmp(argv[i], "--cuda-graph")) graph = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--profile")) profile = std::atoi(argv[i + 1]);
    else bad = true;
  }
  if (bad || images < 1 || images > 10000000 || batch < 1 || reps < 1 || (graph != 0 && graph != 1) ||
      (profile != 0 && profile != 1)) {
    std::fprintf(stderr, "usage: bench_eval [--device auto|cpu|cuda] [--images N<=1e7] [--batch B] [--reps R] "
                         "[--model mlp|cnn|resnet20] [--cuda-graph 0|1] [--profile 0|1]\n");
    return 2;
  }
  if (!bench::resolve_device("bench_eval", device_name)) return 0;
  const Device device = Device::parse(device_name);

  // Fashion-MNIST's shape: 1x28x28 bytes, 10 classes.
  ImageDataset ds;
  ds.n = images;
  ds.c = 1;
  ds.h = ds.w = 28;
  ds.num_classes = 10;
  for (int k = 0; k < 10; ++k) ds.class_names.push_back(std::string(1, char('a' + k)));
  std::mt19937 g(7);
  ds.pixels.resize(size_t(images * 28 * 28));
  for (uint8_t& p : ds.pixels) p = uint8_t(g() & 0xff);
  for (int64_t i = 0; i < images; ++i) ds.labels.push_back(int32_t(i % 10));
  ds.source = "synthetic";
  std::vector<int64_t> all(static_cast<size_t>(images));
  for (int64_t i = 0; i < images; ++i) all[size_t(i)] = i;
  const Normalizer norm = compute_normalizer(ds);

  Rng rng(1);
  auto model = models::build_model({arch, 1, 28, 28, 10}, rng);
  model->to(device);
  EvalOptions eo;
  eo.batch = batch;
  eo.device = device;
  // Warm-up: allocations, algorithm choice for both batch shapes, pinned buffers.
  (void)evaluate_indices(*model, ds, all, norm, eo);

  // The median seconds of `reps` evaluations with `o`, and the last one's results.
  auto time_eval = [&](const EvalOptions& o, SplitEval& last) {
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      bench::sync(device);
      const double t0 = now_s();
      last = evaluate_indices(*model, ds, all, norm, o);
      bench::sync(device);
      t.push_back(now_s() - t0);
    }
    return bench::median(t);
  };
  SplitEval plain, graphed;
  const double tw = time_eval(eo, plain);
  const double acc = plain.acc;
  double tg = 0;
  EvalGraphs graphs;
  if (graph) {
    eo.graph = true;
    eo.graphs = &graphs;
    (void)evaluate_indices(*model, ds, all, norm, eo);  // the warm-up batch and the capture
    tg = time_eval(eo, graphed);
  }
  std::vector<double> forward_only;
  kernels::ProfTable prof;
  {
    const int64_t n = std::min(batch, images);
    std::vector<int64_t> idx(all.begin(), all.begin() + n);
    const Batch b = gather_batch(ds, idx, norm, device);
    nn::EvalModeScope eval_mode(*model);
    NoGradGuard ng;
    const int64_t batches = (images + batch - 1) / batch;
    for (int r = 0; r < reps; ++r) {
      bench::sync(device);
      const double t0 = now_s();
      for (int64_t k = 0; k < batches; ++k) (void)cross_entropy_per_sample(model->forward(b.images), b.labels);
      bench::sync(device);
      forward_only.push_back(now_s() - t0);
    }
    if (profile) {  // one batch's forward and loss, every op timed by kind
      bench::sync(device);
      kernels::profile_begin(device.is_cuda() ? device.index : -1);
      (void)cross_entropy_per_sample(model->forward(b.images), b.labels);
      prof = kernels::profile_end();
    }
  }
  const double tf = bench::median(forward_only);
#ifdef HAMU_CUDA
  const std::string where = device.is_cuda() ? kernels::cuda_device_name(device.index)
                                             : "CPU, " + std::to_string(omp_get_max_threads()) + " threads";
#else
  const std::string where = "CPU, " + std::to_string(omp_get_max_threads()) + " threads";
#endif
  std::printf("bench_eval: %s, %lld images 1x28x28, batch %lld, %s, median of %d (accuracy %.3f: random data)\n",
              arch.c_str(), (long long)images, (long long)batch, where.c_str(), reps, acc);
  std::printf("| measure | seconds | img/s |\n|---|---:|---:|\n");
  std::printf("| evaluate_indices (as hamu eval: host gather + normalise, copy, forward, results back) | %.3f | %.0f |\n",
              tw, double(images) / tw);
  if (graph) {
    const bool same = graphed.losses == plain.losses && graphed.predicted == plain.predicted && graphed.acc == plain.acc &&
                      graphed.loss == plain.loss && graphed.entropy == plain.entropy;
    std::printf("| evaluate_indices, full batches replayed (hamu eval --cuda-graph%s; %s; results %s) | %.3f | %.0f |\n",
                device.is_cuda() ? "" : ": the CPU's emulation, the closure re-run", graphs.summary().c_str(),
                same ? "bit for bit the same" : "DIFFERENT", tg, double(images) / tg);
  }
  std::printf("| forward + per-sample loss only, one batch already on the device | %.3f | %.0f |\n", tf,
              double(images) / tf);
  std::printf("  the data pipeline and read-back: %.0f%% of the evaluation\n", tw > 0 ? 100.0 * (tw - tf) / tw : 0.0);
  if (profile)
    std::printf("\nprofile of one batch's forward + per-sample loss (%s):\n%s", prof.clock.c_str(),
                kernels::format_profile(prof).c_str());
  return 0;
}
