// tests/test_cuda_streams.cpp: the CUDA reductions' scratch is per (device, stream): "last CTA" passes (sum_all,
// dot, the multi-tensor statistics, the fused HAMU step) queued on several streams of one device at once, from
// one thread or from several, give each stream exactly (to the bit) what the same work gives run alone; a first
// use of a stream inside a CUDA-graph capture is refused with a clear error. Compiled only with CUDA=1; passes
// with a notice without a GPU.
#ifdef HAMU_CUDA
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/kernels.h"
#include "tests/gpu_skip.h"

namespace K = hamu::kernels;

namespace {

bool have_gpu() {
  static const bool g = hamu::testing::gpu_or_say("cuda stream scratch tests");
  return g;
}

void check_rt(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// A stream of our own, destroyed at the end of the test (after a synchronisation: no work left on it).
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { check_rt(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
  ~Stream() {
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

K::CudaCtx on_stream(cudaStream_t s) {
  K::CudaCtx c = K::cuda_context(0);
  c.stream = s;
  return c;
}

// Device memory freed with the test.
struct Dev {
  std::vector<void*> owned;
  ~Dev() {
    for (void* p : owned) K::cuda_free(0, p);
  }
  template <class T> T* alloc(size_t n) {
    owned.push_back(K::cuda_malloc(0, n * sizeof(T) + 16));
    return static_cast<T*>(owned.back());
  }
  template <class T> T* upload(const std::vector<T>& h) {
    T* p = alloc<T>(h.size());
    K::cuda_memcpy_h2d(K::cuda_context(0), p, h.data(), h.size() * sizeof(T));
    return p;
  }
};

template <class T> std::vector<T> download(const T* p, size_t n) {
  std::vector<T> h(n);
  K::cuda_memcpy_d2h(K::cuda_context(0), h.data(), p, n * sizeof(T));
  return h;
}

bool same_bytes(const void* a, const void* b, size_t n) { return std::memcmp(a, b, n) == 0; }

// One stream's work: `reps` passes of each reduction on its own data (sizes differ between workloads, so
// their grids and chunk plans differ), every pass writing its own output slot; the HAMU steps update theta
// in place, so the later steps also depend on the earlier ones being right.
struct Work {
  int count = 0;
  int64_t n = 0;  // elements of the single-pass reductions
  int reps = 0;
  std::vector<float> theta0;
  float* theta = nullptr;
  float* x = nullptr;
  float* y = nullptr;
  float* const* t_theta = nullptr;
  const float* const* t_r = nullptr;
  const float* const* t_f = nullptr;
  const int64_t* sizes = nullptr;
  int64_t total = 0;
  float* sums = nullptr;      // [reps] sum_all, [reps] dot
  float* sq = nullptr;        // [reps][count] multi_sum_squares
  double* stats = nullptr;    // [reps][3 count] hamu_block_stats
  double* fstats = nullptr;   // [reps][3 count] the steps' statistics
  double* coef = nullptr;     // [reps][2 count]
  K::HamuReport* report = nullptr;  // [reps]

  Work(Dev& d, int count_, int64_t block, int64_t n_, int reps_, uint32_t seed) : count(count_), n(n_), reps(reps_) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<int64_t> sz;
    for (int i = 0; i < count; ++i) sz.push_back(i % 7 == 3 ? 1 : block + (i * 37) % 101);
    for (int64_t s : sz) total += s;
    theta0.resize(size_t(total));
    std::vector<float> r(static_cast<size_t>(total)), f(static_cast<size_t>(total)), xs(static_cast<size_t>(n)),
        ys(static_cast<size_t>(n));
    for (auto& v : theta0) v = u(gen);
    for (size_t i = 0; i < r.size(); ++i) {
      r[i] = 0.01f * u(gen);
      f[i] = (i % 3 == 0 ? -r[i] : 0.f) + 0.01f * u(gen);
    }
    for (auto& v : xs) v = u(gen);
    for (auto& v : ys) v = u(gen);
    theta = d.upload(theta0);
    float* dr = d.upload(r);
    float* df = d.upload(f);
    x = d.upload(xs);
    y = d.upload(ys);
    std::vector<float*> pt, pr, pf;
    int64_t off = 0;
    for (int64_t s : sz) {
      pt.push_back(theta + off);
      pr.push_back(dr + off);
      pf.push_back(df + off);
      off += s;
    }
    t_theta = d.upload(pt);
    t_r = d.upload(pr);
    t_f = d.upload(pf);
    sizes = d.upload(sz);
    sums = d.alloc<float>(2 * size_t(reps));
    sq = d.alloc<float>(size_t(reps) * size_t(count));
    stats = d.alloc<double>(size_t(reps) * 3 * size_t(count));
    fstats = d.alloc<double>(size_t(reps) * 3 * size_t(count));
    coef = d.alloc<double>(size_t(reps) * 2 * size_t(count));
    report = d.alloc<K::HamuReport>(size_t(reps));
  }

  // Pass `i` of every reduction, queued on ctx.
  void queue(const K::CudaCtx& ctx, int i) const {
    K::sum_all(ctx, n, x, sums + i);
    K::dot(ctx, n, x, y, sums + reps + i);
    K::multi_sum_squares(ctx, count, t_r, sizes, sq + size_t(i) * count);
    K::hamu_block_stats(ctx, count, t_r, t_f, sizes, stats + size_t(i) * 3 * count);
    K::HamuConfig cfg;
    cfg.lr = 0.05;
    double* st = fstats + size_t(i) * 3 * count;
    double* cf = coef + size_t(i) * 2 * count;
    if (!K::hamu_fused_step(ctx, cfg, count, t_theta, t_r, t_f, sizes, total, st, cf, report + i)) {
      K::hamu_block_stats(ctx, count, t_r, t_f, sizes, st);
      K::hamu_coefficients(ctx, cfg, count, st, cf, report + i);
      K::hamu_apply(ctx, count, t_theta, t_r, t_f, sizes, cf);
    }
  }

  // Everything the passes wrote, as bytes.
  std::vector<unsigned char> result() const {
    std::vector<unsigned char> out;
    auto add = [&](const void* p, size_t bytes) {
      std::vector<unsigned char> h(bytes);
      K::cuda_memcpy_d2h(K::cuda_context(0), h.data(), p, bytes);
      out.insert(out.end(), h.begin(), h.end());
    };
    add(theta, size_t(total) * sizeof(float));
    add(sums, 2 * size_t(reps) * sizeof(float));
    add(sq, size_t(reps) * count * sizeof(float));
    add(stats, size_t(reps) * 3 * count * sizeof(double));
    add(fstats, size_t(reps) * 3 * count * sizeof(double));
    add(coef, size_t(reps) * 2 * count * sizeof(double));
    add(report, size_t(reps) * sizeof(K::HamuReport));
    return out;
  }

  void reset() const {
    K::cuda_memcpy_h2d(K::cuda_context(0), theta, theta0.data(), theta0.size() * sizeof(float));
  }
};

// The workloads: different block counts (one above kMtSmemTensors = 4096: the chunk plan in global scratch),
// block sizes and single-pass lengths (grids of ~100 to ~600 CTAs: several fit on the device at once).
std::vector<std::unique_ptr<Work>> workloads(Dev& d, int streams, int reps) {
  std::vector<std::unique_ptr<Work>> w;
  for (int k = 0; k < streams; ++k) {
    const int count = k % 3 == 2 ? 4200 : 40 + 97 * k;
    const int64_t block = k % 3 == 2 ? 30 : 3000 + 1500 * k;
    w.push_back(std::make_unique<Work>(d, count, block, 25000 + 37000 * int64_t(k), reps, 1000u + unsigned(k)));
  }
  return w;
}

}  // namespace

TEST_CASE("cuda: reductions queued on several streams at once give each stream what it gets alone") {
  if (!have_gpu()) return;
  constexpr int kStreams = 3, kReps = 8;
  Dev d;
  std::vector<std::unique_ptr<Work>> w = workloads(d, kStreams, kReps);
  // Stream 0 is the context's own; streams 1 and 2 are the caller's (as the C API and FusedUpdate use them).
  Stream s1, s2;
  const std::vector<K::CudaCtx> ctx = {K::cuda_context(0), on_stream(s1.s), on_stream(s2.s)};

  // Alone: each stream's passes with nothing else on the device.
  std::vector<std::vector<unsigned char>> alone;
  for (int k = 0; k < kStreams; ++k) {
    for (int i = 0; i < kReps; ++i) w[size_t(k)]->queue(ctx[size_t(k)], i);
    K::cuda_synchronize(ctx[size_t(k)]);
    alone.push_back(w[size_t(k)]->result());
    w[size_t(k)]->reset();
  }
  // Sanity: the passes wrote something (a reduction that silently did nothing would compare equal).
  {
    const std::vector<float> s = download(w[0]->sums, 2);
    CHECK(s[0] != 0.f);
    CHECK(s[1] != 0.f);
  }

  SUBCASE("one thread, passes interleaved across the streams, no synchronisation between them") {
    for (int i = 0; i < kReps; ++i)
      for (int k = 0; k < kStreams; ++k) w[size_t(k)]->queue(ctx[size_t(k)], i);
    for (const K::CudaCtx& c : ctx) K::cuda_synchronize(c);
    for (int k = 0; k < kStreams; ++k) {
      CAPTURE(k);
      const std::vector<unsigned char> got = w[size_t(k)]->result();
      REQUIRE(got.size() == alone[size_t(k)].size());
      CHECK(same_bytes(got.data(), alone[size_t(k)].data(), got.size()));
    }
  }

  SUBCASE("one thread per stream, the streams' first reductions racing for their scratch") {
    // Fresh streams, so their scratch is made while the other threads make theirs and run.
    Stream f1, f2, f3;
    const std::vector<K::CudaCtx> fresh = {on_stream(f1.s), on_stream(f2.s), on_stream(f3.s)};
    std::vector<std::string> errors(kStreams);
    std::vector<std::thread> threads;
    for (int k = 0; k < kStreams; ++k)
      threads.emplace_back([&, k] {
        try {
          for (int i = 0; i < kReps; ++i) w[size_t(k)]->queue(fresh[size_t(k)], i);
          K::cuda_synchronize(fresh[size_t(k)]);
        } catch (const std::exception& e) {
          errors[size_t(k)] = e.what();
        }
      });
    for (std::thread& t : threads) t.join();
    for (int k = 0; k < kStreams; ++k) {
      CAPTURE(k);
      CHECK(errors[size_t(k)] == "");
      const std::vector<unsigned char> got = w[size_t(k)]->result();
      REQUIRE(got.size() == alone[size_t(k)].size());
      CHECK(same_bytes(got.data(), alone[size_t(k)].data(), got.size()));
    }
  }
}

TEST_CASE("cuda: a first reduction on a stream inside a CUDA-graph capture is refused and names the stream") {
  if (!have_gpu()) return;
  Dev d;
  const int64_t n = 100003;
  std::vector<float> h(static_cast<size_t>(n));
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : h) v = u(gen);
  const float* x = d.upload(h);
  float* out = d.alloc<float>(2);
  K::sum_all(K::cuda_context(0), n, x, out);  // the own stream's value

  Stream s;
  const K::CudaCtx c = on_stream(s.s);
  check_rt(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
  std::string msg;
  try {
    K::sum_all(c, n, x, out + 1);
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  cudaGraph_t g = nullptr;
  const cudaError_t end = cudaStreamEndCapture(s.s, &g);
  if (g) cudaGraphDestroy(g);
  CHECK(end == cudaSuccess);  // the refusal queued nothing and left the capture valid
  CAPTURE(msg);
  CHECK(msg.find("CUDA-graph capture") != std::string::npos);
  char name[64];
  std::snprintf(name, sizeof name, "%p", static_cast<void*>(s.s));
  CHECK(msg.find(name) != std::string::npos);

  // Outside the capture the same call makes the stream's scratch and gives the own stream's bits.
  K::sum_all(c, n, x, out + 1);
  K::cuda_synchronize(c);
  const std::vector<float> got = download(out, 2);
  CHECK(same_bytes(&got[0], &got[1], sizeof(float)));
  // And now a capture on that stream may reduce (the scratch exists); the replay gives the same bits again.
  float* out2 = d.alloc<float>(1);
  check_rt(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
  K::sum_all(c, n, x, out2);
  g = nullptr;
  check_rt(cudaStreamEndCapture(s.s, &g), "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  check_rt(cudaGraphInstantiateWithFlags(&exec, g, 0), "cudaGraphInstantiate");
  cudaGraphDestroy(g);
  check_rt(cudaGraphLaunch(exec, s.s), "cudaGraphLaunch");
  K::cuda_synchronize(c);
  cudaGraphExecDestroy(exec);
  const std::vector<float> r = download(out2, 1);
  CHECK(same_bytes(&r[0], &got[0], sizeof(float)));
}
#endif
