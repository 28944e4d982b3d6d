// Element-wise kernels: dropout, ReLU backward, the SGD and Adam steps (compiled once per ISA).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernel_common.h"
#include "small_work.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

// ---------------------------------------------------------------------------------------
// Dropout. The mask bit of element i is a hash of (i, key): two rounds of the "lowbias32"
// integer finalizer (C. Wellons), 32-bit multiplies and shifts only, so every ISA vectorizes
// it and all give bit-identical masks. keep when the hash >= threshold = rate * 2^32.
// ---------------------------------------------------------------------------------------
inline uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7feb352dU;
  h ^= h >> 15;
  h *= 0x846ca68bU;
  h ^= h >> 16;
  return h;
}

void dropout(const float* x, int64_t n, uint32_t threshold, float scale, uint64_t key, float* y,
             int nthreads) {
  const uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  constexpr int64_t kBlock = 1 << 14;
  nthreads = threads_for_bytes(int64_t{8} * n, nthreads);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < ceil_div(n, kBlock); ++b) {
    const int64_t end = std::min(n, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) {
      const uint32_t h = mix32(mix32(static_cast<uint32_t>(i) ^ k0) + k1);
      y[i] = h >= threshold ? x[i] * scale : 0.f;
    }
  }
}

void relu_backward(const float* dy, const float* y, int64_t n, float* dx, int nthreads) {
  constexpr int64_t kBlock = 1 << 14;
  nthreads = threads_for_bytes(int64_t{8} * n, nthreads);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < ceil_div(n, kBlock); ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    for (int64_t i = lo; i < hi; ++i) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
  }
}

// Adam: one pass over the parameters instead of NumPy's eight (and no temporaries).
void adam_update(float* w, const float* g, float* m, float* v, float* vhat, int64_t n, float step,
                 float beta_1, float beta_2, float eps, int nthreads) {
  const float a1 = 1.f - beta_1, a2 = 1.f - beta_2;
  constexpr int64_t kBlock = 1 << 14;
  nthreads = threads_for_bytes(int64_t{8} * n, nthreads);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < ceil_div(n, kBlock); ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    if (vhat) {
      for (int64_t i = lo; i < hi; ++i) {
        m[i] += (g[i] - m[i]) * a1;
        v[i] += (g[i] * g[i] - v[i]) * a2;
        vhat[i] = std::max(vhat[i], v[i]);
        w[i] -= step * m[i] / (std::sqrt(vhat[i]) + eps);
      }
    } else {
      for (int64_t i = lo; i < hi; ++i) {
        m[i] += (g[i] - m[i]) * a1;
        v[i] += (g[i] * g[i] - v[i]) * a2;
        w[i] -= step * m[i] / (std::sqrt(v[i]) + eps);
      }
    }
  }
}

// SGD: w -= lr*g; with momentum m = mu*m - lr*g, then w += m (Nesterov: w += mu*m - lr*g).
// One pass instead of NumPy's four, and no lr*g temporary the size of the weights (400 MB for
// VGG-16's first dense layer). m == nullptr: no momentum.
void sgd_update(float* w, const float* g, float* m, int64_t n, float lr, float momentum,
                bool nesterov, int nthreads) {
  constexpr int64_t kBlock = 1 << 14;
  nthreads = threads_for_bytes(int64_t{8} * n, nthreads);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < ceil_div(n, kBlock); ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    if (!m) {
      for (int64_t i = lo; i < hi; ++i) w[i] -= lr * g[i];
    } else if (nesterov) {
      for (int64_t i = lo; i < hi; ++i) {
        m[i] = momentum * m[i] - lr * g[i];
        w[i] += momentum * m[i] - lr * g[i];
      }
    } else {
      for (int64_t i = lo; i < hi; ++i) {
        m[i] = momentum * m[i] - lr * g[i];
        w[i] += m[i];
      }
    }
  }
}

}  // namespace

void register_eltwise(KernelTable& t) {
  t.dropout = &dropout;
  t.relu_backward = &relu_backward;
  t.adam_update = &adam_update;
  t.sgd_update = &sgd_update;
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
