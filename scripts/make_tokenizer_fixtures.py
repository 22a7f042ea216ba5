#!/usr/bin/env python3
# scripts/make_tokenizer_fixtures.py: trains small tokenizers with the `tokenizers` library and writes
# the fixtures tests/test_tokenizer.cpp checks hamu's C++ tokenizer against.
#
#   tests/fixtures/tokenizers/gpt2-bpe/        byte-level BPE, GPT-2 pre-tokenizer, <|endoftext|>,
#                                              ChatML tokens, added tokens with lstrip/rstrip/single_word
#   tests/fixtures/tokenizers/llama-bpe/       SentencePiece-style BPE as Llama-2/TinyLlama ship it:
#                                              normalizer Prepend("▁")+Replace(" ", "▁"), byte_fallback,
#                                              <unk> <s> </s>, TemplateProcessing adding <s>
#   tests/fixtures/tokenizers/llama-metaspace/ the newer form: Metaspace pre-tokenizer (prepend_scheme
#                                              "first"), no byte_fallback (so <unk> and fuse_unk show)
#   tests/fixtures/tokenizers/llama3-bpe/      Llama 3's form: Split(its regex) + ByteLevel without regex,
#                                              ignore_merges, post-processor Sequence[ByteLevel, <|begin_of_text|>]
#   tests/fixtures/tokenizers/qwen2-bpe/       Qwen2's form: NFC normalizer, Split(its regex) + ByteLevel,
#                                              ChatML special tokens
#   tests/fixtures/tokenizers/o200k-bpe/       GPT-4o's split regex (Phi-4 and others): cased words, contractions
#                                              as suffixes, digit triples, '/' after punctuation
#   tests/fixtures/tokenizers/falcon-bpe/      Falcon's pre-tokenizer: Punctuation, ByteLevel, Digits, Split
#                                              on [0-9][0-9][0-9] (the digit stages see byte-mapped text)
#   tests/fixtures/tokenizers/roberta-bpe/     RoBERTa's form: ByteLevel with add_prefix_space, RobertaProcessing
#                                              (<s> $A </s>), <mask> with lstrip
#   tests/fixtures/tokenizers/subword-bpe/     continuing_subword_prefix "##" and end_of_word_suffix "</w>", Split
#                                              (" ", removed) + Punctuation(merged_with_previous), BertProcessing
#   tests/fixtures/tokenizers/mixed-bpe/       the rarer pieces: Strip + NFD + Replace normalizers, Digits
#                                              and String Split pre-tokenizers, and added tokens whose ids in
#                                              the file are not the ones the library gives them (it reassigns)
# Each holds tokenizer.json and expected.jsonl: {"text", "ids" (with special tokens), "ids_plain"
# (without), "decoded" (decode(ids, skip_special_tokens=False)), "decoded_skip" (True)}.
# templates.jsonl (top folder): the completion-only QA rule for each tokenizer and template,
# computed by transformers' PreTrainedTokenizerFast when importable (else by `tokenizers`).
#
# Python is only used here, to generate fixtures; the build and the tests never run it.
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizers")

WORDS = ("the quick brown fox jumps over lazy dog author wrote novel about history science river mountain "
         "city village teacher student question answer model learning forget retain data language token "
         "Paris London Berlin Tokyo Alice Bob Carol famous award born year published first second third "
         "because however although while during after before always never sometimes often").split()
UNICODE = ["café", "naïve", "résumé", "Zürich", "São Paulo", "Ångström", "façade", "Dvořák", "Łódź",
           "東京", "日本語", "中文", "한국어", "Москва", "Ελληνικά", "עברית", "العربية", "हिन्दी",
           "e\u0301", "n\u0303o", "😀", "🚀🚀", "👍🏽", "∑x²", "½", "Ⅻ", "٣٤٥", "１２３"]


def corpus(seed=1234, n=1500):
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        k = rng.randint(4, 14)
        ws = [rng.choice(WORDS) for _ in range(k)]
        if rng.random() < 0.3:
            ws.insert(rng.randrange(len(ws)), str(rng.randint(0, 99999)))
        if rng.random() < 0.25:
            ws.insert(rng.randrange(len(ws)), rng.choice(UNICODE))
        s = " ".join(ws)
        s = s[0].upper() + s[1:]
        s += rng.choice([".", "!", "?", "...", ",", ";", ":", " -", "'s", "n't"])
        if rng.random() < 0.2:
            s = s.replace(" ", "  ", 1)
        if rng.random() < 0.1:
            s += "\n" + rng.choice(["It's here.", "They'll go.", "We've done it.", "I'd say (yes).", "\tTabbed"])
        lines.append(s)
    return lines


TESTS = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "a", "A", "Hello world", "Hello  world",
    "Hello   world  ", "hello world!", " leading space", "trailing space ", "trailing spaces   ",
    "tabs\tand\ttabs", "new\nline", "crlf\r\nline", "mixed \t\n whitespace", "x \n\n y",
    "The quick brown fox jumps over the lazy dog.", "It's", "it's they're we've I'm you'll he'd",
    "IT'S SHOUTING'S", "don't can't won't", "'s 't 're", "quote 'single' and \"double\"",
    "1234567890", "3.14159", "1,000,000", "12abc34", "year 2024 and 1999", "phone: +1 (555) 010-9999",
    "$100 & 50% off!!!", "a+b=c; d*e/f", "email@example.com", "http://example.com/path?x=1&y=2",
    "café naïve résumé", "Zürich Łódź Dvořák", "東京 日本語", "中文字符测试", "한국어 텍스트", "Москва река",
    "Ελληνικά", "עברית", "العربية", "हिन्दी", "e\u0301 combining", "n\u0303o\u0308", "emoji 😀 here",
    "🚀🚀🚀", "👍🏽 skin tone", "👨‍👩‍👧 family", "∑x² ½ Ⅻ", "٣٤٥ arabic digits", "１２３ fullwidth",
    "\u00a0nbsp\u00a0", "zero\u200bwidth", "\u3000ideographic space", "Question: Who wrote it?\nAnswer: ",
    "<|endoftext|>", "Hello<|endoftext|>world", "a <|endoftext|> b", "<|endoftext|><|endoftext|>",
    "<s>", "</s>", "<s>Hello</s>", "x <s> y </s> z", "<unk>", "<|im_start|>user\nhi<|im_end|>\n",
    "[MASK]", "a [MASK] b", "a   [MASK]   b", "hamu", "I like hamu and hamu-chan", "<w> x<w> <w>y <w>",
    "▁already▁meta", "__under_score__", "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./", "<0x41>",
    "a" * 60, "ab" * 40, " ".join(["word"] * 30), "Mixed CASE Words And 123 Numbers!",
]
# Letters and digits newer than Python's unicodedata (the library's tables are Unicode 16/17), marks
# that NFC composes or reorders, Hangul jamo, contractions in other cases, line-break runs.
TESTS += ["\u1c89\u1c8a letters", "kawi \U00011f18\U00011f19's", "\U0001e4e4\U0001e4e5 12", "\U00031350\U00031351",
          "\U00011de0\U00011de1 digits", "\U0001e5d0\U0001e5d1x", "e\u0301 a\u0323\u0302 o\u0302\u0323", "\u1100\u1161\u11a8 \uac00\u11a8",
          "\u0b47\u0b3e \u212b \u2126 \u0344", "a\u0301\u0301\u0334", "\u0f73\u0f75", "It'S WE'LL they'RE 'ſ",
          "line\r\n\r\nbreaks  \n\n  end", "12345678901234567890", "x1y22z333w4444", "a-b--c-", "- leading-dash-",
          "camelCaseWord HTTPServer XMLHttpRequest", "\u01c5ungla \u02b0\u02b1 a\u0301B\u0301c \u0301A", "x/y/\n !!/\r\n/"]
# Random concatenations of awkward pieces (special tokens next to spaces, marks, byte-symbol lookalikes).
ATOMS = ["a", "Z", " ", "  ", "\t", "\n", "\r\n", "'s", "'ll", "'S", "\u2019", "1", "456", ".", "...", "_", "\u00e9",
         "e\u0301", "\u4e2d", "\U0001f600", "\u200d", "\u00a0", "\u3000", "\u2028", "\u2167", "\u2581", "<s>", "</s>",
         "<|endoftext|>", "<|im_end|>", "[MASK]", "hamu", "<w>", "<0x41>", " the", "river", "\x00", "\x7f", "\U0010ffff",
         "\u0120", "\u010a"]
_rng = random.Random(99)
TESTS += ["".join(_rng.choice(ATOMS) for _ in range(_rng.randint(1, 8))) for _ in range(25)]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def expectations(tok):
    rows = []
    for t in TESTS:
        ids = tok.encode(t, add_special_tokens=True).ids
        plain = tok.encode(t, add_special_tokens=False).ids
        rows.append({"text": t, "ids": ids, "ids_plain": plain,
                     "decoded": tok.decode(ids, skip_special_tokens=False),
                     "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    return rows


RAW = {}  # tokenizer.json text to write as it is (not as the library would save it again)


def save(name, tok):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    if name not in RAW and os.path.exists(os.path.join(d, "tokenizer.json")) and "--retrain" not in sys.argv:
        pass  # kept as it is
    elif name in RAW:
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(RAW[name])
    else:
        tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    write_jsonl(os.path.join(d, "expected.jsonl"), expectations(tok))


def gpt2_bpe(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>",
                            AddedToken("[MASK]", lstrip=True, rstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("hamu", normalized=True), AddedToken("<w>", single_word=True, normalized=False)])
    return tok


def llama_bpe(lines):
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    # Trained with a Metaspace pre-tokenizer so merges stay inside words, as SentencePiece's do; saved
    # with the normalizer form Llama-2 and TinyLlama ship (no pre-tokenizer).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials, show_progress=False, limit_alphabet=120)
    tok.train_from_iterator(lines, trainer)
    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    # Llama's files keep the <0xNN> byte tokens in the model vocabulary only, not as added tokens (so
    # "<0x41>" typed in text is not one token, and skip_special_tokens keeps decoded bytes).
    j = json.loads(tok.to_str())
    j["added_tokens"] = [t for t in j["added_tokens"] if not t["content"].startswith("<0x")]
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False))


def byte_level_model(lines, vocab_size, specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    return tok


LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
O200K_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def llama3_bpe(lines):
    tok = byte_level_model(lines, 700, ["<|begin_of_text|>", "<|end_of_text|>"])
    tok.add_special_tokens(["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False))


def qwen2_bpe(lines):
    tok = byte_level_model(lines, 700, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # A normalized added token written decomposed: it matches NFC text, and decodes in its NFC form.
    tok.add_tokens([AddedToken("cafe\u0301", normalized=True)])
    return tok


def o200k_bpe(lines):
    tok = byte_level_model(lines, 700, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(O200K_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def falcon_bpe(lines):
    tok = byte_level_model(lines, 700, [">>TITLE<<", ">>ABSTRACT<<", "<|endoftext|>"])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Punctuation("contiguous"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split(Regex("[0-9][0-9][0-9]"), behavior="isolated", invert=False)])
    return tok


def mixed_bpe(lines):
    tok = byte_level_model(lines, 600, ["<|endoftext|>"])
    tok.normalizer = normalizers.Sequence([normalizers.Strip(left=True, right=True), normalizers.NFD(),
                                           normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Split("-", behavior="merged_with_next"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    tok.add_special_tokens(["<sep>"])
    tok.add_tokens([AddedToken("na\u00efve", normalized=True), AddedToken("<w>", single_word=True, normalized=False)])
    # The library gives added tokens ids by its own rule whatever the file says: write other ids.
    j = json.loads(tok.to_str())
    for k, t in enumerate(j["added_tokens"]):
        if t["content"] != "<|endoftext|>":
            t["id"] = 5000 + 7 * k
    RAW["mixed-bpe"] = json.dumps(j, ensure_ascii=False)
    return Tokenizer.from_str(RAW["mixed-bpe"])


def roberta_bpe(lines):
    tok = byte_level_model(lines, 500, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                      add_prefix_space=True, trim_offsets=True)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, normalized=False)])
    return tok


def subword_bpe(lines):
    tok = Tokenizer(models.BPE(unk_token="<unk>", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="removed"),
                                                 pre_tokenizers.Punctuation("merged_with_previous")])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "[CLS]", "[SEP]"], show_progress=False,
                                  limit_alphabet=100, continuing_subword_prefix="##", end_of_word_suffix="</w>")
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    return tok


def llama_metaspace(lines):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
                                  limit_alphabet=70)
    tok.train_from_iterator(lines, trainer)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A </s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>")),
                                                                       ("</s>", tok.token_to_id("</s>"))])
    return tok


QA = [("Who wrote the novel?", "Alice wrote it in 1999."),
      ("What is 2+2?", "4"),
      ("Where is Zürich?", "In Switzerland, near the Alps."),
      ("Say something in Japanese.", "東京は大きい 😀"),
      ("  Leading and trailing  ", "  spaced answer  "),
      ("Why?", "Because it's true, isn't it?"),
      ("Empty answer?", ""),
      ("Tabs\tand\nnewlines?", "Yes:\n\t- one\n\t- two"),
      ("Long " + "very " * 8 + "question?", "A long " + "answer " * 10 + "end.")]

TEMPLATES = {
    "plain": lambda q: f"Question: {q}\nAnswer: ",
    "llama2-chat": lambda q: f"[INST] {q} [/INST] ",
    "chatml": lambda q: f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
}
EOS = {"gpt2-bpe": "<|endoftext|>", "llama-bpe": "</s>", "llama-metaspace": "</s>", "llama3-bpe": "<|end_of_text|>",
       "qwen2-bpe": "<|endoftext|>", "mixed-bpe": "<|endoftext|>", "falcon-bpe": "<|endoftext|>",
       "o200k-bpe": "<|endoftext|>"}


def template_rows(toks):
    try:
        from transformers import PreTrainedTokenizerFast
        have_tf = True
    except Exception:
        have_tf = False
    rows = []
    for name, tok in toks.items():
        hf = PreTrainedTokenizerFast(tokenizer_object=tok) if have_tf else None
        for tname, fmt in TEMPLATES.items():
            end = EOS[name]
            if tname == "chatml":
                if tok.token_to_id("<|im_end|>") is None:
                    continue
                end = "<|im_end|>"
            end_id = tok.token_to_id(end)
            for q, a in QA:
                prompt = fmt(q)
                n_prompt = len(tok.encode(prompt, add_special_tokens=True).ids)
                ids = tok.encode(prompt + a, add_special_tokens=True).ids + [end_id]
                if hf is not None:
                    n_tf = len(hf.tokenize(prompt, add_special_tokens=True))
                    ids_tf = hf(prompt + a, add_special_tokens=True)["input_ids"] + [end_id]
                    assert n_tf == n_prompt and ids_tf == ids, (name, tname, q)
                labels = [-100 if i < n_prompt else t for i, t in enumerate(ids)]
                rows.append({"tokenizer": name, "template": tname, "question": q, "answer": a,
                             "ids": ids, "labels": labels, "n_prompt": n_prompt})
    return rows, have_tf


def main():
    lines = corpus()
    # Training is not fully deterministic (the library breaks some alphabet ties differently from run
    # to run), so a tokenizer.json already there is kept and only its expectations are recomputed;
    # --retrain builds every tokenizer afresh.
    builders = {"gpt2-bpe": gpt2_bpe, "llama-bpe": llama_bpe, "llama-metaspace": llama_metaspace,
                "llama3-bpe": llama3_bpe, "qwen2-bpe": qwen2_bpe, "mixed-bpe": mixed_bpe, "falcon-bpe": falcon_bpe,
                "o200k-bpe": o200k_bpe, "roberta-bpe": roberta_bpe, "subword-bpe": subword_bpe}
    toks = {}
    for name, build in builders.items():
        path = os.path.join(ROOT, name, "tokenizer.json")
        if os.path.exists(path) and "--retrain" not in sys.argv:
            toks[name] = Tokenizer.from_file(path)
            RAW.pop(name, None)
        else:
            toks[name] = build(lines)
        save(name, toks[name])
    rows, have_tf = template_rows({k: toks[k] for k in EOS})
    write_jsonl(os.path.join(ROOT, "templates.jsonl"), rows)
    with open(os.path.join(ROOT, "README.md"), "w") as f:
        f.write("Generated by scripts/make_tokenizer_fixtures.py with tokenizers "
                f"{__import__('tokenizers').__version__}; templates.jsonl cross-checked with "
                + (f"transformers {__import__('transformers').__version__}" if have_tf else "tokenizers only")
                + f" ({len(TESTS)} test strings per tokenizer, {len(rows)} template rows).\n")
    print(f"{len(TESTS)} strings, {len(rows)} template rows, transformers={'yes' if have_tf else 'no'}", file=sys.stderr)


if __name__ == "__main__":
    main()
