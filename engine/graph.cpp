// engine/graph.cpp: StepGraph (capture and replay), the host-transfer guard and the asynchronous copies a
// captured step uses.
#include "engine/graph.h"

#include <cstdlib>
#include <cstring>

#include "engine/allocator.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"

namespace hamu {
namespace {
thread_local int g_guards = 0;
}  // namespace

HostSyncGuard::HostSyncGuard() { ++g_guards; }
HostSyncGuard::~HostSyncGuard() { --g_guards; }
HostReadScope::HostReadScope() : saved_(g_guards) { g_guards = 0; }
HostReadScope::~HostReadScope() { g_guards = saved_; }

void check_no_host_sync(const char* what) {
  if (g_guards > 0)
    throw Error(std::string(what) +
                " inside a captured step: it moves data between host and device and waits for it, which a CUDA "
                "graph cannot hold (keep the value on the device, or read it after the replay)");
}

HostBuffer::HostBuffer(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (bytes == 0) bytes = 1;
#ifdef HAMU_CUDA
  if (device.is_cuda()) {
    data_ = kernels::cuda_host_alloc_pinned(bytes);
    std::memset(data_, 0, bytes);
    return;
  }
#endif
  data_ = std::calloc(1, bytes);
  if (!data_) throw Error("host buffer: out of memory allocating " + std::to_string(bytes) + " bytes");
}

HostBuffer::~HostBuffer() {
#ifdef HAMU_CUDA
  if (device_.is_cuda()) {
    kernels::cuda_host_free_pinned(data_);
    return;
  }
#endif
  std::free(data_);
}

double read_host_scalar(const void* at, DType dtype) {
  if (dtype == DType::f64) {
    double v;
    std::memcpy(&v, at, sizeof v);
    return v;
  }
  if (dtype != DType::f32) throw Error(std::string("read_host_scalar: a scalar of dtype ") + dtype_name(dtype));
  float v;
  std::memcpy(&v, at, sizeof v);
  return v;
}

void copy_to_host_async(void* dst, const Tensor& src) {
  if (!src.is_contiguous()) throw Error("copy_to_host_async: the source must be contiguous");
  const size_t bytes = size_t(src.numel()) * dtype_size(src.dtype());
  if (bytes == 0) return;
#ifdef HAMU_CUDA
  if (src.is_cuda()) {
    kernels::cuda_memcpy_d2h_async(kernels::cuda_context(src.device().index), dst, src.raw(), bytes);
    return;
  }
#endif
  std::memcpy(dst, src.raw(), bytes);
}

void copy_from_host_async(Tensor& dst, const void* src) {
  if (!dst.is_contiguous()) throw Error("copy_from_host_async: the destination must be contiguous");
  const size_t bytes = size_t(dst.numel()) * dtype_size(dst.dtype());
  if (bytes == 0) return;
#ifdef HAMU_CUDA
  if (dst.is_cuda()) {
    kernels::cuda_memcpy_h2d_async(kernels::cuda_context(dst.device().index), dst.raw(), src, bytes);
    return;
  }
#endif
  std::memcpy(dst.raw(), src, bytes);
}

void copy_into(Tensor& dst, const Tensor& src) {
  if (dst.shape() != src.shape() || dst.dtype() != src.dtype() || dst.device() != src.device())
    throw Error("copy_into: the source (" + shape_str(src.shape()) + " " + dtype_name(src.dtype()) + " on " +
                src.device().str() + ") does not match the destination (" + shape_str(dst.shape()) + " " +
                dtype_name(dst.dtype()) + " on " + dst.device().str() + ")");
  dst.copy_(src);  // same device: a stream-ordered device copy on CUDA, a memcpy on the CPU
}

void device_synchronize(Device device) {
#ifdef HAMU_CUDA
  if (device.is_cuda()) kernels::cuda_synchronize(kernels::cuda_context(device.index));
#else
  (void)device;
#endif
}

StepGraph::StepGraph(Device device) : device_(device) {}

StepGraph::~StepGraph() { reset(); }

void StepGraph::reset() {
#ifdef HAMU_CUDA
  if (exec_) {
    device_synchronize(device_);  // a replay may still be running
    kernels::cuda_graph_destroy(exec_);
    exec_ = nullptr;
  }
#endif
  if (pool_) {
    allocator_pool_release(device_, pool_);
    pool_ = 0;
  }
  cpu_step_ = nullptr;
}

bool StepGraph::capture(std::function<void()> step, std::string* why) {
  reset();
  if (!device_.is_cuda()) {
    cpu_step_ = std::move(step);
    return true;
  }
#ifdef HAMU_CUDA
  std::string reason;
  pool_ = allocator_pool_begin(device_);  // first: when it throws, nothing is capturing yet
  try {
    kernels::cuda_graph_begin(device_.index);
    HostSyncGuard guard;
    step();
    allocator_pool_end(device_);
    exec_ = kernels::cuda_graph_end(device_.index, &reason);
  } catch (const std::exception& e) {
    allocator_pool_end(device_);
    kernels::cuda_graph_abort(device_.index);
    reason = std::string("capture aborted: ") + e.what();
    exec_ = nullptr;
  }
  if (!exec_) {
    reset();
    if (why) *why = reason;
    return false;
  }
  return true;
#else
  (void)step;
  if (why) *why = "this build has no CUDA backend";
  return false;
#endif
}

void StepGraph::replay() {
  if (cpu_step_) {
    HostSyncGuard guard;
    cpu_step_();
    return;
  }
#ifdef HAMU_CUDA
  if (exec_) {
    kernels::cuda_graph_launch(device_.index, exec_);
    return;
  }
#endif
  throw Error("StepGraph::replay: nothing captured");
}

}  // namespace hamu
