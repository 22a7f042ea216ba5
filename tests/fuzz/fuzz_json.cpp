// tests/fuzz/fuzz_json.cpp: JSON text -> Json::parse (default and bounded options); what parses must
// dump and parse back to an equal value.
#include <string_view>

#include "engine/json.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(json) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  hamu::JsonParseOptions bounded;
  bounded.max_depth = 8;
  bounded.max_values = 1000;
  try {
    hamu::Json::parse(text, bounded);
  } catch (const hamu::InputError&) {
  }
  const hamu::Json j = hamu::Json::parse(text);
  const hamu::Json back = hamu::Json::parse(j.dump());
  if (!(back == j)) std::abort();
  hamu::Json::parse(j.dump(2));
}
