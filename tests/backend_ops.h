// tests/backend_ops.h: the op table of the table-driven backend test (ggml test-backend-ops style).
//
// Each differentiable engine op is described ONCE, as an OpCase in tests/backend_ops_table.cpp: its
// variants (input shapes incl. odd sizes, value ranges, parameters) and a function that builds the op's
// output from input Tensors through engine ops. tests/test_backend_ops.cpp runs every entry
//   (a) as a float64 central-difference gradient check on the CPU (variants small enough, grad entries),
//   (b) on the CPU in float32 against float64 (forward, backward and in-place-updated inputs),
//   (c) on every other backend (CUDA when built with it and a GPU is present) against the CPU float32
//       result (float64 where the entry says so), forward and backward through autograd, with relative
//       errors ||backend - reference|| / ||reference||.
// Kernel entry points that no engine op reaches (or reaches only with one fixed argument) are described
// in tests/backend_kernel_cases.cpp.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hamu::testing {

// One input of an op variant.
struct OpInput {
  enum class Fill { uniform, away_from_zero, distinct, fixed };
  Shape shape;
  Fill fill = Fill::uniform;
  double lo = -1.0, hi = 1.0;   // uniform: the range; away_from_zero: |x| in [lo, 1]
  bool grad = true;             // differentiable: its gradient is checked (entries with grad == true)
  bool compare_after = false;   // updated in place by the op (running statistics): compared after the run
  Tensor value;                 // Fill::fixed: CPU float64 or int32 values, used as they are
  std::function<void(std::vector<double>&)> edit;  // optional: edits the random values (ties, ...)
};

// Random uniform values in [lo, hi), differentiable.
OpInput in(Shape shape, double lo = -1.0, double hi = 1.0);
// |x| in [gap, 1] with a random sign, for ops with a kink at 0 (relu, abs).
OpInput in_away(Shape shape, double gap = 0.1);
// Distinct values (a shuffled progression), for max-type ops.
OpInput in_distinct(Shape shape);
// A constant (labels, indices, running statistics): no gradient.
OpInput constant(Tensor value);
// A constant the op updates in place; compared after the run.
OpInput buffer(Tensor value);

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct OpVariant {
  std::string label;  // shapes and parameters, printed with every failure
  std::vector<OpInput> inputs;
  OpFn build;
  bool fd = true;   // false: ties or kinks in the inputs (no finite differences)
  bool f32 = true;  // false: a gradient that is zero by cancellation (layer norm over one element, batch
                    // norm over two values): float32 against float64 is noise against noise there
};

// Tolerances on relative errors. fd: float64 finite differences against backward. f32: the CPU in float32
// against float64. fwd/bwd: another backend against the CPU reference (forward output and in-place
// updated inputs / input gradients).
struct OpTol {
  double fd = 1e-6;
  double f32 = 1e-5;
  double fwd = 1e-5;
  double bwd = 1e-5;
};

struct OpCase {
  std::string name;
  std::function<std::vector<OpVariant>()> variants;
  OpTol tol;
  bool grad = true;        // differentiable: gradient check and backward parity
  bool ref_f64 = false;    // other backends against the CPU in float64 (the float CPU kernel is the less
                           // accurate side, e.g. a sequential float sum over 10^6 terms)
  bool no_cudnn_too = false;  // CUDA runs a second time with HAMU_NO_CUDNN=1 (the own conv path)
  bool cuda = true;        // false: the op has no CUDA kernel yet; its CUDA run is skipped and named
  double fd_eps = 1e-6;
};

const std::vector<OpCase>& op_table();

// Variants larger than this (elements over all inputs) skip the finite-difference check: they exist for
// the backends (odd sizes past block and grid boundaries), and two forwards per element would be slow.
constexpr int64_t kFdMaxElems = 1024;
// Variants larger than this skip the CPU float32-against-float64 check unless another backend is
// present (then the CPU float32 run is the reference anyway): keeps `make test` fast on a GPU-less box.
constexpr int64_t kF32MaxElems = 100000;

}  // namespace hamu::testing
