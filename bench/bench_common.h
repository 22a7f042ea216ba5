// bench/bench_common.h: what the bench binaries share: the median of repeated timings, a device sync
// (so a timing covers the queued GPU work) and the choice of --device.
#pragma once
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/kernels.h"

namespace hamu::bench {

inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

inline void sync(Device d) {
#ifdef HAMU_CUDA
  if (d.is_cuda()) kernels::cuda_synchronize(kernels::cuda_context(d.index));
#else
  (void)d;
#endif
}

// Resolves --device "auto" to cuda where a GPU is present, else cpu. False, after printing "<bench>: skipped:
// no GPU", when cuda was asked for and there is none: the bench then exits 0, as bench/run expects.
inline bool resolve_device(const char* bench, std::string& device) {
#ifdef HAMU_CUDA
  const bool gpu_here = kernels::cuda_device_count() > 0;
#else
  const bool gpu_here = false;
#endif
  if (device == "auto") device = gpu_here ? "cuda" : "cpu";
  if (device == "cuda" && !gpu_here) {
    std::printf("%s: skipped: no GPU\n", bench);
    return false;
  }
  return true;
}

}  // namespace hamu::bench
