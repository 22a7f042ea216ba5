// engine/nn.cpp: module bookkeeping (names, devices, modes) and the layer implementations.
#include "engine/nn.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>

namespace hamu::nn {

// ------------------------------------------------------------------------------------------------
// Module

void Module::register_parameter(const std::string& name, Tensor* t) {
  if (t->defined() && t->is_leaf()) t->requires_grad_(true);
  params_.emplace_back(name, t);
}

void Module::register_buffer(const std::string& name, Tensor* t) { buffers_.emplace_back(name, t); }

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::collect(const std::string& prefix, Collect what, Named& out) const {
  if (what == Collect::buffers || what == Collect::all_params || !frozen_)
    for (const auto& [name, t] : what == Collect::buffers ? buffers_ : params_)
      if (t->defined()) out.emplace_back(prefix + name, *t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", what, out);
}

Named Module::named_parameters() const {
  Named out;
  collect("", Collect::trainable, out);
  return out;
}

Named Module::named_buffers() const {
  Named out;
  collect("", Collect::buffers, out);
  return out;
}

Named Module::named_weights() const {
  Named out;
  collect("", Collect::all_params, out);
  return out;
}

void Module::freeze() {
  frozen_ = true;
  for (auto& [name, t] : params_)
    if (t->defined()) {
      t->zero_grad();
      // A leaf parameter simply stops asking for gradients (names and storage stay).
      t->requires_grad_(false);
    }
  for (auto& [name, child] : children_) child->freeze();
}

void Module::remove_module(const std::string& name) {
  for (auto it = children_.begin(); it != children_.end(); ++it)
    if (it->first == name) {
      children_.erase(it);
      return;
    }
  throw Error("remove_module: no child named '" + name + "'");
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::zero_grad() {
  for (auto& [name, t] : params_)
    if (t->defined()) t->zero_grad();
  for (auto& [name, child] : children_) child->zero_grad();
}

// f(tensor, trainable): trainable is true for the parameters of a module that is not frozen.
template <class F> void Module::for_each_tensor(F f) {
  for (auto& [name, t] : params_)
    if (t->defined()) f(*t, !frozen_);
  for (auto& [name, t] : buffers_)
    if (t->defined()) f(*t, false);
  for (auto& [name, child] : children_) child->for_each_tensor(f);
}

// Replaces every parameter and buffer by convert(t) (keeping its name and requires_grad); a tensor
// for which skip(t) holds is left as it is.
template <class Skip, class Convert> void Module::replace_tensors(Skip skip, Convert convert) {
  for_each_tensor([&](Tensor& t, bool trainable) {
    if (skip(t)) return;
    const std::string name = t.name();
    Tensor moved = convert(t.detach());
    moved.set_name(name);
    if (trainable) moved.requires_grad_(true);
    t = moved;
  });
}

void Module::to(Device device) {
  replace_tensors([&](const Tensor& t) { return t.device() == device; },
                  [&](const Tensor& t) { return t.to(device); });
}

void Module::to(DType dtype) {
  replace_tensors([&](const Tensor& t) { return t.dtype() == dtype; }, [&](const Tensor& t) { return t.to(dtype); });
}

void Module::assign_names(const std::string& prefix) {
  for (auto& [name, t] : params_)
    if (t->defined()) t->set_name(prefix + name);
  for (auto& [name, t] : buffers_)
    if (t->defined()) t->set_name(prefix + name);
  for (auto& [name, child] : children_) child->assign_names(prefix + name + ".");
}

// ------------------------------------------------------------------------------------------------
// Layers

namespace {

// PyTorch's default initialisation of Linear and Conv2d: weight of `shape` [out, ...], then (with has_bias) bias
// [out], both U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in the weight's elements per output, drawn in that order.
void init_fan_in_uniform(Tensor& weight, Tensor& bias, const Shape& shape, bool has_bias, Rng& rng) {
  const int64_t out = shape[0], fan_in = shape_numel(shape) / out;
  const double bound = 1.0 / std::sqrt(double(fan_in));
  weight = Tensor::empty(shape);
  rng.fill_uniform(weight, -bound, bound);
  if (!has_bias) return;
  bias = Tensor::empty({out});
  rng.fill_uniform(bias, -bound, bound);
}

}  // namespace

Linear::Linear(int64_t in, int64_t out, bool has_bias, Rng& rng) {
  if (in < 1 || out < 1) throw InputError("Linear: sizes must be positive, got " + std::to_string(in) + "->" + std::to_string(out));
  init_fan_in_uniform(weight, bias, {out, in}, has_bias, rng);
  register_parameter("weight", &weight);
  if (has_bias) register_parameter("bias", &bias);
}

Tensor Linear::forward(const Tensor& x) {
  Tensor y = linear(x, weight, bias);
  if (!lora_A) return y;
  const Tensor h = lora_dropout ? (*lora_dropout)(x) : x;
  return add(y, mul_scalar((*lora_B)((*lora_A)(h)), lora_scaling));
}

void Linear::add_lora(int64_t r, double alpha, double dropout, uint64_t seed, Rng& rng) {
  if (lora_A) throw InputError("LoRA: layer '" + weight.name() + "' already has an adapter");
  if (r < 1) throw InputError("LoRA: rank r must be positive, got " + std::to_string(r));
  if (!std::isfinite(alpha) || alpha <= 0) throw InputError("LoRA: alpha must be a positive number");
  if (!(dropout >= 0.0 && dropout < 1.0)) throw InputError("LoRA: dropout must lie in [0, 1)");
  const int64_t in = weight.shape()[1], out = weight.shape()[0];
  lora_A = std::make_shared<Linear>(in, r, false, rng);
  lora_B = std::make_shared<Linear>(r, out, false, rng);
  lora_B->weight.fill_(0.0);
  if (weight.device() != Device{}) {
    lora_A->to(weight.device());
    lora_B->to(weight.device());
  }
  if (weight.is_floating() && weight.dtype() != lora_A->weight.dtype()) {  // a bfloat16 base keeps float32 adapters
    lora_A->to(weight.dtype());
    lora_B->to(weight.dtype());
  }
  register_module("lora_A", lora_A);
  register_module("lora_B", lora_B);
  if (dropout > 0) {
    lora_dropout = register_module("lora_dropout", std::make_shared<Dropout>(dropout, seed));
    lora_dropout->train(training());
  }
  lora_A->train(training());
  lora_B->train(training());
  lora_alpha = alpha;
  lora_scaling = alpha / double(r);
  // Keep the dotted names in step with the base weight's ("...q_proj.weight" -> "...q_proj.lora_A.weight").
  const std::string& wn = weight.name();
  const std::string prefix = wn.size() > 6 && wn.compare(wn.size() - 6, 6, "weight") == 0 ? wn.substr(0, wn.size() - 6) : "";
  lora_A->assign_names(prefix + "lora_A.");
  lora_B->assign_names(prefix + "lora_B.");
}

void Linear::merge_lora() {
  if (!lora_A) throw Error("LoRA: layer '" + weight.name() + "' has no adapter to merge");
  if (weight.dtype() == DType::bf16)
    throw InputError("LoRA: layer '" + weight.name() + "' has a bfloat16 base weight; merging into it would round the "
                     "merged weight to bfloat16: merge into a float32 copy of the base (models::merge_lora_into)");
  {
    NoGradGuard ng;
    Tensor delta = mul_scalar(matmul(lora_B->weight.detach(), lora_A->weight.detach()), lora_scaling);
    Tensor merged = add(weight.detach(), delta);
    weight.detach().copy_(merged);
  }
  remove_module("lora_A");
  remove_module("lora_B");
  if (lora_dropout) remove_module("lora_dropout");
  lora_A.reset();
  lora_B.reset();
  lora_dropout.reset();
  lora_alpha = lora_scaling = 0;
}

Conv2d::Conv2d(int64_t in, int64_t out, int kernel, int stride, int pad, bool has_bias, Rng& rng) {
  if (in < 1 || out < 1 || kernel < 1 || stride < 1 || pad < 0)
    throw InputError("Conv2d: invalid geometry in=" + std::to_string(in) + " out=" + std::to_string(out) +
                     " kernel=" + std::to_string(kernel));
  opt.stride_h = opt.stride_w = stride;
  opt.pad_h = opt.pad_w = pad;
  init_fan_in_uniform(weight, bias, {out, in, kernel, kernel}, has_bias, rng);
  register_parameter("weight", &weight);
  if (has_bias) register_parameter("bias", &bias);
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, opt); }

BatchNorm2d::BatchNorm2d(int64_t channels, double eps_, double momentum_) : eps(eps_), momentum(momentum_) {
  weight = Tensor::full({channels}, 1.0);
  bias = Tensor::zeros({channels});
  running_mean = Tensor::zeros({channels});
  running_var = Tensor::full({channels}, 1.0);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
  register_buffer("running_mean", &running_mean);
  register_buffer("running_var", &running_var);
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  const bool batch_stats = training() && !frozen;
  if (batch_stats) ++num_batches_tracked;
  return batch_norm(x, weight, bias, running_mean, running_var, batch_stats, momentum, eps);
}

namespace {
std::atomic<int> g_fusion_override{-1};
}  // namespace

bool batchnorm_fusion_enabled() {
  const int o = g_fusion_override.load();
  if (o >= 0) return o != 0;
  static const bool from_env = [] {
    const char* v = std::getenv("HAMU_FUSE_BN");
    return !(v && std::string(v) == "0");
  }();
  return from_env;
}

int set_batchnorm_fusion(int mode) { return g_fusion_override.exchange(mode < 0 ? -1 : mode != 0); }

Tensor BatchNorm2d::forward_act(const Tensor& x, const Tensor& residual, bool relu_after) {
  if (fuses()) return batch_norm_act(x, weight, bias, running_mean, running_var, eps, residual, relu_after);
  if (batchnorm_fusion_enabled() && (residual.defined() || relu_after)) {  // batch statistics (training)
    ++num_batches_tracked;
    return batch_norm_train_act(x, weight, bias, running_mean, running_var, momentum, eps, residual, relu_after);
  }
  Tensor y = forward(x);
  if (residual.defined()) y = add(y, residual);
  return relu_after ? relu(y) : y;
}

bool BatchNorm2d::fuses() const { return (!training() || frozen) && batchnorm_fusion_enabled(); }

Tensor conv_bn_act(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, const Tensor& residual, bool relu) {
  if (!bn.fuses()) return bn.forward_act(conv(x), residual, relu);
  return conv2d_bn_act(x, conv.weight, conv.bias, conv.opt, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                       bn.eps, residual, relu);
}

MaxPool2d::MaxPool2d(int kernel, int stride, int pad) {
  opt.kernel_h = opt.kernel_w = kernel;
  opt.stride_h = opt.stride_w = stride;
  opt.pad_h = opt.pad_w = pad;
}

AvgPool2d::AvgPool2d(int kernel, int stride, int pad) {
  opt.kernel_h = opt.kernel_w = kernel;
  opt.stride_h = opt.stride_w = stride;
  opt.pad_h = opt.pad_w = pad;
}

Tensor Dropout::forward(const Tensor& x) {
  if (!training()) return dropout(x, p, false, 0);
  // A fresh mask per training call, reproducible from the module's seed and call count. Evaluation calls do not
  // count: how often a run evaluates (or generates) must not change the masks its training steps draw.
  uint64_t state = seed_ ^ (0x9E3779B97F4A7C15ull * ++calls_);
  return dropout(x, p, true, splitmix64(state));
}

Embedding::Embedding(int64_t vocab, int64_t dim, Rng& rng) {
  if (vocab < 1 || dim < 1) throw InputError("Embedding: sizes must be positive");
  weight = Tensor::empty({vocab, dim});
  rng.fill_normal(weight, 0.0, 1.0);
  register_parameter("weight", &weight);
}

LayerNorm::LayerNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = Tensor::full({dim}, 1.0);
  bias = Tensor::zeros({dim});
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

CausalSelfAttention::CausalSelfAttention(int64_t dim_, int64_t heads_, Rng& rng) : dim(dim_), heads(heads_) {
  if (heads < 1 || dim % heads != 0)
    throw InputError("CausalSelfAttention: dim " + std::to_string(dim) + " is not divisible by " + std::to_string(heads) + " heads");
  qkv = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim, true, rng));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim, true, rng));
}

Tensor CausalSelfAttention::forward(const Tensor& x) {
  if (x.dim() != 3 || x.shape()[2] != dim)
    throw InputError("CausalSelfAttention: expected [B,T," + std::to_string(dim) + "], got " + shape_str(x.shape()));
  const int64_t b = x.shape()[0], t = x.shape()[1], dh = dim / heads;
  // [B,T,3D] -> [3,B,H,T,Dh]
  Tensor qkv_out = permute((*qkv)(x).reshape({b, t, 3, heads, dh}), {2, 0, 3, 1, 4});
  const int64_t part = b * heads * t * dh;
  Tensor flat = qkv_out.reshape({3 * part});
  Tensor q = flat.narrow(0, 0, part).reshape({b, heads, t, dh});
  Tensor k = flat.narrow(0, part, part).reshape({b, heads, t, dh});
  Tensor v = flat.narrow(0, 2 * part, part).reshape({b, heads, t, dh});
  Tensor y = permute(causal_attention(q, k, v), {0, 2, 1, 3}).reshape({b, t, dim});
  return (*proj)(y);
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& layer : layers_) h = layer->forward(h);
  return h;
}

std::string active_dropout(const Module& m, const std::string& path) {
  if (auto* d = dynamic_cast<const Dropout*>(&m)) {
    if (d->training() && d->p > 0)
      return "dropout '" + (path.empty() ? std::string("(root)") : path) + "' is active (p = " + std::to_string(d->p) + ")";
  }
  return "";
}

std::string first_active_dropout(const Module& m, const std::string& path) {
  if (std::string d = active_dropout(m, path); !d.empty()) return d;
  for (const auto& [name, child] : m.children()) {
    std::string d = first_active_dropout(*child, path.empty() ? name : path + "." + name);
    if (!d.empty()) return d;
  }
  return "";
}

}  // namespace hamu::nn
