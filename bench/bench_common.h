// bench/bench_common.h: what the bench binaries share: the median of repeated timings and a device sync
// (so a timing covers the queued GPU work).
#pragma once
#include <algorithm>
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

}  // namespace hamu::bench
