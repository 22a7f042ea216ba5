#!/usr/bin/env python3
# scripts/make_lora_fixtures.py: PEFT LoRA adapters on the tiny GPT-2 and Llama fixtures of tests/fixtures/lm/
# and what peft computes with them, written to tests/fixtures/lora/ for tests/test_lora.cpp:
#   tests/fixtures/lora/NAME/                 adapter_config.json + adapter_model.safetensors (peft's save_pretrained;
#                                             r 4, alpha 8, dropout 0, random non-zero A and B). llama_gqa_head:
#                                             q_proj and lm_head on llama_gqa, so peft also saves lm_head's base
#                                             weight (lm_head.base_layer.weight, save_embedding_layers);
#                                             llama_gqa_pat: layers_to_transform, exclude_modules, rank_pattern,
#                                             alpha_pattern and use_rslora (OPTIONS)
#   tests/fixtures/lora/NAME_expected.safetensors
#       logits, logits_masked [B,T,V]; token_losses [B,T-1]; loss; grad.<adapter tensor name> (gradient of the mean
#       loss w.r.t. every lora_A / lora_B, named as in adapter_model.safetensors); ids, mask, labels (the batch of
#       tests/fixtures/lm/NAME_expected.safetensors)
#
#   python3 scripts/make_lora_fixtures.py                 # (re)write the fixtures
#   python3 scripts/make_lora_fixtures.py --only NAME...  # (re)write only these
#   python3 scripts/make_lora_fixtures.py --check DIR...  # load adapter directories hamu saved (DIR's basename starts
#                                                         # with the fixture name) into peft on the fixture base model
#                                                         # and compare peft's logits with DIR/hamu_logits.safetensors
# Needs torch, transformers, peft and safetensors from PyPI; never needed to build, test or run hamu.
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
LM = os.path.join(HERE, "..", "tests", "fixtures", "lm")
OUT = os.path.join(HERE, "..", "tests", "fixtures", "lora")
TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama_gqa": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "llama_gqa_head": ["q_proj", "lm_head"],
    # Layer 1's projections but its o_proj, and layer 0's up_proj named by its whole path (kept whatever
    # layers_to_transform says); per-layer ranks and alphas; rsLoRA scaling.
    "llama_gqa_pat": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "model.layers.0.mlp.up_proj"],
}
SEEDS = {"llama_gqa_head": 20261130, "llama_gqa_pat": 20261131}
# LoraConfig options beyond the targets.
OPTIONS = {
    "llama_gqa_pat": dict(layers_to_transform=[1], exclude_modules=["model.layers.1.self_attn.o_proj"],
                          rank_pattern={"q_proj": 2, "down_proj": 6}, alpha_pattern={"v_proj": 3}, use_rslora=True),
}


def base_of(name):
    # The fixture of tests/fixtures/lm/ an adapter sits on: the longest fixture name NAME starts with.
    return "llama_gqa" if name.startswith("llama_gqa") else name


def saved_name(param_name):
    # peft's module parameter "…q_proj.lora_A.default.weight" is saved as "…q_proj.lora_A.weight".
    return param_name.replace(".default", "")


def expected(model, batch):
    ids, mask, labels = batch["ids"].long(), batch["mask"].long(), batch["labels"].long()
    model.eval()
    model.zero_grad()
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    logits = out.logits.detach()
    b, t, v = logits.shape
    token_losses = F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100,
                                   reduction="none").reshape(b, t - 1)
    with torch.no_grad():
        masked = model(input_ids=ids, attention_mask=mask).logits
    res = {"ids": batch["ids"], "mask": batch["mask"], "labels": batch["labels"], "logits": logits.float().contiguous(),
           "logits_masked": masked.float().contiguous(), "token_losses": token_losses.float().contiguous(),
           "loss": out.loss.detach().reshape(1).float()}
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.grad is not None, name
            res["grad." + saved_name(name)] = p.grad.detach().float().contiguous()
        else:
            assert p.grad is None, f"base weight {name} received a gradient"
    return res


def write(only):
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20261129)
    for name, targets in TARGETS.items():
        if only and name not in only:
            continue
        if name in SEEDS:  # their own streams: the fixtures before keep theirs
            gen = torch.Generator().manual_seed(SEEDS[name])
        base = AutoModelForCausalLM.from_pretrained(os.path.join(LM, base_of(name)))
        cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM",
                         fan_in_fan_out=name == "gpt2", **OPTIONS.get(name, {}))
        model = get_peft_model(base, cfg)
        with torch.no_grad():
            # peft's init leaves B = 0 (no effect); random A and B make the adapter change the logits.
            for pname, p in model.named_parameters():
                if "lora_A" in pname or "lora_B" in pname:
                    p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        d = os.path.join(OUT, name)
        model.save_pretrained(d)
        readme = os.path.join(d, "README.md")
        if os.path.exists(readme):
            os.remove(readme)
        # The committed config names the base by its place in the repository, not this machine's path.
        cfg_path = os.path.join(d, "adapter_config.json")
        with open(cfg_path) as f:
            c = json.load(f)
        c["base_model_name_or_path"] = "tests/fixtures/lm/" + base_of(name)
        with open(cfg_path, "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
        batch = load_file(os.path.join(LM, base_of(name) + "_expected.safetensors"))
        save_file(expected(model, batch), os.path.join(OUT, name + "_expected.safetensors"))
        print(name, "->", sorted(os.listdir(d)))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures: {total / 1024:.0f} KiB in {OUT}")


def check(dirs):
    ok = True
    for d in dirs:
        name = base_of(next(n for n in TARGETS if os.path.basename(d.rstrip("/")).startswith(n)))
        base = AutoModelForCausalLM.from_pretrained(os.path.join(LM, name))
        model = PeftModel.from_pretrained(base, d)
        model.eval()
        ref = load_file(os.path.join(d, "hamu_logits.safetensors"))
        with torch.no_grad():
            logits = model(input_ids=ref["ids"].long()).logits
        err = ((logits - ref["logits"]).norm() / ref["logits"].norm()).item()
        with torch.no_grad(), model.disable_adapter():
            base_logits = model(input_ids=ref["ids"].long()).logits
        # The adapter must matter, or the comparison proves nothing.
        effect = ((logits - base_logits).norm() / base_logits.norm()).item()
        cfg = model.peft_config["default"]
        print(f"{d}: peft {type(model).__name__} r={cfg.r} alpha={cfg.lora_alpha} targets={sorted(cfg.target_modules)} "
              f"fan_in_fan_out={cfg.fan_in_fan_out}: logits rel err vs hamu {err:.2e} (adapter effect {effect:.2e})")
        ok = ok and err < 1e-5 and effect > 1e-3
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
