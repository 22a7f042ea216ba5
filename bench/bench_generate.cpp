// bench/bench_generate.cpp: greedy generation on the CPU, with the KV cache and with full recomputation, for
// gpt-small and a GPT-2-124M-shaped model (random weights): batch B prompts of P tokens, N new tokens each
// (no EOS, so every row runs to N). Prints generated tokens per second.
//
// usage: bench_generate [--batch 8] [--prompt 16] [--new 32] [--quick]   (--quick: gpt-small only)
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/progress.h"
#include "models/lm/generate.h"

using namespace hamu;

namespace {

models::LmConfig gpt2_124m() {
  models::LmConfig cfg;
  cfg.vocab_size = 50257;
  cfg.hidden_size = 768;
  cfg.num_layers = 12;
  cfg.num_heads = cfg.num_kv_heads = 12;
  cfg.head_dim = 64;
  cfg.intermediate_size = 3072;
  cfg.max_positions = 1024;
  return cfg;
}

// Best of `reps` runs: seconds for one generate_greedy call.
double time_generate(models::CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                     const models::GenerateOptions& opt, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    const models::GenerateResult res = models::generate_greedy(model, prompts, opt);
    best = std::min(best, now_s() - t0);
    if (res.tokens.empty() || int64_t(res.tokens[0].size()) != opt.max_new_tokens) std::abort();
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 8, prompt = 16, fresh = 32;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (i + 1 < argc && !std::strcmp(argv[i], "--batch")) batch = std::atoll(argv[++i]);
    else if (i + 1 < argc && !std::strcmp(argv[i], "--prompt")) prompt = std::atoll(argv[++i]);
    else if (i + 1 < argc && !std::strcmp(argv[i], "--new")) fresh = std::atoll(argv[++i]);
  }
  if (batch < 1 || prompt < 1 || fresh < 1 || prompt + fresh > 128) {
    std::fprintf(stderr, "bench_generate: bad arguments (prompt + new must fit gpt-small's 128 positions)\n");
    return 2;
  }
  std::printf("greedy generation, batch %lld, %lld-token prompts, %lld new tokens, %d threads\n", (long long)batch,
              (long long)prompt, (long long)fresh, omp_get_max_threads());
  std::printf("%-18s %10s %14s %14s %8s\n", "model", "params", "cached tok/s", "no-cache tok/s", "speedup");
  std::vector<std::pair<const char*, models::LmConfig>> configs = {{"gpt-small", models::lm_config_by_name("gpt-small", 1024)}};
  if (!quick) configs.push_back({"gpt2-124M-shaped", gpt2_124m()});
  for (auto& [name, cfg] : configs) {
    Rng rng(1);
    auto model = models::build_lm(cfg, rng);
    std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch), std::vector<int32_t>(static_cast<size_t>(prompt)));
    for (auto& p : prompts)
      for (auto& v : p) v = int32_t(rng.below(uint64_t(cfg.vocab_size)));
    models::GenerateOptions opt;
    opt.max_new_tokens = fresh;
    const int reps = quick ? 1 : 2;
    time_generate(*model, prompts, opt, 1);  // warm the allocator
    const double cached = time_generate(*model, prompts, opt, reps);
    opt.use_cache = false;
    const double full = time_generate(*model, prompts, opt, reps);
    const double tokens = double(batch * fresh);
    std::printf("%-18s %9.1fM %14.1f %14.1f %7.2fx\n", name, double(model->num_parameters()) / 1e6, tokens / cached,
                tokens / full, full / cached);
  }
  return 0;
}
