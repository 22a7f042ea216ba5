// engine/tensor.h: Tensor (shape, strides, dtype, device, ref-counted storage) and its autograd hooks.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/error.h"

namespace hamu {

// bf16: bfloat16 storage (elements are uint16_t bit patterns, kernels/bf16.h) for frozen Linear weights on CUDA
// (issue #10's mixed precision): only Tensor::to/copies/moves and linear read it; it is not "floating" (no
// gradients, and every other op refuses it, naming itself).
enum class DType : uint8_t { f32, f64, i32, u8, bf16 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);
template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::bf16; }

struct Device {
  enum Kind : uint8_t { cpu, cuda };
  Kind kind = cpu;
  int index = 0;
  bool is_cuda() const { return kind == cuda; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
  // "cpu", "cuda", "cuda:N"; throws InputError naming the text otherwise (or when CUDA is absent).
  static Device parse(const std::string& text);
};

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

// Raw memory owned by one allocator (CPU: 64-byte aligned; CUDA: the caching allocator).
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Node;
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape, strides;
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient of a leaf
  std::shared_ptr<Node> grad_fn;     // how this tensor was made (non-leaf)
  std::string name;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : p_(std::move(impl)) {}

  // Factories.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = {});
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = {});
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = {});
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = {});
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = {});
  // Converts double values into the given float dtype.
  static Tensor from_doubles(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32,
                             Device device = {});

  bool defined() const { return p_ != nullptr; }
  TensorImpl* impl() const { return p_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return p_; }
  const Shape& shape() const { return p_->shape; }
  const Shape& strides() const { return p_->strides; }
  int dim() const { return int(p_->shape.size()); }
  int64_t size(int d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(p_->shape); }
  DType dtype() const { return p_->dtype; }
  Device device() const { return p_->storage->device; }
  bool is_cuda() const { return device().is_cuda(); }
  bool is_contiguous() const;
  bool is_floating() const { return dtype() == DType::f32 || dtype() == DType::f64; }
  const std::string& name() const { return p_->name; }
  Tensor& set_name(std::string n) { p_->name = std::move(n); return *this; }

  // Typed pointer to the first element (checks the dtype; the caller respects strides).
  template <class T> T* data() const;
  void* raw() const;

  // Copies and conversions (not recorded by autograd; see ops for differentiable versions).
  Tensor contiguous() const;  // differentiable (a copy when strided)
  Tensor to(Device device) const;
  // float32 <-> float64 (differentiable, CPU), float32 <-> bfloat16 (CPU and CUDA; rounding to nearest even;
  // not differentiable: a tensor that needs a gradient is refused).
  Tensor to(DType dtype) const;
  Tensor clone() const;
  Tensor detach() const;  // shares storage, no history
  template <class T> std::vector<T> to_vector() const;  // host copy, contiguous order
  double item() const;                                 // one-element tensor

  // Views (differentiable).
  Tensor reshape(const Shape& shape) const;  // -1 allowed once
  Tensor flatten(int start_dim = 1) const;
  Tensor transpose(int a, int b) const;
  Tensor narrow(int dim, int64_t start, int64_t length) const;

  // In-place, outside autograd (optimizers, initialisation, loading).
  void copy_(const Tensor& src);  // same shape; any device; dtype converted between f32/f64/bf16
  void fill_(double value);
  void zero_() { fill_(0.0); }

  // Autograd.
  bool requires_grad() const { return p_ && p_->requires_grad; }
  Tensor& requires_grad_(bool on = true);
  Tensor grad() const { return Tensor(p_->grad); }
  void set_grad(const Tensor& g) { p_->grad = g.p_; }
  void zero_grad() { p_->grad.reset(); }
  bool is_leaf() const { return p_->grad_fn == nullptr; }
  void backward(const Tensor& grad = {}) const;

 private:
  std::shared_ptr<TensorImpl> p_;
};

// ------------------------------------------------------------------------------------------------
// Autograd tape (define-by-run). An op that produced `out` from differentiable inputs records a Node
// whose backward maps d(loss)/d(out) to one gradient per input (undefined: no gradient).
//
// An input is kept as an edge, not as a tensor: the node that made it (a non-leaf), or the leaf itself when
// it takes a gradient. The tape never holds an input's data: a backward saves what it reads (detached
// tensors, SavedTensor), so an activation no backward reads is freed as soon as the forward is done with it.
struct Node;
struct Edge {
  std::shared_ptr<Node> fn;          // a non-leaf input: the op that made it
  std::shared_ptr<TensorImpl> leaf;  // a leaf input that requires a gradient
  Shape shape;                       // the input's shape (checked against its gradient)
};
struct Node {
  const char* op = "";
  std::vector<Edge> inputs;
  std::function<std::vector<Tensor>(const Tensor& grad_out)> backward;
};

bool grad_enabled();
struct NoGradGuard {
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when grad mode is on and any input requires a gradient.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
// Marks `out` as produced by `op` from `inputs` (only call when needs_grad(...) holds).
void record(Tensor& out, const char* op, std::vector<Tensor> inputs,
            std::function<std::vector<Tensor>(const Tensor&)> backward);

// Adds `g` into the leaf gradient of `t` (allocating it on first use).
void accumulate_grad(TensorImpl* t, const Tensor& g);

// Tells the caller, during a backward, the moment each of some leaves has received its last gradient of
// that backward, so that work on the finished gradients (a data-parallel all-reduce) can start while the
// rest of the backward runs. While a scope is active on this thread, every backward counts, for each
// watched leaf, the recorded ops that take it as an input, and calls ready(i) (i: its index in
// `watched`) right after the last of those ops ran its backward, or was passed over because no gradient
// reached it. Gradients routed by an op straight into other buffers (the paired backward) are final then
// too. Leaves the backward never reaches are not reported; a leaf on which backward() is called itself
// is reported after its accumulation. Scopes nest (the innermost one is used).
class GradReadyScope {
 public:
  GradReadyScope(const std::vector<Tensor>& watched, std::function<void(size_t)> ready);
  ~GradReadyScope();
  GradReadyScope(const GradReadyScope&) = delete;
  GradReadyScope& operator=(const GradReadyScope&) = delete;
  // The index of a watched leaf, or -1.
  int64_t index_of(const TensorImpl* leaf) const;
  void notify(size_t i) const { ready_(i); }

 private:
  std::unordered_map<const TensorImpl*, size_t> index_;
  std::function<void(size_t)> ready_;
  GradReadyScope* prev_;
};

}  // namespace hamu
