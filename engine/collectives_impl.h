// engine/collectives_impl.h: what the collectives implementations share (engine/collectives*.cpp only):
// the watchdog around every blocking collective, the test-only fault injection, and the factories of
// the MPI world and of NCCL's device communicator.
#pragma once
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "engine/collectives.h"

namespace hamu {

// A thread that ends the process when one collective has waited longer than the timeout
// (HAMU_COLLECTIVE_TIMEOUT seconds, default 300, 0 = never). Also the place of the fault injection used
// by tests/mpi_test.sh: HAMU_FAULT=die:R:K or hang:R:K makes rank R die (exit 3) or hang (sleep
// forever) when it enters its K-th collective (1-based).
class Watchdog {
 public:
  Watchdog(int rank, int size);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Marks one collective (a static name) as in progress for its lifetime.
  class Guard {
   public:
    Guard(Watchdog& w, const char* name);
    ~Guard();

   private:
    Watchdog& w_;
    const char* prev_;  // guards nest (NCCL's set-up broadcasts over MPI inside an all-reduce)
    double prev_started_;
  };

 private:
  void run();
  int rank_, size_;
  double timeout_s_ = 300;
  int fault_rank_ = -1;
  long long fault_call_ = 0;
  bool fault_hang_ = false;
  std::atomic<const char*> current_{nullptr};
  std::atomic<double> started_{0};
  long long calls_ = 0;
  std::atomic<long long> current_call_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Collectives on CUDA buffers (NCCL), created by the MPI world on first use of a CUDA buffer.
class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  virtual void all_reduce_sum(float* data, size_t n, Device device) = 0;
  virtual void all_reduce_sum(double* data, size_t n, Device device) = 0;
  virtual void broadcast(void* data, size_t bytes, int root, Device device) = 0;
  // Queued on `stream` (cudaStream_t), not waited for.
  virtual void all_reduce_sum_async(float* data, size_t n, Device device, void* stream) = 0;
};

// engine/collectives_mpi.cpp (MPI=1): the world when launched by mpirun; null when the build has no MPI
// or the process was not launched by a launcher (and HAMU_MPI is not 1).
std::unique_ptr<Collectives> make_mpi_world();
// engine/collectives_nccl.cpp (MPI=1 CUDA=1): NCCL over `host`'s ranks, the unique id broadcast by host;
// throws Error in builds without NCCL.
std::unique_ptr<DeviceCollectives> make_nccl(Collectives& host, Device device);
// With several ranks on a node, rank `local_rank` of `local_size` there gets its own GPU: the
// local_rank-th entry of CUDA_VISIBLE_DEVICES (modulo its length), or GPU local_rank when unset, becomes
// the only visible device, so `--device cuda` means this rank's GPU. Before any CUDA call; NCCL builds.
void select_local_gpu(int local_rank, int local_size);

}  // namespace hamu
