// tests/test_backend_ops.cpp: runs the op table (tests/backend_ops_table.cpp) on every backend: float64
// finite differences on the CPU, the CPU in float32 against float64, and every other backend (CUDA)
// against the CPU, forward and backward; and the kernel cases (tests/backend_kernel_cases.cpp) on every
// backend against the CPU. One doctest subcase per entry: -sc="conv2d" runs one.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "kernels/kernels.h"
#include "tests/backend_kernels.h"
#include "tests/backend_ops.h"
#include "tests/gradcheck.h"

using namespace hamu;
using namespace hamu::testing;

namespace {

using Vec = std::vector<double>;

std::string shapes_text(const OpVariant& v) {
  std::string t;
  for (const OpInput& i : v.inputs) {
    if (!t.empty()) t += ' ';
    t += shape_str(i.shape);
  }
  return t;
}

int64_t input_elems(const OpVariant& v) {
  int64_t n = 0;
  for (const OpInput& i : v.inputs) n += shape_numel(i.shape);
  return n;
}

// The host values of a variant's inputs: float64 rounded through float32 (so that the float32 and float64
// runs see the same numbers) or the fixed tensor as given.
std::vector<Tensor> make_values(const OpVariant& v) {
  std::vector<Tensor> out;
  for (const OpInput& i : v.inputs) {
    if (i.fill == OpInput::Fill::fixed) {
      out.push_back(i.value);
      continue;
    }
    Tensor t = i.fill == OpInput::Fill::away_from_zero ? random_away_from_zero(i.shape, i.lo)
               : i.fill == OpInput::Fill::distinct     ? random_distinct(i.shape)
                                                       : random_tensor(i.shape, i.lo, i.hi);
    if (i.edit) {
      Vec d = t.to_vector<double>();
      i.edit(d);
      t = Tensor::from_doubles(d, i.shape, DType::f64);
    }
    out.push_back(t.to(DType::f32).to(DType::f64));
  }
  return out;
}

Vec host_values(const Tensor& t) {
  Tensor h = t.to(Device{});
  if (h.dtype() == DType::i32) {
    const std::vector<int32_t> v = h.to_vector<int32_t>();
    return Vec(v.begin(), v.end());
  }
  return as_doubles(h);
}

bool differentiable(const OpCase& c, const OpInput& i) { return c.grad && i.grad && i.fill != OpInput::Fill::fixed; }

// One run of a variant on one device and dtype: forward, then backward of <y, proj> (proj is drawn on
// the first run and reused, so every run differentiates the same scalar).
struct RunOut {
  Vec y;
  std::vector<Vec> grads;  // differentiable inputs, in order
  std::vector<Vec> after;  // compare_after inputs, in order
};

RunOut run_variant(const OpCase& c, const OpVariant& v, const std::vector<Tensor>& values, Tensor& proj, DType dt,
                   Device dev) {
  std::vector<Tensor> ins;
  for (size_t k = 0; k < values.size(); ++k) {
    Tensor x = values[k].is_floating() ? values[k].to(dt) : values[k];
    x = x.to(dev).clone();  // a fresh leaf each run: buffers are updated in place
    if (differentiable(c, v.inputs[k])) x.requires_grad_(true);
    ins.push_back(x);
  }
  Tensor y = v.build(ins);
  RunOut out;
  out.y = host_values(y);
  if (c.grad) {
    if (!proj.defined()) proj = random_tensor(y.shape(), -1.0, 1.0).to(DType::f32).to(DType::f64);
    REQUIRE_MESSAGE(y.requires_grad(), "the output of " << c.name << " carries no gradient");
    y.backward(proj.to(dt).to(dev));
    for (size_t k = 0; k < ins.size(); ++k) {
      if (!differentiable(c, v.inputs[k])) continue;
      REQUIRE_MESSAGE(ins[k].grad().defined(), c.name << ": input " << k << " received no gradient");
      out.grads.push_back(host_values(ins[k].grad()));
    }
  }
  for (size_t k = 0; k < ins.size(); ++k)
    if (v.inputs[k].compare_after) out.after.push_back(host_values(ins[k]));
  return out;
}

// ||a - b|| / ||b|| (||a - b|| when b is 0); +inf when sizes differ or NaNs sit in different places.
double rel_err(const Vec& a, const Vec& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    if (std::isnan(a[i])) continue;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (!std::isfinite(num)) return std::numeric_limits<double>::infinity();
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

void check_rel(const std::string& what, const Vec& got, const Vec& want, double tol) {
  const double e = rel_err(got, want);
  INFO(what << ": rel err " << e << " (tol " << tol << ")");
  CHECK(e <= tol);
}

void compare_runs(const RunOut& got, const RunOut& want, double tol_fwd, double tol_bwd) {
  check_rel("forward", got.y, want.y, tol_fwd);
  REQUIRE(got.grads.size() == want.grads.size());
  for (size_t k = 0; k < got.grads.size(); ++k) {
    INFO("gradient of differentiable input " << k);
    check_rel("backward", got.grads[k], want.grads[k], tol_bwd);
  }
  REQUIRE(got.after.size() == want.after.size());
  for (size_t k = 0; k < got.after.size(); ++k) {
    INFO("in-place updated input " << k);
    check_rel("state after the run", got.after[k], want.after[k], tol_fwd);
  }
}

// The recorded results of a kernel case on a backend against the CPU's, in order.
[[maybe_unused]] void compare_kernel_results(const std::vector<KernelResult>& got, const std::vector<KernelResult>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const KernelResult &g = got[i], &w = want[i];
    INFO(w.name);
    REQUIRE(g.name == w.name);
    REQUIRE(g.values.size() == w.values.size());
    if (w.is_report) {  // integer fields first, then doubles (the angle, index 14, to 1e-6)
      for (size_t f = 0; f < w.values.size(); ++f) {
        const double a = g.values[f], b = w.values[f];
        const double tol = f < 9 ? 0.0 : (f == 14 ? 1e-6 : 1e-8);
        const bool ok = std::isnan(a) || std::isnan(b) ? std::isnan(a) && std::isnan(b)
                                                       : std::fabs(a - b) <= tol * std::max({1.0, std::fabs(a), std::fabs(b)});
        INFO("report field " << f << ": " << a << " vs cpu " << b);
        CHECK(ok);
      }
    } else if (!w.scale.empty()) {
      int bad = 0;
      for (size_t j = 0; j < w.values.size(); ++j)
        if (!(std::fabs(g.values[j] - w.values[j]) <= w.tol * w.scale[j])) {
          if (bad < 5) MESSAGE("element " << j << ": " << g.values[j] << " vs cpu " << w.values[j]);
          ++bad;
        }
      CHECK(bad == 0);
    } else {
      check_rel(w.name, g.values, w.values, w.tol);
      if (w.warn_unless_equal) WARN_MESSAGE(g.values == w.values, w.name << ": not bit-identical to the CPU");
    }
  }
}

// Backends other than the CPU, each compared against the CPU.
struct Backend {
  const char* name;
  Device device;
  bool no_cudnn;  // HAMU_NO_CUDNN=1 during the run (the own im2col + GEMM convolution)
};

std::vector<Backend> other_backends() {
#ifdef HAMU_CUDA
  if (kernels::cuda_device_count() > 0)
    return {{"cuda", Device{Device::cuda, 0}, false}, {"cuda, own conv path", Device{Device::cuda, 0}, true}};
  static bool told = false;
  if (!told) std::printf("backend ops: cuda backend skipped: no GPU\n");
  told = true;
#endif
  return {};
}

// Runs `f` and turns an exception into a failure that names the op, the variant and the backend
// (an op whose backend lacks a kernel throws from the engine's dispatch).
template <class F> void guarded(const std::string& where, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    FAIL_CHECK(where << ": threw: " << e.what());
  }
}

}  // namespace

TEST_CASE("backend ops: float64 finite differences of every differentiable op (CPU)") {
  for (const OpCase& c : op_table()) {
    if (!c.grad) continue;
    SUBCASE(c.name.c_str()) {
      int checked = 0;
      for (const OpVariant& v : c.variants()) {
        if (!v.fd || input_elems(v) > kFdMaxElems) continue;
        INFO(c.name << " " << v.label << " " << shapes_text(v));
        guarded(c.name + " " + v.label, [&] {
          std::vector<Tensor> ins = make_values(v);
          for (size_t k = 0; k < ins.size(); ++k) {
            ins[k] = ins[k].clone();
            if (differentiable(c, v.inputs[k])) ins[k].requires_grad_(true);
          }
          const double err = gradcheck(v.build, ins, c.fd_eps);
          INFO("finite differences: rel err " << err << " (tol " << c.tol.fd << ")");
          CHECK(err < c.tol.fd);
        });
        ++checked;
      }
      CHECK_MESSAGE(checked > 0, c.name << ": no variant small enough for finite differences");
    }
  }
}

TEST_CASE("backend ops: every op on every backend against the CPU, forward and backward") {
  const std::vector<Backend> backends = other_backends();
  for (const OpCase& c : op_table()) {
    SUBCASE(c.name.c_str()) {
      for (const OpVariant& v : c.variants()) {
        INFO(c.name << " " << v.label << " " << shapes_text(v));
        guarded(c.name + " " + v.label, [&] {
          const std::vector<Tensor> values = make_values(v);
          Tensor proj;
          if (backends.empty() && input_elems(v) > kF32MaxElems) return;
          const RunOut ref64 = run_variant(c, v, values, proj, DType::f64, Device{});
          const RunOut ref32 = run_variant(c, v, values, proj, DType::f32, Device{});
          if (v.f32) {
            INFO("backend: cpu float32 against float64");
            compare_runs(ref32, ref64, c.tol.f32, c.tol.f32);
          }
          for (const Backend& b : backends) {
            if (b.no_cudnn && !c.no_cudnn_too) continue;
            if (!c.cuda) {
              MESSAGE(c.name << ": no " << b.name << " kernel yet (the table says so): skipped");
              continue;
            }
            INFO("backend: " << b.name);
            if (b.no_cudnn) setenv("HAMU_NO_CUDNN", "1", 1);
            guarded(c.name + " " + v.label + " on " + b.name, [&] {
              const RunOut got = run_variant(c, v, values, proj, DType::f32, b.device);
              compare_runs(got, c.ref_f64 ? ref64 : ref32, c.tol.fwd, c.tol.bwd);
            });
            if (b.no_cudnn) unsetenv("HAMU_NO_CUDNN");
          }
        });
      }
    }
  }
}

TEST_CASE("backend kernels: every kernel case on every backend against the CPU") {
  const bool other = !other_backends().empty();
  for (const KernelCase& kc : kernel_cases()) {
    SUBCASE(kc.name.c_str()) {
      // Without another backend the CPU run still checks the case's own assertions and that it runs at all
      // (the heavy cases excepted: their buffers would slow `make test` for nothing to compare).
      if (!other && kc.heavy) {
        static bool told = false;
        if (!told) std::printf("backend kernels: the heavy cases (multi-tensor passes, fused HAMU update) run beside a GPU only\n");
        told = true;
        continue;
      }
      CpuKernelRun cpu;
      guarded(kc.name + " on cpu", [&] { kc.cpu(cpu); });
#ifdef HAMU_CUDA
      if (other) {
        CudaKernelRun gpu;
        guarded(kc.name + " on cuda", [&] {
          kc.cuda(gpu);
          compare_kernel_results(gpu.results, cpu.results);
        });
      }
#endif
      (void)other;
    }
  }
}
