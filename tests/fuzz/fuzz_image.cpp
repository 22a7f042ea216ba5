// tests/fuzz/fuzz_image.cpp: one image file (PNG, JPEG, BMP, GIF, TGA, PNM: stb_image decides by
// content) -> decode_image_file at 0, 1 or 3 channels, then a bilinear resize to a small size.
#include <vector>

#include "loaders/dataset.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(image) {
  if (size < 1) return;
  const int want = data[0] % 3 == 0 ? 0 : data[0] % 3 == 1 ? 1 : 3;
  const int64_t out_side = 1 + (data[0] >> 4);
  const std::string path = hamu::fuzz::write_scratch("in.img", data + 1, size - 1);
  const hamu::DecodedImage d = hamu::decode_image_file(path, want);
  const int64_t c = want ? want : d.channels_in_file;
  if (int64_t(d.hwc.size()) != c * d.w * d.h) std::abort();
  // The loader resizes planar images; the channel layout does not matter to the resize's bounds.
  std::vector<uint8_t> out(size_t(c * out_side * out_side));
  hamu::resize_bilinear(d.hwc.data(), c, d.h, d.w, out.data(), out_side, out_side);
}
