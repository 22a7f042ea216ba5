#!/usr/bin/env python3
# scripts/make_generate_fixtures.py: tiny random GPT-2 and Llama models paired with the fixture tokenizers
# (tests/fixtures/tokenizers/, so their vocabularies match), a small QA file, and what transformers computes
# with them: greedy generate(do_sample=False) ids with and without left padding, and the completion-only
# loss / accuracy / token count of the QA file under each prompt template. For tests/test_generate.cpp.
#
#   tests/fixtures/lm_text/gpt2/      GPT2LMHeadModel, vocab 705 = gpt2-bpe (n_positions 48: one QA pair is longer)
#   tests/fixtures/lm_text/llama/     LlamaForCausalLM, vocab 800 = llama-bpe, GQA 4/2 heads, rope_theta 50000
#   tests/fixtures/lm_text/expected.json
#   tests/fixtures/qa/tiny.jsonl      10 TOFU-style pairs
#
# Needs torch, transformers and tokenizers from PyPI; never needed to build, test or run hamu.
import json
import os
import shutil

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from make_lm_fixtures import perturb  # the same weight scale as the other LM fixtures

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "lm_text")
QA_FILE = os.path.join(ROOT, "qa", "tiny.jsonl")

QA = [
    ("Who wrote the novel about the river city?", "Alice wrote it in 1999."),
    ("Where was the famous teacher born?", "She was born in Paris."),
    ("What did Bob publish first?", "A history of the mountain village."),
    ("When did Carol win the award?", "In the year 2024, after her second novel."),
    ("Which language did the student learn?", "Japanese, because of Tokyo."),
    ("Is the data always retained?", "No, sometimes it is forgotten."),
    ("How many novels has Alice written?", "Three: the first, the second and the third."),
    ("What is the café in Zürich called?", "Café Ångström."),
    ("Why did the author move to London?", "Because the science city was there."),
    ("Can you describe the quick brown fox in a long sentence that goes on and on about the lazy dog "
     "and the river and the mountain and the village?",
     "The quick brown fox jumps over the lazy dog near the river, then runs to the mountain village, "
     "where the teacher and the student always talk about history and science."),
]

TEMPLATES = {
    "plain": lambda q: f"Question: {q}\nAnswer: ",
    "llama2-chat": lambda q: f"[INST] {q} [/INST] ",
    "chatml": lambda q: f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
}

# name -> (model, tokenizer fixture, end-of-sequence token, templates scored)
def models():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=705, n_positions=48, n_embd=32, n_layer=2, n_head=4,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                      eos_token_id=0))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=800, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, rope_theta=50000.0,
                                         rms_norm_eps=1e-5, max_position_embeddings=128, tie_word_embeddings=False,
                                         bos_token_id=1, eos_token_id=2))
    return {"gpt2": (gpt2, "gpt2-bpe", "<|endoftext|>", ["plain", "chatml"]),
            "llama": (llama, "llama-bpe", "</s>", ["plain", "llama2-chat"])}


def fit(model, tok, eos, max_len, steps):
    # A short full fine-tune on the plain-template pairs (completion-only loss), so the models half-remember
    # the answers: accuracies well above zero, and generations that end with EOS or run to the limit.
    torch.manual_seed(7)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rows = [tokens(tok, "plain", q, a, eos, max_len)[:2] for q, a in QA[:8]]
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(model(input_ids=torch.tensor([i]), labels=torch.tensor([l])).loss for i, l in rows) / len(rows)
        loss.backward()
        opt.step()
    model.eval()


def tokens(tok, template, q, a, end_id, max_len):
    # The completion-only rule (loaders/template.h): prompt + answer tokenised once with special tokens, the
    # end id appended, the first len(tokenise(prompt)) tokens masked; the first max_len tokens kept.
    prompt = TEMPLATES[template](q)
    n_prompt = len(tok.encode(prompt, add_special_tokens=True).ids)
    ids = tok.encode(prompt + a, add_special_tokens=True).ids + [end_id]
    labels = [-100 if i < n_prompt else t for i, t in enumerate(ids)]
    truncated = len(ids) > max_len
    return ids[:max_len], labels[:max_len], truncated


def score(model, tok, template, end_id, max_len):
    nll, correct, count, truncated = 0.0, 0, 0, 0
    with torch.no_grad():
        for q, a in QA:
            ids, labels, cut = tokens(tok, template, q, a, end_id, max_len)
            truncated += cut
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            logp = F.log_softmax(logits.double(), dim=-1)
            for t in range(1, len(ids)):
                if labels[t] == -100:
                    continue
                nll -= logp[t - 1, labels[t]].item()
                correct += int(logits[t - 1].argmax().item() == labels[t])
                count += 1
    return {"loss": nll / count, "acc": correct / count, "tokens": count, "truncated": truncated}


def reference_greedy(model, prompts, max_new, eos):
    # Full recomputation every step with explicit positions (left padding, counted from the first real token):
    # what generate() must agree with.
    width = max(len(p) for p in prompts)
    ids = [[0] * (width - len(p)) + p for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    out = [[] for _ in prompts]
    done = [False] * len(prompts)
    with torch.no_grad():
        for _ in range(max_new):
            m = torch.tensor(mask)
            pos = (m.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=torch.tensor(ids), attention_mask=m, position_ids=pos).logits[:, -1]
            nxt = logits.argmax(-1).tolist()
            for i, t in enumerate(nxt):
                if not done[i]:
                    out[i].append(t)
                    done[i] = t == eos
                ids[i].append(t)
                mask[i].append(1)
            if all(done):
                break
    return out


def generate(model, prompts, max_new, eos):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        seq = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             num_beams=1, eos_token_id=eos, pad_token_id=eos)
    out = []
    for row in seq[:, width:].tolist():
        new = []
        for t in row:
            new.append(t)
            if t == eos:
                break
        out.append(new)
    assert out == reference_greedy(model, prompts, max_new, eos), "generate() differs from the no-cache reference"
    return out


def main():
    os.makedirs(os.path.dirname(QA_FILE), exist_ok=True)
    with open(QA_FILE, "w", encoding="utf-8") as f:
        for q, a in QA:
            f.write(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n")
    gen = torch.Generator().manual_seed(20261129)
    expected = {"qa_file": "tests/fixtures/qa/tiny.jsonl", "generate": [], "eval": []}
    for name, (model, tok_name, eos_token, templates) in models().items():
        tok_path = os.path.join(ROOT, "tokenizers", tok_name, "tokenizer.json")
        tok = Tokenizer.from_file(tok_path)
        eos = tok.token_to_id(eos_token)
        assert eos == model.config.eos_token_id and tok.get_vocab_size(with_added_tokens=True) <= model.config.vocab_size
        context = model.config.n_positions if name == "gpt2" else model.config.max_position_embeddings
        perturb(model, gen)
        fit(model, tok, eos, context, 60)
        d = os.path.join(OUT, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        model.save_pretrained(d, safe_serialization=True)
        if os.path.exists(os.path.join(d, "generation_config.json")):
            os.remove(os.path.join(d, "generation_config.json"))
        shutil.copy(tok_path, os.path.join(d, "tokenizer.json"))
        for template in templates:
            end_id = tok.token_to_id("<|im_end|>") if template == "chatml" else eos
            r = score(model, tok, template, end_id, context)
            expected["eval"].append({"model": name, "template": template, **r})
            print(name, template, r)
        # Prompts as `hamu generate` renders them (plain template), alone and as one left-padded batch.
        prompts = [tok.encode(TEMPLATES["plain"](q), add_special_tokens=True).ids for q, _ in QA[5:9]]
        max_new = 12
        for case, batch in (("single", [[p] for p in prompts]), ("batch", [prompts])):
            for group in batch:
                toks = generate(model, group, max_new, eos)
                expected["generate"].append({"model": name, "case": case, "max_new_tokens": max_new, "eos": eos,
                                             "prompts": group, "tokens": toks})
                print(name, case, [len(t) for t in toks], ["eos" if t and t[-1] == eos else "" for t in toks])
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(f"Generated by scripts/make_generate_fixtures.py with torch {torch.__version__}, transformers "
                f"{__import__('transformers').__version__}, tokenizers {__import__('tokenizers').__version__}.\n")


if __name__ == "__main__":
    main()
