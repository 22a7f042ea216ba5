// tests/perf_scope.h: the process-wide kernels::PerfOptions changed for one scope and restored on exit
// (also when a REQUIRE throws), e.g. deterministic cuDNN algorithms so that two runs agree to the bit.
#pragma once
#include "kernels/perf.h"

namespace hamu::testing {

class PerfScope {
 public:
  template <class Edit> explicit PerfScope(Edit edit) : saved_(kernels::perf_options()) {
    kernels::PerfOptions p = saved_;
    edit(p);
    kernels::set_perf_options(p);
  }
  ~PerfScope() { kernels::set_perf_options(saved_); }
  PerfScope(const PerfScope&) = delete;
  PerfScope& operator=(const PerfScope&) = delete;

 private:
  kernels::PerfOptions saved_;
};

// Only the algorithms cuDNN marks deterministic, for the scope.
inline void deterministic_algorithms(kernels::PerfOptions& p) { p.deterministic = true; }

}  // namespace hamu::testing
