// bench/bench_collectives.cpp: one data-parallel (or split-pairing) HAMU-Q unlearning step of resnet20
// on the ranks of mpirun, as `hamu unlearn` runs it: each rank's share of the global retain and forget
// batches, the gradients, the one exchange (all-reduce of the packed [r; f] and of the losses), the fused
// update. Prints (rank 0) the median step (slowest rank), its phases (gradients, waiting for the slowest
// rank at a barrier, the exchange) and the communication share, and the time of a
// bare all-reduce of the 2 x 272,474 floats. Compare `mpirun -np 1` with OMP_NUM_THREADS=2 against
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
    FusedUpdate update(model->parameters());
    UnlearnOptions opt;
    opt.params.lr = 1e-4;  // the model barely moves, so every step costs the same
    opt.ratio = 0.5;
    const kernels::HamuConfig cfg = hamu_config(opt);
    GradientExchange exchange(w, update, plan);
    std::vector<double> t_step, t_grad, t_wait, t_comm, t_coll;
    std::string fallback;
    for (int s = 0; s < steps + 2; ++s) {
      w.barrier();
      const double t0 = now_s();
      GradientResult g =
          plan.retain && plan.forget
              ? compute_gradients(*model, nullptr, update, retain, forget, *opt.method, opt.params, paired, &fallback)
              : compute_side_gradient(*model, nullptr, update, plan.retain ? retain : forget, *opt.method, opt.params,
                                      plan.retain);
      if (!(plan.retain && plan.forget)) fallback = "one side per rank";
      // The barrier separates waiting for a slower rank (load imbalance, a busy core) from the exchange.
      const double t1 = now_s();
      w.barrier();
      const double t2 = now_s(), c0 = exchange.collective_seconds();
      exchange.reduce(g, retain.size(), batch, forget.size(), batch);
      const double t3 = now_s();
      update.compute_stats();
      update.hamu_step(cfg);
      if (s >= 2) {
        t_step.push_back(now_s() - t0);
        t_grad.push_back(t1 - t0);
        t_wait.push_back(t2 - t1);
        t_comm.push_back(t3 - t2);
        t_coll.push_back(exchange.collective_seconds() - c0);
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
    std::vector<double> mine = {median(t_step), median(t_grad), median(t_wait), median(t_comm), median(t_coll)};
    const std::vector<uint8_t> all = w.all_gather(mine.data(), sizeof(double) * 5);
    double worst[5] = {0, 0, 0, 0, 0};
    for (int r = 0; r < w.size(); ++r) {
      double v[5];
      std::memcpy(v, all.data() + sizeof v * size_t(r), sizeof v);
      for (int k = 0; k < 5; ++k) worst[k] = std::max(worst[k], v[k]);
    }
    if (w.rank() == 0) {
      std::printf("bench_collectives: resnet20 (%lld params), HAMU-Q, global batch %d retain + %d forget, %s pairing, "
                  "%d rank(s) x %d thread(s), %s, gradients: %s\n",
                  (long long)n, batch, batch, pairing.c_str(), w.size(), omp_get_max_threads(), w.backend().c_str(),
                  fallback.empty() ? "one paired pass" : fallback.c_str());
      std::printf("| ranks x threads | pairing | step ms | gradients ms | waiting ms | exchange ms (in MPI) | exchange "
                  "share | bare all-reduce of %.1f MB ms |\n|---|---|---|---|---|---|---|---|\n",
                  double(buf.size()) * 4 / 1e6);
      std::printf("| %d x %d | %s | %.1f | %.1f | %.2f | %.2f (%.2f) | %.1f%% | %.2f |\n", w.size(), omp_get_max_threads(),
                  pairing.c_str(), 1e3 * worst[0], 1e3 * worst[1], 1e3 * worst[2], 1e3 * worst[3], 1e3 * worst[4],
                  100 * worst[3] / worst[0], 1e3 * median(t_bare));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_collectives: %s\n", e.what());
    return 2;
  }
  return 0;
}
