// kernels/cpu/profile.cpp: the backend-neutral half of kernels/perf.h: the speed switches and the per-op-kind
// profiler's timeline (wall clock for the CPU; CUDA events through kernels/cuda/profile.cu for a GPU).
//
// The timeline is a stack of kinds. Every push and pop is a mark (a clock reading or a recorded event);
// the interval between two marks belongs to the kind on top of the stack during it, so nested scopes
// take their time from the enclosing one and the kinds add up to the whole profiled span.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "kernels/kernels.h"
#include "kernels/perf.h"

namespace hamu::kernels {

// ---- speed switches --------------------------------------------------------------------------------

namespace {

bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return v[0] == '1' || v[0] == 'y' || v[0] == 'Y' || v[0] == 't' || v[0] == 'T';
}

bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::strcmp(v, value) == 0;
}

struct Switches {
  std::atomic<bool> tf32, deterministic, conv_find, bf16_attention, bf16_activations;
  Switches()
      : tf32(env_flag("HAMU_TF32", false)),
        deterministic(env_flag("HAMU_DETERMINISTIC", false)),
        conv_find(env_flag("HAMU_CUDNN_FIND", true)),
        bf16_attention(env_is("HAMU_ATTENTION", "bf16")),
        bf16_activations(env_flag("HAMU_BF16_ACTIVATIONS", false)) {}
};
Switches& switches() {
  static Switches s;
  return s;
}

}  // namespace

PerfOptions perf_options() {
  Switches& s = switches();
  PerfOptions o;
  o.tf32 = s.tf32.load(std::memory_order_relaxed);
  o.deterministic = s.deterministic.load(std::memory_order_relaxed);
  o.conv_find = s.conv_find.load(std::memory_order_relaxed);
  o.bf16_attention = s.bf16_attention.load(std::memory_order_relaxed);
  o.bf16_activations = s.bf16_activations.load(std::memory_order_relaxed);
  return o;
}

void set_perf_options(const PerfOptions& o) {
  Switches& s = switches();
  s.tf32.store(o.tf32);
  s.deterministic.store(o.deterministic);
  s.conv_find.store(o.conv_find);
  s.bf16_attention.store(o.bf16_attention);
  s.bf16_activations.store(o.bf16_activations);
}

// ---- kinds -------------------------------------------------------------------------------------------

const char* prof_kind_name(ProfKind k) {
  switch (k) {
    case ProfKind::conv_fwd: return "conv forward";
    case ProfKind::conv_bwd_data: return "conv backward data";
    case ProfKind::conv_bwd_filter: return "conv backward filter";
    case ProfKind::batchnorm: return "batchnorm";
    case ProfKind::relu: return "relu";
    case ProfKind::add: return "add (binary elementwise)";
    case ProfKind::fused_elementwise: return "fused BN+ReLU(+add)";
    case ProfKind::pooling: return "pooling";
    case ProfKind::gemm: return "gemm (linear, matmul)";
    case ProfKind::cross_entropy: return "cross-entropy";
    case ProfKind::reduction: return "reductions (sum, mean, norms)";
    case ProfKind::accumulate: return "gradient accumulation";
    case ProfKind::copy: return "copies (contiguous, concat, slices, fill)";
    case ProfKind::update: return "update (fused HAMU, optimizer)";
    case ProfKind::attention: return "attention (+ RoPE)";
    case ProfKind::norm: return "layer/RMS norm";
    case ProfKind::activation: return "activations (GELU, SwiGLU, dropout)";
    case ProfKind::embedding: return "embedding";
    case ProfKind::other_op: return "other ops";
    case ProfKind::host: return "outside ops (host, autograd, gaps)";
    case ProfKind::count: break;
  }
  return "?";
}

namespace {
bool starts(const char* s, const char* prefix) { return std::strncmp(s, prefix, std::strlen(prefix)) == 0; }
bool is(const char* s, const char* name) { return std::strcmp(s, name) == 0; }
}  // namespace

ProfKind prof_kind_of(const char* op) {
  if (!op) return ProfKind::other_op;
  // conv2d_bn_act: the forward with the frozen BatchNorm (+ add, + ReLU) as its epilogue, counted as the conv.
  if (is(op, "conv2d") || is(op, "conv2d_bn_act")) return ProfKind::conv_fwd;
  // The backward op runs both kernels; their own scopes split it (conv kernels), data is the remainder.
  if (starts(op, "conv2d_backward")) return ProfKind::conv_bwd_data;
  if (is(op, "fused_update") || is(op, "pseudo_grad") || is(op, "sgd") || is(op, "adamw")) return ProfKind::update;
  if (starts(op, "batch_norm_relu") || starts(op, "fused_")) return ProfKind::fused_elementwise;
  if (starts(op, "batch_norm")) return ProfKind::batchnorm;
  if (starts(op, "relu")) return ProfKind::relu;
  if (is(op, "add") || is(op, "sub") || is(op, "mul") || is(op, "div") || is(op, "maximum") || is(op, "minimum") ||
      is(op, "affine"))
    return ProfKind::add;
  if (starts(op, "max_pool2d") || starts(op, "avg_pool2d") || starts(op, "global_avg_pool")) return ProfKind::pooling;
  if (starts(op, "linear") || starts(op, "matmul")) return ProfKind::gemm;
  if (starts(op, "cross_entropy") || starts(op, "token_cross_entropy")) return ProfKind::cross_entropy;
  if (is(op, "sum") || is(op, "mean") || is(op, "max") || is(op, "argmax") || is(op, "dot") ||
      is(op, "sum_squares") || is(op, "sum_to") || is(op, "grad_norm") || is(op, "clip_grad_norm"))
    return ProfKind::reduction;
  if (is(op, "accumulate_grad")) return ProfKind::accumulate;
  if (starts(op, "causal_attention") || starts(op, "gqa_attention") || starts(op, "attention") || starts(op, "rope"))
    return ProfKind::attention;
  if (starts(op, "layer_norm") || starts(op, "rms_norm")) return ProfKind::norm;
  if (starts(op, "gelu") || starts(op, "swiglu") || starts(op, "dropout")) return ProfKind::activation;
  if (starts(op, "embedding")) return ProfKind::embedding;
  if (is(op, "contiguous") || is(op, "concat") || starts(op, "narrow") || is(op, "expand") || is(op, "fill_") ||
      is(op, "permute") || starts(op, "index_select0"))
    return ProfKind::copy;
  return ProfKind::other_op;
}

double ProfTable::ms_of(ProfKind k) const {
  for (const ProfRow& r : rows)
    if (r.kind == k) return r.ms;
  return 0;
}

int64_t ProfTable::calls_of(ProfKind k) const {
  for (const ProfRow& r : rows)
    if (r.kind == k) return r.calls;
  return 0;
}

// ---- timeline ----------------------------------------------------------------------------------------

namespace profile_detail {
std::atomic<bool> g_on{false};
}

namespace {

constexpr int kKinds = int(ProfKind::count);

struct Mark {
  double wall_ms;  // CPU profile: the clock reading
  int event;       // GPU profile: the event index
  ProfKind kind;   // the kind the interval ENDING at this mark belongs to
};

struct Timeline {
  std::mutex mu;
  bool running = false;
  int device = -1;
  std::thread::id owner;
  std::chrono::steady_clock::time_point t0;
  std::vector<ProfKind> stack;
  std::vector<Mark> marks;
  int64_t calls[kKinds] = {};
};
Timeline& timeline() {
  static Timeline t;
  return t;
}

double wall_ms(const Timeline& t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t.t0).count();
}

// Appends a mark that closes the interval of the current top kind. Called with the lock held.
void add_mark(Timeline& t) {
  Mark m{0.0, -1, t.stack.back()};
#ifdef HAMU_CUDA
  if (t.device >= 0) m.event = cuda_profile_mark(t.device);
  else m.wall_ms = wall_ms(t);
#else
  m.wall_ms = wall_ms(t);
#endif
  t.marks.push_back(m);
}

// Only the thread that began the profile, on the profiled device, is recorded (other threads' and devices'
// ops would interleave with the stack).
bool mine(const Timeline& t, int device) {
  return t.running && device == t.device && std::this_thread::get_id() == t.owner;
}

}  // namespace

namespace profile_detail {

void push(ProfKind k, int device) {
  Timeline& t = timeline();
  std::lock_guard<std::mutex> lock(t.mu);
  if (!mine(t, device)) return;
  add_mark(t);
  t.stack.push_back(k);
  t.calls[int(k)]++;
}

void pop(int device) {
  Timeline& t = timeline();
  std::lock_guard<std::mutex> lock(t.mu);
  if (!mine(t, device) || t.stack.size() <= 1) return;
  add_mark(t);
  t.stack.pop_back();
}

}  // namespace profile_detail

void profile_begin(int device) {
  Timeline& t = timeline();
  std::lock_guard<std::mutex> lock(t.mu);
  if (t.running) throw std::runtime_error("profile_begin: a profile is already running");
  t.running = true;
  t.device = device;
  t.owner = std::this_thread::get_id();
  t.stack.assign(1, ProfKind::host);
  t.marks.clear();
  for (int64_t& c : t.calls) c = 0;
#ifdef HAMU_CUDA
  if (device >= 0) cuda_profile_reset(device);
#endif
  t.t0 = std::chrono::steady_clock::now();
  add_mark(t);  // the start
  profile_detail::g_on.store(true);
}

ProfTable profile_end() {
  Timeline& t = timeline();
  std::lock_guard<std::mutex> lock(t.mu);
  if (!t.running) throw std::runtime_error("profile_end: no profile is running");
  profile_detail::g_on.store(false);
  t.stack.resize(1);
  add_mark(t);  // the end, closing the host interval
  t.running = false;
  ProfTable out;
  double ms[kKinds] = {};
#ifdef HAMU_CUDA
  if (t.device >= 0) {
    cuda_profile_sync(t.device);
    out.clock = "CUDA events on cuda:" + std::to_string(t.device);
    for (size_t i = 1; i < t.marks.size(); ++i)
      ms[int(t.marks[i].kind)] += cuda_profile_elapsed_ms(t.device, t.marks[i - 1].event, t.marks[i].event);
  }
#endif
  if (t.device < 0) {
    out.clock = "wall clock (CPU)";
    for (size_t i = 1; i < t.marks.size(); ++i) ms[int(t.marks[i].kind)] += t.marks[i].wall_ms - t.marks[i - 1].wall_ms;
  }
  for (int k = 0; k < kKinds; ++k) {
    out.total_ms += ms[k];
    if (ms[k] > 0 || t.calls[k] > 0) out.rows.push_back(ProfRow{ProfKind(k), ms[k], t.calls[k]});
  }
  std::sort(out.rows.begin(), out.rows.end(), [](const ProfRow& a, const ProfRow& b) { return a.ms > b.ms; });
  t.marks.clear();
  return out;
}

std::string format_profile(const ProfTable& t) {
  std::string s = "| op kind | ms | % of step | calls |\n|---|---:|---:|---:|\n";
  char buf[256];
  for (const ProfRow& r : t.rows) {
    std::snprintf(buf, sizeof buf, "| %s | %.3f | %.1f%% | %lld |\n", prof_kind_name(r.kind), r.ms,
                  t.total_ms > 0 ? 100.0 * r.ms / t.total_ms : 0.0, static_cast<long long>(r.calls));
    s += buf;
  }
  std::snprintf(buf, sizeof buf, "| **whole step** (%s) | %.3f | 100%% | |\n", t.clock.c_str(), t.total_ms);
  s += buf;
  return s;
}

}  // namespace hamu::kernels
