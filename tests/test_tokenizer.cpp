// tests/test_tokenizer.cpp: tokenizer.json BPE against the `tokenizers` library's ids (fixtures), the
// GPT-2 split, UTF-8 helpers, the BPE trainer, and every bad-input case.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "engine/error.h"
#include "engine/json.h"
#include "loaders/template.h"
#include "loaders/tokenizer.h"
#include "loaders/tokenizer_internal.h"
#include "loaders/unicode.h"

using namespace hamu;

namespace {

const std::string kFixtures = (std::filesystem::path(__FILE__).parent_path() / "fixtures" / "tokenizers").string();
const char* const kFixtureNames[] = {"gpt2-bpe",   "llama-bpe",  "llama-metaspace", "llama3-bpe",  "qwen2-bpe",
                                     "mixed-bpe",  "falcon-bpe", "o200k-bpe",       "roberta-bpe", "subword-bpe"};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<Json> read_jsonl(const std::string& path) {
  std::vector<Json> rows;
  std::istringstream in(read_all(path));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(Json::parse(line));
  return rows;
}

std::vector<int32_t> ids_of(const Json& j) {
  std::vector<int32_t> out;
  for (const Json& v : j.as_array()) out.push_back(v.get<int32_t>());
  return out;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s + "]";
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/hamu_tok_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = path + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
};

// The InputError message loading `text` as a tokenizer.json gives ("" when it loads).
std::string load_error(const TempDir& dir, const std::string& text) {
  const std::string p = dir.write("tokenizer.json", text);
  try {
    Tokenizer::load(p);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

Tokenizer fixture(const std::string& name) { return Tokenizer::load(kFixtures + "/" + name); }

}  // namespace

TEST_SUITE("tokenizer") {

TEST_CASE("fixtures: ids and decoded text identical to the tokenizers library") {
  for (const char* name : kFixtureNames) {
    CAPTURE(name);
    const Tokenizer tok = fixture(name);
    const auto rows = read_jsonl(kFixtures + "/" + name + "/expected.jsonl");
    REQUIRE(rows.size() >= 60);
    int checked = 0;
    for (const Json& row : rows) {
      const std::string& text = row["text"].as_string();
      CAPTURE(text);
      const auto want = ids_of(row["ids"]), want_plain = ids_of(row["ids_plain"]);
      const auto got = tok.encode(text, true), got_plain = tok.encode(text, false);
      CHECK_MESSAGE(got == want, show(got) << " != " << show(want));
      CHECK_MESSAGE(got_plain == want_plain, show(got_plain) << " != " << show(want_plain));
      CHECK(tok.decode(want, false) == row["decoded"].as_string());
      CHECK(tok.decode(want, true) == row["decoded_skip"].as_string());
      ++checked;
    }
    CHECK(checked == int(rows.size()));
  }
}

TEST_CASE("fixtures: bos/eos, post-processor prefix, vocab size") {
  const Tokenizer gpt2 = fixture("gpt2-bpe"), llama = fixture("llama-bpe");
  CHECK(gpt2.prefix_ids().empty());
  CHECK(gpt2.eos_id() == gpt2.token_to_id("<|endoftext|>"));
  CHECK(gpt2.vocab_size() == 705);
  REQUIRE(llama.prefix_ids().size() == 1);
  CHECK(llama.prefix_ids()[0] == llama.token_to_id("<s>"));
  CHECK(llama.bos_id() == llama.token_to_id("<s>"));
  CHECK(llama.eos_id() == llama.token_to_id("</s>"));
  CHECK(llama.id_to_token(llama.eos_id()) == "</s>");
  CHECK(llama.token_to_id("no such token") == -1);
  CHECK(llama.id_to_token(1 << 20) == "");
}

TEST_CASE("merges in the older \"a b\" string form give the same ids") {
  TempDir dir;
  Json j = Json::parse(read_all(kFixtures + "/gpt2-bpe/tokenizer.json"));
  Json& merges = j["model"]["merges"];
  size_t converted = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json pair = merges[i];
    const std::string a = pair[size_t(0)].as_string(), b = pair[size_t(1)].as_string();
    if (a.find(' ') != std::string::npos || b.find(' ') != std::string::npos) continue;  // not expressible
    merges[i] = Json(a + " " + b);
    ++converted;
  }
  REQUIRE(converted == merges.size());
  const Tokenizer old_form = Tokenizer::load(dir.write("tokenizer.json", j.dump()));
  const Tokenizer new_form = fixture("gpt2-bpe");
  for (const Json& row : read_jsonl(kFixtures + "/gpt2-bpe/expected.jsonl"))
    CHECK(old_form.encode(row["text"].as_string()) == new_form.encode(row["text"].as_string()));
}

TEST_CASE("decode(encode(x)) == x for byte-level BPE on random Unicode") {
  const Tokenizer tok = fixture("gpt2-bpe");
  std::mt19937 rng(std::random_device{}());
  const uint32_t pool[] = {'a', 'Z', ' ', ' ', '\n', '\t', '\'', 's', '1', '.', 0xE9, 0x301, 0x4E2D, 0x1F600, 0x3000, 0xA0, 0x10FFFF};
  for (int trial = 0; trial < 200; ++trial) {
    std::string s;
    const int n = int(rng() % 30);
    for (int k = 0; k < n; ++k) unicode::append_utf8(s, pool[rng() % std::size(pool)]);
    CAPTURE(s);
    CHECK(tok.decode(tok.encode(s, false)) == s);
  }
}

TEST_CASE("invalid UTF-8 input is an InputError naming the tokenizer") {
  const Tokenizer tok = fixture("gpt2-bpe");
  try {
    tok.encode(std::string("ok \xC3(", 5));
    FAIL("no error");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find("gpt2-bpe") != std::string::npos);
    CHECK(std::string(e.what()).find("UTF-8") != std::string::npos);
  }
}

TEST_CASE("GPT-2 split pattern by hand") {
  auto split = [](const std::string& s) {
    std::vector<std::pair<size_t, size_t>> r;
    tok::gpt2_split(s, r);
    std::vector<std::string> out;
    for (auto [a, b] : r) out.push_back(s.substr(a, b - a));
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(split("Hello world") == V{"Hello", " world"});
  CHECK(split("a  b") == V{"a", " ", " b"});
  CHECK(split("a   ") == V{"a", "   "});
  CHECK(split("a \nb") == V{"a", " ", "\n", "b"});
  CHECK(split("it's 'sup") == V{"it", "'s", " '", "sup"});
  CHECK(split("x123 !!?") == V{"x", "123", " !!?"});
  CHECK(split("\xC3\xA9t\xC3\xA9 42") == V{"\xC3\xA9t\xC3\xA9", " 42"});
  CHECK(split("") == V{});
}

TEST_CASE("UTF-8 helpers: lossy repair replaces maximal invalid subparts") {
  CHECK(unicode::utf8_lossy("abc") == "abc");
  CHECK(unicode::utf8_lossy("a\xF0\x9F\x98") == "a\xEF\xBF\xBD");           // truncated 4-byte: one U+FFFD
  CHECK(unicode::utf8_lossy("\xC0\xAF") == "\xEF\xBF\xBD\xEF\xBF\xBD");      // overlong: two
  CHECK(unicode::utf8_lossy("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
  CHECK(unicode::invalid_utf8_at("ok\xFF") == 2);
  CHECK(unicode::is_letter(0x4E2D));
  CHECK(unicode::is_number(0x2167));  // Roman numeral eight (Nl)
  CHECK(!unicode::is_letter(0x301));
  CHECK(unicode::is_word(0x301));
  CHECK(unicode::is_space(0x3000));
  CHECK(std::string(unicode::tables_version()) == "0.23.3");
}

TEST_CASE("Unicode classes are the library's, newer than Python's unicodedata") {
  // The library's Oniguruma knows Unicode 16 letters (Python 3.11's tables stop at 14, where these
  // were unassigned and split as punctuation), and Rust's is_numeric knows Unicode 17 digits.
  CHECK(unicode::is_letter(0x1C89));   // Cyrillic, Unicode 16
  CHECK(unicode::is_letter(0x11F18));  // Kawi, Unicode 15
  CHECK(unicode::is_letter(0x31350));  // CJK extension H, Unicode 15
  CHECK(unicode::is_numeric(0x11DE0));
  CHECK(!unicode::is_number(0x11DE0));  // not yet in Oniguruma's \p{N}
  CHECK(unicode::is_numeric(0x663));
  CHECK(!unicode::is_numeric('a'));
  for (const uint32_t c : {'$', '+', '<', '^', '`', '|', '~', '!', '_'}) CHECK(unicode::is_punctuation(c));  // ASCII: symbols too
  CHECK(unicode::is_punctuation(0x2014));   // em dash (Pd)
  CHECK(!unicode::is_punctuation(0x20AC));  // euro sign (Sc)
  CHECK(!unicode::is_punctuation('a'));
}

TEST_CASE("NFD and NFC as the library normalizes") {
  CHECK(unicode::nfd("\xC3\xA9") == "e\xCC\x81");                          // é
  CHECK(unicode::nfc("e\xCC\x81") == "\xC3\xA9");
  CHECK(unicode::nfd("a\xCC\x81\xCC\xA3") == "a\xCC\xA3\xCC\x81");           // marks ordered by class
  CHECK(unicode::nfc("a\xCC\x81\xCC\xA3") == "\xE1\xBA\xA1\xCC\x81");       // ạ then the acute
  CHECK(unicode::nfc("\xE2\x84\xAB") == "\xC3\x85");                          // Angstrom sign -> Å
  CHECK(unicode::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");  // jamo -> 각
  CHECK(unicode::nfd("\xEA\xB0\x81") == "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8");
  CHECK(unicode::nfc("\xE0\xAD\x87\xE0\xAC\xBE") == "\xE0\xAD\x8B");        // Oriya two-part vowel
  CHECK(unicode::nfc("a\xCC\xB4\xCC\x81") == "\xC3\xA1\xCC\xB4");            // U+0334 (class 1) does not block
  CHECK(unicode::nfc("  ") == "  ");
  CHECK(unicode::nfc("") == "");
}

TEST_CASE("Llama 3 and Qwen2 split patterns by hand") {
  auto split = [](tok::SplitRegex kind, const std::string& s) {
    std::vector<std::pair<size_t, size_t>> r;
    tok::regex_split(kind, s, r);
    std::vector<std::string> out;
    for (auto [a, b] : r) out.push_back(s.substr(a, b - a));
    return out;
  };
  using V = std::vector<std::string>;
  const auto l3 = tok::SplitRegex::llama3, qw = tok::SplitRegex::qwen2;
  CHECK(split(l3, "Hello world") == V{"Hello", " world"});
  CHECK(split(l3, "12345 x") == V{"123", "45", " x"});
  CHECK(split(qw, "12345") == V{"1", "2", "3", "4", "5"});
  CHECK(split(l3, "IT'S we'LL 'ſ") == V{"IT", "'S", " we", "'LL", " '", "\xC5\xBF"});  // (?i): also long s
  CHECK(split(l3, "x \n\n y") == V{"x", " \n\n", " y"});   // \s*[\r\n]+ ends at the last line break
  CHECK(split(l3, "a\r\n\tb") == V{"a", "\r\n", "\tb"});  // a tab (not CR/LF) leads a word
  CHECK(split(l3, "ok!!\n\nnext") == V{"ok", "!!\n\n", "next"});
  CHECK(split(l3, "a   b") == V{"a", "  ", " b"});
  CHECK(split(l3, "\xE2\x80\x94word") == V{"\xE2\x80\x94word"});  // one punctuation character leads a word
  tok::SplitRegex kind;
  CHECK(!tok::known_split_regex("\\w+", &kind));
  // GPT-4o: words split at case changes (an uppercase run keeps its last letter when lowercase
  // follows), contractions as suffixes, marks in words, '/' after punctuation.
  const auto o2 = tok::SplitRegex::o200k, tk = tok::SplitRegex::tekken;
  CHECK(split(o2, "camelCaseHTTPServer") == V{"camel", "Case", "HTTPServer"});
  CHECK(split(o2, "XMLHttpRequest's IT'S") == V{"XMLHttp", "Request's", " IT'S"});
  CHECK(split(tk, "XMLHttpRequest's 12345") == V{"XMLHttp", "Request", "'s", " ", "1", "2", "3", "4", "5"});
  CHECK(split(o2, "12345 a/b/\n") == V{"123", "45", " a", "/b", "/\n"});
  CHECK(split(o2, "\xCC\x81" "Ab") == V{"\xCC\x81" "Ab"});          // a mark leads the word
  CHECK(split(o2, "\xC7\x85ungla") == V{"\xC7\x85ungla"});     // titlecase ǅ (Lt) starts a word
  REQUIRE(tok::known_split_regex("[0-9][0-9][0-9]", &kind));  // Falcon: digit triples, the rest not matched
  CHECK(split(kind, "1234567 x12345") == V{"123", "456", "123"});
  CHECK(split(l3, "") == V{});
}

TEST_CASE("RobertaProcessing, BertProcessing and TemplateProcessing nest as the library applies them") {
  TempDir dir;
  // Each processor of a Sequence wraps what the ones before it produced (ids from the library).
  const Tokenizer t = Tokenizer::load(dir.write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3, "</s>": 4, "<unk>": 5},
      "merges": [["a", "b"]]}, "post_processor": {"type": "Sequence", "processors": [
      {"type": "RobertaProcessing", "sep": ["</s>", 4], "cls": ["<s>", 3], "trim_offsets": true, "add_prefix_space": true},
      {"type": "BertProcessing", "sep": ["<unk>", 5], "cls": ["<unk>", 5]},
      {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "</s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
       "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"</s>": {"id": "</s>", "ids": [4], "tokens": ["</s>"]}}}]}})"));
  CHECK(t.encode("abba") == std::vector<int32_t>{4, 5, 3, 2, 1, 0, 4, 5});
  CHECK(t.encode("abba", false) == std::vector<int32_t>{2, 1, 0});
  CHECK(t.prefix_ids() == std::vector<int32_t>{4, 5, 3});
}

TEST_CASE("added tokens take the library's ids, whatever ids the file writes") {
  TempDir dir;
  // The library ignores the ids in added_tokens: a token the model knows takes its id, a new one the
  // vocabulary size (entries, not the largest id + 1), then one past the largest added id.
  const Tokenizer t = Tokenizer::load(dir.write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
      "merges": [["a", "b"]]}, "added_tokens": [{"id": 40, "content": "<x>", "special": true}, {"id": 7, "content": "b"},
      {"id": 3, "content": "<y>"}]})"));
  CHECK(t.token_to_id("<x>") == 3);
  CHECK(t.token_to_id("b") == 1);
  CHECK(t.token_to_id("<y>") == 4);
  CHECK(t.vocab_size() == 5);
  CHECK(t.encode("ab<x>b<y>", false) == std::vector<int32_t>{0, 1, 3, 1, 4});  // the added "b" splits "ab"
  // A normalized added token is shown (id_to_token, decode) in its normalized form, as the library does;
  // skip_special_tokens compares that form, so a special one whose form changes is kept.
  const Tokenizer n = Tokenizer::load(dir.write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "A": 1, "h": 2}, "merges": []},
      "normalizer": {"type": "Replace", "pattern": {"String": "a"}, "content": "A"},
      "added_tokens": [{"id": 3, "content": "ha", "normalized": true}, {"id": 4, "content": "[a]", "special": true, "normalized": true}]})"));
  CHECK(n.encode("haha[a]", false) == std::vector<int32_t>{3, 3, 4});
  CHECK(n.id_to_token(3) == "hA");
  CHECK(n.decode({3, 4}, true) == "hA [A]");
}

TEST_CASE("bad tokenizer.json: one clear InputError naming the file and the cause") {
  TempDir dir;
  const std::string base = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}})";
  REQUIRE(load_error(dir, base) == "");
  CHECK(Tokenizer::load(dir.write("tokenizer.json", base)).encode("abba", false) == std::vector<int32_t>{2, 1, 0});
  const std::string full = read_all(kFixtures + "/llama-bpe/tokenizer.json");
  struct Case {
    std::string text, expect;
  };
  auto with_model = [](const std::string& model) { return R"({"model": )" + model + "}"; };
  const Case cases[] = {
      {full.substr(0, full.size() / 2), "(byte "},
      {full.substr(0, full.size() - 1), "(byte "},
      {"", "unexpected end"},
      {"[1, 2]", "expected a JSON object"},
      {"{}", "missing key 'model'"},
      {with_model(R"({"type": "WordPiece", "vocab": {"a": 0}})"), "unsupported model type 'WordPiece'"},
      {with_model(R"({"type": "Unigram", "vocab": [["a", 0.0]]})"), "unsupported model type 'Unigram'"},
      {with_model(R"({"type": "BPE", "vocab": {}, "merges": []})"), "vocab is empty"},
      {with_model(R"({"type": "BPE", "vocab": [1, 2], "merges": []})"), "vocab must be an object"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []})"), "duplicate id 0 for 'a' and 'b'"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0, "a": 1}, "merges": []})"), "duplicate key"},
      {with_model(R"({"type": "BPE", "vocab": {"a": -1}, "merges": []})"), "out of range"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 1000000000}, "merges": []})"), "out of range"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0.5}, "merges": []})"), "not an integer"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b c"]})"), "merges[0]"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["ab"]})"), "not two tokens"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [42]})"), "expected \"a b\""},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a"]]})"), "merges[0]"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "c"]]})"), "token 'c' is not in the vocabulary"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]})"), "merged token 'ab' is not in the vocabulary"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1})"), "dropout"},
      {with_model(R"({"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"})"), "unk_token '<unk>'"},
      {R"({"normalizer": {"type": "NFKC"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "unsupported normalizer type 'NFKC'"},
      {R"({"pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "unsupported pre_tokenizer type 'Whitespace'"},
      {R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"}]}, "model": {"type": "BPE", "vocab": {"a": 0}}})",
       "Split pre-tokenizer: unsupported Regex pattern \"\\\\w+\""},
      {R"({"pre_tokenizer": {"type": "Split", "pattern": {"String": ""}, "behavior": "Isolated"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "String pattern is empty"},
      {R"({"pre_tokenizer": {"type": "Split", "pattern": {"String": "x"}, "behavior": "Sideways"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "unknown behavior 'Sideways'"},
      {R"({"pre_tokenizer": {"type": "UnicodeScripts"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "unsupported pre_tokenizer type 'UnicodeScripts'"},
      {R"({"pre_tokenizer": {"type": "Punctuation", "behavior": "Sideways"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "Punctuation pre-tokenizer: unknown behavior"},
      {R"({"normalizer": {"type": "NFKD"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "unsupported normalizer type 'NFKD'"},
      {R"({"normalizer": {"type": "Lowercase"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "unsupported normalizer type 'Lowercase'"},
      {R"({"normalizer": {"type": "Replace", "pattern": {"Regex": " +"}, "content": " "}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "Regex pattern is not supported"},
      {R"({"normalizer": {"type": "Strip", "strip_left": true, "strip_right": true}, "added_tokens": [{"id": 1, "content": " "}], "model": {"type": "BPE", "vocab": {"a": 0}}})",
       "added token \" \" is normalized to an empty string"},
      {R"({"decoder": {"type": "WordPiece"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "unsupported decoder type 'WordPiece'"},
      {R"({"decoder": {"type": "Replace", "pattern": {"Regex": "x"}, "content": ""}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "Regex pattern is not supported"},
      {R"({"post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2]}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "missing key 'cls'"},
      {R"({"post_processor": {"type": "BertProcessing", "sep": ["</s>"], "cls": ["<s>", 0]}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "'sep' must be [\"token\", id]"},
      {R"({"post_processor": {"type": "Sequence", "processors": [{"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A"}}], "special_tokens": {}},
          {"type": "RobertaProcessing", "sep": ["a", 0], "cls": ["a", 0]}]}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "RobertaProcessing after a TemplateProcessing"},
      {R"({"post_processor": {"type": "ByteLevel"}, "decoder": {"type": "CTC"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "unsupported decoder type 'CTC'"},
      {R"({"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {}}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "'<s>' is not in special_tokens"},
      {R"({"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]}}}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "id 7 is not a token"},
      {R"({"added_tokens": [{"id": 9, "content": "<x>", "special": true}], "model": {"type": "BPE", "vocab": {"a": 0, "b": 2}}})", "gets id 2 (the library's rule), which is already 'b'"},
      {R"({"added_tokens": [{"id": -3, "content": "<x>"}], "model": {"type": "BPE", "vocab": {"a": 0}}})", "out of range"},
      {R"({"pre_tokenizer": {"type": "Metaspace", "replacement": "ab"}, "model": {"type": "BPE", "vocab": {"a": 0}}})", "must be one character"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text.substr(0, 200));
    const std::string err = load_error(dir, c.text);
    CHECK_MESSAGE(err.find(dir.path + "/tokenizer.json") == 0, err);
    CHECK_MESSAGE(err.find(c.expect) != std::string::npos, err);
  }
  // Missing file, a folder without tokenizer.json, a tokenizer_config.json naming an absent token.
  CHECK_THROWS_WITH_AS(Tokenizer::load(dir.path + "/nope.json"), doctest::Contains("no such file"), InputError);
  TempDir empty;
  CHECK_THROWS_WITH_AS(Tokenizer::load(empty.path), doctest::Contains("tokenizer.json: no such file"), InputError);
  dir.write("tokenizer.json", base);
  dir.write("tokenizer_config.json", R"({"eos_token": "</s>"})");
  CHECK_THROWS_WITH_AS(Tokenizer::load(dir.path), doctest::Contains("eos_token '</s>' is not a token"), InputError);
  dir.write("tokenizer_config.json", R"({"eos_token": {"content": "ab"}, "bos_token": "a"})");
  const Tokenizer named = Tokenizer::load(dir.path);
  CHECK(named.eos_id() == 2);
  CHECK(named.bos_id() == 0);
}

TEST_CASE("hostile sizes are refused before allocating") {
  TempDir dir;
  // A vocabulary with a huge id gap would size id_to_token by the id: refused.
  std::string vocab = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 4000000}, "merges": []}})";
  CHECK(load_error(dir, vocab).find("out of range") != std::string::npos);
  // More merges than tokens.
  std::string merges = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a","b"],["a","b"],["a","b"],["a","b"]]}})";
  CHECK(load_error(dir, merges).find("more entries") != std::string::npos);
  // Deep nesting is cut off by the JSON parser's depth limit.
  // A file above the size cap is refused unread (a sparse file: nothing is really written).
  const std::string big = dir.write("big.json", "{");
  std::filesystem::resize_file(big, (size_t(64) << 20) + 1);
  CHECK_THROWS_WITH_AS(Tokenizer::load(big), doctest::Contains("allowed for a tokenizer.json"), InputError);
  const std::string deep = load_error(dir, std::string(100000, '['));
  CHECK_MESSAGE(deep.find(dir.path + "/tokenizer.json: ") == 0, deep);
}

// A varied corpus for the trainer: English-like sentences, numbers, punctuation, some Unicode.
std::vector<std::string> train_corpus(uint32_t seed, int n) {
  const char* words[] = {"the", "author", "wrote", "novel", "about", "river", "city", "forget", "retain", "model",
                         "question", "answer", "it's", "they'll", "caf\xC3\xA9", "\xE6\x9D\xB1\xE4\xBA\xAC", "na\xC3\xAFve", "Paris", "1999", "42"};
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string s;
    const int k = 3 + int(rng() % 10);
    for (int w = 0; w < k; ++w) {
      if (w) s += rng() % 9 ? " " : "  ";
      s += words[rng() % std::size(words)];
    }
    s += rng() % 2 ? "." : "!\n";
    if (rng() % 7 == 0) s += "<|endoftext|>";
    out.push_back(s);
  }
  return out;
}

TEST_CASE("BPE trainer: deterministic, loadable, reproduces its corpus compression, round-trips") {
  const auto corpus = train_corpus(7, 400);
  BpeTrainOptions opt;
  opt.vocab_size = 330;
  const BpeTrainResult a = train_bpe(corpus, opt), b = train_bpe(corpus, opt);
  CHECK(a.json == b.json);
  CHECK(a.merges == 330 - 1 - 256);
  CHECK(a.corpus_tokens * 3 < a.corpus_bytes);  // merges compress the corpus
  TempDir dir;
  const Tokenizer tok = Tokenizer::load(dir.write("tokenizer.json", a.json));
  CHECK(tok.vocab_size() == 330);
  CHECK(tok.token_to_id("<|endoftext|>") == 0);
  CHECK(tok.eos_id() == 0);
  // Encoding the training corpus with the learned merges gives exactly the trainer's token count.
  int64_t tokens = 0;
  const int32_t eot = tok.token_to_id("<|endoftext|>");
  for (const std::string& doc : corpus)
    for (const int32_t id : tok.encode(doc, false)) tokens += id != eot;
  CHECK(tokens == a.corpus_tokens);
  // Held-out text, with characters the corpus never had, round-trips.
  for (const std::string s : {"Held-out text: 12345 caf\xC3\xA9 \xF0\x9F\x98\x80\n\ttab  end  ", "", " ", "<|endoftext|>x"}) {
    CAPTURE(s);
    CHECK(tok.decode(tok.encode(s)) == s);
  }
  // A different corpus gives a different vocabulary (the test can fail).
  CHECK(train_bpe(train_corpus(8, 400), opt).json != a.json);
}

TEST_CASE("BPE trainer: tie-break and stopping rules") {
  BpeTrainOptions opt;
  opt.vocab_size = 1 + 256 + 1;
  // "ab" and "cd" both occur twice; the byte-wise smaller pair ("a","b") wins.
  const BpeTrainResult r = train_bpe({"cd", "ab", "cd", "ab"}, opt);
  const Json j = Json::parse(r.json);
  REQUIRE(j["model"]["merges"].size() == 1);
  CHECK(j["model"]["merges"][size_t(0)].dump() == R"(["a","b"])");
  // min_frequency: nothing occurs twice, so nothing is merged.
  opt.vocab_size = 1000;
  CHECK(train_bpe({"abcdefg"}, opt).merges == 0);
  opt.min_frequency = 1;
  CHECK(train_bpe({"abcdefg"}, opt).merges == 6);
  opt.vocab_size = 0;
  CHECK_THROWS_AS(train_bpe({"x"}, opt), InputError);
  opt.vocab_size = 300;
  CHECK_THROWS_AS(train_bpe({std::string("\xFF")}, opt), InputError);
  opt.special_tokens = {"a"};
  CHECK_THROWS_AS(train_bpe({"x"}, opt), InputError);
}

TEST_CASE("templates: ids and label masks identical to the Python computation") {
  std::map<std::string, Tokenizer> toks;
  for (const char* name : kFixtureNames) toks.emplace(name, fixture(name));
  const auto rows = read_jsonl(kFixtures + "/templates.jsonl");
  REQUIRE(rows.size() >= 50);
  std::map<std::string, int> per_template;
  for (const Json& row : rows) {
    const std::string name = row["tokenizer"].as_string(), tmpl = row["template"].as_string();
    CAPTURE(name);
    CAPTURE(tmpl);
    CAPTURE(row["question"].as_string());
    const QaTokens qa = tokenize_qa(toks.at(name), parse_template(tmpl), row["question"].as_string(), row["answer"].as_string());
    CHECK_MESSAGE(qa.ids == ids_of(row["ids"]), show(qa.ids) << " != " << show(ids_of(row["ids"])));
    CHECK(qa.labels == ids_of(row["labels"]));
    CHECK(qa.n_prompt == row["n_prompt"].as_int());
    CHECK(!qa.truncated);
    ++per_template[tmpl];
  }
  CHECK(per_template.size() == 3);
}

TEST_CASE("templates: prompts, end tokens, errors") {
  const Tokenizer gpt2 = fixture("gpt2-bpe"), llama = fixture("llama-bpe");
  CHECK(template_prompt(PromptTemplate::plain, "Q?") == "Question: Q?\nAnswer: ");
  CHECK(template_prompt(PromptTemplate::llama2_chat, "Q?") == "[INST] Q? [/INST] ");
  CHECK(template_prompt(PromptTemplate::chatml, "Q?") == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n");
  CHECK(template_end_id(PromptTemplate::plain, llama) == llama.token_to_id("</s>"));
  CHECK(template_end_id(PromptTemplate::chatml, gpt2) == gpt2.token_to_id("<|im_end|>"));
  CHECK_THROWS_WITH_AS(template_end_id(PromptTemplate::chatml, llama), doctest::Contains("template chatml needs token <|im_end|>"), InputError);
  CHECK_THROWS_WITH_AS(parse_template("alpaca"), doctest::Contains("unknown template 'alpaca'"), InputError);
  for (const char* n : {"plain", "llama2-chat", "chatml"}) CHECK(std::string(template_name(parse_template(n))) == n);
  // Llama: BOS first and masked; the answer's tokens and EOS carry loss.
  const QaTokens qa = tokenize_qa(llama, PromptTemplate::llama2_chat, "Who?", "Alice.");
  CHECK(qa.ids.front() == llama.bos_id());
  CHECK(qa.ids.back() == llama.eos_id());
  CHECK(qa.labels.front() == kIgnoreLabel);
  CHECK(qa.labels.back() == llama.eos_id());
  CHECK(qa.n_prompt == int64_t(llama.encode("[INST] Who? [/INST] ").size()));
}

TEST_CASE("templates: truncation counted, or refused") {
  const Tokenizer tok = fixture("llama-bpe");
  const std::string long_answer(400, 'x');
  QaTemplateOptions opt;
  opt.max_length = 16;
  const QaTokens qa = tokenize_qa(tok, PromptTemplate::plain, "Why?", long_answer, opt);
  CHECK(qa.truncated);
  CHECK(qa.length() == 16);
  CHECK(qa.labels.size() == 16);
  const QaTokens full = tokenize_qa(tok, PromptTemplate::plain, "Why?", long_answer);
  CHECK(std::equal(qa.ids.begin(), qa.ids.end(), full.ids.begin()));
  CHECK(std::equal(qa.labels.begin(), qa.labels.end(), full.labels.begin()));
  const auto batch = tokenize_qa_pairs(tok, PromptTemplate::plain, {{"Why?", long_answer}, {"Q", "A"}, {std::string(300, 'q'), "A"}}, opt);
  CHECK(batch.truncated == 2);
  CHECK(batch.warning.find("2 of 3 QA pairs truncated to 16 tokens") != std::string::npos);
  CHECK(batch.warning.find("1 keep no answer token") != std::string::npos);
  CHECK(!batch.pairs[1].truncated);
  opt.overlong = Overlong::refuse;
  CHECK_THROWS_WITH_AS(tokenize_qa(tok, PromptTemplate::plain, "Why?", long_answer, opt), doctest::Contains("more than max_length 16"), InputError);
  CHECK(tokenize_qa_pairs(tok, PromptTemplate::plain, {{"Q", "A"}}, opt).warning.empty());
}

TEST_CASE("encoding speed (reported, not asserted)") {
  // A few thousand QA pairs must tokenise in well under a second on one core.
  const Tokenizer tok = fixture("llama-bpe"), gpt2 = fixture("gpt2-bpe");
  std::vector<std::pair<std::string, std::string>> pairs;
  for (int i = 0; i < 3000; ++i)
    pairs.push_back({"What did author " + std::to_string(i) + " write about the river in Zürich?",
                     "The author wrote a novel about the city and its history, published in " + std::to_string(1900 + i % 120) + "."});
  int64_t bytes = 0;
  for (const auto& [q, a] : pairs) bytes += int64_t(q.size() + a.size());
  for (const Tokenizer* t : {&tok, &gpt2}) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto batch = tokenize_qa_pairs(*t, PromptTemplate::plain, pairs);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE(t->source() << ": 3000 QA pairs in " << s << " s, " << (2 * bytes / s / 1e6) << " MB/s (prompt encoded twice)");
    CHECK(batch.pairs.size() == 3000);
  }
}

}  // TEST_SUITE
