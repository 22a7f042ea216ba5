// unlearn/update.h: the fused two-pass update shared by HAMU and every baseline (DESIGN.md kernels §1).
//
// Each unlearning step ends with gradients r (retain objective) and f (forget objective) in persistent
// per-parameter buffers. Every method's step is theta_l += coef_r[l]*r_l + coef_f[l]*f_l:
//   pass 1  hamu_block_stats: (<r,r>, <f,f>, <r,f>) per block, one multi-tensor launch;
//   coef    HAMU: hamu_coefficients on the device (clipping folded in); baselines: on the host from the
//           statistics (global norms and dot products only);
//   pass 2  hamu_apply: one multi-tensor launch.
// Pointer tables are built once, so a step allocates nothing and, for HAMU, never waits for the host
// except for its one small report copy.
//
// Small HAMU steps on CUDA (total <= single_launch_limit(), ~1M parameters; off by default, see below) are
// launch-bound: there
// compute_stats() only marks the statistics as owed, and hamu_step(_async) runs all three phases as one
// cooperative launch (kernels::hamu_fused_step; the same bits). Whatever reads the statistics first
// (stats_host, apply's callers, zero) runs the owed pass 1 instead, so r and f must not change between
// compute_stats() and that reader except through this class.
//
// The blocks are either the engine's parameters (the runner: r and f buffers owned here) or caller-owned
// memory (the C API, capi/: theta, r, f given as raw pointers, nothing allocated for them), and the
// kernels run on the device's own stream or on a stream the caller sets; both go through the same
// tables, kernels and coefficient code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/hamu_math.h"

namespace hamu {

// One caller-owned block: theta (updated in place), r and f, n elements each, all on one device.
struct ExternalBlock {
  void* theta = nullptr;
  const void* r = nullptr;
  const void* f = nullptr;
  int64_t n = 0;
};

// The largest total (elements) whose CUDA HAMU step runs as one cooperative launch, from the value of the
// environment variable HAMU_FUSED_SINGLE_LAUNCH_MAX (null: unset): decimal digits only, 0 turns the single
// launch off; unset, empty or anything else gives kSingleLaunchDefault.
//
// Off (0) by default until a GPU run has passed its parity tests (bench/RESULTS.md, "GPU run owed", item 10):
// the kernel has never run, and a cooperative grid is the one kind of kernel here that can hang rather than
// merely be wrong; the three launches are GPU-verified. The candidate once it passes is 8M (2^23, i.e.
// HAMU_FUSED_SINGLE_LAUNCH_MAX=8388608 today): at 24 bytes per parameter an H100/H200 step moves ~200 MB
// there in ~50 us, so the two launches saved (each a gap plus a drain tail of a few us) are still >= ~10% of
// it, and far more at 1M (~6 us of traffic: the 18-31% of copy bandwidth). Above it they are noise,
// and the three launches' dynamic work counter balances uneven chunks better than the single launch's
// static chunk assignment. bench_hamu_update prints the single launch at every size, to set the line by
// measurement.
constexpr int64_t kSingleLaunchDefault = 0;
int64_t single_launch_limit(const char* env_value);

class FusedUpdate {
 public:
  // params: the blocks (leaf tensors, one dtype and device). Allocates zeroed r and f buffers.
  explicit FusedUpdate(std::vector<Tensor> params);
  // Caller-owned blocks of `dtype` on `device` (validated by the caller): only the statistics,
  // coefficients, report and pointer tables are allocated. params()/retain_grads()/forget_grads() are
  // empty and gradient routing does not apply.
  FusedUpdate(const std::vector<ExternalBlock>& blocks, Device device, DType dtype);

  int count() const { return int(sizes_host_.size()); }
  Device device() const { return device_; }
  // CUDA: run every kernel and copy of the step on `stream` (a cudaStream_t; null is the default
  // stream) instead of the device's own stream. Ignored on the CPU.
  void set_stream(void* stream) { stream_ = stream; use_stream_ = true; }
  const std::vector<Tensor>& params() const { return params_; }
  std::vector<Tensor>& retain_grads() { return r_; }
  std::vector<Tensor>& forget_grads() { return f_; }

  // Makes each parameter's .grad the zeroed r (or f) buffer, so the next backward accumulates there.
  void route_grads_to(bool retain);
  // Detaches the buffers from the parameters again (so optimizers or later passes do not see them).
  void release_grads();
  void zero(bool retain);

  // Pass 1 into the device-side stats tensor [count, 3] (owed, not run, where the single launch is chosen:
  // see the top of this file).
  void compute_stats();
  // Host copy of the stats (synchronises; baselines and tests).
  std::vector<double> stats_host() const;
  // The single-launch choice: on CUDA when the total is at most `limit` elements (the constructor takes
  // single_launch_limit(getenv("HAMU_FUSED_SINGLE_LAUNCH_MAX"))); tests and benches set it.
  void set_single_launch_limit(int64_t limit) { single_launch_limit_ = limit; }
  int64_t single_launch_max() const { return single_launch_limit_; }
  bool single_launch_chosen() const { return device_.is_cuda() && total_ <= single_launch_limit_; }
  // Whether the last HAMU step ran as the single launch (false after a fallback to the three launches).
  bool single_launch_used() const { return single_launch_used_; }
  int64_t total() const { return total_; }
  // HAMU's coefficient phase on the parameters' device, then pass 2. Returns the report (one small copy).
  kernels::HamuReport hamu_step(const kernels::HamuConfig& cfg);
  // The same without waiting: the report is copied to `host_report` in stream order (CUDA: an async copy,
  // so host_report should be pinned memory and is valid after the stream synchronises; CPU: written
  // before return). No allocation and no synchronisation: capturable in a CUDA graph once the kernels'
  // scratch exists (after one step with this block count).
  void hamu_step_async(const kernels::HamuConfig& cfg, kernels::HamuReport* host_report);
  // Waits for the stream the kernels run on (CUDA; nothing on the CPU).
  void synchronize() const;
  // Pass 2 with host-given coefficients [count][2] (baselines).
  void apply(const std::vector<double>& coef);
  // pseudo-gradient for optimizers: p.grad = -(coef_r r + coef_f f)/scale for every block (allocates grads).
  void write_pseudo_grads(const std::vector<double>& coef, double scale);
  // The coefficients of the last hamu_step (host copy; synchronises).
  std::vector<double> coef_host() const;

 private:
  template <class T> struct Tables {
    T* const* theta;
    const T* const* r;
    const T* const* f;
    const int64_t* sizes;
  };
  template <class T> Tables<T> tables() const;
  template <class F> void run(F&& f) const;  // dispatch on the blocks' backend, on the chosen stream
  void tables_to_device();
  std::vector<double> host_copy(const Tensor& t) const;
  // Runs an owed pass 1 (const: it completes what compute_stats() promised).
  void flush_stats() const;

  double* stats_ptr() const { return static_cast<double*>(stats_.raw()); }
  double* coef_ptr() const { return static_cast<double*>(coef_.raw()); }

  std::vector<Tensor> params_, r_, f_;
  Tensor stats_, coef_, report_;           // on the device; stats and coefficients: double, as raw bytes
  Tensor kind_;                            // one element of the blocks' dtype and device: picks the backend
  Tensor theta_tab_, r_tab_, f_tab_, sizes_;  // pointer tables and sizes on the device (u8 / raw)
  std::vector<void*> theta_ptr_, r_ptr_, f_ptr_;
  std::vector<int64_t> sizes_host_;
  Device device_;
  DType dtype_;
  void* stream_ = nullptr;
  bool use_stream_ = false;
  int64_t total_ = 0;  // elements over all blocks
  int64_t single_launch_limit_ = kSingleLaunchDefault;
  mutable bool stats_owed_ = false;
  bool single_launch_used_ = false;
};

}  // namespace hamu
