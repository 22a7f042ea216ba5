// loaders/unicode.h: the UTF-8 and Unicode-class helpers the tokenizers need (no regex library).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace hamu::unicode {

// Decodes the code point starting at s[i] and sets `len` to its byte length. Returns -1 (len 1) on
// invalid UTF-8 (bad lead byte, bad continuation, overlong form, surrogate, beyond U+10FFFF).
int32_t decode_utf8(std::string_view s, size_t i, int* len);
// Appends the UTF-8 encoding of a valid code point.
void append_utf8(std::string& out, uint32_t cp);
// Byte offset of the first invalid UTF-8 sequence, or npos when `s` is valid.
size_t invalid_utf8_at(std::string_view s);
// Rust's String::from_utf8_lossy (and Python's errors="replace"): each maximal invalid subpart
// becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// The classes as the `tokenizers` library applies them (the tables are taken from it): \p{L} and
// \p{N} of its Oniguruma (split regexes), the regex crate's \w (single_word), Rust's
// char::is_numeric (Digits), ASCII punctuation and Unicode P* (Punctuation), and \s, which all of
// them define as White_Space (9-13, 0x20, 0x85, 0xA0, Zs, U+2028, U+2029).
bool is_letter(uint32_t cp);
bool is_number(uint32_t cp);
// GPT-4o's cased-word classes: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}].
bool is_upper_or_mark(uint32_t cp);
bool is_lower_or_mark(uint32_t cp);
bool is_word(uint32_t cp);
bool is_numeric(uint32_t cp);
bool is_punctuation(uint32_t cp);
bool is_space(uint32_t cp);

// Canonical decomposition (NFD) and composition (NFC) of valid UTF-8, with the library's tables.
std::string nfd(std::string_view s);
std::string nfc(std::string_view s);

// The `tokenizers` version the tables were taken from (loaders/unicode_tables.h).
const char* tables_version();

}  // namespace hamu::unicode
