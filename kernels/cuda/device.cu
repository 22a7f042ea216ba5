// kernels/cuda/device.cu: device management (count, contexts with stream/cuBLAS/cuDNN handles, memory,
// copies), error reporting and the persistent per-stream scratch of the reduction kernels.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>

#include "kernels/cuda/cuda_common.cuh"

namespace hamu::kernels {
namespace cuda_detail {

namespace {

constexpr int kMaxDevices = 16;

std::string fmt_bytes(size_t b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%zu bytes (%.1f MiB)", b, double(b) / (1024.0 * 1024.0));
  return buf;
}

struct DeviceSlot {
  std::once_flag info_once;
  DeviceInfo info;
  std::once_flag ctx_once;
  CudaCtx ctx;
  std::once_flag side_once;
  CudaCtx side;
  // The reduction scratch of each stream that ran a reduction on this device (see scratch() below). Node-based
  // and never erased, so a returned reference stays valid while other streams add theirs.
  std::mutex scratch_mu;
  std::map<std::pair<void*, std::thread::id>, std::unique_ptr<Scratch>> scratch;
};

DeviceSlot& slot(int device) {
  static DeviceSlot slots[kMaxDevices];
  if (device < 0 || device >= kMaxDevices)
    throw std::runtime_error("cuda: device index " + std::to_string(device) + " out of range");
  return slots[device];
}

bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("HAMU_CUDA_SYNC");
    return v && v[0] == '1';
  }();
  return on;
}

thread_local int tl_current_device = -1;

}  // namespace

void throw_cuda(cudaError_t e, const char* op, const char* call) {
  cudaGetLastError();  // clear a sticky-free error so the next call is not blamed for this one
  throw std::runtime_error(std::string(op) + ": " + call + " failed: " + cudaGetErrorName(e) + " (" +
                           cudaGetErrorString(e) + ")");
}

void throw_cublas(cublasStatus_t s, const char* op, const char* call) {
  throw std::runtime_error(std::string(op) + ": " + call + " failed: " + cublasGetStatusName(s) + " (" +
                           cublasGetStatusString(s) + ")");
}

#ifdef HAMU_CUDNN
void throw_cudnn(cudnnStatus_t s, const char* op, const char* call) {
  throw std::runtime_error(std::string(op) + ": " + call + " failed: " + cudnnGetErrorString(s));
}
#endif

void launch_check(const CudaCtx& ctx, const char* kernel) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw_cuda(e, kernel, "kernel launch");
  if (sync_after_launch()) {
    // Not while the stream is being captured: synchronising a capturing stream is illegal and invalidates the
    // capture, so HAMU_CUDA_SYNC=1 would otherwise turn every CUDA-graph capture into the ordinary path.
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream_of(ctx), &st) != cudaSuccess) {
      cudaGetLastError();
      st = cudaStreamCaptureStatusNone;
    }
    if (st != cudaStreamCaptureStatusNone) return;
    e = cudaStreamSynchronize(stream_of(ctx));
    if (e != cudaSuccess) throw_cuda(e, kernel, "cudaStreamSynchronize after launch (HAMU_CUDA_SYNC=1)");
  }
}

void use_device(int device) {
  if (tl_current_device == device) return;
  HAMU_CU("cuda set device", cudaSetDevice(device));
  tl_current_device = device;
}

const DeviceInfo& device_info(int device) {
  DeviceSlot& s = slot(device);
  std::call_once(s.info_once, [&] {
    cudaDeviceProp p;
    HAMU_CU("cuda device properties", cudaGetDeviceProperties(&p, device));
    s.info.sm_count = p.multiProcessorCount > 0 ? p.multiProcessorCount : 1;
    s.info.max_threads_per_sm = p.maxThreadsPerMultiProcessor > 0 ? p.maxThreadsPerMultiProcessor : 2048;
    s.info.smem_optin = p.sharedMemPerBlockOptin;
    s.info.cc_major = p.major;
    s.info.name = p.name;
  });
  return s.info;
}

namespace {

// One allocation: the grid-reduction partials (4096: more than any grid_for() gives), then red_counter and,
// 64 bytes further, mt_counters.
constexpr size_t kRedPartialsBytes = 4096 * sizeof(double);
constexpr size_t kScratchBytes = kRedPartialsBytes + 128;

// A stream's scratch, made at its first reduction. The allocation is zeroed in that stream's order and waited
// for (the counters must read zero at the first kernel), which is illegal while the stream is being captured:
// a first use inside a capture is refused rather than the capture invalidated.
std::unique_ptr<Scratch> make_scratch(const CudaCtx& ctx) {
  const cudaStream_t st = stream_of(ctx);
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  HAMU_CU("cuda scratch", cudaStreamIsCapturing(st, &cap));
  if (cap != cudaStreamCaptureStatusNone) {
    char name[64];
    std::snprintf(name, sizeof name, "%p", static_cast<void*>(st));
    throw std::runtime_error("cuda scratch: the first reduction on stream " + std::string(name) + " of cuda:" +
                             std::to_string(ctx.device) +
                             " is inside a CUDA-graph capture, where its scratch memory cannot be allocated and "
                             "zeroed; run one step (or any reduction) on this stream before capturing it");
  }
  use_device(ctx);
  auto s = std::make_unique<Scratch>();
  void* p = nullptr;
  HAMU_CU("cuda scratch alloc", cudaMalloc(&p, kScratchBytes));
  cudaError_t e = cudaMemsetAsync(p, 0, kScratchBytes, st);
  if (e == cudaSuccess) e = cudaStreamSynchronize(st);
  if (e != cudaSuccess) {
    cudaFree(p);
    throw_cuda(e, "cuda scratch init", "cudaMemsetAsync + cudaStreamSynchronize on the stream");
  }
  char* c = static_cast<char*>(p);
  s->red_partials = reinterpret_cast<double*>(c);
  s->red_counter = reinterpret_cast<unsigned*>(c + kRedPartialsBytes);
  s->mt_counters = reinterpret_cast<unsigned*>(c + kRedPartialsBytes + 64);
  return s;
}

// Locks the device's table and finds (or makes) the scratch of ctx's stream. The key is the stream handle, plus
// the calling thread for cudaStreamPerThread (one handle value, a different stream in every thread). A new one
// is made outside the lock: its zeroing waits for the stream, which may wait (an event) for work another thread
// queues only after its own reduction, i.e. after taking this lock.
std::pair<std::unique_lock<std::mutex>, Scratch*> locked_scratch(const CudaCtx& ctx) {
  DeviceSlot& s = slot(ctx.device);
  const std::pair<void*, std::thread::id> key{
      ctx.stream, stream_of(ctx) == cudaStreamPerThread ? std::this_thread::get_id() : std::thread::id()};
  std::unique_lock<std::mutex> lock(s.scratch_mu);
  auto it = s.scratch.find(key);
  if (it != s.scratch.end()) return {std::move(lock), it->second.get()};
  lock.unlock();
  std::unique_ptr<Scratch> made = make_scratch(ctx);
  lock.lock();
  std::unique_ptr<Scratch>& e = s.scratch[key];
  if (!e) {
    e = std::move(made);
  } else {
    // Another thread made this stream's first while we made ours (one stream used from two threads): ours was
    // never used and its zeroing is complete.
    cudaFree(made->red_partials);
    cudaGetLastError();
  }
  return {std::move(lock), e.get()};
}

}  // namespace

Scratch& scratch(const CudaCtx& ctx) { return *locked_scratch(ctx).second; }

}  // namespace cuda_detail

using namespace cuda_detail;

// ------------------------------------------------------------------------------------------------

int cuda_device_count() {
  // No driver, no device or a driver too old all mean "no GPU" here, never an exception.
  static const int count = [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

CudaCtx& cuda_context(int device) {
  const int count = cuda_device_count();
  if (device < 0 || device >= count)
    throw std::runtime_error("cuda_context: device " + std::to_string(device) + " not present (" +
                             std::to_string(count) + " visible)");
  DeviceSlot& s = slot(device);
  std::call_once(s.ctx_once, [&] {
    use_device(device);
    CudaCtx c;
    c.device = device;
    cudaStream_t st = nullptr;
    HAMU_CU("cuda_context", cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    c.stream = st;
    cublasHandle_t h = nullptr;
    HAMU_CUBLAS("cuda_context", cublasCreate(&h));
    HAMU_CUBLAS("cuda_context", cublasSetStream(h, st));
    HAMU_CUBLAS("cuda_context", cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
    // A workspace of our own for the handle's life (NVIDIA's recommended size: 32 MiB on Hopper and later,
    // 4 MiB before), as PyTorch sets one: the GEMMs then find the same workspace in a CUDA-graph capture as
    // outside it (no allocation inside the capture, the same algorithm choice), so graphed steps stay bitwise
    // equal to ordinary ones, and repeated captures do not each grow cuBLAS's own pool.
    int major = 0;
    HAMU_CU("cuda_context", cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    const size_t blas_ws = major >= 9 ? size_t(32) << 20 : size_t(4) << 20;
    void* ws = nullptr;
    HAMU_CU("cuda_context cuBLAS workspace", cudaMalloc(&ws, blas_ws));
    HAMU_CUBLAS("cuda_context", cublasSetWorkspace(h, ws, blas_ws));
    c.blas = h;
#ifdef HAMU_CUDNN
    // cuDNN loads its sub-libraries here; if that fails, convolutions fall back to the built-in
    // im2col + cuBLAS path (ctx.dnn stays null) rather than the whole GPU backend failing.
    cudnnHandle_t d = nullptr;
    cudnnStatus_t ds = cudnnCreate(&d);
    if (ds == CUDNN_STATUS_SUCCESS) {
      ds = cudnnSetStream(d, st);
      if (ds != CUDNN_STATUS_SUCCESS) cudnnDestroy(d);
    }
    if (ds == CUDNN_STATUS_SUCCESS) {
      c.dnn = d;
    } else {
      std::fprintf(stderr, "hamu: cuDNN unavailable on cuda:%d (%s); convolutions use im2col + cuBLAS\n", device,
                   cudnnGetErrorString(ds));
    }
#endif
    s.ctx = c;
    // The own stream's reduction scratch now, not at its first use: its initialisation synchronises the stream,
    // which is illegal while the stream is being captured (a step whose first reduction is inside a capture).
    scratch(c);
  });
  use_device(device);
  return s.ctx;
}

CudaCtx& cuda_side_context(int device) {
  const CudaCtx& main = cuda_context(device);
  DeviceSlot& s = slot(device);
  std::call_once(s.side_once, [&] {
    CudaCtx c;
    c.device = device;
    c.tf32 = main.tf32;
    cudaStream_t st = nullptr;
    HAMU_CU("cuda_side_context", cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    c.stream = st;
    s.side = c;
  });
  return s.side;
}

void cuda_stream_wait(const CudaCtx& waiter, const CudaCtx& signaler) {
  if (waiter.stream == signaler.stream) return;
  use_device(signaler);
  // One event per device and thread, recorded again for every wait: a wait already queued waits for the record
  // that preceded it, whatever is recorded later (so no event per call, as an all-reduce bucket would need).
  constexpr int kMaxDevices = 64;
  thread_local cudaEvent_t events[kMaxDevices] = {};
  if (signaler.device < 0 || signaler.device >= kMaxDevices)
    throw std::invalid_argument("cuda_stream_wait: device " + std::to_string(signaler.device) + " out of range");
  cudaEvent_t& ev = events[signaler.device];
  if (!ev) HAMU_CU("cuda_stream_wait", cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  HAMU_CU("cuda_stream_wait", cudaEventRecord(ev, stream_of(signaler)));
  HAMU_CU("cuda_stream_wait", cudaStreamWaitEvent(stream_of(waiter), ev, 0));
}

void* cuda_malloc(int device, size_t bytes) {
  if (bytes == 0) return nullptr;
  use_device(device);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    throw std::runtime_error("cudaMalloc: out of memory on cuda:" + std::to_string(device) + " asking for " +
                             fmt_bytes(bytes) + "; " + fmt_bytes(free_b) + " free of " + fmt_bytes(total_b));
  }
  if (e != cudaSuccess) throw_cuda(e, ("cuda_malloc of " + fmt_bytes(bytes)).c_str(), "cudaMalloc");
  return p;
}

void cuda_free(int device, void* ptr) {
  if (!ptr) return;
  use_device(device);
  HAMU_CU("cuda_free", cudaFree(ptr));
}

void cuda_memcpy_h2d(const CudaCtx& ctx, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  use_device(ctx);
  // On the stream, so it lands after the kernels queued before it; synchronous on return.
  HAMU_CU("cuda_memcpy_h2d", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_of(ctx)));
  HAMU_CU("cuda_memcpy_h2d", cudaStreamSynchronize(stream_of(ctx)));
}

void cuda_memcpy_d2h(const CudaCtx& ctx, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  use_device(ctx);
  HAMU_CU("cuda_memcpy_d2h", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_of(ctx)));
  HAMU_CU("cuda_memcpy_d2h", cudaStreamSynchronize(stream_of(ctx)));
}

void cuda_memcpy_d2d(const CudaCtx& ctx, void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  use_device(ctx);
  HAMU_CU("cuda_memcpy_d2d", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_of(ctx)));
}

void cuda_memcpy_d2h_async(const CudaCtx& ctx, void* dst_pinned, const void* src, size_t bytes) {
  if (bytes == 0) return;
  use_device(ctx);
  HAMU_CU("cuda_memcpy_d2h_async",
          cudaMemcpyAsync(dst_pinned, src, bytes, cudaMemcpyDeviceToHost, stream_of(ctx)));
}

void cuda_memcpy_h2d_async(const CudaCtx& ctx, void* dst, const void* src_pinned, size_t bytes) {
  if (bytes == 0) return;
  use_device(ctx);
  HAMU_CU("cuda_memcpy_h2d_async",
          cudaMemcpyAsync(dst, src_pinned, bytes, cudaMemcpyHostToDevice, stream_of(ctx)));
}

void* cuda_host_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) bytes = 1;
  const cudaError_t e = cudaMallocHost(&p, bytes);
  if (e != cudaSuccess) throw_cuda(e, ("cuda_host_alloc_pinned of " + fmt_bytes(bytes)).c_str(), "cudaMallocHost");
  return p;
}

void cuda_host_free_pinned(void* ptr) {
  if (!ptr) return;
  HAMU_CU("cuda_host_free_pinned", cudaFreeHost(ptr));
}

void cuda_synchronize(const CudaCtx& ctx) {
  use_device(ctx);
  HAMU_CU("cuda_synchronize", cudaStreamSynchronize(stream_of(ctx)));
}

const char* cuda_device_name(int device) {
  if (device < 0 || device >= cuda_device_count()) return "none";
  return device_info(device).name.c_str();
}

int cuda_pointer_device(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged ? a.device : -1;
}

size_t cuda_free_bytes(int device) {
  use_device(device);
  size_t free_b = 0, total_b = 0;
  HAMU_CU("cuda_free_bytes", cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

namespace cuda_detail {

MtScratch ensure_mt_scratch(const CudaCtx& ctx, int count) {
  auto [lock, sp] = locked_scratch(ctx);
  Scratch& s = *sp;
  // Partials: at most kMtMaxChunks full chunks plus one partial chunk per tensor, 3 doubles each
  // (hamu_block_stats); see reduce_mt.cu. Sized here with the same constants.
  const int64_t need_partials = 3 * (kMtMaxChunks + int64_t(count) + 1);
  const int64_t need_prefix = int64_t(count) + 2;  // prefix[0..count] and the chunk size
  if (s.mt_partials_cap < need_partials || s.mt_prefix_cap < need_prefix) use_device(ctx.device);
  // The old buffers are retired, never freed: a CUDA graph captured earlier (a graphed step with fewer tensors)
  // replays their addresses, and queued kernels may still read them. Freeing them would hand that memory to
  // the next allocation while a replay writes into it; retiring costs at most the current size again (each
  // growth doubles), and needs no stream synchronisation, so a growth inside a capture is legal too.
  void* p = nullptr;
  if (s.mt_partials_cap < need_partials) {
    const int64_t cap = need_partials * 2;
    HAMU_CU("cuda mt scratch grow", cudaMalloc(&p, size_t(cap) * sizeof(double)));
    if (s.mt_partials) s.retired.push_back(s.mt_partials);
    s.mt_partials = static_cast<double*>(p);
    s.mt_partials_cap = cap;
  }
  if (s.mt_prefix_cap < need_prefix) {
    const int64_t cap = need_prefix * 2;
    HAMU_CU("cuda mt scratch grow", cudaMalloc(&p, size_t(cap) * sizeof(int64_t)));
    if (s.mt_prefix) s.retired.push_back(s.mt_prefix);
    s.mt_prefix = static_cast<int64_t*>(p);
    s.mt_prefix_cap = cap;
  }
  // Read under the lock: another thread on the same stream may grow them as soon as it is released.
  return {s.mt_partials, s.mt_prefix, s.mt_counters};
}

}  // namespace cuda_detail
}  // namespace hamu::kernels
