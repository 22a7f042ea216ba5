// tests/backend_ops_table.cpp: the op table: every differentiable engine op, described once.
//
// HOW TO ADD AN OP (one entry): append to the list in op_table() below
//
//   {.name = "my_op",                                   // the engine op, as in engine/ops.h
//    .variants = [] {
//      return V{{"small", {in({3, 4}), in({4}, 0.5, 2.0)},            // FD-checked (small)
//                [](const Ins& t) { return my_op(t[0], t[1]); }},
//               {"odd", {in({1000003}), in({1000003})},               // backends only (large)
//                [](const Ins& t) { return my_op(t[0], t[1]); }}};
//    },
//    .tol = {.fwd = 1e-5, .bwd = 1e-5}},                // relative errors; see OpTol in backend_ops.h
//
// - Inputs: in(shape, lo, hi) uniform and differentiable; in_away(shape) away from a kink at 0;
//   in_distinct(shape) for max-type ops; constant(tensor) for labels / indices / fixed statistics;
//   buffer(tensor) for state the op updates in place (compared after the run).
// - Give small variants (<= kFdMaxElems input elements: float64 finite differences on the CPU) AND
//   odd-sized ones that cross block/grid boundaries (1, 3, 1000003, rows of 257, ...) for the backends.
//   A variant with ties or kinks in its inputs sets .fd = false.
// - .grad = false for ops without a gradient; .no_cudnn_too for ops with a cuDNN path.
// - An op landing CPU-first: its engine op throws on a CUDA tensor (e.g. `if constexpr (std::is_same_v<
//   std::decay_t<decltype(ctx)>, kernels::CudaCtx>) throw Error("my_op: no CUDA kernel yet")` inside
//   dispatch, so the CUDA build still links) and the entry says .cuda = false: the GPU run then names it
//   as skipped. Without the flag the runner reports the throw as a failure naming the op and variant.
// - Kernel entry points no engine op reaches go to tests/backend_kernel_cases.cpp instead.
// - build() may call any engine ops; the runner drives forward and backward on every backend.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/ops_internal.h"
#include "tests/backend_ops.h"
#include "tests/gradcheck.h"

// Entries name only the fields they change (designated initializers); the rest keep their defaults.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace hamu::testing {

OpInput in(Shape shape, double lo, double hi) {
  OpInput i;
  i.shape = std::move(shape);
  i.lo = lo;
  i.hi = hi;
  return i;
}

OpInput in_away(Shape shape, double gap) {
  OpInput i = in(std::move(shape), gap, 1.0);
  i.fill = OpInput::Fill::away_from_zero;
  return i;
}

OpInput in_distinct(Shape shape) {
  OpInput i = in(std::move(shape));
  i.fill = OpInput::Fill::distinct;
  return i;
}

OpInput constant(Tensor value) {
  OpInput i;
  i.shape = value.shape();
  i.fill = OpInput::Fill::fixed;
  i.value = std::move(value);
  i.grad = false;
  return i;
}

OpInput buffer(Tensor value) {
  OpInput i = constant(std::move(value));
  i.compare_after = true;
  return i;
}

namespace {

using Ins = std::vector<Tensor>;
using V = std::vector<OpVariant>;

// Sizes of the elementwise and full-reduction variants: one element, a partial vector, a million and
// three (past every block and grid boundary, and odd).
const int64_t kOdd[] = {1, 3, 1000003};

// Int32 tensors for labels and indices.
Tensor int_tensor(std::vector<int32_t> v, Shape shape) { return Tensor::from_vector<int32_t>(v, shape); }
Tensor labels_with_ignored(int64_t rows, int classes) {
  std::vector<int32_t> v = random_labels(rows, classes).to_vector<int32_t>();
  if (rows > 2) v[1] = -100;
  return int_tensor(v, {rows});
}
// Indices into a vocabulary, with one frequent token (every third index) to stress the scatter-add.
Tensor frequent_indices(int64_t n, int64_t vocab) {
  std::vector<int32_t> v = random_labels(n, int(vocab)).to_vector<int32_t>();
  for (int64_t i = 0; i < n; i += 3) v[size_t(i)] = v[0];
  return int_tensor(v, {n});
}

// [outer, n, inner] views reduced over the middle axis: single elements, long rows (the warp path),
// many short rows, strided inner dims.
struct Shape3 {
  int64_t outer, n, inner;
};
const Shape3 kReduceShapes[] = {{1, 1, 1},  {3, 7, 1},    {5, 1000, 1}, {2, 5000, 1},  {1, 1000003, 1},
                                {4, 7, 33}, {3, 3001, 5}, {1, 9, 1025}, {70000, 3, 1}};

// Ties in every row (positions 1 and 2 of the reduced axis): the first index must win.
OpInput with_ties(OpInput i, const Shape3& s) {
  if (s.n > 2)
    i.edit = [s](std::vector<double>& x) {
      for (int64_t o = 0; o < s.outer; ++o)
        for (int64_t j = 0; j < s.inner; ++j) {
          x[size_t((o * s.n + 1) * s.inner + j)] = 5.0;
          x[size_t((o * s.n + 2) * s.inner + j)] = 5.0;
        }
    };
  return i;
}

// Elementwise binary ops: broadcasting against a column, a row and a scalar; a transposed operand
// (the strided path); same shapes at odd sizes.
V binary_variants(Tensor (*op)(const Tensor&, const Tensor&), bool positive_rhs) {
  const double lo = positive_rhs ? 0.5 : -1.0, hi = positive_rhs ? 2.0 : 1.0;
  auto f = [op](const Ins& t) { return op(t[0], t[1]); };
  V v = {{"[3,4,5] op [4,1]", {in({3, 4, 5}), in({4, 1}, lo, hi)}, f},
         {"[3,4,5] op [5]", {in({3, 4, 5}), in({5}, lo, hi)}, f},
         {"[5,4]^T op [4,1]", {in({5, 4}), in({4, 1}, lo, hi)}, [op](const Ins& t) { return op(t[0].transpose(0, 1), t[1]); }},
         {"[3,1,5] op [1,4,5]", {in({3, 1, 5}), in({1, 4, 5}, lo, hi)}, f},
         {"scalar op [6,7]", {in({}, lo, hi), in({6, 7}, lo, hi)}, f}};
  for (int64_t n : kOdd) v.push_back({"same shape", {in({n}), in({n}, lo, hi)}, f});
  return v;
}

struct UnaryOp {
  const char* name;
  Tensor (*fn)(const Tensor&);
  bool positive;  // domain x > 0
};
const UnaryOp kUnary[] = {{"neg", neg, false},         {"relu", relu, false}, {"gelu", gelu, false},
                          {"tanh", tanh, false},       {"exp", exp, false},   {"log", log, true},
                          {"sigmoid", sigmoid, false}, {"sqrt", sqrt, true},  {"square", square, false},
                          {"abs", abs, false}};

V unary_variants(const UnaryOp& u) {
  auto f = [fn = u.fn](const Ins& t) { return fn(t[0]); };
  V v = {{"[4,7]", {u.positive ? in({4, 7}, 0.2, 3.0) : in_away({4, 7})}, f}};
  for (int64_t n : kOdd) v.push_back({"odd", {u.positive ? in({n}, 0.1, 3.0) : in({n}, -3.0, 3.0)}, f});
  return v;
}

// The full reductions over 1, 3, 10^6+3 and 2^22+5 elements (the multi-block path).
V full_reduction_variants(int inputs, const OpFn& f) {
  V v = {{"[3,5,4]", std::vector<OpInput>(size_t(inputs), in({3, 5, 4})), f}};
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(1000003), int64_t(4194304 + 5)})
    v.push_back({"odd", std::vector<OpInput>(size_t(inputs), in({n})), f});
  return v;
}

V dim_reduction_variants(Tensor (*op)(const Tensor&, int, bool), bool keepdim) {
  V v;
  for (int d = 0; d < 3; ++d)
    v.push_back({"[3,5,4] dim " + std::to_string(d), {in({3, 5, 4})}, [op, d, keepdim](const Ins& t) { return op(t[0], d, keepdim); }});
  for (const Shape3& s : kReduceShapes)
    v.push_back({"middle axis", {in({s.outer, s.n, s.inner})}, [op, keepdim](const Ins& t) { return op(t[0], 1, keepdim); }});
  return v;
}

struct ConvCase {
  Shape x, w;
  Conv2dOptions o;
};
// Small (finite differences) and the backend shapes: odd sizes with stride 2 and pad 1, pointwise,
// a rectangular kernel with mixed strides/pads, a ResNet-20 stage, an even kernel with stride 3.
const ConvCase kConvCases[] = {
    {{2, 3, 7, 6}, {4, 3, 3, 3}, Conv2dOptions{1, 1, 1, 1}},   {{2, 2, 9, 8}, {3, 2, 3, 3}, Conv2dOptions{2, 2, 1, 1}},
    {{1, 3, 5, 5}, {2, 3, 1, 1}, Conv2dOptions{1, 1, 0, 0}},   {{2, 2, 6, 7}, {3, 2, 5, 3}, Conv2dOptions{1, 2, 2, 1}},
    {{3, 5, 11, 9}, {7, 5, 3, 3}, Conv2dOptions{2, 2, 1, 1}},  {{2, 3, 8, 8}, {4, 3, 1, 1}, Conv2dOptions{1, 1, 0, 0}},
    {{1, 1, 5, 7}, {2, 1, 5, 3}, Conv2dOptions{1, 2, 2, 1}},   {{4, 16, 16, 16}, {32, 16, 3, 3}, Conv2dOptions{1, 1, 1, 1}},
    {{2, 3, 13, 17}, {5, 3, 4, 2}, Conv2dOptions{3, 1, 0, 1}}};

struct PoolCase {
  Shape x;
  Pool2dOptions o;
};
// The backend shapes: 2x2/2 with odd sizes, 3x3/2 padded, one window over the whole image, 3x3/1 padded.
const PoolCase kPoolCases[] = {{{2, 3, 9, 11}, Pool2dOptions{2, 2, 2, 2, 0, 0}},
                               {{3, 5, 13, 7}, Pool2dOptions{3, 3, 2, 2, 1, 1}},
                               {{1, 2, 8, 8}, Pool2dOptions{8, 8, 8, 8, 0, 0}},
                               {{4, 1, 5, 5}, Pool2dOptions{3, 3, 1, 1, 1, 1}}};

// Finite-difference shapes (distinct values): strided with an asymmetric padded window, overlapping
// windows (stride 1), the classic 2x2/2 with odd sizes (last row and column dropped).
const PoolCase kPoolFdCases[] = {{{2, 3, 7, 13}, Pool2dOptions{3, 2, 2, 3, 1, 1}},
                                 {{1, 5, 13, 7}, Pool2dOptions{3, 3, 1, 1, 1, 1}},
                                 {{3, 2, 7, 9}, Pool2dOptions{2, 2, 2, 2, 0, 0}}};

V pool_variants(Tensor (*op)(const Tensor&, const Pool2dOptions&), std::vector<Pool2dOptions> small) {
  V v;
  for (const Pool2dOptions& o : small)
    v.push_back({"[2,3,7,6] small", {in_distinct({2, 3, 7, 6})}, [op, o](const Ins& t) { return op(t[0], o); }});
  for (const PoolCase& c : kPoolFdCases)
    v.push_back({"finite differences", {in_distinct(c.x)}, [op, o = c.o](const Ins& t) { return op(t[0], o); }});
  for (const PoolCase& c : kPoolCases) {
    OpInput x = in(c.x);
    x.edit = [](std::vector<double>& d) { d[3] = d[4]; };  // a tie: the first maximum wins
    OpVariant var{"kernel " + std::to_string(c.o.kernel_h) + " stride " + std::to_string(c.o.stride_h), {x},
                  [op, o = c.o](const Ins& t) { return op(t[0], o); }};
    var.fd = false;
    v.push_back(var);
  }
  return v;
}

// BatchNorm shapes [n, c, hw]: images, [N,C] rows, one sample, a large batch, long rows.
struct BnCase {
  int64_t n, c, hw;
};
const BnCase kBnCases[] = {{8, 3, 49}, {2, 16, 1}, {1, 5, 1}, {128, 16, 64}, {3, 7, 1025}};
Shape bn_shape(const BnCase& s) { return s.hw == 1 ? Shape{s.n, s.c} : Shape{s.n, s.c, s.hw, 1}; }

// x = 3 + 2u: a mean far from 0.
OpInput bn_input(Shape shape) { return in(std::move(shape), 1.0, 5.0); }

V softmax_variants(Tensor (*op)(const Tensor&)) {
  V v = {{"[5,7]", {in({5, 7}, -2, 2)}, [op](const Ins& t) { return op(t[0]); }}};
  for (int64_t d : {int64_t(1), int64_t(10), int64_t(1000), int64_t(5003)})
    for (int64_t rows : {int64_t(1), int64_t(7), int64_t(300)})
      v.push_back({"rows x d", {in({rows, d}, -8, 8)}, [op](const Ins& t) { return op(t[0]); }});
  return v;
}

std::vector<OpCase> build_table() {
  std::vector<OpCase> t;
  const OpTol exact{.fwd = 1e-6, .bwd = 1e-6};  // the same float operations on every backend
  // Broadcasting ops: the gradient of a broadcast operand is a sum (sum_to: the CPU float kernel sums in
  // float, the CUDA one in double), so their backward gets the reduction tolerance.
  const OpTol binary_tol{.fwd = 1e-6, .bwd = 1e-5};

  // ---- elementwise
  t.push_back({.name = "add", .variants = [] { return binary_variants(add, false); }, .tol = binary_tol});
  t.push_back({.name = "sub", .variants = [] { return binary_variants(sub, false); }, .tol = binary_tol});
  t.push_back({.name = "mul", .variants = [] { return binary_variants(mul, false); }, .tol = binary_tol});
  t.push_back({.name = "div", .variants = [] { return binary_variants(div, true); }, .tol = binary_tol});
  t.push_back({.name = "affine",
               .variants = [] {
                 V v = {{"[3,4,5] -1.5x+0.25", {in({3, 4, 5})}, [](const Ins& x) { return affine(x[0], -1.5, 0.25); }}};
                 for (int64_t n : kOdd) v.push_back({"-0.5x+3", {in({n})}, [](const Ins& x) { return affine(x[0], -0.5, 3.0); }});
                 return v;
               },
               .tol = exact});
  for (const UnaryOp& u : kUnary)
    t.push_back({.name = u.name, .variants = [u] { return unary_variants(u); }});
  t.push_back({.name = "sum_to",
               .variants = [] {
                 struct C {
                   Shape in, out;
                 };
                 const C cases[] = {{{3, 4, 5}, {4, 1}},     {{3, 4, 5}, {1, 4, 1}}, {{3, 4, 5}, {3, 1, 5}},
                                    {{3, 4, 5}, {1, 1, 1}},  {{4099, 7}, {1, 7}},    {{7, 4099}, {7, 1}},
                                    {{2, 3, 1, 5}, {2, 1, 1, 5}}, {{1000003}, {1}},  {{5, 6}, {5, 6}}};
                 V v;
                 for (const C& c : cases)
                   v.push_back({shape_str(c.out), {in(c.in)}, [out = c.out](const Ins& x) { return sum_to(x[0], out); }});
                 return v;
               },
               .tol = {.f32 = 1e-3},  // the float CPU kernel sums in float (10^6 terms drift)
               .ref_f64 = true});
  t.push_back({.name = "expand_to",
               .variants = [] {
                 return V{{"[3,1] -> [2,3,4]", {in({3, 1})}, [](const Ins& x) { return expand_to(x[0], {2, 3, 4}); }},
                          {"[1,1,5] -> [300,7,5]", {in({1, 1, 5})}, [](const Ins& x) { return expand_to(x[0], {300, 7, 5}); }}};
               },
               .tol = {.f32 = 1e-5, .fwd = 0, .bwd = 1e-5},  // the backward is a sum_to
               .ref_f64 = true});
  // float64 -> float32 -> float64: the gradient passes through both conversions.
  t.push_back({.name = "dtype round trip",
               .variants = [] {
                 return V{{"[4,3]", {in({4, 3})}, [](const Ins& x) {
                             const DType d = x[0].dtype();
                             return mul(x[0].to(DType::f32).to(d), x[0]);
                           }}};
               },
               .tol = {.fd = 1e-5},
               .fd_eps = 1e-3});

  // ---- reductions (accumulated in double on every backend; the backward is a broadcast)
  const OpTol reduce_tol{.f32 = 1e-6, .fwd = 1e-5, .bwd = 1e-6};
  t.push_back({.name = "sum (all)", .variants = [] { return full_reduction_variants(1, [](const Ins& x) { return sum(x[0]); }); }, .tol = reduce_tol});
  t.push_back({.name = "mean (all)", .variants = [] { return full_reduction_variants(1, [](const Ins& x) { return mean(x[0]); }); }, .tol = reduce_tol});
  t.push_back({.name = "dot", .variants = [] { return full_reduction_variants(2, [](const Ins& x) { return dot(x[0], x[1]); }); }, .tol = {.f32 = 1e-6}});
  t.push_back({.name = "sum_squares", .variants = [] { return full_reduction_variants(1, [](const Ins& x) { return sum_squares(x[0]); }); }, .tol = reduce_tol});
  t.push_back({.name = "sum (dim)", .variants = [] { return dim_reduction_variants(sum, false); }, .tol = reduce_tol});
  t.push_back({.name = "mean (dim, keepdim)", .variants = [] { return dim_reduction_variants(mean, true); }, .tol = reduce_tol});
  t.push_back({.name = "max (dim)",
               .variants = [] {
                 V v = {{"[3,5,4] dim 1", {in_distinct({3, 5, 4})}, [](const Ins& x) { return max(x[0], 1); }},
                        {"[3,5,4] dim -1 keepdim", {in_distinct({3, 5, 4})}, [](const Ins& x) { return max(x[0], -1, true); }}};
                 for (const Shape3& s : kReduceShapes) {
                   OpVariant var{"middle axis, ties", {with_ties(in({s.outer, s.n, s.inner}), s)}, [](const Ins& x) { return max(x[0], 1); }};
                   var.fd = false;
                   v.push_back(var);
                 }
                 return v;
               },
               .tol = {.fwd = 1e-5, .bwd = 1e-6}});
  t.push_back({.name = "argmax",
               .variants = [] {
                 V v;
                 for (const Shape3& s : kReduceShapes)
                   v.push_back({"middle axis, ties", {with_ties(in({s.outer, s.n, s.inner}), s)}, [](const Ins& x) { return argmax(x[0], 1); }});
                 return v;
               },
               .tol = {.f32 = 0, .fwd = 0, .bwd = 0},
               .grad = false});

  // ---- shape ops
  t.push_back({.name = "concat",
               .variants = [] {
                 auto f1 = [](const Ins& x) { return concat({x[0], x[1]}, 1); };
                 return V{{"[2,3,4] ++ [2,2,4] dim 1", {in({2, 3, 4}), in({2, 2, 4})}, f1},
                          {"[37,19] ++ [37,22] dim 1", {in({37, 19}), in({37, 22})}, f1},
                          {"[3,5] ++ [4,5] ++ [1,5] dim 0", {in({3, 5}), in({4, 5}), in({1, 5})},
                           [](const Ins& x) { return concat({x[0], x[1], x[2]}, 0); }}};
               },
               .tol = {.f32 = 0, .fwd = 0, .bwd = 0}});
  t.push_back({.name = "permute",
               .variants = [] {
                 return V{{"[2,3,4] (2,0,1)", {in({2, 3, 4})}, [](const Ins& x) { return permute(x[0], {2, 0, 1}); }},
                          {"[7,13,5] (1,2,0)", {in({7, 13, 5})}, [](const Ins& x) { return permute(x[0], {1, 2, 0}); }}};
               },
               .tol = {.f32 = 0, .fwd = 0, .bwd = 0}});
  t.push_back({.name = "strided views",
               .variants = [] {
                 return V{{"narrow, transpose, reshape", {in({2, 3, 4})},
                           [](const Ins& x) { return x[0].narrow(2, 1, 2).transpose(0, 2).reshape({-1}); }},
                          {"flatten, clone", {in({2, 3, 4})}, [](const Ins& x) { return x[0].flatten(1).clone(); }},
                          // a transposed, sliced 3-D view at an offset: [7,13,5] -> [5,7,11]
                          {"sliced transposed 3-D", {in({7, 13, 5})},
                           [](const Ins& x) { return x[0].narrow(1, 2, 11).transpose(0, 2).transpose(1, 2).contiguous(); }}};
               },
               .tol = {.f32 = 0, .fwd = 0, .bwd = 0}});
  t.push_back({.name = "index_select0",
               .variants = [] {
                 auto f = [](const Ins& x) { return index_select0(x[0], x[1]); };
                 return V{{"[2,3,4] rows 1,0,1,1", {in({2, 3, 4}), constant(int_tensor({1, 0, 1, 1}, {4}))}, f},
                          {"[300,7] 1000 rows", {in({300, 7}), constant(frequent_indices(1000, 300))}, f}};
               },
               .tol = {.f32 = 1e-6, .fwd = 0, .bwd = 1e-6}});

  // ---- linear algebra
  t.push_back({.name = "matmul",
               .variants = [] {
                 auto f = [](const Ins& x) { return matmul(x[0], x[1]); };
                 auto ta = [](const Ins& x) { return matmul(x[0].transpose(0, 1), x[1]); };
                 auto tb = [](const Ins& x) { return matmul(x[0], x[1].transpose(0, 1)); };
                 auto tab = [](const Ins& x) { return matmul(x[0].transpose(0, 1), x[1].transpose(0, 1)); };
                 return V{{"[5,7] x [7,3]", {in({5, 7}), in({7, 3})}, f},
                          {"[7,5]^T x [7,3]", {in({7, 5}), in({7, 3})}, ta},
                          {"[2,3,4,5] x [2,3,5,2]", {in({2, 3, 4, 5}), in({2, 3, 5, 2})}, f},
                          {"[37,29] x [29,53]", {in({37, 29}), in({29, 53})}, f},
                          {"[29,37]^T x [29,53]", {in({29, 37}), in({29, 53})}, ta},
                          {"[37,29] x [53,29]^T", {in({37, 29}), in({53, 29})}, tb},
                          {"[29,37]^T x [53,29]^T", {in({29, 37}), in({53, 29})}, tab},
                          {"[5,37,29] x [5,29,53]", {in({5, 37, 29}), in({5, 29, 53})}, f}};
               }});
  t.push_back({.name = "linear",
               .variants = [] {
                 auto f = [](const Ins& x) { return linear(x[0], x[1], x[2]); };
                 auto nb = [](const Ins& x) { return linear(x[0], x[1], Tensor()); };
                 return V{{"[6,5] bias", {in({6, 5}), in({4, 5}), in({4})}, f},
                          {"[6,5] no bias", {in({6, 5}), in({4, 5})}, nb},
                          {"[2,3,5] bias", {in({2, 3, 5}), in({4, 5}), in({4})}, f},
                          {"[37,29] bias", {in({37, 29}), in({53, 29}), in({53})}, f},
                          {"[5,7,29] no bias", {in({5, 7, 29}), in({53, 29})}, nb}};
               }});

  // ---- neural-network ops
  t.push_back({.name = "conv2d",
               .variants = [] {
                 V v;
                 for (const ConvCase& c : kConvCases)
                   for (bool bias : {true, false}) {
                     std::string label = "stride ";
                     label += std::to_string(c.o.stride_h) + "," + std::to_string(c.o.stride_w) + " pad " +
                              std::to_string(c.o.pad_h) + "," + std::to_string(c.o.pad_w) + (bias ? " bias" : "");
                     std::vector<OpInput> ins = {in(c.x), in(c.w)};
                     if (bias) ins.push_back(in({c.w[0]}));
                     v.push_back({label, ins, [o = c.o](const Ins& x) {
                                    return conv2d(x[0], x[1], x.size() > 2 ? x[2] : Tensor(), o);
                                  }});
                   }
                 return v;
               },
               .no_cudnn_too = true});
  // Frozen BatchNorm folded into the convolution (+ residual, + ReLU): with gradients, as the runner drives it,
  // the two ops on every backend (the single CPU kernel is for gradient-free forwards:
  // tests/test_batch_norm_act.cpp compares it bit for bit).
  t.push_back({.name = "conv2d_bn_act",
               .variants = [] {
                 V v;
                 for (size_t i : {size_t(0), size_t(4), size_t(5), size_t(7)}) {
                   const ConvCase& c = kConvCases[i];
                   const int64_t k = c.w[0];
                   const int64_t oh = (c.x[2] + 2 * c.o.pad_h - c.w[2]) / c.o.stride_h + 1;
                   const int64_t ow = (c.x[3] + 2 * c.o.pad_w - c.w[3]) / c.o.stride_w + 1;
                   for (int res = 0; res < 2; ++res) {
                     std::vector<OpInput> ins = {in(c.x), in(c.w), in({k}), in({k}, -1.5, 1.5), in({k}),
                                                 constant(random_tensor({k})), constant(random_tensor({k}, 0.5, 2.0))};
                     if (res) ins.push_back(in({c.x[0], k, oh, ow}));
                     v.push_back({shape_str(c.x) + (res ? " +residual relu" : " relu"), ins,
                                  [o = c.o, res](const Ins& x) {
                                    return conv2d_bn_act(x[0], x[1], x[2], o, x[3], x[4], x[5], x[6], 1e-5,
                                                         res ? x[7] : Tensor(), true);
                                  }});
                   }
                 }
                 return v;
               }});
  t.push_back({.name = "max_pool2d",
               .variants = [] { return pool_variants(max_pool2d, {Pool2dOptions{2, 2, 2, 2, 0, 0}, Pool2dOptions{3, 3, 2, 2, 1, 1}}); },
               .tol = {.f32 = 1e-6, .fwd = 0, .bwd = 1e-6}});
  t.push_back({.name = "avg_pool2d",
               .variants = [] { return pool_variants(avg_pool2d, {Pool2dOptions{2, 2, 2, 2, 0, 0}, Pool2dOptions{3, 2, 1, 2, 1, 1}}); },
               .tol = exact});
  t.push_back({.name = "global_avg_pool2d",
               .variants = [] {
                 auto f = [](const Ins& x) { return global_avg_pool2d(x[0]); };
                 return V{{"[2,3,7,6]", {in({2, 3, 7, 6})}, f}, {"[4,16,8,8]", {in({4, 16, 8, 8})}, f}};
               }});
  // Training mode: batch statistics; the running statistics are updated in place (unbiased variance).
  t.push_back({.name = "batch_norm (train)",
               .variants = [] {
                 auto f = [](const Ins& x) {
                   return x.size() > 3 ? batch_norm(x[0], x[1], x[2], x[3], x[4], true, 0.1, 1e-5)
                                       : batch_norm(x[0], x[1], x[2], Tensor(), Tensor(), true, 0.1, 1e-5);
                 };
                 V v = {{"[4,3,3,5]", {in({4, 3, 3, 5}), in({3}, 0.5, 1.5), in({3})}, f},
                        {"[3,5,7,1] gamma of both signs", {in({3, 5, 7, 1}), in({5}), in({5})}, f},
                        {"[6,3]", {in({6, 3}), in({3}, 0.5, 1.5), in({3})}, f}};
                 for (const BnCase& s : kBnCases) {
                   if (s.n * s.hw < 2) continue;  // training statistics need two values per channel
                   OpVariant var{"running stats", {bn_input(bn_shape(s)), in({s.c}, 0.5, 1.5), in({s.c}),
                                                   buffer(random_tensor({s.c})), buffer(random_tensor({s.c}, 0.5, 2.0))}, f};
                   var.f32 = var.fd = s.n * s.hw > 2;  // two values normalise to +-1 whatever x is: dx = 0
                   v.push_back(var);
                 }
                 return v;
               },
               .tol = {.fd = 1e-5}});
  // Training-mode BatchNorm + residual add + ReLU (batch_norm_train_act: one kernel on the CPU, the three ops on
  // a GPU), every combination; with and without running statistics (updated in place).
  t.push_back({.name = "batch_norm_train_act",
               .variants = [] {
                 V v;
                 for (int res = 0; res < 2; ++res)
                   for (int act = 0; act < 2; ++act)
                     for (int running = 0; running < 2; ++running) {
                       auto f = [res, act, running](const Ins& x) {
                         const size_t r = running ? 5 : 3;
                         return batch_norm_train_act(x[0], x[1], x[2], running ? x[3] : Tensor(), running ? x[4] : Tensor(),
                                                     0.1, 1e-5, res ? x[r] : Tensor(), act);
                       };
                       auto add_case = [&](const std::string& label, const Shape& shape) {
                         const int64_t c = shape[1];
                         std::vector<OpInput> ins{in(shape, -2.0, 3.0), in({c}, -1.5, 1.5), in({c})};
                         if (running) {
                           ins.push_back(buffer(random_tensor({c})));
                           ins.push_back(buffer(random_tensor({c}, 0.5, 2.0)));
                         }
                         if (res) ins.push_back(in(shape));
                         v.push_back({label + (res ? " +residual" : "") + (act ? " relu" : "") +
                                          (running ? " running stats" : ""),
                                      ins, f});
                       };
                       add_case("[4,3,3,5]", {4, 3, 3, 5});
                       add_case("[6,3]", {6, 3});
                       if (running)
                         for (const BnCase& s : kBnCases)
                           if (s.n * s.hw > 2) add_case("shape", bn_shape(s));
                     }
                 return v;
               },
               .tol = {.fd = 1e-5}});
  // Evaluation / frozen mode: running statistics, a per-channel affine map.
  t.push_back({.name = "batch_norm (eval)",
               .variants = [] {
                 auto f = [](const Ins& x) { return batch_norm(x[0], x[1], x[2], x[3], x[4], false, 0.1, 1e-5); };
                 V v = {{"[4,3,3,5]", {in({4, 3, 3, 5}), in({3}, 0.5, 1.5), in({3}), constant(random_tensor({3})),
                                       constant(random_tensor({3}, 0.5, 2.0))}, f},
                        {"[3,5,7,1] gamma of both signs", {in({3, 5, 7, 1}), in({5}), in({5}), constant(random_tensor({5})),
                                                           constant(random_tensor({5}, 0.5, 2.0))}, f}};
                 for (const BnCase& s : kBnCases)
                   v.push_back({"shape", {bn_input(bn_shape(s)), in({s.c}, 0.5, 1.5), in({s.c}), constant(random_tensor({s.c})),
                                          constant(random_tensor({s.c}, 0.5, 2.0))}, f});
                 return v;
               }});
  // Fused BatchNorm on fixed statistics + residual add + ReLU (batch_norm_act), every combination.
  t.push_back({.name = "batch_norm_act",
               .variants = [] {
                 V v;
                 for (int res = 0; res < 2; ++res)
                   for (int act = 0; act < 2; ++act) {
                     auto f = [res, act](const Ins& x) {
                       return batch_norm_act(x[0], x[1], x[2], x[3], x[4], 1e-5, res ? x[5] : Tensor(), act);
                     };
                     auto add_case = [&](const std::string& label, const Shape& shape) {
                       const int64_t c = shape[1];
                       std::vector<OpInput> ins{in(shape, -2.0, 3.0), in({c}, -1.5, 1.5), in({c}),
                                                constant(random_tensor({c})), constant(random_tensor({c}, 0.5, 2.0))};
                       if (res) ins.push_back(in(shape));
                       v.push_back({label + (res ? " +residual" : "") + (act ? " relu" : ""), ins, f});
                     };
                     add_case("[4,3,3,5]", {4, 3, 3, 5});
                     add_case("[6,3]", {6, 3});
                     for (const BnCase& s : kBnCases) add_case("shape", bn_shape(s));
                   }
                 return v;
               }});
  t.push_back({.name = "layer_norm",
               .variants = [] {
                 auto f = [](const Ins& x) { return layer_norm(x[0], x[1], x[2], 1e-5); };
                 V v = {{"[2,3,6]", {in({2, 3, 6}), in({6}, 0.5, 1.5), in({6})}, f},
                        {"[5,11] gamma of both signs", {in({5, 11}), in({11}), in({11})}, f}};
                 for (int64_t d : {int64_t(1), int64_t(37), int64_t(768), int64_t(1500)})
                   for (int64_t rows : {int64_t(1), int64_t(3), int64_t(257)}) {
                     OpVariant var{"rows x d", {in({rows, d}, 0.0, 2.0), in({d}, 0.5, 1.5), in({d})}, f};
                     var.f32 = var.fd = d > 1;  // one element normalises to 0 whatever x is: dx = 0
                     v.push_back(var);
                   }
                 return v;
               },
               .tol = {.fd = 1e-5}});
  t.push_back({.name = "softmax", .variants = [] { return softmax_variants(softmax); }});
  t.push_back({.name = "log_softmax", .variants = [] { return softmax_variants(log_softmax); }});
  t.push_back({.name = "cross_entropy_per_sample",
               .variants = [] {
                 auto f = [](const Ins& x) { return cross_entropy_per_sample(x[0], x[1]); };
                 V v = {{"[5,7]", {in({5, 7}, -2, 2), constant(random_labels(5, 7))}, f},
                        {"[5,7] ignored rows", {in({5, 7}, -2, 2), constant(int_tensor({1, -100, 3, 6, -100}, {5}))}, f}};
                 for (int64_t d : {int64_t(1), int64_t(10), int64_t(1000), int64_t(5003)})
                   for (int64_t rows : {int64_t(1), int64_t(7), int64_t(300)})
                     v.push_back({"rows x classes, row 1 ignored", {in({rows, d}, -8, 8), constant(labels_with_ignored(rows, int(d)))}, f});
                 return v;
               }});
  t.push_back({.name = "cross_entropy (mean)",
               .variants = [] {
                 auto f = [](const Ins& x) { return cross_entropy(x[0], x[1]); };
                 auto class_2_ignored = [](const Ins& x) { return cross_entropy(x[0], x[1], 2); };
                 return V{{"[5,7]", {in({5, 7}, -2, 2), constant(random_labels(5, 7))}, f},
                          {"[5,7] ignored rows", {in({5, 7}, -2, 2), constant(int_tensor({1, -100, 3, 6, -100}, {5}))}, f},
                          {"[5,7] ignore_index 2, a class", {in({5, 7}, -2, 2), constant(int_tensor({2, 0, 2, 6, 1}, {5}))},
                           class_2_ignored},
                          {"[1024,10]", {in({1024, 10}, -8, 8), constant(random_labels(1024, 10))}, f},
                          {"[300,1000]", {in({300, 1000}, -8, 8), constant(labels_with_ignored(300, 1000))}, f}};
               }});
  t.push_back({.name = "kl_div_per_sample",
               .variants = [] {
                 auto f = [](const Ins& x) { return kl_div_per_sample(x[0], x[1]); };
                 return V{{"[5,7]", {constant(random_tensor({5, 7}, -2, 2)), in({5, 7}, -2, 2)}, f},
                          {"[300,1000]", {constant(random_tensor({300, 1000}, -8, 8)), in({300, 1000}, -8, 8)}, f}};
               }});
  t.push_back({.name = "embedding",
               .variants = [] {
                 auto f = [](const Ins& x) { return embedding(x[1], x[0]); };
                 V v = {{"[6,4] at [2,3]", {in({6, 4}), constant(int_tensor({0, 5, 2, 2, 5, 1}, {2, 3}))}, f}};
                 struct S {
                   int64_t n_idx, dim, vocab;
                 };
                 for (const S s : {S{1, 1, 1}, S{1000, 33, 5}, S{4099, 300, 3000}, S{300, 7, 100000}, S{2000, 64, 1}})
                   v.push_back({"n_idx " + std::to_string(s.n_idx) + " vocab " + std::to_string(s.vocab),
                                {in({s.vocab, s.dim}), constant(frequent_indices(s.n_idx, s.vocab))}, f});
                 return v;
               },
               .tol = {.f32 = 1e-6, .fwd = 0, .bwd = 1e-6}});
  // Causal softmax and the batched GEMMs around it; head size 64 gives the scale 0.125.
  t.push_back({.name = "causal_attention",
               .variants = [] {
                 auto f = [](const Ins& x) { return causal_attention(x[0], x[1], x[2]); };
                 V v = {{"[2,2,5,3]", {in({2, 2, 5, 3}), in({2, 2, 5, 3}), in({2, 2, 5, 3})}, f}};
                 for (int64_t t : {int64_t(1), int64_t(7), int64_t(64), int64_t(1100)}) {
                   const Shape s = {t > 100 ? 2 : 5, 1, t, 64};
                   v.push_back({"t " + std::to_string(t), {in(s, -2, 2), in(s, -2, 2), in(s)}, f});
                 }
                 return v;
               }});
  // Counter-based masks: the same mask on every backend, so forward and backward agree exactly.
  t.push_back({.name = "dropout",
               .variants = [] {
                 V v = {{"[4,50] p 0.3", {in({4, 50})}, [](const Ins& x) { return dropout(x[0], 0.3, true, 1234); }},
                        {"[257] p 0.45", {in({257})}, [](const Ins& x) { return dropout(x[0], 0.45, true, 99); }}};
                 for (int64_t n : kOdd)
                   v.push_back({"p 0.3", {in({n})}, [n](const Ins& x) { return dropout(x[0], 0.3, true, 0x1234567890abcdefull + uint64_t(n)); }});
                 return v;
               },
               .tol = {.f32 = 1e-6, .fwd = 0, .bwd = 0}});
  return t;
}

}  // namespace

const std::vector<OpCase>& op_table() {
  static const std::vector<OpCase> table = build_table();
  return table;
}

}  // namespace hamu::testing
