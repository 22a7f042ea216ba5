// engine/ops.cpp: elementwise, reduction, shape and linear-algebra ops with their backward passes.
// (Neural-network ops — conv, pooling, normalisation, losses, attention — are in engine/nn_ops.cpp.)
#include "engine/ops.h"

#include <algorithm>
#include <string>

#include "engine/dispatch.h"
#include "engine/ops_internal.h"
#include "engine/paired.h"
#include "kernels/kernels.h"

namespace hamu {

void check_same(const char* op, const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) throw InputError(std::string(op) + ": undefined input tensor");
  if (a.dtype() != b.dtype())
    throw InputError(std::string(op) + ": dtypes " + dtype_name(a.dtype()) + " and " + dtype_name(b.dtype()) + " differ");
  if (a.device() != b.device())
    throw InputError(std::string(op) + ": tensors on " + a.device().str() + " and " + b.device().str());
}

// The bfloat16 copies made recently, by source: a source (same storage, offset, shape) saved again while its
// copy is alive reuses it. Weak references: an entry lapses with its copy or its source, so an address reused
// by a new allocation never matches an old entry.
namespace {
struct NarrowedCopy {
  std::weak_ptr<Storage> source;
  int64_t offset = 0;
  Shape shape, strides;
  std::weak_ptr<TensorImpl> copy;
};
thread_local NarrowedCopy t_narrowed[8];
thread_local size_t t_narrowed_next = 0;
}  // namespace

SavedTensor::SavedTensor(const Tensor& t) : t_(t.detach()) {
  if (!t_.defined() || t_.dtype() != DType::f32 || !kernels::perf_options().bf16_activations) return;
  const std::shared_ptr<Storage>& src = t_.impl()->storage;
  for (const NarrowedCopy& c : t_narrowed)
    if (c.source.lock() == src && c.offset == t_.impl()->offset && c.shape == t_.shape() && c.strides == t_.strides())
      if (std::shared_ptr<TensorImpl> copy = c.copy.lock()) {
        t_ = Tensor(copy);
        narrowed_ = true;
        return;
      }
  NarrowedCopy& slot = t_narrowed[t_narrowed_next++ % 8];
  slot.source = src;
  slot.offset = t_.impl()->offset;
  slot.shape = t_.shape();
  slot.strides = t_.strides();
  t_ = t_.to(DType::bf16);
  narrowed_ = true;
  slot.copy = t_.impl_ptr();
}

Tensor empty_like(const Tensor& x) { return Tensor::empty(x.shape(), x.dtype(), x.device()); }
Tensor zeros_like(const Tensor& x) { return Tensor::zeros(x.shape(), x.dtype(), x.device()); }

Tensor expand_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int nd = int(shape.size());
  const int off = nd - x.dim();
  if (off < 0) throw InputError("expand: cannot expand " + shape_str(x.shape()) + " to " + shape_str(shape));
  Shape strides(nd, 0);
  for (int i = 0; i < x.dim(); ++i) {
    if (x.shape()[i] == shape[off + i]) strides[off + i] = x.strides()[i];
    else if (x.shape()[i] != 1)
      throw InputError("expand: cannot expand " + shape_str(x.shape()) + " to " + shape_str(shape));
  }
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  dispatch("expand", x, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::strided_copy(ctx, nd, shape.data(), strides.data(), x.data<T>(), out.data<T>());
  });
  if (needs_grad({&x})) {
    const Shape back = x.shape();
    record(out, "expand", {x}, [back](const Tensor& g) { return std::vector<Tensor>{sum_to(g, back)}; });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Broadcasting binary ops

namespace {

Shape broadcast_shape(const char* op, const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw InputError(std::string(op) + ": shapes " + shape_str(a) + " and " + shape_str(b) + " cannot broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Element strides of x read as `shape` (0 on broadcast dims).
Shape broadcast_strides(const Tensor& x, const Shape& shape) {
  const size_t n = shape.size(), off = n - x.shape().size();
  Shape st(n, 0);
  for (size_t i = 0; i < x.shape().size(); ++i)
    if (x.shape()[i] != 1) st[off + i] = x.strides()[i];
  return st;
}

Tensor binary_forward(const char* op, kernels::Binary kind, const Tensor& a, const Tensor& b) {
  check_same(op, a, b);
  const Shape shape = broadcast_shape(op, a.shape(), b.shape());
  Tensor y = Tensor::empty(shape, a.dtype(), a.device());
  if (a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous()) {
    dispatch(op, a, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::binary(ctx, kind, y.numel(), a.data<T>(), b.data<T>(), y.data<T>());
    });
  } else {
    const Shape sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
    dispatch(op, a, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::binary_bcast(ctx, kind, int(shape.size()), shape.data(), sa.data(), sb.data(), a.data<T>(),
                            b.data<T>(), y.data<T>());
    });
  }
  return y;
}

Tensor unary_op(const char* op, kernels::Unary kind, const Tensor& x) {
  Tensor xc = x.contiguous();
  Tensor y = empty_like(xc);
  dispatch(op, xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::unary(ctx, kind, xc.numel(), xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    Tensor ys = y.detach();
    record(y, op, {xc}, [xc, ys, kind, op](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = empty_like(gc);
      dispatch(op, gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::unary_backward(ctx, kind, gc.numel(), xc.data<T>(), ys.data<T>(), gc.data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

}  // namespace

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const int nd = x.dim();
  const int off = nd - int(shape.size());
  if (off < 0) throw InputError("sum_to: cannot reduce " + shape_str(x.shape()) + " to " + shape_str(shape));
  Shape out_full(nd, 1);
  for (size_t i = 0; i < shape.size(); ++i) {
    out_full[off + i] = shape[i];
    if (shape[i] != 1 && shape[i] != x.shape()[off + i])
      throw InputError("sum_to: cannot reduce " + shape_str(x.shape()) + " to " + shape_str(shape));
  }
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  dispatch("sum_to", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::sum_to(ctx, nd, xc.shape().data(), out_full.data(), xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    const Shape back = x.shape();
    record(y, "sum_to", {xc}, [back](const Tensor& g) { return std::vector<Tensor>{expand_to(g, back)}; });
  }
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary_forward("add", kernels::Binary::add, a, b);
  if (needs_grad({&a, &b})) {
    const Shape sa = a.shape(), sb = b.shape();
    record(y, "add", {a, b}, [sa, sb](const Tensor& g) { return std::vector<Tensor>{sum_to(g, sa), sum_to(g, sb)}; });
  }
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary_forward("sub", kernels::Binary::sub, a, b);
  if (needs_grad({&a, &b})) {
    const Shape sa = a.shape(), sb = b.shape();
    record(y, "sub", {a, b},
           [sa, sb](const Tensor& g) { return std::vector<Tensor>{sum_to(g, sa), neg(sum_to(g, sb))}; });
  }
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary_forward("mul", kernels::Binary::mul, a, b);
  if (needs_grad({&a, &b})) {
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    // Each side's gradient reads the other side only: keep just what a wanted gradient reads.
    const Tensor ad = gb ? a.detach() : Tensor(), bd = ga ? b.detach() : Tensor();
    const Shape sa = a.shape(), sb = b.shape();
    record(y, "mul", {a, b}, [ad, bd, sa, sb, ga, gb](const Tensor& g) {
      return std::vector<Tensor>{ga ? sum_to(mul(g, bd), sa) : Tensor(), gb ? sum_to(mul(g, ad), sb) : Tensor()};
    });
  }
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = binary_forward("div", kernels::Binary::div, a, b);
  if (needs_grad({&a, &b})) {
    Tensor bd = b.detach(), yd = y.detach();
    const Shape sa = a.shape();
    const bool ga = a.requires_grad(), gb = b.requires_grad();
    record(y, "div", {a, b}, [bd, yd, sa, ga, gb](const Tensor& g) {
      Tensor g_over_b = div(g, bd);
      return std::vector<Tensor>{ga ? sum_to(g_over_b, sa) : Tensor(),
                                 gb ? neg(sum_to(mul(g_over_b, yd), bd.shape())) : Tensor()};
    });
  }
  return y;
}

Tensor affine(const Tensor& x, double scale, double shift) {
  Tensor xc = x.contiguous();
  Tensor y = empty_like(xc);
  dispatch("affine", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::affine(ctx, xc.numel(), xc.data<T>(), T(scale), T(shift), y.data<T>());
  });
  if (needs_grad({&xc}))
    record(y, "affine", {xc}, [scale](const Tensor& g) { return std::vector<Tensor>{affine(g, scale, 0.0)}; });
  return y;
}

Tensor neg(const Tensor& x) { return unary_op("neg", kernels::Unary::neg, x); }
Tensor relu(const Tensor& x) { return unary_op("relu", kernels::Unary::relu, x); }
Tensor gelu(const Tensor& x) { return unary_op("gelu", kernels::Unary::gelu, x); }
Tensor tanh(const Tensor& x) { return unary_op("tanh", kernels::Unary::tanh, x); }
Tensor exp(const Tensor& x) { return unary_op("exp", kernels::Unary::exp, x); }
Tensor log(const Tensor& x) { return unary_op("log", kernels::Unary::log, x); }
Tensor sigmoid(const Tensor& x) { return unary_op("sigmoid", kernels::Unary::sigmoid, x); }
Tensor sqrt(const Tensor& x) { return unary_op("sqrt", kernels::Unary::sqrt, x); }
Tensor square(const Tensor& x) { return unary_op("square", kernels::Unary::square, x); }
Tensor abs(const Tensor& x) { return unary_op("abs", kernels::Unary::abs, x); }

// ------------------------------------------------------------------------------------------------
// Reductions

namespace {

int normalize_dim(const char* op, int dim, int ndim) {
  if (dim < 0) dim += ndim;
  if (dim < 0 || dim >= ndim)
    throw InputError(std::string(op) + ": dim out of range for a " + std::to_string(ndim) + "-d tensor");
  return dim;
}

struct AxisSplit {
  int64_t outer = 1, n = 1, inner = 1;
  Shape out_shape, keep_shape;
};

AxisSplit split_axis(const Shape& s, int dim) {
  AxisSplit a;
  for (int i = 0; i < int(s.size()); ++i) {
    if (i < dim) a.outer *= s[i];
    else if (i == dim) a.n = s[i];
    else a.inner *= s[i];
    if (i != dim) a.out_shape.push_back(s[i]);
    a.keep_shape.push_back(i == dim ? 1 : s[i]);
  }
  return a;
}

Tensor reduce_dim(const char* op, kernels::Reduce kind, const Tensor& x, int dim, bool keepdim) {
  dim = normalize_dim(op, dim, x.dim());
  Tensor xc = x.contiguous();
  const AxisSplit a = split_axis(xc.shape(), dim);
  if (kind == kernels::Reduce::max && a.n == 0) throw InputError(std::string(op) + ": reducing an empty dim");
  Tensor y = Tensor::empty(keepdim ? a.keep_shape : a.out_shape, x.dtype(), x.device());
  Tensor arg;
  if (kind == kernels::Reduce::max) arg = Tensor::empty(a.out_shape, DType::i32, x.device());
  dispatch(op, xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::reduce_axis(ctx, kind, a.outer, a.n, a.inner, xc.data<T>(), y.data<T>(),
                         arg.defined() ? arg.data<int32_t>() : nullptr);
  });
  if (needs_grad({&xc})) {
    const Shape in_shape = xc.shape();
    record(y, op, {xc}, [a, arg, kind, op, in_shape](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = Tensor::empty(in_shape, g.dtype(), g.device());
      dispatch(op, gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::reduce_axis_backward(ctx, kind, a.outer, a.n, a.inner, gc.data<T>(),
                                      arg.defined() ? arg.data<int32_t>() : nullptr, gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

}  // namespace

Tensor sum(const Tensor& x) {
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({}, x.dtype(), x.device());
  dispatch("sum", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::sum_all(ctx, xc.numel(), xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    const Shape s = xc.shape();
    record(y, "sum", {xc}, [s](const Tensor& g) { return std::vector<Tensor>{expand_to(g, s)}; });
  }
  return y;
}

Tensor mean(const Tensor& x) {
  if (x.numel() == 0) throw InputError("mean: empty tensor");
  return affine(sum(x), 1.0 / double(x.numel()), 0.0);
}

Tensor sum(const Tensor& x, int dim, bool keepdim) { return reduce_dim("sum", kernels::Reduce::sum, x, dim, keepdim); }
Tensor mean(const Tensor& x, int dim, bool keepdim) {
  return reduce_dim("mean", kernels::Reduce::mean, x, dim, keepdim);
}
Tensor max(const Tensor& x, int dim, bool keepdim) { return reduce_dim("max", kernels::Reduce::max, x, dim, keepdim); }

Tensor argmax(const Tensor& x, int dim) {
  dim = normalize_dim("argmax", dim, x.dim());
  Tensor xc = x.detach().contiguous();
  const AxisSplit a = split_axis(xc.shape(), dim);
  Tensor vals = Tensor::empty(a.out_shape, x.dtype(), x.device());
  Tensor arg = Tensor::empty(a.out_shape, DType::i32, x.device());
  dispatch("argmax", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::reduce_axis(ctx, kernels::Reduce::max, a.outer, a.n, a.inner, xc.data<T>(), vals.data<T>(),
                         arg.data<int32_t>());
  });
  return arg;
}

Tensor dot(const Tensor& a, const Tensor& b) {
  check_same("dot", a, b);
  if (a.numel() != b.numel())
    throw InputError("dot: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " differ in size");
  Tensor ac = a.contiguous(), bc = b.contiguous();
  Tensor y = Tensor::empty({}, a.dtype(), a.device());
  dispatch("dot", ac, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::dot(ctx, ac.numel(), ac.data<T>(), bc.data<T>(), y.data<T>());
  });
  if (needs_grad({&ac, &bc})) {
    Tensor ad = ac.detach(), bd = bc.detach();
    record(y, "dot", {ac, bc}, [ad, bd](const Tensor& g) { return std::vector<Tensor>{mul(bd, g), mul(ad, g)}; });
  }
  return y;
}

Tensor sum_squares(const Tensor& x) {
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({}, x.dtype(), x.device());
  dispatch("sum_squares", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::sum_squares(ctx, xc.numel(), xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    Tensor xd = xc.detach();
    record(y, "sum_squares", {xc}, [xd](const Tensor& g) { return std::vector<Tensor>{mul(xd, affine(g, 2.0, 0.0))}; });
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// Shape ops

Tensor concat(const std::vector<Tensor>& parts, int dim) {
  if (parts.empty()) throw InputError("concat: no tensors");
  const Tensor& first = parts[0];
  dim = normalize_dim("concat", dim, first.dim());
  Shape shape = first.shape();
  int64_t total = 0;
  for (const Tensor& p : parts) {
    check_same("concat", first, p);
    if (p.dim() != first.dim())
      throw InputError("concat: shapes " + shape_str(first.shape()) + " and " + shape_str(p.shape()) + " differ in rank");
    for (int i = 0; i < p.dim(); ++i)
      if (i != dim && p.shape()[i] != first.shape()[i])
        throw InputError("concat: shapes " + shape_str(first.shape()) + " and " + shape_str(p.shape()) +
                         " differ outside dim " + std::to_string(dim));
    total += p.shape()[dim];
  }
  shape[dim] = total;
  Tensor y = Tensor::empty(shape, first.dtype(), first.device());
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; ++i) outer *= shape[i];
  for (int i = dim + 1; i < int(shape.size()); ++i) inner *= shape[i];
  int64_t at = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& p : parts) {
    Tensor pc = p.contiguous();
    const int64_t len = p.shape()[dim];
    dispatch("concat", pc, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::copy_rows(ctx, outer, len * inner, pc.data<T>(), len * inner, y.data<T>() + at * inner, total * inner);
    });
    sizes.push_back(len);
    at += len;
  }
  bool any = false;
  for (const Tensor& p : parts) any = any || p.requires_grad();
  if (any && grad_enabled()) {
    record(y, "concat", parts, [sizes, dim](const Tensor& g) {
      std::vector<Tensor> out;
      int64_t start = 0;
      for (int64_t len : sizes) {
        out.push_back(g.narrow(dim, start, len).contiguous());
        start += len;
      }
      return out;
    });
  }
  return y;
}

Tensor permute(const Tensor& x, const std::vector<int>& order) {
  if (int(order.size()) != x.dim()) throw InputError("permute: order has the wrong length for " + shape_str(x.shape()));
  std::vector<bool> used(order.size(), false);
  Shape shape(order.size()), strides(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const int d = order[i];
    if (d < 0 || d >= x.dim() || used[d]) throw InputError("permute: invalid order for " + shape_str(x.shape()));
    used[d] = true;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  dispatch("permute", x, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::strided_copy(ctx, int(shape.size()), shape.data(), strides.data(), x.data<T>(), y.data<T>());
  });
  if (needs_grad({&x})) {
    std::vector<int> inverse(order.size());
    for (size_t i = 0; i < order.size(); ++i) inverse[order[i]] = int(i);
    record(y, "permute", {x}, [inverse](const Tensor& g) { return std::vector<Tensor>{permute(g, inverse)}; });
  }
  return y;
}

Tensor index_select0(const Tensor& x, const Tensor& index) {
  if (index.dtype() != DType::i32 || index.dim() != 1)
    throw InputError("index_select0: index must be a 1-d int32 tensor, got " + shape_str(index.shape()));
  if (x.dim() < 1) throw InputError("index_select0: input must have at least one dim");
  if (index.device() != x.device()) throw InputError("index_select0: index and input on different devices");
  const int64_t rows = x.shape()[0];
  const int64_t width = rows ? x.numel() / rows : 0;
  if (!index.is_cuda()) {
    for (int32_t i : index.to_vector<int32_t>())
      if (i < 0 || i >= rows)
        throw InputError("index_select0: index " + std::to_string(i) + " out of range for " + std::to_string(rows) + " rows");
  }
  Tensor xc = x.contiguous();
  Shape shape = x.shape();
  shape[0] = index.numel();
  Tensor y = Tensor::empty(shape, x.dtype(), x.device());
  dispatch("index_select0", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::embedding_forward(ctx, index.numel(), width, index.data<int32_t>(), xc.data<T>(), y.data<T>());
  });
  if (needs_grad({&xc})) {
    const Shape in_shape = x.shape();
    record(y, "index_select0", {xc}, [index, in_shape, rows, width](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor gx = Tensor::zeros(in_shape, g.dtype(), g.device());
      dispatch("index_select0_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::embedding_backward(ctx, index.numel(), width, rows, index.data<int32_t>(), gc.data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

// ------------------------------------------------------------------------------------------------
// Linear algebra

namespace {

// A 2-D operand as the GEMM sees it: data pointer source, transposed flag and leading dimension.
struct GemmOperand {
  Tensor t;  // contiguous, or a transposed view of a contiguous matrix
  bool trans = false;
  int64_t ld = 0;
};

GemmOperand gemm_operand(const Tensor& x) {
  GemmOperand o;
  const int64_t r = x.shape()[0], c = x.shape()[1];
  if (x.is_contiguous()) {
    o.t = x;
    o.ld = std::max<int64_t>(c, 1);
  } else if (x.strides()[0] == 1 && x.strides()[1] == r) {
    o.t = x;
    o.trans = true;
    o.ld = std::max<int64_t>(r, 1);
  } else {
    o.t = x.contiguous();
    o.ld = std::max<int64_t>(c, 1);
  }
  return o;
}

// C[m,n] = op(A) op(B) (+ beta C) for 2-D operands given as tensors.
void gemm_into(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, double beta) {
  GemmOperand oa = gemm_operand(a), ob = gemm_operand(b);
  const bool fa = ta != oa.trans, fb = tb != ob.trans;
  const int64_t m = ta ? a.shape()[1] : a.shape()[0];
  const int64_t k = ta ? a.shape()[0] : a.shape()[1];
  const int64_t n = tb ? b.shape()[0] : b.shape()[1];
  dispatch("matmul", c, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm(ctx, fa, fb, m, n, k, T(1), oa.t.template data<T>(), oa.ld, ob.t.template data<T>(), ob.ld, T(beta),
                  c.data<T>(), std::max<int64_t>(n, 1));
  });
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_same("matmul", a, b);
  if (a.dim() < 2 || b.dim() < 2 || a.dim() != b.dim())
    throw InputError("matmul: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " are not matrices of equal rank");
  const int nd = a.dim();
  const int64_t m = a.shape()[nd - 2], k = a.shape()[nd - 1], n = b.shape()[nd - 1];
  bool ok = b.shape()[nd - 2] == k;
  for (int i = 0; i < nd - 2; ++i) ok = ok && a.shape()[i] == b.shape()[i];
  if (!ok) throw InputError("matmul: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " do not match");
  if (nd == 2) {
    Tensor y = Tensor::empty({m, n}, a.dtype(), a.device());
    gemm_into(a, false, b, false, y, 0.0);
    if (needs_grad({&a, &b})) {
      Tensor ad = a.detach(), bd = b.detach();
      const bool ga = a.requires_grad(), gb = b.requires_grad();
      record(y, "matmul", {a, b}, [ad, bd, ga, gb](const Tensor& g) {
        Tensor gx, gw;
        if (ga) {
          gx = empty_like(ad);
          gemm_into(g, false, bd, true, gx, 0.0);
        }
        if (gb) {
          gw = empty_like(bd);
          gemm_into(ad, true, g, false, gw, 0.0);
        }
        return std::vector<Tensor>{gx, gw};
      });
    }
    return y;
  }
  Tensor ac = a.contiguous(), bc = b.contiguous();
  int64_t batch = 1;
  for (int i = 0; i < nd - 2; ++i) batch *= a.shape()[i];
  Shape out_shape = a.shape();
  out_shape[nd - 1] = n;
  Tensor y = Tensor::empty(out_shape, a.dtype(), a.device());
  dispatch("matmul", ac, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm_batched(ctx, false, false, m, n, k, T(1), ac.data<T>(), k, m * k, bc.data<T>(), n, k * n, T(0),
                          y.data<T>(), n, m * n, batch);
  });
  if (needs_grad({&ac, &bc})) {
    Tensor ad = ac.detach(), bd = bc.detach();
    record(y, "matmul", {ac, bc}, [ad, bd, m, n, k, batch](const Tensor& g) {
      Tensor gc = g.contiguous();
      Tensor ga = empty_like(ad), gb = empty_like(bd);
      dispatch("matmul_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::gemm_batched(ctx, false, true, m, k, n, T(1), gc.data<T>(), n, m * n, bd.data<T>(), n, k * n, T(0),
                              ga.data<T>(), k, m * k, batch);
        kernels::gemm_batched(ctx, true, false, k, n, m, T(1), ad.data<T>(), k, m * k, gc.data<T>(), n, m * n, T(0),
                              gb.data<T>(), n, k * n, batch);
      });
      return std::vector<Tensor>{ga, gb};
    });
  }
  return y;
}

namespace {

// linear with a bfloat16 weight (cuda only; see ops.h). The weight is frozen, so the backward computes dx alone,
// and it keeps no float32 copy of x: only the bfloat16 weight it already holds.
Tensor linear_bf16(const Tensor& x, const Tensor& w, const Tensor& b) {
  if (!w.is_cuda()) throw InputError("linear: bfloat16 weights are CUDA-only; on the CPU weights are float32");
  if (!x.defined() || x.dtype() != DType::f32 || x.device() != w.device())
    throw InputError("linear: a bfloat16 weight on " + w.device().str() + " takes a float32 input there, got " +
                     (x.defined() ? std::string(dtype_name(x.dtype())) + " on " + x.device().str() : "none"));
  if (w.dim() != 2 || x.dim() < 1 || x.shape().back() != w.shape()[1])
    throw InputError("linear: input " + shape_str(x.shape()) + " does not match weight " + shape_str(w.shape()));
  const int64_t out = w.shape()[0];
  if (b.defined()) {
    check_same("linear", x, b);
    if (b.dim() != 1 || b.shape()[0] != out)
      throw InputError("linear: bias " + shape_str(b.shape()) + " does not match weight " + shape_str(w.shape()));
    if (b.requires_grad() && grad_enabled())
      throw InputError("linear: the bias of bfloat16 weight '" + w.name() + "' must be frozen too");
  }
#ifdef HAMU_CUDA
  const int64_t in = w.shape()[1];
  Tensor xc = x.contiguous(), wc = w.contiguous();
  const int64_t rows = in ? xc.numel() / in : 0;
  Shape out_shape = x.shape();
  out_shape.back() = out;
  Tensor y = Tensor::empty(out_shape, DType::f32, x.device());
  Tensor bc = b.defined() ? b.contiguous() : Tensor();
  {
    const kernels::ProfScope prof("linear_bf16", x.device().index);
    const kernels::CudaCtx& ctx = kernels::cuda_context(x.device().index);
    Tensor xb = xc.detach().to(DType::bf16);  // a temporary: activations stay float32 in memory
    kernels::gemm_bf16(ctx, false, true, rows, out, in, 1.f, xb.data<uint16_t>(), in, wc.data<uint16_t>(), in, 0.f,
                       y.data<float>(), out);
    if (bc.defined()) {
      const int64_t shape[2] = {rows, out}, sy[2] = {out, 1}, sb[2] = {0, 1};
      kernels::binary_bcast(ctx, kernels::Binary::add, 2, shape, sy, sb, y.data<float>(), bc.data<float>(),
                            y.data<float>());
    }
  }
  if (needs_grad({&xc})) {
    const Shape x_shape = xc.shape();
    record(y, "linear", {xc}, [wc, x_shape, rows, in, out](const Tensor& g) {
      const kernels::ProfScope prof("linear_bf16_backward", g.device().index);
      Tensor gb = g.contiguous().to(DType::bf16);
      Tensor gx = Tensor::empty(x_shape, DType::f32, g.device());
      kernels::gemm_bf16(kernels::cuda_context(g.device().index), false, false, rows, in, out, 1.f, gb.data<uint16_t>(),
                         out, wc.data<uint16_t>(), in, 0.f, gx.data<float>(), in);
      return std::vector<Tensor>{gx};
    });
  }
  return y;
#else
  throw Error("linear: this build has no CUDA backend (rebuild with make CUDA=1)");
#endif
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  if (w.defined() && w.dtype() == DType::bf16) return linear_bf16(x, w, b);
  check_same("linear", x, w);
  if (w.dim() != 2 || x.dim() < 1 || x.shape().back() != w.shape()[1])
    throw InputError("linear: input " + shape_str(x.shape()) + " does not match weight " + shape_str(w.shape()));
  const int64_t in = w.shape()[1], out = w.shape()[0];
  if (b.defined()) {
    check_same("linear", x, b);
    if (b.dim() != 1 || b.shape()[0] != out)
      throw InputError("linear: bias " + shape_str(b.shape()) + " does not match weight " + shape_str(w.shape()));
  }
  Tensor xc = x.contiguous(), wc = w.contiguous();
  const int64_t rows = in ? xc.numel() / in : 0;
  Shape out_shape = x.shape();
  out_shape.back() = out;
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor bc = b.defined() ? b.contiguous() : Tensor();
  dispatch("linear", xc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::gemm(ctx, false, true, rows, out, in, T(1), xc.data<T>(), in, wc.data<T>(), in, T(0), y.data<T>(), out);
    if (bc.defined()) {
      // y += bias on every row (a broadcast add in place; copy_rows with a zero source pitch, the old
      // way, is not valid for the CUDA copy engine).
      const int64_t shape[2] = {rows, out}, sy[2] = {out, 1}, sb[2] = {0, 1};
      kernels::binary_bcast(ctx, kernels::Binary::add, 2, shape, sy, sb, y.data<T>(), bc.data<T>(), y.data<T>());
    }
  });
  const int64_t samples = x.dim() >= 2 ? x.shape()[0] : 1;
  CaptureTicket ticket = capture_layer("linear", w, b, xc, samples, samples ? rows / samples : 0);
  // Paired backward (engine/paired.h): the weight and bias gradients of the rows [0, split) and
  // [split, rows) go to two buffers; `split` counts samples, each sample owns rows/samples rows.
  const PairedTicket paired = paired_ticket("linear", w, b, samples);
  const int64_t split_rows = samples ? paired.split * (rows / samples) : 0;
  if (needs_grad({&xc, &wc, &bc})) {
    const bool gx_need = xc.requires_grad(), gw_need = wc.requires_grad(), gb_need = bc.defined() && bc.requires_grad();
    // x only for the weight gradient: a frozen layer keeps just its weight (for dx).
    const SavedTensor xs = gw_need ? SavedTensor(xc) : SavedTensor();
    const Tensor wd = wc.detach();
    const Shape x_shape = xc.shape();
    const bool has_bias = bc.defined();
    std::vector<Tensor> inputs{xc, wc};
    if (has_bias) inputs.push_back(bc);
    // (The closure must not capture `inputs`: that would keep x alive whether or not it is saved.)
    record(y, "linear", inputs, [=](const Tensor& g) {
      Tensor gc = g.contiguous();
      const Tensor xd = xs.get();
      capture_output_grad(ticket, gc);
      Tensor gx, gw, gb;
      dispatch("linear_backward", gc, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        if (gx_need) {
          gx = Tensor::empty(x_shape, gc.dtype(), gc.device());
          kernels::gemm(ctx, false, false, rows, in, out, T(1), gc.data<T>(), out, wd.data<T>(), in, T(0),
                        gx.data<T>(), in);
        }
        if (gw_need && paired.weight) {
          // dW of each row range, accumulated into its buffer.
          const int64_t r0[2] = {0, split_rows}, n[2] = {split_rows, rows - split_rows};
          T* dst[2] = {paired.weight->first.data<T>(), paired.weight->second.data<T>()};
          for (int h = 0; h < 2; ++h)
            kernels::gemm(ctx, true, false, out, in, n[h], T(1), gc.data<T>() + r0[h] * out, out,
                          xd.data<T>() + r0[h] * in, in, T(1), dst[h], in);
        } else if (gw_need) {
          gw = Tensor::empty({out, in}, gc.dtype(), gc.device());
          kernels::gemm(ctx, true, false, out, in, rows, T(1), gc.data<T>(), out, xd.data<T>(), in, T(0),
                        gw.data<T>(), in);
        }
        if (gb_need && paired.bias) {
          Tensor part = Tensor::empty({out}, gc.dtype(), gc.device());
          const int64_t r0[2] = {0, split_rows}, n[2] = {split_rows, rows - split_rows};
          T* dst[2] = {paired.bias->first.data<T>(), paired.bias->second.data<T>()};
          for (int h = 0; h < 2; ++h) {
            kernels::reduce_axis(ctx, kernels::Reduce::sum, 1, n[h], out, gc.data<T>() + r0[h] * out, part.data<T>(),
                                 nullptr);
            kernels::axpby(ctx, out, T(1), part.data<T>(), T(1), dst[h]);
          }
        } else if (gb_need) {
          gb = Tensor::empty({out}, gc.dtype(), gc.device());
          kernels::reduce_axis(ctx, kernels::Reduce::sum, 1, rows, out, gc.data<T>(), gb.data<T>(), nullptr);
        }
      });
      std::vector<Tensor> grads{gx, gw};
      if (has_bias) grads.push_back(gb);
      return grads;
    });
  }
  return y;
}

}  // namespace hamu
