// When a memory-bound loop (a copy, an element-wise op, pooling, a per-channel affine) is
// worth a parallel region. pyconv's threads sleep while they wait (OMP_WAIT_POLICY=passive,
// set by `import pyconv` unless the user chose a policy), so each region with more than one
// thread pays a wake-up (a batch-1 MNIST CNN predict: 0.39 ms instead of 0.15 ms spinning,
// bench/results/2026-12-03-contention.md), which a 256 KB copy does not earn back. Such
// loops run on the calling thread alone; the results are the same (each output element is
// computed by one thread either way).
#pragma once

#include <cstdint>

namespace pyconv {

constexpr int64_t kSerialBytes = 256 * 1024;

// The team for a loop that touches `bytes` bytes: 1 below kSerialBytes, else nthreads.
inline int threads_for_bytes(int64_t bytes, int nthreads) {
  return bytes < kSerialBytes ? 1 : nthreads;
}

}  // namespace pyconv
