// bench/bench_lm_step.cpp: CPU forward + backward of a GPT-2-124M-shaped model (random weights, 12 layers,
// hidden 768, 12 heads, vocab 50257) at batch B x T tokens, with the time split into forward and backward.
// The PyTorch peer for the ratio (<= 1.5x) is bench/peer/lm_step_torch.py; bench/RESULTS.md has both.
//
// --profile 1: then one more step with the per-op-kind profiler on (kernels/perf.h), as a table.
//
// usage: bench_lm_step [--batch 4] [--tokens 256] [--steps 3] [--layers 12] [--profile 1]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/ops.h"
#include "engine/progress.h"
#include "kernels/perf.h"
#include "models/lm/lm.h"

using namespace hamu;

int main(int argc, char** argv) {
  int64_t batch = 4, tokens = 256, layers = 12;
  int steps = 3;
  bool profile = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--tokens")) tokens = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--layers")) layers = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--profile")) profile = std::atoi(argv[i + 1]) != 0;
  }
  if (batch < 1 || tokens < 2 || tokens > 1024 || steps < 1 || layers < 1) {
    std::fprintf(stderr, "bench_lm_step: bad arguments\n");
    return 2;
  }
  models::LmConfig cfg;
  cfg.vocab_size = 50257;
  cfg.hidden_size = 768;
  cfg.num_layers = layers;
  cfg.num_heads = cfg.num_kv_heads = 12;
  cfg.head_dim = 64;
  cfg.intermediate_size = 3072;
  cfg.max_positions = 1024;
  Rng rng(1);
  auto model = models::build_lm(cfg, rng);
  std::vector<int32_t> ids(size_t(batch * tokens));
  for (auto& v : ids) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  Tensor x = Tensor::from_vector<int32_t>(ids, {batch, tokens});
  std::printf("gpt2-124M-shaped (%lld params), batch %lld x %lld tokens, %d threads\n",
              (long long)model->num_parameters(), (long long)batch, (long long)tokens, omp_get_max_threads());
  double best_f = 1e30, best_b = 1e30;
  for (int s = 0; s <= steps; ++s) {  // step 0 warms the allocator
    model->zero_grad();
    const double t0 = now_s();
    Tensor loss = models::lm_loss(model->logits(x), x);
    const double t1 = now_s();
    loss.backward();
    const double t2 = now_s();
    if (s == 0) continue;
    best_f = std::min(best_f, t1 - t0);
    best_b = std::min(best_b, t2 - t1);
    std::printf("step %d: loss %.4f forward %.2f s backward %.2f s\n", s, loss.item(), t1 - t0, t2 - t1);
  }
  std::printf("best: forward %.2f s + backward %.2f s = %.2f s per step (%.0f tokens/s)\n", best_f, best_b,
              best_f + best_b, double(batch * tokens) / (best_f + best_b));
  if (profile) {
    model->zero_grad();
    kernels::profile_begin(-1);
    models::lm_loss(model->logits(x), x).backward();
    const kernels::ProfTable t = kernels::profile_end();
    std::printf("\nprofile of one step (%s):\n%s", t.clock.c_str(), kernels::format_profile(t).c_str());
  }
  return 0;
}
