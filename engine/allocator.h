// engine/allocator.h: memory for Storage. CPU: 64-byte aligned heap blocks. CUDA: a caching allocator
// (blocks are kept per size class and reused in stream order, so steady-state steps never call cudaMalloc).
#pragma once
#include <cstddef>

#include "engine/tensor.h"

namespace hamu {

void* device_allocate(size_t bytes, Device device);
void device_deallocate(void* ptr, size_t bytes, Device device);

struct AllocatorStats {
  size_t in_use = 0;        // bytes handed out and not yet returned
  size_t cached = 0;        // bytes held in free lists
  size_t peak_in_use = 0;
  size_t device_allocs = 0; // calls that reached the device allocator (cudaMalloc)
};
AllocatorStats allocator_stats(Device device);
void allocator_empty_cache(Device device);

// Private memory pools for CUDA graphs (engine/graph.h). A replayed graph writes to the addresses it saw at
// capture, so the blocks it used must not be handed to anyone else while it exists. Between
// allocator_pool_begin and allocator_pool_end every allocation on `device` is served from the new pool (or a
// fresh cudaMalloc that joins it), and every block freed in that window joins the pool too (the graph may
// have read it before the free). Blocks of a pool freed later go back to the pool, never to the shared
// cache, and outside the window nobody allocates from a pool. allocator_pool_release (the graph is gone)
// moves the pool's free blocks to the shared cache; its blocks still in use go there when they are freed.
// On the CPU these do nothing (pool 0). Pool blocks count as cached while free.
int allocator_pool_begin(Device device);
void allocator_pool_end(Device device);
void allocator_pool_release(Device device, int pool);

}  // namespace hamu
