// engine/collectives.h: ranks and collectives of a multi-process run behind one small interface: a single
// process (the default; every collective is the identity), MPI for host buffers (`make MPI=1`, launched
// by mpirun) and NCCL for CUDA buffers (`make MPI=1 CUDA=1`, the communicator bootstrapped over MPI).
//
// Contract every implementation keeps (the data-parallel runner relies on it):
//   - all_reduce_sum gives every rank bitwise the same result, summed in rank order (rank 0 + rank 1 +
//     ...), so ranks that apply the same update to the same parameters stay identical forever;
//   - every rank calls the same collectives in the same order (they are matched by order, not by name);
//   - a collective that waits longer than the watchdog's timeout (HAMU_COLLECTIVE_TIMEOUT seconds,
//     default 300) ends the process with one line naming the rank and the collective, and mpirun then
//     stops the others: a dead or hung rank never leaves the rest waiting forever.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hamu {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "single", "mpi", "mpi+nccl"

  // In-place sum over the ranks of n elements at `data`, which lives on `device` (host memory for
  // Device{}, device memory for CUDA; only the NCCL build takes CUDA buffers).
  virtual void all_reduce_sum(float* data, size_t n, Device device) = 0;
  virtual void all_reduce_sum(double* data, size_t n, Device device) = 0;
  // Rank `root`'s bytes to every rank.
  virtual void broadcast(void* data, size_t bytes, int root, Device device) = 0;
  virtual void barrier() = 0;
  // True when the host collectives may be called from a thread other than the one that made the group,
  // one thread at a time (MPI granted MPI_THREAD_SERIALIZED): engine/overlap.h then runs them on its
  // communication thread.
  virtual bool thread_handoff() const { return true; }
  // CUDA buffers: queues the sum on `stream` (a cudaStream_t of the buffer's device) and returns without
  // waiting for it. The default waits (all_reduce_sum); the NCCL world queues ncclAllReduce.
  virtual void all_reduce_sum_async(float* data, size_t n, Device device, void* stream) {
    (void)stream;
    all_reduce_sum(data, n, device);
  }
  // Every rank's `bytes` host bytes (the same count on every rank), concatenated in rank order.
  virtual std::vector<uint8_t> all_gather(const void* data, size_t bytes) = 0;
};

// While a YieldingWaits is alive on a thread, the host collectives that thread calls wait for their
// peers by polling with short sleeps instead of spinning (MPI; a no-op for one process): the
// communication thread of engine/overlap.h, which must leave the cores to the backward it overlaps.
class YieldingWaits {
 public:
  YieldingWaits();
  ~YieldingWaits();
  YieldingWaits(const YieldingWaits&) = delete;
  YieldingWaits& operator=(const YieldingWaits&) = delete;

 private:
  bool prev_;
};
bool yielding_waits();

// The process group of this run: MPI's world when the build has MPI and the process was started by a
// launcher (mpirun/srun set their environment; HAMU_MPI=1 forces it), else the single process.
Collectives& world();
// A group of this process alone (tests compare an N-rank run with the 1-rank run inside one process).
Collectives& single_process();

// Rows [start, start + count) of n rows for part `part` of `parts`: [floor(n*part/parts),
// floor(n*(part+1)/parts)), so the parts tile [0, n) exactly and differ in size by at most one.
struct Shard {
  int64_t start = 0, count = 0;
};
Shard shard_of(int64_t n, int part, int parts);

// FNV-1a over bytes, chained through `seed` (configuration fingerprints; not for security).
uint64_t hash_bytes(const void* data, size_t bytes, uint64_t seed = 1469598103934665603ull);
uint64_t hash_string(const std::string& s, uint64_t seed = 1469598103934665603ull);
// Every tensor's shape, dtype and values (copied to the host where needed).
uint64_t hash_tensors(const std::vector<Tensor>& tensors, uint64_t seed = 1469598103934665603ull);

// All-gathers `fingerprint` and refuses (InputError, exit code 2 in the CLI) when any rank differs from
// rank 0, naming `what` and the first rank that differs. A no-op for one rank.
void check_same_on_all_ranks(Collectives& c, const std::string& what, uint64_t fingerprint);

// Sums a list of tensors over the ranks with one collective: each tensor is scaled by its factor while
// it is packed into one flat staging buffer (kept between calls), the buffer is all-reduced, and the
// sums are unpacked in place. A factor of 0 contributes zeros (the tensor's content is not read). The
// tensors share one dtype and device and are contiguous; an undefined tensor is skipped on every rank.
class TensorReducer {
 public:
  explicit TensorReducer(Collectives& c) : c_(c) {}
  void all_reduce(const std::vector<Tensor*>& tensors, const std::vector<double>& factors);
  // Seconds spent in the collective itself (packing excluded) since construction.
  double collective_seconds() const { return seconds_; }

 private:
  Collectives& c_;
  Tensor staging_;
  double seconds_ = 0;
};

// Host doubles summed over the ranks (losses, counts); a no-op for one rank.
void all_reduce_host(Collectives& c, std::vector<double>& values);

// The process group of one `hamu` command (cli/main.cpp). On ranks other than 0 it sends stdout and
// stderr to /dev/null, so tables, notices and progress appear once (HAMU_RANK_OUTPUT=all keeps them);
// errors still reach the terminal through error_stream(), prefixed by rank_prefix(). finish(rc):
// MPI_Finalize on success; on failure with several ranks the process exits at once with rc, so that
// mpirun stops the other ranks instead of leaving them in a collective.
class ProcessGroupScope {
 public:
  ProcessGroupScope();
  ~ProcessGroupScope();
  ProcessGroupScope(const ProcessGroupScope&) = delete;
  ProcessGroupScope& operator=(const ProcessGroupScope&) = delete;
  int finish(int rc);
};
FILE* error_stream();             // stderr, or the terminal's stderr saved before quieting
const std::string& rank_prefix();  // "" for one rank, else "rank R/N: "
// True on the rank that writes checkpoints, logs and JSON (rank 0).
inline bool is_output_rank() { return world().rank() == 0; }

}  // namespace hamu
