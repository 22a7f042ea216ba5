// tests/fuzz/fuzz.h: the one macro a fuzz target is written with, and the scratch files targets share.
//
// A target is one file tests/fuzz/fuzz_<name>.cpp holding `HAMU_FUZZ_TARGET(name) { ... }`, whose
// body gets `data` and `size`. Bad input must end in hamu::InputError (caught here); anything else
// escaping (another exception, a crash, a sanitizer report, a huge allocation) is a finding.
// Built two ways from the same file:
//  - with clang and -DHAMU_LIBFUZZER (make fuzz): the body becomes LLVMFuzzerTestOneInput;
//  - with g++ into build/fuzz_replay (make test): every target registers itself by name, and the
//    replay driver feeds it each file of tests/fuzz/regressions/<name>/ and tests/fuzz/corpus/<name>/.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <string>

#include "engine/error.h"

namespace hamu::fuzz {

using TargetFn = void (*)(const uint8_t* data, size_t size);
struct Registrar {
  Registrar(const char* name, TargetFn fn);
};

// Once per process: readers' memory limit 256 MiB (below libFuzzer's -rss_limit_mb=2048, so a
// reader that respects its limits never trips it), one OpenMP thread, a private scratch folder.
void init();
// A path in the scratch folder (`name` must be a plain file name).
std::string scratch(const std::string& name);
// Writes bytes to a file in the scratch folder (replacing it) and returns its path.
std::string write_scratch(const std::string& name, const uint8_t* data, size_t size);
// Removes and recreates a folder in the scratch folder; returns its path.
std::string fresh_scratch_dir(const std::string& name);

}  // namespace hamu::fuzz

#ifdef HAMU_LIBFUZZER
#define HAMU_FUZZ_TARGET(name)                                                           \
  static void hamu_fuzz_body(const uint8_t* data, size_t size);                         \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {             \
    hamu::fuzz::init();                                                                  \
    try {                                                                                \
      hamu_fuzz_body(data, size);                                                        \
    } catch (const hamu::InputError&) {                                                  \
    }                                                                                    \
    return 0;                                                                            \
  }                                                                                      \
  static void hamu_fuzz_body(const uint8_t* data, size_t size)
#else
#define HAMU_FUZZ_TARGET(name)                                                           \
  static void hamu_fuzz_body_##name(const uint8_t* data, size_t size);                  \
  static const hamu::fuzz::Registrar hamu_fuzz_registrar_##name(#name, hamu_fuzz_body_##name); \
  static void hamu_fuzz_body_##name(const uint8_t* data, size_t size)
#endif
