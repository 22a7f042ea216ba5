// engine/safetensors_header.h: the one validator of a safetensors header, shared by load_safetensors
// (hamu checkpoints, read into memory) and MappedSafetensors (Hugging Face weights, memory-mapped):
// the length prefix against the file, the JSON, every entry's dtype, shape and offsets, and offsets
// that tile the data buffer exactly. Nothing is allocated from the file's numbers before this passes.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tensor.h"

namespace hamu {

// One validated header entry.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // the file's code: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range within the data buffer
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // header order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data buffer (8 + header length)
  uint64_t data_len = 0;
};

// Which dtype codes a reader accepts: element size per code (0 = refused) and the list its errors name.
struct SafetensorsDtypes {
  size_t (*element_size)(const std::string& code);
  const char* names;
};
// Every safetensors dtype code this engine knows (F64 ... BOOL).
size_t safetensors_code_size(const std::string& code);

// The header length from the file's first 8 bytes (little-endian), checked against the reference
// implementation's limit and the file size; InputError naming `path` otherwise.
uint64_t safetensors_header_length(const std::string& path, const unsigned char first8[8], uint64_t file_size);

// Parses and validates the header text that follows the length prefix of a file of `file_size` bytes.
SafetensorsHeader parse_safetensors_header(const std::string& path, std::string_view text, uint64_t file_size,
                                           const SafetensorsDtypes& dtypes);

}  // namespace hamu
