// tests/test_lm_models.cpp: gpt2 / llama / mistral models against what transformers computes on the same
// weights (tests/fixtures/lm, made by scripts/make_lm_fixtures.py): logits with and without padding,
// per-token losses with -100 labels, gradients of the mean loss; sharded loading; save -> reload round
// trips; every bad directory a clear InputError naming the file or tensor; gpt-small trains.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "engine/json.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/safetensors.h"
#include "engine/safetensors_mapped.h"
#include "models/lm/lm.h"
#include "tests/gradcheck.h"

using namespace hamu;
using namespace hamu::models;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = (fs::path(__FILE__).parent_path() / "fixtures" / "lm").string();
constexpr double kTol = 1e-4;  // relative error in f32 (the bound)

std::string fixture(const std::string& name) { return kFixtures + "/" + name; }

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/hamu_lm_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  // A copy of fixture directory `name` inside this temp dir.
  std::string copy_of(const std::string& name) const {
    const std::string dst = path + "/" + name;
    fs::copy(fixture(name), dst, fs::copy_options::recursive);
    return dst;
  }
};

// Relative error ||a - b|| / ||b|| and the largest elementwise |a - b| / max|b|.
struct Err {
  double rel = 0, max_rel = 0;
};
Err compare(const std::vector<double>& a, const std::vector<double>& b) {
  Err e;
  e.rel = testing::rel_error(a, b);
  double scale = 0, worst = 0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  e.max_rel = worst / std::max(scale, 1e-30);
  return e;
}

std::vector<double> doubles(const Tensor& t) { return testing::as_doubles(t.detach().contiguous()); }

// Keeps positions where mask == 1 of a [B,T,...] tensor (flattened).
std::vector<double> masked_rows(const Tensor& t, const std::vector<int32_t>& mask) {
  const std::vector<double> v = doubles(t);
  const size_t row = v.size() / mask.size();
  std::vector<double> out;
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) out.insert(out.end(), v.begin() + long(i * row), v.begin() + long((i + 1) * row));
  return out;
}

void check_err(const std::string& what, const Err& e) {
  MESSAGE(what << ": rel " << e.rel << ", max elementwise rel " << e.max_rel);
  CHECK(e.rel <= kTol);
  CHECK(e.max_rel <= kTol);
}

void check_against_fixture(const std::string& name) {
  CAPTURE(name);
  LoadedLm lm = load_hf_dir(fixture(name));
  Checkpoint exp = load_safetensors(fixture(name + "_expected.safetensors"));
  const Tensor& ids = exp.get("ids");
  const Tensor& labels = exp.get("labels");
  const Tensor& mask = exp.get("mask");
  const int64_t b = ids.shape()[0], t = ids.shape()[1];

  Tensor logits = lm.model->logits(ids);
  check_err(name + " logits", compare(doubles(logits), doubles(exp.get("logits"))));
  {
    NoGradGuard ng;
    Tensor lm_masked = lm.model->logits(ids, mask);
    const std::vector<int32_t> m = mask.to_vector<int32_t>();
    check_err(name + " logits with left padding (unpadded positions)",
              compare(masked_rows(lm_masked, m), masked_rows(exp.get("logits_masked"), m)));
  }
  Tensor token = lm_token_losses(logits, labels);
  check_err(name + " per-token losses", compare(doubles(token.narrow(1, 0, t - 1)), doubles(exp.get("token_losses"))));
  CHECK(doubles(token.narrow(1, t - 1, 1)) == std::vector<double>(size_t(b), 0.0));
  Tensor loss = lm_loss(logits, labels);
  check_err(name + " mean loss", compare({loss.item()}, doubles(exp.get("loss"))));
  loss.backward();
  std::map<std::string, Tensor> params;
  for (auto& [pname, p] : lm.model->named_parameters()) params[pname] = p;
  int grads = 0;
  for (const NamedTensor& nt : exp.tensors) {
    if (nt.name.rfind("grad.", 0) != 0) continue;
    const std::string pname = nt.name.substr(5);
    REQUIRE_MESSAGE(params.count(pname), pname);
    Tensor g = params[pname].grad();
    REQUIRE(g.defined());
    if (lm.model->hf_transposed(pname)) g = g.transpose(0, 1);
    check_err(name + " grad " + pname, compare(doubles(g), doubles(nt.tensor)));
    ++grads;
  }
  CHECK(grads >= 2);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

}  // namespace

TEST_CASE("lm fixtures: gpt2 (tied, Conv1D layout) matches transformers") { check_against_fixture("gpt2"); }
TEST_CASE("lm fixtures: llama with GQA, rope_theta 50000, untied, sharded") { check_against_fixture("llama_gqa"); }
TEST_CASE("lm fixtures: llama tied, explicit head_dim, one kv head") { check_against_fixture("llama_tied"); }
TEST_CASE("lm fixtures: mistral-style config") { check_against_fixture("mistral"); }
// Configurations that were refused before (tie_word_embeddings false, activation_function gelu / relu,
// scale_attn_by_inverse_layer_idx, scale_attn_weights false, attention_bias, mlp_bias, rope_scaling llama3 /
// linear, Qwen2ForCausalLM).
TEST_CASE("lm fixtures: gpt2 untied lm_head, exact gelu, scale_attn_by_inverse_layer_idx, n_inner") {
  check_against_fixture("gpt2_untied");
}
TEST_CASE("lm fixtures: gpt2 with relu and scale_attn_weights false") { check_against_fixture("gpt2_relu"); }
TEST_CASE("lm fixtures: llama with attention and mlp biases, explicit head_dim, llama3 rope scaling") {
  check_against_fixture("llama_scaled");
}
TEST_CASE("lm fixtures: llama tied with linear rope scaling") { check_against_fixture("llama_linear"); }
TEST_CASE("lm fixtures: qwen2 (q/k/v biases, tied, one kv head)") { check_against_fixture("qwen2"); }
TEST_CASE("lm fixtures: llama saved in bfloat16 and sharded, three query heads per kv head, vocabulary 101") {
  check_against_fixture("llama_bf16_gqa3");
}
TEST_CASE("lm fixtures: gpt2 saved in float16, gelu_pytorch_tanh, layer_norm_epsilon 1e-4") { check_against_fixture("gpt2_f16_tanh"); }
TEST_CASE("lm fixtures: llama with yarn rope scaling (ramp, mscale attention factor)") { check_against_fixture("llama_yarn"); }

TEST_CASE("lm configs: rotary scaling, biases and activations parsed; what is not implemented refused by key") {
  auto contains = [](const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; };
  const Json base = load_json(fixture("llama_gqa") + "/config.json");
  auto parse = [&](const std::function<void(Json&)>& edit) {
    Json j = base;
    edit(j);
    return LmConfig::from_hf_json(j, "cfg.json");
  };
  auto refusal = [&](const std::function<void(Json&)>& edit) { return error_of([&] { parse(edit); }); };
  // Older files: rope_scaling with "type" beside a top-level rope_theta.
  const LmConfig lin = parse([](Json& j) {
    j.erase("rope_parameters");
    j.set("rope_theta", 100.0).set("rope_scaling", Json::object({{"type", "linear"}, {"factor", 4.0}}));
  });
  CHECK(lin.rope_type == "linear");
  CHECK(lin.rope_factor == 4.0);
  const std::vector<double> plain = parse([](Json& j) { j.erase("rope_parameters"); j.set("rope_theta", 100.0); }).rope_inv_freq(false);
  const std::vector<double> scaled = lin.rope_inv_freq(false);
  REQUIRE(scaled.size() == 4);
  for (size_t i = 0; i < 4; ++i) CHECK(scaled[i] == doctest::Approx(plain[i] / 4.0).epsilon(1e-15));
  // llama3: the original context comes from the nested field, else a top-level one wins, else max_position_embeddings.
  Json l3 = Json::object({{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"rope_theta", 10000.0}});
  CHECK(parse([&](Json& j) { j.set("rope_parameters", l3); }).rope_original_max_positions == 64);
  l3.set("original_max_position_embeddings", 16);
  CHECK(parse([&](Json& j) { j.set("rope_parameters", l3); }).rope_original_max_positions == 16);
  CHECK(parse([&](Json& j) { j.set("rope_parameters", l3).set("original_max_position_embeddings", 32); }).rope_original_max_positions == 32);
  CHECK(parse([](Json& j) { j.set("attention_bias", true); }).o_bias);
  CHECK(parse([](Json& j) { j.set("mlp_bias", true); }).mlp_bias);
  // Mistral's transformers class has no biases, whatever the config says; Qwen2 always has q/k/v biases, and
  // its sliding_window applies only with use_sliding_window.
  const LmConfig mis = parse([](Json& j) {
    j.set("architectures", Json::array({"MistralForCausalLM"})).set("model_type", "mistral").set("attention_bias", true);
  });
  CHECK_FALSE(mis.qkv_bias);
  const LmConfig qw = parse([](Json& j) {
    j.set("architectures", Json::array({"Qwen2ForCausalLM"})).set("model_type", "qwen2").set("sliding_window", 8);
  });
  CHECK((qw.qkv_bias && !qw.o_bias && qw.sliding_window == 0));
  auto qwen_window = [&](const std::function<void(Json&)>& edit) {
    return parse([&](Json& j) {
             j.set("architectures", Json::array({"Qwen2ForCausalLM"})).set("model_type", "qwen2").set("sliding_window", 8);
             j.set("use_sliding_window", true);
             edit(j);
           })
        .sliding_window;
  };
  // The window applies to the layers layer_types marks, by default those from max_window_layers (28) on.
  CHECK(qwen_window([](Json& j) { j.set("max_window_layers", 1); }) == 8);
  CHECK(qwen_window([](Json&) {}) == 0);
  CHECK(qwen_window([](Json& j) { j.set("layer_types", Json::array({"full_attention", "sliding_attention"})); }) == 8);
  CHECK(qwen_window([](Json& j) { j.set("layer_types", Json::array({"full_attention", "full_attention"})).set("max_window_layers", 0); }) == 0);
  CHECK(contains(error_of([&] { qwen_window([](Json& j) { j.set("layer_types", Json::array({"full_attention", "chunked"})); }); }),
                 "layer_types entry 'chunked' is not supported"));
  CHECK_MESSAGE(contains(refusal([](Json& j) { j.set("rope_parameters", Json::object({{"rope_type", "longrope"}, {"factor", 2.0}})); }),
                         "cfg.json: rope_parameters.rope_type 'longrope' is not supported"), "longrope");
  // yarn: the attention factor from factor (0.1 ln(factor) + 1), from mscale / mscale_all_dim, or given; a null
  // factor is max_position_embeddings over the original context (64 / 16 here).
  auto yarn = [&](Json r) {
    r.set("rope_type", "yarn").set("original_max_position_embeddings", 16);
    return parse([&](Json& j) { j.set("rope_parameters", r); });
  };
  CHECK(yarn(Json::object({{"factor", 4.0}})).rope_attention_factor == doctest::Approx(0.1 * std::log(4.0) + 1));
  CHECK(yarn(Json::object({{"factor", 4.0}, {"mscale", 0.8}, {"mscale_all_dim", 0.5}})).rope_attention_factor ==
        doctest::Approx((0.08 * std::log(4.0) + 1) / (0.05 * std::log(4.0) + 1)));
  CHECK(yarn(Json::object({{"factor", 4.0}, {"attention_factor", 0.7}})).rope_attention_factor == 0.7);
  CHECK(yarn(Json::object({{"factor", nullptr}})).rope_factor == 4.0);
  CHECK(contains(refusal([](Json& j) { j.set("rope_parameters", Json::object({{"rope_type", "yarn"}, {"beta_fast", -1}, {"factor", 2.0}})); }),
                 "field 'rope_parameters.beta_fast' = -1 is not a non-negative number"));
  CHECK(contains(refusal([](Json& j) { j.set("rope_parameters", Json::object({{"rope_type", "linear"}})); }),
                 "missing field 'rope_parameters.factor'"));
  CHECK(contains(refusal([](Json& j) {
                   j.set("rope_parameters", Json::object({{"rope_type", "llama3"}, {"factor", 8.0}, {"high_freq_factor", 4.0}}));
                 }),
                 "missing field 'rope_parameters.low_freq_factor'"));
  CHECK(contains(refusal([](Json& j) {
                   j.set("rope_parameters", Json::object({{"rope_type", "linear"}, {"factor", 2.0}, {"partial_rotary_factor", 0.5}}));
                 }),
                 "rope_parameters.partial_rotary_factor 0.500000 is not supported with rope_type 'linear'"));
  CHECK(contains(refusal([](Json& j) { j.set("hidden_act", "gelu"); }), "hidden_act 'gelu' is not supported"));
  // GPT-2: activations.
  const Json g = load_json(fixture("gpt2") + "/config.json");
  auto gpt2 = [&](const std::string& act) {
    Json j = g;
    j.set("activation_function", act);
    return LmConfig::from_hf_json(j, "g.json");
  };
  CHECK(gpt2("gelu_pytorch_tanh").activation == "gelu_new");
  CHECK(gpt2("relu").activation == "relu");
  CHECK(contains(error_of([&] { gpt2("silu"); }), "g.json: activation_function 'silu' is not supported"));
}

TEST_CASE("lm: rope_type dynamic equals the default rotary within max_position_embeddings, refuses beyond") {
  Json j = load_json(fixture("llama_gqa") + "/config.json");
  j.set("rope_parameters", Json::object({{"rope_type", "dynamic"}, {"factor", 4.0}, {"rope_theta", 50000.0}}));
  Rng rng(3);
  auto dyn = build_lm(LmConfig::from_hf_json(j, "dyn"), rng);
  LoadedLm plain = load_hf_dir(fixture("llama_gqa"));
  std::map<std::string, Tensor> src;
  for (auto& [n, p] : plain.model->named_parameters()) src[n] = p;
  for (auto& [n, p] : dyn->named_parameters()) {
    Tensor t = p;
    t.copy_(src.at(n));
  }
  NoGradGuard ng;
  const Tensor ids = Tensor::from_vector<int32_t>({5, 9, 2, 7}, {1, 4});
  CHECK(dyn->logits(ids).to_vector<float>() == plain.model->logits(ids).to_vector<float>());
  const std::string e = error_of([&] { dyn->logits(ids, {}, Tensor::from_vector<int32_t>({60, 61, 62, 64}, {4})); });
  CHECK_MESSAGE(e.find("position 64 is beyond max_position_embeddings 64 (rope_type 'dynamic'") != std::string::npos, e);
}

TEST_CASE("lm configs: parsed from config.json, names and sizes") {
  const LmConfig g = load_hf_config(fixture("gpt2"));
  CHECK(g.family == LmFamily::gpt2);
  CHECK(g.head_dim == 8);
  CHECK(g.intermediate_size == 128);
  const LmConfig l = load_hf_config(fixture("llama_gqa"));
  CHECK(l.num_kv_heads == 2);
  CHECK(l.rope_theta == 50000.0);  // from rope_parameters (newer files)
  CHECK_FALSE(l.tie_word_embeddings);
  const LmConfig t = load_hf_config(fixture("llama_tied"));
  CHECK(t.head_dim == 10);
  CHECK(t.tie_word_embeddings);
  CHECK(load_hf_config(fixture("mistral")).model_type == "mistral");
  // Older files: top-level rope_theta.
  Json old = load_json(fixture("llama_gqa") + "/config.json");
  old.erase("rope_parameters");
  old.set("rope_theta", 123456.0);
  CHECK(LmConfig::from_hf_json(old, "old").rope_theta == 123456.0);
  // HF parameter names.
  Rng rng(1);
  auto m = build_lm(l, rng);
  std::set<std::string> names;
  for (auto& [n, p] : m->named_parameters()) names.insert(n);
  CHECK(names.count("model.layers.1.self_attn.q_proj.weight"));
  CHECK(names.count("model.layers.0.mlp.gate_proj.weight"));
  CHECK(names.count("lm_head.weight"));
  CHECK(m->named_parameters().size() == 2 + 2 * 9 + 1);
  auto gm = build_lm(g, rng);
  CHECK(gm->named_parameters().front().first == "transformer.wte.weight");
  CHECK(gm->hf_transposed("transformer.h.0.attn.c_attn.weight"));
  CHECK_FALSE(gm->hf_transposed("transformer.h.0.attn.c_attn.bias"));
}

TEST_CASE("lm save -> reload: byte-identical tensors, Hugging Face layout, tied weights once") {
  TempDir tmp;
  for (const char* name : {"gpt2", "llama_gqa", "llama_tied"}) {
    CAPTURE(name);
    LoadedLm a = load_hf_dir(fixture(name));
    const std::string out = tmp.path + "/" + name + "_saved";
    save_hf_dir(out, *a.model);
    CHECK(fs::exists(out + "/config.json"));
    LoadedLm b = load_hf_dir(out);
    auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
    REQUIRE(pa.size() == pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      CHECK(pa[i].first == pb[i].first);
      CHECK(pa[i].second.to_vector<float>() == pb[i].second.to_vector<float>());
    }
    // The file holds Hugging Face's names and layout: identical to the fixture's tensors (unsharded).
    MappedSafetensors saved(out + "/model.safetensors");
    CHECK(saved.metadata().at("format") == "pt");
    CHECK((saved.find("lm_head.weight") != nullptr) == !a.model->config().tie_word_embeddings);
    if (std::string(name) != "llama_gqa") {
      MappedSafetensors orig(fixture(name) + "/model.safetensors");
      REQUIRE(orig.tensors().size() == saved.tensors().size());
      for (const MappedTensorInfo& t : orig.tensors()) {
        const MappedTensorInfo* s = saved.find(t.name);
        REQUIRE_MESSAGE(s, t.name);
        CHECK(s->shape == t.shape);
        CHECK(saved.read(*s, DType::f32).to_vector<float>() == orig.read(t, DType::f32).to_vector<float>());
      }
    }
    CHECK(load_hf_config(out).describe() == a.model->config().describe());
    // Optional: keep a copy for scripts/make_lm_fixtures.py --check (transformers' from_pretrained).
    if (const char* keep = std::getenv("HAMU_LM_SAVE_DIR")) save_hf_dir(std::string(keep) + "/" + name + "_hamu", *a.model);
  }
  // A fresh gpt-small saves and reloads too.
  Rng rng(3);
  auto small = build_lm(lm_config_by_name("gpt-small", 50), rng);
  save_hf_dir(tmp.path + "/small", *small);
  LoadedLm back = load_hf_dir(tmp.path + "/small");
  Tensor ids = Tensor::from_vector<int32_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(back.model->logits(ids).to_vector<float>() == small->logits(ids).to_vector<float>());
  if (const char* keep = std::getenv("HAMU_LM_SAVE_DIR")) save_hf_dir(std::string(keep) + "/gpt2_small_hamu", *small);
}

TEST_CASE("lm directories: bad inputs are one InputError naming the file or tensor") {
  TempDir tmp;
  SUBCASE("truncated shard") {
    const std::string d = tmp.copy_of("llama_gqa");
    const std::string shard = d + "/model-00003-of-00005.safetensors";
    fs::resize_file(shard, fs::file_size(shard) - 7);
    const std::string e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("model-00003-of-00005.safetensors") != std::string::npos, e);
  }
  SUBCASE("index names a missing shard") {
    const std::string d = tmp.copy_of("llama_gqa");
    fs::remove(d + "/model-00002-of-00005.safetensors");
    const std::string e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("model-00002-of-00005.safetensors") != std::string::npos, e);
    CHECK(e.find("does not exist") != std::string::npos);
  }
  SUBCASE("index puts a tensor in the wrong shard") {
    const std::string d = tmp.copy_of("llama_gqa");
    Json idx = load_json(d + "/model.safetensors.index.json");
    const std::string wrong = idx["weight_map"]["lm_head.weight"].as_string() == "model-00001-of-00005.safetensors"
                                  ? "model-00002-of-00005.safetensors" : "model-00001-of-00005.safetensors";
    idx["weight_map"].set("lm_head.weight", wrong);
    save_json(d + "/model.safetensors.index.json", idx);
    const std::string e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("'lm_head.weight'") != std::string::npos, e);
    CHECK(e.find(wrong) != std::string::npos);
  }
  SUBCASE("missing tensor, shape mismatch, unexpected tensor, known buffers") {
    const std::string d = tmp.copy_of("gpt2");
    const std::string w = d + "/model.safetensors";
    Checkpoint ck = load_safetensors(w);
    auto rewrite = [&](const std::function<void(std::vector<NamedTensor>&)>& edit) {
      std::vector<NamedTensor> ts = ck.tensors;
      edit(ts);
      save_safetensors(w, ts, {{"format", "pt"}});
    };
    rewrite([](std::vector<NamedTensor>& ts) {
      ts.erase(std::remove_if(ts.begin(), ts.end(), [](const NamedTensor& t) { return t.name == "transformer.h.1.ln_1.bias"; }),
               ts.end());
    });
    std::string e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("'transformer.h.1.ln_1.bias'") != std::string::npos, e);
    CHECK(e.find("missing") != std::string::npos);
    rewrite([](std::vector<NamedTensor>& ts) {
      for (auto& t : ts)
        if (t.name == "transformer.h.0.attn.c_attn.weight") t.tensor = Tensor::zeros({96, 32});  // not [32, 96]
    });
    e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("'transformer.h.0.attn.c_attn.weight' has shape [96, 32]") != std::string::npos, e);
    rewrite([](std::vector<NamedTensor>& ts) { ts.push_back({"transformer.h.0.attn.extra.weight", Tensor::zeros({2})}); });
    e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("unexpected tensor 'transformer.h.0.attn.extra.weight'") != std::string::npos, e);
    // Old GPT-2 files carry attention-mask buffers and may lack the "transformer." prefix: both accepted.
    rewrite([](std::vector<NamedTensor>& ts) {
      ts.push_back({"h.0.attn.bias", Tensor::zeros({1, 1, 16, 16})});
      ts.push_back({"h.0.attn.masked_bias", Tensor::zeros({1})});
      for (auto& t : ts)
        if (t.name.rfind("transformer.", 0) == 0) t.name = t.name.substr(12);
    });
    LoadedLm ok = load_hf_dir(d);
    LoadedLm ref = load_hf_dir(fixture("gpt2"));
    CHECK(ok.model->named_parameters()[0].second.to_vector<float>() == ref.model->named_parameters()[0].second.to_vector<float>());
  }
  SUBCASE("config: unknown architecture, missing field, unsupported rope type, no weights") {
    const std::string d = tmp.copy_of("llama_tied");
    Json cfg = load_json(d + "/config.json");
    Json bad = cfg;
    bad.set("architectures", Json::array({"FalconForCausalLM"}));
    save_json(d + "/config.json", bad);
    std::string e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("unknown architecture 'FalconForCausalLM'") != std::string::npos, e);
    CHECK(e.find("config.json") != std::string::npos);
    bad = cfg;
    bad.erase("hidden_size");
    save_json(d + "/config.json", bad);
    e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("missing field 'hidden_size'") != std::string::npos, e);
    bad = cfg;
    bad.set("rope_scaling", Json::object({{"rope_type", "longrope"}, {"factor", 4.0}}));
    save_json(d + "/config.json", bad);
    e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("'longrope'") != std::string::npos, e);
    bad = cfg;
    bad.set("num_key_value_heads", 3);
    save_json(d + "/config.json", bad);
    e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("num_key_value_heads 3") != std::string::npos, e);
    save_json(d + "/config.json", cfg);
    fs::remove(d + "/model.safetensors");
    e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("neither model.safetensors") != std::string::npos, e);
    CHECK(error_of([&] { load_hf_dir(tmp.path + "/nowhere"); }).find("config.json") != std::string::npos);
  }
  SUBCASE("mistral sliding window shorter than the sequence is refused") {
    const std::string d = tmp.copy_of("mistral");
    Json cfg = load_json(d + "/config.json");
    cfg.set("sliding_window", 4);
    save_json(d + "/config.json", cfg);
    LoadedLm m = load_hf_dir(d);
    const std::string e = error_of([&] { m.model->logits(Tensor::zeros({1, 5}, DType::i32)); });
    CHECK_MESSAGE(e.find("sliding_window 4") != std::string::npos, e);
    CHECK_NOTHROW(m.model->logits(Tensor::zeros({1, 4}, DType::i32)));
  }
  SUBCASE("saving over a sharded directory is refused; nothing is lost") {
    const std::string d = tmp.copy_of("llama_gqa");
    LoadedLm m = load_hf_dir(d);
    CHECK_THROWS_AS(save_hf_dir(d, *m.model), InputError);
    CHECK_NOTHROW(load_hf_dir(d));
  }
}

namespace {
// Logits of directory `dir` against fixture `name`'s expected logits (transformers on the fixture's config).
void check_logits_as_fixture(const std::string& dir, const std::string& name) {
  LoadedLm lm = load_hf_dir(dir);
  Checkpoint exp = load_safetensors(fixture(name + "_expected.safetensors"));
  NoGradGuard ng;
  check_err(dir + " logits", compare(doubles(lm.model->logits(exp.get("ids"))), doubles(exp.get("logits"))));
}
}  // namespace

TEST_CASE("lm configs: a non-empty rope_scaling wins over rope_parameters, as transformers reads it") {
  // transformers (4 and 5) reads rope_scaling when it is a non-empty object and ignores rope_parameters; the
  // rotary base is rope_scaling's rope_theta, else the top-level one. Both edits below load in transformers
  // 5.24 with llama_linear's logits exactly (checked when this test was written).
  TempDir tmp;
  const std::string d = tmp.copy_of("llama_linear");
  const Json cfg = load_json(d + "/config.json");
  REQUIRE(cfg["rope_parameters"]["rope_type"].as_string() == "linear");
  Json edit = cfg;
  edit.set("rope_scaling", Json::object({{"rope_type", "linear"}, {"factor", 2.5}, {"rope_theta", 100.0}}));
  edit.set("rope_parameters", Json::object({{"rope_type", "default"}, {"rope_theta", 999.0}}));
  save_json(d + "/config.json", edit);
  check_logits_as_fixture(d, "llama_linear");
  edit = cfg;
  edit.set("rope_scaling", Json::object({{"type", "linear"}, {"factor", 2.5}}));
  edit.set("rope_theta", 100.0);
  edit.set("rope_parameters", Json::object({{"rope_type", "yarn"}, {"factor", 3.0}, {"rope_theta", 999.0}}));
  save_json(d + "/config.json", edit);
  check_logits_as_fixture(d, "llama_linear");
  // An empty rope_scaling is no setting: rope_parameters is read.
  edit = cfg;
  edit.set("rope_scaling", Json::object());
  save_json(d + "/config.json", edit);
  check_logits_as_fixture(d, "llama_linear");
}

TEST_CASE("lm directories: a tied checkpoint's stored lm_head.weight must be the embedding") {
  TempDir tmp;
  for (const auto& [name, embed] : {std::pair<std::string, std::string>{"llama_tied", "model.embed_tokens.weight"},
                                    {"gpt2", "transformer.wte.weight"}}) {
    CAPTURE(name);
    const std::string d = tmp.copy_of(name), w = d + "/model.safetensors";
    const Checkpoint ck = load_safetensors(w);
    std::vector<NamedTensor> ts = ck.tensors;
    ts.push_back({"lm_head.weight", ck.get(embed).contiguous()});
    save_safetensors(w, ts, {{"format", "pt"}});
    check_logits_as_fixture(d, name);  // the same matrix twice: accepted
    // A different head: transformers 4 would use the embedding, transformers 5 the stored head. Refused.
    std::vector<float> v = ts.back().tensor.to_vector<float>();
    v[7] += 0.25f;
    ts.back().tensor = Tensor::from_vector(v, ts.back().tensor.shape());
    save_safetensors(w, ts, {{"format", "pt"}});
    const std::string e = error_of([&] { load_hf_dir(d); });
    CHECK_MESSAGE(e.find("'lm_head.weight' differs from '" + embed + "'") != std::string::npos, e);
    CHECK(e.find("tie_word_embeddings") != std::string::npos);
    CHECK(e.find("element 7") != std::string::npos);
  }
}

TEST_CASE("lm half-precision weights: F16 and BF16 converted on load") {
  TempDir tmp;
  const std::string d = tmp.copy_of("llama_tied");
  Checkpoint ck = load_safetensors(d + "/model.safetensors");
  // Write the same weights as BF16 (truncated) by hand: header + raw 16-bit words.
  Json header = Json::object();
  std::string data;
  for (const NamedTensor& nt : ck.tensors) {
    const std::vector<float> v = nt.tensor.to_vector<float>();
    const uint64_t begin = data.size();
    for (float f : v) {
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      const uint16_t h = uint16_t(bits >> 16);
      data.append(reinterpret_cast<const char*>(&h), 2);
    }
    header.set(nt.name, Json::object({{"dtype", "BF16"}, {"shape", Json(nt.tensor.shape())},
                                      {"data_offsets", Json::array({begin, uint64_t(data.size())})}}));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[size_t(i)] = char(uint64_t(text.size()) >> (8 * i));
  write_text(d + "/model.safetensors", file + text + data);
  LoadedLm m = load_hf_dir(d);
  const std::vector<float> got = m.model->named_parameters()[0].second.to_vector<float>();
  const std::vector<float> src = ck.get("model.embed_tokens.weight").to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &src[i], 4);
    bits &= 0xffff0000u;
    float want;
    std::memcpy(&want, &bits, 4);
    REQUIRE(got[i] == want);
  }
}

TEST_CASE("gpt-small: built by name, learns a repeating sequence on the CPU") {
  CHECK_THROWS_AS(lm_config_by_name("gpt-huge", 100), InputError);
  Rng rng(7);
  auto m = build_lm(lm_config_by_name("gpt-small", 40), rng);
  CHECK(m->config().num_layers == 4);
  std::vector<int32_t> seq;
  for (int i = 0; i < 2 * 24; ++i) seq.push_back(int32_t((i * 7) % 40));
  Tensor ids = Tensor::from_vector<int32_t>(seq, {2, 24});
  AdamW opt(m->parameters(), AdamWOptions{3e-3, 0.9, 0.999, 1e-8, 0.0});
  double first = 0, last = 0;
  for (int step = 0; step < 25; ++step) {
    opt.zero_grad();
    Tensor loss = lm_loss(m->logits(ids), ids);
    if (step == 0) first = loss.item();
    last = loss.item();
    loss.backward();
    opt.step();
  }
  MESSAGE("gpt-small loss " << first << " -> " << last);
  CHECK(first == doctest::Approx(std::log(40.0)).epsilon(0.05));
  CHECK(last < 0.5 * first);
}

TEST_CASE("load_any: a Hugging Face directory or a hamu checkpoint") {
  CHECK(is_hf_dir(fixture("gpt2")));
  CHECK_FALSE(is_hf_dir(fixture("gpt2_expected.safetensors")));
  AnyModel a = load_any(fixture("llama_tied"));
  REQUIRE(a.lm);
  CHECK(a.module == a.lm);
  CHECK_FALSE(a.checkpoint);
  CHECK(a.lm->config().tie_word_embeddings);
  // Anything else goes to the checkpoint reader, whose errors name the file.
  const std::string e = error_of([] { load_any("/nonexistent/model.safetensors"); });
  CHECK_MESSAGE(e.find("/nonexistent/model.safetensors") != std::string::npos, e);
}
