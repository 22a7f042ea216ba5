// engine/overlap.cpp: buckets of gradient buffers reduced while the backward runs (engine/overlap.h).
#include "engine/overlap.h"

#include <omp.h>

#include <cstdlib>
#include <string>

#include "engine/error.h"
#include "engine/progress.h"
#include "kernels/kernels.h"

namespace hamu {

size_t overlap_bucket_bytes() {
  if (const char* o = std::getenv("HAMU_OVERLAP"); o && *o) {
    const std::string v(o);
    if (v == "0") return 0;
    if (v != "1") throw InputError("HAMU_OVERLAP: '" + v + "' is not 0 or 1");
  }
  const char* kb = std::getenv("HAMU_BUCKET_KB");
  if (!kb || !*kb) return size_t(1024) << 10;
  char* end = nullptr;
  const long long v = std::strtoll(kb, &end, 10);
  if (*end || v < 0 || v > (1ll << 30))
    throw InputError(std::string("HAMU_BUCKET_KB: '") + kb + "' is not a size in kilobytes from 0 to 1073741824");
  return size_t(v) << 10;
}

OverlappedReducer::OverlappedReducer(Collectives& c, size_t bucket_bytes, bool force)
    : c_(c), cap_(bucket_bytes), force_(force) {}

OverlappedReducer::~OverlappedReducer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

double OverlappedReducer::collective_seconds() const { return collective_s_; }

void OverlappedReducer::layout() {
  std::vector<int64_t> sizes;
  for (const Tensor& t : t_) sizes.push_back(t.defined() ? t.numel() : -1);
  const DType dt = staging_.defined() ? staging_.dtype() : DType::f32;
  const Tensor* first = nullptr;
  for (const Tensor& t : t_)
    if (t.defined()) {
      first = &t;
      break;
    }
  const bool same = sizes == sizes_ && (!first || (staging_.defined() && first->dtype() == dt &&
                                                    first->device() == staging_.device()));
  if (same && !bucket_first_.empty()) return;
  sizes_ = sizes;
  bucket_of_.assign(t_.size(), 0);
  bucket_first_.assign(1, 0);
  bucket_offset_.assign(1, 0);
  const size_t elem = first ? dtype_size(first->dtype()) : 4;
  int64_t total = 0, in_bucket = 0;
  for (size_t i = 0; i < t_.size(); ++i) {
    const int64_t n = t_[i].defined() ? t_[i].numel() : 0;
    // A bucket closes once it holds cap_ bytes; cap 0 keeps every tensor in one bucket.
    if (cap_ > 0 && in_bucket > 0 && size_t(in_bucket + n) * elem > cap_) {
      bucket_first_.push_back(i);
      bucket_offset_.push_back(total);
      in_bucket = 0;
    }
    bucket_of_[i] = bucket_first_.size() - 1;
    in_bucket += n;
    total += n;
  }
  bucket_first_.push_back(t_.size());
  bucket_offset_.push_back(total);
  staging_ = first && total > 0 ? Tensor::empty({total}, first->dtype(), first->device()) : Tensor();
}

void OverlappedReducer::begin(const std::vector<Tensor>& tensors, const std::vector<double>& factors) {
  if (!active()) return;
  if (tensors.size() != factors.size()) throw Error("overlapped all-reduce: one factor per tensor");
  if (in_session_) throw Error("overlapped all-reduce: begin() before the last reduction finished");
  const Tensor* first = nullptr;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!first) first = &t;
    if (t.dtype() != first->dtype() || t.device() != first->device() || !t.is_contiguous())
      throw Error("overlapped all-reduce: the tensors must share one dtype and device and be contiguous");
    if (t.is_cuda() && t.dtype() != DType::f32) throw Error("overlapped all-reduce: CUDA tensors must be float32");
  }
  {
    // The communication thread looks at nothing while no reduction is in progress; the lock orders
    // this set-up before what it reads once in_session_ is set.
    std::lock_guard<std::mutex> lock(mu_);
    t_ = tensors;
    f_ = factors;
    layout();
    cuda_ = first && first->is_cuda();
    const size_t nb = bucket_first_.size() - 1;
    remaining_.assign(nb, 0);
    for (size_t i = 0; i < t_.size(); ++i) ++remaining_[bucket_of_[i]];
    marked_.assign(t_.size(), 0);
    next_ = 0;
    done_ = 0;
    threaded_ = !cuda_ && c_.thread_handoff() && nb > 1;
    if (threaded_ && !thread_.joinable()) thread_ = std::thread([this] { thread_main(); });
    in_session_ = true;
  }
  // An undefined tensor is ready now. One scaled by 0 is not: its content is not read, but its bucket's
  // sums are written back into it, so that must wait until the caller's last write to it.
  for (size_t i = 0; i < t_.size(); ++i)
    if (!t_[i].defined()) ready(i);
}

void OverlappedReducer::ready(size_t i) {
  if (!active() || !in_session_ || i >= t_.size() || marked_[i]) return;
  marked_[i] = 1;
  bool bucket_done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    bucket_done = --remaining_[bucket_of_[i]] == 0;
  }
  if (!bucket_done) return;
  if (threaded_) cv_.notify_all();
  else launch_ready_in_order();
}

void OverlappedReducer::launch_ready_in_order() {
  const size_t nb = bucket_first_.size() - 1;
  while (next_ < nb && remaining_[next_] == 0) run_bucket(next_++);
}

void OverlappedReducer::finish() {
  if (!active() || !in_session_) return;
  for (size_t i = 0; i < t_.size(); ++i) ready(i);
  const size_t nb = bucket_first_.size() - 1;
  const double t0 = now_s();
  if (threaded_) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_ == nb || error_; });
  }
#ifdef HAMU_CUDA
  if (cuda_ && staging_.defined()) {
    const int dev = staging_.device().index;
    kernels::cuda_stream_wait(kernels::cuda_context(dev), kernels::cuda_side_context(dev));
  }
#endif
  wait_s_ += now_s() - t0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_session_ = false;
  }
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void OverlappedReducer::thread_main() {
  omp_set_num_threads(1);  // packing is a copy; the cores belong to the backward
  const YieldingWaits polite;  // and the collectives wait for the other ranks without spinning
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return stop_ || (in_session_ && threaded_ && next_ < remaining_.size() && remaining_[next_] == 0 && !error_);
    });
    if (stop_) return;
    const size_t b = next_++;
    lock.unlock();
    try {
      run_bucket(b);
    } catch (...) {
      lock.lock();
      error_ = std::current_exception();
      cv_.notify_all();
      continue;
    }
    lock.lock();
    ++done_;
    cv_.notify_all();
  }
}

namespace {

template <class Ctx, class T>
void pack(const Ctx& ctx, const std::vector<Tensor>& t, const std::vector<double>& f, size_t lo, size_t hi, T* s) {
  for (size_t i = lo; i < hi; ++i) {
    if (!t[i].defined()) continue;
    const int64_t n = t[i].numel();
    if (f[i] == 0) kernels::fill(ctx, n, T(0), s);
    else if (f[i] == 1) kernels::copy(ctx, n, t[i].data<T>(), s);
    else kernels::affine(ctx, n, t[i].data<T>(), T(f[i]), T(0), s);
    s += n;
  }
}

template <class Ctx, class T>
void unpack(const Ctx& ctx, const std::vector<Tensor>& t, size_t lo, size_t hi, const T* s) {
  for (size_t i = lo; i < hi; ++i) {
    if (!t[i].defined()) continue;
    kernels::copy(ctx, t[i].numel(), s, t[i].data<T>());
    s += t[i].numel();
  }
}

}  // namespace

void OverlappedReducer::run_bucket(size_t b) {
  const size_t lo = bucket_first_[b], hi = bucket_first_[b + 1];
  const int64_t off = bucket_offset_[b], n = bucket_offset_[b + 1] - off;
  if (n == 0) return;
  if (cuda_) {
#ifdef HAMU_CUDA
    const int dev = staging_.device().index;
    const kernels::CudaCtx& main = kernels::cuda_context(dev);
    const kernels::CudaCtx& side = kernels::cuda_side_context(dev);
    float* s = staging_.data<float>() + off;
    kernels::cuda_stream_wait(side, main);  // the bucket's gradients are queued on the compute stream
    pack(side, t_, f_, lo, hi, s);
    const double t0 = now_s();
    c_.all_reduce_sum_async(s, size_t(n), staging_.device(), side.stream);
    collective_s_ += now_s() - t0;
    unpack(side, t_, lo, hi, static_cast<const float*>(s));
#else
    throw Error("overlapped all-reduce: this build has no CUDA backend");
#endif
    return;
  }
  const kernels::CpuCtx ctx{};
  auto host = [&](auto tag) {
    using T = decltype(tag);
    T* s = staging_.data<T>() + off;
    pack(ctx, t_, f_, lo, hi, s);
    const double t0 = now_s();
    c_.all_reduce_sum(s, size_t(n), Device{});
    collective_s_ += now_s() - t0;
    unpack(ctx, t_, lo, hi, static_cast<const T*>(s));
  };
  if (staging_.dtype() == DType::f64) host(double{});
  else if (staging_.dtype() == DType::f32) host(float{});
  else throw Error("overlapped all-reduce: expects float32 or float64 tensors");
}

}  // namespace hamu
