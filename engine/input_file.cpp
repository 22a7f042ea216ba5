// engine/input_file.cpp: a regular file opened for reading (see input_file.h).
#include "engine/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace hamu {

InputFile::InputFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw InputError(path_ + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw InputError(path_ + ": not a regular file");
  }
  size_ = uint64_t(st.st_size);
}

InputFile::~InputFile() { ::close(fd_); }

size_t InputFile::read_at(void* dst, size_t n, uint64_t offset) const {
  char* p = static_cast<char*>(dst);
  size_t done = 0;
  while (done < n) {
    // At most 1 GiB a call: Linux reads no more than about 2 GiB at once.
    const size_t want = n - done < (size_t(1) << 30) ? n - done : (size_t(1) << 30);
    const ssize_t got = ::pread(fd_, p + done, want, off_t(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw InputError(path_ + ": read failed: " + std::strerror(errno));
    if (got == 0) break;
    done += size_t(got);
  }
  return done;
}

}  // namespace hamu
