// bench/bench_attention.cpp: causal grouped-query attention (engine gqa_attention) forward and forward +
// backward at B x H x T x Dh, medians over --reps, with throughput in the FlashAttention convention
// (forward 4·B·H·T²·Dh/2 FLOP for the causal half, backward 2.5 times that) and the allocator's peak.
// On CUDA the fused kernels run (kernels/cuda/attention.cu); HAMU_ATTENTION=unfused selects the GEMM +
// softmax path that materialises [B,H,T,T], HAMU_ATTENTION=bf16 the tensor-core kernels in bfloat16
// (kernels/cuda/attention_tc.cu), so runs compare them. The PyTorch peer is
// bench/peer/attention_torch.py (scaled_dot_product_attention, same shape); scripts/gpu-check.sh runs all three.
//
// usage: bench_attention [--device cuda|cpu] [--batch B] [--heads H] [--kv-heads Hkv] [--tokens T] [--dim Dh]
//                        [--reps N]   (defaults: cuda 4 x 32 x 2048 x 128, cpu 1 x 4 x 256 x 64)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "engine/allocator.h"
#include "engine/ops.h"
#include "engine/progress.h"
#include "engine/rng.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"

using namespace hamu;

using bench::median;
using bench::sync;

int main(int argc, char** argv) {
  std::string device = "auto";
  int64_t b = 0, h = 0, hkv = 0, t = 0, dh = 0;
  int reps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--device") device = v;
    else if (a == "--batch") b = std::atoll(v);
    else if (a == "--heads") h = std::atoll(v);
    else if (a == "--kv-heads") hkv = std::atoll(v);
    else if (a == "--tokens") t = std::atoll(v);
    else if (a == "--dim") dh = std::atoll(v);
    else if (a == "--reps") reps = std::atoi(v);
    else {
      std::fprintf(stderr, "bench_attention: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (!bench::resolve_device("bench_attention", device)) return 0;
  const bool cuda = device == "cuda";
  if (!b) b = cuda ? 4 : 1;
  if (!h) h = cuda ? 32 : 4;
  if (!hkv) hkv = h;
  if (!t) t = cuda ? 2048 : 256;
  if (!dh) dh = cuda ? 128 : 64;
  if (b < 1 || h < 1 || hkv < 1 || h % hkv || t < 1 || dh < 1 || reps < 1) {
    std::fprintf(stderr, "bench_attention: bad shape\n");
    return 2;
  }
  const Device dev = cuda ? Device{Device::cuda, 0} : Device{};
  const char* env = std::getenv("HAMU_ATTENTION");
  const bool unfused = env && std::string(env) == "unfused";
#ifdef HAMU_CUDA
  const bool bf16 = cuda && kernels::perf_options().bf16_attention && kernels::flash_attention_bf16_supported(0);
#else
  const bool bf16 = false;
#endif
  const char* path = !cuda ? "cpu (gemm + softmax)"
                     : (unfused || dh > kernels::kMaxFlashHeadDim) ? "cuda unfused (gemm + softmax)"
                     : bf16 ? "cuda fused, bfloat16 tensor cores"
                            : "cuda fused, float32";
  Rng rng(7);
  auto rnd = [&](Shape s) {
    std::vector<float> v(size_t(shape_numel(s)));
    for (float& x : v) x = float(rng.uniform() * 2 - 1);
    return Tensor::from_vector(v, s, dev);
  };
  Tensor q = rnd({b, h, t, dh}).requires_grad_(), k = rnd({b, hkv, t, dh}).requires_grad_(),
         v = rnd({b, hkv, t, dh}).requires_grad_();
  Tensor proj = rnd({b, h, t, dh});
  std::vector<double> fwd, both;
  for (int r = 0; r <= reps; ++r) {  // rep 0 warms the allocator and the kernels
    sync(dev);
    const double t0 = now_s();
    {
      NoGradGuard ng;
      Tensor y = gqa_attention(q, k, v);
      sync(dev);
    }
    const double t1 = now_s();
    Tensor y = gqa_attention(q, k, v);
    sum(mul(y, proj)).backward();
    sync(dev);
    const double t2 = now_s();
    if (r == 0) continue;
    fwd.push_back(t1 - t0);
    both.push_back(t2 - t1);
  }
  const double flop_fwd = 4.0 * double(b * h) * double(t) * double(t) * double(dh) / 2.0;
  const double mf = median(fwd), mb = median(both);
  const size_t peak = allocator_stats(dev).peak_in_use;
  std::printf("bench_attention: %s, B %lld x H %lld (Hkv %lld) x T %lld x Dh %lld, float32, causal, %d reps\n", path,
              (long long)b, (long long)h, (long long)hkv, (long long)t, (long long)dh, reps);
  std::printf("| path | forward ms | fwd+bwd ms | forward GFLOP/s | fwd+bwd GFLOP/s | peak MiB |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  std::printf("| %s | %.3f | %.3f | %.0f | %.0f | %.0f |\n", path, mf * 1e3, mb * 1e3, flop_fwd / mf / 1e9,
              3.5 * flop_fwd / mb / 1e9, double(peak) / (1 << 20));
  return 0;
}
