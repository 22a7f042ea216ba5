// engine/allocator.cpp: CPU aligned allocation and the CUDA caching allocator.
#include "engine/allocator.h"

#include <malloc.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "kernels/kernels.h"

namespace hamu {
namespace {

struct CpuAllocator {
  std::mutex mu;
  AllocatorStats stats;
};
CpuAllocator& cpu_alloc() {
  static CpuAllocator a = [] {
    // Activations are allocated and freed every step. Keep large blocks on the heap instead of
    // mmap/munmap per call, which would page-fault every byte of every activation again each step.
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return CpuAllocator{};
  }();
  return a;
}

#ifdef HAMU_CUDA
// Size classes: 512-byte granularity below 1 MiB, 128 KiB above (keeps the waste small while making
// blocks of nearby sizes interchangeable across steps).
size_t cuda_round(size_t bytes) {
  if (bytes < (size_t(1) << 20)) return (bytes + 511) / 512 * 512;
  return (bytes + (size_t(1) << 17) - 1) / (size_t(1) << 17) * (size_t(1) << 17);
}

struct CudaCache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // rounded size -> block
  AllocatorStats stats;
};
CudaCache& cuda_cache(int device) {
  static CudaCache caches[16];
  if (device < 0 || device >= 16) throw Error("cuda allocator: device index " + std::to_string(device) + " out of range");
  return caches[device];
}

void release_cached(CudaCache& c, int device) {
  for (auto& [size, ptr] : c.free_blocks) {
    kernels::cuda_free(device, ptr);
    c.stats.cached -= size;
  }
  c.free_blocks.clear();
}
#endif

}  // namespace

void* device_allocate(size_t bytes, Device device) {
  if (bytes == 0) bytes = 1;
  if (!device.is_cuda()) {
    void* p = nullptr;
    const size_t rounded = (bytes + 63) / 64 * 64;
    if (posix_memalign(&p, 64, rounded) != 0 || p == nullptr)
      throw Error("cpu allocator: out of memory allocating " + std::to_string(bytes) + " bytes");
    auto& a = cpu_alloc();
    std::lock_guard<std::mutex> lock(a.mu);
    a.stats.in_use += bytes;
    a.stats.device_allocs++;
    if (a.stats.in_use > a.stats.peak_in_use) a.stats.peak_in_use = a.stats.in_use;
    return p;
  }
#ifdef HAMU_CUDA
  const size_t size = cuda_round(bytes);
  auto& c = cuda_cache(device.index);
  std::lock_guard<std::mutex> lock(c.mu);
  // Reuse the smallest cached block that fits and wastes at most a quarter.
  auto it = c.free_blocks.lower_bound(size);
  if (it != c.free_blocks.end() && it->first <= size + size / 4) {
    void* p = it->second;
    c.stats.cached -= it->first;
    c.stats.in_use += it->first;
    c.free_blocks.erase(it);
    if (c.stats.in_use > c.stats.peak_in_use) c.stats.peak_in_use = c.stats.in_use;
    return p;
  }
  void* p = nullptr;
  try {
    p = kernels::cuda_malloc(device.index, size);
  } catch (const std::exception&) {
    release_cached(c, device.index);  // give cached blocks back and try once more
    p = kernels::cuda_malloc(device.index, size);
  }
  c.stats.in_use += size;
  c.stats.device_allocs++;
  if (c.stats.in_use > c.stats.peak_in_use) c.stats.peak_in_use = c.stats.in_use;
  return p;
#else
  throw Error("this build has no CUDA backend (rebuild with make CUDA=1)");
#endif
}

void device_deallocate(void* ptr, size_t bytes, Device device) {
  if (!ptr) return;
  if (bytes == 0) bytes = 1;
  if (!device.is_cuda()) {
    std::free(ptr);
    auto& a = cpu_alloc();
    std::lock_guard<std::mutex> lock(a.mu);
    a.stats.in_use -= bytes;
    return;
  }
#ifdef HAMU_CUDA
  const size_t size = cuda_round(bytes);
  auto& c = cuda_cache(device.index);
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.in_use -= size;
  c.stats.cached += size;
  c.free_blocks.emplace(size, ptr);
#endif
}

AllocatorStats allocator_stats(Device device) {
  if (!device.is_cuda()) {
    auto& a = cpu_alloc();
    std::lock_guard<std::mutex> lock(a.mu);
    return a.stats;
  }
#ifdef HAMU_CUDA
  auto& c = cuda_cache(device.index);
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
#else
  return {};
#endif
}

void allocator_empty_cache(Device device) {
#ifdef HAMU_CUDA
  if (device.is_cuda()) {
    auto& c = cuda_cache(device.index);
    std::lock_guard<std::mutex> lock(c.mu);
    release_cached(c, device.index);
  }
#else
  (void)device;
#endif
}

}  // namespace hamu
