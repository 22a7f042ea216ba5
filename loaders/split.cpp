// loaders/split.cpp: --split SPEC -> forget/retain index lists (class, class+rho, random, index file).
#include "loaders/split.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <unordered_map>

#include "engine/error.h"
#include "engine/rng.h"
#include "loaders/dataset.h"
#include "loaders/number_text.h"

namespace hamu {
namespace {

// Index files are small text; a gigabyte of them is not a forget list.
constexpr int64_t kMaxIndexFileBytes = int64_t(1) << 30;

[[noreturn]] void bad(const std::string& spec, const std::string& why) {
  throw InputError("--split " + spec + ": " + why);
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

template <class Int>
bool parse_int(const std::string& text, Int& v) {
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  return ec == std::errc() && p == text.data() + text.size() && !text.empty();
}

bool parse_double(const std::string& text, double& v) {
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  return ec == std::errc() && p == text.data() + text.size() && !text.empty() && std::isfinite(v);
}

int32_t parse_class(const std::string& spec, const std::string& text, int32_t num_classes,
                    const std::vector<std::string>& names) {
  int64_t c = -1;
  if (!parse_int(text, c)) {
    for (size_t i = 0; i < names.size(); ++i)
      if (lower(names[i]) == lower(text)) return int32_t(i);
    bad(spec, "class '" + text + "' is neither a class index nor a class name");
  }
  if (c < 0 || c >= num_classes)
    bad(spec, "class " + text + " is out of range (the data set has classes 0.." + std::to_string(num_classes - 1) + ")");
  return int32_t(c);
}

std::vector<int64_t> read_index_file(const std::string& spec, const std::string& path, int64_t n) {
  std::vector<uint8_t> bytes;
  try {
    bytes = read_file_bytes(path, kMaxIndexFileBytes);
  } catch (const InputError& e) {
    bad(spec, std::string("cannot read the index file: ") + e.what());
  }
  std::vector<int64_t> out;
  std::unordered_map<int64_t, int64_t> first_line;  // index -> line where it first appeared
  const std::string text(bytes.begin(), bytes.end());
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    const std::string where = path + " line " + std::to_string(line_no) + ": ";
    int64_t idx = 0;
    if (!parse_int(line, idx)) bad(spec, where + "'" + line + "' is not an integer index");
    if (idx < 0 || idx >= n)
      bad(spec, where + "index " + line + " is out of range (the training set has " + std::to_string(n) + " images)");
    const auto [it, inserted] = first_line.emplace(idx, line_no);
    if (!inserted) bad(spec, where + "index " + line + " repeats line " + std::to_string(it->second));
    out.push_back(idx);
  }
  return out;
}

}  // namespace

std::vector<int64_t> complement_indices(const std::vector<int64_t>& forget, int64_t n) {
  std::vector<char> in_forget(size_t(n), 0);
  for (int64_t i : forget) in_forget[size_t(i)] = 1;
  std::vector<int64_t> out;
  out.reserve(size_t(n) - std::min(size_t(n), forget.size()));
  for (int64_t i = 0; i < n; ++i)
    if (!in_forget[size_t(i)]) out.push_back(i);
  return out;
}

std::vector<int64_t> class_rho_forget(const std::vector<int32_t>& labels, int32_t cls, double rho, uint64_t seed) {
  const int64_t n = int64_t(labels.size());
  Rng rng(seed);
  if (rho >= 1.0) {
    // The reference special-cases rho == 1 as HF train_test_split(test_size=0.1): a uniformly random
    // ceil(0.1*N) of the whole training set, the class ignored, in permuted order. We do the same
    // (with our Rng, so the same statistics but not numpy's exact indices).
    const int64_t m = int64_t(std::ceil(0.1 * double(n)));
    std::vector<int64_t> perm = rng.permutation(n);
    perm.resize(size_t(m));
    return perm;
  }
  std::vector<int64_t> members, others;
  for (int64_t i = 0; i < n; ++i) (labels[size_t(i)] == cls ? members : others).push_back(i);
  if (rho <= 0.0) return members;
  // floor exactly as the reference does (int(rho*|M|)), float rounding included.
  const int64_t k = int64_t(std::floor(rho * double(members.size())));
  std::vector<int64_t> p = members;
  rng.shuffle(p);
  std::vector<int64_t> pool = std::move(others);
  pool.insert(pool.end(), p.begin(), p.begin() + k);
  rng.shuffle(pool);
  std::vector<int64_t> forget(p.begin() + k, p.end());
  forget.insert(forget.end(), pool.begin(), pool.begin() + k);
  return forget;
}

Split make_split(const std::string& spec_in, const std::vector<int32_t>& labels, int32_t num_classes,
                 uint64_t default_seed, const std::vector<std::string>& class_names) {
  const std::string spec = trim(spec_in);
  const int64_t n = int64_t(labels.size());
  if (spec.empty()) bad("''", "empty split (expected class=C, class=C,rho=X, random=X or indices=FILE)");
  Split s;
  s.seed = default_seed;

  if (spec.rfind("indices=", 0) == 0) {
    // The whole rest is the path, so file names may contain commas; no seed is involved.
    const std::string path = spec.substr(8);
    if (path.empty()) bad(spec, "no file after indices=");
    s.forget = read_index_file(spec, path, n);
    if (s.forget.empty()) bad(spec, "the index file lists no indices, so the forget set is empty");
    s.spec = "indices=" + path;
  } else {
    std::string form, value;
    double rho = 0.0;
    bool has_rho = false;
    size_t start = 0;
    bool first = true;
    while (start <= spec.size()) {
      size_t comma = spec.find(',', start);
      if (comma == std::string::npos) comma = spec.size();
      const std::string tok = trim(spec.substr(start, comma - start));
      start = comma + 1;
      const size_t eq = tok.find('=');
      if (eq == std::string::npos || eq + 1 == tok.size())
        bad(spec, "'" + tok + "' is not KEY=VALUE (expected class=C, class=C,rho=X, random=X or indices=FILE)");
      const std::string key = tok.substr(0, eq), val = tok.substr(eq + 1);
      if (first) {
        if (key != "class" && key != "random")
          bad(spec, "unknown split '" + key + "' (expected class=C, class=C,rho=X, random=X or indices=FILE)");
        form = key;
        value = val;
        first = false;
      } else if (key == "rho" && form == "class" && !has_rho) {
        if (!parse_double(val, rho) || rho < 0.0 || rho > 1.0) bad(spec, "rho '" + val + "' is not a number in [0, 1]");
        has_rho = true;
      } else if (key == "seed") {
        if (!parse_int(val, s.seed)) bad(spec, "seed '" + val + "' is not a non-negative integer");
      } else {
        bad(spec, "unexpected '" + key + "=' here (class=C takes rho= and seed=, random=X takes seed=)");
      }
    }
    const std::string seed_text = ",seed=" + std::to_string(s.seed);
    if (form == "class") {
      if (num_classes <= 0) bad(spec, "the data set has no class labels");
      const int32_t cls = parse_class(spec, value, num_classes, class_names);
      s.forget = class_rho_forget(labels, cls, rho, s.seed);
      s.spec = "class=" + std::to_string(cls);
      if (rho > 0.0) s.spec += ",rho=" + exact_number_text(rho) + seed_text;
      if (s.forget.empty()) bad(spec, "class " + value + " has no training images, so the forget set is empty");
    } else {
      double frac = 0;
      if (!parse_double(value, frac) || frac <= 0.0 || frac >= 1.0)
        bad(spec, "fraction '" + value + "' is not a number strictly between 0 and 1");
      const int64_t m = std::max<int64_t>(1, std::llround(frac * double(n)));
      if (n == 0) bad(spec, "the training set is empty");
      Rng rng(s.seed);
      std::vector<int64_t> perm = rng.permutation(n);
      s.forget.assign(perm.begin(), perm.begin() + std::min(m, n));
      // A random set has no natural order; ascending keeps forget batches easy to compare by eye.
      std::sort(s.forget.begin(), s.forget.end());
      s.spec = "random=" + exact_number_text(frac) + seed_text;
    }
  }
  if (int64_t(s.forget.size()) >= n)
    bad(spec, "the forget set is the whole training set (" + std::to_string(n) + " images), nothing is left to retain");
  s.retain = complement_indices(s.forget, n);
  return s;
}

Split make_split(const std::string& spec, const ImageDataset& train, uint64_t default_seed) {
  return make_split(spec, train.labels, train.num_classes, default_seed, train.class_names);
}

}  // namespace hamu
