// bench/bench_gemm.cpp: GFLOP/s of the CPU GEMM beside OpenBLAS on the same threads, and CPU conv timings.
//
// Usage: bench_gemm [--quick] [--conv] [--shape TEXT] [--reps N] [--batch N] [--cpu-time]
//   --quick: fewer sizes and repetitions, for a smoke run; --conv: the convolution table only;
//   --shape TEXT: only the convolution rows whose name contains TEXT; --reps N: repetitions per pass;
//   --batch N: images per convolution call (default 128; the resnet20 unlearning step runs 32);
//   --cpu-time: time the convolutions by the process's CPU time instead of the wall clock: with one
//   thread on cores that other work shares, it leaves out the time slices the neighbours take.
// OpenBLAS is linked into this binary only; the engine never uses it. Headline numbers are medians;
// the best run is printed beside them because on shared cores a median can be a neighbour's.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "engine/progress.h"
#include "kernels/kernels.h"

// Declared here rather than through <cblas.h>, which differs between BLAS providers; the enum values
// are the CBLAS standard's.
extern "C" {
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);
void openblas_set_num_threads(int threads);
}

namespace {

namespace kn = hamu::kernels;
constexpr int kCblasRowMajor = 101, kCblasNoTrans = 111, kCblasTrans = 112;

struct Timing {
  double median = 0, best = 0;  // seconds per call
};

// Times each function: warm-up, then repetitions back to back, after a pause. The pause matters:
// OpenMP's and OpenBLAS's idle threads spin for a while after a call (OpenBLAS for about 0.1 s), and on
// a few cores a contender that starts while the other's threads still spin loses half its machine.
double process_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

std::vector<Timing> time_each(const std::vector<std::function<void()>>& fns, int warmup, int reps,
                              bool cpu_time = false) {
  const auto clock = cpu_time ? process_cpu_s : hamu::now_s;
  std::vector<Timing> out;
  for (const auto& f : fns) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (int w = 0; w < warmup; ++w) f();
    std::vector<double> times;
    for (int r = 0; r < reps; ++r) {
      const double t0 = clock();
      f();
      times.push_back(clock() - t0);
    }
    std::sort(times.begin(), times.end());
    const size_t h = times.size() / 2;
    out.push_back({times.size() % 2 ? times[h] : 0.5 * (times[h - 1] + times[h]), times.front()});
  }
  return out;
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

void gemm_table(bool quick) {
  const std::vector<int> sizes = quick ? std::vector<int>{256, 1024} : std::vector<int>{256, 512, 1024, 2048};
  struct Variant {
    const char* name;
    bool ta, tb;
  };
  const Variant variants[] = {{"NN", false, false}, {"NT", false, true}, {"TN", true, false}};
  std::printf("f32 GEMM C = op(A) op(B), m = n = k, %d threads, GFLOP/s (median of the runs | best run)\n",
              omp_get_max_threads());
  std::printf("%-4s %6s %10s %10s %7s | %10s %10s %7s\n", "op", "size", "ours", "openblas", "ratio", "ours",
              "openblas", "ratio");
  for (const Variant& var : variants) {
    for (int s : sizes) {
      const std::vector<float> a = random_vector(size_t(s) * s, 1), b = random_vector(size_t(s) * s, 2);
      std::vector<float> c1(size_t(s) * s), c2(size_t(s) * s);
      const int reps = quick ? 5 : (s <= 512 ? 31 : s <= 1024 ? 15 : 7);
      const auto t = time_each(
          {[&] {
             kn::gemm(kn::CpuCtx{}, var.ta, var.tb, s, s, s, 1.0f, a.data(), s, b.data(), s, 0.0f, c1.data(), s);
           },
           [&] {
             cblas_sgemm(kCblasRowMajor, var.ta ? kCblasTrans : kCblasNoTrans, var.tb ? kCblasTrans : kCblasNoTrans,
                         s, s, s, 1.0f, a.data(), s, b.data(), s, 0.0f, c2.data(), s);
           }},
          2, reps);
      double diff = 0, ref = 0;
      for (size_t i = 0; i < c1.size(); ++i) {
        diff += double(c1[i] - c2[i]) * (c1[i] - c2[i]);
        ref += double(c2[i]) * c2[i];
      }
      const double gflop = 2.0 * s * s * s * 1e-9;
      std::printf("%-4s %6d %10.1f %10.1f %7.2f | %10.1f %10.1f %7.2f%s\n", var.name, s, gflop / t[0].median,
                  gflop / t[1].median, t[1].median / t[0].median, gflop / t[0].best, gflop / t[1].best,
                  t[1].best / t[0].best, std::sqrt(diff / ref) > 1e-5 ? "  RESULTS DIFFER" : "");
    }
  }
  std::printf("\n");
}

kn::ConvShape conv_shape(int64_t n, int64_t c, int64_t hw, int64_t k, int64_t rs, int64_t stride, int64_t pad) {
  kn::ConvShape s;
  s.n = n, s.c = c, s.h = s.w = hw, s.k = k, s.r = s.s = rs;
  s.stride_h = s.stride_w = stride, s.pad_h = s.pad_w = pad;
  return s;
}

struct ConvOptions {
  bool quick = false;
  const char* shape = nullptr;  // substring filter on the row names
  int reps = 0;                 // 0: the default for quick / full runs
  int64_t batch = 128;
  bool cpu_time = false;
};

void conv_table(const ConvOptions& opt) {
  const int64_t batch = opt.batch;
  struct ConvCase {
    const char* name;
    kn::ConvShape shape;
  };
  const ConvCase cases[] = {
      {"cnn  1->32 3x3 p1 28x28", conv_shape(batch, 1, 28, 32, 3, 1, 1)},
      {"cnn 32->64 3x3 p1 14x14", conv_shape(batch, 32, 14, 64, 3, 1, 1)},
      {"res 16->16 3x3 p1 32x32", conv_shape(batch, 16, 32, 16, 3, 1, 1)},
      {"res 16->32 3x3 s2 p1 32x32", conv_shape(batch, 16, 32, 32, 3, 2, 1)},
      {"res 32->32 3x3 p1 16x16", conv_shape(batch, 32, 16, 32, 3, 1, 1)},
      {"res 64->64 3x3 p1 8x8", conv_shape(batch, 64, 8, 64, 3, 1, 1)},
      {"res 16->32 1x1 s2 32x32", conv_shape(batch, 16, 32, 32, 1, 2, 0)},
      {"res 32->64 1x1 s1 16x16", conv_shape(batch, 32, 16, 64, 1, 1, 0)},
  };
  std::printf("f32 conv2d, batch %lld, %d threads, images/s (median, %s): forward, backward data, backward filter,\n"
              "all three; GFLOP/s of all three (median | best); workspace\n",
              (long long)batch, omp_get_max_threads(), opt.cpu_time ? "process CPU time" : "wall clock");
  std::printf("%-28s %9s %9s %9s %9s %8s %8s %7s\n", "shape", "fwd", "bwd_data", "bwd_filt", "fwd+bwd", "GFLOP/s",
              "best", "ws MB");
  for (const ConvCase& cc : cases) {
    if (opt.shape && !std::strstr(cc.name, opt.shape)) continue;
    const kn::ConvShape& s = cc.shape;
    const int64_t oh = s.oh(), ow = s.ow();
    const std::vector<float> x = random_vector(size_t(s.n * s.c * s.h * s.w), 3);
    const std::vector<float> w = random_vector(size_t(s.k * s.c * s.r * s.s), 4);
    const std::vector<float> bias = random_vector(size_t(s.k), 5);
    const std::vector<float> gy = random_vector(size_t(s.n * s.k * oh * ow), 6);
    std::vector<float> y(gy.size()), gx(x.size()), gw(w.size(), 0.0f), gb(size_t(s.k), 0.0f);
    const int64_t ws_elems = kn::conv2d_workspace_elems(kn::CpuCtx{}, s);
    std::vector<float> ws(size_t(std::max<int64_t>(ws_elems, 1)));
    const int reps = opt.reps > 0 ? opt.reps : opt.quick ? 3 : 11;
    const auto t = time_each(
        {[&] { kn::conv2d_forward(kn::CpuCtx{}, s, x.data(), w.data(), bias.data(), y.data(), ws.data()); },
         [&] { kn::conv2d_backward_data(kn::CpuCtx{}, s, gy.data(), w.data(), gx.data(), ws.data()); },
         [&] { kn::conv2d_backward_filter(kn::CpuCtx{}, s, x.data(), gy.data(), gw.data(), gb.data(), ws.data()); }},
        1, reps, opt.cpu_time);
    const double total = t[0].median + t[1].median + t[2].median, best = t[0].best + t[1].best + t[2].best;
    const double gflop = 3 * 2.0 * double(s.n) * s.k * oh * ow * s.c * s.r * s.s * 1e-9;
    std::printf("%-28s %9.0f %9.0f %9.0f %9.0f %8.1f %8.1f %7.2f\n", cc.name, s.n / t[0].median, s.n / t[1].median,
                s.n / t[2].median, s.n / total, gflop / total, gflop / best, double(ws_elems) * sizeof(float) / 1e6);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, conv_only = false;
  ConvOptions conv;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = conv.quick = true;
    } else if (std::strcmp(argv[i], "--conv") == 0) {
      conv_only = true;
    } else if (std::strcmp(argv[i], "--shape") == 0 && i + 1 < argc) {
      conv.shape = argv[++i];
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      conv.reps = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--cpu-time") == 0) {
      conv.cpu_time = true;
    } else if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      conv.batch = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_gemm [--quick] [--conv] [--shape TEXT] [--reps N] [--batch N] [--cpu-time]\n");
      return 2;
    }
  }
  openblas_set_num_threads(omp_get_max_threads());
  std::printf("== bench_gemm: CPU GEMM vs OpenBLAS, CPU conv2d ==\n");
  double load[1] = {0};
  if (getloadavg(load, 1) == 1 && load[0] > 0.5)
    std::printf("note: load average %.1f on %d processors before starting; other work shares the cores, so\n"
                "      medians are noisy (compare the best-run columns, or rerun when the machine is idle).\n"
                "      With the cores oversubscribed, spinning OpenMP threads can stall each call by a time\n"
                "      slice; OMP_WAIT_POLICY=passive avoids that at some cost on an idle machine.\n",
                load[0], omp_get_num_procs());
  if (!conv_only) gemm_table(quick);
  conv_table(conv);
  return 0;
}
