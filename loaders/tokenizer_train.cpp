// loaders/tokenizer_train.cpp: a small deterministic byte-level BPE trainer writing tokenizer.json.
#include <algorithm>
#include <map>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "engine/error.h"
#include "engine/json.h"
#include "loaders/tokenizer.h"
#include "loaders/tokenizer_internal.h"
#include "loaders/unicode.h"

namespace hamu {
namespace {

constexpr int64_t kMaxTrainVocab = int64_t(1) << 20;

// The corpus split into pieces the way the loader will split text: special tokens cut out first
// (leftmost, longest on ties), then the GPT-2 pattern on what lies between.
std::map<std::string, int64_t> count_words(const std::vector<std::string>& corpus, const BpeTrainOptions& o) {
  std::map<std::string, int64_t> words;
  std::vector<std::pair<size_t, size_t>> ranges;
  auto add_segment = [&](std::string seg) {
    if (seg.empty()) return;
    if (o.add_prefix_space && seg[0] != ' ') seg.insert(0, 1, ' ');
    ranges.clear();
    tok::gpt2_split(seg, ranges);
    for (const auto& [a, b] : ranges) ++words[seg.substr(a, b - a)];
  };
  for (const std::string& doc : corpus) {
    size_t pos = 0;
    while (pos < doc.size()) {
      size_t best = std::string::npos, best_len = 0;
      for (const std::string& s : o.special_tokens) {
        const size_t at = doc.find(s, pos);
        if (at != std::string::npos && (at < best || (at == best && s.size() > best_len))) {
          best = at;
          best_len = s.size();
        }
      }
      if (best == std::string::npos) {
        add_segment(doc.substr(pos));
        break;
      }
      add_segment(doc.substr(pos, best - pos));
      pos = best + best_len;
    }
  }
  return words;
}

}  // namespace

BpeTrainResult train_bpe(const std::vector<std::string>& corpus, const BpeTrainOptions& o) {
  if (o.vocab_size < 1 || o.vocab_size > kMaxTrainVocab)
    throw InputError("train_bpe: vocab_size " + std::to_string(o.vocab_size) + " is out of range (1.." + std::to_string(kMaxTrainVocab) + ")");
  if (o.min_frequency < 1) throw InputError("train_bpe: min_frequency must be at least 1");
  for (const std::string& doc : corpus)
    if (unicode::invalid_utf8_at(doc) != std::string::npos) throw InputError("train_bpe: corpus text is not valid UTF-8");
  std::unordered_set<std::string> specials;
  for (const std::string& s : o.special_tokens) {
    if (s.empty()) throw InputError("train_bpe: empty special token");
    if (!specials.insert(s).second) throw InputError("train_bpe: special token '" + s + "' given twice");
  }
  for (int b = 0; b < 256; ++b)
    if (specials.count(tok::byte_char(uint8_t(b))))
      throw InputError("train_bpe: special token '" + tok::byte_char(uint8_t(b)) + "' is one byte symbol");

  // Token table: raw bytes of each token. Special tokens first, then the 256 bytes, then merges.
  std::vector<std::string> token_bytes;
  std::unordered_map<std::string, int32_t> id_of_bytes;
  const int32_t n_special = int32_t(o.special_tokens.size());
  for (const std::string& s : o.special_tokens) token_bytes.push_back(s);
  for (int b = 0; b < 256; ++b) {
    token_bytes.emplace_back(1, char(b));
    id_of_bytes.emplace(token_bytes.back(), n_special + b);
  }

  BpeTrainResult result;
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  for (const auto& [w, c] : count_words(corpus, o)) {
    std::vector<int32_t> syms;
    for (const char ch : w) syms.push_back(n_special + uint8_t(ch));
    words.push_back(std::move(syms));
    counts.push_back(c);
    result.corpus_bytes += int64_t(w.size()) * c;
  }

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair -> words holding it (may repeat)
  auto key = tok::BpeModel::pair_key;
  auto account = [&](int32_t w, int64_t sign, std::vector<uint64_t>& changed) {
    const auto& s = words[size_t(w)];
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const uint64_t k = key(s[i], s[i + 1]);
      pair_count[k] += sign * counts[size_t(w)];
      changed.push_back(k);
      if (sign > 0) where[k].push_back(w);
    }
  };
  std::vector<uint64_t> changed;
  for (int32_t w = 0; w < int32_t(words.size()); ++w) account(w, +1, changed);

  // Max-heap on count, ties to the smaller (left bytes, right bytes); stale entries are skipped.
  struct Cand {
    int64_t count;
    int32_t a, b;
  };
  auto lower = [&](const Cand& x, const Cand& y) {
    if (x.count != y.count) return x.count < y.count;
    const int c = token_bytes[size_t(x.a)].compare(token_bytes[size_t(y.a)]);
    if (c != 0) return c > 0;
    return token_bytes[size_t(x.b)] > token_bytes[size_t(y.b)];
  };
  std::priority_queue<Cand, std::vector<Cand>, decltype(lower)> heap(lower);
  auto push_changed = [&] {
    std::sort(changed.begin(), changed.end());
    changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
    for (const uint64_t k : changed) {
      const int64_t c = pair_count[k];
      if (c > 0) heap.push({c, int32_t(k >> 32), int32_t(uint32_t(k))});
    }
    changed.clear();
  };
  push_changed();

  std::vector<std::pair<int32_t, int32_t>> merges;
  std::vector<int32_t> stamp(words.size(), -1);
  // Pairs whose merged token would read the same as a special token are never merged (the
  // vocabulary could not hold both).
  std::unordered_set<uint64_t> forbidden;
  while (int64_t(token_bytes.size()) < o.vocab_size && !heap.empty()) {
    const Cand top = heap.top();
    heap.pop();
    const uint64_t k = key(top.a, top.b);
    if (pair_count[k] != top.count) continue;  // stale
    if (top.count < o.min_frequency) break;
    if (forbidden.count(k)) continue;
    const std::string merged = token_bytes[size_t(top.a)] + token_bytes[size_t(top.b)];
    if (specials.count(tok::bytes_to_chars(merged))) {
      forbidden.insert(k);
      continue;
    }
    int32_t id;
    const auto known = id_of_bytes.find(merged);
    if (known != id_of_bytes.end()) {
      id = known->second;
    } else {
      id = int32_t(token_bytes.size());
      token_bytes.push_back(merged);
      id_of_bytes.emplace(merged, id);
    }
    merges.emplace_back(top.a, top.b);
    const int32_t merge_index = int32_t(merges.size());
    std::vector<int32_t> affected;
    affected.swap(where[k]);
    for (const int32_t w : affected) {
      if (stamp[size_t(w)] == merge_index) continue;
      stamp[size_t(w)] = merge_index;
      auto& s = words[size_t(w)];
      bool present = false;
      for (size_t i = 0; i + 1 < s.size() && !present; ++i) present = s[i] == top.a && s[i + 1] == top.b;
      if (!present) continue;
      account(w, -1, changed);
      std::vector<int32_t> next;
      next.reserve(s.size());
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == top.a && s[i + 1] == top.b) {
          next.push_back(id);
          i += 2;
        } else {
          next.push_back(s[i++]);
        }
      }
      s.swap(next);
      account(w, +1, changed);
    }
    push_changed();
  }
  result.merges = int64_t(merges.size());
  for (size_t w = 0; w < words.size(); ++w) result.corpus_tokens += int64_t(words[w].size()) * counts[w];

  // tokenizer.json, written by hand so a large vocabulary costs linear time.
  auto q = [](const std::string& s) { return Json(s).dump(); };
  auto shown = [&](int32_t id) { return id < n_special ? token_bytes[size_t(id)] : tok::bytes_to_chars(token_bytes[size_t(id)]); };
  std::string& j = result.json;
  j = "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[";
  for (int32_t i = 0; i < n_special; ++i)
    j += std::string(i ? "," : "") + "{\"id\":" + std::to_string(i) + ",\"content\":" + q(token_bytes[size_t(i)]) +
         ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}";
  j += "],\"normalizer\":null,";
  j += std::string("\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":") + (o.add_prefix_space ? "true" : "false") +
       ",\"trim_offsets\":true,\"use_regex\":true},";
  j += "\"post_processor\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":false,\"use_regex\":true},";
  j += "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},";
  j += "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
       "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{";
  for (size_t i = 0; i < token_bytes.size(); ++i) j += (i ? "," : "") + q(shown(int32_t(i))) + ":" + std::to_string(i);
  j += "},\"merges\":[";
  for (size_t i = 0; i < merges.size(); ++i) j += (i ? ",[" : "[") + q(shown(merges[i].first)) + "," + q(shown(merges[i].second)) + "]";
  j += "]}}";
  return result;
}

}  // namespace hamu
