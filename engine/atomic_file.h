// engine/atomic_file.h: write to a temporary file, then rename it over the target, so readers never
// see a half-written file and an existing one survives any failure.
#pragma once
#include <cstddef>
#include <string>

namespace hamu {

// AtomicFile f(path); f.write(...); f.commit();  Until commit() succeeds the target is untouched;
// destroying an uncommitted AtomicFile (an exception unwinding) removes the temporary.
class AtomicFile {
 public:
  // Creates `path + ".tmp.<pid>"`. A missing or unwritable directory is an InputError (a bad
  // output path); other failures are Error.
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(const std::string& bytes) { write(bytes.data(), bytes.size()); }
  // fsync, close, rename over the target, fsync the directory (so the rename itself is durable),
  // then remove_stale_temps(path()).
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  [[noreturn]] void fail(const std::string& what, int err);
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Removes `path.tmp.<pid>` files next to `path` whose process no longer exists (left by a run killed
// during a save). Best effort: what cannot be listed or removed is left alone.
void remove_stale_temps(const std::string& path);

}  // namespace hamu
