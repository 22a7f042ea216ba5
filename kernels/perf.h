// kernels/perf.h: the speed switches that trade exactness for time (TF32, non-deterministic cuDNN
// algorithms, algorithm search by measurement) and the per-op-kind profiler (wall clock on the CPU, CUDA
// events on the GPU) that tells where a step's time goes.
//
// Both are process-wide and backend-neutral (this header needs no CUDA). The profiler costs one relaxed
// atomic load per op when it is off.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace hamu::kernels {

// ---- speed switches --------------------------------------------------------------------------------
// Defaults keep float32 results comparable with the CPU: no TF32. Convolution algorithms are chosen per
// shape by measurement (as PyTorch's cudnn.benchmark does) among those with exact float32 math; with
// `deterministic` only algorithms cuDNN marks deterministic are eligible (bitwise-repeatable GPU runs; the
// backward-filter algorithms that accumulate with atomics are excluded). Environment overrides read once
// at first use: HAMU_TF32=1, HAMU_DETERMINISTIC=1, HAMU_CUDNN_FIND=0 (heuristic choice instead of
// measurement), HAMU_ATTENTION=bf16, HAMU_BF16_ACTIVATIONS=1.
struct PerfOptions {
  bool tf32 = false;           // TF32 tensor-core math in cuBLAS (CUBLAS_TF32_TENSOR_OP_MATH) and cuDNN
                               // (CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION); ~3e-4 relative error
  bool deterministic = false;  // only deterministic cuDNN algorithms
  bool conv_find = true;       // measure cuDNN algorithms per shape (false: cuDNN's heuristic order)
  bool bf16_attention = false; // fused attention in bfloat16 on the tensor cores (kernels/cuda/attention_tc.cu;
                               // ~1e-2 relative error); set by --base-dtype bfloat16 and HAMU_ATTENTION=bf16
  bool bf16_activations = false;  // the float32 activations ops keep for their backward are stored in bfloat16
                                  // (engine SavedTensor: half their memory); --base-dtype bfloat16 and
                                  // HAMU_BF16_ACTIVATIONS=1
};
PerfOptions perf_options();
// Read by the CUDA kernels at every call (a context's own tf32 flag also turns TF32 on); convolution plans
// are keyed by these options, so a change takes effect at the next call.
void set_perf_options(const PerfOptions& o);

// ---- profiler ----------------------------------------------------------------------------------------
enum class ProfKind : int {
  conv_fwd,
  conv_bwd_data,
  conv_bwd_filter,
  batchnorm,
  relu,
  add,
  fused_elementwise,  // BN+ReLU(+add) and other fused passes
  pooling,
  gemm,
  cross_entropy,
  reduction,
  accumulate,  // gradient accumulation (+=)
  copy,        // contiguous, concat, slices, fills
  update,      // fused HAMU update, optimizer steps
  attention,   // causal / grouped-query attention, RoPE (language models)
  norm,        // LayerNorm, RMSNorm
  activation,  // GELU, SwiGLU, dropout
  embedding,   // embedding lookups and their gradients
  other_op,    // any other kernel
  host,        // time outside every op: autograd bookkeeping, launch gaps, host synchronisation
  count
};
const char* prof_kind_name(ProfKind k);
// The kind of an engine op name (the names passed to engine dispatch(): "conv2d", "batch_norm_backward", ...).
ProfKind prof_kind_of(const char* op);

struct ProfRow {
  ProfKind kind;
  double ms = 0;
  int64_t calls = 0;
};
struct ProfTable {
  std::string clock;  // "wall clock (CPU)" or "CUDA events on cuda:N"
  double total_ms = 0;
  std::vector<ProfRow> rows;  // every kind that took time or was called, largest first
  double ms_of(ProfKind k) const;
  int64_t calls_of(ProfKind k) const;
};

namespace profile_detail {
extern std::atomic<bool> g_on;
void push(ProfKind k, int device);
void pop(int device);
}  // namespace profile_detail

// Starts a profile of the calling thread's ops on `device` (-1: the CPU, timed by the wall clock; N: the
// CUDA device N, timed by events on its context's stream). Throws if one is already running.
void profile_begin(int device);
// Ends it (synchronising the device) and returns the time per kind; the kinds nest (a kernel scope inside
// an op scope takes its interval from the op), so the rows add up to the total.
ProfTable profile_end();
inline bool profile_on() { return profile_detail::g_on.load(std::memory_order_relaxed); }
// Markdown: | op kind | ms | % of step | calls |
std::string format_profile(const ProfTable& t);

// One op's interval. Placed by the engine's dispatch (op names) and inside kernels that split an op
// (convolution backward data / filter).
class ProfScope {
 public:
  ProfScope(ProfKind k, int device) {
    if (profile_on()) start(k, device);
  }
  ProfScope(const char* op, int device) {
    if (profile_on()) start(prof_kind_of(op), device);
  }
  ~ProfScope() {
    if (active_) profile_detail::pop(device_);
  }
  ProfScope(const ProfScope&) = delete;
  ProfScope& operator=(const ProfScope&) = delete;

 private:
  void start(ProfKind k, int device) {
    active_ = true;
    device_ = device;
    profile_detail::push(k, device);
  }
  bool active_ = false;
  int device_ = -1;
};

#ifdef HAMU_CUDA
// ---- CUDA graphs -------------------------------------------------------------------------------------
// Capture of everything queued on a device context's stream between begin and end, replayed as one graph
// launch (kernels/cuda/graph.cu). Capture runs in relaxed mode; a host synchronisation, a pageable copy or
// any failing call inside it invalidates the capture: cuda_graph_end then returns null and says why, and the
// caller runs the work the ordinary way. A replay reuses the addresses seen at capture, so the caller keeps
// every buffer the step touched alive and unused by others between replays.
void cuda_graph_begin(int device);
void* cuda_graph_end(int device, std::string* why);  // an instantiated graph, or null
void cuda_graph_launch(int device, void* graph);     // asynchronous on the context's stream
void cuda_graph_destroy(void* graph);
// Ends a capture abandoned by an exception (the graph, if any, is discarded); no-op when not capturing.
void cuda_graph_abort(int device);

// The CUDA side of the profiler (kernels/cuda/profile.cu): an event recorded on the device's stream, its
// index in a reusable pool; elapsed milliseconds between two recorded events (after profile_sync).
int cuda_profile_mark(int device);
void cuda_profile_sync(int device);
double cuda_profile_elapsed_ms(int device, int from, int to);
void cuda_profile_reset(int device);
#endif

}  // namespace hamu::kernels
