// loaders/text_split.cpp: --split SPEC for QA data (fraction, group, forget file; holdout or test file)
// and the duplicates of forget pairs added to retain.
#include "loaders/text_split.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "engine/error.h"
#include "engine/rng.h"
#include "loaders/text_spec.h"

namespace hamu {
namespace {

// Independent streams of the split's seed, so adding a holdout does not move the fraction's draw.
constexpr uint64_t kHoldoutStream = 1, kFractionStream = 2;

struct ParsedSplit {
  std::string kind, value;  // fraction / group / forget and its text
  double fraction = 0, holdout = 0;
  std::string test_file;
  DuplicateSpec dup;
  uint64_t seed = 0;
};

[[noreturn]] void bad(const std::string& spec, const std::string& why) {
  throw InputError("--split " + spec + ": " + why);
}

double parse_open_fraction(const std::string& spec, const std::string& key, const std::string& text) {
  double v = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || !(v > 0.0 && v < 1.0))
    bad(spec, key + " '" + text + "' is not a number in (0, 1)");
  return v;
}

ParsedSplit parse_split(const std::string& spec, const TextSplitOptions& opt) {
  ParsedSplit s;
  s.seed = opt.default_seed;
  std::string dup_text;
  for (const auto& [k, v] : parse_text_options("--split", spec, split_text_commas(spec))) {
    if (k == "fraction" || k == "group" || k == "forget") {
      if (!s.kind.empty()) bad(spec, "give exactly one of fraction=X, group=NAME, forget=FILE");
      s.kind = k;
      s.value = v;
      if (k == "fraction") s.fraction = parse_open_fraction(spec, k, v);
    } else if (k == "holdout") {
      s.holdout = parse_open_fraction(spec, k, v);
    } else if (k == "test") {
      s.test_file = v;
    } else if (k == "duplicates") {
      dup_text = v;
    } else if (k == "seed") {
      const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), s.seed);
      if (ec != std::errc() || p != v.data() + v.size()) bad(spec, "seed '" + v + "' is not a non-negative integer");
    } else {
      bad(spec, "unknown key '" + k + "' (text splits: fraction=X, group=NAME or forget=FILE, then holdout=X, "
                "test=FILE, duplicates=MODE, seed=N)");
    }
  }
  if (s.kind.empty()) bad(spec, "needs one of fraction=X, group=NAME, forget=FILE");
  if (!opt.test_file.empty() && !s.test_file.empty() && opt.test_file != s.test_file)
    bad(spec, "test=" + s.test_file + " and --test " + opt.test_file + " disagree");
  if (s.test_file.empty()) s.test_file = opt.test_file;
  if (!s.test_file.empty() && s.holdout > 0) bad(spec, "holdout=X and a test file both give the test set; choose one");
  const DuplicateSpec from_flag = parse_duplicates(opt.duplicates), from_spec = parse_duplicates(dup_text);
  if (!opt.duplicates.empty() && !dup_text.empty() && from_flag.canonical != from_spec.canonical)
    bad(spec, "duplicates=" + dup_text + " and --duplicates " + opt.duplicates + " disagree");
  s.dup = dup_text.empty() ? from_flag : from_spec;
  return s;
}

std::string canonical(const ParsedSplit& s) {
  std::string c = s.kind + "=" + (s.kind == "fraction" ? exact_number_text(s.fraction) : s.value);
  if (s.holdout > 0) c += ",holdout=" + exact_number_text(s.holdout);
  if (!s.test_file.empty()) c += ",test=" + s.test_file;
  if (s.dup.mode != DuplicateMode::none) c += ",duplicates=" + s.dup.canonical;
  return c + ",seed=" + std::to_string(s.seed);
}

// round(x * n) positions of `pool` drawn at random (at least 1, at most n - 1), returned ascending;
// the rest stays in `pool`, in order.
std::vector<size_t> draw(std::vector<size_t>& pool, double x, Rng rng, const std::string& spec, const char* what) {
  const int64_t n = int64_t(pool.size());
  const int64_t k = std::max<int64_t>(1, std::llround(x * double(n)));
  if (k >= n)
    bad(spec, std::string(what) + " would take all " + std::to_string(n) + " remaining pairs and leave none");
  const std::vector<int64_t> perm = rng.permutation(n);
  std::vector<bool> taken(size_t(n), false);
  for (int64_t i = 0; i < k; ++i) taken[size_t(perm[size_t(i)])] = true;
  std::vector<size_t> chosen, rest;
  for (int64_t i = 0; i < n; ++i) (taken[size_t(i)] ? chosen : rest).push_back(pool[size_t(i)]);
  pool = std::move(rest);
  return chosen;
}

// "noun.act (195), noun.animal (200), ..." for the group-not-found message, largest groups first.
std::string list_groups(const QaDataset& data) {
  std::map<std::string, int64_t> counts;
  for (const auto& p : data.pairs)
    if (!p.group.empty()) ++counts[p.group];
  std::vector<std::pair<std::string, int64_t>> v(counts.begin(), counts.end());
  std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string out;
  const size_t shown = std::min<size_t>(v.size(), 8);
  for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + v[i].first + " (" + std::to_string(v[i].second) + ")";
  if (v.size() > shown) out += " and " + std::to_string(v.size() - shown) + " more";
  return out;
}

std::vector<QaPair> pick(const QaDataset& data, const std::vector<size_t>& idx) {
  std::vector<QaPair> out;
  out.reserve(idx.size());
  for (size_t i : idx) out.push_back(data.pairs[i]);
  return out;
}

QaPair duplicate_of(const QaPair& source_pair, const QaParaphrase& para) {
  QaPair d;
  d.question = para.question;
  d.answer = para.answer;
  d.group = source_pair.group;
  d.line = source_pair.line;
  return d;
}

void add_duplicates(const ParsedSplit& s, const QaFields& fields, const std::string& spec, TextSplit& out) {
  const int64_t n_forget = int64_t(out.forget.size());
  if (s.dup.mode == DuplicateMode::exact) {
    out.duplicate = out.forget;
    for (auto& d : out.duplicate) d.paraphrases.clear();
  } else if (s.dup.mode == DuplicateMode::semantic && s.dup.file.empty()) {
    for (const auto& f : out.forget) {
      if (f.paraphrases.empty()) ++out.forget_without_duplicate;
      else out.duplicate.push_back(duplicate_of(f, f.paraphrases.front()));
    }
    if (out.duplicate.empty())
      bad(spec, "--duplicates semantic: none of the " + std::to_string(n_forget) +
                    " forget pairs has paraphrases (a 'paraphrases' field in the data; or use dup:FILE.jsonl)");
  } else if (s.dup.mode == DuplicateMode::semantic) {
    const QaDataset rows = read_qa_file(s.dup.file, fields);
    std::unordered_map<std::string, size_t> forget_by_question;
    for (size_t i = 0; i < out.forget.size(); ++i) forget_by_question.emplace(out.forget[i].question, i);
    std::vector<bool> covered(out.forget.size(), false);
    int64_t unmatched = 0, linked_rows = 0;
    for (const auto& r : rows.pairs) {
      if (r.paraphrases.empty()) {
        QaPair d = r;
        out.duplicate.push_back(std::move(d));
        continue;
      }
      ++linked_rows;
      const auto it = forget_by_question.find(r.question);
      if (it == forget_by_question.end()) {
        ++unmatched;
      } else if (!covered[it->second]) {
        covered[it->second] = true;
        out.duplicate.push_back(duplicate_of(out.forget[it->second], r.paraphrases.front()));
      }
    }
    if (linked_rows > 0) out.forget_without_duplicate = int64_t(std::count(covered.begin(), covered.end(), false));
    if (unmatched > 0)
      out.notes.push_back("--duplicates dup:" + s.dup.file + ": " + std::to_string(unmatched) +
                          " rows with paraphrases match no forget question (ignored)");
    if (out.duplicate.empty())
      bad(spec, "--duplicates dup:" + s.dup.file + ": no row of it is a duplicate of one of the " +
                    std::to_string(n_forget) + " forget pairs");
  }
  if (out.forget_without_duplicate > 0)
    out.notes.push_back("--duplicates " + s.dup.canonical + ": " + std::to_string(out.forget_without_duplicate) +
                        " of " + std::to_string(n_forget) + " forget pairs have no paraphrase");
  for (auto& d : out.duplicate) d.paraphrases.clear();
  out.retain.insert(out.retain.end(), out.duplicate.begin(), out.duplicate.end());
}

}  // namespace

DuplicateSpec parse_duplicates(const std::string& text) {
  DuplicateSpec d;
  if (text.empty() || text == "none") {
    d.mode = DuplicateMode::none;
  } else if (text == "exact") {
    d.mode = DuplicateMode::exact;
  } else if (text == "semantic") {
    d.mode = DuplicateMode::semantic;
  } else if (text.rfind("dup:", 0) == 0 && text.size() > 4) {
    d.mode = DuplicateMode::semantic;
    d.file = text.substr(4);
  } else {
    throw InputError("--duplicates " + text + ": expected none, exact, semantic or dup:FILE.jsonl");
  }
  d.canonical = d.file.empty() ? (d.mode == DuplicateMode::none ? "none" : d.mode == DuplicateMode::exact ? "exact" : "semantic")
                               : "dup:" + d.file;
  return d;
}

TextSplit make_text_split(const std::string& spec, const QaDataset& data, const TextSplitOptions& opt) {
  const ParsedSplit s = parse_split(spec, opt);
  TextSplit out;
  out.seed = s.seed;
  out.spec = canonical(s);
  const Rng rng(s.seed);
  std::vector<size_t> pool(data.pairs.size());
  for (size_t i = 0; i < pool.size(); ++i) pool[i] = i;

  if (s.kind == "forget") {
    out.forget = read_qa_file(s.value, opt.fields).pairs;
    std::unordered_set<std::string> keys;
    for (const auto& f : out.forget) keys.insert(qa_key(f));
    std::vector<size_t> rest;
    for (size_t i : pool)
      if (!keys.count(qa_key(data.pairs[i]))) rest.push_back(i);
    out.removed_from_data = int64_t(pool.size() - rest.size());
    pool = std::move(rest);
    if (pool.empty()) bad(spec, "every pair of " + data.source + " is in the forget file; no retain pairs are left");
  }
  if (s.holdout > 0) out.test = pick(data, draw(pool, s.holdout, Rng(rng).fork(kHoldoutStream), spec, "holdout"));
  if (!s.test_file.empty()) out.test = read_qa_file(s.test_file, opt.fields).pairs;

  if (s.kind == "fraction") {
    out.forget = pick(data, draw(pool, s.fraction, Rng(rng).fork(kFractionStream), spec, "fraction"));
  } else if (s.kind == "group") {
    std::vector<size_t> forget, rest;
    for (size_t i : pool) (data.pairs[i].group == s.value ? forget : rest).push_back(i);
    if (forget.empty()) {
      int64_t in_data = 0;
      for (const auto& p : data.pairs) in_data += p.group == s.value;
      if (in_data > 0) bad(spec, "empty forget set: all " + std::to_string(in_data) + " pairs of group '" + s.value + "' went to the holdout");
      const std::string groups = list_groups(data);
      bad(spec, "group '" + s.value + "' matches no pair of " + data.source +
                    (groups.empty() ? " (no pair has a 'group' field)" : " (groups: " + groups + ")"));
    }
    if (rest.empty()) bad(spec, "group '" + s.value + "' holds every pair; no retain pairs are left");
    out.forget = pick(data, forget);
    pool = std::move(rest);
  }
  if (out.forget.empty()) bad(spec, "empty forget set");
  out.retain = pick(data, pool);
  add_duplicates(s, opt.fields, spec, out);

  if (!out.test.empty()) {
    std::unordered_set<std::string> train;
    for (const auto* v : {&out.forget, &out.retain})
      for (const auto& p : *v) train.insert(qa_key(p));
    int64_t overlap = 0;
    for (const auto& p : out.test) overlap += train.count(qa_key(p)) > 0;
    if (overlap > 0)
      out.notes.push_back(std::to_string(overlap) + " of " + std::to_string(out.test.size()) +
                          " test pairs also appear in the training pairs");
  }
  return out;
}

}  // namespace hamu
