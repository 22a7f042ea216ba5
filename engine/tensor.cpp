// engine/tensor.cpp: Tensor storage, factories, views, copies and the autograd tape's backward pass.
#include "engine/tensor.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "engine/allocator.h"
#include "engine/dispatch.h"
#include "engine/graph.h"
#include "kernels/bf16.h"
#include "kernels/kernels.h"

namespace hamu {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::u8: return 1;
    case DType::bf16: return 2;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
    case DType::u8: return "uint8";
    case DType::bf16: return "bfloat16";
  }
  return "?";
}

std::string Device::str() const { return kind == cpu ? "cpu" : "cuda:" + std::to_string(index); }

Device Device::parse(const std::string& text) {
  if (text == "cpu") return {};
  if (text == "cuda" || text.rfind("cuda:", 0) == 0) {
    [[maybe_unused]] int index = 0;
    if (text.size() > 5) {
      const std::string num = text.substr(5);
      if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos || num.size() > 3)
        throw InputError("--device: '" + text + "' is not cpu, cuda or cuda:N");
      index = std::stoi(num);
    }
#ifdef HAMU_CUDA
    const int count = kernels::cuda_device_count();
    if (count == 0) throw InputError("--device " + text + ": no CUDA device is visible");
    if (index >= count)
      throw InputError("--device " + text + ": only " + std::to_string(count) + " CUDA device(s) visible");
    return {cuda, index};
#else
    throw InputError("--device " + text + ": this build has no CUDA backend (rebuild with make CUDA=1)");
#endif
  }
  throw InputError("--device: '" + text + "' is not cpu, cuda or cuda:N");
}

// Every multiplication is checked, zero dimensions included: a zero must not hide that the other
// dimensions multiply past int64 (strides, offsets and byte counts are formed from them too).
int64_t shape_numel(const Shape& s) {
  int64_t nonzero = 1;
  bool has_zero = false;
  for (int64_t d : s) {
    if (d < 0) throw InputError("tensor: negative dimension in shape " + shape_str(s));
    if (d == 0) has_zero = true;
    else if (__builtin_mul_overflow(nonzero, d, &nonzero))
      throw InputError("tensor: shape " + shape_str(s) + " has more elements than an int64 can count");
  }
  return has_zero ? 0 : nonzero;
}

Shape contiguous_strides(const Shape& s) {
  shape_numel(s);  // the strides are suffix products of the same dimensions: refuse overflow first
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = int(s.size()) - 1; i >= 0; --i) {
    st[size_t(i)] = acc;
    if (s[size_t(i)] != 0) acc *= s[size_t(i)];
  }
  return st;
}

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) { data = device_allocate(nbytes, dev); }
Storage::~Storage() { device_deallocate(data, bytes, device); }

// ------------------------------------------------------------------------------------------------
// Raw byte movement between devices (no autograd).

namespace {

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (bytes == 0) return;
  if (!dd.is_cuda() && !sd.is_cuda()) {
    std::memcpy(dst, src, bytes);
    return;
  }
  if (dd.is_cuda() != sd.is_cuda()) check_no_host_sync(dd.is_cuda() ? "a host-to-device copy" : "a device-to-host copy");
#ifdef HAMU_CUDA
  if (dd.is_cuda() && sd.is_cuda()) {
    if (dd.index != sd.index) throw Error("copy between two CUDA devices is not supported");
    kernels::cuda_memcpy_d2d(kernels::cuda_context(dd.index), dst, src, bytes);
  } else if (dd.is_cuda()) {
    kernels::cuda_memcpy_h2d(kernels::cuda_context(dd.index), dst, src, bytes);
  } else {
    kernels::cuda_memcpy_d2h(kernels::cuda_context(sd.index), dst, src, bytes);
  }
#else
  throw Error("this build has no CUDA backend (rebuild with make CUDA=1)");
#endif
}

std::shared_ptr<TensorImpl> make_impl(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    if (d < 0) throw InputError("tensor: negative dimension in shape " + shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  size_t bytes = 0;
  if (__builtin_mul_overflow(size_t(shape_numel(shape)), dtype_size(dtype), &bytes))
    throw InputError("tensor: shape " + shape_str(shape) + " needs more bytes than a size_t can count");
  impl->storage = std::make_shared<Storage>(bytes, device);
  return impl;
}

// A new impl viewing the same storage.
std::shared_ptr<TensorImpl> view_impl(const TensorImpl& src, const Shape& shape, const Shape& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = src.storage;
  impl->offset = offset;
  impl->shape = shape;
  impl->strides = strides;
  impl->dtype = src.dtype;
  return impl;
}

thread_local bool t_grad_enabled = true;

}  // namespace

// ------------------------------------------------------------------------------------------------
// Factories

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) { return Tensor(make_impl(shape, dtype, device)); }

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(0.0);
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  if (int64_t(values.size()) != shape_numel(shape))
    throw InputError("from_vector: " + std::to_string(values.size()) + " values do not fill shape " + shape_str(shape));
  check_no_host_sync("Tensor::from_vector (host values into a tensor)");
  Tensor t = empty(shape, dtype_of<T>(), device);
  copy_bytes(t.raw(), device, values.data(), Device{}, values.size() * sizeof(T));
  return t;
}
template Tensor Tensor::from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector<double>(const std::vector<double>&, const Shape&, Device);
template Tensor Tensor::from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, Device);

Tensor Tensor::from_doubles(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  if (dtype == DType::f64) return from_vector<double>(values, shape, device);
  if (dtype == DType::f32) return from_vector<float>(std::vector<float>(values.begin(), values.end()), shape, device);
  throw InputError(std::string("from_doubles: dtype ") + dtype_name(dtype) + " is not floating");
}

// ------------------------------------------------------------------------------------------------
// Accessors

int64_t Tensor::size(int d) const {
  const int n = dim();
  if (d < 0) d += n;
  if (d < 0 || d >= n) throw InputError("size: dim " + std::to_string(d) + " out of range for shape " + shape_str(shape()));
  return p_->shape[d];
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (p_->shape[i] != 1 && p_->strides[i] != acc) return false;
    acc *= p_->shape[i];
  }
  return true;
}

void* Tensor::raw() const { return static_cast<char*>(p_->storage->data) + p_->offset * int64_t(dtype_size(p_->dtype)); }

template <class T>
T* Tensor::data() const {
  if (!p_) throw Error("data: undefined tensor");
  if (p_->dtype != dtype_of<T>())
    throw Error(std::string("data: tensor is ") + dtype_name(p_->dtype) + ", accessed as " + dtype_name(dtype_of<T>()));
  return static_cast<T*>(raw());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template uint16_t* Tensor::data<uint16_t>() const;

// ------------------------------------------------------------------------------------------------
// Copies

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape(), dtype(), device());
  if (dtype() == DType::f32 || dtype() == DType::f64) {
    dispatch("contiguous", *this, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::strided_copy(ctx, dim(), shape().data(), strides().data(), data<T>(), out.data<T>());
    });
  } else {
    if (is_cuda())
      throw Error(std::string("contiguous: strided ") + dtype_name(dtype()) + " tensors on cuda are not supported");
    // Integer and bfloat16 views are rare (labels, a transposed frozen weight); a plain host loop.
    const size_t es = dtype_size(dtype());
    std::vector<int64_t> idx(dim(), 0);
    const char* src = static_cast<const char*>(p_->storage->data);
    char* dst = static_cast<char*>(out.raw());
    for (int64_t i = 0, n = numel(); i < n; ++i) {
      int64_t off = p_->offset;
      for (int d = 0; d < dim(); ++d) off += idx[d] * strides()[d];
      std::memcpy(dst + i * es, src + off * es, es);
      for (int d = dim() - 1; d >= 0; --d) {
        if (++idx[d] < shape()[d]) break;
        idx[d] = 0;
      }
    }
  }
  if (needs_grad({this})) record(out, "contiguous", {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape(), dtype(), dev);
  copy_bytes(out.raw(), dev, src.raw(), src.device(), size_t(numel()) * dtype_size(dtype()));
  if (needs_grad({this})) {
    const Device back = device();
    record(out, "to_device", {*this}, [back](const Tensor& g) { return std::vector<Tensor>{g.to(back)}; });
  }
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  const bool floats = (dt == DType::f32 || dt == DType::f64) && is_floating();
  const bool bf16 = (dt == DType::bf16 && dtype() == DType::f32) || (dt == DType::f32 && dtype() == DType::bf16);
  if (!floats && !bf16) {
    const bool via_f32 = (dt == DType::bf16 || dtype() == DType::bf16) && (is_floating() || dt == DType::f64);
    throw InputError(std::string("to: cannot convert ") + dtype_name(dtype()) + " to " + dtype_name(dt) +
                     (via_f32 ? " (bfloat16 converts to and from float32 only)" : ""));
  }
  if (bf16 && needs_grad({this}))
    throw InputError("to: bfloat16 holds frozen weights and carries no gradient; convert a detached tensor");
  if (floats && is_cuda()) throw Error("to: float64 tensors are CPU-only; convert before moving to cuda");
  Tensor src = contiguous();
  Tensor out = empty(shape(), dt, device());
  if (bf16 && is_cuda()) {
#ifdef HAMU_CUDA
    const kernels::CudaCtx& ctx = kernels::cuda_context(device().index);
    if (dt == DType::bf16) kernels::cast_f32_bf16(ctx, numel(), src.data<float>(), out.data<uint16_t>());
    else kernels::cast_bf16_f32(ctx, numel(), src.data<uint16_t>(), out.data<float>());
#else
    throw Error("to: this build has no CUDA backend (rebuild with make CUDA=1)");
#endif
    return out;
  }
  const kernels::CpuCtx cpu{};
  if (dt == DType::bf16) kernels::cast_f32_bf16(cpu, numel(), src.data<float>(), out.data<uint16_t>());
  else if (dtype() == DType::bf16) kernels::cast_bf16_f32(cpu, numel(), src.data<uint16_t>(), out.data<float>());
  else if (dt == DType::f64) kernels::cast_f32_f64(cpu, numel(), src.data<float>(), out.data<double>());
  else kernels::cast_f64_f32(cpu, numel(), src.data<double>(), out.data<float>());
  if (needs_grad({this})) {
    const DType back = dtype();
    record(out, "to_dtype", {*this}, [back](const Tensor& g) { return std::vector<Tensor>{g.to(back)}; });
  }
  return out;
}

Tensor Tensor::clone() const {
  Tensor src = contiguous();
  Tensor out = empty(shape(), dtype(), device());
  copy_bytes(out.raw(), device(), src.raw(), device(), size_t(numel()) * dtype_size(dtype()));
  if (needs_grad({this})) record(out, "clone", {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::detach() const { return Tensor(view_impl(*p_, p_->shape, p_->strides, p_->offset)); }

template <class T>
std::vector<T> Tensor::to_vector() const {
  if (dtype() != dtype_of<T>())
    throw Error(std::string("to_vector: tensor is ") + dtype_name(dtype()) + ", requested " + dtype_name(dtype_of<T>()));
  check_no_host_sync("Tensor::to_vector/item (reading a tensor on the host)");
  Tensor src = detach().contiguous();
  std::vector<T> out(static_cast<size_t>(numel()));
  copy_bytes(out.data(), Device{}, src.raw(), src.device(), out.size() * sizeof(T));
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;
template std::vector<uint16_t> Tensor::to_vector<uint16_t>() const;

double Tensor::item() const {
  if (numel() != 1) throw InputError("item: tensor of shape " + shape_str(shape()) + " has " + std::to_string(numel()) + " elements, not 1");
  switch (dtype()) {
    case DType::f32: return to_vector<float>()[0];
    case DType::f64: return to_vector<double>()[0];
    case DType::i32: return to_vector<int32_t>()[0];
    case DType::u8: return to_vector<uint8_t>()[0];
    case DType::bf16: return kernels::bf16_to_float(to_vector<uint16_t>()[0]);
  }
  return 0;
}

void Tensor::copy_(const Tensor& src) {
  if (src.shape() != shape())
    throw InputError("copy_: shapes " + shape_str(src.shape()) + " and " + shape_str(shape()) + " differ");
  if (!is_contiguous()) throw Error("copy_: destination must be contiguous");
  Tensor s = src.detach();
  if (s.dtype() != dtype()) {
    // float64 exists on the CPU only; bfloat16 converts on either device.
    if (s.is_cuda() && s.dtype() != DType::bf16 && dtype() != DType::bf16) s = s.to(Device{});
    s = s.to(dtype());
  }
  s = s.contiguous();
  copy_bytes(raw(), device(), s.raw(), s.device(), size_t(numel()) * dtype_size(dtype()));
}

void Tensor::fill_(double value) {
  if (!is_contiguous()) throw Error("fill_: tensor must be contiguous");
  if (is_floating()) {
    dispatch("fill_", *this, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::fill(ctx, numel(), T(value), data<T>());
    });
    return;
  }
  // Integer and bfloat16 tensors: fill on the host and move.
  if (dtype() == DType::bf16) {
    std::vector<uint16_t> v(static_cast<size_t>(numel()), kernels::float_to_bf16(static_cast<float>(value)));
    copy_bytes(raw(), device(), v.data(), Device{}, v.size() * 2);
  } else if (dtype() == DType::i32) {
    std::vector<int32_t> v(static_cast<size_t>(numel()), static_cast<int32_t>(value));
    copy_bytes(raw(), device(), v.data(), Device{}, v.size() * 4);
  } else {
    std::vector<uint8_t> v(static_cast<size_t>(numel()), static_cast<uint8_t>(value));
    copy_bytes(raw(), device(), v.data(), Device{}, v.size());
  }
}

// ------------------------------------------------------------------------------------------------
// Views

Tensor Tensor::reshape(const Shape& want) const {
  Shape shape2 = want;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape2.size(); ++i) {
    if (shape2[i] == -1) {
      if (infer >= 0) throw InputError("reshape: more than one -1 in " + shape_str(want));
      infer = int(i);
    } else if (shape2[i] < 0) {
      throw InputError("reshape: negative size in " + shape_str(want));
    } else if (__builtin_mul_overflow(known, shape2[i], &known)) {
      throw InputError("reshape: " + shape_str(want) + " has more elements than an int64 can count");
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel() % known != 0)
      throw InputError("reshape: cannot reshape " + shape_str(shape()) + " into " + shape_str(want));
    shape2[infer] = numel() / known;
  }
  if (shape_numel(shape2) != numel())
    throw InputError("reshape: cannot reshape " + shape_str(shape()) + " into " + shape_str(want));
  Tensor src = contiguous();
  Tensor out(view_impl(*src.p_, shape2, contiguous_strides(shape2), src.p_->offset));
  if (needs_grad({&src})) {
    const Shape back = shape();
    record(out, "reshape", {src}, [back](const Tensor& g) { return std::vector<Tensor>{g.reshape(back)}; });
  }
  return out;
}

Tensor Tensor::flatten(int start_dim) const {
  if (start_dim < 0) start_dim += dim();
  if (start_dim < 0 || start_dim > dim()) throw InputError("flatten: start dim out of range for " + shape_str(shape()));
  Shape s(shape().begin(), shape().begin() + start_dim);
  int64_t rest = 1;
  for (int i = start_dim; i < dim(); ++i) rest *= shape()[i];
  s.push_back(rest);
  return reshape(s);
}

Tensor Tensor::transpose(int a, int b) const {
  const int n = dim();
  if (a < 0) a += n;
  if (b < 0) b += n;
  if (a < 0 || b < 0 || a >= n || b >= n)
    throw InputError("transpose: dims out of range for shape " + shape_str(shape()));
  Shape sh = shape(), st = strides();
  std::swap(sh[a], sh[b]);
  std::swap(st[a], st[b]);
  Tensor out(view_impl(*p_, sh, st, p_->offset));
  if (needs_grad({this})) {
    record(out, "transpose", {*this}, [a, b](const Tensor& g) { return std::vector<Tensor>{g.transpose(a, b)}; });
  }
  return out;
}

Tensor Tensor::narrow(int d, int64_t start, int64_t length) const {
  const int n = dim();
  if (d < 0) d += n;
  if (d < 0 || d >= n) throw InputError("narrow: dim out of range for shape " + shape_str(shape()));
  if (start < 0 || length < 0 || start + length > shape()[d])
    throw InputError("narrow: range [" + std::to_string(start) + ", " + std::to_string(start + length) +
                     ") outside dim " + std::to_string(d) + " of shape " + shape_str(shape()));
  Shape sh = shape();
  sh[d] = length;
  Tensor out(view_impl(*p_, sh, strides(), p_->offset + start * strides()[d]));
  if (needs_grad({this})) {
    const Shape full = shape();
    const DType dt = dtype();
    const Device dev = device();
    record(out, "narrow", {*this}, [full, dt, dev, d, start, length](const Tensor& g) {
      // Scatter g into a zero tensor of the input's shape: a 2-D block copy per dim split.
      Tensor gx = Tensor::zeros(full, dt, dev);
      Tensor gc = g.contiguous();
      int64_t outer = 1, inner = 1;
      for (int i = 0; i < d; ++i) outer *= full[i];
      for (size_t i = d + 1; i < full.size(); ++i) inner *= full[i];
      dispatch("narrow_backward", gx, [&](const auto& ctx, auto tag) {
        using T = decltype(tag);
        kernels::copy_rows(ctx, outer, length * inner, gc.data<T>(), length * inner, gx.data<T>() + start * inner,
                           full[d] * inner);
      });
      return std::vector<Tensor>{gx};
    });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Autograd

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

void record(Tensor& out, const char* op, std::vector<Tensor> inputs,
            std::function<std::vector<Tensor>(const Tensor&)> backward) {
  auto node = std::make_shared<Node>();
  node->op = op;
  node->inputs.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    if (!in.defined()) continue;
    Edge& e = node->inputs[i];
    e.shape = in.shape();
    if (in.impl()->grad_fn) e.fn = in.impl()->grad_fn;
    else if (in.requires_grad()) e.leaf = in.impl_ptr();
  }
  node->backward = std::move(backward);
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

Tensor& Tensor::requires_grad_(bool on) {
  if (on && !is_floating()) throw InputError("requires_grad_: only floating-point tensors can require gradients");
  if (!is_leaf()) throw Error("requires_grad_: only leaf tensors can change requires_grad");
  p_->requires_grad = on;
  return *this;
}

void accumulate_grad(TensorImpl* t, const Tensor& g) {
  if (g.shape() != t->shape)
    throw Error("autograd: gradient of shape " + shape_str(g.shape()) + " for a tensor of shape " + shape_str(t->shape));
  if (!t->grad) {
    // Own a private contiguous copy: backward closures may hand the same tensor to several inputs.
    Tensor c = g.detach().clone();
    t->grad = c.impl_ptr();
    return;
  }
  Tensor acc(t->grad);
  Tensor gc = g.detach().contiguous();
  dispatch("accumulate_grad", acc, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::axpby(ctx, acc.numel(), T(1), gc.data<T>(), T(1), acc.data<T>());
  });
}

namespace {

Tensor add_grads(const Tensor& a, const Tensor& b) {
  Tensor out = a.detach().clone();
  Tensor bc = b.detach().contiguous();
  dispatch("accumulate_grad", out, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::axpby(ctx, out.numel(), T(1), bc.data<T>(), T(1), out.data<T>());
  });
  return out;
}

// Nodes reachable from root, each after every node that consumes its output. Strong references: the
// backward pass frees each node's edges as it goes.
std::vector<std::shared_ptr<Node>> topo_order(const std::shared_ptr<Node>& root) {
  std::vector<std::shared_ptr<Node>> post;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack;
  stack.push_back({root, 0});
  seen.insert(root.get());
  while (!stack.empty()) {
    Node* node = stack.back().first.get();
    size_t& next = stack.back().second;
    if (next < node->inputs.size()) {
      const std::shared_ptr<Node>& in = node->inputs[next++].fn;
      if (in && !seen.count(in.get())) {
        seen.insert(in.get());
        stack.push_back({in, 0});
      }
      continue;
    }
    post.push_back(stack.back().first);
    stack.pop_back();
  }
  std::reverse(post.begin(), post.end());
  return post;
}

}  // namespace

namespace {
thread_local GradReadyScope* t_grad_ready = nullptr;
}  // namespace

GradReadyScope::GradReadyScope(const std::vector<Tensor>& watched, std::function<void(size_t)> ready)
    : ready_(std::move(ready)), prev_(t_grad_ready) {
  for (size_t i = 0; i < watched.size(); ++i)
    if (watched[i].defined()) index_.emplace(watched[i].impl(), i);
  t_grad_ready = this;
}

GradReadyScope::~GradReadyScope() { t_grad_ready = prev_; }

int64_t GradReadyScope::index_of(const TensorImpl* leaf) const {
  auto it = index_.find(leaf);
  return it == index_.end() ? -1 : int64_t(it->second);
}

void Tensor::backward(const Tensor& grad) const {
  if (!requires_grad()) throw Error("backward: tensor does not require a gradient");
  Tensor g0 = grad;
  if (!g0.defined()) {
    if (numel() != 1)
      throw Error("backward: an implicit gradient needs a one-element output, got " + shape_str(shape()));
    g0 = Tensor::full(shape(), 1.0, dtype(), device());
  }
  const GradReadyScope* watch = t_grad_ready;
  if (is_leaf()) {
    accumulate_grad(p_.get(), g0);
    if (watch && watch->index_of(p_.get()) >= 0) watch->notify(size_t(watch->index_of(p_.get())));
    return;
  }
  NoGradGuard no_grad;
  // Gradients waiting for their op, by the node that made the tensor they belong to.
  std::unordered_map<Node*, Tensor> pending;
  pending[p_->grad_fn.get()] = g0;
  const std::vector<std::shared_ptr<Node>> order = topo_order(p_->grad_fn);
  // Watched leaves: how many recorded ops have yet to send each one its gradient (uses, by watched
  // index), and which watched leaves each op takes (by position in `order`: the ops release their
  // edges as the backward goes).
  std::unordered_map<size_t, int> uses;
  std::vector<std::vector<size_t>> watched_inputs;
  if (watch) {
    watched_inputs.resize(order.size());
    for (size_t k = 0; k < order.size(); ++k)
      for (const Edge& in : order[k]->inputs) {
        if (!in.leaf) continue;
        const int64_t w = watch->index_of(in.leaf.get());
        if (w < 0) continue;
        ++uses[size_t(w)];
        watched_inputs[k].push_back(size_t(w));
      }
  }
  auto op_done = [&](size_t k) {
    if (!watch) return;
    for (size_t w : watched_inputs[k])
      if (--uses[w] == 0) watch->notify(w);
  };
  for (size_t k = 0; k < order.size(); ++k) {
    Node& node = *order[k];
    auto it = pending.find(&node);
    if (it == pending.end()) {
      op_done(k);  // no gradient reaches this op: it sends none
      continue;
    }
    Tensor g = std::move(it->second);
    pending.erase(it);
    if (!node.backward)
      throw Error(std::string("backward: the graph through '") + node.op + "' was already used by an earlier backward");
    std::vector<Tensor> grads = node.backward(g);
    if (grads.size() != node.inputs.size())
      throw Error(std::string("autograd: op '") + node.op + "' returned the wrong number of gradients");
    for (size_t i = 0; i < grads.size(); ++i) {
      const Edge& in = node.inputs[i];
      if (!grads[i].defined()) continue;
      // A leaf takes a gradient only while it requires one (it may have been switched off since the forward).
      if (!in.fn && !(in.leaf && in.leaf->requires_grad)) continue;
      if (grads[i].shape() != in.shape)
        throw Error(std::string("autograd: op '") + node.op + "' gave a gradient of shape " + shape_str(grads[i].shape()) +
                    " for input " + std::to_string(i) + " of shape " + shape_str(in.shape));
      if (!in.fn) {
        accumulate_grad(in.leaf.get(), grads[i]);
      } else {
        auto found = pending.find(in.fn.get());
        if (found == pending.end()) pending.emplace(in.fn.get(), grads[i]);
        else found->second = add_grads(found->second, grads[i]);
      }
    }
    // Free what this node saved; the tensor keeps its grad_fn so a second backward is reported.
    node.backward = nullptr;
    node.inputs.clear();
    op_done(k);
  }
}

}  // namespace hamu
