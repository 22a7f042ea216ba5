// tests/backend_kernels.h: the kernel-case table type: kernel contracts no engine op reaches, each
// written once as a generic lambda over a backend run and executed on every backend.
//
// A kernel case is `[](auto& k) { ... }`: k.ctx is the backend's context (CpuCtx or CudaCtx); k.in(values)
// and k.out(n) give buffers on the backend's device (outputs filled with NaN / 0x7f bytes, so an element a
// kernel forgets to write shows up); k.result(name, ptr, n, tol) records what to compare. The runner
// (tests/test_backend_ops.cpp) runs the case on the CPU, then on every other backend, and compares the
// recorded results in order: relative error ||backend - cpu|| / ||cpu|| <= tol (tol 0: bit-equal, NaN in
// the same places), or per element |backend - cpu| <= tol * scale[i] for result_scaled.
// The entries live in tests/backend_kernel_cases.cpp.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"

namespace hamu::testing {

using FVec = std::vector<float>;

// One recorded result of a kernel case.
struct KernelResult {
  std::string name;
  std::vector<double> values;
  double tol = 0;
  std::vector<double> scale;  // non-empty: per-element |a - b| <= tol * scale[i]
  bool warn_unless_equal = false;
  bool is_report = false;     // a HamuReport: integer fields equal, doubles to 1e-8 relative
};

// Shared part of both backend runs: the recorded results.
struct KernelRunBase {
  std::vector<KernelResult> results;
  void record(const std::string& name, std::vector<double> v, double tol, std::vector<double> scale = {},
              bool warn_unless_equal = false) {
    results.push_back({name, std::move(v), tol, std::move(scale), warn_unless_equal, false});
  }
  void record_report(const std::string& name, const kernels::HamuReport& r) {
    results.push_back({name, report_fields(r), 0, {}, false, true});
  }
  static std::vector<double> report_fields(const kernels::HamuReport& r) {
    return {double(r.n_blocks),       double(r.n_direct),      double(r.n_rectified),   double(r.n_colinear),
            double(r.n_infeasible),   double(r.n_collateral),  double(r.nonfinite),     double(r.criterion_met),
            double(r.applied),        r.kappa,                 r.kappa1,                r.kappa2,
            r.retain_norm,            r.forget_norm,           r.angle_deg,             r.feasibility_margin,
            r.stopping_margin};
  }
};

template <class T> std::vector<double> widen(const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); }

// Poison values for output buffers.
template <class T> std::vector<T> poison_values(int64_t n) {
  std::vector<T> v(static_cast<size_t>(n));
  if constexpr (std::is_floating_point_v<T>) std::fill(v.begin(), v.end(), std::numeric_limits<T>::quiet_NaN());
  else std::memset(static_cast<void*>(v.data()), 0x7f, v.size() * sizeof(T));
  return v;
}

// The CPU backend: buffers are host vectors kept alive until the run ends.
struct CpuKernelRun : KernelRunBase {
  static constexpr const char* name = "cpu";
  kernels::CpuCtx ctx{};
  std::vector<std::shared_ptr<void>> keep;

  template <class T> T* in(const std::vector<T>& v) {
    auto p = std::make_shared<std::vector<T>>(v);
    if (p->empty()) p->resize(1);
    keep.push_back(p);
    return p->data();
  }
  template <class T = float> T* out(int64_t n) { return in(poison_values<T>(n)); }
  template <class T> std::vector<T> get(const T* p, int64_t n) { return std::vector<T>(p, p + n); }
  template <class T> void set(T* p, const std::vector<T>& v) { std::copy(v.begin(), v.end(), p); }
  // A table of pointers (multi-tensor kernels) in the memory the backend reads it from.
  template <class P> P* table(const std::vector<P>& ptrs) { return in(ptrs); }
  kernels::HamuReport* report() { return in(std::vector<kernels::HamuReport>(1)); }
  kernels::HamuReport get_report(const kernels::HamuReport* p) { return *p; }

  template <class T> void result(const std::string& name, const T* p, int64_t n, double tol) {
    record(name, widen(get(p, n)), tol);
  }
};

#ifdef HAMU_CUDA
// The CUDA backend: device buffers freed when the run ends.
struct CudaKernelRun : KernelRunBase {
  static constexpr const char* name = "cuda";
  kernels::CudaCtx& ctx = kernels::cuda_context(0);
  struct Buf {
    void* p;
    ~Buf() {
      try {
        kernels::cuda_free(0, p);
      } catch (const std::exception& e) {  // a destructor must not throw: after a device fault, report and go on
        MESSAGE("cuda_free failed: " << e.what());
      }
    }
  };
  std::vector<std::shared_ptr<Buf>> keep;

  template <class T> T* in(const std::vector<T>& v) {
    auto b = std::make_shared<Buf>(Buf{kernels::cuda_malloc(0, std::max<size_t>(v.size(), 1) * sizeof(T))});
    keep.push_back(b);
    if (!v.empty()) kernels::cuda_memcpy_h2d(ctx, b->p, v.data(), v.size() * sizeof(T));
    return static_cast<T*>(b->p);
  }
  template <class T = float> T* out(int64_t n) { return in(poison_values<T>(n)); }
  template <class T> std::vector<T> get(const T* p, int64_t n) {
    std::vector<T> v(static_cast<size_t>(n));
    if (n > 0) kernels::cuda_memcpy_d2h(ctx, v.data(), p, v.size() * sizeof(T));
    return v;
  }
  template <class T> void set(T* p, const std::vector<T>& v) {
    if (!v.empty()) kernels::cuda_memcpy_h2d(ctx, p, v.data(), v.size() * sizeof(T));
  }
  template <class P> P* table(const std::vector<P>& ptrs) { return in(ptrs); }
  kernels::HamuReport* report() { return in(std::vector<kernels::HamuReport>(1)); }
  kernels::HamuReport get_report(const kernels::HamuReport* p) { return get(p, 1)[0]; }

  template <class T> void result(const std::string& name, const T* p, int64_t n, double tol) {
    record(name, widen(get(p, n)), tol);
  }
};
#endif

struct KernelCase {
  std::string name;
  bool heavy = false;  // hundreds of MB of buffers: without another backend, the CPU run is skipped
  std::function<void(CpuKernelRun&)> cpu;
#ifdef HAMU_CUDA
  std::function<void(CudaKernelRun&)> cuda;
#endif
};

// Instantiates one generic lambda for every backend.
template <class F> KernelCase kernel_case(std::string name, F f, bool heavy = false) {
  KernelCase c;
  c.name = std::move(name);
  c.heavy = heavy;
  c.cpu = f;
#ifdef HAMU_CUDA
  c.cuda = f;
#endif
  return c;
}

const std::vector<KernelCase>& kernel_cases();

}  // namespace hamu::testing
