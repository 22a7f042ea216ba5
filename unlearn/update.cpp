// unlearn/update.cpp: pointer tables, gradient routing and the two passes of the fused update.
#include "unlearn/update.h"

#include <cstring>

#include "engine/dispatch.h"
#include "kernels/kernels.h"

namespace hamu {
namespace {

// A table of raw values (pointers or sizes) as a byte tensor on `device`.
template <class V> Tensor device_table(const std::vector<V>& values, Device device) {
  std::vector<uint8_t> bytes(values.size() * sizeof(V));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return Tensor::from_vector<uint8_t>(bytes, {int64_t(bytes.size())}).to(device);
}

}  // namespace

// The pointer tables in the form the backend wants: host arrays for the CPU, device arrays for CUDA.
template <class T> FusedUpdate::Tables<T> FusedUpdate::tables() const {
  const bool cuda = device_.is_cuda();
  Tables<T> t;
  t.theta = cuda ? static_cast<T* const*>(theta_tab_.raw()) : reinterpret_cast<T* const*>(theta_ptr_.data());
  t.r = cuda ? static_cast<const T* const*>(r_tab_.raw()) : reinterpret_cast<const T* const*>(r_ptr_.data());
  t.f = cuda ? static_cast<const T* const*>(f_tab_.raw()) : reinterpret_cast<const T* const*>(f_ptr_.data());
  t.sizes = cuda ? static_cast<const int64_t*>(sizes_.raw()) : sizes_host_.data();
  return t;
}

FusedUpdate::FusedUpdate(std::vector<Tensor> params) : params_(std::move(params)) {
  if (params_.empty()) throw InputError("unlearn: the model has no parameters to update");
  device_ = params_[0].device();
  dtype_ = params_[0].dtype();
  for (const Tensor& p : params_) {
    if (p.device() != device_ || p.dtype() != dtype_ || !p.is_contiguous())
      throw InputError("unlearn: parameters must share one device and dtype and be contiguous");
    r_.push_back(Tensor::zeros(p.shape(), dtype_, device_));
    f_.push_back(Tensor::zeros(p.shape(), dtype_, device_));
    theta_ptr_.push_back(p.raw());
    r_ptr_.push_back(r_.back().raw());
    f_ptr_.push_back(f_.back().raw());
    sizes_host_.push_back(p.numel());
  }
  stats_ = Tensor::zeros({int64_t(count()) * 3}, dtype_, device_);
  coef_ = Tensor::zeros({int64_t(count()) * 2}, dtype_, device_);
  if (device_.is_cuda()) {
    theta_tab_ = device_table(theta_ptr_, device_);
    r_tab_ = device_table(r_ptr_, device_);
    f_tab_ = device_table(f_ptr_, device_);
    sizes_ = device_table(sizes_host_, device_);
    report_ = Tensor::zeros({int64_t(sizeof(kernels::HamuReport))}, DType::u8, device_);
  }
}

void FusedUpdate::zero(bool retain) {
  for (Tensor& t : retain ? r_ : f_) t.zero_();
}

void FusedUpdate::route_grads_to(bool retain) {
  zero(retain);
  std::vector<Tensor>& bufs = retain ? r_ : f_;
  for (size_t i = 0; i < params_.size(); ++i) params_[i].set_grad(bufs[i]);
}

void FusedUpdate::release_grads() {
  for (Tensor& p : params_) p.zero_grad();
}

void FusedUpdate::compute_stats() {
  dispatch("fused_update", params_[0], [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    const Tables<T> t = tables<T>();
    kernels::hamu_block_stats(ctx, count(), t.r, t.f, t.sizes, stats_.data<T>());
  });
}

std::vector<double> FusedUpdate::stats_host() const {
  Tensor s = stats_.to(Device{});
  if (s.dtype() == DType::f64) return s.to_vector<double>();
  std::vector<float> v = s.to_vector<float>();
  return std::vector<double>(v.begin(), v.end());
}

std::vector<double> FusedUpdate::coef_host() const {
  Tensor s = coef_.to(Device{});
  if (s.dtype() == DType::f64) return s.to_vector<double>();
  std::vector<float> v = s.to_vector<float>();
  return std::vector<double>(v.begin(), v.end());
}

kernels::HamuReport FusedUpdate::hamu_step(const kernels::HamuConfig& cfg) {
  kernels::HamuReport report;
  dispatch("fused_update", params_[0], [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::HamuReport* rep = device_.is_cuda() ? static_cast<kernels::HamuReport*>(report_.raw()) : &report;
    kernels::hamu_coefficients(ctx, cfg, count(), stats_.data<T>(), coef_.data<T>(), rep);
    const Tables<T> t = tables<T>();
    kernels::hamu_apply(ctx, count(), t.theta, t.r, t.f, t.sizes, coef_.data<T>());
  });
  if (device_.is_cuda()) {
    // The only transfer of the step: the report, after the apply pass in stream order.
    std::vector<uint8_t> bytes = report_.to_vector<uint8_t>();
    std::memcpy(&report, bytes.data(), sizeof report);
  }
  return report;
}

void FusedUpdate::apply(const std::vector<double>& coef) {
  if (coef.size() != size_t(2 * count())) throw Error("fused update: coefficient table has the wrong size");
  coef_.copy_(Tensor::from_doubles(coef, {int64_t(coef.size())}, dtype_));
  dispatch("fused_update", params_[0], [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    const Tables<T> t = tables<T>();
    kernels::hamu_apply(ctx, count(), t.theta, t.r, t.f, t.sizes, coef_.data<T>());
  });
}

void FusedUpdate::write_pseudo_grads(const std::vector<double>& coef, double scale) {
  for (int i = 0; i < count(); ++i) {
    Tensor g = Tensor::empty(params_[i].shape(), dtype_, device_);
    const double cr = -coef[2 * i] / scale, cf = -coef[2 * i + 1] / scale;
    dispatch("pseudo_grad", g, [&](const auto& ctx, auto tag) {
      using T = decltype(tag);
      kernels::axpby(ctx, g.numel(), T(cr), r_[i].template data<T>(), T(0), g.data<T>());
      kernels::axpby(ctx, g.numel(), T(cf), f_[i].template data<T>(), T(1), g.data<T>());
    });
    params_[i].set_grad(g);
  }
}

}  // namespace hamu
