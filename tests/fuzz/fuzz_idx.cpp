// tests/fuzz/fuzz_idx.cpp: IDX files, plain or gzip. The first byte picks the expected kind (images
// or labels) and whether the rest is written as it is or gzip-compressed first (so the fuzzer can
// also reach the gzip path's header checks with plain headers); then load_idx_pair on the result.
#include <zlib.h>

#include <vector>

#include "loaders/dataset.h"
#include "tests/fuzz/fuzz.h"

namespace {
std::vector<uint8_t> gzip(const uint8_t* data, size_t size) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::vector<uint8_t> out(deflateBound(&z, uLong(size)) + 64);
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = uInt(size);
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}
}  // namespace

HAMU_FUZZ_TARGET(idx) {
  if (size < 1) return;
  const uint8_t mode = data[0];
  const uint32_t magic = (mode & 1) ? 2049 : 2051;
  std::string path;
  if (mode & 2) {
    const std::vector<uint8_t> gz = gzip(data + 1, size - 1);
    path = hamu::fuzz::write_scratch("in-idx-ubyte.gz", gz.data(), gz.size());
  } else {
    path = hamu::fuzz::write_scratch("in-idx-ubyte", data + 1, size - 1);
  }
  const hamu::IdxArray a = hamu::read_idx(path, magic);
  if (magic == 2051) {
    // A matching label file (all zeros) makes a data set of the images.
    std::vector<uint8_t> labels = {0, 0, 8, 1};
    const uint32_t n = uint32_t(a.dims[0]);
    for (int s = 24; s >= 0; s -= 8) labels.push_back(uint8_t(n >> s));
    if (n <= (1u << 20)) {
      labels.resize(labels.size() + n, 0);
      const std::string lp = hamu::fuzz::write_scratch("labels-idx1-ubyte", labels.data(), labels.size());
      hamu::load_idx_pair(path, lp, 0, {}).check_consistent();
    }
  }
}
