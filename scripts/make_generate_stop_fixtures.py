#!/usr/bin/env python3
# scripts/make_generate_stop_fixtures.py: a tiny random Llama directory whose generation_config.json lists several
# end-of-sequence ids (Llama-3 style) and whose config.json lists others, and the ids transformers' generate(
# do_sample=False) gives with the model's own generation config, so tests/test_generate.cpp can check that hamu
# stops where transformers stops:
#
#   tests/fixtures/lm_stop/llama/     LlamaForCausalLM, vocab 800 = llama-bpe (tied), generation_config.json
#   tests/fixtures/lm_stop/expected.json
#       generation_config: the ids with the directory as it is (generation_config.json wins over config.json)
#       config_only:       the same prompts with generation_config.json removed (config.json's eos list applies)
#
# The eos ids are picked from an unstopped greedy run so that rows stop early at a non-first id of the list, and
# config.json's ids would stop them elsewhere. Needs torch, transformers, tokenizers; never needed by hamu.
import json
import os
import shutil
import tempfile

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "lm_stop")
MAX_NEW = 12
QUESTIONS = ["Is the data always retained?", "How many novels has Alice written?", "Who wrote it?",
             "Why did the author move to London, and when?"]


def plain_prompt(q):  # loaders/template.cpp's plain template
    return f"Question: {q}\nAnswer: "


def generate(path, prompts, pad):
    # The model as from_pretrained reads it: generate() with its own generation config, nothing overridden but
    # greedy decoding and the length.
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                             num_beams=1, pad_token_id=pad, output_scores=True, return_dict_in_generate=True)
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    rows = []
    for row in out.sequences[:, width:].tolist():
        new = []
        for t in row:
            new.append(t)
            if t in eos:
                break
        rows.append(new)
    # Greedy ties would make the comparison fragile: every chosen token must lead the runner-up clearly.
    for step, s in enumerate(out.scores):
        top = s.topk(2, dim=-1).values
        for r, new in enumerate(rows):
            if step < len(new):
                assert (top[r, 0] - top[r, 1]).item() > 1e-3, (r, step)
    return rows


def stop_step(row, ids):
    return next((i for i, t in enumerate(row) if t in ids), None)


def main():
    tok_path = os.path.join(ROOT, "tokenizers", "llama-bpe", "tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    eos = tok.token_to_id("</s>")
    prompts = [tok.encode(plain_prompt(q), add_special_tokens=True).ids for q in QUESTIONS]
    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=800, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=eos))
    # Weights larger than make_lm_fixtures.perturb's (0.4, not 0.15): at this width smaller ones make every row
    # repeat one token, and a stop list needs rows of distinct tokens to pick from.
    gen = torch.Generator().manual_seed(20261130)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen) if p.dim() == 1 else 0.4 * torch.randn(p.shape, generator=gen))
    d = os.path.join(OUT, "llama")
    if os.path.isdir(d):
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    shutil.copy(tok_path, os.path.join(d, "tokenizer.json"))
    gen_path = os.path.join(d, "generation_config.json")
    cfg_path = os.path.join(d, "config.json")
    # An unstopped run (eos only </s>, which this random model does not produce early) to pick the ids from.
    free = generate(d, prompts, eos)
    print("unstopped", free)
    assert all(len(r) == MAX_NEW for r in free)
    # generation_config.json: </s>, then a token row 1 first makes at step >= 4 and one row 3 first makes at step
    # >= 2; config.json: </s> and tokens rows 0 and 2 first make at step >= 3 and >= 1, which generation_config.json
    # must override. No id in both lists.
    taken = set()

    def first_new(r, i):
        t = next(free[r][j] for j in range(i, MAX_NEW) if free[r][j] not in free[r][:j] and free[r][j] not in taken)
        taken.add(t)
        return t

    gen_ids = [eos, first_new(1, 4), first_new(3, 2)]
    cfg_ids = [eos, first_new(0, 3), first_new(2, 1)]
    assert None not in gen_ids and None not in cfg_ids and not set(gen_ids[1:]) & set(cfg_ids[1:]), (gen_ids, cfg_ids)
    cfg = json.load(open(cfg_path))
    cfg["eos_token_id"] = cfg_ids
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    gcfg = json.load(open(gen_path))
    gcfg["eos_token_id"] = gen_ids
    gcfg["pad_token_id"] = eos
    gcfg.pop("_from_model_config", None)  # as in a published Llama-3 file
    json.dump(gcfg, open(gen_path, "w"), indent=2)

    with_gen = generate(d, prompts, eos)
    singles = [generate(d, [p], eos)[0] for p in prompts]
    assert singles == with_gen, "left padding changed an answer"
    with tempfile.TemporaryDirectory() as t:
        bare = os.path.join(t, "llama")
        shutil.copytree(d, bare)
        os.remove(os.path.join(bare, "generation_config.json"))
        config_only = generate(bare, prompts, eos)
    for name, rows, ids in (("generation_config", with_gen, gen_ids), ("config_only", config_only, cfg_ids)):
        print(name, ids, [len(r) for r in rows])
    # Every list stops some row early at one of its later ids; the two lists stop the rows differently; the
    # template's end alone (</s>) would stop none.
    assert any(stop_step(r, gen_ids[1:]) is not None for r in with_gen)
    assert any(stop_step(r, cfg_ids[1:]) is not None for r in config_only)
    assert with_gen != config_only and with_gen != free and config_only != free
    expected = {"max_new_tokens": MAX_NEW, "template": "plain", "questions": QUESTIONS, "prompts": prompts,
                "unstopped": free,
                "generation_config": {"eos_token_id": gen_ids, "tokens": with_gen},
                "config_only": {"eos_token_id": cfg_ids, "tokens": config_only}}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(f"Generated by scripts/make_generate_stop_fixtures.py with torch {torch.__version__}, transformers "
                f"{__import__('transformers').__version__}, tokenizers {__import__('tokenizers').__version__}.\n")


if __name__ == "__main__":
    main()
