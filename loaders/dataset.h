// loaders/dataset.h: the in-memory image data set (raw u8 pixels) and the readers that fill it.
#pragma once
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "engine/error.h"

namespace hamu {

// Images stay raw u8 (a quarter of the float size); normalisation happens per batch (batch.h).
struct ImageDataset {
  int64_t n = 0, c = 0, h = 0, w = 0;
  std::vector<uint8_t> pixels;  // n*c*h*w, CHW per image, images back to back
  std::vector<int32_t> labels;  // n, each in [0, num_classes)
  int32_t num_classes = 0;
  std::vector<std::string> class_names;  // num_classes entries
  std::string source;                    // where it came from, for reports ("fashion-mnist:/usr/...")

  int64_t image_size() const { return c * h * w; }
  const uint8_t* image(int64_t i) const { return pixels.data() + i * image_size(); }
  std::vector<int64_t> class_counts() const;
  std::vector<int64_t> indices_of_class(int32_t cls) const;  // ascending
  // Throws Error when the fields disagree with each other (a loader bug, not bad input).
  void check_consistent() const;
};

struct DataBundle {
  ImageDataset train, test;
  std::string spec;  // the canonical --data spec it was loaded from
};

// Whole-file read shared by the readers: InputError naming the file when it is missing, is a folder,
// cannot be read, or is larger than `max_bytes`.
std::vector<uint8_t> read_file_bytes(const std::string& path, int64_t max_bytes);

// The memory the readers may fill with one file's or one data set's contents: $HAMU_MAX_MEMORY (bytes,
// or with a K, M, G or T suffix, powers of 1024) when set, else half of the machine's memory (or of
// the cgroup's limit when that is lower). Every size a header claims is checked against it before
// anything is allocated. InputError names HAMU_MAX_MEMORY when its value is not a size.
int64_t data_memory_limit();
std::string byte_size_str(int64_t bytes);  // "12.0 GiB", for messages

// Runs f(); an allocation failure inside becomes one InputError naming `path`, so running out of
// memory on a large or hostile file is reported like any other bad input rather than as bad_alloc.
template <class F>
auto with_memory_guard(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw InputError(path + ": out of memory while reading it (the readers' limit is " +
                     byte_size_str(data_memory_limit()) + "; HAMU_MAX_MEMORY sets it)");
  } catch (const std::length_error&) {
    throw InputError(path + ": a size in it is too large to allocate");
  }
}

// ---- IDX (MNIST family) --------------------------------------------------------------------------
// One IDX u8 array: magic 0x0000 0x08 ndim, big-endian u32 dims, then the bytes. Gzip or plain,
// told apart by the first two bytes.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
// `expected_magic` is 2051 (images, 3 dims) or 2049 (labels, 1 dim). InputError names the file.
IdxArray read_idx(const std::string& path, uint32_t expected_magic);

// An image file and its label file. num_classes <= 0: take max label + 1 (generic idx:DIR);
// class_names empty: the class index as text.
ImageDataset load_idx_pair(const std::string& images_path, const std::string& labels_path, int32_t num_classes,
                           const std::vector<std::string>& class_names);

// {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in `dir` (also the "train-images.idx3-ubyte" spelling).
// `kind` is "fashion-mnist", "mnist" or "idx" and picks the class names and the not-found message.
DataBundle load_idx_dir(const std::string& dir, const std::string& kind);

const std::vector<std::string>& fashion_mnist_class_names();
const std::vector<std::string>& mnist_class_names();

// ---- CIFAR-10 binary version ---------------------------------------------------------------------
// data_batch_1..5.bin and test_batch.bin in `dir` (or in dir/cifar-10-batches-bin, as the archive unpacks).
DataBundle load_cifar10_dir(const std::string& dir);
// One file of 3073-byte records (label, then R, G, B planes of 32x32); appended to `out`.
void read_cifar10_file(const std::string& path, ImageDataset& out);
const std::vector<std::string>& cifar10_class_names();

// ---- Image folders -------------------------------------------------------------------------------
struct ImageFolderOptions {
  int64_t h = 0, w = 0;   // 0: the first image's size
  int64_t channels = 0;   // 1 or 3; 0: from the first image (grey or grey+alpha -> 1, otherwise 3)
  double holdout = 0.1;   // test fraction per class when there is no test/ folder
  uint64_t holdout_seed = 0;
};
// dir/<class>/* or dir/train/<class>/* with dir/test/<class>/*. Class index = position of the class
// folder name in sorted order (train's folders define the classes). PNG, JPEG, BMP (also GIF, TGA,
// PNM) are decoded, converted to the channel count and bilinearly resized to h x w.
DataBundle load_image_folder(const std::string& dir, const ImageFolderOptions& opt);
// One image file decoded to `want` channels (0: as stored), HWC interleaved. The file's header is
// checked before stb_image sees the bytes (image_header_problem, then zero or oversized dimensions
// against max_image_pixels()); InputError names the file.
struct DecodedImage {
  std::vector<uint8_t> hwc;
  int w = 0, h = 0, channels_in_file = 0;
};
DecodedImage decode_image_file(const std::string& path, int want);
// Pixels one source image may have: 2^24 (16 megapixels, 4096x4096), lower when data_memory_limit()
// cannot hold about 64 bytes per pixel (stb_image's working copies of a 16-bit RGBA image).
int64_t max_image_pixels();
// "" when the JPEG's marker segments are well formed (SOI first, each length inside the file, every
// Huffman table's counts summing to at most 256 with its symbols inside the segment, quantisation
// tables inside theirs, frame and scan headers of the right length with non-zero sizes and 1..4
// components), else what is wrong. stb_image 2.27 writes out of bounds on some of these.
std::string jpeg_structure_problem(const uint8_t* data, size_t size);
// "" unless a binary PGM/PPM header holds a number above 16,776,960 (ten digits overflow stb_image's
// int parser), has 16-bit samples (stb_image 2.27 converts their channels out of bounds), or the
// file is shorter than its pixels.
std::string pnm_header_problem(const uint8_t* data, size_t size);
// "" unless a PNG chunk runs past the end of the file or the image data inflates to more than the
// header's size needs (stb_image would allocate either before noticing).
std::string png_structure_problem(const uint8_t* data, size_t size);
// Removes a PNG's zero-length IDAT chunks (the image data is the concatenation of the IDAT bodies, so
// the image is unchanged): stb_image 2.27 copies a first, empty one into its not yet allocated buffer
// (memcpy to null, found by the CI fuzz smoke). Bytes that are not a PNG are left as they are.
void drop_empty_png_data_chunks(std::vector<uint8_t>& bytes);
// The check for whatever format the bytes are: "corrupt JPEG|PNM|PNG (...)" or "".
std::string image_header_problem(const uint8_t* data, size_t size);

// Bilinear resize of one u8 CHW image (half-pixel centres, edge clamped).
void resize_bilinear(const uint8_t* src, int64_t c, int64_t sh, int64_t sw, uint8_t* dst, int64_t dh, int64_t dw);

}  // namespace hamu
