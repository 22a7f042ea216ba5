// bench/bench_hamu_update.cpp: the fused HAMU update on the GPU (stats + coefficients + apply, no host
// synchronisation) against a device-to-device copy of the same bytes and against the per-tensor,
// host-synchronising way of the published PyTorch implementation.
//
// Usage: bench_hamu_update [--quick] [--reps N]
// Bytes counted per parameter: 24 (stats reads r and f: 8; apply reads theta, r, f and writes theta: 16).
// The copy moves the same 24 bytes per parameter (12 read + 12 written). Times are medians over the
// repetitions, from CUDA events on the engine's stream. "as a graph": the three calls captured once as a CUDA
// graph and replayed (one launch; how the step runs under --cuda-graph). "single launch": the whole step as one
// cooperative kernel (kernels::hamu_fused_step, what FusedUpdate runs up to HAMU_FUSED_SINGLE_LAUNCH_MAX
// parameters; timed at every size here so the threshold can be set by measurement), with a check that its
// statistics, coefficients and report equal the three launches' to the bit. Prints "skipped: no GPU" and
// exits 0 without one.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/perf.h"

#ifdef HAMU_CUDA
#include <cuda_runtime.h>
#endif

namespace kn = hamu::kernels;

#ifdef HAMU_CUDA
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "bench_hamu_update: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// ResNet-20's 65 tensors (3x3 stem, widths 16/32/64, 1x1 projection shortcuts, BN gamma/beta, fc), with
// the weight tensors scaled so that the total is `total`; the small BN/bias tensors keep their sizes.
std::vector<int64_t> resnet_like(int64_t total) {
  std::vector<int64_t> w, small;
  std::vector<bool> is_w;
  auto conv = [&](int64_t k, int64_t c, int64_t r) { w.push_back(k * c * r * r); is_w.push_back(true); };
  auto bn = [&](int64_t c) {
    w.push_back(c); is_w.push_back(false);
    w.push_back(c); is_w.push_back(false);
  };
  conv(16, 3, 3);
  bn(16);
  int64_t in = 16;
  for (int64_t width : {16, 32, 64})
    for (int blk = 0; blk < 3; ++blk) {
      conv(width, in, 3);
      bn(width);
      conv(width, width, 3);
      bn(width);
      if (in != width) {
        conv(width, in, 1);
        bn(width);
      }
      in = width;
    }
  w.push_back(640); is_w.push_back(true);   // fc weight
  w.push_back(10); is_w.push_back(false);   // fc bias
  int64_t fixed = 0, weights = 0;
  for (size_t i = 0; i < w.size(); ++i) (is_w[i] ? weights : fixed) += w[i];
  const double scale = double(total - fixed) / double(weights);
  int64_t sum = 0;
  size_t largest = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (is_w[i]) w[i] = std::max<int64_t>(16, int64_t(std::llround(double(w[i]) * scale)));
    sum += w[i];
    if (w[i] > w[largest]) largest = i;
  }
  w[largest] += total - sum;  // exact total
  return w;
}

// LoRA (r = 8) on the 7 attention/MLP projections of 32 Llama-2-7B layers: 448 A/B tensors (~20M at
// r = 8), scaled to `total`.
std::vector<int64_t> lora_like(int64_t total) {
  const int64_t d = 4096, ff = 11008, r = 8;
  std::vector<int64_t> w;
  for (int layer = 0; layer < 32; ++layer) {
    for (int p = 0; p < 4; ++p) {  // q, k, v, o
      w.push_back(r * d);
      w.push_back(d * r);
    }
    w.push_back(r * d);   // gate A
    w.push_back(ff * r);  // gate B
    w.push_back(r * d);   // up A
    w.push_back(ff * r);  // up B
    w.push_back(r * ff);  // down A
    w.push_back(d * r);   // down B
  }
  int64_t base = 0;
  for (int64_t x : w) base += x;
  const double scale = double(total) / double(base);
  int64_t sum = 0;
  for (auto& x : w) {
    x = std::max<int64_t>(16, int64_t(std::llround(double(x) * scale)));
    sum += x;
  }
  w.back() += total - sum;
  return w;
}

struct Row {
  int64_t params = 0;
  int blocks = 0;
  double fused_ms = 0, stats_ms = 0, coef_ms = 0, apply_ms = 0, copy_ms = 0, naive_ms = 0;
  double graph_ms = 0;  // the three calls replayed as one CUDA graph (0: the capture failed, graph_why says why)
  std::string graph_why;
  double single_ms = 0;  // the single cooperative launch (0: unavailable on this device)
  int single_same = -1;  // its stats, coefficients and report equal the three launches' bytes (1), or not (0)
  int applied = 0;
};

// Element offsets of each tensor inside one flat buffer, each start 128-element (512-byte) aligned as the
// engine's allocator gives them.
std::vector<int64_t> offsets(const std::vector<int64_t>& sizes, int64_t* total) {
  std::vector<int64_t> off;
  int64_t at = 0;
  for (int64_t n : sizes) {
    off.push_back(at);
    at += (n + 127) / 128 * 128;
  }
  *total = at;
  return off;
}

Row run_case(const std::vector<int64_t>& sizes, int reps) {
  kn::CudaCtx& ctx = kn::cuda_context(0);
  cudaStream_t st = static_cast<cudaStream_t>(ctx.stream);
  const int count = int(sizes.size());
  int64_t params = 0;
  for (int64_t n : sizes) params += n;
  int64_t span = 0;
  const std::vector<int64_t> off = offsets(sizes, &span);

  float* theta = static_cast<float*>(kn::cuda_malloc(0, size_t(span) * 4));
  float* r = static_cast<float*>(kn::cuda_malloc(0, size_t(span) * 4));
  float* f = static_cast<float*>(kn::cuda_malloc(0, size_t(span) * 4));
  // Random-ish contents without a host round trip: affine maps of a fill would give colinear r and f,
  // so draw on the host once per buffer (in slices, to bound host memory).
  {
    std::vector<float> h(size_t(std::min<int64_t>(span, int64_t(1) << 22)));
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (float* buf : {theta, r, f}) {
      for (int64_t at = 0; at < span; at += int64_t(h.size())) {
        const int64_t n = std::min<int64_t>(int64_t(h.size()), span - at);
        for (int64_t i = 0; i < n; ++i) {
          state = state * 6364136223846793005ull + 1442695040888963407ull;
          h[size_t(i)] = (float(state >> 40) / 16777216.0f - 0.5f) * (buf == theta ? 2.f : 0.02f);
        }
        kn::cuda_memcpy_h2d(ctx, buf + at, h.data(), size_t(n) * 4);
      }
    }
  }
  std::vector<const float*> hr, hf;
  std::vector<float*> ht;
  for (int i = 0; i < count; ++i) {
    hr.push_back(r + off[size_t(i)]);
    hf.push_back(f + off[size_t(i)]);
    ht.push_back(theta + off[size_t(i)]);
  }
  auto upload = [&](const void* src, size_t bytes) {
    void* p = kn::cuda_malloc(0, bytes);
    kn::cuda_memcpy_h2d(ctx, p, src, bytes);
    return p;
  };
  const float* const* tr = static_cast<const float* const*>(upload(hr.data(), hr.size() * sizeof(void*)));
  const float* const* tf = static_cast<const float* const*>(upload(hf.data(), hf.size() * sizeof(void*)));
  float* const* tt = static_cast<float* const*>(upload(ht.data(), ht.size() * sizeof(void*)));
  const int64_t* tsz = static_cast<const int64_t*>(upload(sizes.data(), sizes.size() * sizeof(int64_t)));
  double* stats = static_cast<double*>(kn::cuda_malloc(0, size_t(3 * count) * sizeof(double)));
  double* coef = static_cast<double*>(kn::cuda_malloc(0, size_t(2 * count) * sizeof(double)));
  float* naive_stats = static_cast<float*>(kn::cuda_malloc(0, size_t(3 * count) * sizeof(float)));
  kn::HamuReport* rep = static_cast<kn::HamuReport*>(kn::cuda_malloc(0, sizeof(kn::HamuReport)));
  const size_t copy_bytes = size_t(params) * 12;  // 12 read + 12 written = 24 bytes per parameter
  void* csrc = kn::cuda_malloc(0, copy_bytes);
  void* cdst = kn::cuda_malloc(0, copy_bytes);
  check(cudaMemsetAsync(csrc, 1, copy_bytes, st), "memset");

  kn::HamuConfig cfg;  // B = 0: every block steps (direct or rectified), so apply touches every tensor
  cfg.lr = 1e-4;
  cfg.constraint = 0.0;

  cudaEvent_t ev[4];
  for (auto& e : ev) check(cudaEventCreate(&e), "cudaEventCreate");
  auto elapsed = [&](int a, int b) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, ev[a], ev[b]), "cudaEventElapsedTime");
    return double(ms);
  };

  Row row;
  row.params = params;
  row.blocks = count;
  // Fused step.
  std::vector<double> t_all, t_stats, t_coef, t_apply;
  for (int it = 0; it < reps + 3; ++it) {
    check(cudaEventRecord(ev[0], st), "record");
    kn::hamu_block_stats(ctx, count, tr, tf, tsz, stats);
    check(cudaEventRecord(ev[1], st), "record");
    kn::hamu_coefficients(ctx, cfg, count, stats, coef, rep);
    check(cudaEventRecord(ev[2], st), "record");
    kn::hamu_apply(ctx, count, tt, tr, tf, tsz, coef);
    check(cudaEventRecord(ev[3], st), "record");
    check(cudaEventSynchronize(ev[3]), "sync");
    if (it < 3) continue;  // warm-up
    t_all.push_back(elapsed(0, 3));
    t_stats.push_back(elapsed(0, 1));
    t_coef.push_back(elapsed(1, 2));
    t_apply.push_back(elapsed(2, 3));
  }
  row.fused_ms = median(t_all);
  row.stats_ms = median(t_stats);
  row.coef_ms = median(t_coef);
  row.apply_ms = median(t_apply);
  kn::HamuReport hrep;
  kn::cuda_memcpy_d2h(ctx, &hrep, rep, sizeof hrep);
  row.applied = hrep.applied;

  // The single cooperative launch: first its outputs against the three launches' on the same r and f (theta
  // moves every step, but stats, coefficients and report depend on r and f only), then its time.
  {
    std::vector<double> s3(size_t(3 * count)), c3(size_t(2 * count)), s1(s3.size()), c1(c3.size());
    kn::HamuReport r3, r1;
    kn::cuda_memcpy_d2h(ctx, s3.data(), stats, s3.size() * 8);
    kn::cuda_memcpy_d2h(ctx, c3.data(), coef, c3.size() * 8);
    kn::cuda_memcpy_d2h(ctx, &r3, rep, sizeof r3);
    if (kn::hamu_fused_step(ctx, cfg, count, tt, tr, tf, tsz, params, stats, coef, rep)) {
      kn::cuda_memcpy_d2h(ctx, s1.data(), stats, s1.size() * 8);
      kn::cuda_memcpy_d2h(ctx, c1.data(), coef, c1.size() * 8);
      kn::cuda_memcpy_d2h(ctx, &r1, rep, sizeof r1);
      row.single_same = s1 == s3 && std::memcmp(c1.data(), c3.data(), c3.size() * 8) == 0 &&
                        std::memcmp(&r1, &r3, sizeof r1) == 0;
      std::vector<double> t_single;
      for (int it = 0; it < reps + 3; ++it) {
        check(cudaEventRecord(ev[0], st), "record");
        kn::hamu_fused_step(ctx, cfg, count, tt, tr, tf, tsz, params, stats, coef, rep);
        check(cudaEventRecord(ev[1], st), "record");
        check(cudaEventSynchronize(ev[1]), "sync");
        if (it >= 3) t_single.push_back(elapsed(0, 1));
      }
      row.single_ms = median(t_single);
    }
  }

  // The same three calls captured once as a CUDA graph and replayed, as `--cuda-graph` runs them inside the
  // whole step: one launch for the stats, coefficient and apply kernels (and the multi-tensor plans), which is
  // what the launch-bound small sizes need. Timed like the copy below: one replay between two events.
  kn::cuda_graph_begin(0);
  kn::hamu_block_stats(ctx, count, tr, tf, tsz, stats);
  kn::hamu_coefficients(ctx, cfg, count, stats, coef, rep);
  kn::hamu_apply(ctx, count, tt, tr, tf, tsz, coef);
  if (void* graph = kn::cuda_graph_end(0, &row.graph_why)) {
    std::vector<double> t_graph;
    for (int it = 0; it < reps + 3; ++it) {
      check(cudaEventRecord(ev[0], st), "record");
      kn::cuda_graph_launch(0, graph);
      check(cudaEventRecord(ev[1], st), "record");
      check(cudaEventSynchronize(ev[1]), "sync");
      if (it >= 3) t_graph.push_back(elapsed(0, 1));
    }
    row.graph_ms = median(t_graph);
    kn::cuda_graph_destroy(graph);
  }

  // Device-to-device copy of the same bytes.
  std::vector<double> t_copy;
  for (int it = 0; it < reps + 3; ++it) {
    check(cudaEventRecord(ev[0], st), "record");
    kn::cuda_memcpy_d2d(ctx, cdst, csrc, copy_bytes);
    check(cudaEventRecord(ev[1], st), "record");
    check(cudaEventSynchronize(ev[1]), "sync");
    if (it >= 3) t_copy.push_back(elapsed(0, 1));
  }
  row.copy_ms = median(t_copy);

  // The published implementation's way: per tensor three reductions and a synchronising copy of the
  // results to the host; coefficients on the host; a per-tensor update (two axpby launches).
  std::vector<double> t_naive;
  const int naive_reps = std::max(3, reps / 2);
  std::vector<float> hstats(size_t(3 * count));
  std::vector<double> hstats_d(size_t(3 * count)), hcoef(size_t(2 * count));
  for (int it = 0; it < naive_reps + 1; ++it) {
    check(cudaEventRecord(ev[0], st), "record");
    for (int i = 0; i < count; ++i) {
      kn::sum_squares(ctx, sizes[size_t(i)], hr[size_t(i)], naive_stats + 3 * i);
      kn::sum_squares(ctx, sizes[size_t(i)], hf[size_t(i)], naive_stats + 3 * i + 1);
      kn::dot(ctx, sizes[size_t(i)], hr[size_t(i)], hf[size_t(i)], naive_stats + 3 * i + 2);
      kn::cuda_memcpy_d2h(ctx, &hstats[size_t(3 * i)], naive_stats + 3 * i, 3 * sizeof(float));
    }
    hstats_d.assign(hstats.begin(), hstats.end());
    kn::HamuReport hr2;
    kn::hamu_coefficients(kn::CpuCtx{}, cfg, count, hstats_d.data(), hcoef.data(), &hr2);
    for (int i = 0; i < count; ++i) {
      kn::axpby(ctx, sizes[size_t(i)], float(hcoef[size_t(2 * i)]), hr[size_t(i)], 1.f, ht[size_t(i)]);
      kn::axpby(ctx, sizes[size_t(i)], float(hcoef[size_t(2 * i + 1)]), hf[size_t(i)], 1.f, ht[size_t(i)]);
    }
    check(cudaEventRecord(ev[1], st), "record");
    check(cudaEventSynchronize(ev[1]), "sync");
    if (it >= 1) t_naive.push_back(elapsed(0, 1));
  }
  row.naive_ms = median(t_naive);

  for (auto& e : ev) cudaEventDestroy(e);
  for (const void* p : {static_cast<const void*>(theta), static_cast<const void*>(r), static_cast<const void*>(f),
                        static_cast<const void*>(tr), static_cast<const void*>(tf), static_cast<const void*>(tt),
                        static_cast<const void*>(tsz), static_cast<const void*>(stats), static_cast<const void*>(coef),
                        static_cast<const void*>(naive_stats),
                        static_cast<const void*>(rep), static_cast<const void*>(csrc), static_cast<const void*>(cdst)})
    kn::cuda_free(0, const_cast<void*>(p));
  return row;
}

}  // namespace
#endif

int main(int argc, char** argv) {
  bool quick = false;
  int reps = 20;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: bench_hamu_update [--quick] [--reps N]\n");
      return 2;
    }
  }
#ifndef HAMU_CUDA
  (void)quick;
  (void)reps;
  std::printf("bench_hamu_update: skipped: no GPU (built without CUDA)\n");
  return 0;
#else
  if (kn::cuda_device_count() == 0) {
    std::printf("bench_hamu_update: skipped: no GPU\n");
    return 0;
  }
  if (quick) reps = std::min(reps, 5);
  std::printf("bench_hamu_update on %s (reps %d, median; 24 bytes/param counted; copy = d2d memcpy of the same bytes)\n",
              kn::cuda_device_name(0), reps);
  std::vector<int64_t> totals = {1000000, 20000000, 100000000};
  if (quick) totals = {1000000, 20000000};
  std::vector<Row> rows;
  for (int64_t total : totals)
    for (int layout = 0; layout < 2; ++layout) {
      const std::vector<int64_t> sizes = layout == 0 ? resnet_like(total) : lora_like(total);
      try {
        rows.push_back(run_case(sizes, reps));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_hamu_update: %lld params, %zu blocks: %s\n", (long long)total, sizes.size(),
                     e.what());
        return 1;
      }
      const Row& w = rows.back();
      std::printf("  %10lld params %4d blocks: fused %.4f ms (stats %.4f, coef %.4f, apply %.4f), as a graph %.4f ms, "
                  "single launch %.4f ms (bitwise equal to the three: %s), copy %.4f ms, per-tensor %.3f ms, "
                  "step applied %d\n",
                  (long long)w.params, w.blocks, w.fused_ms, w.stats_ms, w.coef_ms, w.apply_ms, w.graph_ms, w.single_ms,
                  w.single_same < 0 ? "n/a" : (w.single_same ? "yes" : "NO"), w.copy_ms, w.naive_ms, w.applied);
      if (!w.graph_why.empty()) std::printf("  graph not used: %s\n", w.graph_why.c_str());
      std::fflush(stdout);
    }
  std::printf("\n| params | blocks | fused ms | fused GB/s | copy GB/s | fused/copy | as a graph ms | graph/copy | "
              "single launch ms | single/copy | per-tensor ms | speedup |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& w : rows) {
    const double bytes = 24.0 * double(w.params);
    const double fused_bw = bytes / (w.fused_ms * 1e-3) / 1e9, copy_bw = bytes / (w.copy_ms * 1e-3) / 1e9;
    const std::string graph = w.graph_ms > 0 ? std::to_string(w.graph_ms).substr(0, 6) : "n/a";
    const std::string graph_pct = w.graph_ms > 0 ? std::to_string(100.0 * w.copy_ms / w.graph_ms).substr(0, 5) + "%" : "n/a";
    const std::string single = w.single_ms > 0 ? std::to_string(w.single_ms).substr(0, 6) : "n/a";
    const std::string single_pct =
        w.single_ms > 0 ? std::to_string(100.0 * w.copy_ms / w.single_ms).substr(0, 5) + "%" : "n/a";
    std::printf("| %lld | %d | %.4f | %.0f | %.0f | %.1f%% | %s | %s | %s | %s | %.3f | %.1fx |\n", (long long)w.params,
                w.blocks, w.fused_ms, fused_bw, copy_bw, 100.0 * fused_bw / copy_bw, graph.c_str(), graph_pct.c_str(),
                single.c_str(), single_pct.c_str(), w.naive_ms, w.naive_ms / w.fused_ms);
  }
  for (const Row& w : rows)
    if (w.single_same == 0) {
      std::fprintf(stderr, "bench_hamu_update: the single launch differs from the three launches at %lld params, "
                   "%d blocks\n", (long long)w.params, w.blocks);
      return 1;
    }
  return 0;
#endif
}
