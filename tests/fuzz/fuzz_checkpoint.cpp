// tests/fuzz/fuzz_checkpoint.cpp: a safetensors file -> load_model (metadata -> architecture -> tensors),
// where a small file must never make the loader build a large model.
#include "models/checkpoint.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(checkpoint) {
  const std::string path = hamu::fuzz::write_scratch("model.safetensors", data, size);
  hamu::models::load_model(path);
}
