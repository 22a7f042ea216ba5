// bench/bench_ghost_gpu.cpp: the ghost similarity matrix K (per-sample gradient inner products, forget x
// retain) of one Linear/Conv-like block on the GPU against the CPU backend: two gram GEMMs
// (A_f A_r^T and G_f G_r^T) and the fused Hadamard reduction, with the GPU result checked against the CPU's.
//
// Usage: bench_ghost_gpu [--quick]. Prints "skipped: no GPU" and exits 0 without one.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/kernels.h"

#ifdef HAMU_CUDA
#include <cuda_runtime.h>
#endif

namespace kn = hamu::kernels;

#ifdef HAMU_CUDA
namespace {

struct Shape {
  const char* name;
  int64_t nf, nr, t, p, d;  // samples, positions per sample, layer input width p, output width d
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<float> rnd(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = u(gen);
  return v;
}

// K[j,i] = sum_{t,s} (a_f[j,t] . a_r[i,s]) (g_f[j,t] . g_r[i,s]) for one backend.
template <class Ctx>
void ghost_k(const Ctx& ctx, const Shape& s, const float* af, const float* ar, const float* gf, const float* gr,
             float* gram_a, float* gram_g, float* k) {
  const int64_t mf = s.nf * s.t, mr = s.nr * s.t;
  kn::gemm(ctx, false, true, mf, mr, s.p, 1.f, af, s.p, ar, s.p, 0.f, gram_a, mr);
  kn::gemm(ctx, false, true, mf, mr, s.d, 1.f, gf, s.d, gr, s.d, 0.f, gram_g, mr);
  kn::fill(ctx, s.nf * s.nr, 0.f, k);
  kn::ghost_hadamard_reduce(ctx, s.nf, s.nr, s.t, s.t, gram_a, gram_g, mr, k);
}

}  // namespace
#endif

int main(int argc, char** argv) {
  const bool quick = argc > 1 && !std::strcmp(argv[1], "--quick");
#ifndef HAMU_CUDA
  (void)quick;
  std::printf("bench_ghost_gpu: skipped: no GPU (built without CUDA)\n");
  return 0;
#else
  if (kn::cuda_device_count() == 0) {
    std::printf("bench_ghost_gpu: skipped: no GPU\n");
    return 0;
  }
  std::vector<Shape> shapes = {
      {"linear 512x512, 64 x 512 samples", 64, 512, 1, 512, 512},
      {"linear seq 128, 256x256, 16 x 64", 16, 64, 128, 256, 256},
      {"conv 3x3 64ch 8x8, 16 x 128", 16, 128, 64, 576, 64},
  };
  if (quick) shapes.resize(2);
  kn::CudaCtx& ctx = kn::cuda_context(0);
  cudaStream_t st = static_cast<cudaStream_t>(ctx.stream);
  std::printf("bench_ghost_gpu on %s (GPU: median of 10 after warm-up, CUDA events; CPU: median of 3)\n",
              kn::cuda_device_name(0));
  std::printf("\n| block | K | GPU ms | CPU ms | speedup | rel err |\n|---|---:|---:|---:|---:|---:|\n");
  for (const Shape& s : shapes) {
    const int64_t mf = s.nf * s.t, mr = s.nr * s.t;
    const auto af = rnd(mf * s.p, 1), ar = rnd(mr * s.p, 2), gf = rnd(mf * s.d, 3), gr = rnd(mr * s.d, 4);
    // CPU
    std::vector<float> ga(static_cast<size_t>(mf * mr)), gg(ga.size()), kc(static_cast<size_t>(s.nf * s.nr));
    std::vector<double> tc;
    for (int it = 0; it < 3; ++it) {
      const auto t0 = std::chrono::steady_clock::now();
      ghost_k(kn::CpuCtx{}, s, af.data(), ar.data(), gf.data(), gr.data(), ga.data(), gg.data(), kc.data());
      tc.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    // GPU
    auto up = [&](const std::vector<float>& v) {
      float* p = static_cast<float*>(kn::cuda_malloc(0, v.size() * 4));
      kn::cuda_memcpy_h2d(ctx, p, v.data(), v.size() * 4);
      return p;
    };
    float *daf = up(af), *dar = up(ar), *dgf = up(gf), *dgr = up(gr);
    float* dga = static_cast<float*>(kn::cuda_malloc(0, ga.size() * 4));
    float* dgg = static_cast<float*>(kn::cuda_malloc(0, gg.size() * 4));
    float* dk = static_cast<float*>(kn::cuda_malloc(0, kc.size() * 4));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    std::vector<double> tg;
    for (int it = 0; it < 13; ++it) {
      cudaEventRecord(e0, st);
      ghost_k(ctx, s, daf, dar, dgf, dgr, dga, dgg, dk);
      cudaEventRecord(e1, st);
      if (cudaEventSynchronize(e1) != cudaSuccess) {
        std::fprintf(stderr, "bench_ghost_gpu: %s\n", cudaGetErrorString(cudaGetLastError()));
        return 1;
      }
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      if (it >= 3) tg.push_back(ms);
    }
    std::vector<float> kg(kc.size());
    kn::cuda_memcpy_d2h(ctx, kg.data(), dk, kg.size() * 4);
    double num = 0, den = 0;
    for (size_t i = 0; i < kg.size(); ++i) {
      num += (double(kg[i]) - kc[i]) * (double(kg[i]) - kc[i]);
      den += double(kc[i]) * kc[i];
    }
    const double gms = median(tg), cms = median(tc);
    std::printf("| %s | %lldx%lld | %.3f | %.1f | %.0fx | %.1e |\n", s.name, (long long)s.nf, (long long)s.nr, gms, cms,
                cms / gms, den > 0 ? std::sqrt(num / den) : std::sqrt(num));
    std::fflush(stdout);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    for (float* p : {daf, dar, dgf, dgr, dga, dgg, dk}) kn::cuda_free(0, p);
  }
  return 0;
#endif
}
