// bench/bench_lora_step.cpp: one HAMU-Q unlearning step of a Llama-shaped causal LM with LoRA adapters, as
// `hamu unlearn --lora` runs it (issue #10's GPU bench): random weights, adapters r 8, alpha 16, dropout
// 0.05 on q, k, v, o, gate, up, down (base frozen, no gradient buffers), a retain batch and a forget batch
// of random token sequences (the first 32 tokens a prompt without loss, the rest scored), the two objective
// gradients (with dropout active: two passes, as the published code; --no-dropout: one paired pass) and the
// fused update over the adapter blocks. Prints the median step, its phases and the peak memory (CUDA: the
// caching allocator's peak in use; CPU: the process's peak resident set). The PyTorch peer is
// bench/peer/lora_step_torch.py (transformers + peft, the same shapes and step); scripts/gpu-check.sh runs
// both on the same card.
//
// usage: bench_lora_step [--preset tiny|7b] [--layers N] [--batch 16] [--tokens 256] [--steps 5]
//                        [--device cpu|cuda] [--no-dropout] [--base-dtype float32|bfloat16]
//   --base-dtype bfloat16 (cuda): the frozen base Linear weights in bfloat16, as `hamu unlearn --base-dtype
//   bfloat16` keeps them (models::cast_frozen_linear_weights), to compare with the peer's bf16 base.
//   tiny: (the default) hidden 256, 4 layers, 8 heads, MLP 688, vocab 32000 (a CPU check of the whole path)
//   7b:   Llama-2-7B's shape (hidden 4096, 32 heads, MLP 11008, vocab 32000; --layers N keeps N of its 32)
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "engine/allocator.h"
#include "engine/progress.h"
#include "kernels/perf.h"
#include "models/lm/lm.h"
#include "models/lm/lora.h"
#include "unlearn/gradients.h"
#include "unlearn/hamu_config.h"
#include "unlearn/text_task.h"
#include "unlearn/update.h"

using namespace hamu;

namespace {

std::vector<QaTokens> random_sequences(int64_t n, int64_t tokens, int64_t vocab, int64_t prompt, Rng& rng) {
  std::vector<QaTokens> out(static_cast<size_t>(n));
  for (QaTokens& q : out) {
    q.ids.resize(size_t(tokens));
    for (int32_t& v : q.ids) v = int32_t(rng.below(uint64_t(vocab)));
    q.labels = q.ids;
    for (int64_t j = 0; j < prompt; ++j) q.labels[size_t(j)] = kIgnoreLabel;
    q.n_prompt = prompt;
  }
  return out;
}

double peak_mib(const Device& d) {
  if (d.is_cuda()) return double(allocator_stats(d).peak_in_use) / (1 << 20);
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "tiny", device = "cpu";
  int64_t layers = -1, batch = 16, tokens = 256;
  int steps = 5;
  bool dropout = true;
  std::string base_dtype = "float32";
  for (int i = 1; i < argc; ++i) {
    const bool has = i + 1 < argc;
    if (!std::strcmp(argv[i], "--preset") && has) preset = argv[++i];
    else if (!std::strcmp(argv[i], "--layers") && has) layers = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--batch") && has) batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--tokens") && has) tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && has) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--device") && has) device = argv[++i];
    else if (!std::strcmp(argv[i], "--no-dropout")) dropout = false;
    else if (!std::strcmp(argv[i], "--base-dtype") && has) base_dtype = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: bench_lora_step [--preset tiny|7b] [--layers N] [--batch 16] [--tokens 256] [--steps 5] "
                   "[--device cpu|cuda] [--no-dropout] [--base-dtype float32|bfloat16]\n");
      return 2;
    }
  }
  try {
    models::LmConfig cfg;
    cfg.family = models::LmFamily::llama;
    cfg.architecture = "LlamaForCausalLM";
    cfg.model_type = "llama";
    cfg.vocab_size = 32000;
    cfg.tie_word_embeddings = false;
    cfg.norm_eps = 1e-5;
    if (preset == "7b") {
      cfg.hidden_size = 4096;
      cfg.num_layers = 32;
      cfg.num_heads = cfg.num_kv_heads = 32;
      cfg.intermediate_size = 11008;
    } else if (preset == "tiny") {
      cfg.hidden_size = 256;
      cfg.num_layers = 4;
      cfg.num_heads = cfg.num_kv_heads = 8;
      cfg.intermediate_size = 688;
    } else {
      throw InputError("--preset: '" + preset + "' is not 7b or tiny");
    }
    if (layers > 0) cfg.num_layers = layers;
    cfg.head_dim = cfg.hidden_size / cfg.num_heads;
    cfg.max_positions = std::max<int64_t>(4096, tokens);
    cfg.validate("bench_lora_step");
    if (batch < 1 || tokens < 40 || steps < 1) throw InputError("--batch >= 1, --tokens >= 40, --steps >= 1");
    const Device dev = Device::parse(device);
    if (base_dtype != "float32" && base_dtype != "bfloat16") throw InputError("--base-dtype: float32 or bfloat16");
    const bool bf16 = base_dtype == "bfloat16";
    if (bf16 && !dev.is_cuda()) throw InputError("--base-dtype bfloat16: CUDA-only (give --device cuda)");

    const double t_build = now_s();
    Rng rng(1);
    std::shared_ptr<models::CausalLM> model = models::build_lm(cfg, rng);
    models::LoraSpec spec;
    spec.dropout = dropout ? 0.05 : 0.0;
    models::add_lora(*model, spec, 7);
    // bf16: each frozen weight is converted on the device as it arrives (the float32 base never sits there whole).
    if (bf16) {
      models::cast_frozen_linear_weights(*model, DType::bf16, dev);
      kernels::PerfOptions perf = kernels::perf_options();  // and attention and saved activations in bf16, as the CLI
      perf.bf16_attention = true;
      perf.bf16_activations = true;
      kernels::set_perf_options(perf);
    }
    model->to(dev);
    model->train(true);
    const double build_s = now_s() - t_build;

    const std::vector<QaTokens> retain = random_sequences(batch, tokens, cfg.vocab_size, 32, rng);
    const std::vector<QaTokens> forget = random_sequences(batch, tokens, cfg.vocab_size, 32, rng);
    UnlearnOptions opt;
    opt.params.lr = 1e-4;  // the adapters barely move, so every step costs the same
    opt.ratio = 0.5;
    opt.batch = batch;
    opt.forget_batch = batch;
    opt.device = dev;
    std::unique_ptr<UnlearnTask> task = make_text_task(retain, forget, 0, opt);
    FusedUpdate update(model->parameters());
    const kernels::HamuConfig hcfg = hamu_config(opt);
    int64_t adapter = 0, total = 0;
    for (const Tensor& p : update.params()) adapter += p.numel();
    for (const auto& [name, w] : model->named_weights()) total += w.numel();

    std::vector<double> t_step, t_grad, t_update;
    std::string fallback;
    bool paired = false;
    for (int s = 0; s < steps + 1; ++s) {  // step 0 warms the caching allocator and the kernels
      Batch rb, fb;
      task->next_pair(rb, fb);
      bench::sync(dev);
      const double t0 = now_s();
      const GradientResult g =
          compute_gradients(*model, nullptr, update, rb, fb, *opt.method, opt.params, true, &fallback, task.get());
      bench::sync(dev);
      const double t1 = now_s();
      update.compute_stats();
      update.hamu_step(hcfg);
      bench::sync(dev);
      const double t2 = now_s();
      paired = g.paired;
      if (s == 0) continue;
      t_step.push_back(t2 - t0);
      t_grad.push_back(t1 - t0);
      t_update.push_back(t2 - t1);
    }
    std::printf("bench_lora_step: llama %s-shaped, %lld layers, hidden %lld, MLP %lld, vocab %lld (%.3g params), LoRA r 8 "
                "alpha 16 dropout %.2f on q,k,v,o,gate,up,down (%lld adapter params in %d blocks), batch %lld + %lld x "
                "%lld tokens, %s%s, %s; model built in %.1f s\n",
                preset.c_str(), (long long)cfg.num_layers, (long long)cfg.hidden_size, (long long)cfg.intermediate_size,
                (long long)cfg.vocab_size, double(total), spec.dropout, (long long)adapter,
                update.count(), (long long)batch, (long long)batch, (long long)tokens, dev.str().c_str(),
                dev.is_cuda() ? "" : (", " + std::to_string(omp_get_max_threads()) + " threads").c_str(),
                bf16 ? "bf16 base, f32 adapters and update" : "f32", build_s);
    std::printf("| implementation | median ms/step | gradients ms | update ms | peak MiB |\n|---|---|---|---|---|\n");
    std::printf("| hamu, %s + fused update | %.1f | %.1f | %.2f | %.0f |\n",
                paired ? "one paired pass" : "two passes", 1e3 * bench::median(t_step), 1e3 * bench::median(t_grad),
                1e3 * bench::median(t_update), peak_mib(dev));
    if (!paired) std::printf("gradients: two passes (%s)\n", fallback.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_lora_step: %s\n", e.what());
    return 2;
  }
  return 0;
}
