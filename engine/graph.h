// engine/graph.h: a step captured once and replayed (CUDA graphs), and the guard that finds host
// synchronisations inside a step.
//
// A captured graph replays the kernels and copies that one run of a step queued, with the addresses and
// the scalar arguments of that run. So a step is capturable only when (1) nothing in it waits for the
// device or moves data between host and device synchronously (Tensor::item, to_vector, from_vector,
// to(Device) across devices: each would end the capture), (2) nothing the host decides in it depends on
// data the step computes, and (3) it reads its inputs from buffers that stay where they are (the caller
// copies each step's data into them before the replay). (1) is enforced here: HostSyncGuard turns every
// such call into an Error naming it. (2) and (3) are the caller's part.
//
// StepGraph holds one captured step. On CUDA: a graph of the device stream (kernels/perf.h) with a
// private memory pool (engine/allocator.h), so that nothing allocated between replays can take memory
// the graph writes to. On the CPU there is nothing to capture: the step's closure is kept and every
// replay runs it again under a HostSyncGuard, which is how the CPU tests prove a step is capturable
// and that it reads only its fixed buffers.
#pragma once
#include <functional>
#include <string>

#include "engine/tensor.h"

namespace hamu {

// While one is alive on this thread, the host transfers listed above throw Error("... inside a captured
// step ..."), on any device (on the CPU they are memcpys, but the same call on a GPU would synchronise).
class HostSyncGuard {
 public:
  HostSyncGuard();
  ~HostSyncGuard();
  HostSyncGuard(const HostSyncGuard&) = delete;
  HostSyncGuard& operator=(const HostSyncGuard&) = delete;
};
// Throws when a HostSyncGuard is alive on this thread (engine internals: called by the transfers).
void check_no_host_sync(const char* what);
// Suspends the guard for a read of data that lives on the host on every backend (labels of a CPU batch:
// on a GPU the same code takes its device branch), so that the CPU's emulated capture flags only reads
// that a GPU run would turn into synchronisations.
class HostReadScope {
 public:
  HostReadScope();
  ~HostReadScope();
  HostReadScope(const HostReadScope&) = delete;
  HostReadScope& operator=(const HostReadScope&) = delete;

 private:
  int saved_;
};

// Host memory a device copies into without the host waiting (CUDA: pinned; CPU: ordinary).
class HostBuffer {
 public:
  HostBuffer(size_t bytes, Device device);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  void* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

// Queues a copy of `src` (contiguous, any dtype) into host memory `dst` (a HostBuffer's) in the order of
// src's device stream; the bytes are there after the stream synchronises (CPU: at once). Capturable.
void copy_to_host_async(void* dst, const Tensor& src);
// Reads one f32 or f64 scalar (of `dtype`) that copy_to_host_async put at `at`, as a double.
double read_host_scalar(const void* at, DType dtype);
// The reverse: host memory `src` (a HostBuffer's, numel * dtype size bytes) into `dst` (contiguous), in stream
// order; a graph replays it reading `src` as it is then, so the host may change it between replays (after
// the previous replay finished). Capturable.
void copy_from_host_async(Tensor& dst, const void* src);
// Queues a copy of `src` into `dst` (same shape, dtype and device; dst contiguous) on the device stream.
void copy_into(Tensor& dst, const Tensor& src);
// Waits for the device's stream (nothing on the CPU).
void device_synchronize(Device device);

class StepGraph {
 public:
  explicit StepGraph(Device device);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Captures `step` (which must queue the same work every time it runs). CUDA: the closure runs once with
  // its kernels recorded, not executed; returns false with *why when the capture failed (a host transfer,
  // an allocation failure or any failing call inside it), leaving nothing captured: the caller then runs
  // its steps the ordinary way. CPU: keeps the closure; always succeeds.
  bool capture(std::function<void()> step, std::string* why);
  // Queues one replay (CUDA: asynchronous; CPU: runs the closure under a HostSyncGuard).
  void replay();
  bool captured() const { return exec_ != nullptr || bool(cpu_step_); }
  // Whether a replay runs the closure's host code again (the CPU) or only the captured device work (CUDA):
  // host-side effects of the step (counters) must then be applied by the caller after each replay.
  bool replays_host_code() const { return !device_.is_cuda(); }
  // Drops the graph and gives its pool back.
  void reset();
  Device device() const { return device_; }

 private:
  Device device_;
  void* exec_ = nullptr;  // cudaGraphExec_t
  int pool_ = 0;
  std::function<void()> cpu_step_;
};

}  // namespace hamu
