// capi/testing.h: knobs of libhamu's C++ side for tests only (not exported from libhamu.so).
#pragma once
#include <cstdint>

namespace hamu::capi {

// The float32 scratch hamu_linear_hardness may use for its tiles (default 64M floats, 256 MiB); tests set
// it small so a tiny problem crosses tile boundaries. Returns the previous value.
int64_t set_scratch_floats(int64_t floats);

}  // namespace hamu::capi
