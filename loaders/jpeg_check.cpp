// loaders/jpeg_check.cpp: a walk over a JPEG's marker segments that refuses what stb_image must not see.
//
// stb_image 2.27 (Debian's libstb-dev) trusts some header fields: a Huffman table whose 16 counts sum
// to more than 256 makes stbi__build_huffman write past its 257-entry size array. The decoder itself
// is not ours to patch, so every JPEG is checked here first, segment by segment, against the limits
// of ITU T.81 (B.2): lengths inside the file, tables inside their segments, frame and scan headers of
// the size their component counts imply.
#include <string>

#include "loaders/dataset.h"

namespace hamu {
namespace {

uint32_t be16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }

bool is_sof(uint8_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }
bool is_rst(uint8_t m) { return m >= 0xD0 && m <= 0xD7; }

std::string at(size_t pos) { return " at byte " + std::to_string(pos); }

// One DHT segment body: any number of tables, each a class/id byte, 16 counts and their symbols.
std::string check_dht(const uint8_t* s, size_t len, size_t pos) {
  size_t q = 0;
  while (q < len) {
    if (len - q < 17) return "Huffman table header cut short" + at(pos + q);
    const int tc = s[q] >> 4, th = s[q] & 15;
    if (tc > 1 || th > 3) return "Huffman table class " + std::to_string(tc) + " id " + std::to_string(th) + at(pos + q);
    size_t sum = 0;
    for (int i = 1; i <= 16; ++i) sum += s[q + size_t(i)];
    if (sum > 256) return "Huffman table counts sum to " + std::to_string(sum) + " (at most 256)" + at(pos + q);
    if (len - q - 17 < sum) return "Huffman table symbols run past their segment" + at(pos + q);
    q += 17 + sum;
  }
  return "";
}

std::string check_dqt(const uint8_t* s, size_t len, size_t pos) {
  size_t q = 0;
  while (q < len) {
    const int p = s[q] >> 4, t = s[q] & 15;
    if (p > 1 || t > 3) return "quantisation table precision " + std::to_string(p) + " id " + std::to_string(t) + at(pos + q);
    const size_t need = 1 + 64 * size_t(p ? 2 : 1);
    if (len - q < need) return "quantisation table runs past its segment" + at(pos + q);
    q += need;
  }
  return "";
}

std::string check_sof(const uint8_t* s, size_t len, size_t pos) {
  if (len < 6) return "frame header cut short" + at(pos);
  const uint32_t h = be16(s + 1), w = be16(s + 3), nc = s[5];
  if (h == 0 || w == 0) return "frame size " + std::to_string(w) + "x" + std::to_string(h) + " (must be positive)";
  if (nc < 1 || nc > 4) return std::to_string(nc) + " components (1..4)" + at(pos);
  if (len != 6 + 3 * size_t(nc)) return "frame header length does not match its " + std::to_string(nc) + " components";
  for (uint32_t c = 0; c < nc; ++c) {
    const uint8_t* comp = s + 6 + 3 * c;
    const int hs = comp[1] >> 4, vs = comp[1] & 15;
    if (hs < 1 || hs > 4 || vs < 1 || vs > 4 || comp[2] > 3) return "bad component sampling or table" + at(pos);
  }
  return "";
}

std::string check_sos(const uint8_t* s, size_t len, size_t pos) {
  if (len < 1) return "scan header cut short" + at(pos);
  const size_t ns = s[0];
  if (ns < 1 || ns > 4 || len != 4 + 2 * ns) return "scan header with " + std::to_string(ns) + " components" + at(pos);
  return "";
}

}  // namespace

std::string jpeg_structure_problem(const uint8_t* d, size_t n) {
  if (n < 2 || d[0] != 0xFF || d[1] != 0xD8) return "no start-of-image marker";
  size_t pos = 2;
  while (pos < n) {
    if (d[pos] != 0xFF) return "expected a marker" + at(pos);
    while (pos < n && d[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) break;
    const uint8_t m = d[pos++];
    if (m == 0xD9) break;                                  // end of image
    if (m == 0xD8 || m == 0x01 || is_rst(m)) continue;     // markers without a segment
    if (m == 0x00) return "stray 0xFF00" + at(pos - 2);
    if (n - pos < 2) return "segment length cut off" + at(pos);
    const size_t seg_len = be16(d + pos);
    if (seg_len < 2) return "segment length " + std::to_string(seg_len) + at(pos);
    if (seg_len > n - pos) return "segment of " + std::to_string(seg_len) + " bytes runs past the end of the file" + at(pos);
    const uint8_t* body = d + pos + 2;
    const size_t len = seg_len - 2;
    std::string why;
    if (m == 0xC4) why = check_dht(body, len, pos + 2);
    else if (m == 0xDB) why = check_dqt(body, len, pos + 2);
    else if (is_sof(m)) why = check_sof(body, len, pos + 2);
    else if (m == 0xDA) why = check_sos(body, len, pos + 2);
    else if (m == 0xDD && seg_len != 4) why = "restart interval segment of length " + std::to_string(seg_len);
    if (!why.empty()) return why;
    pos += seg_len;
    if (m == 0xDA) {
      // Entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a restart marker.
      while (pos < n) {
        if (d[pos] == 0xFF && pos + 1 < n && d[pos + 1] != 0x00 && d[pos + 1] != 0xFF && !is_rst(d[pos + 1])) break;
        ++pos;
      }
    }
  }
  return "";
}

}  // namespace hamu
