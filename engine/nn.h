// engine/nn.h: modules (layers with named parameters and buffers) built on the differentiable ops.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace hamu::nn {

using Named = std::vector<std::pair<std::string, Tensor>>;

// A module owns parameters (trainable), buffers (state such as BatchNorm running statistics) and
// child modules, all named, so "layer1.0.conv1.weight" paths come out of the tree.
class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }

  virtual void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  // The trainable parameters (what optimizers, the fused update and hardness work on); frozen ones
  // are left out.
  Named named_parameters() const;
  Named named_buffers() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  // Every parameter, trainable or frozen, in tree order: what a checkpoint holds.
  Named named_weights() const;
  // Freezes this module's parameters and those of its current children: requires_grad off, gradients
  // dropped, and no longer listed by named_parameters()/parameters(), so a backward never gives them
  // gradient buffers. Modules registered afterwards (LoRA adapters) stay trainable.
  void freeze();
  bool frozen() const { return frozen_; }
  void zero_grad();
  // Moves/converts parameters and buffers (keeps names and requires_grad).
  void to(Device device);
  void to(DType dtype);
  // Sets every parameter's and buffer's Tensor name to its dotted path (call once after building).
  void assign_names(const std::string& prefix = "");
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children() const { return children_; }

 protected:
  void register_parameter(const std::string& name, Tensor* t);
  void register_buffer(const std::string& name, Tensor* t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }
  void remove_module(const std::string& name);

 private:
  enum class Collect { trainable, all_params, buffers };
  void collect(const std::string& prefix, Collect what, Named& out) const;
  template <class F> void for_each_tensor(F f);
  template <class Skip, class Convert> void replace_tensors(Skip skip, Convert convert);
  std::vector<std::pair<std::string, Tensor*>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  bool frozen_ = false;
};

class Dropout;

class Linear : public Module {
 public:
  // PyTorch default init: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)).
  Linear(int64_t in, int64_t out, bool bias, Rng& rng);
  Tensor forward(const Tensor& x) override;

  // LoRA in PEFT's form: y = W x + b + (alpha / r) * lora_B(lora_A(lora_dropout(x))), with children
  // named as PEFT's state dict names them: lora_A [r, in] initialised as PEFT does (Kaiming-uniform with
  // a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)), our Linear's default) and lora_B [out, r] zeros, so a
  // fresh adapter changes nothing. Dropout (seeded, a fresh mask per call) acts in training mode only.
  // The base weight keeps its own state (models/lm/lora.h freezes it). One adapter per layer.
  void add_lora(int64_t r, double alpha, double dropout, uint64_t seed, Rng& rng);
  // W += (alpha / r) * B A (no gradient recorded); the adapter is removed.
  void merge_lora();
  bool has_lora() const { return lora_A != nullptr; }
  Tensor weight, bias;
  std::shared_ptr<Linear> lora_A, lora_B;
  std::shared_ptr<Dropout> lora_dropout;  // null when the adapter's dropout is 0
  double lora_alpha = 0, lora_scaling = 0;
};

class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int kernel, int stride, int pad, bool bias, Rng& rng);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  Conv2dOptions opt;
};

// BatchNorm over channels of [N,C,H,W] or [N,C]. frozen: always use the running statistics and never
// update them, even in training mode (HAMU's unlearning setting: samples stay independent).
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;
  // relu?(forward(x) + residual) (residual may be undefined): one fused pass (batch_norm_act) when the
  // statistics are fixed (eval or frozen) and fusion is on, the separate ops otherwise.
  Tensor forward_act(const Tensor& x, const Tensor& residual, bool relu);
  // Whether forward_act takes the fused pass (fixed statistics and fusion on).
  bool fuses() const;
  Tensor weight, bias, running_mean, running_var;
  double eps, momentum;
  bool frozen = false;
  // Forward passes that updated the running statistics (PyTorch's num_batches_tracked, which a strict
  // load_state_dict expects; checkpoints store it as an I64 scalar).
  int64_t num_batches_tracked = 0;
};

// bn.forward_act(conv(x), residual, relu), with the BatchNorm folded into the convolution (conv2d_bn_act:
// one kernel where nothing needs a gradient, on the CPU) when forward_act would fuse, the same bits.
Tensor conv_bn_act(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, const Tensor& residual, bool relu);

// Whether BatchNorm2d::forward_act fuses: the environment's HAMU_FUSE_BN (0 turns fusion off, for
// before/after measurements and debugging; default on) unless set_batchnorm_fusion overrode it.
bool batchnorm_fusion_enabled();
// 1: on, 0: off, -1: back to the environment's choice. Returns the previous override (-1 if none).
int set_batchnorm_fusion(int mode);

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
};

class GELU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return gelu(x); }
};

class MaxPool2d : public Module {
 public:
  MaxPool2d(int kernel, int stride, int pad = 0);
  Tensor forward(const Tensor& x) override { return max_pool2d(x, opt); }
  Pool2dOptions opt;
};

class AvgPool2d : public Module {
 public:
  AvgPool2d(int kernel, int stride, int pad = 0);
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, opt); }
  Pool2dOptions opt;
};

class GlobalAvgPool : public Module {
 public:
  Tensor forward(const Tensor& x) override { return global_avg_pool2d(x); }
};

class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x.flatten(1); }
};

class Dropout : public Module {
 public:
  Dropout(double p, uint64_t seed) : p(p), seed_(seed) {}
  Tensor forward(const Tensor& x) override;
  double p;
  // The mask stream's position (resumable runs store it: engine/run_state.h).
  uint64_t calls() const { return calls_; }
  void set_calls(uint64_t n) { calls_ = n; }

 private:
  uint64_t seed_, calls_ = 0;
};

class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, Rng& rng);  // weight ~ N(0, 1)
  Tensor forward(const Tensor& indices) override { return embedding(indices, weight); }
  Tensor weight;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Tensor forward(const Tensor& x) override { return layer_norm(x, weight, bias, eps); }
  Tensor weight, bias;
  double eps;
};

// Multi-head causal self-attention over x [B,T,D]: fused qkv projection, attention, output projection.
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t dim, int64_t heads, Rng& rng);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Linear> qkv, proj;
  int64_t dim, heads;
};

class Sequential : public Module {
 public:
  Sequential() = default;
  // Children are named "0", "1", ... in order.
  template <class M> std::shared_ptr<M> add(std::shared_ptr<M> m) {
    layers_.push_back(m);
    return register_module(std::to_string(layers_.size() - 1), m);
  }
  Tensor forward(const Tensor& x) override;
  size_t size() const { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<Module>> layers_;
};

// "dropout '<path>' is active (p = ...)" when m itself is a dropout in training mode with p > 0, else empty;
// first_active_dropout searches m and its children (paths joined with '.'): a mask drawn afresh on every
// call is what a paired pass (unlearn/gradients.h) and a replayed graph (engine/graph.h) cannot repeat.
std::string active_dropout(const Module& m, const std::string& path);
std::string first_active_dropout(const Module& m, const std::string& path = "");

// The module in eval mode for the scope's duration (BatchNorm on running statistics, dropout off), its
// previous mode restored on exit, exceptions included.
class EvalModeScope {
 public:
  explicit EvalModeScope(Module& m) : m_(m), was_(m.training()) { m_.eval(); }
  ~EvalModeScope() { m_.train(was_); }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  Module& m_;
  bool was_;
};

}  // namespace hamu::nn
