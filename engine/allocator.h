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

}  // namespace hamu
