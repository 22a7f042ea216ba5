// tests/test_generate.cpp: the KV cache against whole-sequence attention, greedy generation with the cache
// against full recomputation and against transformers' generate(do_sample=False), and completion-only QA
// scoring against transformers (tests/fixtures/lm_text, made by scripts/make_generate_fixtures.py); where greedy
// generation stops: every end-of-sequence id of a model directory's generation_config.json (else config.json),
// as transformers' generate() reads them (tests/fixtures/lm_stop, scripts/make_generate_stop_fixtures.py), and
// the refusal of hostile generation configs.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "engine/json.h"
#include "engine/kv_cache.h"
#include "engine/ops.h"
#include "loaders/qa.h"
#include "loaders/template.h"
#include "loaders/tokenizer.h"
#include "models/lm/generate.h"
#include "tests/files.h"
#include "tests/gradcheck.h"

using namespace hamu;
using namespace hamu::models;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(__FILE__).parent_path() / "fixtures";
std::string text_fixture(const std::string& name) { return (kFixtures / "lm_text" / name).string(); }

Tensor random_tensor(const Shape& s, Rng& rng, DType dt = DType::f64) {
  Tensor t = Tensor::empty(s, dt);
  rng.fill_normal(t, 0.0, 1.0);
  return t;
}

std::vector<double> as_doubles(const Tensor& t) { return t.to(DType::f64).to_vector<double>(); }

std::vector<std::vector<int32_t>> random_prompts(Rng& rng, int64_t vocab, std::vector<int64_t> lengths) {
  std::vector<std::vector<int32_t>> out;
  for (int64_t n : lengths) {
    std::vector<int32_t> p;
    for (int64_t i = 0; i < n; ++i) p.push_back(int32_t(rng.below(uint64_t(vocab))));
    out.push_back(p);
  }
  return out;
}

std::vector<std::vector<int32_t>> id_rows(const Json& j) {
  std::vector<std::vector<int32_t>> out;
  for (const Json& row : j.as_array()) {
    out.emplace_back();
    for (const Json& v : row.as_array()) out.back().push_back(int32_t(v.as_int()));
  }
  return out;
}

}  // namespace

TEST_CASE("KvCache: prefill, single tokens and a chunk equal whole-sequence causal attention") {
  Rng rng(11);
  const int64_t b = 2, h = 4, hkv = 2, t = 9, dh = 5;
  const Tensor q = random_tensor({b, h, t, dh}, rng), k = random_tensor({b, hkv, t, dh}, rng),
               v = random_tensor({b, hkv, t, dh}, rng);
  std::vector<int32_t> m(size_t(b * t), 1);
  m[size_t(t)] = m[size_t(t + 1)] = 0;  // row 1 left-padded by two
  const Tensor mask = Tensor::from_vector<int32_t>(m, {b, t});
  NoGradGuard no_grad;
  const Tensor full = gqa_attention(q, k, v, mask);
  auto cols = [&](const Tensor& x, int64_t from, int64_t n) { return x.narrow(2, from, n).contiguous(); };
  KvCache cache(t);
  std::vector<Tensor> parts;
  // Prefill 3 tokens, then 1, 1, a chunk of 3 (causal inside the chunk), then the last 1.
  for (auto [from, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 1}, {4, 1}, {5, 3}, {8, 1}}) {
    const Tensor y = cache.attend(0, cols(q, from, n), cols(k, from, n), cols(v, from, n), mask.narrow(1, 0, from + n).contiguous());
    CHECK(cache.length() == from + n);
    parts.push_back(y);
  }
  const Tensor cached = concat(parts, 2);
  CHECK(testing::rel_error(as_doubles(cached), as_doubles(full)) < 1e-12);

  SUBCASE("overflowing the capacity and a gradient-carrying input are refused") {
    CHECK_THROWS_AS(cache.attend(0, cols(q, 0, 1), cols(k, 0, 1), cols(v, 0, 1), Tensor::full({b, t + 1}, 1, DType::i32)),
                    InputError);
  }
}

TEST_CASE("KvCache: refuses a gradient, a wrong mask and mismatched heads") {
  Rng rng(12);
  Tensor q = random_tensor({1, 2, 2, 3}, rng), k = random_tensor({1, 2, 2, 3}, rng), v = random_tensor({1, 2, 2, 3}, rng);
  const Tensor mask = Tensor::full({1, 2}, 1, DType::i32);
  KvCache cache(4);
  q.requires_grad_();
  CHECK_THROWS_AS(cache.attend(0, q, k, v, mask), Error);
  NoGradGuard no_grad;
  CHECK_THROWS_AS(cache.attend(0, q, k, v, Tensor::full({1, 3}, 1, DType::i32)), InputError);
  CHECK_THROWS_AS(cache.attend(0, random_tensor({1, 3, 2, 3}, rng), k, v, mask), InputError);
  CHECK_THROWS_AS(cache.attend(1, q, k, v, mask), InputError);  // layer 1 before layer 0
  CHECK_THROWS_AS(KvCache(0), InputError);
}

TEST_CASE("generate: the KV cache gives the ids of full recomputation") {
  Rng rng(5);
  std::vector<std::pair<std::string, std::shared_ptr<CausalLM>>> models_under_test;
  Rng init(3);
  LmConfig small = lm_config_by_name("gpt-small", 97);
  models_under_test.push_back({"gpt-small", build_lm(small, init)});
  for (const char* name : {"llama_tied", "mistral", "llama_gqa"})
    models_under_test.push_back({name, load_hf_dir((kFixtures / "lm" / name).string()).model});
  for (auto& [name, model] : models_under_test) {
    CAPTURE(name);
    const auto prompts = random_prompts(rng, model->config().vocab_size, {5, 1, 8});
    GenerateOptions opt;
    opt.max_new_tokens = 9;
    const GenerateResult cached = generate_greedy(*model, prompts, opt);
    opt.use_cache = false;
    const GenerateResult recomputed = generate_greedy(*model, prompts, opt);
    CHECK(cached.tokens == recomputed.tokens);
    CHECK(cached.steps == 8);
    for (const auto& t : cached.tokens) CHECK(t.size() == 9);
    // Alone, each prompt continues exactly as it did inside the left-padded batch.
    opt.use_cache = true;
    for (size_t i = 0; i < prompts.size(); ++i) CHECK(generate_greedy(*model, {prompts[i]}, opt).tokens[0] == cached.tokens[i]);
  }
}

TEST_CASE("generate: ids equal transformers' generate(do_sample=False), alone and left-padded") {
  const Json expected = load_json(text_fixture("expected.json"));
  int cases = 0, stopped_at_eos = 0, ran_to_limit = 0;
  std::map<std::string, std::shared_ptr<CausalLM>> loaded;
  for (const Json& c : expected.at("generate").as_array()) {
    const std::string name = c.at("model").as_string();
    if (!loaded.count(name)) loaded[name] = load_hf_dir(text_fixture(name)).model;
    CAPTURE(name);
    CAPTURE(c.at("case").as_string());
    GenerateOptions opt;
    opt.max_new_tokens = c.at("max_new_tokens").as_int();
    opt.stop_ids = {int32_t(c.at("eos").as_int())};
    const auto want = id_rows(c.at("tokens"));
    for (bool use_cache : {true, false}) {
      opt.use_cache = use_cache;
      CHECK(generate_greedy(*loaded[name], id_rows(c.at("prompts")), opt).tokens == want);
    }
    for (const auto& w : want) (opt.is_stop(w.back()) ? stopped_at_eos : ran_to_limit) += 1;
    ++cases;
  }
  CHECK(cases == 10);
  CHECK(stopped_at_eos > 0);  // both ways of ending are covered
  CHECK(ran_to_limit > 0);
}

TEST_CASE("generate: bad prompts are refused") {
  const auto model = load_hf_dir(text_fixture("gpt2")).model;
  GenerateOptions opt;
  opt.max_new_tokens = 4;
  CHECK_THROWS_AS(generate_greedy(*model, {{1, 2}, {}}, opt), InputError);
  CHECK_THROWS_AS(generate_greedy(*model, {{1, 705}}, opt), InputError);
  CHECK_THROWS_AS(generate_greedy(*model, {{-1}}, opt), InputError);
  CHECK_THROWS_AS(generate_greedy(*model, {std::vector<int32_t>(49, 3)}, opt), InputError);  // n_positions 48
}

TEST_CASE("generate: each row stops at the model's context, alone or beside shorter rows") {
  const auto model = load_hf_dir(text_fixture("gpt2")).model;  // n_positions 48
  Rng rng(8);
  const auto prompts = random_prompts(rng, 700, {40, 3, 48});
  GenerateOptions opt;
  opt.max_new_tokens = 20;
  const GenerateResult r = generate_greedy(*model, prompts, opt);
  const size_t room[] = {9, 20, 1};  // 48 - n + 1, at most 20
  for (size_t i = 0; i < prompts.size(); ++i) {
    CAPTURE(i);
    CHECK(r.tokens[i].size() == room[i]);
    CHECK(r.stops[i] == (room[i] == 20 ? GenerateStop::length : GenerateStop::context));
    // Padding and the other rows' limits change nothing.
    CHECK(generate_greedy(*model, {prompts[i]}, opt).tokens[0] == r.tokens[i]);
  }
  GenerateOptions none = opt;
  none.max_new_tokens = 0;
  CHECK(generate_greedy(*model, {}, opt).tokens.empty());
  CHECK(generate_greedy(*model, prompts, none).tokens[0].empty());
}

TEST_CASE("score: completion-only loss, accuracy and tokens of a QA file match transformers") {
  const Json expected = load_json(text_fixture("expected.json"));
  const QaDataset qa = read_qa_file((kFixtures / "qa" / "tiny.jsonl").string());
  REQUIRE(qa.pairs.size() == 10);
  int cases = 0;
  for (const Json& c : expected.at("eval").as_array()) {
    const std::string name = c.at("model").as_string(), tname = c.at("template").as_string();
    CAPTURE(name);
    CAPTURE(tname);
    const auto model = load_hf_dir(text_fixture(name)).model;
    const Tokenizer tok = Tokenizer::load(text_fixture(name));
    QaTemplateOptions topt;
    topt.max_length = lm_context_length(model->config());
    const QaBatchTokens toks = tokenize_qa_pairs(tok, parse_template(tname), qa_text_pairs(qa.pairs), topt);
    CHECK(toks.truncated == c.at("truncated").as_int());
    CHECK((toks.truncated > 0) == !toks.warning.empty());
    std::vector<std::vector<int32_t>> ids, labels;
    for (const QaTokens& p : toks.pairs) {
      ids.push_back(p.ids);
      labels.push_back(p.labels);
    }
    for (int64_t batch : {1, 4, 16}) {  // padding must not change a thing
      const ScoreResult r = score_sequences(*model, ids, labels, batch);
      CHECK(r.total.tokens == c.at("tokens").as_int());
      CHECK(std::abs(r.total.loss() - c.at("loss").as_number()) <= 1e-4 * c.at("loss").as_number());
      CHECK(double(r.total.correct) == doctest::Approx(c.at("acc").as_number() * double(r.total.tokens)).epsilon(1e-9));
      CHECK(r.sequences.size() == ids.size());
      int64_t tokens = 0;
      for (const TokenScore& s : r.sequences) tokens += s.tokens;
      CHECK(tokens == r.total.tokens);
    }
    ++cases;
  }
  CHECK(cases == 4);
}

TEST_CASE("score: mismatched labels, bad ids and overlong sequences are refused") {
  const auto model = load_hf_dir(text_fixture("gpt2")).model;
  CHECK_THROWS_AS(score_sequences(*model, {{1, 2, 3}}, {{-100, 2}}, 2), InputError);
  CHECK_THROWS_AS(score_sequences(*model, {{1, 2}}, {{-100, 2}, {1}}, 2), InputError);
  CHECK_THROWS_AS(score_sequences(*model, {{1, 999}}, {{-100, 2}}, 2), InputError);
  CHECK_THROWS_AS(score_sequences(*model, {{1, 2}}, {{-100, 999}}, 2), InputError);
  CHECK_THROWS_AS(score_sequences(*model, {std::vector<int32_t>(49, 1)}, {std::vector<int32_t>(49, 1)}, 2), InputError);
  CHECK_THROWS_AS(score_sequences(*model, {{1, 2}}, {{-100, 2}}, 0), InputError);
  // Nothing scored: loss and accuracy 0, no division by zero.
  const ScoreResult r = score_sequences(*model, {{1, 2}}, {{-100, -100}}, 1);
  CHECK(r.total.tokens == 0);
  CHECK(r.total.loss() == 0.0);
}

// ---- where generation stops

namespace {

const fs::path kStop = kFixtures / "lm_stop";
const std::string kModel = (kStop / "llama").string();

std::vector<int32_t> ids_of(const Json& j) { return id_rows(Json::array({j}))[0]; }

// The fixture's config.json and weights in a scratch folder, with `generation_config` as its
// generation_config.json ("" = none).
void copy_model(const testing::TempDir& dir, const std::string& generation_config) {
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(kStop / "llama" / f, dir / f);
  if (!generation_config.empty()) std::ofstream(dir / "generation_config.json") << generation_config;
}

// Greedy ids of the fixture's prompts stopping at `stop`, left-padded in one batch and one by one, with and
// without the KV cache: all four must agree; returns the batch's.
std::vector<std::vector<int32_t>> greedy(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                         const std::vector<int32_t>& stop, int64_t max_new) {
  GenerateOptions opt;
  opt.max_new_tokens = max_new;
  opt.stop_ids = stop;
  const GenerateResult batch = generate_greedy(model, prompts, opt);
  for (size_t i = 0; i < prompts.size(); ++i) {
    CAPTURE(i);
    const bool stopped = opt.is_stop(batch.tokens[i].back());
    CHECK(batch.stops[i] == (stopped ? GenerateStop::end : GenerateStop::length));
    for (bool cache : {true, false}) {
      opt.use_cache = cache;
      CHECK(generate_greedy(model, {prompts[i]}, opt).tokens[0] == batch.tokens[i]);
    }
    opt.use_cache = true;
  }
  return batch.tokens;
}

}  // namespace

TEST_CASE("generate stop: generation_config.json's eos list stops rows where transformers' generate() does") {
  const Json want = load_json((kStop / "expected.json").string());
  const auto model = load_hf_dir(kModel).model;
  const auto prompts = id_rows(want.at("prompts"));
  const int64_t max_new = want.at("max_new_tokens").as_int();
  const GenerationDefaults d = load_generation_defaults(kModel, model->config().vocab_size);
  CHECK(d.eos_ids == ids_of(want.at("generation_config").at("eos_token_id")));  // [2, 26, 298], not config.json's
  CHECK(d.eos_ids.size() == 3);
  CHECK(fs::path(d.eos_from).filename() == "generation_config.json");
  CHECK(d.unapplied.empty());  // pad_token_id is no concern of greedy ids
  const auto got = greedy(*model, prompts, d.eos_ids, max_new);
  CHECK(got == id_rows(want.at("generation_config").at("tokens")));
  // Rows end early at the list's later ids (26, 298): the template's end (</s> = 2) alone, hamu's only stop
  // before, runs every row to the limit, as transformers does without the list.
  int early = 0;
  for (const auto& row : got) early += int64_t(row.size()) < max_new && row.back() != 2;
  CHECK(early == 2);
  CHECK(greedy(*model, prompts, {2}, max_new) == id_rows(want.at("unstopped")));
}

TEST_CASE("generate stop: without generation_config.json, config.json's eos list applies; with one, only its") {
  const Json want = load_json((kStop / "expected.json").string());
  const auto prompts = id_rows(want.at("prompts"));
  const int64_t max_new = want.at("max_new_tokens").as_int();
  {
    testing::TempDir dir;
    copy_model(dir, "");
    const auto model = load_hf_dir(dir.path).model;
    const GenerationDefaults d = load_generation_defaults(dir.path, model->config().vocab_size);
    CHECK(d.eos_ids == ids_of(want.at("config_only").at("eos_token_id")));  // [2, 777, 148]
    CHECK(fs::path(d.eos_from).filename() == "config.json");
    CHECK(greedy(*model, prompts, d.eos_ids, max_new) == id_rows(want.at("config_only").at("tokens")));
  }
  // A generation_config.json that names no eos id (absent or null): transformers' from_pretrained takes the
  // generation config from that file alone, so nothing stops a row, config.json's list notwithstanding.
  for (const char* text : {"{}", R"({"eos_token_id": null, "max_length": 20})"}) {
    CAPTURE(text);
    testing::TempDir dir;
    copy_model(dir, text);
    CHECK(load_generation_defaults(dir.path, 800).eos_ids.empty());
  }
  // One integer, duplicates dropped.
  testing::TempDir dir;
  copy_model(dir, R"({"eos_token_id": 5})");
  CHECK(load_generation_defaults(dir.path, 800).eos_ids == std::vector<int32_t>{5});
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [7, 2, 7]})";
  CHECK(load_generation_defaults(dir.path, 800).eos_ids == std::vector<int32_t>{7, 2});
}

TEST_CASE("generate stop: fields that change transformers' greedy ids are reported, sampling and lengths are not") {
  testing::TempDir dir;
  copy_model(dir, R"({"eos_token_id": [2], "num_beams": 4, "repetition_penalty": 1.2, "no_repeat_ngram_size": 0,
      "min_new_tokens": 3, "suppress_tokens": [5], "begin_suppress_tokens": [], "forced_eos_token_id": null,
      "do_sample": true, "temperature": 0.6, "top_p": 0.9, "max_length": 20, "max_new_tokens": 3, "pad_token_id": 0})");
  const GenerationDefaults d = load_generation_defaults(dir.path, 800);
  CHECK(d.unapplied == std::vector<std::string>{"num_beams=4", "repetition_penalty=1.2", "min_new_tokens=3", "suppress_tokens=[5]"});
}

TEST_CASE("generate stop: hostile generation configs are one InputError naming the file and the field") {
  const std::string big = [] {
    std::string s = "{\"eos_token_id\": [";
    for (int i = 0; i < 1025; ++i) s += (i ? ",1" : "1");
    return s + "]}";
  }();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"eos_token_id": "2"})", "not a token id"},
      {R"({"eos_token_id": 2.5})", "not a token id"},
      {R"({"eos_token_id": true})", "not a token id"},
      {R"({"eos_token_id": [2, "x"]})", "not a token id"},
      {R"({"eos_token_id": [[2]]})", "not a token id"},
      {R"({"eos_token_id": {"id": 2}})", "not a token id"},
      {R"({"eos_token_id": []})", "empty list"},
      {R"({"eos_token_id": -1})", "outside the model's vocabulary of 800"},
      {R"({"eos_token_id": [2, 800]})", "token id 800, outside"},
      {R"({"eos_token_id": 1e30})", "eos_token_id"},
      {big, "lists 1025 ids, more than 1024"},
      {"[2, 3]", "not a JSON object"},
      {"{\"eos_token_id\": [2,", "generation_config.json"},
  };
  for (const auto& [text, why] : bad) {
    CAPTURE(text.substr(0, 60));
    testing::TempDir dir;
    copy_model(dir, text);
    try {
      load_generation_defaults(dir.path, 800);
      FAIL("accepted");
    } catch (const InputError& e) {
      const std::string msg = e.what();
      CHECK(msg.find(dir / "generation_config.json") != std::string::npos);
      CHECK(msg.find(why) != std::string::npos);
    }
  }
  // config.json's list is checked the same way when it is the one read.
  testing::TempDir dir;
  copy_model(dir, "");
  Json cfg = load_json(dir / "config.json");
  cfg.set("eos_token_id", Json::array({Json(int64_t(2)), Json(int64_t(900))}));
  std::ofstream(dir / "config.json") << cfg.dump(2);
  CHECK_THROWS_WITH_AS(load_generation_defaults(dir.path, 800),
                       doctest::Contains("config.json: field 'eos_token_id' holds token id 900, outside the model's vocabulary"),
                       InputError);
}
