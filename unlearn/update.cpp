// unlearn/update.cpp: pointer tables, gradient routing and the passes of the fused update (three launches, or one).
#include "unlearn/update.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

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

// Copies between the host and the blocks' memory, in the order of the context's stream.
void to_host(const kernels::CpuCtx&, void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void to_device(const kernels::CpuCtx&, void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void to_host_async(const kernels::CpuCtx&, void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void wait(const kernels::CpuCtx&) {}
#ifdef HAMU_CUDA
void to_host(const kernels::CudaCtx& c, void* dst, const void* src, size_t bytes) {
  kernels::cuda_memcpy_d2h(c, dst, src, bytes);
}
void to_device(const kernels::CudaCtx& c, void* dst, const void* src, size_t bytes) {
  kernels::cuda_memcpy_h2d(c, dst, src, bytes);
}
void to_host_async(const kernels::CudaCtx& c, void* dst, const void* src, size_t bytes) {
  kernels::cuda_memcpy_d2h_async(c, dst, src, bytes);
}
void wait(const kernels::CudaCtx& c) { kernels::cuda_synchronize(c); }
#endif

// The single-launch step where the backend has one (CUDA); false: run the three phases.
template <class T>
bool single_launch(const kernels::CpuCtx&, const kernels::HamuConfig&, int, T* const*, const T* const*,
                   const T* const*, const int64_t*, int64_t, double*, double*, kernels::HamuReport*) {
  return false;
}
#ifdef HAMU_CUDA
bool single_launch(const kernels::CudaCtx& c, const kernels::HamuConfig& cfg, int count, float* const* theta,
                   const float* const* r, const float* const* f, const int64_t* sizes, int64_t total, double* stats,
                   double* coef, kernels::HamuReport* report) {
  return kernels::hamu_fused_step(c, cfg, count, theta, r, f, sizes, total, stats, coef, report);
}
#endif

}  // namespace

int64_t single_launch_limit(const char* env_value) {
  if (!env_value || !*env_value) return kSingleLaunchDefault;
  int64_t x = 0;
  for (const char* p = env_value; *p; ++p) {
    if (*p < '0' || *p > '9') return kSingleLaunchDefault;
    const int d = *p - '0';
    if (x > (INT64_MAX - d) / 10) return kSingleLaunchDefault;  // too large for int64
    x = x * 10 + d;
  }
  return x;
}

// f(ctx, T{}) on the blocks' backend and element type, with the caller's stream where one is set.
template <class F> void FusedUpdate::run(F&& f) const {
  dispatch("fused_update", kind_, [&](const auto& ctx, auto tag) {
    auto c = ctx;
    if constexpr (!std::is_same_v<std::decay_t<decltype(ctx)>, kernels::CpuCtx>)
      if (use_stream_) c.stream = stream_;
    f(c, tag);
  });
}

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
  tables_to_device();
}

FusedUpdate::FusedUpdate(const std::vector<ExternalBlock>& blocks, Device device, DType dtype)
    : device_(device), dtype_(dtype) {
  if (blocks.empty()) throw InputError("fused update: no blocks");
  for (const ExternalBlock& b : blocks) {
    theta_ptr_.push_back(b.theta);
    r_ptr_.push_back(const_cast<void*>(b.r));
    f_ptr_.push_back(const_cast<void*>(b.f));
    sizes_host_.push_back(b.n);
  }
  tables_to_device();
}

// Statistics, coefficients (double whatever the blocks' dtype: kernels/kernels.h says why; raw bytes, as
// the engine's CUDA tensors are float only) and (CUDA) the report and the pointer tables on the device.
void FusedUpdate::tables_to_device() {
  for (int64_t n : sizes_host_) total_ += n;
  single_launch_limit_ = single_launch_limit(std::getenv("HAMU_FUSED_SINGLE_LAUNCH_MAX"));
  kind_ = Tensor::zeros({1}, dtype_, device_);
  stats_ = Tensor::zeros({int64_t(count()) * 3 * int64_t(sizeof(double))}, DType::u8, device_);
  coef_ = Tensor::zeros({int64_t(count()) * 2 * int64_t(sizeof(double))}, DType::u8, device_);
  if (device_.is_cuda()) {
    theta_tab_ = device_table(theta_ptr_, device_);
    r_tab_ = device_table(r_ptr_, device_);
    f_tab_ = device_table(f_ptr_, device_);
    sizes_ = device_table(sizes_host_, device_);
    report_ = Tensor::zeros({int64_t(sizeof(kernels::HamuReport))}, DType::u8, device_);
    // The zero fills ran on the device's own stream; a caller's stream must not overtake them.
    dispatch("fused_update", kind_, [](const auto& ctx, auto) { wait(ctx); });
  }
}

void FusedUpdate::zero(bool retain) {
  flush_stats();  // owed statistics are of the gradients as they were
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
  stats_owed_ = true;
  if (!single_launch_chosen()) flush_stats();
}

void FusedUpdate::flush_stats() const {
  if (!stats_owed_) return;
  stats_owed_ = false;
  run([&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    const Tables<T> t = tables<T>();
    kernels::hamu_block_stats(ctx, count(), t.r, t.f, t.sizes, stats_ptr());
  });
}

std::vector<double> FusedUpdate::stats_host() const {
  flush_stats();
  return host_copy(stats_);
}

std::vector<double> FusedUpdate::coef_host() const { return host_copy(coef_); }

// A host copy of one of the step's double buffers, after the kernels queued before it on the stream.
std::vector<double> FusedUpdate::host_copy(const Tensor& t) const {
  std::vector<double> out(size_t(t.numel()) / sizeof(double));
  run([&](const auto& ctx, auto) { to_host(ctx, out.data(), t.raw(), out.size() * sizeof(double)); });
  return out;
}

void FusedUpdate::hamu_step_async(const kernels::HamuConfig& cfg, kernels::HamuReport* host_report) {
  single_launch_used_ = false;
  run([&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    kernels::HamuReport* rep = device_.is_cuda() ? static_cast<kernels::HamuReport*>(report_.raw()) : host_report;
    const Tables<T> t = tables<T>();
    if (stats_owed_ &&
        single_launch(ctx, cfg, count(), t.theta, t.r, t.f, t.sizes, total_, stats_ptr(), coef_ptr(), rep)) {
      single_launch_used_ = true;
    } else {
      if (stats_owed_) kernels::hamu_block_stats(ctx, count(), t.r, t.f, t.sizes, stats_ptr());
      kernels::hamu_coefficients(ctx, cfg, count(), stats_ptr(), coef_ptr(), rep);
      kernels::hamu_apply(ctx, count(), t.theta, t.r, t.f, t.sizes, coef_ptr());
    }
    stats_owed_ = false;
    // The only transfer of the step: the report, after the apply pass in stream order.
    if (device_.is_cuda()) to_host_async(ctx, host_report, report_.raw(), sizeof(kernels::HamuReport));
  });
}

kernels::HamuReport FusedUpdate::hamu_step(const kernels::HamuConfig& cfg) {
  kernels::HamuReport report;
  hamu_step_async(cfg, &report);
  synchronize();
  return report;
}

void FusedUpdate::synchronize() const {
  run([](const auto& ctx, auto) { wait(ctx); });
}

void FusedUpdate::apply(const std::vector<double>& coef) {
  if (coef.size() != size_t(2 * count())) throw Error("fused update: coefficient table has the wrong size");
  run([&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    to_device(ctx, coef_.raw(), coef.data(), coef.size() * sizeof(double));
    const Tables<T> t = tables<T>();
    kernels::hamu_apply(ctx, count(), t.theta, t.r, t.f, t.sizes, coef_ptr());
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
