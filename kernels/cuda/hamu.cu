// kernels/cuda/hamu.cu: the coefficient phase of the fused HAMU update on the device (HAMU.md §3-5): one CTA
// turns the per-block statistics into per-block coefficients and the step report, in device memory, so the
// step needs no host synchronisation. The math is hamu_coefficients_cta (hamu_coef.cuh, shared with the
// single-launch step); the two memory passes are in reduce_mt.cu.
#include "kernels/cuda/hamu_coef.cuh"

namespace hamu::kernels {
using namespace cuda_detail;

namespace {

__global__ void __launch_bounds__(kHamuCtaThreads) hamu_coefficients_kernel(HamuConfig cfg, int count,
                                                                            const double* stats, double* coef,
                                                                            HamuReport* report) {
  hamu_coefficients_cta(cfg, count, stats, coef, report);
}

}  // namespace

void hamu_coefficients(const CudaCtx& ctx, const HamuConfig& cfg, int count, const double* stats, double* coef,
                       HamuReport* report) {
  use_device(ctx);
  hamu_coefficients_kernel<<<1, kHamuCtaThreads, 0, stream_of(ctx)>>>(cfg, count < 0 ? 0 : count, stats, coef, report);
  launch_check(ctx, "hamu_coefficients_kernel");
}

}  // namespace hamu::kernels
