// When a memory-bound loop (a copy, an element-wise op, pooling, a per-channel affine) is
// worth a parallel region. pyconv's threads sleep while they wait (OMP_WAIT_POLICY=passive,
// set by `import pyconv` unless the user chose a policy), so each region with more than one
// thread costs a wake-up of 17-40 us on these machines: more than a 256 KB copy takes on
// one core (~10 us). Such loops run on the calling thread alone; the results are the same
// (each output element is computed by one thread either way).
#pragma once

#include <cstdint>

namespace pyconv {

constexpr int64_t kSerialBytes = 256 * 1024;

// The team for a loop that touches `bytes` bytes: 1 below kSerialBytes, else nthreads.
inline int threads_for_bytes(int64_t bytes, int nthreads) {
  return bytes < kSerialBytes ? 1 : nthreads;
}

}  // namespace pyconv
