// engine/optim.cpp: optimizer steps through the kernel interface.
#include "engine/optim.h"

#include <cmath>

#include "engine/dispatch.h"
#include "engine/run_state.h"
#include "kernels/kernels.h"

namespace hamu {

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (const Tensor& p : params_)
    if (!p.defined() || !p.is_contiguous() || !p.is_floating())
      throw InputError("optimizer: parameters must be defined, contiguous floating-point tensors");
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

void Optimizer::check_step_from(const char* who, const Tensor& p, const Tensor& scalars, int64_t n,
                                const Tensor& skip) {
  if (scalars.dtype() != p.dtype() || skip.dtype() != p.dtype() || scalars.device() != p.device() ||
      skip.device() != p.device() || scalars.numel() != n || skip.numel() != 1)
    throw Error(std::string(who) + ": step_from needs " + std::to_string(n) +
                " scalars and a flag of the parameters' dtype and device");
}

Sgd::Sgd(std::vector<Tensor> params, const SgdOptions& o) : Optimizer(std::move(params)), opt(o) {
  if (!(o.lr >= 0) || !(o.momentum >= 0) || !(o.weight_decay >= 0))
    throw InputError("sgd: learning rate, momentum and weight decay must be non-negative");
  lr = o.lr;
  buf_.resize(params_.size());
  started_.assign(params_.size(), false);
  stepped_.assign(params_.size(), false);
}

void Sgd::step() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (opt.momentum != 0 && !buf_[i].defined()) buf_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
    dispatch("sgd", p, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::sgd_step(ctx, p.numel(), p.data<T>(), g.data<T>(), buf_[i].defined() ? buf_[i].data<T>() : nullptr,
                        T(lr), T(opt.momentum), T(opt.dampening), T(opt.weight_decay), opt.nesterov, !started_[i]);
    });
    started_[i] = true;
  }
}

void Sgd::write_next_scalars(void* host, DType dtype) const {
  auto write = [&](auto tag) {
    using T = decltype(tag);
    T* out = static_cast<T*>(host);
    out[0] = T(lr);  // as step() converts it
    for (size_t i = 0; i < params_.size(); ++i) out[1 + i] = T(started_[i] ? 0 : 1);
  };
  if (dtype == DType::f64) write(double{});
  else if (dtype == DType::f32) write(float{});
  else throw Error(std::string("sgd: scalars of dtype ") + dtype_name(dtype));
}

void Sgd::prepare_graph() {
  // A replay must not allocate (and zero) the buffers: that would be captured and repeated every step.
  if (opt.momentum == 0) return;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!buf_[i].defined()) buf_[i] = Tensor::zeros(params_[i].shape(), params_[i].dtype(), params_[i].device());
}

void Sgd::step_from(const Tensor& scalars, const Tensor& skip) {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    stepped_[i] = g.defined();
    if (!g.defined()) continue;
    check_step_from("sgd", p, scalars, graph_scalars(), skip);
    if (opt.momentum != 0 && !buf_[i].defined()) throw Error("sgd: step_from before prepare_graph");
    dispatch("sgd", p, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::sgd_step_dev(ctx, p.numel(), p.data<T>(), g.data<T>(), buf_[i].defined() ? buf_[i].data<T>() : nullptr,
                            scalars.data<T>(), scalars.data<T>() + 1 + i, skip.data<T>(), T(opt.momentum),
                            T(opt.dampening), T(opt.weight_decay), opt.nesterov);
    });
  }
}

void Sgd::count_step() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (stepped_[i]) started_[i] = true;
}

// A momentum buffer exists once its parameter took a step with momentum on: the flag says which are stored.
void Sgd::save_state(RunState& state, const std::string& prefix) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string key = prefix + std::to_string(i);
    state.put_counter(key + ".started", started_[i] ? 1 : 0);
    if (buf_[i].defined()) state.put(key + ".momentum", buf_[i]);
  }
}

void Sgd::load_state(const RunState& state, const std::string& prefix) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string key = prefix + std::to_string(i);
    started_[i] = state.counter(key + ".started") != 0;
    if (state.data.has(key + ".momentum")) {
      buf_[i] = Tensor::zeros(params_[i].shape(), params_[i].dtype(), params_[i].device());
      state.restore(key + ".momentum", buf_[i]);
    } else {
      buf_[i] = Tensor();
    }
  }
}

AdamW::AdamW(std::vector<Tensor> params, const AdamWOptions& o) : Optimizer(std::move(params)), opt(o) {
  if (!(o.lr >= 0) || !(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1) || !(o.eps > 0) ||
      !(o.weight_decay >= 0))
    throw InputError("adamw: need lr >= 0, betas in [0,1), eps > 0, weight decay >= 0");
  lr = o.lr;
  for (const Tensor& p : params_) {
    m_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    v_.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
  }
}

void AdamW::step() {
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    dispatch("adamw", p, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::adamw_step(ctx, p.numel(), p.data<T>(), g.data<T>(), m_[i].data<T>(), v_[i].data<T>(), T(lr),
                          T(opt.beta1), T(opt.beta2), T(opt.eps), T(opt.weight_decay), step_);
    });
  }
}

void AdamW::write_next_scalars(void* host, DType dtype) const {
  auto write = [&](auto tag) {
    using T = decltype(tag);
    const kernels::AdamwScalars<T> s = kernels::adamw_scalars(T(lr), T(opt.beta1), T(opt.beta2), T(opt.weight_decay),
                                                              step_ + 1);
    T* out = static_cast<T*>(host);
    out[0] = s.step_size;
    out[1] = s.inv_sqrt_bc2;
    out[2] = s.decay;
  };
  if (dtype == DType::f64) write(double{});
  else if (dtype == DType::f32) write(float{});
  else throw Error(std::string("adamw: scalars of dtype ") + dtype_name(dtype));
}

void AdamW::step_from(const Tensor& scalars, const Tensor& skip) {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    check_step_from("adamw", p, scalars, graph_scalars(), skip);
    dispatch("adamw", p, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::adamw_step_dev(ctx, p.numel(), p.data<T>(), g.data<T>(), m_[i].data<T>(), v_[i].data<T>(),
                              scalars.data<T>(), skip.data<T>(), T(opt.beta1), T(opt.beta2), T(opt.eps));
    });
  }
}

void AdamW::save_state(RunState& state, const std::string& prefix) const {
  state.put_counter(prefix + "step", step_);
  for (size_t i = 0; i < params_.size(); ++i) {
    state.put(prefix + std::to_string(i) + ".m", m_[i]);
    state.put(prefix + std::to_string(i) + ".v", v_[i]);
  }
}

void AdamW::load_state(const RunState& state, const std::string& prefix) {
  step_ = state.counter(prefix + "step");
  if (step_ < 0) throw InputError(state.path() + ": '" + prefix + "step' is negative");
  for (size_t i = 0; i < params_.size(); ++i) {
    state.restore(prefix + std::to_string(i) + ".m", m_[i]);
    state.restore(prefix + std::to_string(i) + ".v", v_[i]);
  }
}

double grad_norm(const std::vector<Tensor>& params) {
  double total = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    Tensor sq = Tensor::empty({}, g.dtype(), g.device());
    dispatch("grad_norm", g, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::sum_squares(ctx, g.numel(), g.data<T>(), sq.data<T>());
    });
    total += sq.item();
  }
  return std::sqrt(total);
}

Tensor clip_grad_norm_dev(const std::vector<Tensor>& params, double max_norm, const Tensor* skip) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!grads.empty() && (g.dtype() != grads.front().dtype() || g.device() != grads.front().device()))
      throw Error("clip_grad_norm: the gradients must share one dtype and device");
    grads.push_back(g);
  }
  if (grads.empty()) return Tensor();
  const Tensor& first = grads.front();
  if (skip && (skip->dtype() != first.dtype() || skip->device() != first.device() || skip->numel() != 1))
    throw Error("clip_grad_norm: the skip flag must be 1 element of the gradients' dtype and device");
  // Each gradient's sum of squares (the kernel grad_norm runs), then the norm and coefficient from them.
  Tensor sq = Tensor::empty({int64_t(grads.size())}, first.dtype(), first.device());
  Tensor out = Tensor::empty({2}, first.dtype(), first.device());
  dispatch("clip_grad_norm", first, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    for (size_t i = 0; i < grads.size(); ++i)
      kernels::sum_squares(ctx, grads[i].numel(), grads[i].data<T>(), sq.data<T>() + i);
    kernels::clip_coef(ctx, int(grads.size()), sq.data<T>(), max_norm, out.data<T>(), skip ? skip->data<T>() : nullptr);
    for (Tensor& g : grads) kernels::scale_by_coef(ctx, g.numel(), g.data<T>(), out.data<T>());
  });
  return out;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  const Tensor out = clip_grad_norm_dev(params, max_norm);
  if (!out.defined()) return 0.0;
  if (out.dtype() == DType::f64) return out.to_vector<double>()[1];
  return double(out.to_vector<float>()[1]);
}

}  // namespace hamu
