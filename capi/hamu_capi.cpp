// capi/hamu_capi.cpp: libhamu, the C API of capi/hamu.h over unlearn/ (the method registry and the fused
// update, FusedUpdate, on caller-owned pointers) and kernels/ (the hardness GEMM, ghost and row kernels).
// Every entry point catches everything: exceptions become a status and a message, never cross the ABI.
#include "capi/hamu.h"
#include "capi/testing.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "unlearn/method_registry.h"
#include "unlearn/options.h"
#include "unlearn/runner.h"
#include "unlearn/update.h"

using hamu::Device;
using hamu::FusedUpdate;
namespace kn = hamu::kernels;

struct hamu_plan;

struct hamu_context {
  Device device;
  std::string name;
  void* stream = nullptr;
  std::string error;
  // hamu_step's plan, kept while the caller passes the same blocks.
  std::vector<hamu_block> cached_blocks;
  hamu_plan* cached = nullptr;
};

struct hamu_plan {
  hamu_context* ctx = nullptr;
  std::unique_ptr<FusedUpdate> update;
  kn::HamuReport* pinned = nullptr;  // CUDA: the async report lands here (pinned host memory)
  kn::HamuReport host_report;        // CPU and synchronous steps
  hamu_report last{};
  bool last_async = false;
  int32_t last_projected = 0;
};

namespace {

// An error with its status, thrown inside the library and turned into a return value at the boundary.
struct ApiError {
  int status;
  std::string message;
};

[[noreturn]] void fail(int status, std::string message) { throw ApiError{status, std::move(message)}; }

thread_local std::string tl_error;  // errors of calls without a context

void set_error(hamu_context* ctx, const std::string& msg) {
  if (ctx) ctx->error = msg;
  else tl_error = msg;
}

bool mentions_out_of_memory(const std::string& s) {
  return s.find("out of memory") != std::string::npos || s.find("cudaErrorMemoryAllocation") != std::string::npos;
}

// Runs f, mapping every exception onto a status and the context's message.
template <class F> int guarded(hamu_context* ctx, const char* fn, F&& f) {
  try {
    return f();
  } catch (const ApiError& e) {
    set_error(ctx, std::string(fn) + ": " + e.message);
    return e.status;
  } catch (const hamu::InputError& e) {
    set_error(ctx, std::string(fn) + ": " + e.what());
    return HAMU_ERR_INVALID_ARGUMENT;
  } catch (const std::bad_alloc&) {
    set_error(ctx, std::string(fn) + ": out of memory");
    return HAMU_ERR_OUT_OF_MEMORY;
  } catch (const hamu::Error& e) {
    set_error(ctx, std::string(fn) + ": " + e.what());
    return mentions_out_of_memory(e.what()) ? HAMU_ERR_OUT_OF_MEMORY : HAMU_ERR_INTERNAL;
  } catch (const std::exception& e) {
    // The CUDA layer throws std::runtime_error naming the failed call.
    set_error(ctx, std::string(fn) + ": " + e.what());
    return mentions_out_of_memory(e.what()) ? HAMU_ERR_OUT_OF_MEMORY : HAMU_ERR_RUNTIME;
  } catch (...) {
    set_error(ctx, std::string(fn) + ": unknown exception");
    return HAMU_ERR_INTERNAL;
  }
}

void need(const void* p, const char* what) {
  if (!p) fail(HAMU_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

// f(ctx) on the context's backend, on hamu's own stream (hardness) or the caller's (the step).
template <class F> void on_backend(const hamu_context& c, bool caller_stream, F&& f) {
  if (!c.device.is_cuda()) {
    f(kn::CpuCtx{});
    return;
  }
#ifdef HAMU_CUDA
  kn::CudaCtx k = kn::cuda_context(c.device.index);
  if (caller_stream) k.stream = c.stream;
  f(k);
#else
  (void)caller_stream;
  fail(HAMU_ERR_UNSUPPORTED, "this build has no CUDA backend");
#endif
}

void wait_for(const kn::CpuCtx&) {}
#ifdef HAMU_CUDA
void wait_for(const kn::CudaCtx& k) { kn::cuda_synchronize(k); }
#endif

// A caller pointer to float data: non-null, 4-byte aligned, on the context's device (as far as the build
// can tell: the CUDA runtime knows device, managed and registered memory; a CPU build cannot check).
void check_pointer(const hamu_context& c, const void* p, const std::string& what) {
  need(p, what.c_str());
  if (reinterpret_cast<uintptr_t>(p) % alignof(float) != 0)
    fail(HAMU_ERR_INVALID_ARGUMENT, what + " is not 4-byte aligned (float32 data)");
#ifdef HAMU_CUDA
  const int dev = kn::cuda_pointer_device(p);
  if (c.device.is_cuda() && dev != c.device.index)
    fail(HAMU_ERR_DEVICE_MISMATCH, what + (dev < 0 ? " is host memory" : " is memory of cuda:" + std::to_string(dev)) +
                                       ", the context is for " + c.name);
  if (!c.device.is_cuda() && dev >= 0)
    fail(HAMU_ERR_DEVICE_MISMATCH, what + " is memory of cuda:" + std::to_string(dev) + ", the context is for cpu");
#endif
}

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r) || r > (int64_t(1) << 62))
    fail(HAMU_ERR_INVALID_ARGUMENT, std::string(what) + ": sizes overflow");
  return r;
}

hamu_report to_c(const kn::HamuReport& r, int32_t projected) {
  hamu_report o;
  o.kappa = r.kappa;
  o.kappa1 = r.kappa1;
  o.kappa2 = r.kappa2;
  o.retain_norm = r.retain_norm;
  o.forget_norm = r.forget_norm;
  o.retain_scale = r.retain_scale;
  o.forget_scale = r.forget_scale;
  o.angle_deg = r.angle_deg;
  o.feasibility_margin = r.feasibility_margin;
  o.stopping_margin = r.stopping_margin;
  o.n_direct = r.n_direct;
  o.n_rectified = r.n_rectified;
  o.n_colinear = r.n_colinear;
  o.n_infeasible = r.n_infeasible;
  o.n_collateral = r.n_collateral;
  o.n_blocks = r.n_blocks;
  o.nonfinite = r.nonfinite;
  o.criterion_met = r.criterion_met;
  o.applied = r.applied;
  o.projected = projected;
  return o;
}

// The step options as a run's options, validated by the same checks as `hamu unlearn`.
hamu::UnlearnOptions step_options(const hamu_step_config& cfg) {
  if (cfg.grad_dtype == HAMU_DTYPE_BF16)
    fail(HAMU_ERR_UNSUPPORTED, "bf16 gradients are not supported (the kernels are float32): convert to float32");
  if (cfg.grad_dtype != HAMU_DTYPE_F32) fail(HAMU_ERR_INVALID_ARGUMENT, "grad_dtype: unknown dtype code");
  need(cfg.method, "cfg->method");
  hamu::UnlearnOptions opt;
  opt.method = hamu::find_method(cfg.method);
  if (!opt.method)
    fail(HAMU_ERR_INVALID_ARGUMENT, std::string("unknown method '") + cfg.method + "' (choose " + hamu::method_list() + ")");
  opt.params.lr = cfg.lr;
  opt.params.clip = cfg.clip;
  opt.params.paper_compat = cfg.paper_compat != 0;
  opt.ratio = cfg.ratio;
  opt.fixed_radius = cfg.fixed_radius != 0;
  opt.radius = cfg.radius;
  if (cfg.scope != HAMU_SCOPE_LAYER && cfg.scope != HAMU_SCOPE_GLOBAL)
    fail(HAMU_ERR_INVALID_ARGUMENT, "scope: " + std::to_string(cfg.scope) + " is not HAMU_SCOPE_LAYER or HAMU_SCOPE_GLOBAL");
  opt.scope = cfg.scope == HAMU_SCOPE_GLOBAL ? hamu::HamuScope::global : hamu::HamuScope::layer;
  switch (cfg.split) {
    case HAMU_SPLIT_GRAD_NORM: opt.split = hamu::ConstraintSplit::grad_norm; break;
    case HAMU_SPLIT_UNIFORM: opt.split = hamu::ConstraintSplit::uniform; break;
    case HAMU_SPLIT_SOFTMAX_DP: opt.split = hamu::ConstraintSplit::softmax_dp; break;
    default: fail(HAMU_ERR_INVALID_ARGUMENT, "split: " + std::to_string(cfg.split) + " is not a HAMU_SPLIT_* value");
  }
  opt.continue_on_infeasible = cfg.continue_on_infeasible != 0;
  opt.stop_on_criterion = cfg.stop_on_criterion != 0;
  opt.optimizer = hamu::OptimizerKind::sgd;  // theta moves by exactly the step
  opt.steps = 1;
  if (!std::isfinite(opt.params.clip)) fail(HAMU_ERR_INVALID_ARGUMENT, "clip: must be a finite number >= 0");
  hamu::validate_unlearn_options(opt, 1, 1);  // lr, clip, the method's own checks (ratio, radius)
  return opt;
}

hamu_plan* make_plan(hamu_context* ctx, const hamu_block* blocks, int64_t n) {
  need(blocks, "blocks");
  if (n < 1) fail(HAMU_ERR_INVALID_ARGUMENT, "n: the block count must be >= 1, got " + std::to_string(n));
  if (n > (int64_t(1) << 30)) fail(HAMU_ERR_INVALID_ARGUMENT, "n: " + std::to_string(n) + " blocks is absurdly many");
  std::vector<hamu::ExternalBlock> ext(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const hamu_block& b = blocks[i];
    const std::string at = "blocks[" + std::to_string(i) + "]";
    if (b.count < 1) fail(HAMU_ERR_INVALID_ARGUMENT, at + ".count must be >= 1, got " + std::to_string(b.count));
    checked_mul(b.count, int64_t(sizeof(float)), (at + ".count").c_str());
    check_pointer(*ctx, b.param, at + ".param");
    check_pointer(*ctx, b.retain_grad, at + ".retain_grad");
    check_pointer(*ctx, b.forget_grad, at + ".forget_grad");
    ext[size_t(i)] = {b.param, b.retain_grad, b.forget_grad, b.count};
  }
  auto plan = std::make_unique<hamu_plan>();
  plan->ctx = ctx;
  plan->update = std::make_unique<FusedUpdate>(ext, ctx->device, hamu::DType::f32);
  plan->update->set_stream(ctx->stream);
#ifdef HAMU_CUDA
  if (ctx->device.is_cuda()) plan->pinned = static_cast<kn::HamuReport*>(kn::cuda_host_alloc_pinned(sizeof(kn::HamuReport)));
#endif
  return plan.release();
}

void free_plan(hamu_plan* plan) {
  if (!plan) return;
  try {
    if (plan->update) plan->update->synchronize();  // nothing of ours may still run on the caller's stream
  } catch (...) {
  }
#ifdef HAMU_CUDA
  if (plan->pinned) {
    try {
      kn::cuda_host_free_pinned(plan->pinned);
    } catch (...) {
    }
  }
#endif
  delete plan;
}

// One step: exactly the runner's take_step for the sgd optimizer (the method's own step where it takes
// one, else its coefficients from the host statistics and the apply pass), or, asynchronously, HAMU's
// own step without its wait.
int plan_step(hamu_plan* plan, const hamu_step_config* cfg, hamu_report* report, hamu_block_stats* per_block) {
  need(cfg, "cfg");
  const hamu::UnlearnOptions opt = step_options(*cfg);
  const hamu::Method& method = *opt.method;
  FusedUpdate& update = *plan->update;
  update.set_stream(plan->ctx->stream);  // the context's stream as of now (hamu_context_set_stream)
  const bool async = !report && !per_block && method.is_hamu() && plan->pinned;
  update.compute_stats();
  hamu::StepDecision d;
  if (async) {
    update.hamu_step_async(hamu::hamu_config(opt), plan->pinned);
    plan->last_async = true;
    plan->last_projected = 0;
    return HAMU_OK;
  }
  if (std::optional<hamu::StepDecision> own = method.own_step(opt, update)) {
    d = *own;
  } else {
    d = method.coefficients(opt, update.count(), update.stats_host());
    if (d.report.applied && !d.report.nonfinite) update.apply(d.coef);
  }
  plan->last = to_c(d.report, d.projected ? 1 : 0);
  plan->last_async = false;
  if (report) *report = plan->last;
  if (per_block) {
    const std::vector<double> st = update.stats_host();
    const bool applied = d.report.applied && !d.report.nonfinite;
    const std::vector<double> coef = !applied ? std::vector<double>() : method.is_hamu() ? update.coef_host() : d.coef;
    for (int i = 0; i < update.count(); ++i) {
      hamu_block_stats& s = per_block[i];
      s.retain_sq = st[size_t(3 * i)];
      s.forget_sq = st[size_t(3 * i + 1)];
      s.dot = st[size_t(3 * i + 2)];
      s.coef_retain = applied ? coef[size_t(2 * i)] : 0.0;
      s.coef_forget = applied ? coef[size_t(2 * i + 1)] : 0.0;
    }
  }
  return d.report.applied && !d.report.nonfinite ? HAMU_OK : HAMU_SKIPPED;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Version, status, context

extern "C" {

HAMU_API int hamu_version(void) { return HAMU_API_VERSION; }

HAMU_API const char* hamu_status_name(int status) {
  switch (status) {
    case HAMU_OK: return "HAMU_OK";
    case HAMU_SKIPPED: return "HAMU_SKIPPED";
    case HAMU_ERR_INVALID_ARGUMENT: return "HAMU_ERR_INVALID_ARGUMENT";
    case HAMU_ERR_UNSUPPORTED: return "HAMU_ERR_UNSUPPORTED";
    case HAMU_ERR_DEVICE_MISMATCH: return "HAMU_ERR_DEVICE_MISMATCH";
    case HAMU_ERR_OUT_OF_MEMORY: return "HAMU_ERR_OUT_OF_MEMORY";
    case HAMU_ERR_RUNTIME: return "HAMU_ERR_RUNTIME";
    case HAMU_ERR_INTERNAL: return "HAMU_ERR_INTERNAL";
  }
  return "unknown";
}

HAMU_API int hamu_context_create(const char* device, hamu_context** out) {
  return guarded(nullptr, "hamu_context_create", [&] {
    need(out, "out");
    *out = nullptr;
    need(device, "device");
    const std::string d = device;
    const bool cuda_spelling = d == "cuda" || (d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.size() <= 8 &&
                                               d.find_first_not_of("0123456789", 5) == std::string::npos);
    if (d != "cpu" && !cuda_spelling) fail(HAMU_ERR_INVALID_ARGUMENT, "device '" + d + "' is not cpu, cuda or cuda:N");
#ifndef HAMU_CUDA
    if (cuda_spelling) fail(HAMU_ERR_UNSUPPORTED, "device " + d + ": this libhamu is built without CUDA (make CUDA=1 lib)");
#endif
    auto ctx = std::make_unique<hamu_context>();
    try {
      ctx->device = Device::parse(d);
    } catch (const hamu::InputError& e) {
      fail(HAMU_ERR_UNSUPPORTED, e.what());  // the spelling is right: the device is not there
    }
    ctx->name = ctx->device.str();
    *out = ctx.release();
    return HAMU_OK;
  });
}

HAMU_API void hamu_context_destroy(hamu_context* ctx) {
  if (!ctx) return;
  free_plan(ctx->cached);
  delete ctx;
}

HAMU_API const char* hamu_context_device(const hamu_context* ctx) { return ctx ? ctx->name.c_str() : ""; }

HAMU_API int hamu_context_set_stream(hamu_context* ctx, void* stream) {
  return guarded(ctx, "hamu_context_set_stream", [&] {
    need(ctx, "ctx");
    ctx->stream = stream;
    return HAMU_OK;
  });
}

HAMU_API int hamu_context_synchronize(hamu_context* ctx) {
  return guarded(ctx, "hamu_context_synchronize", [&] {
    need(ctx, "ctx");
    on_backend(*ctx, true, [](const auto& k) { wait_for(k); });
    return HAMU_OK;
  });
}

HAMU_API const char* hamu_last_error(const hamu_context* ctx) { return ctx ? ctx->error.c_str() : tl_error.c_str(); }

// ------------------------------------------------------------------------------------------------
// Methods and the step

HAMU_API int hamu_method_count(void) {
  try {
    return int(hamu::method_names().size());
  } catch (...) {
    return 0;
  }
}

HAMU_API const char* hamu_method_name(int i) {
  try {
    const std::vector<std::string>& names = hamu::method_names();
    return i >= 0 && size_t(i) < names.size() ? names[size_t(i)].c_str() : nullptr;
  } catch (...) {
    return nullptr;
  }
}

HAMU_API void hamu_step_config_init(hamu_step_config* cfg) {
  if (!cfg) return;
  const hamu::UnlearnOptions d;
  std::memset(cfg, 0, sizeof *cfg);
  cfg->method = "hamu-q";
  cfg->lr = d.params.lr;
  cfg->ratio = d.ratio;
  cfg->clip = d.params.clip;
  cfg->scope = HAMU_SCOPE_LAYER;
  cfg->split = HAMU_SPLIT_GRAD_NORM;
  cfg->radius = d.radius;
  cfg->grad_dtype = HAMU_DTYPE_F32;
}

HAMU_API int hamu_plan_create(hamu_context* ctx, const hamu_block* blocks, int64_t n, hamu_plan** out) {
  return guarded(ctx, "hamu_plan_create", [&] {
    need(ctx, "ctx");
    need(out, "out");
    *out = nullptr;
    *out = make_plan(ctx, blocks, n);
    return HAMU_OK;
  });
}

HAMU_API void hamu_plan_destroy(hamu_plan* plan) { free_plan(plan); }

HAMU_API int64_t hamu_plan_blocks(const hamu_plan* plan) { return plan ? plan->update->count() : 0; }

HAMU_API int hamu_plan_step(hamu_plan* plan, const hamu_step_config* cfg, hamu_report* report,
                            hamu_block_stats* per_block) {
  return guarded(plan ? plan->ctx : nullptr, "hamu_plan_step", [&] {
    need(plan, "plan");
    return plan_step(plan, cfg, report, per_block);
  });
}

HAMU_API int hamu_plan_last_report(const hamu_plan* plan, hamu_report* report) {
  return guarded(plan ? plan->ctx : nullptr, "hamu_plan_last_report", [&] {
    need(plan, "plan");
    need(report, "report");
    *report = plan->last_async ? to_c(*plan->pinned, plan->last_projected) : plan->last;
    return HAMU_OK;
  });
}

HAMU_API int hamu_step(hamu_context* ctx, const hamu_block* blocks, int64_t n, const hamu_step_config* cfg,
                       hamu_report* report, hamu_block_stats* per_block) {
  return guarded(ctx, "hamu_step", [&] {
    need(ctx, "ctx");
    need(blocks, "blocks");
    const bool same = ctx->cached && n == int64_t(ctx->cached_blocks.size()) &&
                      std::equal(blocks, blocks + n, ctx->cached_blocks.begin(), [](const hamu_block& a, const hamu_block& b) {
                        return a.param == b.param && a.retain_grad == b.retain_grad && a.forget_grad == b.forget_grad &&
                               a.count == b.count;
                      });
    if (!same) {
      hamu_plan* fresh = make_plan(ctx, blocks, n);  // validates before the old plan goes
      free_plan(ctx->cached);
      ctx->cached = fresh;
      ctx->cached_blocks.assign(blocks, blocks + n);
    }
    return plan_step(ctx->cached, cfg, report, per_block);
  });
}

}  // extern "C"

// ------------------------------------------------------------------------------------------------
// Hardness of a Linear layer on caller-owned captures

namespace {

int64_t g_scratch_floats = int64_t(64) << 20;  // 256 MiB of float32 scratch at most (capi/testing.h)

struct LinearDims {
  int64_t in, out, t, nf, nr;
};

hamu::Tensor scratch(const hamu_context& c, int64_t n) { return hamu::Tensor::empty({std::max<int64_t>(n, 1)}, hamu::DType::f32, c.device); }

// Samples per tile when each sample needs `per_sample` floats and `fixed` floats are shared.
int64_t tile_of(int64_t n, int64_t per_sample) { return std::clamp<int64_t>(g_scratch_floats / std::max<int64_t>(per_sample, 1), 1, n); }

// Per-sample gradient norms of n samples (out[i] = ||sum_t g_{i,t} a_{i,t}^T||): ghost (two T x T Grams
// per sample) or materialised, as hamu hardness's add_sample_norms.
template <class C>
void linear_norms(const C& ctx, const hamu_context& c, const LinearDims& d, bool ghost, const float* a, const float* g,
                  int64_t n, float* out) {
  const int64_t t = d.t, oi = d.out * d.in;
  kn::fill(ctx, n, 0.0f, out);
  const int64_t bs = tile_of(n, ghost ? 2 * t * t : oi);
  hamu::Tensor ws = scratch(c, ghost ? 2 * bs * t * t : bs * oi);
  float* w = ws.data<float>();
  for (int64_t s0 = 0; s0 < n; s0 += bs) {
    const int64_t m = std::min(bs, n - s0);
    const float* as = a + s0 * t * d.in;
    const float* gs = g + s0 * t * d.out;
    if (ghost) {
      float* ga = w;
      float* gg = w + m * t * t;
      kn::gemm_batched(ctx, false, true, t, t, d.in, 1.0f, as, d.in, t * d.in, as, d.in, t * d.in, 0.0f, ga, t, t * t, m);
      kn::gemm_batched(ctx, false, true, t, t, d.out, 1.0f, gs, d.out, t * d.out, gs, d.out, t * d.out, 0.0f, gg, t, t * t, m);
      kn::segment_rowdot(ctx, m, t, t, ga, gg, out + s0);
    } else {
      kn::gemm_batched(ctx, true, false, d.out, d.in, t, 1.0f, gs, d.out, t * d.out, as, d.in, t * d.in, 0.0f, w, d.in, oi, m);
      kn::segment_rowdot(ctx, m, 1, oi, w, w, out + s0);
    }
  }
  kn::unary(ctx, kn::Unary::sqrt, n, out, out);
}

// Materialised per-sample gradients P [m, out*in] of samples [s0, s0+m).
template <class C>
void materialise(const C& ctx, const LinearDims& d, const hamu_linear_samples& s, int64_t s0, int64_t m, float* p) {
  const int64_t t = d.t;
  kn::gemm_batched(ctx, true, false, d.out, d.in, t, 1.0f, s.g + s0 * t * d.out, d.out, t * d.out, s.a + s0 * t * d.in,
                   d.in, t * d.in, 0.0f, p, d.in, d.out * d.in, m);
}

// K [nf, nr] (row stride nr), tiled over forget and retain samples.
template <class C>
void linear_k(const C& ctx, const hamu_context& c, const LinearDims& d, bool ghost, const hamu_linear_samples& f,
              const hamu_linear_samples& r, float* k) {
  const int64_t t = d.t, oi = d.out * d.in;
  if (!ghost) {
    // K = P_f P_r^T, written straight into K's tile (ldc = nr).
    const int64_t br = tile_of(d.nr, 2 * oi), bf = tile_of(d.nf, 2 * oi);
    hamu::Tensor pr = scratch(c, br * oi), pf = scratch(c, bf * oi);
    for (int64_t i0 = 0; i0 < d.nr; i0 += br) {
      const int64_t mr = std::min(br, d.nr - i0);
      materialise(ctx, d, r, i0, mr, pr.data<float>());
      for (int64_t j0 = 0; j0 < d.nf; j0 += bf) {
        const int64_t mf = std::min(bf, d.nf - j0);
        materialise(ctx, d, f, j0, mf, pf.data<float>());
        kn::gemm(ctx, false, true, mf, mr, oi, 1.0f, pf.data<float>(), oi, pr.data<float>(), oi, 0.0f, k + j0 * d.nr + i0,
                 d.nr);
      }
    }
    return;
  }
  // K[j,i] = sum_{t,s} (A_f A_r^T)[jt, is] (G_f G_r^T)[jt, is]: two Gram GEMMs and the Hadamard reduction
  // per tile, into a tile of K that is then copied into place.
  const int64_t br = tile_of(d.nr, 2 * t * t), bf = tile_of(d.nf, 2 * t * t * br);
  hamu::Tensor gram = scratch(c, 2 * bf * t * br * t), kt = scratch(c, bf * br);
  for (int64_t i0 = 0; i0 < d.nr; i0 += br) {
    const int64_t nr = std::min(br, d.nr - i0), mr = nr * t;
    for (int64_t j0 = 0; j0 < d.nf; j0 += bf) {
      const int64_t nf = std::min(bf, d.nf - j0), mf = nf * t;
      float* ga = gram.data<float>();
      float* gg = ga + mf * mr;
      kn::gemm(ctx, false, true, mf, mr, d.in, 1.0f, f.a + j0 * t * d.in, d.in, r.a + i0 * t * d.in, d.in, 0.0f, ga, mr);
      kn::gemm(ctx, false, true, mf, mr, d.out, 1.0f, f.g + j0 * t * d.out, d.out, r.g + i0 * t * d.out, d.out, 0.0f, gg, mr);
      kn::fill(ctx, nf * nr, 0.0f, kt.data<float>());
      kn::ghost_hadamard_reduce(ctx, nf, nr, t, t, ga, gg, mr, kt.data<float>());
      kn::copy_rows(ctx, nf, nr, kt.data<float>(), nr, k + j0 * d.nr + i0, d.nr);
    }
  }
  (void)oi;
}

// H = (1/nr) sum_i G_i^T A_i, then kappa_j = sum_t g_{j,t} . (H a_{j,t}) (the Linear rule's row form).
template <class C>
void linear_row_form(const C& ctx, const hamu_context& c, const LinearDims& d, const hamu_linear_samples& f,
                     const hamu_linear_samples& r, float* h, float* kappa) {
  const int64_t t = d.t;
  kn::gemm(ctx, true, false, d.out, d.in, d.nr * t, float(1.0 / double(d.nr)), r.g, d.out, r.a, d.in, 0.0f, h, d.in);
  if (!kappa) return;
  kn::fill(ctx, d.nf, 0.0f, kappa);
  const int64_t bf = tile_of(d.nf, t * d.out);
  hamu::Tensor q = scratch(c, bf * t * d.out);
  for (int64_t j0 = 0; j0 < d.nf; j0 += bf) {
    const int64_t m = std::min(bf, d.nf - j0);
    kn::gemm(ctx, false, true, m * t, d.out, d.in, 1.0f, f.a + j0 * t * d.in, d.in, h, d.in, 0.0f, q.data<float>(), d.out);
    kn::segment_rowdot(ctx, m, t, d.out, q.data<float>(), f.g + j0 * t * d.out, kappa + j0);
  }
}

void check_samples(const hamu_context& c, const hamu_linear_samples* s, const LinearDims& d, const char* side) {
  need(s, side);
  const std::string p = side;
  if (s->n < 1) fail(HAMU_ERR_INVALID_ARGUMENT, p + "->n must be >= 1, got " + std::to_string(s->n));
  checked_mul(checked_mul(checked_mul(s->n, d.t, side), std::max(d.in, d.out), side), 4, side);
  check_pointer(c, s->a, p + "->a");
  check_pointer(c, s->g, p + "->g");
}

}  // namespace

int64_t hamu::capi::set_scratch_floats(int64_t floats) {
  const int64_t old = g_scratch_floats;
  g_scratch_floats = std::max<int64_t>(floats, 1);
  return old;
}

extern "C" HAMU_API int hamu_linear_hardness(hamu_context* ctx, int64_t in, int64_t out, int64_t t,
                                             const hamu_linear_samples* forget, const hamu_linear_samples* retain,
                                             int32_t path, hamu_linear_hardness_out* result) {
  return guarded(ctx, "hamu_linear_hardness", [&] {
    need(ctx, "ctx");
    need(result, "result");
    if (in < 1 || out < 1 || t < 1)
      fail(HAMU_ERR_INVALID_ARGUMENT, "in, out and t must be >= 1, got " + std::to_string(in) + ", " + std::to_string(out) +
                                          ", " + std::to_string(t));
    if (path != HAMU_PATH_AUTO && path != HAMU_PATH_GHOST && path != HAMU_PATH_MATERIALISE)
      fail(HAMU_ERR_INVALID_ARGUMENT, "path: " + std::to_string(path) + " is not a HAMU_PATH_* value");
    LinearDims d{in, out, t, 0, 0};
    checked_mul(checked_mul(in, out, "in * out"), 8, "in * out");
    checked_mul(checked_mul(t, t, "t * t"), 8, "t * t");
    check_samples(*ctx, forget, d, "forget");
    check_samples(*ctx, retain, d, "retain");
    d.nf = forget->n;
    d.nr = retain->n;
    checked_mul(d.nf, d.nr, "n_f * n_r");
    const hamu_linear_hardness_out& o = *result;
    if (o.k) check_pointer(*ctx, o.k, "result->k");
    if (o.kappa) check_pointer(*ctx, o.kappa, "result->kappa");
    if (o.forget_norms) check_pointer(*ctx, o.forget_norms, "result->forget_norms");
    if (o.retain_norms) check_pointer(*ctx, o.retain_norms, "result->retain_norms");
    if (o.retain_grad) check_pointer(*ctx, o.retain_grad, "result->retain_grad");
    // The cost model of hamu hardness: exact FLOPs per (forget, retain) pair.
    const double td = double(t), ghost_pair = 2 * td * td * double(in + out) + td * td, mat_pair = 2.0 * double(in) * double(out);
    const bool ghost = path == HAMU_PATH_GHOST || (path == HAMU_PATH_AUTO && ghost_pair < mat_pair);
    // The captures were written on the caller's stream; hamu's GEMMs run on its own (cuBLAS is bound to it).
    on_backend(*ctx, true, [](const auto& k) { wait_for(k); });
    on_backend(*ctx, false, [&](const auto& k) {
      if (o.k) linear_k(k, *ctx, d, ghost, *forget, *retain, o.k);
      if (o.kappa || o.retain_grad) {
        hamu::Tensor h;
        float* hp = o.retain_grad;
        if (!hp) {
          h = scratch(*ctx, out * in);
          hp = h.data<float>();
        }
        linear_row_form(k, *ctx, d, *forget, *retain, hp, o.kappa);
      }
      if (o.forget_norms) linear_norms(k, *ctx, d, ghost, forget->a, forget->g, d.nf, o.forget_norms);
      if (o.retain_norms) linear_norms(k, *ctx, d, ghost, retain->a, retain->g, d.nr, o.retain_norms);
      wait_for(k);
    });
    result->path = ghost ? HAMU_PATH_GHOST : HAMU_PATH_MATERIALISE;
    return HAMU_OK;
  });
}
