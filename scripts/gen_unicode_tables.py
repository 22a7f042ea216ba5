#!/usr/bin/env python3
# scripts/gen_unicode_tables.py: writes loaders/unicode_tables.h, the code-point range tables the
# tokenizers need, taken from the `tokenizers` library itself so that hamu classifies every code
# point as the library does (its Oniguruma, regex crate and Rust standard library each follow their
# own Unicode version, newer than Python's unicodedata):
#   kLetter, kNumber  Oniguruma's \p{L} and \p{N} (the Split/ByteLevel regexes)
#   kUpperOrMark, kLowerOrMark
#                     Oniguruma's [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}] (GPT-4o's regex)
#   kWord             the regex crate's \w (added tokens' single_word), via the Whitespace pre-tokenizer
#   kNumeric          Rust's char::is_numeric (the Digits pre-tokenizer)
#   kPunctuation      what the Punctuation pre-tokenizer cuts (ASCII punctuation and Unicode P*)
#   kCombiningClass, kDecomposition, kComposition
#                     canonical combining classes, full canonical decompositions and the pairs that
#                     compose, for the NFD and NFC normalizers (the library's normalization tables
#                     are older than its regex ones: each entry is checked against its NFD/NFC)
# The \s class is checked against unicode::is_space's hard-coded list (White_Space).
#
# Run: python3 scripts/gen_unicode_tables.py > loaders/unicode_tables.h
import sys
import unicodedata

import tokenizers
from tokenizers import Regex, normalizers, pre_tokenizers

ALL = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
SPACE = {9, 10, 11, 12, 13, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000}


def onig_class(pattern):
    """Code points the library's Oniguruma matches with `pattern` (one character)."""
    rest = pre_tokenizers.Split(Regex(pattern), "removed").pre_tokenize_str("".join(map(chr, ALL)))
    outside = set()
    for piece, _ in rest:
        outside.update(map(ord, piece))
    return set(ALL) - outside


def isolated_by(pre_tokenizer, sep="!"):
    """Code points a pre-tokenizer cuts out alone from between `sep`s (which it keeps together)."""
    text = sep + sep.join(chr(cp) for cp in ALL if cp != ord(sep)) + sep
    return {ord(p) for p, _ in pre_tokenizer.pre_tokenize_str(text) if len(p) == 1 and p != sep}


HANGUL = range(0xAC00, 0xD7A4)  # decomposed and composed by formula, not by table


def per_char(normalizer, cps):
    """The normalizer's output for each code point alone ('\\n' separates them and is left alone)."""
    out = normalizer.normalize_str("\n".join(map(chr, cps))).split("\n")
    assert len(out) == len(cps)
    return out


def normalization_tables():
    cps = [cp for cp in ALL if cp != 10 and cp not in HANGUL]
    decomposition = {cp: [ord(c) for c in d] for cp, d in zip(cps, per_char(normalizers.NFD(), cps)) if d != chr(cp)}
    # Combining classes never change once assigned, so Python's values hold for every mark the library
    # knows; a mark it does not know (newer than its tables) has class 0 there. A known mark is
    # reordered before U+0334 (class 1), or after U+0301 (class 230) when its own class is 1.
    marks = [cp for cp in ALL if unicodedata.combining(chr(cp))]
    probes = ["a" + chr(cp) + "\u0334" if unicodedata.combining(chr(cp)) > 1 else "a\u0301" + chr(cp) for cp in marks]
    got = normalizers.NFD().normalize_str("\n".join(probes)).split("\n")
    ccc = {}
    for cp, probe, out in zip(marks, probes, got):
        if out != probe:
            ccc[cp] = unicodedata.combining(chr(cp))
    # Pairs: the two-character canonical mappings that the library's NFC composes back.
    pairs = []
    for cp in cps:
        d = unicodedata.decomposition(chr(cp)).split()
        if len(d) == 2 and not d[0].startswith("<"):
            pairs.append((int(d[0], 16), int(d[1], 16), cp))
    composed = normalizers.NFC().normalize_str("\n".join(chr(a) + chr(b) for a, b, _ in pairs)).split("\n")
    composition = sorted((a, b, c) for (a, b, c), out in zip(pairs, composed) if out == chr(c))
    return ccc, decomposition, composition


def ranges(cps):
    out = []
    for cp in sorted(cps):
        if out and cp == out[-1][1] + 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def emit_rows(name, items, what, type_name):
    print(f"// {what}: {len(items)} entries.")
    print(f"inline constexpr {type_name} {name}[] = {{")
    line = "   "
    for text in items:
        item = f" {text},"
        if len(line) + len(item) > 100:
            print(line)
            line = "   "
        line += item
    print(line)
    print("};")
    print()


def emit(name, rs, what):
    emit_rows(name, [f"{{0x{lo:X}, 0x{hi:X}}}" for lo, hi in rs], what + " (ranges)", "CodeRange")


def main():
    space = onig_class(r"\s")
    if space != SPACE:
        sys.exit(f"Oniguruma's \\s differs from unicode::is_space: {sorted(space ^ SPACE)}")
    letters, numbers = onig_class(r"\p{L}"), onig_class(r"\p{N}")
    upper = onig_class(r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]")
    lower = onig_class(r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]")
    word = isolated_by(pre_tokenizers.Whitespace())
    numeric = isolated_by(pre_tokenizers.Digits(individual_digits=True))
    punctuation = isolated_by(pre_tokenizers.Punctuation("isolated"), sep="a")
    version = tokenizers.__version__
    print("// loaders/unicode_tables.h: code-point range tables for the tokenizers (generated; do not edit).")
    print(f"// Generated by scripts/gen_unicode_tables.py from the classes tokenizers {version} applies.")
    print("#pragma once")
    print("#include <cstdint>")
    print()
    print("namespace hamu::unicode_tables {")
    print()
    print(f'inline constexpr const char* kTokenizersVersion = "{version}";')
    print()
    print("struct CodeRange {")
    print("  uint32_t lo, hi;  // inclusive")
    print("};")
    print()
    emit("kLetter", ranges(letters), "Oniguruma's \\p{L}")
    emit("kNumber", ranges(numbers), "Oniguruma's \\p{N}")
    emit("kUpperOrMark", ranges(upper), "Oniguruma's [\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]")
    emit("kLowerOrMark", ranges(lower), "Oniguruma's [\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]")
    emit("kWord", ranges(word), "The regex crate's \\w")
    emit("kNumeric", ranges(numeric), "Rust's char::is_numeric")
    emit("kPunctuation", ranges(punctuation), "The Punctuation pre-tokenizer's characters")
    ccc, decomposition, composition = normalization_tables()
    runs = []
    for cp in sorted(ccc):
        if runs and cp == runs[-1][1] + 1 and ccc[cp] == runs[-1][2]:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, ccc[cp]])
    print("struct ClassRange {")
    print("  uint32_t lo, hi;  // inclusive")
    print("  uint8_t ccc;")
    print("};")
    print()
    print("struct Composition {")
    print("  uint32_t first, second, composed;")
    print("};")
    print()
    emit_rows("kCombiningClass", [f"{{0x{lo:X}, 0x{hi:X}, {c}}}" for lo, hi, c in runs],
              "Canonical combining classes (the nonzero ones) as the library's NFD orders marks", "ClassRange")
    flat = []
    for cp in sorted(decomposition):
        flat += [cp, len(decomposition[cp])] + decomposition[cp]
    emit_rows("kDecomposition", [f"0x{x:X}" for x in flat],
              f"Full canonical decompositions of {len(decomposition)} code points (Hangul syllables aside), as "
              "code point, length, then the decomposition", "uint32_t")
    emit_rows("kComposition", [f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}" for a, b, c in composition],
              "Pairs that NFC composes, sorted", "Composition")
    print("}  // namespace hamu::unicode_tables")


if __name__ == "__main__":
    main()
