// engine/collectives.cpp: the single-process group, the choice of the world, fingerprints, the packed
// tensor all-reduce, the watchdog and the command's process-group scope.
#include "engine/collectives.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "engine/collectives_impl.h"
#include "engine/dispatch.h"
#include "engine/error.h"
#include "engine/progress.h"

namespace hamu {
namespace {

class SingleProcess final : public Collectives {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(float*, size_t, Device) override {}
  void all_reduce_sum(double*, size_t, Device) override {}
  void broadcast(void*, size_t, int root, Device) override {
    if (root != 0) throw Error("broadcast: root " + std::to_string(root) + " of a single process");
  }
  void barrier() override {}
  std::vector<uint8_t> all_gather(const void* data, size_t bytes) override {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    return std::vector<uint8_t>(p, p + bytes);
  }
};

std::unique_ptr<Collectives>& world_slot() {
  static std::unique_ptr<Collectives> w;
  return w;
}

FILE*& error_file() {
  static FILE* f = stderr;
  return f;
}

double env_seconds(const char* name, double fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  if (end == v || *end || !(s >= 0) || !std::isfinite(s))
    throw InputError(std::string(name) + ": '" + v + "' is not a number of seconds >= 0");
  return s;
}

}  // namespace

#ifndef HAMU_MPI
std::unique_ptr<Collectives> make_mpi_world() { return nullptr; }
#endif
#ifndef HAMU_NCCL
std::unique_ptr<DeviceCollectives> make_nccl(Collectives&, Device device) {
  throw Error("collectives on " + device.str() + " buffers need the NCCL build (make MPI=1 CUDA=1)");
}
void select_local_gpu(int, int) {}
#endif

Collectives& single_process() {
  static SingleProcess s;
  return s;
}

Collectives& world() {
  std::unique_ptr<Collectives>& w = world_slot();
  if (!w) {
    w = make_mpi_world();
    if (!w) w = std::make_unique<SingleProcess>();
  }
  return *w;
}

Shard shard_of(int64_t n, int part, int parts) {
  const int64_t lo = n * part / parts, hi = n * (part + 1) / parts;
  return {lo, hi - lo};
}

// ---- fingerprints --------------------------------------------------------------------------------

uint64_t hash_bytes(const void* data, size_t bytes, uint64_t h) {
  // Eight bytes per round (FNV-1a's prime on words): fast enough to fingerprint a model's weights.
  const uint8_t* p = static_cast<const uint8_t*>(data);
  constexpr uint64_t prime = 1099511628211ull;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * prime;
  }
  for (; i < bytes; ++i) h = (h ^ p[i]) * prime;
  return (h ^ bytes) * prime;
}

uint64_t hash_string(const std::string& s, uint64_t seed) { return hash_bytes(s.data(), s.size(), seed); }

uint64_t hash_tensors(const std::vector<Tensor>& tensors, uint64_t h) {
  for (const Tensor& t : tensors) {
    if (!t.defined()) {
      h = hash_string("undefined", h);
      continue;
    }
    h = hash_bytes(t.shape().data(), t.shape().size() * sizeof(int64_t), h);
    h = hash_string(dtype_name(t.dtype()), h);
    const Tensor host = t.contiguous().to(Device{});
    h = hash_bytes(host.raw(), size_t(host.numel()) * dtype_size(host.dtype()), h);
  }
  return h;
}

void check_same_on_all_ranks(Collectives& c, const std::string& what, uint64_t fingerprint) {
  if (c.size() == 1) return;
  const std::vector<uint8_t> all = c.all_gather(&fingerprint, sizeof fingerprint);
  uint64_t root;
  std::memcpy(&root, all.data(), sizeof root);
  for (int r = 1; r < c.size(); ++r) {
    uint64_t v;
    std::memcpy(&v, all.data() + size_t(r) * sizeof v, sizeof v);
    if (v != root)
      throw InputError("ranks disagree on the " + what + ": rank " + std::to_string(r) + " of " +
                       std::to_string(c.size()) +
                       " differs from rank 0 (every rank must run the same command on the same model, data, "
                       "seed, options and thread count)");
  }
}

// ---- packed tensor all-reduce --------------------------------------------------------------------

void TensorReducer::all_reduce(const std::vector<Tensor*>& tensors, const std::vector<double>& factors) {
  if (tensors.size() != factors.size()) throw Error("all_reduce: one factor per tensor");
  const Tensor* first = nullptr;
  int64_t total = 0;
  for (const Tensor* t : tensors) {
    if (!t || !t->defined()) continue;
    if (!first) first = t;
    if (t->dtype() != first->dtype() || t->device() != first->device() || !t->is_contiguous())
      throw Error("all_reduce: the tensors must share one dtype and device and be contiguous");
    total += t->numel();
  }
  if (!first || total == 0) return;
  if (!staging_.defined() || staging_.numel() < total || staging_.dtype() != first->dtype() ||
      staging_.device() != first->device())
    staging_ = Tensor::empty({total}, first->dtype(), first->device());
  dispatch("all_reduce", staging_, [&](const auto& ctx, auto tag) {
    using T = decltype(tag);
    T* s = staging_.data<T>();
    int64_t off = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const Tensor* t = tensors[i];
      if (!t || !t->defined()) continue;
      const int64_t n = t->numel();
      if (factors[i] == 0) kernels::fill(ctx, n, T(0), s + off);
      else if (factors[i] == 1) kernels::copy(ctx, n, t->data<T>(), s + off);
      else kernels::affine(ctx, n, t->data<T>(), T(factors[i]), T(0), s + off);
      off += n;
    }
    const double t0 = now_s();
    c_.all_reduce_sum(s, size_t(total), staging_.device());
    seconds_ += now_s() - t0;
    off = 0;
    for (const Tensor* t : tensors) {
      if (!t || !t->defined()) continue;
      kernels::copy(ctx, t->numel(), s + off, t->data<T>());
      off += t->numel();
    }
  });
}

namespace {
thread_local bool t_yielding = false;
}  // namespace

YieldingWaits::YieldingWaits() : prev_(t_yielding) { t_yielding = true; }
YieldingWaits::~YieldingWaits() { t_yielding = prev_; }
bool yielding_waits() { return t_yielding; }

void all_reduce_host(Collectives& c, std::vector<double>& values) {
  if (c.size() == 1 || values.empty()) return;
  c.all_reduce_sum(values.data(), values.size(), Device{});
}

// ---- watchdog ------------------------------------------------------------------------------------

Watchdog::Watchdog(int rank, int size) : rank_(rank), size_(size) {
  timeout_s_ = env_seconds("HAMU_COLLECTIVE_TIMEOUT", 300);
  if (const char* f = std::getenv("HAMU_FAULT"); f && *f) {
    char kind[8] = {0};
    int r = -1;
    long long k = 0;
    if (std::sscanf(f, "%7[a-z]:%d:%lld", kind, &r, &k) != 3 || k < 1 ||
        (std::strcmp(kind, "die") != 0 && std::strcmp(kind, "hang") != 0))
      throw InputError(std::string("HAMU_FAULT: '") + f + "' is not die:RANK:CALL or hang:RANK:CALL");
    fault_rank_ = r;
    fault_call_ = k;
    fault_hang_ = std::strcmp(kind, "hang") == 0;
  }
  if (timeout_s_ > 0 && size_ > 1) thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::run() {
  const auto tick = std::chrono::duration<double>(std::min(1.0, timeout_s_ / 4));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, tick);
    const char* name = current_.load();
    if (stop_ || !name) continue;
    const double waited = now_s() - started_.load();
    if (waited < timeout_s_) continue;
    std::fprintf(error_stream(),
                 "hamu: rank %d of %d: collective '%s' (call %lld) has waited %.0f s for the other ranks "
                 "(HAMU_COLLECTIVE_TIMEOUT=%g): a rank has died or hangs; stopping this rank\n",
                 rank_, size_, name, current_call_.load(), waited, timeout_s_);
    std::fflush(error_stream());
    std::_Exit(1);  // no MPI_Finalize: mpirun sees the failure and stops the remaining ranks
  }
}

Watchdog::Guard::Guard(Watchdog& w, const char* name)
    : w_(w), prev_(w.current_.load()), prev_started_(w.started_.load()) {
  const long long call = ++w.calls_;
  if (call == w.fault_call_ && w.rank_ == w.fault_rank_) {
    std::fprintf(error_stream(), "hamu: rank %d: HAMU_FAULT: %s in collective '%s' (call %lld)\n", w.rank_,
                 w.fault_hang_ ? "hanging" : "dying", name, call);
    std::fflush(error_stream());
    if (!w.fault_hang_) std::_Exit(3);
  }
  w.current_call_ = call;
  w.started_ = now_s();
  w.current_ = name;
  if (call == w.fault_call_ && w.rank_ == w.fault_rank_)
    for (;;) ::sleep(1000);  // the injected hang: this rank's own watchdog ends it too
}

Watchdog::Guard::~Guard() {
  w_.started_ = prev_started_;
  w_.current_ = prev_;
}

// ---- the command's process group -----------------------------------------------------------------

FILE* error_stream() { return error_file(); }

const std::string& rank_prefix() {
  static const std::string p = world().size() == 1 ? std::string()
                                                   : "rank " + std::to_string(world().rank()) + "/" +
                                                         std::to_string(world().size()) + ": ";
  return p;
}

ProcessGroupScope::ProcessGroupScope() {
  Collectives* wp = nullptr;
  try {
    wp = &world();
  } catch (const std::exception& e) {  // a bad HAMU_COLLECTIVE_TIMEOUT or HAMU_FAULT: bad usage
    std::fprintf(stderr, "hamu: error: %s\n", e.what());
    std::_Exit(2);
  }
  Collectives& w = *wp;
  const char* keep = std::getenv("HAMU_RANK_OUTPUT");
  if (w.rank() == 0 || (keep && std::strcmp(keep, "all") == 0)) return;
  std::fflush(stdout);
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int null = ::open("/dev/null", O_WRONLY);
  if (saved < 0 || null < 0) return;  // cannot quiet this rank: it prints too, which is harmless
  FILE* errors = ::fdopen(saved, "w");
  if (!errors) return;
  error_file() = errors;
  ::dup2(null, 1);
  ::dup2(null, 2);
  ::close(null);
}

ProcessGroupScope::~ProcessGroupScope() = default;

int ProcessGroupScope::finish(int rc) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::fflush(error_stream());
  if (rc != 0 && world().size() > 1) std::_Exit(rc);  // see the class comment
  world_slot().reset();  // MPI_Finalize (after NCCL's communicator is destroyed)
  return rc;
}

}  // namespace hamu
