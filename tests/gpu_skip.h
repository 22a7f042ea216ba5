// tests/gpu_skip.h: whether a test file's CUDA tests can run here (a GPU is present); a file without one says
// so once, naming its tests, and they return early (skipped, not failed: CI has no GPU).
#pragma once
#ifdef HAMU_CUDA
#include <cstdio>

#include "kernels/kernels.h"

namespace hamu::testing {

// True with a GPU; otherwise prints "<what>: skipped: no GPU". Each file keeps its own once-only flag:
//   bool have_gpu() { static const bool g = testing::gpu_or_say("bf16 cuda tests"); return g; }
inline bool gpu_or_say(const char* what) {
  static const bool present = kernels::cuda_device_count() > 0;
  if (!present) std::printf("%s: skipped: no GPU\n", what);
  return present;
}

}  // namespace hamu::testing
#endif
