// kernels/cuda/profile.cu: the CUDA half of the profiler (kernels/perf.h): a reusable pool of timing events per
// device, recorded on the device context's stream at every profile mark; elapsed times are read after one
// synchronisation at the end of the profile, so profiling adds no host synchronisation inside a step.
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/perf.h"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

struct EventPool {
  std::vector<cudaEvent_t> events;
  size_t used = 0;
};

EventPool& pool(int device) {
  static EventPool pools[16];
  if (device < 0 || device >= 16) throw std::runtime_error("cuda profile: device index out of range");
  return pools[device];
}

}  // namespace

void cuda_profile_reset(int device) { pool(device).used = 0; }

int cuda_profile_mark(int device) {
  EventPool& p = pool(device);
  const CudaCtx& ctx = cuda_context(device);
  if (p.used == p.events.size()) {
    cudaEvent_t e = nullptr;
    HAMU_CU("cuda profile mark", cudaEventCreate(&e));
    p.events.push_back(e);
  }
  const size_t i = p.used++;
  HAMU_CU("cuda profile mark", cudaEventRecord(p.events[i], stream_of(ctx)));
  return int(i);
}

void cuda_profile_sync(int device) {
  EventPool& p = pool(device);
  if (p.used) HAMU_CU("cuda profile sync", cudaEventSynchronize(p.events[p.used - 1]));
}

double cuda_profile_elapsed_ms(int device, int from, int to) {
  EventPool& p = pool(device);
  if (from < 0 || to < 0 || size_t(from) >= p.used || size_t(to) >= p.used) return 0.0;
  float ms = 0.f;
  HAMU_CU("cuda profile elapsed", cudaEventElapsedTime(&ms, p.events[size_t(from)], p.events[size_t(to)]));
  return double(ms);
}

}  // namespace hamu::kernels
