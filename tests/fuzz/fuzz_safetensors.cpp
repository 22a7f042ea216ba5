// tests/fuzz/fuzz_safetensors.cpp: a safetensors file -> load_safetensors, the finite check, and a
// save/load round trip of whatever loaded.
#include "engine/safetensors.h"
#include "tests/fuzz/fuzz.h"

HAMU_FUZZ_TARGET(safetensors) {
  const std::string path = hamu::fuzz::write_scratch("in.safetensors", data, size);
  hamu::Checkpoint ck = hamu::load_safetensors(path);
  try {
    hamu::require_finite(ck);
  } catch (const hamu::InputError&) {
  }
  // What loads must save and load back to the same tensors (names, shapes, bytes).
  const std::string again = hamu::fuzz::scratch("again.safetensors");
  hamu::save_safetensors(again, ck.tensors, ck.metadata);
  const hamu::Checkpoint back = hamu::load_safetensors(again);
  if (back.tensors.size() != ck.tensors.size() || back.metadata != ck.metadata) std::abort();
  for (const auto& nt : ck.tensors) {
    const hamu::Tensor& t = back.get(nt.name);
    if (t.shape() != nt.tensor.shape() || t.dtype() != nt.tensor.dtype()) std::abort();
  }
}
