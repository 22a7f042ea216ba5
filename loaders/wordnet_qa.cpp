// loaders/wordnet_qa.cpp: WordNet data-file parsing and the wordnet-qa sample built from its nouns.
#include "loaders/wordnet_qa.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <unordered_map>

#include "engine/error.h"
#include "engine/rng.h"
#include "loaders/dataset.h"

namespace hamu {
namespace {

// data.noun is 15 MB; anything far larger is not a WordNet data file.
constexpr int64_t kMaxWordnetFileBytes = int64_t(256) << 20;

// lexnames(5WN): the fixed table of lexicographer files (Debian's wordnet-base ships no lexnames file).
const std::vector<std::string>& lexnames() {
  static const std::vector<std::string> names = {
      "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
      "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food",
      "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon",
      "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape",
      "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
      "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
      "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
      "verb.weather", "adj.ppl"};
  return names;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Reads the fields of a synset line left to right, each checked against its fixed format.
class Fields {
 public:
  Fields(std::string_view text, const std::string& where) : where_(where) {
    size_t pos = 0;
    while (pos < text.size()) {
      while (pos < text.size() && text[pos] == ' ') ++pos;
      const size_t start = pos;
      while (pos < text.size() && text[pos] != ' ') ++pos;
      if (pos > start) tokens_.push_back(text.substr(start, pos - start));
    }
  }
  std::string_view next(const char* what) {
    if (i_ >= tokens_.size()) fail(std::string("the line ends before its ") + what);
    return tokens_[i_++];
  }
  // A fixed-width number in base 10 or 16.
  int64_t number(const char* what, size_t width, bool hex) {
    const std::string_view t = next(what);
    bool ok = t.size() == width;
    int64_t v = 0;
    for (char c : t) {
      ok = ok && (hex ? is_hex(c) : is_digit(c));
      v = v * (hex ? 16 : 10) + (is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    if (!ok)
      fail(std::string(what) + " '" + std::string(t) + "' is not " + std::to_string(width) +
           (hex ? " hexadecimal" : " decimal") + " digit" + (width > 1 ? "s" : ""));
    return v;
  }
  char pos_char(const char* what) {
    const std::string_view t = next(what);
    if (t.size() != 1 || std::string_view("nvasr").find(t[0]) == std::string_view::npos)
      fail(std::string(what) + " '" + std::string(t) + "' is not one of n, v, a, s, r");
    return t[0];
  }
  bool done() const { return i_ == tokens_.size(); }
  [[noreturn]] void fail(const std::string& why) const { throw InputError(where_ + ": " + why); }

 private:
  const std::string& where_;
  std::vector<std::string_view> tokens_;
  size_t i_ = 0;
};

std::string strip_marker(std::string_view word) {
  for (std::string_view m : {"(a)", "(p)", "(ip)"})
    if (word.size() > m.size() && word.substr(word.size() - m.size()) == m) return std::string(word.substr(0, word.size() - m.size()));
  return std::string(word);
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int count_words(std::string_view s) {
  int n = 0;
  bool in_word = false;
  for (char c : s) {
    if (is_space(c)) in_word = false;
    else if (!in_word) in_word = true, ++n;
  }
  return n;
}

bool usable_lemma_text(const std::string& t, int max_words) {
  if (t.empty() || t[0] < 'a' || t[0] > 'z') return false;
  for (char c : t)
    if (!((c >= 'a' && c <= 'z') || c == ' ' || c == '-' || c == '\'')) return false;
  return t.back() != ' ' && t.find("  ") == std::string::npos && count_words(t) <= max_words;
}

}  // namespace

const std::string& wordnet_lexname(int lex_filenum) {
  if (lex_filenum < 0 || lex_filenum >= int(lexnames().size()))
    throw InputError("lex_filenum " + std::to_string(lex_filenum) + " is not a WordNet lexicographer file (0..44)");
  return lexnames()[size_t(lex_filenum)];
}

WordnetSynset parse_wordnet_line(std::string_view line, const std::string& where) {
  const size_t bar = line.find('|');
  if (bar == std::string_view::npos) throw InputError(where + ": no '|' before the gloss");
  Fields f(line.substr(0, bar), where);
  WordnetSynset s;
  s.offset = f.number("synset_offset", 8, false);
  s.lex_filenum = int(f.number("lex_filenum", 2, false));
  if (s.lex_filenum >= int(lexnames().size()))
    f.fail("lex_filenum " + std::to_string(s.lex_filenum) + " is not a lexicographer file (00..44)");
  s.ss_type = f.pos_char("ss_type");
  const int64_t w_cnt = f.number("w_cnt", 2, true);
  if (w_cnt == 0) f.fail("w_cnt is 0 (a synset has at least one word)");
  for (int64_t i = 0; i < w_cnt; ++i) {
    s.words.push_back(strip_marker(f.next("word")));
    f.number("lex_id", 1, true);
  }
  const int64_t p_cnt = f.number("p_cnt", 3, false);
  for (int64_t i = 0; i < p_cnt; ++i) {
    const std::string_view sym = f.next("pointer_symbol");
    if (sym.size() > 2) f.fail("pointer_symbol '" + std::string(sym) + "' is longer than two characters");
    f.number("pointer synset_offset", 8, false);
    f.pos_char("pointer pos");
    f.number("pointer source/target", 4, true);
  }
  if (s.ss_type == 'v') {
    const int64_t f_cnt = f.number("f_cnt", 2, false);
    for (int64_t i = 0; i < f_cnt; ++i) {
      if (f.next("frame '+'") != "+") f.fail("a verb frame does not start with '+'");
      f.number("f_num", 2, false);
      f.number("w_num", 2, true);
    }
  }
  if (!f.done()) f.fail("unexpected fields before the '|' (the counts do not match the fields)");
  s.gloss = std::string(trim(line.substr(bar + 1)));
  return s;
}

std::vector<WordnetSynset> read_wordnet_data(const std::string& path) {
  if (!std::filesystem::exists(path))
    throw InputError(path + ": no such file; wordnet-qa is built from WordNet 3.0: run scripts/install-deps.sh "
                            "(or apt-get install wordnet-base)");
  const std::vector<uint8_t> bytes = read_file_bytes(path, kMaxWordnetFileBytes);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::vector<WordnetSynset> out;
  size_t pos = 0;
  for (int64_t line_no = 1; pos < text.size(); ++line_no) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.substr(0, 2) == "  " || trim(line).empty()) continue;  // licence header, trailing blank line
    out.push_back(parse_wordnet_line(line, path + ":" + std::to_string(line_no)));
    out.back().line = line_no;
  }
  if (out.empty()) throw InputError(path + ": no synset lines in it");
  return out;
}

std::string wordnet_definition(std::string_view gloss) {
  std::string_view d = gloss.substr(0, gloss.find("; \""));
  d = trim(d);
  while (!d.empty() && (d.back() == ';' || is_space(d.back()))) d.remove_suffix(1);
  if (!d.empty() && d.front() == '"') return "";  // a gloss of examples only
  return std::string(d);
}

std::string wordnet_lemma_text(std::string_view word) {
  std::string t = strip_marker(word);
  std::replace(t.begin(), t.end(), '_', ' ');
  return t;
}

std::string wordnet_question(std::string_view lemma) {
  const bool vowel = !lemma.empty() && std::string_view("aeiouAEIOU").find(lemma[0]) != std::string_view::npos;
  return std::string("What is ") + (vowel ? "an " : "a ") + std::string(lemma) + "?";
}

std::vector<QaPair> wordnet_qa_candidates(const std::vector<WordnetSynset>& nouns, const WordnetQaRules& rules) {
  // How many noun synsets each lemma names (case-insensitively, once per synset).
  std::unordered_map<std::string, int> senses;
  for (const auto& s : nouns) {
    std::vector<std::string> seen;
    for (const auto& w : s.words) {
      std::string l = lower(wordnet_lemma_text(w));
      if (std::find(seen.begin(), seen.end(), l) == seen.end()) seen.push_back(std::move(l));
    }
    for (auto& l : seen) ++senses[l];
  }
  std::vector<QaPair> out;
  for (const auto& s : nouns) {
    if (s.ss_type != 'n') continue;
    const std::string answer = wordnet_definition(s.gloss);
    const int n_words = count_words(answer);
    if (n_words < 1 || n_words > rules.max_answer_words) continue;
    QaPair p;
    for (const auto& w : s.words) {
      const std::string t = wordnet_lemma_text(w);
      if (!usable_lemma_text(t, rules.max_lemma_words) || senses[t] != 1) continue;
      const std::string q = wordnet_question(t);
      if (p.question.empty()) p.question = q;
      else if (q != p.question) p.paraphrases.push_back({q, answer});
    }
    if (p.question.empty()) continue;
    p.answer = answer;
    p.group = wordnet_lexname(s.lex_filenum);
    p.line = s.line;
    out.push_back(std::move(p));
  }
  return out;
}

QaDataset sample_wordnet_qa(const std::vector<QaPair>& candidates, const WordnetQaOptions& options) {
  const std::string spec = wordnet_qa_spec(options);
  if (!(options.animal_share >= 0.0 && options.animal_share <= 1.0))
    throw InputError(spec + ": the noun.animal share must be in [0, 1]");
  // Pools: [animal][has paraphrases], indices into candidates in file order.
  std::vector<size_t> pools[2][2];
  for (size_t i = 0; i < candidates.size(); ++i)
    pools[candidates[i].group == "noun.animal"][!candidates[i].paraphrases.empty()].push_back(i);
  const int64_t want_animal = std::llround(double(options.size) * options.animal_share);
  const int64_t want[2] = {options.size - want_animal, want_animal};
  const int64_t have[2] = {int64_t(pools[0][0].size() + pools[0][1].size()), int64_t(pools[1][0].size() + pools[1][1].size())};
  if (options.size < 1 || want[0] > have[0] || want[1] > have[1])
    throw InputError(spec + ": the size must be at least 1 and leave at most " + std::to_string(have[1]) +
                     " noun.animal pairs and " + std::to_string(have[0]) +
                     " others (the usable synsets of this WordNet); asked for " + std::to_string(want[1]) + " and " +
                     std::to_string(want[0]));
  Rng rng(options.seed);
  std::vector<size_t> chosen;
  for (int animal = 0; animal < 2; ++animal) {
    Rng r = rng.fork(uint64_t(animal) + 1);
    int64_t left = want[animal];
    for (int with_para = 1; with_para >= 0 && left > 0; --with_para) {
      std::vector<size_t> pool = pools[animal][with_para];
      r.shuffle(pool);
      const int64_t take = std::min<int64_t>(left, int64_t(pool.size()));
      chosen.insert(chosen.end(), pool.begin(), pool.begin() + take);
      left -= take;
    }
  }
  std::sort(chosen.begin(), chosen.end());
  QaDataset out;
  out.source = spec;
  out.pairs.reserve(chosen.size());
  for (size_t i : chosen) out.pairs.push_back(candidates[i]);
  return out;
}

std::string wordnet_qa_spec(const WordnetQaOptions& options) {
  std::string s = "wordnet-qa:" + std::to_string(options.size);
  if (options.seed != 0) s += ",seed=" + std::to_string(options.seed);
  if (options.dir != kWordnetDir) s += ",dir=" + options.dir;
  return s;
}

QaDataset build_wordnet_qa(const WordnetQaOptions& options) {
  const std::vector<WordnetSynset> nouns = read_wordnet_data(options.dir + "/data.noun");
  return sample_wordnet_qa(wordnet_qa_candidates(nouns, options.rules), options);
}

}  // namespace hamu
