// bench/bench_collectives.cpp: one data-parallel (or split-pairing) HAMU-Q unlearning step of resnet20
// on the ranks of mpirun, as `hamu unlearn` runs it: each rank's share of the global retain and forget
// batches, the gradients, the exchange (the all-reduce of r and f, overlapped with the backward in
// buckets as engine/overlap.h does, or packed after it with HAMU_OVERLAP=0; and that of the losses), the
// fused update. Prints (rank 0) the median step (slowest rank), its phases (gradients, including the
// buckets reduced while the backward ran; waiting for the slowest rank at a barrier; the exchange left
// after the backward), the time inside the collectives and the part of it the backward did not hide,
// and the time of a bare all-reduce of the 2 x 272,474 floats. Compare `mpirun -np 1` with OMP_NUM_THREADS=2 against
// `mpirun -np 2` with OMP_NUM_THREADS=1 (README "Many processes", bench/RESULTS.md).
//
// usage: [mpirun -np N] bench_collectives [--batch 128] [--steps 10] [--pairing data|split] [--no-paired]
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/collectives.h"
#include "engine/overlap.h"
#include "engine/progress.h"
#include "models/models.h"
#include "unlearn/parallel.h"
#include "unlearn/update.h"

using namespace hamu;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  int batch = 128, steps = 10;
  bool paired = true;
  std::string pairing = "data";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--pairing") && i + 1 < argc) pairing = argv[++i];
    else if (!std::strcmp(argv[i], "--no-paired")) paired = false;
    else {
      std::fprintf(stderr, "usage: bench_collectives [--batch N] [--steps N] [--pairing data|split] [--no-paired]\n");
      return 2;
    }
  }
  try {
    Collectives& w = world();
    const RankPlan plan = plan_ranks(parse_pairing(pairing), w.rank(), w.size(), batch, batch);
    Rng rng(3);
    auto model = models::build_model({"resnet20", 3, 32, 32, 10}, rng);
    models::set_batchnorm_frozen(*model, true);
    model->train(true);
    // The global batches (the same on every rank), then this rank's rows.
    auto make_batch = [&](int n) {
      Batch b;
      b.images = Tensor::empty({n, 3, 32, 32});
      rng.fill_normal(b.images, 0.0, 1.0);
      std::vector<int32_t> y(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) y[size_t(i)] = int32_t(rng.below(10));
      b.labels = Tensor::from_vector<int32_t>(y, {n});
      b.indices.resize(size_t(n));
      return b;
    };
    const Batch retain_all = make_batch(batch), forget_all = make_batch(batch);
    Batch retain = retain_all, forget = forget_all;
    take_shares(plan, retain, forget);
    UnlearnOptions opt;
    const ShareWeights shares = share_weights(plan, *opt.method, retain_all, forget_all, retain, forget);
    FusedUpdate update(model->parameters());
    opt.params.lr = 1e-4;  // the model barely moves, so every step costs the same
    opt.ratio = 0.5;
    const kernels::HamuConfig cfg = hamu_config(opt);
    const size_t bucket = overlap_bucket_bytes();
    GradientExchange exchange(w, update, plan, bucket);
    std::vector<double> t_step, t_grad, t_wait, t_comm, t_coll, t_exposed;
    std::string fallback;
    for (int s = 0; s < steps + 2; ++s) {
      w.barrier();
      const double t0 = now_s(), c_start = exchange.collective_seconds(), e_start = exchange.exposed_seconds();
      GradientObserver* ov = w.size() > 1 ? exchange.prepare(shares) : nullptr;
      GradientResult g =
          plan.retain && plan.forget
              ? compute_gradients(*model, nullptr, update, retain, forget, *opt.method, opt.params, paired, &fallback,
                                  nullptr, ov)
              : compute_side_gradient(*model, nullptr, update, plan.retain ? retain : forget, *opt.method, opt.params,
                                      plan.retain, nullptr, ov);
      if (!(plan.retain && plan.forget)) fallback = "one side per rank";
      // The barrier separates waiting for a slower rank (load imbalance, a busy core) from the exchange.
      const double t1 = now_s();
      w.barrier();
      const double t2 = now_s();
      exchange.reduce(g, shares);
      const double t3 = now_s();
      update.compute_stats();
      update.hamu_step(cfg);
      if (s >= 2) {
        t_step.push_back(now_s() - t0);
        t_grad.push_back(t1 - t0);
        t_wait.push_back(t2 - t1);
        t_comm.push_back(t3 - t2);
        t_coll.push_back(exchange.collective_seconds() - c_start);
        t_exposed.push_back(exchange.exposed_seconds() - e_start);
      }
    }
    // The bare collective on the step's buffer: 2 x the parameter count.
    int64_t n = 0;
    for (const Tensor& p : model->parameters()) n += p.numel();
    std::vector<float> buf(size_t(2 * n), 1.0f);
    std::vector<double> t_bare;
    for (int s = 0; s < 20; ++s) {
      w.barrier();
      const double t0 = now_s();
      w.all_reduce_sum(buf.data(), buf.size(), Device{});
      t_bare.push_back(now_s() - t0);
    }
    // Every rank's medians: the step is as slow as the slowest rank.
    constexpr int K = 6;
    std::vector<double> mine = {median(t_step), median(t_grad),  median(t_wait),
                                median(t_comm), median(t_coll), median(t_exposed)};
    const std::vector<uint8_t> all = w.all_gather(mine.data(), sizeof(double) * K);
    double worst[K] = {0, 0, 0, 0, 0, 0};
    for (int r = 0; r < w.size(); ++r) {
      double v[K];
      std::memcpy(v, all.data() + sizeof v * size_t(r), sizeof v);
      for (int k = 0; k < K; ++k) worst[k] = std::max(worst[k], v[k]);
    }
    if (w.rank() == 0) {
      std::printf("bench_collectives: resnet20 (%lld params), HAMU-Q, global batch %d retain + %d forget, %s pairing, "
                  "%d rank(s) x %d thread(s), %s, gradients: %s\n",
                  (long long)n, batch, batch, pairing.c_str(), w.size(), omp_get_max_threads(), w.backend().c_str(),
                  fallback.empty() ? "one paired pass" : fallback.c_str());
      char ov[64];
      if (bucket == 0 || w.size() == 1) std::snprintf(ov, sizeof ov, "off");
      else std::snprintf(ov, sizeof ov, "%zu KB buckets", bucket >> 10);
      std::printf("| ranks x threads | pairing | overlap | step ms | gradients ms | waiting ms | exchange after ms | "
                  "in collectives ms | not hidden ms | share of step | bare all-reduce of %.1f MB ms |\n"
                  "|---|---|---|---|---|---|---|---|---|---|---|\n",
                  double(buf.size()) * 4 / 1e6);
      std::printf("| %d x %d | %s | %s | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.1f%% | %.2f |\n", w.size(),
                  omp_get_max_threads(), pairing.c_str(), ov, 1e3 * worst[0], 1e3 * worst[1], 1e3 * worst[2],
                  1e3 * worst[3], 1e3 * worst[4], 1e3 * worst[5], 100 * (worst[5]) / worst[0], 1e3 * median(t_bare));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_collectives: %s\n", e.what());
    return 2;
  }
  return 0;
}
