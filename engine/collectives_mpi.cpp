// engine/collectives_mpi.cpp: the MPI world (compiled with MPI=1 only): host collectives over
// MPI_COMM_WORLD, CUDA buffers handed to NCCL (engine/collectives_nccl.cpp), a watchdog around each.
//
// all_reduce_sum is our own two-phase all-reduce instead of MPI_Allreduce, so that the result does not
// depend on which algorithm the MPI library picks for a message size: each rank owns a 1/N slice, the
// slices are exchanged with MPI_Alltoallv, the owner sums its slice in rank order (rank 0 + rank 1 + ...),
// and MPI_Allgatherv returns the sums. Every rank gets bitwise the same result, the same for a given N
// on every run, and the volume is that of a ring all-reduce (2(N-1)/N of the buffer sent per rank).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <thread>
#include <cstdlib>
#include <type_traits>

#include "engine/collectives_impl.h"
#include "engine/error.h"

namespace hamu {
namespace {

template <class T> MPI_Datatype mpi_type();
template <> MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <> MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string("MPI ") + what + ": " + std::string(msg, size_t(len)));
}

class MpiWorld final : public Collectives {
 public:
  MpiWorld() {
    int inited = 0;
    MPI_Initialized(&inited);
    // Serialized: engine/overlap.h hands the host collectives of one step to its communication thread
    // while the main thread, which made them before and makes them after, waits for it.
    int provided = MPI_THREAD_SINGLE;
    if (!inited) check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "init");
    else MPI_Query_thread(&provided);
    handoff_ = provided >= MPI_THREAD_SERIALIZED;
    owns_init_ = !inited;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // The rank on this node picks the node's GPU before anything touches CUDA (NCCL builds).
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
    int local = 0, local_size = 1;
    MPI_Comm_rank(node, &local);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
    select_local_gpu(local, local_size);
    watchdog_ = std::make_unique<Watchdog>(rank_, size_);
  }
  ~MpiWorld() override {
    device_.reset();
    watchdog_.reset();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_init_ && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return device_ ? "mpi+nccl" : "mpi"; }

  void all_reduce_sum(float* data, size_t n, Device device) override { reduce(data, n, device); }
  void all_reduce_sum(double* data, size_t n, Device device) override { reduce(data, n, device); }

  bool thread_handoff() const override { return handoff_; }
  void all_reduce_sum_async(float* data, size_t n, Device device, void* stream) override {
    if (!device.is_cuda()) return all_reduce_sum(data, n, device);
    if (size_ == 1 || n == 0) return;
    Watchdog::Guard g(*watchdog_, "all_reduce (nccl, queued)");
    nccl(device).all_reduce_sum_async(data, n, device, stream);
  }

  void broadcast(void* data, size_t bytes, int root, Device device) override {
    Watchdog::Guard g(*watchdog_, "broadcast");
    if (device.is_cuda()) return nccl(device).broadcast(data, bytes, root, device);
    char* p = static_cast<char*>(data);
    for (size_t off = 0; off < bytes; off += size_t(INT_MAX)) {
      const int n = int(std::min(bytes - off, size_t(INT_MAX)));
      check(MPI_Bcast(p + off, n, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
    }
  }

  void barrier() override {
    Watchdog::Guard g(*watchdog_, "barrier");
    check(MPI_Barrier(MPI_COMM_WORLD), "barrier");
  }

  std::vector<uint8_t> all_gather(const void* data, size_t bytes) override {
    if (bytes > size_t(INT_MAX)) throw Error("all_gather: more than 2 GiB per rank");
    Watchdog::Guard g(*watchdog_, "all_gather");
    std::vector<uint8_t> out(bytes * size_t(size_));
    check(MPI_Allgather(data, int(bytes), MPI_BYTE, out.data(), int(bytes), MPI_BYTE, MPI_COMM_WORLD), "all_gather");
    return out;
  }

 private:
  DeviceCollectives& nccl(Device device) {
    if (!device_) device_ = make_nccl(*this, device);
    return *device_;
  }

  template <class T> void reduce(T* data, size_t n, Device device) {
    if (size_ == 1 || n == 0) return;
    if (device.is_cuda()) {
      Watchdog::Guard g(*watchdog_, "all_reduce (nccl)");
      return nccl(device).all_reduce_sum(data, n, device);
    }
    Watchdog::Guard g(*watchdog_, "all_reduce");
    // Segments keep every per-rank count inside MPI's int.
    const size_t seg = size_t(size_) * (size_t(1) << 26);
    for (size_t off = 0; off < n; off += seg) ordered_reduce(data + off, std::min(seg, n - off));
  }

  // The slice [lo(r), lo(r+1)) of n elements is owned by rank r.
  size_t lo(size_t n, int r) const { return n * size_t(r) / size_t(size_); }

  template <class T> void ordered_reduce(T* data, size_t n) {
    const int P = size_;
    const size_t np = static_cast<size_t>(P);
    std::vector<int> send_counts(np), send_displs(np), recv_counts(np), recv_displs(np);
    const size_t mine = lo(n, rank_ + 1) - lo(n, rank_);
    for (int r = 0; r < P; ++r) {
      send_counts[size_t(r)] = int(lo(n, r + 1) - lo(n, r));
      send_displs[size_t(r)] = int(lo(n, r));
      recv_counts[size_t(r)] = int(mine);
      recv_displs[size_t(r)] = int(mine * size_t(r));
    }
    std::vector<T>& slices = [this]() -> std::vector<T>& {
      if constexpr (std::is_same_v<T, float>) return scratch_f_;
      else return scratch_d_;
    }();
    slices.resize(mine * size_t(P));
    if (yielding_waits()) {
      MPI_Request req;
      check(MPI_Ialltoallv(data, send_counts.data(), send_displs.data(), mpi_type<T>(), slices.data(),
                           recv_counts.data(), recv_displs.data(), mpi_type<T>(), MPI_COMM_WORLD, &req),
            "all_reduce (exchange)");
      wait_yielding(req, "all_reduce (exchange)");
    } else {
      check(MPI_Alltoallv(data, send_counts.data(), send_displs.data(), mpi_type<T>(), slices.data(),
                          recv_counts.data(), recv_displs.data(), mpi_type<T>(), MPI_COMM_WORLD),
            "all_reduce (exchange)");
    }
    T* out = data + lo(n, rank_);
    for (size_t i = 0; i < mine; ++i) {
      T acc = slices[i];
      for (int r = 1; r < P; ++r) acc += slices[mine * size_t(r) + i];
      out[i] = acc;
    }
    // Every rank's sums to every rank (in place: the own slice is already where it belongs).
    if (yielding_waits()) {
      MPI_Request req;
      check(MPI_Iallgatherv(MPI_IN_PLACE, 0, mpi_type<T>(), data, send_counts.data(), send_displs.data(),
                            mpi_type<T>(), MPI_COMM_WORLD, &req),
            "all_reduce (gather)");
      wait_yielding(req, "all_reduce (gather)");
    } else {
      check(MPI_Allgatherv(MPI_IN_PLACE, 0, mpi_type<T>(), data, send_counts.data(), send_displs.data(),
                           mpi_type<T>(), MPI_COMM_WORLD),
            "all_reduce (gather)");
    }
  }

  // Open MPI's blocking calls spin on the shared-memory queues. The communication thread of
  // engine/overlap.h must not take a core from the backward it overlaps, so there a collective is
  // started non-blocking and polled with short sleeps in between (each MPI_Test also moves the data).
  static void wait_yielding(MPI_Request& req, const char* what) {
    for (int spins = 0;; ++spins) {
      int flag = 0;
      check(MPI_Test(&req, &flag, MPI_STATUS_IGNORE), what);
      if (flag) return;
      if (spins >= 8) std::this_thread::sleep_for(std::chrono::microseconds(50));
      else std::this_thread::yield();
    }
  }

  int rank_ = 0, size_ = 1;
  bool owns_init_ = false, handoff_ = false;
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<DeviceCollectives> device_;
  std::vector<float> scratch_f_;
  std::vector<double> scratch_d_;
};

bool launched_by_mpi() {
  if (const char* force = std::getenv("HAMU_MPI"); force && *force) return std::string(force) == "1";
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

}  // namespace

std::unique_ptr<Collectives> make_mpi_world() {
  if (!launched_by_mpi()) return nullptr;
  return std::make_unique<MpiWorld>();
}

}  // namespace hamu
