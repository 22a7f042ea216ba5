// engine/collectives_nccl.cpp: NCCL collectives on CUDA buffers (compiled with MPI=1 CUDA=1 only). The
// communicator is made on first use: rank 0's ncclUniqueId is broadcast over MPI, then ncclCommInitRank
// on the buffer's GPU. Calls are enqueued on the engine's stream of that GPU (so they follow the
// backward in stream order) and waited for inside the caller's watchdog guard, so a hung peer is caught.
// ncclAllReduce uses one ring/tree for a fixed rank count and topology: every rank gets the same sums,
// the same on every run; the order of the additions is NCCL's, not rank order (README "Many processes").
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <string>

#include "engine/collectives_impl.h"
#include "engine/error.h"
#include "kernels/kernels.h"

namespace hamu {
namespace {

void check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw Error(std::string("NCCL ") + what + ": " + ncclGetErrorString(rc));
}

class Nccl final : public DeviceCollectives {
 public:
  Nccl(Collectives& host, Device device) : device_(device) {
    ncclUniqueId id;
    if (host.rank() == 0) check(ncclGetUniqueId(&id), "get unique id");
    host.broadcast(&id, sizeof id, 0, Device{});
    if (cudaSetDevice(device.index) != cudaSuccess) throw Error("NCCL: cannot select " + device.str());
    check(ncclCommInitRank(&comm_, host.size(), id, host.rank()), "communicator init");
  }
  ~Nccl() override {
    if (comm_) ncclCommDestroy(comm_);
  }

  void all_reduce_sum(float* data, size_t n, Device device) override { run(data, n, ncclFloat32, device); }
  void all_reduce_sum(double* data, size_t n, Device device) override { run(data, n, ncclFloat64, device); }

  void all_reduce_sum_async(float* data, size_t n, Device device, void* stream) override {
    context(device);
    check(ncclAllReduce(data, data, n, ncclFloat32, ncclSum, comm_, static_cast<cudaStream_t>(stream)), "all_reduce");
  }

  void broadcast(void* data, size_t bytes, int root, Device device) override {
    const kernels::CudaCtx& ctx = context(device);
    check(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, static_cast<cudaStream_t>(ctx.stream)), "broadcast");
    kernels::cuda_synchronize(ctx);
  }

 private:
  const kernels::CudaCtx& context(Device device) {
    if (device != device_)
      throw Error("NCCL: this rank's communicator is on " + device_.str() + ", not " + device.str());
    return kernels::cuda_context(device.index);
  }
  void run(void* data, size_t n, ncclDataType_t type, Device device) {
    const kernels::CudaCtx& ctx = context(device);
    check(ncclAllReduce(data, data, n, type, ncclSum, comm_, static_cast<cudaStream_t>(ctx.stream)), "all_reduce");
    kernels::cuda_synchronize(ctx);
  }

  Device device_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<DeviceCollectives> make_nccl(Collectives& host, Device device) {
  return std::make_unique<Nccl>(host, device);
}

void select_local_gpu(int local_rank, int local_size) {
  if (local_size <= 1) return;
  std::string pick = std::to_string(local_rank);
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES"); v && *v) {
    std::vector<std::string> ids;
    std::string cur;
    for (const char* p = v;; ++p) {
      if (*p == ',' || !*p) {
        if (!cur.empty()) ids.push_back(cur);
        cur.clear();
        if (!*p) break;
      } else {
        cur += *p;
      }
    }
    if (ids.empty()) return;
    pick = ids[size_t(local_rank) % ids.size()];
  }
  ::setenv("CUDA_VISIBLE_DEVICES", pick.c_str(), 1);
}

}  // namespace hamu
