// models/lm/lora.h: LoRA adapters on a causal LM's Linear layers (the `--lora r=8,alpha=16,...` spec), the
// base model frozen; adapters saved and loaded in PEFT's layout (adapter_config.json +
// adapter_model.safetensors, names "base_model.model.<module>.lora_A.weight" [r, in] / ".lora_B.weight"
// [out, r], Linear layout even for GPT-2's Conv1D, as peft writes them) and merged into the base weights.
//
// With adapters on, the model's parameters() are the adapters' A and B only (the base weights are frozen:
// no requires_grad, never a gradient buffer), so optimizers, the fused unlearning update, the paired
// backward and hardness run over the adapter blocks; named_weights() still lists everything.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "models/lm/lm.h"

namespace hamu::models {

struct LoraSpec {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  // As given: short names (q, k, v, o, gate, up, down) or Hugging Face module names / suffixes
  // ("q_proj", "c_attn", "mlp.c_proj", "model.layers.0.self_attn.q_proj").
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};
};

// "r=8,alpha=16,dropout=0.05,targets=q,k,v,o,gate,up,down" (targets last: the comma-separated names after
// "targets=" run to the end; "bias=none" is accepted, any other bias refused). Missing fields keep their
// defaults (r 8, alpha 16, dropout 0, the seven Llama projections). InputError naming --lora and the field.
LoraSpec parse_lora_spec(const std::string& spec);

// The PEFT target_modules a spec's targets select in a family. Llama: q -> q_proj, k -> k_proj, v -> v_proj,
// o -> o_proj, gate -> gate_proj, up -> up_proj, down -> down_proj. GPT-2 (fused Conv1D layers): q, k, v ->
// c_attn (one layer holds all three), o -> attn.c_proj, up -> c_fc, down -> mlp.c_proj; gate is refused
// (GPT-2's MLP has none). Any other name passes through as a Hugging Face module name.
std::vector<std::string> lora_target_modules(LmFamily family, const std::vector<std::string>& targets);

// The Linear layers of `model` that `target_modules` select (PEFT's rule: a module path equal to a target or
// ending in "." + target), in model order. InputError naming a target that selects no Linear layer (with
// each_target_must_match false, as peft reads an adapter's list: only when no target selects any), and naming
// an lm_head target on a model whose head is tied to the embedding (not a Linear layer here).
std::vector<std::pair<std::string, nn::Linear*>> lora_select(CausalLM& model, const std::vector<std::string>& target_modules,
                                                             bool each_target_must_match = true);

// The layers that carry adapters, in model order (path without ".weight").
std::vector<std::pair<std::string, nn::Linear*>> lora_layers(nn::Module& model);
bool has_lora(nn::Module& model);

// Freezes the model and puts fresh adapters (PEFT's init: the model's output is unchanged) on every selected
// layer; dropout masks are seeded from `seed` (one stream per layer). Returns the adapted layers' paths.
std::vector<std::string> add_lora(CausalLM& model, const LoraSpec& spec, uint64_t seed = 0);

// PEFT's directory: DIR/adapter_config.json and DIR/adapter_model.safetensors (float32, {"format": "pt"}),
// each written atomically; DIR is created when needed. base_model goes to base_model_name_or_path. A layer whose
// r or alpha differs from the first layer's is written to rank_pattern / alpha_pattern under its path. With an
// lm_head adapter the file also holds the lm_head's base weight, "base_model.model.lm_head.base_layer.weight" (and
// .bias if it had one), as peft's save_pretrained writes it by default (save_embedding_layers="auto" with
// "lm_head" in target_modules).
void save_lora(const std::string& dir, CausalLM& model, const std::string& base_model = "");

// Reads a PEFT LoRA directory (ours or peft's): checks adapter_config.json (peft_type LORA, no trained biases, no
// DoRA / other LoRA variants / modules_to_save), selects its target_modules (a list of names, or a string
// matched as a whole-path regex, as peft does), narrowed by layers_to_transform (+ layers_pattern) and
// exclude_modules as peft narrows them, gives each layer its r and alpha (rank_pattern / alpha_pattern, peft's
// "(.*\.)?(KEY)$" match) and its scaling (alpha / r, or alpha / sqrt(r) with use_rslora; save_lora writes
// patterns and use_rslora back), checks every adapter tensor's
// presence, shape and finiteness, and only then freezes the model and attaches the adapters. Everything is an
// InputError naming the file and the field or tensor; the model is untouched when loading fails. The model must not
// carry adapters already.
// A base weight (or bias) saved beside an adapter, "base_model.model.<path>.base_layer.weight" (peft's
// save_embedding_layers: the lm_head's when "lm_head" is a target), must fit the layer and be finite, and is put
// into the model as peft's load puts it: where it differs from the base's own, it replaces it, and the returned
// notes (one line per replaced tensor, naming it and how many values differ by how much) say so; the callers
// print them as warnings, so a replaced base never goes unnoticed.
std::vector<std::string> load_lora(const std::string& dir, CausalLM& model, uint64_t seed = 0);

// What a `--lora` flag names, applied: a PEFT adapter directory (holding adapter_config.json) is loaded with
// load_lora, anything else is parsed as a spec and fresh adapters are added. Returns lora_summary's line, followed
// by load_lora's notes ("; "-separated).
std::string apply_lora(CausalLM& model, const std::string& spec_or_dir, uint64_t seed = 0);

// One line for logs: "LoRA r 8, alpha 16, dropout 0.05 on 14 layers (q_proj, ...): 28672 trainable of 1234567".
std::string lora_summary(CausalLM& model);

// Folds every adapter into its base weight (W += scaling * B A: alpha / r, or alpha / sqrt(r) for rsLoRA) and
// removes it; the model's output is unchanged and save_hf_dir then writes a plain Hugging Face directory. The weights stay frozen. A bfloat16
// base is refused (the merged weight would be rounded): use merge_lora_into with a float32 copy of the base.
void merge_lora(CausalLM& model);
// Folds the adapters of `adapted` (its base in any dtype, on any device) into the Linear layers of the same
// paths in `base`, a float32 copy of the same base model without adapters (on any device): W += scaling * B A
// in float32, as merge_lora does; `adapted` is left as it is. A base weight of `adapted` that is not `base`'s
// (rounded to its dtype) was replaced by its adapter file (load_lora) and replaces `base`'s before the fold. InputError naming the layer when `base` lacks it,
// its shape differs or its weight is not float32, or when `base` carries adapters.
void merge_lora_into(CausalLM& adapted, CausalLM& base);

// ---- Mixed precision (issue #10): a bfloat16 base on CUDA

// Stores every frozen Linear weight of `model` (the LoRA base: q, k, v, o, gate, up, down and an untied lm_head;
// GPT-2's c_attn, c_proj, c_fc) as `dtype` on `device`. Weights elsewhere move there one at a time, so a model
// loaded on the CPU peaks at the converted weights plus one float32 weight on the device; move the rest with
// model.to(device) afterwards. bfloat16 halves the base's weight memory and runs those layers as tensor-core
// GEMMs with float32 accumulation (engine/ops.h linear); trainable parameters (the adapters), embeddings (a tied
// head), norms and biases stay float32, and so do gradients, optimizer state and every HAMU statistic. float32
// converts back. Returns how many weights it converted. InputError: bfloat16 for a CPU device (CUDA-only), a
// dtype other than float32 / bfloat16, or a model with no frozen Linear layer (attach LoRA adapters first).
int64_t cast_frozen_linear_weights(nn::Module& model, DType dtype, Device device);

}  // namespace hamu::models
