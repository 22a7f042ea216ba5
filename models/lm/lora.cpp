// models/lm/lora.cpp: LoRA adapters on a causal LM: the --lora spec, target selection (PEFT's matching
// rule), PEFT's adapter directory read and written, merging into the base weights, and the bfloat16 base.
#include "models/lm/lora.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "engine/json.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "engine/safetensors_mapped.h"

namespace hamu::models {
namespace {

namespace fs = std::filesystem;

constexpr const char* kAdapterConfig = "adapter_config.json";
constexpr const char* kAdapterWeights = "adapter_model.safetensors";
constexpr const char* kPeftPrefix = "base_model.model.";

// PEFT's rule for a list of target names: the module path is the name or ends with "." + name.
bool path_matches(const std::string& path, const std::string& target) {
  return path == target || path.ends_with("." + target);
}

// Every Linear layer of the tree in model order with its dotted path; an adapter's own A and B (children
// of a Linear) are not descended into.
void collect_linears(nn::Module& m, const std::string& path, std::vector<std::pair<std::string, nn::Linear*>>& out) {
  for (const auto& [name, child] : m.children()) {
    const std::string p = path.empty() ? name : path + "." + name;
    if (auto* lin = dynamic_cast<nn::Linear*>(child.get())) out.emplace_back(p, lin);
    else collect_linears(*child, p, out);
  }
}

std::vector<std::pair<std::string, nn::Linear*>> all_linears(nn::Module& model) {
  std::vector<std::pair<std::string, nn::Linear*>> out;
  collect_linears(model, "", out);
  return out;
}

double parse_number(const std::string& field, const std::string& text) {
  char* end = nullptr;
  const double v = text.empty() ? NAN : std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
    throw InputError("--lora: " + field + " '" + text + "' is not a number");
  return v;
}

std::string tensor_name(const std::string& path, const char* which) {
  return std::string(kPeftPrefix) + path + "." + which + ".weight";
}

// peft's save_embedding_layers="auto" (get_peft_model_state_dict): when target_modules names "embed_tokens" or
// "lm_head" (a list holding either, or a regex matching such a module's path), the targeted embedding layers'
// base weights are saved beside the adapters as "base_model.model.<path>.base_layer.<weight|bias>". Here only an
// untied lm_head Linear can be a target, so that is the one layer this applies to.
constexpr const char* kSavedBaseLayer = "lm_head";

std::string base_layer_name(const std::string& path, const char* which) {
  return std::string(kPeftPrefix) + path + ".base_layer." + which;
}

// A base-layer tensor of `path` (its weight or bias) as a float32 host tensor.
Tensor host_f32(const Tensor& t) { return t.detach().to(Device{}).to(DType::f32).contiguous(); }

// A config option that changes what the adapter computes and that we do not implement: it must be absent or
// at its "off" value (null, false, an empty list or object).
void require_off(const Json& cfg, const std::string& where, const char* key) {
  const Json* v = cfg.find(key);
  if (!v || v->is_null()) return;
  if ((v->is_bool() && !v->as_bool()) || ((v->is_array() || v->is_object()) && v->size() == 0)) return;
  throw InputError(where + ": \"" + key + "\" = " + v->dump() + " is not supported (plain LoRA adapters only)");
}

// The shortest suffix of `path` (whole dotted components) whose PEFT matches among `linears` all carry
// adapters: what target_modules needs to select this layer and no layer without an adapter.
std::string target_name(const std::string& path, const std::vector<std::pair<std::string, nn::Linear*>>& linears) {
  size_t pos = path.size();
  while (true) {
    const size_t dot = pos == 0 ? std::string::npos : path.rfind('.', pos - 1);
    const std::string suffix = dot == std::string::npos ? path : path.substr(dot + 1);
    bool clean = true;
    for (const auto& [p, lin] : linears)
      if (path_matches(p, suffix) && !lin->has_lora()) clean = false;
    if (clean || dot == std::string::npos) return suffix;
    pos = dot;
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// The spec and the targets

LoraSpec parse_lora_spec(const std::string& spec) {
  LoraSpec out;
  std::set<std::string> seen;
  bool in_targets = false;
  std::vector<std::string> targets;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    std::string item = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    // Spaces around items and around '=' are ignored ("r=8, alpha = 16").
    auto trim = [](std::string x) {
      const size_t a = x.find_first_not_of(" \t"), b = x.find_last_not_of(" \t");
      return a == std::string::npos ? std::string() : x.substr(a, b - a + 1);
    };
    item = trim(item);
    if (const size_t e = item.find('='); e != std::string::npos) item = trim(item.substr(0, e)) + "=" + trim(item.substr(e + 1));
    start = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      if (!in_targets || item.empty())
        throw InputError("--lora: '" + item + "' in '" + spec + "' is not key=value (fields: r, alpha, dropout, bias, targets)");
      targets.push_back(item);
      continue;
    }
    std::string key = item.substr(0, eq);
    const std::string value = item.substr(eq + 1);
    if (key == "lora_alpha") key = "alpha";
    if (key == "lora_dropout") key = "dropout";
    if (key == "target_modules") key = "targets";
    if (!seen.insert(key).second) throw InputError("--lora: field '" + key + "' given twice");
    in_targets = key == "targets";
    if (key == "r") {
      const double r = parse_number("r", value);
      if (r != std::floor(r) || r < 1 || r > 1e6) throw InputError("--lora: r must be a positive integer, got '" + value + "'");
      out.r = int64_t(r);
    } else if (key == "alpha") {
      out.alpha = parse_number("alpha", value);
      if (out.alpha <= 0) throw InputError("--lora: alpha must be positive, got '" + value + "'");
    } else if (key == "dropout") {
      out.dropout = parse_number("dropout", value);
      if (!(out.dropout >= 0 && out.dropout < 1)) throw InputError("--lora: dropout must lie in [0, 1), got '" + value + "'");
    } else if (key == "bias") {
      if (value != "none") throw InputError("--lora: bias '" + value + "' is not supported (only bias=none)");
    } else if (key == "targets") {
      if (value.empty()) throw InputError("--lora: targets= names no layer");
      targets.push_back(value);
    } else {
      throw InputError("--lora: unknown field '" + key + "' (fields: r, alpha, dropout, bias, targets)");
    }
  }
  if (seen.count("targets")) out.targets = targets;
  return out;
}

std::vector<std::string> lora_target_modules(LmFamily family, const std::vector<std::string>& targets) {
  static const std::map<std::string, std::string> llama = {{"q", "q_proj"},       {"k", "k_proj"},   {"v", "v_proj"},
                                                           {"o", "o_proj"},       {"gate", "gate_proj"},
                                                           {"up", "up_proj"},     {"down", "down_proj"}};
  static const std::map<std::string, std::string> gpt2 = {{"q", "c_attn"}, {"k", "c_attn"},       {"v", "c_attn"},
                                                          {"o", "attn.c_proj"}, {"up", "c_fc"}, {"down", "mlp.c_proj"}};
  if (targets.empty()) throw InputError("--lora: no targets");
  std::vector<std::string> out;
  for (const std::string& t : targets) {
    if (t.empty()) throw InputError("--lora: an empty target name");
    std::string m = t;
    if (family == LmFamily::gpt2) {
      if (t == "gate") throw InputError("--lora: target 'gate' has no layer in gpt2 (its MLP has no gate projection)");
      if (auto it = gpt2.find(t); it != gpt2.end()) m = it->second;
    } else if (auto it = llama.find(t); it != llama.end()) {
      m = it->second;
    }
    bool dup = false;
    for (const std::string& o : out) dup = dup || o == m;
    if (!dup) out.push_back(m);
  }
  return out;
}

std::vector<std::pair<std::string, nn::Linear*>> lora_select(CausalLM& model, const std::vector<std::string>& target_modules,
                                                             bool each_target_must_match) {
  const auto linears = all_linears(model);
  std::vector<bool> chosen(linears.size(), false);
  bool any_target = false;
  for (const std::string& t : target_modules) {
    bool any = false;
    for (size_t i = 0; i < linears.size(); ++i)
      if (path_matches(linears[i].first, t)) chosen[i] = any = true;
    any_target = any_target || any;
    // A tied head is the embedding matrix, not a Linear layer here; peft would adapt it, so skipping it
    // would drop part of the adapter.
    if (!any && model.config().tie_word_embeddings && path_matches("lm_head", t))
      throw InputError("LoRA: target '" + t + "' is the output head, which " + model.config().describe() +
                       " ties to the token embedding (tie_word_embeddings); LoRA on a tied head is not supported");
    if (!any && each_target_must_match)
      throw InputError("LoRA: target '" + t + "' matches no Linear layer of " + model.config().describe());
  }
  if (!any_target)
    throw InputError("LoRA: no target of " + Json(target_modules).dump() + " matches a Linear layer of " + model.config().describe());
  std::vector<std::pair<std::string, nn::Linear*>> out;
  for (size_t i = 0; i < linears.size(); ++i)
    if (chosen[i]) out.push_back(linears[i]);
  return out;
}

std::vector<std::pair<std::string, nn::Linear*>> lora_layers(nn::Module& model) {
  std::vector<std::pair<std::string, nn::Linear*>> out;
  for (const auto& l : all_linears(model))
    if (l.second->has_lora()) out.push_back(l);
  return out;
}

bool has_lora(nn::Module& model) { return !lora_layers(model).empty(); }

namespace {

// One layer's rank and alpha (peft's rank_pattern / alpha_pattern may give each layer its own).
struct LayerRank {
  int64_t r;
  double alpha;
};

// Freezes the model and attaches adapters to `layers` (checked beforehand: none carries one), layer i with
// ranks[i].
void attach(CausalLM& model, const std::vector<std::pair<std::string, nn::Linear*>>& layers,
            const std::vector<LayerRank>& ranks, double dropout, uint64_t seed) {
  model.freeze();
  Rng rng(seed ^ 0x4C6F5241ull);  // "LoRA": A's init stream, independent of the dropout streams
  uint64_t stream = seed;
  for (size_t i = 0; i < layers.size(); ++i) layers[i].second->add_lora(ranks[i].r, ranks[i].alpha, dropout, splitmix64(stream), rng);
}

// peft's use_rslora scaling.
double rslora_scaling(double alpha, int64_t r) { return alpha / std::sqrt(double(r)); }

// Whether the adapters scale by alpha / sqrt(r) (rsLoRA): decided by a layer of rank above 1 (at rank 1 both
// rules agree).
bool uses_rslora(const std::vector<std::pair<std::string, nn::Linear*>>& layers) {
  for (const auto& [path, lin] : layers) {
    const int64_t r = lin->lora_A->weight.shape()[0];
    if (r > 1) return lin->lora_scaling == rslora_scaling(lin->lora_alpha, r);
  }
  return false;
}

// peft's rank_pattern / alpha_pattern: key -> value, the first key (in file order) that matches the module path
// as peft's get_pattern_key does (re.match of "(.*\.)?(KEY)$").
struct Patterns {
  std::vector<std::pair<std::regex, double>> items;
  std::optional<double> find(const std::string& path) const {
    for (const auto& [re, v] : items)
      if (std::regex_match(path, re)) return v;
    return std::nullopt;
  }
};

Patterns read_patterns(const Json& cfg, const char* key, bool integer, const std::string& where) {
  Patterns out;
  const Json* p = cfg.find(key);
  if (!p || p->is_null()) return out;
  if (!p->is_object()) throw InputError(where + ": \"" + key + "\" = " + p->dump() + " is not an object");
  for (const auto [name, v] : p->members()) {
    const bool ok = integer ? v.is_integer() && v.as_int() >= 1 : v.is_number() && v.as_number() > 0 && std::isfinite(v.as_number());
    if (!ok)
      throw InputError(where + ": \"" + key + "\" entry '" + name + "' = " + v.dump() + " is not a positive " +
                       (integer ? "integer" : "number"));
    if (name.size() > 4096) throw InputError(where + ": \"" + key + "\" key longer than 4096 characters");
    try {
      out.items.emplace_back(std::regex("(.*\\.)?(" + name + ")", std::regex::ECMAScript), integer ? double(v.as_int()) : v.as_number());
    } catch (const std::regex_error& e) {
      throw InputError(where + ": \"" + key + "\" key '" + name + "' is not a valid regex: " + e.what());
    }
  }
  return out;
}

// peft's layers_to_transform (an index or a list) with layers_pattern (none, a name or a list of names):
// the layer index of a module path is the number after the first "<pattern>." (any one dotted name without a
// pattern), as check_target_module_exists finds it. nullopt: the option is off.
std::optional<std::vector<std::regex>> layer_index_regexes(const Json& cfg, const std::string& where,
                                                            std::set<int64_t>& indices) {
  const Json* lt = cfg.find("layers_to_transform");
  if (!lt || lt->is_null() || (lt->is_array() && lt->size() == 0)) return std::nullopt;
  auto index = [&](const Json& v) {
    if (!v.is_integer() || v.as_int() < 0)
      throw InputError(where + ": \"layers_to_transform\" holds " + v.dump() + ", not a layer index");
    indices.insert(v.as_int());
  };
  if (lt->is_array())
    for (const Json& v : lt->as_array()) index(v);
  else index(*lt);
  std::vector<std::string> patterns;
  if (const Json* lp = cfg.find("layers_pattern"); lp && !lp->is_null()) {
    if (lp->is_string()) {
      if (!lp->as_string().empty()) patterns.push_back(lp->as_string());
    } else if (lp->is_array()) {
      for (const Json& v : lp->as_array()) {
        if (!v.is_string()) throw InputError(where + ": \"layers_pattern\" holds " + v.dump() + ", not a name");
        patterns.push_back(v.as_string());
      }
    } else {
      throw InputError(where + ": \"layers_pattern\" = " + lp->dump() + " is not a name or a list of names");
    }
  }
  std::vector<std::regex> out;
  try {
    if (patterns.empty()) out.emplace_back(R"(.*?\.[^.]*\.(\d+)\.)", std::regex::ECMAScript);
    for (const std::string& p : patterns) out.emplace_back("(?:^|.*?\\.)" + p + R"(\.(\d+)\.)", std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw InputError(where + ": \"layers_pattern\" is not a valid regex: " + e.what());
  }
  return out;
}

void require_no_adapters(nn::Module& model, const std::string& who) {
  if (has_lora(model))
    throw InputError(who + ": the model already carries LoRA adapters (merge or drop them first)");
}

}  // namespace

std::vector<std::string> add_lora(CausalLM& model, const LoraSpec& spec, uint64_t seed) {
  // Checked before anything changes (Linear::add_lora checks again, after the model is frozen).
  if (spec.r < 1) throw InputError("--lora: r must be a positive integer, got " + std::to_string(spec.r));
  if (!std::isfinite(spec.alpha) || spec.alpha <= 0) throw InputError("--lora: alpha must be positive");
  if (!(spec.dropout >= 0 && spec.dropout < 1)) throw InputError("--lora: dropout must lie in [0, 1)");
  const auto layers = lora_select(model, lora_target_modules(model.config().family, spec.targets));
  require_no_adapters(model, "--lora");
  attach(model, layers, std::vector<LayerRank>(layers.size(), {spec.r, spec.alpha}), spec.dropout, seed);
  std::vector<std::string> paths;
  for (const auto& l : layers) paths.push_back(l.first);
  return paths;
}

std::string apply_lora(CausalLM& model, const std::string& spec_or_dir, uint64_t seed) {
  std::error_code ec;
  std::vector<std::string> notes;
  if (fs::is_regular_file(fs::path(spec_or_dir) / kAdapterConfig, ec)) notes = load_lora(spec_or_dir, model, seed);
  else if (fs::is_directory(spec_or_dir, ec))
    throw InputError("--lora: directory " + spec_or_dir + " holds no " + kAdapterConfig + " (not a PEFT adapter)");
  else add_lora(model, parse_lora_spec(spec_or_dir), seed);
  std::string line = lora_summary(model);
  for (const std::string& n : notes) line += "; " + n;
  return line;
}

std::string lora_summary(CausalLM& model) {
  const auto layers = lora_layers(model);
  if (layers.empty()) return "no LoRA adapters";
  const nn::Linear& first = *layers.front().second;
  std::vector<std::string> kinds;
  for (const auto& [path, lin] : layers) {
    const std::string leaf = path.substr(path.rfind('.') + 1);
    if (std::find(kinds.begin(), kinds.end(), leaf) == kinds.end()) kinds.push_back(leaf);
  }
  std::string names;
  for (const std::string& k : kinds) names += (names.empty() ? "" : ", ") + k;
  char alpha[32], dropout[32];
  std::snprintf(alpha, sizeof alpha, "%g", first.lora_alpha);
  std::snprintf(dropout, sizeof dropout, "%g", first.lora_dropout ? first.lora_dropout->p : 0.0);
  int64_t all = 0;
  for (const auto& [n, w] : model.named_weights()) all += w.numel();
  const int64_t r = first.lora_A->weight.shape()[0];
  bool varies = false;
  for (const auto& [path, lin] : layers) varies = varies || lin->lora_A->weight.shape()[0] != r || lin->lora_alpha != first.lora_alpha;
  std::string notes = uses_rslora(layers) ? "rsLoRA" : "";
  if (varies) notes += std::string(notes.empty() ? "" : "; ") + "other r or alpha on some layers";
  return "LoRA r " + std::to_string(r) + ", alpha " + alpha + (notes.empty() ? "" : " (" + notes + ")") + ", dropout " + dropout +
         " on " + std::to_string(layers.size()) + " layers (" + names + "): " + std::to_string(model.num_parameters()) +
         " trainable of " + std::to_string(all);
}

void merge_lora(CausalLM& model) {
  for (const auto& [path, lin] : lora_layers(model)) lin->merge_lora();
}

void merge_lora_into(CausalLM& adapted, CausalLM& base) {
  require_no_adapters(base, "merge_lora_into");
  std::map<std::string, nn::Linear*> by_path;
  for (const auto& [path, lin] : all_linears(base)) by_path.emplace(path, lin);
  const auto layers = lora_layers(adapted);
  for (const auto& [path, lin] : layers) {  // every layer checked before any weight changes
    const auto it = by_path.find(path);
    if (it == by_path.end()) throw InputError("merge_lora_into: the base has no Linear layer '" + path + "'");
    const Tensor& w = it->second->weight;
    if (w.shape() != lin->weight.shape() || w.dtype() != DType::f32)
      throw InputError("merge_lora_into: base layer '" + path + "' is " + dtype_name(w.dtype()) + " " + shape_str(w.shape()) +
                       ", the adapted model's " + shape_str(lin->weight.shape()) + " (a float32 copy of the same base is needed)");
  }
  NoGradGuard ng;
  for (const auto& [path, lin] : layers) {
    Tensor w = by_path[path]->weight.detach();
    // An adapter file may have replaced this layer's base weight (load_lora: peft's stored lm_head base weight).
    // The adapted model's weight then wins; where it is only `base`'s rounded to its own dtype (a bfloat16 base),
    // `base`'s float32 one is kept.
    const Tensor mine = lin->weight.detach().to(Device{});
    const Tensor rounded = w.to(Device{}).to(mine.dtype());
    if (rounded.to(DType::f32).to_vector<float>() != mine.to(DType::f32).to_vector<float>()) w.copy_(mine);
    Tensor delta = mul_scalar(matmul(lin->lora_B->weight.detach(), lin->lora_A->weight.detach()), lin->lora_scaling);
    if (delta.dtype() != DType::f32) delta = delta.to(DType::f32);
    w.copy_(add(w, delta.to(w.device())));
  }
}

// ------------------------------------------------------------------------------------------------
// Mixed precision

int64_t cast_frozen_linear_weights(nn::Module& model, DType dtype, Device device) {
  if (dtype != DType::f32 && dtype != DType::bf16)
    throw InputError(std::string("cast_frozen_linear_weights: ") + dtype_name(dtype) + " is not float32 or bfloat16");
  if (dtype == DType::bf16 && !device.is_cuda())
    throw InputError("bfloat16 base weights are CUDA-only (bfloat16 GEMMs run on the GPU); on the CPU weights are float32");
  std::vector<nn::Linear*> frozen;
  for (const auto& [path, lin] : all_linears(model))
    if (lin->frozen() && !lin->weight.requires_grad()) frozen.push_back(lin);
  if (frozen.empty())
    throw InputError("cast_frozen_linear_weights: the model has no frozen Linear layer (only a LoRA model's frozen base "
                     "changes precision; attach adapters first)");
  int64_t converted = 0;
  for (nn::Linear* lin : frozen) {
    Tensor& w = lin->weight;
    if (w.dtype() == dtype && w.device() == device) continue;
    const std::string name = w.name();
    Tensor moved = w.detach().to(device);
    w = Tensor();  // the old copy goes before the next one is made
    w = moved.to(dtype);
    w.set_name(name);
    ++converted;
  }
  return converted;
}

// ------------------------------------------------------------------------------------------------
// PEFT's directory

void save_lora(const std::string& dir, CausalLM& model, const std::string& base_model) {
  const auto layers = lora_layers(model);
  if (layers.empty()) throw Error("save_lora: the model carries no LoRA adapters");
  const nn::Linear& first = *layers.front().second;
  const int64_t r = first.lora_A->weight.shape()[0];
  const double dropout = first.lora_dropout ? first.lora_dropout->p : 0.0;
  const bool rslora = uses_rslora(layers);
  // adapter_config.json holds one dropout and one scaling rule; a layer whose r or alpha differs from the
  // first's goes into rank_pattern / alpha_pattern under its full path (a regex that matches only it).
  Json rank_pattern = Json::object(), alpha_pattern = Json::object();
  for (const auto& [path, lin] : layers) {
    const double p = lin->lora_dropout ? lin->lora_dropout->p : 0.0;
    const int64_t lr = lin->lora_A->weight.shape()[0];
    const double scaling = rslora ? rslora_scaling(lin->lora_alpha, lr) : lin->lora_alpha / double(lr);
    if (p != dropout || lin->lora_scaling != scaling)
      throw Error("save_lora: adapter '" + path + "' has another dropout or scaling rule than '" + layers.front().first + "'");
    if (lr != r) rank_pattern.set(path, lr);
    if (lin->lora_alpha != first.lora_alpha) alpha_pattern.set(path, lin->lora_alpha);
  }
  const auto linears = all_linears(model);
  std::vector<std::string> targets;
  for (const auto& [path, lin] : layers) {
    const std::string t = target_name(path, linears);
    bool dup = false;
    for (const std::string& o : targets) dup = dup || o == t;
    if (!dup) targets.push_back(t);
  }
  std::sort(targets.begin(), targets.end());

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw InputError(dir + ": cannot create the output directory" + (ec ? ": " + ec.message() : ""));
  std::vector<NamedTensor> tensors;
  for (const auto& [path, lin] : layers)
    for (const auto& [which, m] : {std::pair<const char*, nn::Linear*>{"lora_A", lin->lora_A.get()}, {"lora_B", lin->lora_B.get()}}) {
      Tensor host = m->weight.detach().to(Device{});
      if (host.dtype() != DType::f32) host = host.to(DType::f32);
      tensors.push_back({tensor_name(path, which), host.contiguous()});
    }
  // What peft saves beside an lm_head adapter (save_embedding_layers "auto": "lm_head" is in target_modules), so
  // that peft and hamu read the same file; load_lora puts it back, as peft does.
  for (const auto& [path, lin] : layers)
    if (path == kSavedBaseLayer && std::find(targets.begin(), targets.end(), kSavedBaseLayer) != targets.end()) {
      tensors.push_back({base_layer_name(path, "weight"), host_f32(lin->weight)});
      if (lin->bias.defined()) tensors.push_back({base_layer_name(path, "bias"), host_f32(lin->bias)});
    }
  save_safetensors((fs::path(dir) / kAdapterWeights).string(), tensors, {{"format", "pt"}});

  // The fields peft writes (sorted as it sorts them), with the values of a plain LoRA adapter.
  Json cfg = Json::object();
  cfg.set("alpha_pattern", alpha_pattern);
  cfg.set("base_model_name_or_path", base_model.empty() ? Json() : Json(base_model));
  cfg.set("bias", "none");
  cfg.set("exclude_modules", Json());
  cfg.set("fan_in_fan_out", model.config().family == LmFamily::gpt2);  // GPT-2's Conv1D, as peft sets it
  cfg.set("inference_mode", true);
  cfg.set("init_lora_weights", true);
  cfg.set("layers_pattern", Json());
  cfg.set("layers_to_transform", Json());
  cfg.set("lora_alpha", first.lora_alpha);
  cfg.set("lora_bias", false);
  cfg.set("lora_dropout", dropout);
  cfg.set("modules_to_save", Json());
  cfg.set("peft_type", "LORA");
  cfg.set("r", r);
  cfg.set("rank_pattern", rank_pattern);
  cfg.set("revision", Json());
  cfg.set("target_modules", targets);
  cfg.set("task_type", "CAUSAL_LM");
  cfg.set("use_dora", false);
  cfg.set("use_rslora", rslora);  // an adapter loaded with use_rslora keeps its scaling
  save_json((fs::path(dir) / kAdapterConfig).string(), cfg);
}

std::vector<std::string> load_lora(const std::string& dir, CausalLM& model, uint64_t seed) {
  const std::string cfg_path = (fs::path(dir) / kAdapterConfig).string();
  const std::string weights_path = (fs::path(dir) / kAdapterWeights).string();
  if (!fs::is_regular_file(cfg_path)) throw InputError(dir + ": no " + std::string(kAdapterConfig) + " (not a PEFT adapter directory)");
  const Json cfg = load_json(cfg_path);
  if (!cfg.is_object()) throw InputError(cfg_path + ": not a JSON object");
  const std::string peft_type = cfg.get_or("peft_type", "");
  if (peft_type != "LORA")
    throw InputError(cfg_path + ": peft_type \"" + peft_type + "\" is not LORA (only LoRA adapters are read)");
  const std::string task = cfg.get_or("task_type", "CAUSAL_LM");
  if (task != "CAUSAL_LM") throw InputError(cfg_path + ": task_type \"" + task + "\" is not CAUSAL_LM");
  const Json* rj = cfg.find("r");
  if (!rj || !rj->is_integer() || rj->as_int() < 1)
    throw InputError(cfg_path + ": \"r\" must be a positive integer, got " + (rj ? rj->dump() : std::string("nothing")));
  const int64_t r = rj->as_int();
  const Json* aj = cfg.find("lora_alpha");
  if (!aj || !aj->is_number() || !(aj->as_number() > 0) || !std::isfinite(aj->as_number()))
    throw InputError(cfg_path + ": \"lora_alpha\" must be a positive number, got " + (aj ? aj->dump() : std::string("nothing")));
  const double alpha = aj->as_number();
  const double dropout = cfg.get_or<double>("lora_dropout", 0.0);
  if (!(dropout >= 0 && dropout < 1)) throw InputError(cfg_path + ": \"lora_dropout\" must lie in [0, 1)");
  const std::string bias = cfg.get_or("bias", "none");
  // "all" / "lora_only" train biases too; peft then saves them beside the adapters. Without such a tensor (a
  // model without biases) the adapter is a plain one; with one it is refused below.
  if (bias != "none" && bias != "all" && bias != "lora_only")
    throw InputError(cfg_path + ": \"bias\" = \"" + bias + "\" is not supported (none; all or lora_only without bias tensors)");
  const Json* rs = cfg.find("use_rslora");
  if (rs && !rs->is_null() && !rs->is_bool()) throw InputError(cfg_path + ": \"use_rslora\" = " + rs->dump() + " is not true or false");
  const bool rslora = rs && rs->is_bool() && rs->as_bool();
  for (const char* key : {"use_dora", "lora_bias", "modules_to_save", "target_parameters", "trainable_token_indices",
                          "layer_replication", "use_qalora", "alora_invocation_tokens",
                          // peft's other LoRA variants (lora_variants of peft 0.21's Linear)
                          "arrow_config", "use_bdlora", "velora_config", "monteclora_config", "mica", "kasa_config"})
    require_off(cfg, cfg_path, key);

  // The layers: a list of names (PEFT's suffix rule) or one string matched as a whole-path regex.
  const Json* tj = cfg.find("target_modules");
  std::vector<std::pair<std::string, nn::Linear*>> layers;
  if (tj && tj->is_string()) {
    const std::string& pattern = tj->as_string();
    if (pattern.size() > 4096) throw InputError(cfg_path + ": \"target_modules\" regex longer than 4096 characters");
    std::regex re;
    try {
      re = std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw InputError(cfg_path + ": \"target_modules\" regex '" + pattern + "' is invalid: " + e.what());
    }
    for (const auto& l : all_linears(model))
      if (std::regex_match(l.first, re)) layers.push_back(l);
    if (layers.empty())
      throw InputError(cfg_path + ": \"target_modules\" regex '" + pattern + "' matches no Linear layer of " +
                       model.config().describe());
  } else if (tj && tj->is_array() && tj->size() > 0) {
    std::vector<std::string> names;
    for (const Json& t : tj->as_array()) {
      if (!t.is_string() || t.as_string().empty()) throw InputError(cfg_path + ": \"target_modules\" holds " + t.dump());
      names.push_back(t.as_string());
    }
    try {
      // peft applies a list whose names partly match nothing (a recipe written for several architectures)
      // and refuses only one that matches nothing at all.
      layers = lora_select(model, names, false);
    } catch (const InputError& e) {
      throw InputError(cfg_path + ": " + e.what());
    }
    // layers_to_transform keeps the suffix-matched layers of those indices (a target naming the whole path is
    // kept as it is), as peft's check_target_module_exists does for a list of targets.
    std::set<int64_t> indices;
    if (const auto index_res = layer_index_regexes(cfg, cfg_path, indices)) {
      std::vector<std::pair<std::string, nn::Linear*>> kept;
      for (const auto& l : layers) {
        bool keep = std::find(names.begin(), names.end(), l.first) != names.end();
        for (size_t i = 0; !keep && i < index_res->size(); ++i) {
          std::smatch m;
          if (std::regex_search(l.first, m, (*index_res)[i], std::regex_constants::match_continuous)) {
            keep = indices.count(std::stoll(m[1].str())) > 0;
            break;
          }
        }
        if (keep) kept.push_back(l);
      }
      layers = kept;
    }
  } else {
    throw InputError(cfg_path + ": \"target_modules\" must be a non-empty list of module names or a regex string");
  }
  // exclude_modules: a list (a path equal to a name or ending in "." + name) or a regex string (whole path).
  if (const Json* ex = cfg.find("exclude_modules"); ex && !ex->is_null()) {
    std::function<bool(const std::string&)> excluded;
    if (ex->is_string()) {
      std::regex re;
      try {
        re = std::regex(ex->as_string(), std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        throw InputError(cfg_path + ": \"exclude_modules\" regex '" + ex->as_string() + "' is invalid: " + e.what());
      }
      excluded = [re](const std::string& path) { return std::regex_match(path, re); };
    } else if (ex->is_array()) {
      std::vector<std::string> names;
      for (const Json& t : ex->as_array()) {
        if (!t.is_string()) throw InputError(cfg_path + ": \"exclude_modules\" holds " + t.dump());
        names.push_back(t.as_string());
      }
      excluded = [names](const std::string& path) {
        for (const std::string& n : names)
          if (path_matches(path, n)) return true;
        return false;
      };
    } else {
      throw InputError(cfg_path + ": \"exclude_modules\" = " + ex->dump() + " is not a list of names or a regex string");
    }
    std::erase_if(layers, [&](const auto& l) { return excluded(l.first); });
  }
  if (layers.empty())
    throw InputError(cfg_path + ": target_modules, layers_to_transform and exclude_modules leave no layer of " +
                     model.config().describe());
  // Each layer's r and alpha: rank_pattern / alpha_pattern, else r and lora_alpha.
  const Patterns rank_pattern = read_patterns(cfg, "rank_pattern", true, cfg_path);
  const Patterns alpha_pattern = read_patterns(cfg, "alpha_pattern", false, cfg_path);
  std::vector<LayerRank> ranks;
  for (const auto& [path, lin] : layers)
    ranks.push_back({int64_t(rank_pattern.find(path).value_or(double(r))), alpha_pattern.find(path).value_or(alpha)});
  require_no_adapters(model, dir);

  // Every tensor read and checked before the model changes.
  if (!fs::is_regular_file(weights_path))
    throw InputError(dir + ": no " + std::string(kAdapterWeights) +
                     (fs::exists(fs::path(dir) / "adapter_model.bin") ? " (only safetensors adapters are read; adapter_model.bin is not)"
                                                                       : ""));
  MappedSafetensors file(weights_path);
  if (bias != "none")
    for (const MappedTensorInfo& t : file.tensors())
      if (t.name.ends_with(".bias"))
        throw InputError(cfg_path + ": \"bias\" = \"" + bias + "\" with trained biases (" + weights_path + " holds '" + t.name +
                         "') is not supported (only adapters without bias tensors)");
  std::set<std::string> used;
  std::vector<Tensor> values;  // A, B per layer
  std::vector<std::string> notes;
  std::vector<std::pair<Tensor, Tensor>> replaced;  // base tensors the adapter file replaces (shared storage), their values
  for (size_t li = 0; li < layers.size(); ++li) {
    const auto& [path, lin] = layers[li];
    const int64_t in = lin->weight.shape()[1], out = lin->weight.shape()[0], r_layer = ranks[li].r;
    for (const auto& [which, want] : {std::pair<const char*, Shape>{"lora_A", Shape{r_layer, in}}, {"lora_B", Shape{out, r_layer}}}) {
      const std::string name = tensor_name(path, which);
      const MappedTensorInfo* info = file.find(name);
      if (!info)
        throw InputError(weights_path + ": tensor '" + name + "' is missing (" + kAdapterConfig + " targets '" + path + "')");
      if (info->shape != want)
        throw InputError(weights_path + ": tensor '" + name + "' has shape " + shape_str(info->shape) + ", " +
                         model.config().describe() + " with r " + std::to_string(r_layer) + " needs " + shape_str(want) +
                         " (an adapter for another base model?)");
      Tensor v = file.read(*info, DType::f32);
      const float* d = v.data<float>();
      for (int64_t i = 0; i < v.numel(); ++i)
        if (!std::isfinite(d[i]))
          throw InputError(weights_path + ": tensor '" + name + "' holds a non-finite value at element " + std::to_string(i));
      values.push_back(v);
      used.insert(name);
    }
    // peft saves the base weight of an lm_head (or embedding) target beside its adapter (save_embedding_layers)
    // and its load_state_dict puts it into the model, replacing the base's (cast to the model's dtype). The same
    // here: it must fit the layer and be finite; where it differs from the base's, it replaces it too (the
    // logits are then peft's) and load_lora says so in its notes.
    for (const char* which : {"weight", "bias"}) {
      const std::string base_name = base_layer_name(path, which);
      const MappedTensorInfo* info = file.find(base_name);
      if (!info) continue;
      const Tensor& current = std::string(which) == "weight" ? lin->weight : lin->bias;
      if (!current.defined())
        throw InputError(weights_path + ": tensor '" + base_name + "' is a bias, the base's '" + path + "' has none");
      const Tensor base = host_f32(current);
      if (info->shape != base.shape())
        throw InputError(weights_path + ": tensor '" + base_name + "' has shape " + shape_str(info->shape) + ", the base's '" +
                         path + "." + which + "' " + shape_str(base.shape()) + " (an adapter for another base model?)");
      const Tensor saved = file.read(*info, DType::f32);
      const float *a = saved.data<float>(), *b = base.data<float>();
      int64_t differ = 0, first = -1;
      double worst = 0;
      for (int64_t i = 0; i < saved.numel(); ++i) {
        if (!std::isfinite(a[i]))
          throw InputError(weights_path + ": tensor '" + base_name + "' holds a non-finite value at element " + std::to_string(i));
        if (a[i] != b[i]) {
          if (first < 0) first = i;
          ++differ;
          worst = std::max(worst, double(std::fabs(a[i] - b[i])));
        }
      }
      if (differ > 0) {
        char line[160];
        std::snprintf(line, sizeof line, "%lld of %lld values differ, the first at element %lld, by up to %.3g",
                      (long long)differ, (long long)saved.numel(), (long long)first, worst);
        notes.push_back(weights_path + ": '" + base_name + "' replaces the base model's '" + path + "." + which + "' (" + line +
                        "), as peft loads it");
        replaced.push_back({current, saved});
      }
      used.insert(base_name);
    }
  }
  for (const MappedTensorInfo& t : file.tensors())
    if (!used.count(t.name))
      throw InputError(weights_path + ": unexpected tensor '" + t.name + "' (no Linear layer selected by " + kAdapterConfig +
                       " carries it)");

  for (auto& [target, value] : replaced) target.detach().copy_(value);
  attach(model, layers, ranks, dropout, seed);
  // rsLoRA scales by alpha / sqrt(r) instead of alpha / r.
  if (rslora)
    for (size_t i = 0; i < layers.size(); ++i) layers[i].second->lora_scaling = rslora_scaling(ranks[i].alpha, ranks[i].r);
  size_t k = 0;
  for (const auto& [path, lin] : layers) {
    Tensor a = lin->lora_A->weight.detach(), b = lin->lora_B->weight.detach();
    a.copy_(values[k++]);
    b.copy_(values[k++]);
  }
  return notes;
}

}  // namespace hamu::models
