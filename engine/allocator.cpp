// engine/allocator.cpp: CPU aligned allocation and the CUDA caching allocator.
#include "engine/allocator.h"

#include <malloc.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>
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

using FreeList = std::multimap<size_t, void*>;  // rounded size -> block

struct CudaCache {
  std::mutex mu;
  FreeList free_blocks;  // the shared cache
  AllocatorStats stats;
  // Graph pools (allocator.h): live pools' free lists, and the owner of every block a pool holds or lent.
  std::map<int, FreeList> pools;
  std::unordered_map<void*, int> owner;
  int capturing = 0;  // the pool allocations go to now (0: none)
  int next_pool = 1;
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

// Takes the smallest block of `list` that fits `size` and wastes at most a quarter (null: none).
void* take_fitting(FreeList& list, size_t size, CudaCache& c) {
  auto it = list.lower_bound(size);
  if (it == list.end() || it->first > size + size / 4) return nullptr;
  void* p = it->second;
  c.stats.cached -= it->first;
  c.stats.in_use += it->first;
  list.erase(it);
  if (c.stats.in_use > c.stats.peak_in_use) c.stats.peak_in_use = c.stats.in_use;
  return p;
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
  // Reuse the smallest cached block (of the capturing pool, when one is) that fits.
  FreeList& list = c.capturing ? c.pools.at(c.capturing) : c.free_blocks;
  if (void* p = take_fitting(list, size, c)) return p;
  void* p = nullptr;
  try {
    p = kernels::cuda_malloc(device.index, size);
  } catch (const std::exception&) {
    if (c.capturing) throw;  // freeing memory synchronises the device: not inside a capture
    release_cached(c, device.index);  // give cached blocks back and try once more
    p = kernels::cuda_malloc(device.index, size);
  }
  if (c.capturing) c.owner[p] = c.capturing;
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
  auto own = c.owner.find(ptr);
  int pool = own != c.owner.end() ? own->second : 0;
  if (pool && !c.pools.count(pool)) {  // its pool was released: the block is the cache's again
    c.owner.erase(own);
    pool = 0;
  }
  if (!pool && c.capturing) {  // freed inside a capture: the graph may have used it, so the pool keeps it
    pool = c.capturing;
    c.owner[ptr] = pool;
  }
  (pool ? c.pools.at(pool) : c.free_blocks).emplace(size, ptr);
#endif
}

int allocator_pool_begin(Device device) {
  if (!device.is_cuda()) return 0;
#ifdef HAMU_CUDA
  auto& c = cuda_cache(device.index);
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.capturing) throw Error("cuda allocator: a graph pool is already capturing on " + device.str());
  const int id = c.next_pool++;
  c.pools[id];
  c.capturing = id;
  return id;
#else
  throw Error("this build has no CUDA backend (rebuild with make CUDA=1)");
#endif
}

void allocator_pool_end(Device device) {
#ifdef HAMU_CUDA
  if (!device.is_cuda()) return;
  auto& c = cuda_cache(device.index);
  std::lock_guard<std::mutex> lock(c.mu);
  c.capturing = 0;
#else
  (void)device;
#endif
}

void allocator_pool_release(Device device, int pool) {
#ifdef HAMU_CUDA
  if (!device.is_cuda() || pool == 0) return;
  auto& c = cuda_cache(device.index);
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.pools.find(pool);
  if (it == c.pools.end()) return;
  if (c.capturing == pool) c.capturing = 0;
  for (auto& [size, ptr] : it->second) {
    c.owner.erase(ptr);
    c.free_blocks.emplace(size, ptr);
  }
  c.pools.erase(it);
#else
  (void)device;
  (void)pool;
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
