// models/lm/generation_config.cpp: what transformers' generate() takes from a model directory for greedy
// decoding: the end-of-sequence ids of generation_config.json (or, without that file, of config.json), and the
// fields that would change greedy ids but that hamu does not apply.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/json.h"
#include "models/lm/generate.h"

namespace hamu::models {
namespace {

namespace fs = std::filesystem;

// More ids than this is no real model's list (Llama-3 lists 3): a hostile file, refused before any work.
constexpr size_t kMaxEosIds = 1024;

[[noreturn]] void field_error(const std::string& file, const std::string& field, const std::string& why) {
  throw InputError(file + ": field '" + field + "' " + why);
}

// eos_token_id as transformers reads it: absent or null (no id), an integer, or a non-empty list of integers.
// Every id must be a token of the model (transformers warns about a negative one and then never stops on it; an
// empty list makes its generate() fail; a string too).
std::vector<int32_t> read_eos_ids(const Json& j, const std::string& file, int64_t vocab_size) {
  const char* key = "eos_token_id";
  const Json* v = j.find(key);
  if (!v || v->is_null()) return {};
  std::vector<const Json*> items;
  if (v->is_array()) {
    if (v->size() == 0) field_error(file, key, "is an empty list (give the end-of-sequence ids, or null for none)");
    if (v->size() > kMaxEosIds)
      field_error(file, key, "lists " + std::to_string(v->size()) + " ids, more than " + std::to_string(kMaxEosIds));
    for (size_t i = 0; i < v->size(); ++i) items.push_back(&v->at(i));
  } else {
    items.push_back(v);
  }
  std::vector<int32_t> ids;
  for (const Json* item : items) {
    if (!item->is_integer())
      field_error(file, key, "holds " + item->dump().substr(0, 80) + ", not a token id (an integer)");
    const int64_t id = item->as_int();
    if (id < 0 || id >= vocab_size)
      field_error(file, key, "holds token id " + std::to_string(id) + ", outside the model's vocabulary of " +
                                 std::to_string(vocab_size));
    if (std::find(ids.begin(), ids.end(), int32_t(id)) == ids.end()) ids.push_back(int32_t(id));
  }
  return ids;
}

// Set fields of generation_config.json that make transformers' generate(do_sample=False) pick other tokens than
// the plain argmax hamu takes (its logits processors and beam search), named with their values.
std::vector<std::string> unapplied_fields(const Json& j) {
  std::vector<std::string> out;
  auto number_not = [&](const char* key, double neutral) {
    const Json* v = j.find(key);
    if (v && v->is_number() && std::isfinite(v->as_number()) && v->as_number() != neutral)
      out.push_back(std::string(key) + "=" + v->dump());
  };
  number_not("num_beams", 1);
  number_not("repetition_penalty", 1);
  number_not("no_repeat_ngram_size", 0);
  number_not("min_length", 0);
  number_not("min_new_tokens", 0);
  number_not("guidance_scale", 1);
  for (const char* key : {"bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id",
                          "forced_eos_token_id", "sequence_bias", "exponential_decay_length_penalty",
                          "watermarking_config"}) {
    const Json* v = j.find(key);
    if (v && !v->is_null() && !((v->is_array() || v->is_object()) && v->size() == 0))
      out.push_back(std::string(key) + "=" + v->dump().substr(0, 60));
  }
  return out;
}

}  // namespace

GenerationDefaults load_generation_defaults(const std::string& dir, int64_t vocab_size) {
  GenerationDefaults d;
  const std::string gen_path = (fs::path(dir) / "generation_config.json").string();
  std::error_code ec;
  if (fs::exists(gen_path, ec)) {
    // transformers' from_pretrained takes the generation config from this file alone: config.json's ids are not
    // consulted even when the file names none.
    const Json j = load_json(gen_path, size_t(1) << 20);
    if (!j.is_object()) throw InputError(gen_path + ": not a JSON object");
    d.eos_ids = read_eos_ids(j, gen_path, vocab_size);
    d.eos_from = gen_path;
    d.unapplied = unapplied_fields(j);
    return d;
  }
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(cfg_path, ec)) return d;  // a model made here: no ids
  const Json j = load_json(cfg_path);
  if (!j.is_object()) throw InputError(cfg_path + ": not a JSON object");
  d.eos_ids = read_eos_ids(j, cfg_path, vocab_size);
  d.eos_from = cfg_path;
  return d;
}

}  // namespace hamu::models
