// engine/input_file.h: a regular file opened for reading (the one place readers open, stat and check a file),
// closed when it goes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace hamu {

class InputFile {
 public:
  // Opens `path` read-only. InputError naming the path when it cannot be opened or is not a regular file.
  explicit InputFile(std::string path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }  // at open
  const std::string& path() const { return path_; }
  // Reads up to n bytes at `offset` (retrying short reads and EINTR): the count read, less than n only at the end of
  // the file. InputError naming the path on a read error.
  size_t read_at(void* dst, size_t n, uint64_t offset) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace hamu
