// engine/dispatch.h: picks the kernel backend and element type of a tensor for an op.
#pragma once
#include <string>

#include "engine/tensor.h"
#include "kernels/kernels.h"
#include "kernels/perf.h"

namespace hamu {

// Calls f(ctx, T{}) with the tensor's backend context and floating element type:
// (CpuCtx, float), (CpuCtx, double) or (CudaCtx, float); bfloat16 is refused, naming the op. Every op's
// kernels run inside one profiler scope named by `op` (kernels/perf.h; free when no profile is running).
template <class F>
void dispatch(const char* op, const Tensor& t, F&& f) {
  const kernels::ProfScope prof(op, t.is_cuda() ? t.device().index : -1);
  if (t.dtype() == DType::bf16)
    throw InputError(std::string(op) + ": got a bfloat16 tensor; bfloat16 only stores frozen Linear weights on cuda "
                     "(linear reads them); convert with to(DType::f32) for anything else");
  if (t.is_cuda()) {
#ifdef HAMU_CUDA
    if (t.dtype() != DType::f32)
      throw Error(std::string(op) + ": cuda tensors must be float32, got " + dtype_name(t.dtype()));
    f(kernels::cuda_context(t.device().index), float{});
#else
    throw Error(std::string(op) + ": this build has no CUDA backend (rebuild with make CUDA=1)");
#endif
  } else if (t.dtype() == DType::f32) {
    f(kernels::CpuCtx{}, float{});
  } else if (t.dtype() == DType::f64) {
    f(kernels::CpuCtx{}, double{});
  } else {
    throw InputError(std::string(op) + ": expects a floating-point tensor, got " + dtype_name(t.dtype()));
  }
}

}  // namespace hamu
