// A cache of large, 64-byte aligned output buffers for the arrays pyconv returns.
//
// Why: a training step allocates the same big activations and gradients every step. Fresh
// memory from the OS arrives as untouched pages, and the kernel faults and zeroes each one on
// first write: 15-20% of a CNN training step on the MNIST and CIFAR-10 networks. Keeping freed
// buffers for the next request of the same size removes that.
//
// How: take(bytes) returns a block (a cached one of the same rounded size, or a new one);
// the NumPy array that wraps it owns it through a capsule whose destructor gives it back.
// At most limit() bytes are kept idle; past that, returned blocks are freed. Small requests
// (< kMinPooledBytes) are not cached: the C allocator already reuses them without faults.
#pragma once

#include <cstddef>

namespace pyconv {

constexpr std::size_t kMinPooledBytes = std::size_t{1} << 20;  // 1 MiB

void* pool_take(std::size_t bytes);              // 64-byte aligned; throws std::bad_alloc
void pool_give(void* block, std::size_t bytes);  // bytes: as passed to pool_take
std::size_t pool_cached_bytes();
std::size_t pool_limit();
void pool_set_limit(std::size_t bytes);  // also frees idle blocks above the new limit
void pool_release();                     // frees every idle block

}  // namespace pyconv
