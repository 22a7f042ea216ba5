// tests/fuzz/fuzz_hf_config.cpp: bytes -> a Hugging Face config.json (gpt2, llama, mistral families) as
// `--model DIR` reads it. What it accepts must be a model that can be sized without overflow: positive
// dimensions, heads dividing the hidden size as the family requires, key/value heads dividing the heads,
// and a to_hf_json() that parses back to the same configuration.
#include <string_view>

#include "engine/json.h"
#include "models/lm/lm.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(hf_config) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const hamu::Json j = hamu::Json::parse(text);
  const hamu::models::LmConfig c = hamu::models::LmConfig::from_hf_json(j, "fuzz/config.json");
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 ||
      c.head_dim <= 0 || c.intermediate_size <= 0 || c.max_positions <= 0)
    std::abort();
  if (c.num_heads % c.num_kv_heads != 0) std::abort();
  (void)c.describe();
  // What we would write for this model reads back as the same sizes.
  const hamu::models::LmConfig back = hamu::models::LmConfig::from_hf_json(c.to_hf_json(), "fuzz/round-trip.json");
  if (back.vocab_size != c.vocab_size || back.hidden_size != c.hidden_size || back.num_layers != c.num_layers ||
      back.num_heads != c.num_heads || back.num_kv_heads != c.num_kv_heads || back.head_dim != c.head_dim ||
      back.intermediate_size != c.intermediate_size || back.max_positions != c.max_positions)
    std::abort();
}
