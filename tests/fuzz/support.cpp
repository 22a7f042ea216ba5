// tests/fuzz/support.cpp: scratch files for the fuzz targets, and their registry for the replay driver.
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "tests/fuzz/fuzz.h"

namespace hamu::fuzz {

std::map<std::string, TargetFn>& registry() {
  static std::map<std::string, TargetFn> targets;
  return targets;
}

Registrar::Registrar(const char* name, TargetFn fn) { registry()[name] = fn; }

namespace {
std::string& scratch_root() {
  static std::string root;
  return root;
}
void remove_scratch() {
  std::error_code ec;
  std::filesystem::remove_all(scratch_root(), ec);
}
}  // namespace

void init() {
  if (!scratch_root().empty()) return;
  setenv("HAMU_MAX_MEMORY", "256M", 1);
  setenv("OMP_NUM_THREADS", "1", 1);
  setenv("HAMU_NO_PROGRESS", "1", 1);
  const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
  std::string tmpl = std::string(base) + "/hamu_fuzz_XXXXXX";
  if (!mkdtemp(tmpl.data())) {
    std::perror("hamu fuzz: mkdtemp");
    std::abort();
  }
  scratch_root() = tmpl;
  std::atexit(remove_scratch);
}

std::string scratch(const std::string& name) { return scratch_root() + "/" + name; }

std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch(name);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  if (!f) {
    std::fprintf(stderr, "hamu fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

std::string fresh_scratch_dir(const std::string& name) {
  const std::string path = scratch(name);
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
  return path;
}

}  // namespace hamu::fuzz
