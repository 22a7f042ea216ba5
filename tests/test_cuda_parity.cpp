// tests/test_cuda_parity.cpp: the CUDA device layer (devices, contexts, copies, pinned memory, errors). Every
// kernel's GPU-vs-CPU parity is table-driven: the op table (tests/backend_ops_table.cpp) and the kernel
// cases (tests/backend_kernel_cases.cpp), run by tests/test_backend_ops.cpp. Compiled only with CUDA=1;
// passes with a notice without a GPU.
#ifdef HAMU_CUDA
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"

using namespace hamu::kernels;

TEST_CASE("cuda: device management / copies / errors") {
  if (cuda_device_count() == 0) {
    std::printf("cuda device tests: skipped: no GPU\n");
    return;
  }
  CudaCtx& ctx = cuda_context(0);
  CHECK(ctx.stream != nullptr);
  CHECK(ctx.blas != nullptr);
#ifdef HAMU_CUDNN
  CHECK(ctx.dnn != nullptr);
#endif
  CHECK(&cuda_context(0) == &ctx);
  CHECK(std::strlen(cuda_device_name(0)) > 0);
  std::printf("cuda tests on: %s, %.1f GiB free\n", cuda_device_name(0),
              double(cuda_free_bytes(0)) / (1024.0 * 1024.0 * 1024.0));
  CHECK(cuda_free_bytes(0) > 0);

  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> h(1000003);
  for (float& x : h) x = u(gen);
  const size_t bytes = h.size() * sizeof(float);
  float* a = static_cast<float*>(cuda_malloc(0, bytes));
  float* b = static_cast<float*>(cuda_malloc(0, bytes));
  cuda_memcpy_h2d(ctx, a, h.data(), bytes);
  cuda_memcpy_d2d(ctx, b, a, bytes);
  std::vector<float> back(h.size());
  cuda_memcpy_d2h(ctx, back.data(), b, bytes);
  CHECK(back == h);
  float* pinned = static_cast<float*>(cuda_host_alloc_pinned(bytes));
  cuda_memcpy_d2h_async(ctx, pinned, b, bytes);
  cuda_synchronize(ctx);
  CHECK(std::equal(h.begin(), h.end(), pinned));
  cuda_host_free_pinned(pinned);

  // Out of memory names the size asked for.
  bool threw = false;
  try {
    void* p = cuda_malloc(0, size_t(1) << 50);
    cuda_free(0, p);
  } catch (const std::runtime_error& e) {
    threw = true;
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("out of memory") != std::string::npos);
    CHECK(msg.find(std::to_string(size_t(1) << 50)) != std::string::npos);
  }
  CHECK(threw);
  // The context still works after the failed allocation.
  fill(ctx, 3, 2.5f, a);
  std::vector<float> three(3);
  cuda_memcpy_d2h(ctx, three.data(), a, 3 * sizeof(float));
  CHECK(three == std::vector<float>{2.5f, 2.5f, 2.5f});
  cuda_free(0, a);
  cuda_free(0, b);
}

#endif  // HAMU_CUDA
