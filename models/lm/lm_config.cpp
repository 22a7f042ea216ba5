// models/lm/lm_config.cpp: language-model configs: Hugging Face config.json parsing and writing, our own
// named configs (gpt-small), validation, and the causal-LM loss helpers.
#include <algorithm>
#include <cmath>

#include "engine/ops.h"
#include "models/lm/lm.h"

namespace hamu::models {
namespace {

[[noreturn]] void config_error(const std::string& where, const std::string& what) { throw InputError(where + ": " + what); }

int64_t required_int(const Json& j, const char* key, const std::string& where) {
  const Json* v = j.find(key);
  if (!v || v->is_null()) config_error(where, "missing field '" + std::string(key) + "'");
  if (!v->is_integer() || v->as_int() < 1 || v->as_int() > (int64_t(1) << 31))
    config_error(where, "field '" + std::string(key) + "' = " + v->dump() + " is not a positive integer");
  return v->as_int();
}

int64_t optional_int(const Json& j, const char* key, int64_t fallback, const std::string& where) {
  const Json* v = j.find(key);
  if (!v || v->is_null()) return fallback;
  return required_int(j, key, where);
}

double optional_number(const Json& j, const char* key, double fallback, const std::string& where) {
  const Json* v = j.find(key);
  if (!v || v->is_null()) return fallback;
  if (!v->is_number() || !std::isfinite(v->as_number()) || v->as_number() <= 0)
    config_error(where, "field '" + std::string(key) + "' = " + v->dump() + " is not a positive number");
  return v->as_number();
}

bool optional_bool(const Json& j, const char* key, bool fallback, const std::string& where) {
  const Json* v = j.find(key);
  if (!v || v->is_null()) return fallback;
  if (!v->is_bool()) config_error(where, "field '" + std::string(key) + "' = " + v->dump() + " is not true or false");
  return v->as_bool();
}

std::string optional_string(const Json& j, const char* key, const std::string& fallback, const std::string& where) {
  const Json* v = j.find(key);
  if (!v || v->is_null()) return fallback;
  if (!v->is_string()) config_error(where, "field '" + std::string(key) + "' = " + v->dump() + " is not a string");
  return v->as_string();
}

// bos/eos ids: an integer, or a list whose first entry is taken (newer Llama configs list several eos ids).
int64_t token_id(const Json& j, const char* key) {
  const Json* v = j.find(key);
  if (!v) return -1;
  if (v->is_array() && v->size() > 0) v = &v->at(size_t(0));
  return v->is_integer() && v->as_int() >= 0 ? v->as_int() : -1;
}

struct KnownArch {
  const char* architecture;
  const char* model_type;
  LmFamily family;
};
constexpr KnownArch kKnown[] = {{"GPT2LMHeadModel", "gpt2", LmFamily::gpt2},
                                {"LlamaForCausalLM", "llama", LmFamily::llama},
                                {"MistralForCausalLM", "mistral", LmFamily::llama},
                                {"Qwen2ForCausalLM", "qwen2", LmFamily::llama}};

// Rotary settings: top-level rope_theta (+ rope_scaling) in older files, rope_parameters in newer ones (a file
// with a non-empty rope_scaling is read from it and the top level alone, as transformers reads it). Types
// implemented: default, linear, dynamic (equal to default within max_position_embeddings, the longest context
// hamu runs), llama3 and yarn; any other is refused by name.
void parse_rope(const Json& j, LmConfig& c, const std::string& where) {
  c.rope_theta = optional_number(j, "rope_theta", 10000.0, where);
  double partial = optional_number(j, "partial_rotary_factor", 1.0, where);
  std::string partial_key = "partial_rotary_factor";
  // transformers (4 and 5 alike) reads a non-empty rope_scaling and then ignores rope_parameters altogether.
  const Json* scaling = j.find("rope_scaling");
  const bool scaling_wins = scaling && scaling->is_object() && scaling->size() > 0;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const Json* r = j.find(key);
    if (!r || r->is_null()) continue;
    if (scaling_wins && std::string_view(key) == "rope_parameters") continue;
    if (!r->is_object()) config_error(where, "field '" + std::string(key) + "' is not an object");
    const std::string field = std::string(key) + (r->contains("rope_type") ? ".rope_type" : ".type");
    std::string type = optional_string(*r, "rope_type", "", where);
    if (type.empty()) type = optional_string(*r, "type", "default", where);
    if (type != "default" && type != "linear" && type != "dynamic" && type != "llama3" && type != "yarn")
      config_error(where, field + " '" + type + "' is not supported (default, linear, dynamic, llama3, yarn)");
    c.rope_theta = optional_number(*r, "rope_theta", c.rope_theta, where);
    if (r->contains("partial_rotary_factor")) {
      partial = optional_number(*r, "partial_rotary_factor", 1.0, where);
      partial_key = std::string(key) + ".partial_rotary_factor";
    }
    if (type == "default") continue;
    if (c.rope_type != "default" && c.rope_type != type)
      config_error(where, field + " '" + type + "' contradicts the other rotary settings' '" + c.rope_type + "'");
    c.rope_type = type;
    const std::string prefix = std::string(key) + ".";
    if (!r->contains("factor")) config_error(where, "missing field '" + prefix + "factor' (rope_type '" + type + "')");
    c.rope_factor = optional_number(*r, "factor", 1.0, where + ": " + key);
    // transformers prefers a top-level original_max_position_embeddings (Phi-3 style) over the nested one.
    c.rope_original_max_positions = optional_int(
        j, "original_max_position_embeddings",
        optional_int(*r, "original_max_position_embeddings", c.max_positions, where), where);
    if (type == "yarn") {
      // transformers' _compute_yarn_parameters: a null factor is max_position_embeddings over the original
      // context; beta_fast / beta_slow default (also when 0) to 32 / 1; the attention factor multiplies cos and sin.
      const Json* f = r->find("factor");
      if (f->is_null()) c.rope_factor = double(c.max_positions) / double(c.rope_original_max_positions);
      // Optional numbers that transformers tests for truth: absent, null and 0 all mean "not given".
      auto given = [&](const char* name) {
        const Json* v = r->find(name);
        if (!v || v->is_null()) return 0.0;
        if (!v->is_number() || !std::isfinite(v->as_number()) || v->as_number() < 0)
          config_error(where, "field '" + prefix + name + "' = " + v->dump() + " is not a non-negative number");
        return v->as_number();
      };
      c.rope_beta_fast = given("beta_fast") > 0 ? given("beta_fast") : 32.0;
      c.rope_beta_slow = given("beta_slow") > 0 ? given("beta_slow") : 1.0;
      c.rope_truncate = optional_bool(*r, "truncate", true, where);
      auto mscale_of = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
      const double mscale = given("mscale"), mscale_all = given("mscale_all_dim");
      c.rope_attention_factor = optional_number(
          *r, "attention_factor",
          mscale > 0 && mscale_all > 0 ? mscale_of(c.rope_factor, mscale) / mscale_of(c.rope_factor, mscale_all)
                                       : mscale_of(c.rope_factor, 1.0),
          where + ": " + key);
    }
    if (type == "llama3") {
      for (const char* f : {"low_freq_factor", "high_freq_factor"})
        if (!r->contains(f)) config_error(where, "missing field '" + prefix + f + "' (rope_type 'llama3')");
      c.rope_low_freq_factor = optional_number(*r, "low_freq_factor", 1.0, where + ": " + key);
      c.rope_high_freq_factor = optional_number(*r, "high_freq_factor", 4.0, where + ": " + key);
      if (!(c.rope_high_freq_factor > c.rope_low_freq_factor))
        config_error(where, prefix + "high_freq_factor must exceed low_freq_factor");
    }
  }
  // Only default rotary embeddings ignore partial_rotary_factor in transformers' Llama (the scaled ones would
  // rotate part of each head).
  if (c.rope_type != "default" && partial != 1.0)
    config_error(where, partial_key + " " + std::to_string(partial) + " is not supported with rope_type '" + c.rope_type +
                            "' (only 1)");
}

// rope_inv_freq in the arithmetic of F (float for a float32 model, as transformers computes it).
template <class F> std::vector<double> inv_freq_in(const LmConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> out(static_cast<size_t>(half));
  const F factor = F(c.rope_factor);
  for (int64_t i = 0; i < half; ++i) {
    F inv = F(1) / std::pow(F(c.rope_theta), F(2 * i) / F(c.head_dim));
    if (c.rope_type == "linear") {
      inv = inv / factor;
    } else if (c.rope_type == "llama3") {
      // transformers' _compute_llama3_parameters: long wavelengths divided by factor, short ones kept, the ones
      // between interpolated.
      const F old_context = F(c.rope_original_max_positions);
      const F low_wavelen = F(double(c.rope_original_max_positions) / c.rope_low_freq_factor);
      const F high_wavelen = F(double(c.rope_original_max_positions) / c.rope_high_freq_factor);
      const F wavelen = F(2 * M_PI) / inv;
      const F scaled = wavelen > low_wavelen ? inv / factor : inv;
      const F smooth = (old_context / wavelen - F(c.rope_low_freq_factor)) / F(c.rope_high_freq_factor - c.rope_low_freq_factor);
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      inv = medium ? (F(1) - smooth) * scaled / factor + smooth * scaled : scaled;
    } else if (c.rope_type == "yarn") {
      // transformers' _compute_yarn_parameters: interpolated (divided by factor) and extrapolated (as is)
      // frequencies blended by a linear ramp between the correction dimensions of beta_fast and beta_slow.
      auto correction_dim = [&](double rotations) {
        return double(c.head_dim) * std::log(double(c.rope_original_max_positions) / (rotations * 2 * M_PI)) /
               (2 * std::log(c.rope_theta));
      };
      double low = correction_dim(c.rope_beta_fast), high = correction_dim(c.rope_beta_slow);
      if (c.rope_truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, double(c.head_dim - 1));
      if (low == high) high += 0.001;
      const F pos_freq = std::pow(F(c.rope_theta), F(2 * i) / F(c.head_dim));
      const F extrapolation = F(1) / pos_freq, interpolation = F(1) / (factor * pos_freq);
      const F ramp = std::clamp((F(i) - F(low)) / F(high - low), F(0), F(1));
      const F extrapolation_factor = F(1) - ramp;
      inv = interpolation * (F(1) - extrapolation_factor) + extrapolation * extrapolation_factor;
    }
    out[size_t(i)] = double(inv);
  }
  return out;
}

}  // namespace

std::string LmConfig::describe() const {
  // Built by appending: GCC 12 misreports `literal + std::string` chains (-Wrestrict).
  std::string s = model_type;
  s += " (";
  s += std::to_string(num_layers);
  s += " layers, hidden ";
  s += std::to_string(hidden_size);
  s += ", ";
  s += std::to_string(num_heads);
  if (family == LmFamily::llama) {
    s += '/';
    s += std::to_string(num_kv_heads);
  }
  s += " heads, vocab ";
  s += std::to_string(vocab_size);
  s += ')';
  return s;
}

void LmConfig::validate(const std::string& where) const {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) config_error(where, what + " (" + describe() + ")");
  };
  need(vocab_size >= 1 && hidden_size >= 1 && num_layers >= 1 && num_heads >= 1, "sizes must be positive");
  need(num_kv_heads >= 1 && num_heads % num_kv_heads == 0,
       "num_attention_heads " + std::to_string(num_heads) + " is not a multiple of num_key_value_heads " +
           std::to_string(num_kv_heads));
  need(head_dim >= 2, "head_dim " + std::to_string(head_dim) + " is too small");
  need(intermediate_size >= 1 && max_positions >= 1, "intermediate size and positions must be positive");
  need(vocab_size <= (int64_t(1) << 31) - 1, "vocab_size too large");
  if (family == LmFamily::gpt2) {
    need(head_dim * num_heads == hidden_size, "n_embd " + std::to_string(hidden_size) + " is not divisible by n_head " +
                                                  std::to_string(num_heads));
    need(num_kv_heads == num_heads, "gpt2 has no grouped-query attention");
  } else {
    need(head_dim % 2 == 0, "head_dim " + std::to_string(head_dim) + " must be even for rotary embeddings");
    need(rope_theta > 1.0, "rope_theta must be > 1");
  }
}

LmConfig LmConfig::from_hf_json(const Json& j, const std::string& where) {
  if (!j.is_object()) config_error(where, "not a JSON object");
  LmConfig c;
  c.model_type = optional_string(j, "model_type", "", where);
  std::string arch;
  if (const Json* a = j.find("architectures"); a && !a->is_null()) {
    if (!a->is_array() || a->size() != 1 || !a->at(size_t(0)).is_string())
      config_error(where, "field 'architectures' = " + a->dump() + " is not a list of one name");
    arch = a->at(size_t(0)).as_string();
  }
  if (arch.empty() && c.model_type.empty()) config_error(where, "missing field 'architectures' (and 'model_type')");
  const KnownArch* known = nullptr;
  for (const KnownArch& k : kKnown)
    if ((!arch.empty() && arch == k.architecture) || (arch.empty() && c.model_type == k.model_type)) known = &k;
  if (!known) {
    std::string names;
    for (const KnownArch& k : kKnown) names += std::string(names.empty() ? "" : ", ") + k.architecture;
    config_error(where, "unknown architecture '" + (arch.empty() ? c.model_type : arch) + "' (supported: " + names + ")");
  }
  if (!c.model_type.empty() && c.model_type != known->model_type)
    config_error(where, "unknown model_type '" + c.model_type + "' for architecture '" + known->architecture +
                            "' (expected '" + known->model_type + "')");
  c.family = known->family;
  c.architecture = known->architecture;
  c.model_type = known->model_type;
  c.bos_token_id = token_id(j, "bos_token_id");
  c.eos_token_id = token_id(j, "eos_token_id");
  if (c.family == LmFamily::gpt2) {
    c.vocab_size = required_int(j, "vocab_size", where);
    c.hidden_size = required_int(j, "n_embd", where);
    c.num_layers = required_int(j, "n_layer", where);
    c.num_heads = required_int(j, "n_head", where);
    c.num_kv_heads = c.num_heads;
    c.max_positions = required_int(j, "n_positions", where);
    c.intermediate_size = optional_int(j, "n_inner", 4 * c.hidden_size, where);
    c.norm_eps = optional_number(j, "layer_norm_epsilon", 1e-5, where);
    c.head_dim = c.hidden_size / c.num_heads;
    c.tie_word_embeddings = optional_bool(j, "tie_word_embeddings", true, where);
    c.activation = optional_string(j, "activation_function", "gelu_new", where);
    if (c.activation == "gelu_pytorch_tanh") c.activation = "gelu_new";  // the same function
    if (c.activation != "gelu_new" && c.activation != "gelu" && c.activation != "relu")
      config_error(where, "activation_function '" + c.activation + "' is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu)");
    c.scale_attn_by_inverse_layer_idx = optional_bool(j, "scale_attn_by_inverse_layer_idx", false, where);
    c.scale_attn_weights = optional_bool(j, "scale_attn_weights", true, where);
    if (optional_bool(j, "add_cross_attention", false, where)) config_error(where, "add_cross_attention is not supported");
  } else {
    c.vocab_size = required_int(j, "vocab_size", where);
    c.hidden_size = required_int(j, "hidden_size", where);
    c.num_layers = required_int(j, "num_hidden_layers", where);
    c.num_heads = required_int(j, "num_attention_heads", where);
    c.intermediate_size = required_int(j, "intermediate_size", where);
    c.num_kv_heads = optional_int(j, "num_key_value_heads", c.num_heads, where);
    c.head_dim = optional_int(j, "head_dim", c.hidden_size / c.num_heads, where);
    c.max_positions = optional_int(j, "max_position_embeddings", 2048, where);
    c.norm_eps = optional_number(j, "rms_norm_eps", 1e-6, where);
    parse_rope(j, c, where);
    c.tie_word_embeddings = optional_bool(j, "tie_word_embeddings", false, where);
    c.sliding_window = optional_int(j, "sliding_window", 0, where);
    // Qwen2 carries a sliding_window that applies only with use_sliding_window, and then only to the layers
    // layer_types marks "sliding_attention" (by default those from max_window_layers on): with none, no window.
    if (c.model_type == "qwen2" && c.sliding_window > 0) {
      bool sliding = optional_bool(j, "use_sliding_window", false, where);
      if (const Json* lt = j.find("layer_types"); sliding && lt && !lt->is_null()) {
        if (!lt->is_array()) config_error(where, "field 'layer_types' is not a list");
        bool any = false;
        for (const Json& t : lt->as_array()) {
          const std::string name = t.is_string() ? t.as_string() : t.dump();
          if (name != "full_attention" && name != "sliding_attention")
            config_error(where, "layer_types entry '" + name + "' is not supported (full_attention, sliding_attention)");
          any = any || name == "sliding_attention";
        }
        sliding = any;
      } else if (sliding) {
        sliding = c.num_layers > optional_int(j, "max_window_layers", 28, where);
      }
      if (!sliding) c.sliding_window = 0;
    }
    const std::string act = optional_string(j, "hidden_act", "silu", where);
    if (act != "silu") config_error(where, "hidden_act '" + act + "' is not supported (silu)");
    // Biases as each architecture's transformers class builds them (Mistral has none, whatever the config says).
    if (c.model_type == "llama") {
      c.qkv_bias = c.o_bias = optional_bool(j, "attention_bias", false, where);
      c.mlp_bias = optional_bool(j, "mlp_bias", false, where);
    } else if (c.model_type == "qwen2") {
      c.qkv_bias = true;
    }
    if (optional_int(j, "pretraining_tp", 1, where) != 1) config_error(where, "pretraining_tp other than 1 is not supported");
  }
  c.source = j;
  c.validate(where);
  return c;
}

std::vector<double> LmConfig::rope_inv_freq(bool single) const {
  return single ? inv_freq_in<float>(*this) : inv_freq_in<double>(*this);
}

Json LmConfig::to_hf_json() const {
  Json j = source.is_object() ? source : Json::object();
  j.set("architectures", Json::array({architecture}));
  j.set("model_type", model_type);
  j.set("vocab_size", vocab_size);
  j.set("tie_word_embeddings", tie_word_embeddings);
  // Unknown special ids are written as null: transformers' GPT-2 defaults (50256) would lie outside a small
  // vocabulary.
  if (!j.contains("bos_token_id")) j.set("bos_token_id", bos_token_id >= 0 ? Json(bos_token_id) : Json(nullptr));
  if (!j.contains("eos_token_id")) j.set("eos_token_id", eos_token_id >= 0 ? Json(eos_token_id) : Json(nullptr));
  if (family == LmFamily::gpt2) {
    j.set("n_embd", hidden_size).set("n_layer", num_layers).set("n_head", num_heads).set("n_positions", max_positions);
    j.set("n_inner", intermediate_size == 4 * hidden_size ? Json(nullptr) : Json(intermediate_size));
    j.set("layer_norm_epsilon", norm_eps);
    if (!source.is_object()) {
      // We never apply dropout; say so, so that transformers trains what we trained.
      j.set("activation_function", "gelu_new").set("attn_pdrop", 0.0).set("embd_pdrop", 0.0).set("resid_pdrop", 0.0);
      j.set("initializer_range", 0.02).set("n_ctx", max_positions);
    }
  } else {
    j.set("hidden_size", hidden_size).set("intermediate_size", intermediate_size).set("num_hidden_layers", num_layers);
    j.set("num_attention_heads", num_heads).set("num_key_value_heads", num_kv_heads).set("head_dim", head_dim);
    j.set("max_position_embeddings", max_positions).set("rms_norm_eps", norm_eps);
    if (!j.contains("rope_parameters")) j.set("rope_theta", rope_theta);
    if (!source.is_object()) {
      j.set("hidden_act", "silu").set("attention_bias", false).set("mlp_bias", false).set("initializer_range", 0.02);
      j.set("attention_dropout", 0.0);
    }
  }
  // The weights we write are float32, whatever the source held.
  j.set("dtype", "float32");
  if (j.contains("torch_dtype")) j.set("torch_dtype", "float32");
  return j;
}

const std::vector<std::string>& lm_names() {
  static const std::vector<std::string> names = {"gpt-small"};
  return names;
}

LmConfig lm_config_by_name(const std::string& name, int64_t vocab_size) {
  if (name != "gpt-small") {
    std::string all;
    for (const auto& n : lm_names()) all += (all.empty() ? "" : ", ") + n;
    throw InputError("--model: unknown language model '" + name + "' (choose " + all + " or a Hugging Face directory)");
  }
  if (vocab_size < 2) throw InputError("gpt-small: vocabulary size " + std::to_string(vocab_size) + " is too small");
  LmConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = 128;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.head_dim = 32;
  c.intermediate_size = 512;
  c.max_positions = 128;
  c.validate("gpt-small");
  return c;
}

Tensor lm_token_losses(const Tensor& logits, const Tensor& labels) { return token_cross_entropy(logits, labels, 1, -100); }

Tensor lm_loss(const Tensor& logits, const Tensor& labels) {
  Tensor losses = lm_token_losses(logits, labels);
  const int64_t n = count_scored_tokens(labels, 1, -100);
  return mul_scalar(sum(losses), n ? 1.0 / double(n) : 0.0);
}

Tensor lm_sequence_losses(const Tensor& logits, const Tensor& labels) { return sum(lm_token_losses(logits, labels), 1); }

}  // namespace hamu::models
