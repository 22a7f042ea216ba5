// bench/bench_cross_entropy.cpp: the image classifiers' cross-entropy (engine cross_entropy, the mean over
// non-ignored rows, and cross_entropy_per_sample under a per-row upstream gradient) at rows x classes:
// forward alone (no tape) and forward + backward, medians over --reps. The logits' gradient is what a
// training step needs from the loss, so "fwd+bwd" is the op's whole cost in a step.
//
// usage: bench_cross_entropy [--device cuda|cpu] [--reps N] [--shape ROWSxCLASSES]...
//        (defaults: 1024x10 and 256x1000; on CUDA also 65536x10 and 8192x1000)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_common.h"
#include "engine/ops.h"
#include "engine/progress.h"
#include "engine/rng.h"
#include "kernels/kernels.h"

using namespace hamu;

using bench::median;
using bench::sync;

namespace {

struct Times {
  double fwd = 0, mean_both = 0, per_sample_both = 0;
};

Times time_shape(int64_t rows, int64_t classes, int reps, Device dev, Rng& rng) {
  std::vector<float> x(static_cast<size_t>(rows * classes)), g(static_cast<size_t>(rows));
  std::vector<int32_t> y(static_cast<size_t>(rows));
  for (float& v : x) v = float(rng.uniform() * 8 - 4);
  for (float& v : g) v = float(rng.uniform() * 2 - 1);
  for (int64_t r = 0; r < rows; ++r)
    y[size_t(r)] = r % 17 == 3 ? -100 : int32_t(rng.uniform() * double(classes)) % int32_t(classes);
  Tensor logits = Tensor::from_vector(x, {rows, classes}, dev).requires_grad_();
  Tensor labels = Tensor::from_vector(y, {rows}, dev);
  Tensor upstream = Tensor::from_vector(g, {rows}, dev);
  std::vector<double> fwd, mean_both, per_both;
  for (int r = 0; r <= reps; ++r) {  // rep 0 warms the allocator and the kernels
    sync(dev);
    const double t0 = now_s();
    {
      NoGradGuard ng;
      Tensor l = cross_entropy(logits, labels);
      sync(dev);
    }
    const double t1 = now_s();
    logits.zero_grad();
    cross_entropy(logits, labels).backward();
    sync(dev);
    const double t2 = now_s();
    logits.zero_grad();
    cross_entropy_per_sample(logits, labels).backward(upstream);
    sync(dev);
    const double t3 = now_s();
    if (r == 0) continue;
    fwd.push_back(t1 - t0);
    mean_both.push_back(t2 - t1);
    per_both.push_back(t3 - t2);
  }
  return {median(fwd), median(mean_both), median(per_both)};
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "auto";
  int reps = 50;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--device") device = v;
    else if (a == "--reps") reps = std::atoi(v);
    else if (a == "--shape") {
      long long rows = 0, classes = 0;
      if (std::sscanf(v, "%lldx%lld", &rows, &classes) != 2 || rows < 1 || classes < 1 || rows * classes > (1ll << 31)) {
        std::fprintf(stderr, "bench_cross_entropy: --shape %s: expected ROWSxCLASSES, at most 2^31 logits\n", v);
        return 2;
      }
      shapes.push_back({rows, classes});
    } else {
      std::fprintf(stderr, "bench_cross_entropy: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (reps < 1) {
    std::fprintf(stderr, "bench_cross_entropy: --reps must be at least 1\n");
    return 2;
  }
  if (!bench::resolve_device("bench_cross_entropy", device)) return 0;
  const bool cuda = device == "cuda";
  if (shapes.empty()) {
    shapes = {{1024, 10}, {256, 1000}};
    if (cuda) shapes.insert(shapes.end(), {{65536, 10}, {8192, 1000}});
  }
  const Device dev = cuda ? Device{Device::cuda, 0} : Device{};
  Rng rng(11);
  std::printf("bench_cross_entropy: %s, float32, every 17th row ignored, %d reps (medians)\n", device.c_str(), reps);
  std::printf("| rows x classes | forward ms | mean: fwd+bwd ms | per-sample: fwd+bwd ms |\n");
  std::printf("|---|---:|---:|---:|\n");
  for (const auto& [rows, classes] : shapes) {
    const Times t = time_shape(rows, classes, reps, dev, rng);
    std::printf("| %lld x %lld | %.4f | %.4f | %.4f |\n", (long long)rows, (long long)classes, t.fwd * 1e3,
                t.mean_both * 1e3, t.per_sample_both * 1e3);
  }
  return 0;
}
