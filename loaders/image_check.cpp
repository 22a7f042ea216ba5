// loaders/image_check.cpp: header checks that refuse what stb_image must not see (JPEG segments, PNM numbers).
//
// stb_image 2.27 (Debian's libstb-dev) trusts some header fields: a JPEG Huffman table whose 16 counts
// sum to more than 256 makes stbi__build_huffman write past its 257-entry size array, and a PNM header
// number of ten digits overflows the int it is parsed into. The decoder is not ours to patch, so the
// bytes are checked here first: a JPEG segment by segment against the limits of ITU T.81 (B.2)
// (lengths inside the file, tables inside their segments, frame and scan headers of the size their
// component counts imply), a PNM header with stb's own grammar.
#include <zlib.h>

#include <algorithm>
#include <string>
#include <vector>

#include "loaders/dataset.h"

namespace hamu {
namespace {

uint32_t be16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }

bool is_sof(uint8_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }
bool is_rst(uint8_t m) { return m >= 0xD0 && m <= 0xD7; }

std::string at(size_t pos) { return " at byte " + std::to_string(pos); }

// Which Huffman tables (class 0 = DC, 1 = AC; ids 0..3) the file has defined so far: stb_image
// does not check that a scan's tables exist, and decoding with an undefined one reads its
// uninitialised code limits past their 18 entries.
struct HuffmanDefined {
  bool table[2][4] = {};
};

// One DHT segment body: any number of tables, each a class/id byte, 16 counts and their symbols.
std::string check_dht(const uint8_t* s, size_t len, size_t pos, HuffmanDefined& defined) {
  size_t q = 0;
  while (q < len) {
    if (len - q < 17) return "Huffman table header cut short" + at(pos + q);
    const int tc = s[q] >> 4, th = s[q] & 15;
    if (tc > 1 || th > 3) return "Huffman table class " + std::to_string(tc) + " id " + std::to_string(th) + at(pos + q);
    size_t sum = 0;
    for (int i = 1; i <= 16; ++i) sum += s[q + size_t(i)];
    if (sum > 256) return "Huffman table counts sum to " + std::to_string(sum) + " (at most 256)" + at(pos + q);
    if (len - q - 17 < sum) return "Huffman table symbols run past their segment" + at(pos + q);
    defined.table[tc][th] = true;
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

// A scan header, and the Huffman tables its decoding will use: a sequential scan both tables of each
// component; a progressive DC scan its DC tables on the first pass only; a progressive AC scan
// (first or refining pass) its AC tables.
std::string check_sos(const uint8_t* s, size_t len, size_t pos, bool progressive, const HuffmanDefined& defined) {
  if (len < 1) return "scan header cut short" + at(pos);
  const size_t ns = s[0];
  if (ns < 1 || ns > 4 || len != 4 + 2 * ns) return "scan header with " + std::to_string(ns) + " components" + at(pos);
  const int spectral_start = s[1 + 2 * ns], approx_high = s[3 + 2 * ns] >> 4;
  const bool needs_dc = !progressive || (spectral_start == 0 && approx_high == 0);
  const bool needs_ac = !progressive || spectral_start != 0;
  for (size_t c = 0; c < ns; ++c) {
    const int td = s[2 + 2 * c] >> 4, ta = s[2 + 2 * c] & 15;
    if (needs_dc && td <= 3 && !defined.table[0][td])
      return "scan uses DC Huffman table " + std::to_string(td) + ", which the file never defines" + at(pos);
    if (needs_ac && ta <= 3 && !defined.table[1][ta])
      return "scan uses AC Huffman table " + std::to_string(ta) + ", which the file never defines" + at(pos);
  }
  return "";
}

}  // namespace

namespace {
// stb_image takes any run of 0xFF fill bytes before a marker, the start-of-image marker included.
bool starts_as_jpeg(const uint8_t* d, size_t n) {
  size_t pos = 0;
  while (pos < n && d[pos] == 0xFF) ++pos;
  return pos > 0 && pos < n && d[pos] == 0xD8;
}
}  // namespace

std::string jpeg_structure_problem(const uint8_t* d, size_t n) {
  if (!starts_as_jpeg(d, n)) return "no start-of-image marker";
  size_t pos = 0;
  while (d[pos] == 0xFF) ++pos;
  ++pos;  // past the 0xD8
  HuffmanDefined defined;
  bool progressive = false;
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
    if (m == 0xC4) why = check_dht(body, len, pos + 2, defined);
    else if (m == 0xDB) why = check_dqt(body, len, pos + 2);
    else if (is_sof(m)) {
      why = check_sof(body, len, pos + 2);
      progressive = (m == 0xC2);
    }
    else if (m == 0xDA) why = check_sos(body, len, pos + 2, progressive, defined);
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

std::string pnm_header_problem(const uint8_t* d, size_t n) {
  if (n < 2 || d[0] != 'P' || (d[1] != '5' && d[1] != '6')) return "";  // not a PNM stb_image reads
  // stb_image's grammar: whitespace and '#' comments, then width, height and maxval as digit runs;
  // the pixels start one byte after the maxval's digits.
  auto is_space = [](uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  size_t pos = 2;
  int64_t v[3] = {0, 0, 0};
  const char* what[3] = {"width", "height", "maximum value"};
  for (int k = 0; k < 3; ++k) {
    while (pos < n && (is_space(d[pos]) || d[pos] == '#')) {
      if (d[pos] == '#')
        while (pos < n && d[pos] != '\n' && d[pos] != '\r') ++pos;
      else
        ++pos;
    }
    for (; pos < n && d[pos] >= '0' && d[pos] <= '9'; ++pos) {
      v[k] = v[k] * 10 + (d[pos] - '0');
      if (v[k] > 65535 * 256) return std::string("header ") + what[k] + " is too large" + at(pos);
    }
  }
  // stb_image 2.27 converts 16-bit PNM pixels to other channel counts as if they were 8-bit (reading
  // past its buffer), so only 8-bit files are accepted.
  if (v[2] > 255) return "16-bit samples (maximum value " + std::to_string(v[2]) + ") are not supported";
  const int64_t need = v[0] * v[1] * (d[1] == '6' ? 3 : 1);
  if (int64_t(n) - int64_t(pos) - 1 < need)
    return "the pixel data is cut short (" + std::to_string(v[0]) + "x" + std::to_string(v[1]) + " needs " +
           std::to_string(need) + " bytes)";
  return "";
}

namespace {

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

// Inflates `data` through a fixed buffer, counting the output; stops once it passes `limit`.
// -1 for a stream zlib cannot read (stb_image will refuse it too).
int64_t inflated_size(const std::vector<uint8_t>& data, bool raw_deflate, int64_t limit) {
  z_stream z{};
  if (inflateInit2(&z, raw_deflate ? -15 : 15) != Z_OK) return -1;
  z.next_in = const_cast<Bytef*>(data.data());
  z.avail_in = uInt(data.size());
  uint8_t buf[1 << 15];
  int64_t total = 0;
  int r = Z_OK;
  while (r == Z_OK && total <= limit) {
    z.next_out = buf;
    z.avail_out = sizeof buf;
    r = inflate(&z, Z_NO_FLUSH);
    total += int64_t(sizeof buf - z.avail_out);
    if (r == Z_BUF_ERROR && z.avail_in == 0) break;  // the stream ends early: stb decides
  }
  inflateEnd(&z);
  return (r == Z_OK || r == Z_STREAM_END || r == Z_BUF_ERROR) ? total : -1;
}

}  // namespace

std::string png_structure_problem(const uint8_t* d, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n < 8 || !std::equal(sig, sig + 8, d)) return "";
  // Every chunk inside the file (stb_image grows its buffer to a chunk's claimed length before
  // reading it), and the image data must not inflate to more than the image needs (a zlib bomb
  // would otherwise be inflated, doubling its buffer, up to 4 GiB).
  size_t pos = 8;
  uint32_t w = 0, h = 0;
  int depth = 0, colour = 0;
  bool raw_deflate = false;
  std::vector<uint8_t> idat;
  while (pos < n) {
    if (n - pos < 12) return "chunk header cut short" + at(pos);
    const uint32_t len = be32(d + pos);
    const uint32_t type = be32(d + pos + 4);
    if (len > n - pos - 12) return "chunk of " + std::to_string(len) + " bytes runs past the end of the file" + at(pos);
    const uint8_t* body = d + pos + 8;
    if (type == 0x49484452u && len >= 10) {  // IHDR
      w = be32(body), h = be32(body + 4), depth = body[8], colour = body[9];
    } else if (type == 0x43674249u) {  // CgBI: Apple's PNGs hold raw deflate data
      raw_deflate = true;
    } else if (type == 0x49444154u) {  // IDAT
      idat.insert(idat.end(), body, body + len);
    } else if (type == 0x49454E44u) {  // IEND
      break;
    }
    pos += 12 + size_t(len);
  }
  if (w == 0 || h == 0 || idat.empty()) return "";  // stb refuses these itself, without allocating much
  if (w > (1u << 24) || h > (1u << 24)) return "image size " + std::to_string(w) + "x" + std::to_string(h) + " is too large";
  const int channels = colour == 2 ? 3 : colour == 4 ? 2 : colour == 6 ? 4 : 1;
  const int64_t row = (int64_t(w) * channels * std::max(depth, 1) + 7) / 8 + 1;
  const int64_t need = row * int64_t(h);
  const int64_t limit = 2 * need + (int64_t(1) << 16);  // interlaced passes add a little per row
  if (inflated_size(idat, raw_deflate, limit) > limit)
    return "image data inflates to more than its " + std::to_string(w) + "x" + std::to_string(h) + " pixels need";
  return "";
}

void drop_empty_png_data_chunks(std::vector<uint8_t>& bytes) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes.size() < 8 || !std::equal(sig, sig + 8, bytes.data())) return;
  // Chunks are copied through unchanged (each carries its own CRC) except empty IDATs: the image data
  // is the concatenation of the IDAT bodies, so an empty one adds nothing.
  std::vector<uint8_t> out(bytes.begin(), bytes.begin() + 8);
  size_t pos = 8;
  bool dropped = false;
  while (bytes.size() - pos >= 12) {
    const uint32_t len = be32(bytes.data() + pos);
    if (len > bytes.size() - pos - 12) break;  // png_structure_problem refuses these
    const size_t end = pos + 12 + size_t(len);
    if (len == 0 && be32(bytes.data() + pos + 4) == 0x49444154u) dropped = true;
    else out.insert(out.end(), bytes.begin() + std::ptrdiff_t(pos), bytes.begin() + std::ptrdiff_t(end));
    pos = end;
  }
  if (!dropped) return;
  out.insert(out.end(), bytes.begin() + std::ptrdiff_t(pos), bytes.end());
  bytes.swap(out);
}

std::string image_header_problem(const uint8_t* d, size_t n) {
  if (starts_as_jpeg(d, n)) {
    const std::string why = jpeg_structure_problem(d, n);
    return why.empty() ? "" : "corrupt JPEG (" + why + ")";
  }
  if (n >= 2 && d[0] == 'P') {
    const std::string why = pnm_header_problem(d, n);
    return why.empty() ? "" : "corrupt PNM (" + why + ")";
  }
  const std::string why = png_structure_problem(d, n);
  return why.empty() ? "" : "corrupt PNG (" + why + ")";
}

}  // namespace hamu
