// engine/atomic_file.cpp: the temporary-file-and-rename writer behind checkpoints and JSON reports.
#include "engine/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/error.h"

namespace hamu {
namespace {

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Errors that mean "this output path cannot be used", which the CLI reports as bad input.
bool is_path_error(int err) {
  return err == ENOENT || err == ENOTDIR || err == EACCES || err == EROFS || err == EISDIR || err == ENAMETOOLONG ||
         err == ELOOP || err == EPERM;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The pid in "<name>.tmp.<pid>", or 0 when `entry` is not a temporary of `name`.
pid_t temp_owner(const std::string& entry, const std::string& name) {
  const std::string prefix = name + ".tmp.";
  if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0) return 0;
  long long pid = 0;
  for (size_t i = prefix.size(); i < entry.size(); ++i) {
    if (entry[i] < '0' || entry[i] > '9' || pid > 1'000'000'000) return 0;
    pid = pid * 10 + (entry[i] - '0');
  }
  return pid_t(pid);
}

}  // namespace

void remove_stale_temps(const std::string& path) {
  const std::string name = base_name(path), dir = parent_dir(path);
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (const dirent* e = ::readdir(d)) {
    const pid_t pid = temp_owner(e->d_name, name);
    // Only temporaries whose writer is gone (a kill -9, a power cut): a live process, ours or
    // another run saving to the same name, may still be writing its own.
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
    ::unlink((dir + "/" + e->d_name).c_str());
  }
  ::closedir(d);
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  if (path_.empty()) throw InputError("cannot write a file with an empty name");
  tmp_ = path_ + ".tmp." + std::to_string(::getpid());
  // O_TRUNC rather than O_EXCL: a temporary left by a crashed process with our pid is stale.
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    const std::string msg = "cannot write " + path_ + ": " + std::strerror(err);
    if (is_path_error(err)) throw InputError(msg);
    throw Error(msg);
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::fail(const std::string& what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  throw Error("cannot write " + path_ + ": " + what + ": " + std::strerror(err));
}

void AtomicFile::write(const void* data, size_t bytes) {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": the file is already closed");
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // Chunked: some kernels cap a single write near 2 GiB.
    const ssize_t n = ::write(fd_, p, bytes < (size_t(1) << 30) ? bytes : (size_t(1) << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed", errno);
    }
    p += n;
    bytes -= size_t(n);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": the file is already closed");
  if (::fsync(fd_) != 0) fail("fsync failed", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error("cannot write " + path_ + ": close failed: " + std::strerror(err));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    const std::string msg = "cannot write " + path_ + ": rename failed: " + std::strerror(err);
    if (is_path_error(err)) throw InputError(msg);
    throw Error(msg);
  }
  committed_ = true;
  remove_stale_temps(path_);
  // Best effort: some file systems refuse fsync on a directory, and the data is already in place.
  const int dir = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace hamu
