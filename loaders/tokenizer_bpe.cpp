// loaders/tokenizer_bpe.cpp: the BPE model (merges by rank) and GPT-2's byte map.
#include <array>
#include <queue>

#include "loaders/tokenizer_internal.h"
#include "loaders/unicode.h"

namespace hamu::tok {
namespace {

struct ByteMaps {
  std::array<std::string, 256> chars;
  std::array<int, 512> bytes;  // code point (all below 512) -> byte
  ByteMaps() {
    bytes.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + extra++);
      unicode::append_utf8(chars[b], cp);
      bytes[cp] = b;
    }
  }
};

const ByteMaps& byte_maps() {
  static const ByteMaps maps;
  return maps;
}

// Words longer than this are not cached (the library's limit too); the cache stops growing at
// kCacheCapacity entries.
constexpr size_t kCacheMaxWordBytes = 256;
constexpr size_t kCacheCapacity = 10000;

}  // namespace

const std::string& byte_char(uint8_t b) { return byte_maps().chars[b]; }

int char_byte(uint32_t cp) { return cp < 512 ? byte_maps().bytes[cp] : -1; }

std::string bytes_to_chars(std::string_view s) {
  const ByteMaps& maps = byte_maps();
  std::string out(s.size() * 2, '\0');  // every mapped character is 1 or 2 bytes
  size_t n = 0;
  for (const char c : s) {
    const std::string& m = maps.chars[uint8_t(c)];
    out[n++] = m[0];
    if (m.size() > 1) out[n++] = m[1];
  }
  out.resize(n);
  return out;
}

// ------------------------------------------------------------------------------------------------
// BPE

namespace {

struct Symbol {
  int32_t id;
  int32_t prev, next;
  int32_t len;  // bytes; 0 marks a symbol merged into its left neighbour
};

struct MergeEntry {
  int32_t rank, pos, new_id;
  // std::priority_queue pops the largest: order so that the lowest rank, then lowest position, is on top.
  bool operator<(const MergeEntry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& ids) const {
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  auto add = [&](int32_t id, int32_t len) {
    const int32_t index = int32_t(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, len});
  };
  int32_t unk_pending = -1, unk_len = 0;  // an unknown run waiting to be added (fuse_unk)
  std::string key;
  for (size_t i = 0; i < w.size();) {
    int len = 1;
    unicode::decode_utf8(w, i, &len);
    const bool first = i == 0, last = i + len >= w.size();
    key.assign(w.substr(i, len));
    if (!first && !continuing_subword_prefix.empty()) key = continuing_subword_prefix + key;
    if (last && !end_of_word_suffix.empty()) key += end_of_word_suffix;
    i += len;
    const int32_t id = find_id(vocab, key);
    if (id >= 0) {
      if (unk_pending >= 0) {
        add(unk_pending, unk_len);
        unk_pending = -1;
      }
      add(id, len);
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (const char c : key) all = all && byte_ids[uint8_t(c)] >= 0;
      if (all) {
        // As the library does: byte tokens go in without first flushing a pending unknown.
        for (const char c : key) add(byte_ids[uint8_t(c)], 1);
        continue;
      }
    }
    if (unk_id < 0) continue;  // no unk_token: the character is dropped, as the library drops it
    if (unk_pending >= 0 && fuse_unk) {
      unk_len += len;
    } else {
      if (unk_pending >= 0) add(unk_pending, unk_len);
      unk_pending = unk_id;
      unk_len = len;
    }
  }
  if (unk_pending >= 0) add(unk_pending, unk_len);

  std::priority_queue<MergeEntry> queue;
  for (size_t p = 0; p + 1 < symbols.size(); ++p) {
    const auto it = merges.find(pair_key(symbols[p].id, symbols[p + 1].id));
    if (it != merges.end()) queue.push({it->second.first, int32_t(p), it->second.second});
  }
  while (!queue.empty()) {
    const MergeEntry top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    // A stale entry: the pair at this position changed since it was queued (the library compares
    // the merged id only, and so does this).
    const auto it = merges.find(pair_key(cur.id, right.id));
    if (it == merges.end() || it->second.second != top.new_id) continue;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      const auto l = merges.find(pair_key(symbols[cur.prev].id, cur.id));
      if (l != merges.end()) queue.push({l->second.first, cur.prev, l->second.second});
    }
    if (cur.next >= 0) {
      const auto r = merges.find(pair_key(cur.id, symbols[cur.next].id));
      if (r != merges.end()) queue.push({r->second.first, top.pos, r->second.second});
    }
  }
  for (const Symbol& s : symbols)
    if (s.len != 0) ids.push_back(s.id);
}

void BpeModel::tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges) {
    const int32_t id = find_id(vocab, piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = piece.size() < kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(piece, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(piece), std::move(ids));
  }
}

}  // namespace hamu::tok
