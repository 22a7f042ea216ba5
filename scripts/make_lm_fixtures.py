#!/usr/bin/env python3
# scripts/make_lm_fixtures.py: tiny random GPT-2 / Llama / Mistral / Qwen2 models in Hugging Face format and
# what transformers computes with them (logits with and without a padding mask, per-token losses with -100
# labels, gradients of the mean loss), written to tests/fixtures/lm/ for tests/test_lm_models.cpp. The
# variants (VARIANTS: untied GPT-2 with exact GELU / ReLU, scale_attn_by_inverse_layer_idx and scale_attn_weights
# false, Llama with biases and llama3 / linear / yarn rotary scaling, Qwen2 with q/k/v biases, a bfloat16 sharded
# Llama and a float16 GPT-2) each draw from their own seeded generator.
#
#   python3 scripts/make_lm_fixtures.py                 # (re)write the fixtures
#   python3 scripts/make_lm_fixtures.py --only NAME...  # (re)write only these
#   python3 scripts/make_lm_fixtures.py --check DIR...  # load directories hamu saved with transformers and
#                                                       # compare their logits with the fixtures
# Needs torch, transformers and safetensors from PyPI; never needed to build, test or run hamu.
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file, load_file
from transformers import (AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "lm")
B, T = 2, 10


def perturb(model, gen):
    # transformers' init (std 0.02) gives near-uniform logits; larger weights make the comparison bite.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("ln" in name or "norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def models():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=1))
    llama_gqa = LlamaForCausalLM(LlamaConfig(vocab_size=80, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, rope_theta=50000.0,
                                             rms_norm_eps=1e-5, max_position_embeddings=64, tie_word_embeddings=False,
                                             bos_token_id=1, eos_token_id=2))
    # Tied, explicit head_dim different from hidden/heads, one key/value head.
    llama_tied = LlamaForCausalLM(LlamaConfig(vocab_size=72, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=1, head_dim=10,
                                              rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=32,
                                              tie_word_embeddings=True, bos_token_id=1, eos_token_id=2))
    mistral = MistralForCausalLM(MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                               num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6,
                                               sliding_window=4096, max_position_embeddings=64,
                                               tie_word_embeddings=False))
    # name -> (model, parameters whose gradients are recorded, save kwargs)
    return {
        "gpt2": (gpt2, ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
                        "transformer.h.1.mlp.c_proj.weight", "transformer.h.1.ln_2.weight", "transformer.ln_f.bias"], {}),
        "llama_gqa": (llama_gqa, ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                                  "model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
                                  "model.layers.1.mlp.gate_proj.weight", "model.layers.0.input_layernorm.weight",
                                  "model.norm.weight", "lm_head.weight"], {"max_shard_size": "20KB"}),
        "llama_tied": (llama_tied, ["model.embed_tokens.weight", "model.layers.1.self_attn.o_proj.weight",
                                    "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"], {}),
        "mistral": (mistral, ["model.layers.0.self_attn.q_proj.weight", "lm_head.weight"], {}),
    }


# Configurations beyond the plain ones: name -> (seed, builder, parameters whose gradients are recorded).
VARIANTS = {
    # Untied lm_head, exact-erf GELU, attention scores divided by the layer number, n_inner set.
    "gpt2_untied": (11, lambda: GPT2LMHeadModel(GPT2Config(
        vocab_size=64, n_positions=16, n_embd=24, n_layer=2, n_head=3, n_inner=40, activation_function="gelu",
        scale_attn_by_inverse_layer_idx=True, tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=1)),
        ["lm_head.weight", "transformer.wte.weight", "transformer.h.1.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.bias"]),
    "gpt2_relu": (12, lambda: GPT2LMHeadModel(GPT2Config(
        vocab_size=48, n_positions=12, n_embd=16, n_layer=1, n_head=2, activation_function="relu", scale_attn_weights=False,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=1)),
        ["transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"]),
    # attention_bias and mlp_bias, explicit head_dim, llama3 rotary scaling whose band (original context 32)
    # leaves one frequency as is, interpolates one and divides the rest by the factor.
    "llama_scaled": (13, lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=56, hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=12, attention_bias=True, mlp_bias=True, rms_norm_eps=1e-5,
        max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}, rope_theta=10000.0)),
        ["model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.o_proj.bias", "model.layers.0.mlp.up_proj.bias",
         "model.layers.1.self_attn.k_proj.weight"]),
    "llama_linear": (14, lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=48, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, rope_theta=100.0, rope_scaling={"rope_type": "linear", "factor": 2.5},
        max_position_embeddings=32, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)),
        ["model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight"]),
    # yarn rotary scaling: with rope_theta 100, head_dim 16 and an original context of 64 the ramp between the
    # correction dimensions of beta_fast and beta_slow (0 and 5) blends 4 of the 8 frequencies; mscale and
    # mscale_all_dim set the attention factor that multiplies cos and sin.
    "llama_yarn": (16, lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=48, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, rope_theta=100.0, max_position_embeddings=256, tie_word_embeddings=False,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "mscale": 0.8,
                      "mscale_all_dim": 0.5}, bos_token_id=1, eos_token_id=2)),
        ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"]),
    # Saved in bfloat16 and sharded: grouped-query attention with three query heads per key/value head, a vocabulary
    # of 101 (not a multiple of 8), rope_theta 5e5, rms_norm_eps 1e-6. The expectations use the rounded weights.
    "llama_bf16_gqa3": (17, lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=101, hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, rope_theta=500000.0, rms_norm_eps=1e-6, max_position_embeddings=64,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)),
        ["model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.q_proj.weight", "lm_head.weight"],
        {"dtype": torch.bfloat16, "max_shard_size": "16KB"}),
    # Saved in float16: GPT-2 with gelu_pytorch_tanh, layer_norm_epsilon 1e-4, tied, a vocabulary of 57.
    "gpt2_f16_tanh": (18, lambda: GPT2LMHeadModel(GPT2Config(
        vocab_size=57, n_positions=16, n_embd=24, n_layer=2, n_head=3, activation_function="gelu_pytorch_tanh",
        layer_norm_epsilon=1e-4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=1)),
        ["transformer.wte.weight", "transformer.h.1.mlp.c_fc.weight"], {"dtype": torch.float16}),
    # Qwen2: q/k/v biases (o_proj none), tied, one key/value head.
    "qwen2": (15, lambda: Qwen2ForCausalLM(Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True, rope_theta=20000.0,
        bos_token_id=1, eos_token_id=2)),
        ["model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.v_proj.bias", "model.embed_tokens.weight"]),
}


def inputs(vocab, gen):
    ids = torch.randint(0, vocab, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :3] = 0  # left padding in the second sequence
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt that carries no loss
    labels[1, :3] = -100  # the padding
    labels[1, 7] = -100
    return ids, mask, labels


def expected(model, params, ids, mask, labels):
    model.eval()
    model.zero_grad()
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    logits = out.logits.detach()
    token_losses = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100, reduction="none").reshape(B, T - 1)
    with torch.no_grad():
        masked = model(input_ids=ids, attention_mask=mask).logits
    named = dict(model.named_parameters())
    res = {"ids": ids.int(), "mask": mask.int(), "labels": labels.int(), "logits": logits.float(),
           "logits_masked": masked.float(), "token_losses": token_losses.float(),
           "loss": out.loss.detach().reshape(1).float()}
    for p in params:
        res["grad." + p] = named[p].grad.detach().float().contiguous()
    return res


def save(name, model, params, save_kw, gen):
    perturb(model, gen)
    d = os.path.join(OUT, name)
    save_kw = dict(save_kw)
    dtype = save_kw.pop("dtype", None)
    if dtype is not None:  # saved in half precision; the expectations come from the rounded weights in float32,
        # read back from disk (casting the model back would leave its rotary buffers rounded too)
        model.to(dtype)
        model.save_pretrained(d, safe_serialization=True, **save_kw)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    else:
        model.save_pretrained(d, safe_serialization=True, **save_kw)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    ids, mask, labels = inputs(model.config.vocab_size, gen)
    save_file(expected(model, params, ids, mask, labels), os.path.join(OUT, name + "_expected.safetensors"))
    print(name, "->", sorted(os.listdir(d)))


def write(only):
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20261126)
    torch.manual_seed(20261126)
    for name, (model, params, save_kw) in models().items():
        # The generator runs through every plain model, so the ones not rewritten still draw.
        if only and name not in only:
            perturb(model, gen)
            inputs(model.config.vocab_size, gen)
            continue
        save(name, model, params, save_kw, gen)
    for name, (seed, build, params, *save_kw) in VARIANTS.items():
        if only and name not in only:
            continue
        torch.manual_seed(seed)
        save(name, build(), params, save_kw[0] if save_kw else {}, torch.Generator().manual_seed(20261126 + seed))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures: {total / 1024:.0f} KiB in {OUT}")


def check(dirs):
    # Each DIR was saved by hamu from fixture NAME (the directory's basename starts with it).
    ok = True
    for d in dirs:
        base = os.path.basename(d.rstrip("/"))
        name = max((n for n in ("llama_gqa", "llama_tied", "gpt2", "mistral", *VARIANTS) if base.startswith(n)), key=len)
        exp = load_file(os.path.join(OUT, name + "_expected.safetensors"))
        model = AutoModelForCausalLM.from_pretrained(d)
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=exp["ids"].long()).logits
        err = ((logits - exp["logits"]).norm() / exp["logits"].norm()).item()
        print(f"{d}: {type(model).__name__} loaded by transformers, logits rel err {err:.2e}")
        ok = ok and err < 1e-5
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", nargs="*")
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    if a.check:
        check(a.check)
    else:
        write(set(a.only or []))
