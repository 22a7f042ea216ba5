// tests/test_hardness_text.cpp: hardness on a causal LM over QA token sequences (issue #11 item 6): the
// per-pair loss is the completion-only mean answer-token loss, K by the ghost and materialised paths equals
// the dot products of per-sample gradients from one backward per pair (gpt2 with its tied embedding, llama,
// llama with LoRA adapters), and the driver on a text source (tiling, mean K = kappa, duplicates found).
#include <doctest/doctest.h>

#include "engine/ops.h"
#include "engine/rng.h"
#include "loaders/text_batch.h"
#include "models/lm/lm.h"
#include "models/lm/lora.h"
#include "tests/gradcheck.h"
#include "tests/hardness_check.h"
#include "unlearn/hardness_text.h"

namespace hamu {
namespace {

using models::LmConfig;
using models::LmFamily;

constexpr int64_t kVocab = 40;

std::shared_ptr<models::CausalLM> tiny_lm(LmFamily family, uint64_t seed) {
  LmConfig c;
  c.family = family;
  if (family == LmFamily::llama) {
    c.architecture = "LlamaForCausalLM";
    c.model_type = "llama";
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 4;
    c.intermediate_size = 24;
    c.tie_word_embeddings = false;
  } else {
    c.num_heads = 2;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c.intermediate_size = 32;
    c.tie_word_embeddings = true;
  }
  c.vocab_size = kVocab;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.max_positions = 32;
  Rng rng(seed);
  auto m = models::build_lm(c, rng);
  // Larger weights than the 0.02 init, so the per-pair gradients differ clearly.
  for (auto& [name, p] : m->named_parameters())
    if (name.find("norm") == std::string::npos && name.find("ln_") == std::string::npos) {
      Tensor t = p.detach();
      rng.fill_normal(t, 0.0, 0.2);
    }
  m->eval();
  return m;
}

// n fresh QA sequences of random lengths (prompt 2..5 tokens, answer 1..4), labels -100 on the prompt.
std::vector<QaTokens> random_pairs(int64_t n, Rng& rng) {
  std::vector<QaTokens> out;
  for (int64_t i = 0; i < n; ++i) {
    QaTokens q;
    const int64_t np = 2 + int64_t(rng.below(4)), na = 1 + int64_t(rng.below(4));
    for (int64_t j = 0; j < np + na; ++j) {
      q.ids.push_back(int32_t(1 + rng.below(uint64_t(kVocab - 1))));
      q.labels.push_back(j < np ? kIgnoreLabel : q.ids.back());
    }
    q.n_prompt = np;
    out.push_back(q);
  }
  return out;
}

// K by `path` (whole and in two tiles), the row form and the norms against per-pair gradients.
void check_lm(models::CausalLM& model, GhostPath path, uint64_t seed) {
  Rng rng(seed);
  const int64_t nf = 3, nr = 4;
  std::vector<QaTokens> f = random_pairs(nf, rng), r = random_pairs(nr, rng);
  std::vector<QaTokens> all = f;
  all.insert(all.end(), r.begin(), r.end());
  const int64_t t = longest_sequence(all);
  std::vector<int64_t> fi = {0, 1, 2}, ri = {0, 1, 2, 3};
  Batch bf = make_text_batch(f, fi, 0, t), br = make_text_batch(r, ri, 0, t);
  const std::vector<Tensor> params = model.parameters();
  int64_t total = 0;
  for (const Tensor& p : params) total += p.numel();
  const std::vector<double> pf = testing::as_doubles(per_sample_gradients(model, bf.images, bf.labels, params, text_sample_losses));
  const std::vector<double> pr = testing::as_doubles(per_sample_gradients(model, br.images, br.labels, params, text_sample_losses));
  const testing::PerSampleReference ref = testing::per_sample_reference(pf, pr, nf, nr, total);
  const std::vector<double>& k_ref = ref.k;
  CapturedBatch cf = capture_batch(model, bf.images, bf.labels, true, text_sample_losses);
  CapturedBatch cr = capture_batch(model, br.images, br.labels, true, text_sample_losses);
  BlockPlan plan = plan_blocks(model, cr, path);
  SampleReps rf = build_reps(model, plan, cf, 0, nf), rr = build_reps(model, plan, cr, 0, nr);
  const DType dt = params[0].dtype();
  Tensor gram = Tensor::empty({std::max<int64_t>(1, gram_elems(plan, nf, nr))}, dt);
  Tensor k = Tensor::zeros({nf * nr}, dt);
  add_similarity(plan, rf, rr, 0, nr, k, gram);
  CHECK(testing::rel_error(testing::as_doubles(k), k_ref) <= 1e-4);
  Tensor ka = Tensor::zeros({nf * 3}, dt), kb = Tensor::zeros({nf}, dt);
  add_similarity(plan, rf, rr, 0, 3, ka, gram);
  add_similarity(plan, rf, rr, 3, 1, kb, gram);
  std::vector<double> kt;
  const std::vector<double> va = testing::as_doubles(ka), vb = testing::as_doubles(kb);
  for (int64_t j = 0; j < nf; ++j) {
    for (int64_t i = 0; i < 3; ++i) kt.push_back(va[size_t(j * 3 + i)]);
    kt.push_back(vb[size_t(j)]);
  }
  CHECK(testing::rel_error(kt, k_ref) <= 1e-4);
  std::vector<Tensor> hv;
  for (size_t i = 0; i < params.size(); ++i)
    hv.push_back(cr.param_grads[i].defined() ? cr.param_grads[i] : Tensor::zeros(params[i].shape(), dt));
  Tensor row = Tensor::zeros({nf}, dt), norms = Tensor::zeros({nf}, dt);
  add_row_form(model, plan, cf, 0, nf, hv, row);
  add_sample_norms(plan, rf, norms);
  CHECK(testing::rel_error(testing::as_doubles(row), ref.row) <= 1e-4);
  CHECK(testing::rel_error(testing::as_doubles(norms), ref.norm) <= 1e-4);
}

std::vector<float> grads_of(models::CausalLM& model, const Tensor& loss) {
  const std::vector<Tensor> params = model.parameters();
  for (Tensor p : params) p.zero_grad();
  loss.backward();
  std::vector<float> out;
  for (const Tensor& p : params) {
    const std::vector<float> g = p.grad().defined() ? p.grad().to_vector<float>() : std::vector<float>(size_t(p.numel()), 0.f);
    out.insert(out.end(), g.begin(), g.end());
  }
  for (Tensor p : params) p.zero_grad();
  return out;
}

}  // namespace

TEST_CASE("text hardness: a pair's loss is its mean answer-token loss, padding changes nothing") {
  auto model = tiny_lm(LmFamily::gpt2, 1);
  Rng rng(2);
  std::vector<QaTokens> pairs = random_pairs(3, rng);
  const int64_t t = longest_sequence(pairs) + 3;
  Batch b = make_text_batch(pairs, {0, 1, 2}, 0, t);
  const std::vector<double> losses = testing::as_doubles(text_sample_losses(*model, b.images, b.labels));
  for (int64_t i = 0; i < 3; ++i) {
    Batch one = make_text_batch(pairs, {i}, 0);  // unpadded
    // Hugging Face's loss of the pair alone: the mean over its answer tokens.
    const Tensor ref = models::lm_loss(model->logits(one.images), one.labels);
    CHECK(losses[size_t(i)] == doctest::Approx(ref.item()).epsilon(1e-5));
    // Its gradient equals the padded batch row's per-sample gradient.
    const std::vector<float> g_ref = grads_of(*model, models::lm_loss(model->logits(one.images), one.labels));
    const std::vector<double> g_row = testing::as_doubles(
        per_sample_gradients(*model, b.images.narrow(0, i, 1), b.labels.narrow(0, i, 1), model->parameters(), text_sample_losses));
    CHECK(testing::rel_error(g_row, std::vector<double>(g_ref.begin(), g_ref.end())) <= 1e-5);
  }
}

TEST_CASE("text hardness: K, row form and norms on an LM equal per-pair gradients (gpt2, llama, LoRA; f32)") {
  for (uint64_t seed : {11u, 12u}) {
    auto gpt2 = tiny_lm(LmFamily::gpt2, seed);
    auto llama = tiny_lm(LmFamily::llama, seed + 100);
    for (GhostPath path : {GhostPath::ghost, GhostPath::materialise, GhostPath::automatic}) {
      check_lm(*gpt2, path, seed * 7 + 1);
      check_lm(*llama, path, seed * 7 + 2);
    }
  }
  // gpt2's tied token embedding is one block of two layers (the sum of both layers' per-sample
  // gradients); llama's RMSNorm weights are uncaptured (one backward per pair): both count exactly
  // (checked above).
  auto gpt2 = tiny_lm(LmFamily::gpt2, 5);
  Rng rng(6);
  std::vector<QaTokens> pairs = random_pairs(2, rng);
  Batch b = make_text_batch(pairs, {0, 1}, 0);
  BlockPlan plan = plan_blocks(*gpt2, capture_batch(*gpt2, b.images, b.labels, true, text_sample_losses), GhostPath::automatic);
  bool wte_found = false;
  for (const HardnessBlock& blk : plan.blocks)
    if (blk.name == "transformer.wte.weight") {
      // Shared by the embedding and the output layer: materialised from both captures, no fallback.
      wte_found = true;
      CHECK(blk.parts.size() == 2);
      CHECK(blk.rule != nullptr);
      CHECK(std::string(blk.path()) == "materialise");
      CHECK(blk.kind == "embedding + linear (shared)");
    }
  CHECK(wte_found);
  CHECK(plan.notices.empty());
  // LoRA: only the adapters' blocks.
  auto llama = tiny_lm(LmFamily::llama, 7);
  models::LoraSpec spec;
  spec.r = 2;
  models::add_lora(*llama, spec, 3);
  Rng ar(8);
  for (Tensor p : llama->parameters()) {
    Tensor d = p.detach();
    ar.fill_normal(d, 0.0, 0.2);
  }
  llama->eval();
  for (GhostPath path : {GhostPath::ghost, GhostPath::materialise}) check_lm(*llama, path, 99);
  Batch bl = make_text_batch(pairs, {0, 1}, 0);
  BlockPlan lplan = plan_blocks(*llama, capture_batch(*llama, bl.images, bl.labels, true, text_sample_losses), GhostPath::automatic);
  CHECK(lplan.blocks.size() == llama->parameters().size());
  for (const HardnessBlock& blk : lplan.blocks) CHECK(blk.name.find("lora_") != std::string::npos);
}

TEST_CASE("text hardness driver: tiles agree, mean K = kappa, an exact duplicate is the nearest retain pair") {
  auto model = tiny_lm(LmFamily::gpt2, 21);
  Rng rng(22);
  std::vector<QaTokens> seqs = random_pairs(12, rng);
  // Forget 0..3; retain 4..11 plus an exact copy of each forget pair (indices 12..15).
  for (int64_t i = 0; i < 4; ++i) seqs.push_back(seqs[size_t(i)]);
  std::vector<int32_t> labels;
  for (int64_t i = 0; i < 16; ++i) labels.push_back(int32_t(i < 12 ? i : i - 12));
  const TextHardnessSource source(seqs, labels, 0);
  const std::vector<int64_t> forget = {0, 1, 2, 3};
  std::vector<int64_t> retain;
  for (int64_t i = 4; i < 16; ++i) retain.push_back(i);
  HardnessOptions one, tiled;
  one.heat_size = tiled.heat_size = 4;
  tiled.forget_tile = 3;
  tiled.retain_tile = 5;
  tiled.chunk = 3;
  const HardnessReport a = compute_hardness(*model, source, forget, retain, one);
  const HardnessReport b = compute_hardness(*model, source, forget, retain, tiled);
  REQUIRE(a.samples.size() == 4);
  CHECK(a.n_retain == 12);
  CHECK(a.kappa == doctest::Approx(b.kappa).epsilon(1e-4));
  CHECK(a.row_form_check <= 1e-4);
  double mean_row = 0;
  for (size_t j = 0; j < 4; ++j) {
    CHECK(a.samples[j].kappa == doctest::Approx(b.samples[j].kappa).epsilon(1e-4).scale(1e-6));
    CHECK(a.samples[j].similar_index == b.samples[j].similar_index);
    // The exact copy has cosine 1: no other retain pair can be more similar.
    CHECK(a.samples[j].similar_index == int64_t(12 + j));
    CHECK(a.samples[j].similar_cosine == doctest::Approx(1.0).epsilon(1e-4));
    mean_row += a.samples[j].kappa / 4;
  }
  CHECK(a.share_same_class == 1.0);
  // mean_j kappa_j = <g_f, g_r> = kappa (the per-pair mean gradients).
  CHECK(mean_row == doctest::Approx(a.kappa).epsilon(1e-4));
  // Without the duplicates the same forget pairs are less similar to the retain set.
  const HardnessReport c = compute_hardness(*model, source, forget, std::vector<int64_t>(retain.begin(), retain.begin() + 8), one);
  CHECK(c.mean_similar_cosine < a.mean_similar_cosine);
  // A retain sample of 5 with the duplicates first: all four are in it, and still the nearest.
  HardnessOptions few = one;
  few.retain_samples = 5;
  few.retain_priority = {12, 13, 14, 15};
  const HardnessReport d = compute_hardness(*model, source, forget, retain, few);
  CHECK(d.n_retain == 5);
  for (size_t j = 0; j < 4; ++j) CHECK(d.samples[j].similar_index == int64_t(12 + j));
}

}  // namespace hamu
