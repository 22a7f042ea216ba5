// tests/fuzz/replay.cpp: runs every fuzz target over its regression and seed files without libFuzzer
// (built with g++ by `make test`, so no clang is needed to keep old findings fixed).
//
// Usage: fuzz_replay DIR...   each DIR holds one folder per target name (regressions/, corpus/).
// A target must return normally or throw InputError (caught by the target); an escaping exception
// is reported with the file and counted; a crash or sanitizer report ends the run with the file named
// on the line printed just before.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <vector>

#include "tests/fuzz/fuzz.h"

namespace hamu::fuzz {
std::map<std::string, TargetFn>& registry();
}

namespace {

// The file being replayed, named on stderr if the process dies in it (a crash or a sanitizer report).
char g_current[4096];

void name_current_file() {
  const char head[] = "\nfuzz_replay: died on ";
  ssize_t r = ::write(2, head, sizeof head - 1);
  r = ::write(2, g_current, std::strlen(g_current));
  r = ::write(2, "\n", 1);
  (void)r;
}

void on_fatal_signal(int sig) {
  name_current_file();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

// Present only in sanitizer builds (weak: null otherwise); called before a sanitizer exits.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

int main(int argc, char** argv) {
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::signal(sig, on_fatal_signal);
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(name_current_file);
  namespace fs = std::filesystem;
  hamu::fuzz::init();
  const bool verbose = std::getenv("FUZZ_REPLAY_VERBOSE") != nullptr;
  int files = 0, failures = 0;
  for (int a = 1; a < argc; ++a) {
    for (const auto& [name, fn] : hamu::fuzz::registry()) {
      const fs::path dir = fs::path(argv[a]) / name;
      if (!fs::is_directory(dir)) continue;
      std::vector<fs::path> inputs;
      for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file()) inputs.push_back(e.path());
      std::sort(inputs.begin(), inputs.end());
      for (const auto& p : inputs) {
        std::ifstream f(p, std::ios::binary);
        const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        if (verbose) std::fprintf(stderr, "fuzz_replay: %s\n", p.c_str());
        std::snprintf(g_current, sizeof g_current, "%s", p.c_str());
        ++files;
        try {
          fn(bytes.data(), bytes.size());
        } catch (const hamu::InputError&) {
        } catch (const std::exception& e) {
          std::fprintf(stderr, "fuzz_replay: FAIL %s: %s\n", p.c_str(), e.what());
          ++failures;
        }
      }
    }
  }
  std::printf("fuzz_replay: %zu targets, %d files, %d failures\n", hamu::fuzz::registry().size(), files, failures);
  return failures == 0 ? 0 : 1;
}
