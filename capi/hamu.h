/* capi/hamu.h: libhamu, the public C API of hamu: the fused HAMU update (and the baselines' steps) and
 * the per-sample hardness measures of a Linear layer, on memory the caller owns, on the CPU or a CUDA
 * device. This header is the reference.
 *
 * Plain C (C99 and C++), no C++ types; nothing is thrown across it. Every function returns an int
 * status (hamu_status): HAMU_OK (0), HAMU_SKIPPED (1: the call worked but the step was not applied, the
 * report says why), or a negative error with a message from hamu_last_error(ctx). On an error nothing
 * the caller owns has been changed (parameters, outputs).
 *
 * Memory and ownership: hamu never frees, keeps or copies the caller's buffers beyond what a function
 * says. Objects (hamu_context, hamu_plan) are created by hamu_*_create and freed by hamu_*_destroy;
 * strings returned by hamu are owned by hamu (valid until the next call on the same context, or for
 * the life of the library where stated).
 *
 * Threading: the library functions are thread-safe across contexts on the CPU. One context (and its
 * plans) must be used by one thread at a time. On CUDA each stream has its own scratch memory for the
 * step kernels, so steps on one device may run concurrently on different streams (not two at once on
 * one stream's graph replays: the graphs of a stream share that stream's scratch).
 *
 * Tensors: float32, contiguous, row-major, 4-byte aligned, on the context's device (host memory for
 * "cpu", device or managed memory of device N for "cuda:N").
 *
 * Link: -lhamu (libhamu.so, or libhamu.a plus -lstdc++ -lgomp -lz and, in a CUDA build, -lcudart -lcublas). */
#ifndef HAMU_H
#define HAMU_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define HAMU_API
#elif defined(__GNUC__)
#define HAMU_API __attribute__((visibility("default")))
#else
#define HAMU_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header. hamu_version() returns the library's; they must be equal (a different
 * value means the header and the library do not match: structures may differ). */
#define HAMU_API_VERSION 1
HAMU_API int hamu_version(void);

/* ---- status codes --------------------------------------------------------------------------------- */
typedef enum hamu_status {
  HAMU_OK = 0,
  HAMU_SKIPPED = 1,                 /* not an error: the step was not applied (non-finite statistics, an
                                       infeasible HAMU step, or the stopping criterion); see the report */
  HAMU_ERR_INVALID_ARGUMENT = -1,   /* null pointer, bad count, misaligned pointer, value out of range */
  HAMU_ERR_UNSUPPORTED = -2,        /* not in this build (cuda:N without CUDA) or not offered (bf16) */
  HAMU_ERR_DEVICE_MISMATCH = -3,    /* a pointer is not on the context's device */
  HAMU_ERR_OUT_OF_MEMORY = -4,      /* hamu's own small buffers could not be allocated */
  HAMU_ERR_RUNTIME = -5,            /* a CUDA runtime or cuBLAS call failed (the message names it) */
  HAMU_ERR_INTERNAL = -6            /* anything else (a bug: please report the message) */
} hamu_status;

/* "HAMU_OK", "HAMU_ERR_INVALID_ARGUMENT", ...; "unknown" otherwise. Static storage. */
HAMU_API const char* hamu_status_name(int status);

/* ---- contexts ------------------------------------------------------------------------------------- */
typedef struct hamu_context hamu_context;

/* Creates a context for `device`: "cpu", "cuda" (= "cuda:0") or "cuda:N". *out is set to NULL on
 * failure. Errors: INVALID_ARGUMENT (null, bad spelling), UNSUPPORTED ("cuda:N" in a build without CUDA,
 * or no such device). The message of a failed create is hamu_last_error(NULL) (per thread). */
HAMU_API int hamu_context_create(const char* device, hamu_context** out);
/* Frees the context (NULL is fine). Plans made from it must be destroyed first. On CUDA it waits for
 * the context's stream first, so nothing hamu queued still runs. */
HAMU_API void hamu_context_destroy(hamu_context* ctx);
/* The device the context is for ("cpu", "cuda:0", ...). Owned by the context. */
HAMU_API const char* hamu_context_device(const hamu_context* ctx);
/* CUDA: the stream (a cudaStream_t passed as void*) every step kernel of this context and its plans runs
 * on from the next call (a plan's destroy waits for the stream its last step used); the
 * default is the default stream (NULL), which is what PyTorch uses unless told otherwise
 * (torch.cuda.current_stream().cuda_stream). hamu orders its work on that stream only. CPU: accepted
 * and ignored. Errors: INVALID_ARGUMENT (null ctx). */
HAMU_API int hamu_context_set_stream(hamu_context* ctx, void* stream);
/* Waits until everything hamu queued on the context's stream has finished (CUDA; nothing on the CPU).
 * Errors: INVALID_ARGUMENT (null ctx), RUNTIME (a CUDA error surfaced by the wait). */
HAMU_API int hamu_context_synchronize(hamu_context* ctx);
/* The message of the last failed call on ctx ("" when none); with ctx NULL, the last failed call of
 * this thread that had no context (hamu_context_create, or a call given a NULL context). Owned by hamu,
 * valid until the next failing call. */
HAMU_API const char* hamu_last_error(const hamu_context* ctx);

/* ---- methods -------------------------------------------------------------------------------------- */
/* The registered methods (the `hamu unlearn --method` names, in listing order): hamu-q, hamu-u, ft, ga,
 * gdiff, kl, scrub, npo, gru, pcgrad. Every one is a rule from the per-block statistics of the two
 * gradients to coefficients, so every one is available here; the objectives behind r and f (e.g.
 * KL to the original model for kl/scrub, NPO's loss for npo) are the caller's to compute. */
HAMU_API int hamu_method_count(void);
/* The name of method i (0 <= i < count), static storage; NULL when i is out of range. */
HAMU_API const char* hamu_method_name(int i);

/* ---- the step --------------------------------------------------------------------------------------
 * Per block l (a parameter tensor, or any slice of the parameters the caller chooses): theta_l, the
 * retain gradient r_l (the gradient of the loss to keep low) and the forget gradient f_l (the gradient of
 * the loss on the samples to forget), n_l floats each. One step is theta_l += coef_r[l] r_l + coef_f[l] f_l
 * with the coefficients of the method from (<r_l,r_l>, <f_l,f_l>, <r_l,f_l>) (HAMU.md §3-6): the same
 * kernels and the same coefficient code as `hamu unlearn --optimizer sgd`, so the same gradients give
 * bit-identical parameters. r and f may be the same buffer; theta must not overlap r or f. */
typedef struct hamu_block {
  float* param;              /* theta, updated in place */
  const float* retain_grad;  /* r (for ft/ga, which read one side only, pass zeros or any finite buffer) */
  const float* forget_grad;  /* f */
  int64_t count;             /* elements, >= 1 */
} hamu_block;

enum { HAMU_SCOPE_LAYER = 0, HAMU_SCOPE_GLOBAL = 1 };
enum { HAMU_SPLIT_GRAD_NORM = 0, HAMU_SPLIT_UNIFORM = 1, HAMU_SPLIT_SOFTMAX_DP = 2 };
enum { HAMU_DTYPE_F32 = 0, HAMU_DTYPE_BF16 = 1 };

typedef struct hamu_step_config {
  const char* method;          /* registered name; default "hamu-q" */
  double lr;                   /* > 0; default 0.01 */
  double ratio;                /* HAMU: B = ratio * lr, >= 0 and (lr radius, clip > 0) <= clip^2; default 0.1 */
  double clip;                 /* each gradient clipped to this total norm over all blocks; 0 = off; default 1 */
  int32_t scope;               /* HAMU_SCOPE_*; default layer (per block) */
  int32_t split;               /* HAMU_SPLIT_*: how B is split over blocks in layer scope; default grad-norm */
  int32_t fixed_radius;        /* HAMU: 1 = radius R = `radius` instead of lr * ||a||; default 0 */
  double radius;
  int32_t continue_on_infeasible; /* HAMU: step anyway when a block cannot gain its B; default 0 */
  int32_t stop_on_criterion;   /* HAMU: refuse the step once the stopping criterion is met; default 0 */
  int32_t paper_compat;        /* gru/pcgrad: the published (inverted) conflict test; default 0 */
  int32_t grad_dtype;          /* HAMU_DTYPE_F32 only; HAMU_DTYPE_BF16 -> HAMU_ERR_UNSUPPORTED */
} hamu_step_config;

/* Fills cfg with the defaults of `hamu unlearn` (the values above). */
HAMU_API void hamu_step_config_init(hamu_step_config* cfg);

/* What one step did (HAMU.md §2-4; the fields of `hamu unlearn --log`). Baselines fill the norms, kappa,
 * scales and angle, n_blocks, nonfinite, applied and projected; HAMU fills everything. */
typedef struct hamu_report {
  double kappa;               /* <g_r, g_f> after clipping */
  double kappa1;              /* sum of the per-block direct thresholds */
  double kappa2;              /* sum of the per-block kappa_2 thresholds */
  double retain_norm;         /* ||g_r|| before clipping */
  double forget_norm;         /* ||g_f|| before clipping */
  double retain_scale;        /* clip factors */
  double forget_scale;
  double angle_deg;           /* angle between g_r and g_f */
  double feasibility_margin;  /* 1 - max_l B_l / (R_l ||c_l||); < 0: infeasible */
  double stopping_margin;     /* retain-neutral capacity - B; < 0: stopping criterion met */
  int32_t n_direct, n_rectified, n_colinear, n_infeasible; /* HAMU branch counts */
  int32_t n_collateral;       /* blocks where collateral forgetting is unavoidable (kappa_l > kappa2_l) */
  int32_t n_blocks;
  int32_t nonfinite;          /* a statistic was NaN/Inf: no step, parameters untouched */
  int32_t criterion_met;
  int32_t applied;            /* 1: the parameters moved */
  int32_t projected;          /* gru/pcgrad projected this step */
} hamu_report;

/* Per-block statistics and coefficients of one step (optional output, one per block). */
typedef struct hamu_block_stats {
  double retain_sq;    /* <r_l, r_l> (raw, before clipping) */
  double forget_sq;    /* <f_l, f_l> */
  double dot;          /* <r_l, f_l> */
  double coef_retain;  /* coef_r[l] (0 when not applied) */
  double coef_forget;  /* coef_f[l] */
} hamu_block_stats;

/* A plan: a fixed set of blocks with its device-side pointer tables and statistics buffers. Creating
 * one validates every block (null, count, alignment, device of each pointer) and allocates hamu's
 * small buffers; stepping allocates nothing. Keep one plan per block set (e.g. per model) and step it
 * every iteration; the caller's buffers must stay valid and unmoved while the plan lives.
 * Errors: INVALID_ARGUMENT (null, n < 1, a count < 1, a null or misaligned pointer), DEVICE_MISMATCH
 * (CUDA build: a pointer not on the context's device), OUT_OF_MEMORY. */
typedef struct hamu_plan hamu_plan;
HAMU_API int hamu_plan_create(hamu_context* ctx, const hamu_block* blocks, int64_t n, hamu_plan** out);
/* Frees the plan (NULL is fine); on CUDA waits for the context's stream first. */
HAMU_API void hamu_plan_destroy(hamu_plan* plan);
HAMU_API int64_t hamu_plan_blocks(const hamu_plan* plan);

/* One step of cfg->method on the plan's blocks: pass 1 (statistics), the coefficients, pass 2 (apply,
 * in place). Returns HAMU_OK when applied, HAMU_SKIPPED when not (report->nonfinite: NaN/Inf in a
 * gradient, parameters untouched; HAMU: report->n_infeasible > 0 or the stopping criterion), or an error
 * (INVALID_ARGUMENT: cfg null, unknown method, lr/ratio/clip/radius out of range, unknown scope/split;
 * UNSUPPORTED: bf16; RUNTIME) with the parameters unchanged.
 * report (may be NULL) receives the report; per_block (may be NULL) receives hamu_plan_blocks() entries.
 *
 * CUDA and graphs: everything runs on the context's stream. With report != NULL or per_block != NULL
 * the call waits for the stream (one small copy back). With both NULL and a HAMU method, the call
 * neither allocates nor waits: the report is copied asynchronously into the plan's pinned buffer, to be
 * read with hamu_plan_last_report after the stream is synchronised; such a call can be captured in a
 * CUDA graph (after one uncaptured step of this plan on the same stream, which creates and sizes that
 * stream's scratch memory; a first step inside a capture fails with RUNTIME, naming the stream), and it
 * returns HAMU_OK whether or not the step turns out applied. Baselines always wait (their coefficients
 * are computed on the host). On the CPU every call is synchronous. */
HAMU_API int hamu_plan_step(hamu_plan* plan, const hamu_step_config* cfg, hamu_report* report,
                            hamu_block_stats* per_block);
/* The report of the plan's last step (after an asynchronous step: once the stream has synchronised). */
HAMU_API int hamu_plan_last_report(const hamu_plan* plan, hamu_report* report);

/* One step without a plan object: the context keeps the plan of the last block array it saw (compared
 * by pointers and counts) and rebuilds it only when the blocks change, so calling this every iteration
 * with the same tensors costs what hamu_plan_step costs. Same results, errors and CUDA rules. */
HAMU_API int hamu_step(hamu_context* ctx, const hamu_block* blocks, int64_t n, const hamu_step_config* cfg,
                       hamu_report* report, hamu_block_stats* per_block);

/* ---- hardness of a Linear layer ---------------------------------------------------------------------
 * For y = W x (+ b) with W [out, in], applied at t positions per sample (t = 1 for an MLP, the sequence
 * length for a transformer): the per-sample gradient of sample i's loss is grad_i = sum_t g_{i,t} a_{i,t}^T
 * (out x in), from the layer's inputs a and the gradients g of the sample's loss w.r.t. the layer's
 * outputs (per-sample losses: the gradient of l_i, not of a batch mean; multiply by the batch size if
 * the caller's g came from a mean). To include the bias, append a column of ones to a (in + 1).
 *   K[j, i]   = <grad_j^forget, grad_i^retain>                          [n_f, n_r]
 *   kappa[j]  = <grad_j^forget, H>, H = (1/n_r) sum_i grad_i^retain       [n_f]  (the row form)
 *   norms     = ||grad_i||                                                [n]
 * computed as `hamu hardness` does: K by the ghost products (two Gram GEMMs and the fused Hadamard
 * reduction, never forming grad_i) or by materialising grad_i, chosen by the same cost model unless
 * `path` forces one; tiled so that hamu's scratch stays under 256 MiB. */
enum { HAMU_PATH_AUTO = 0, HAMU_PATH_GHOST = 1, HAMU_PATH_MATERIALISE = 2 };

typedef struct hamu_linear_samples {
  const float* a;  /* [n, t, in] layer inputs */
  const float* g;  /* [n, t, out] gradients of each sample's loss w.r.t. the layer's outputs */
  int64_t n;       /* samples, >= 1 */
} hamu_linear_samples;

/* Outputs: caller-owned buffers on the context's device; any may be NULL (not computed). */
typedef struct hamu_linear_hardness_out {
  float* k;             /* [n_f, n_r] */
  float* kappa;         /* [n_f] */
  float* forget_norms;  /* [n_f] */
  float* retain_norms;  /* [n_r] */
  float* retain_grad;   /* [out, in]: H, the mean retain gradient */
  int32_t path;         /* set: HAMU_PATH_GHOST or HAMU_PATH_MATERIALISE, the path taken */
} hamu_linear_hardness_out;

/* Errors: INVALID_ARGUMENT (null, sizes < 1, sizes whose products overflow, misaligned pointers),
 * DEVICE_MISMATCH, OUT_OF_MEMORY, RUNTIME. On CUDA it waits for the context's stream before starting
 * (the captures must be complete) and returns when the outputs are written; not for graph capture. */
HAMU_API int hamu_linear_hardness(hamu_context* ctx, int64_t in, int64_t out, int64_t t,
                                  const hamu_linear_samples* forget, const hamu_linear_samples* retain, int32_t path,
                                  hamu_linear_hardness_out* result);

#ifdef __cplusplus
}
#endif

#endif /* HAMU_H */
