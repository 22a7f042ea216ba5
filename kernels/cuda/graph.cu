// kernels/cuda/graph.cu: CUDA graph capture and replay of a device context's stream (kernels/perf.h): the whole
// unlearning step becomes one launch, removing the per-kernel launch gaps that dominate small steps.
#include <string>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/perf.h"

namespace hamu::kernels {
using namespace cuda_detail;

void cuda_graph_begin(int device) {
  const CudaCtx& ctx = cuda_context(device);
  // Work queued before the capture must not become part of it (nor race with it).
  HAMU_CU("cuda_graph_begin", cudaStreamSynchronize(stream_of(ctx)));
  HAMU_CU("cuda_graph_begin", cudaStreamBeginCapture(stream_of(ctx), cudaStreamCaptureModeRelaxed));
}

void* cuda_graph_end(int device, std::string* why) {
  const CudaCtx& ctx = cuda_context(device);
  cudaGraph_t graph = nullptr;
  cudaError_t e = cudaStreamEndCapture(stream_of(ctx), &graph);
  if (e != cudaSuccess || !graph) {
    cudaGetLastError();
    if (graph) cudaGraphDestroy(graph);
    if (why) *why = std::string("capture failed: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    return nullptr;
  }
  cudaGraphExec_t exec = nullptr;
  e = cudaGraphInstantiateWithFlags(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = std::string("instantiation failed: ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
    return nullptr;
  }
  return exec;
}

void cuda_graph_abort(int device) {
  const CudaCtx& ctx = cuda_context(device);
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream_of(ctx), &st) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  if (st == cudaStreamCaptureStatusNone) return;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(stream_of(ctx), &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
}

void cuda_graph_launch(int device, void* graph) {
  const CudaCtx& ctx = cuda_context(device);
  HAMU_CU("cuda_graph_launch", cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), stream_of(ctx)));
}

void cuda_graph_destroy(void* graph) {
  if (graph) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
}

}  // namespace hamu::kernels
