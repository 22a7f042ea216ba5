// tests/fuzz/fuzz_data_spec.cpp: --data SPEC text -> parse_data_spec; the canonical form must parse
// to the same spec. Nothing is loaded (a fuzzed folder could be anywhere on the machine).
#include <string>

#include "loaders/data.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(data_spec) {
  const std::string spec(reinterpret_cast<const char*>(data), size);
  hamu::is_image_data_spec(spec);
  const hamu::DataSpec s = hamu::parse_data_spec(spec);
  if (s.canonical.find(':') == std::string::npos) return;  // a folder from $HAMU_DATA is not in the text
  const hamu::DataSpec again = hamu::parse_data_spec(s.canonical);
  if (again.canonical != s.canonical || again.dir != s.dir || again.images.h != s.images.h ||
      again.images.w != s.images.w || again.images.channels != s.images.channels ||
      again.images.holdout != s.images.holdout)
    std::abort();
}
