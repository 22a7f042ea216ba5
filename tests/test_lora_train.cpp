// tests/test_lora_train.cpp: LoRA fine-tuning and unlearning of the trained text fixtures
// (tests/fixtures/lm_text/{gpt2,llama} on tests/fixtures/qa/tiny.jsonl), as `hamu train/unlearn --lora` run
// them: only the adapters move, the base weights (in memory and the memory-mapped file) stay bit for bit,
// the loss drops, the PEFT directory holds adapter tensors only and loads back to the same losses.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "engine/capture.h"
#include "engine/ops.h"
#include "engine/safetensors_mapped.h"
#include "loaders/qa.h"
#include "loaders/template.h"
#include "loaders/tokenizer.h"
#include "models/lm/generate.h"
#include "models/lm/lm.h"
#include "models/lm/lora.h"
#include "tests/files.h"
#include "tests/gradcheck.h"
#include "train/text_train.h"
#include "unlearn/method_registry.h"
#include "unlearn/runner.h"
#include "unlearn/text_task.h"

using namespace hamu;
namespace fs = std::filesystem;

namespace {

const std::string kRoot = fs::path(__FILE__).parent_path().string();

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every weight by name, as host doubles.
std::map<std::string, std::vector<double>> weights_of(models::CausalLM& m) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& [name, w] : m.named_weights()) out[name] = testing::as_doubles(w.detach().contiguous());
  return out;
}

bool is_adapter_name(const std::string& name) {
  return name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
}

struct Fixture {
  std::string dir;
  Tokenizer tok;
  std::vector<QaTokens> seqs;
  int32_t end_id = 0;
};

Fixture text_fixture(const std::string& name) {
  Fixture f{kRoot + "/fixtures/lm_text/" + name, Tokenizer::load(kRoot + "/fixtures/lm_text/" + name + "/tokenizer.json"), {}, 0};
  const QaDataset data = read_qa_file(kRoot + "/fixtures/qa/tiny.jsonl");
  QaTemplateOptions o;
  o.max_length = models::lm_context_length(models::load_hf_config(f.dir));
  f.seqs = tokenize_qa_pairs(f.tok, PromptTemplate::plain, qa_text_pairs(data.pairs), o).pairs;
  f.end_id = template_end_id(PromptTemplate::plain, f.tok);
  return f;
}

double mean_loss(models::CausalLM& m, const std::vector<QaTokens>& seqs) {
  std::vector<std::vector<int32_t>> ids, labels;
  for (const QaTokens& s : seqs) {
    ids.push_back(s.ids);
    labels.push_back(s.labels);
  }
  return models::score_sequences(m, ids, labels, 16).total.loss();
}

models::LoraSpec spec_for(const std::string& name) {
  models::LoraSpec spec;
  spec.r = 4;
  spec.alpha = 8;
  if (name == "gpt2") spec.targets = {"q", "k", "v", "o", "up", "down"};
  return spec;
}

// The adapter model after a short LoRA fine-tune (the base loaded from the fixture).
std::shared_ptr<models::CausalLM> lora_trained(const Fixture& f, const std::string& name, std::vector<TextEpochSummary>* log) {
  auto lm = models::load_hf_dir(f.dir).model;
  models::add_lora(*lm, spec_for(name), 7);
  TextTrainOptions to;
  to.epochs = 12;
  to.batch = 5;
  to.lr = 2e-2;
  to.warmup_steps = 0;
  to.pad_id = f.end_id;
  to.progress = false;
  *log = train_text_model(*lm, f.seqs, to);
  return lm;
}

}  // namespace

TEST_CASE("lora training on the text fixtures: adapters only, base and file untouched, loss drops, PEFT round trip") {
  for (const std::string name : {"gpt2", "llama"}) {
    CAPTURE(name);
    const Fixture f = text_fixture(name);
    const std::string weights_file = f.dir + "/model.safetensors";
    const std::string file_before = file_bytes(weights_file);
    auto base = models::load_hf_dir(f.dir).model;
    const auto base_weights = weights_of(*base);
    const double base_loss = mean_loss(*base, f.seqs);

    std::vector<TextEpochSummary> log;
    auto lm = lora_trained(f, name, &log);
    CHECK(log.back().train_loss < 0.7 * log.front().train_loss);
    const double tuned_loss = mean_loss(*lm, f.seqs);
    CHECK(tuned_loss < 0.7 * base_loss);
    // Trainable = adapters only; every base weight bit for bit as loaded, and the file unchanged.
    for (const Tensor& p : lm->parameters()) CHECK_MESSAGE(is_adapter_name(p.name()), p.name());
    int64_t moved_b = 0;
    for (const auto& [wname, w] : weights_of(*lm)) {
      if (is_adapter_name(wname)) {
        if (wname.find(".lora_B.") != std::string::npos)
          for (double v : w) moved_b += v != 0;
        continue;
      }
      REQUIRE_MESSAGE(base_weights.count(wname), wname);
      CHECK_MESSAGE(w == base_weights.at(wname), wname);
    }
    CHECK(moved_b > 0);
    CHECK(file_bytes(weights_file) == file_before);

    // PEFT layout: adapter tensors only, named as peft names them; loaded back, the same losses.
    testing::TempDir tmp;
    models::save_lora(tmp.path, *lm, f.dir);
    MappedSafetensors saved(tmp.path + "/adapter_model.safetensors");
    const auto layers = models::lora_layers(*lm);
    CHECK(saved.tensors().size() == 2 * layers.size());
    for (const MappedTensorInfo& t : saved.tensors()) {
      CHECK_MESSAGE(t.name.rfind("base_model.model.", 0) == 0, t.name);
      const bool a = t.name.size() > 14 && t.name.compare(t.name.size() - 14, 14, ".lora_A.weight") == 0;
      const bool b = t.name.size() > 14 && t.name.compare(t.name.size() - 14, 14, ".lora_B.weight") == 0;
      CHECK_MESSAGE((a || b), t.name);
    }
    auto reloaded = models::load_hf_dir(f.dir).model;
    models::load_lora(tmp.path, *reloaded);
    CHECK(mean_loss(*reloaded, f.seqs) == tuned_loss);
  }
}

TEST_CASE("lora unlearning on the text fixtures: hamu-q and ga update the adapters only and raise the forget loss") {
  for (const std::string name : {"gpt2", "llama"}) {
    CAPTURE(name);
    const Fixture f = text_fixture(name);
    std::vector<TextEpochSummary> log;
    auto tuned = lora_trained(f, name, &log);
    testing::TempDir tmp;
    models::save_lora(tmp.path, *tuned, f.dir);
    const std::vector<QaTokens> forget(f.seqs.begin(), f.seqs.begin() + 3), retain(f.seqs.begin() + 3, f.seqs.end());
    for (const char* method : {"hamu-q", "ga"}) {
      CAPTURE(method);
      auto work = models::load_hf_dir(f.dir).model;
      models::load_lora(tmp.path, *work);
      const auto before = weights_of(*work);
      const double forget_before = mean_loss(*work, forget);
      UnlearnOptions opt;
      opt.method = &parse_method(method);
      opt.steps = 4;
      opt.batch = 4;
      opt.forget_batch = 3;
      opt.params.lr = 0.05;
      opt.ratio = 0.01;
      opt.progress = false;
      std::unique_ptr<UnlearnTask> task = make_text_task(retain, forget, f.end_id, opt);
      const UnlearnResult res = run_unlearning(*work, nullptr, *task, opt, {});
      CAPTURE(stop_reason_name(res.stop_reason));
      REQUIRE(res.steps_done > 0);
      CHECK(res.paired_fallback.empty());
      int64_t adapter_changed = 0;
      for (const auto& [wname, w] : weights_of(*work)) {
        if (is_adapter_name(wname)) {
          adapter_changed += w != before.at(wname);
          continue;
        }
        CHECK_MESSAGE(w == before.at(wname), wname);
      }
      CHECK(adapter_changed > 0);
      CHECK(mean_loss(*work, forget) > forget_before);
    }
  }
}

TEST_CASE("lora capture: a scope given the trainable parameters records the adapters' A and B linears only") {
  const Fixture f = text_fixture("llama");
  auto lm = models::load_hf_dir(f.dir).model;
  models::add_lora(*lm, spec_for("llama"), 3);
  lm->eval();
  const std::vector<Tensor> params = lm->parameters();
  const Tensor ids = Tensor::from_vector<int32_t>(std::vector<int32_t>(f.seqs[0].ids.begin(), f.seqs[0].ids.begin() + 8), {1, 8});
  auto records = [&](bool filtered) {
    std::unique_ptr<CaptureScope> scope = filtered ? std::make_unique<CaptureScope>(params) : std::make_unique<CaptureScope>();
    sum(models::lm_sequence_losses(lm->logits(ids), ids)).backward();
    lm->zero_grad();
    return scope->records();
  };
  const auto all = records(false), adapters = records(true);
  // Unfiltered: every Linear (frozen bases included), the frozen embedding and norms too.
  CHECK(all.size() > adapters.size());
  REQUIRE(adapters.size() == params.size());  // one record per A and per B
  for (const auto& rec : adapters) {
    CHECK_MESSAGE(is_adapter_name(rec->name), rec->name);
    CHECK(rec->output_grad.defined());
  }
  MESSAGE("llama fixture with 14 adapters: " << all.size() << " records unfiltered, " << adapters.size() << " with the parameters");
}
