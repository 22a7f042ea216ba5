// engine/overlap.h: the data-parallel all-reduce of gradients overlapped with the backward that makes
// them (README "Many processes").
//
// The gradient buffers of a step are taken in a fixed order (the same on every rank) and cut into
// buckets of about `bucket_bytes`, consecutive in that order. The backward marks each buffer ready the
// moment it is final (engine/tensor.h GradReadyScope); a bucket whose buffers are all ready is packed
// (each buffer scaled by its factor), summed over the ranks and unpacked in place while the backward
// goes on, and finish() waits for the rest. Buckets are reduced strictly in their order whatever order
// this rank's buffers become ready in, so every rank calls the same collectives in the same order.
//
//   host buffers  a communication thread runs the collectives (MPI granted MPI_THREAD_SERIALIZED: the
//                 main thread makes no collective between begin() and finish()); without that grant
//                 each bucket is reduced on the caller's thread as soon as it is ready;
//   CUDA buffers  each ready bucket is queued on the device's side stream (kernels cuda_side_context)
//                 after an event of the compute stream: pack, the NCCL all-reduce, unpack; finish()
//                 makes the compute stream wait for the side stream. The host never waits.
//
// The result is bitwise that of TensorReducer::all_reduce over the same buffers and factors (every
// element is scaled by the same kernel and summed over the ranks in rank order; only the grouping into
// messages differs), so a run with overlap equals one without.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/collectives.h"

namespace hamu {

// The bucket size of the gradient exchange: HAMU_BUCKET_KB (kilobytes, default 1024); 0 = one bucket,
// reduced after the backward (no overlap; also HAMU_OVERLAP=0). InputError for anything else.
size_t overlap_bucket_bytes();

class OverlappedReducer {
 public:
  // force: run the buckets even with one rank (tests: the single process's collective is the identity,
  // so only the packing, scaling, ordering and streams are exercised).
  OverlappedReducer(Collectives& c, size_t bucket_bytes, bool force = false);
  ~OverlappedReducer();
  OverlappedReducer(const OverlappedReducer&) = delete;
  OverlappedReducer& operator=(const OverlappedReducer&) = delete;

  // True when begin/ready/finish do anything (several ranks, or forced).
  bool active() const { return c_.size() > 1 || force_; }
  // Starts one reduction of `tensors` (one dtype and device, contiguous; undefined ones are skipped),
  // in this order, each scaled by its factor (0: contributes zeros, the content is not read).
  void begin(const std::vector<Tensor>& tensors, const std::vector<double>& factors);
  // tensors[i] holds its final value and the caller writes it no more until finish() (CUDA: the kernels
  // that write it are queued on the compute stream). Also for a tensor scaled by 0, whose content is not
  // read: its sum is written back into it.
  void ready(size_t i);
  // Marks the rest ready and returns once every tensor holds its sum (CUDA: once the compute stream
  // waits for the sums). Rethrows an error of the communication thread.
  void finish();

  int64_t buckets() const { return int64_t(bucket_first_.size()) - 1; }
  double collective_seconds() const;  // inside the collectives
  double wait_seconds() const { return wait_s_; }  // finish() waiting: the part the backward did not hide

 private:
  void layout();
  void run_bucket(size_t b);      // pack, reduce, unpack (host: any thread; CUDA: queues on the side stream)
  void launch_ready_in_order();   // host without a thread, and CUDA: the caller runs ready buckets
  void thread_main();

  Collectives& c_;
  size_t cap_;
  bool force_;
  std::vector<Tensor> t_;
  std::vector<double> f_;
  std::vector<int64_t> sizes_;          // the layout the buckets were cut for
  std::vector<size_t> bucket_of_;       // per tensor
  std::vector<size_t> bucket_first_;    // tensor index range of bucket b: [first[b], first[b+1])
  std::vector<int64_t> bucket_offset_;  // element offset of bucket b in the staging buffer
  std::vector<int> remaining_;          // per bucket: tensors not yet ready
  std::vector<char> marked_;            // per tensor
  Tensor staging_;
  bool cuda_ = false, threaded_ = false, in_session_ = false;
  size_t next_ = 0;  // the next bucket to run
  size_t done_ = 0;  // buckets finished (threaded)
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
  double collective_s_ = 0, wait_s_ = 0;
};

}  // namespace hamu
