// Affine warps of images for data augmentation (compiled once per ISA).
#include <cmath>
#include <cstdint>

#include "kernel_common.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

// ---------------------------------------------------------------------------------------
// Data augmentation: y[n] = x[n] sampled through a per-image 2x3 affine map (output pixel
// (ox, oy) reads input point m * (ox, oy, 1)), bilinear, NHWC, channels innermost.
// fill: 0 constant (fill_value), 1 nearest (clamp to the edge), 2 reflect (d c b a | a b c d).
// ---------------------------------------------------------------------------------------

inline int64_t fold_index(int64_t i, int64_t n, int fill) {
  if (i >= 0 && i < n) return i;
  if (fill == 1) return i < 0 ? 0 : n - 1;
  if (fill == 2) {
    const int64_t period = 2 * n;
    int64_t r = i % period;
    if (r < 0) r += period;
    return r < n ? r : period - 1 - r;
  }
  return -1;  // constant: outside
}

void affine_warp(const float* x, int64_t N, int64_t H, int64_t W, int64_t C, const float* mats,
                 float* y, int fill, float fill_value, int nthreads) {
#pragma omp parallel for collapse(2) num_threads(nthreads) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t oy = 0; oy < H; ++oy) {
      const float* m = mats + n * 6;
      const float* img = x + n * H * W * C;
      float* out = y + ((n * H + oy) * W) * C;
      for (int64_t ox = 0; ox < W; ++ox, out += C) {
        const double sx = m[0] * ox + m[1] * oy + m[2];
        const double sy = m[3] * ox + m[4] * oy + m[5];
        const double fx0 = std::floor(sx), fy0 = std::floor(sy);
        const float ax = static_cast<float>(sx - fx0), ay = static_cast<float>(sy - fy0);
        // far outside: avoid int64 overflow on absurd matrices
        if (!(std::fabs(fx0) < 1e9 && std::fabs(fy0) < 1e9)) {
          for (int64_t c = 0; c < C; ++c) out[c] = fill == 0 ? fill_value : 0.f;
          continue;
        }
        const int64_t x0 = static_cast<int64_t>(fx0), y0 = static_cast<int64_t>(fy0);
        const int64_t xs[2] = {fold_index(x0, W, fill), fold_index(x0 + 1, W, fill)};
        const int64_t ys[2] = {fold_index(y0, H, fill), fold_index(y0 + 1, H, fill)};
        const float wx[2] = {1.f - ax, ax}, wy[2] = {1.f - ay, ay};
        for (int64_t c = 0; c < C; ++c) out[c] = 0.f;
        for (int j = 0; j < 2; ++j) {
          for (int i = 0; i < 2; ++i) {
            const float wgt = wy[j] * wx[i];
            if (wgt == 0.f) continue;
            if (ys[j] < 0 || xs[i] < 0) {
              for (int64_t c = 0; c < C; ++c) out[c] += wgt * fill_value;
              continue;
            }
            const float* src = img + (ys[j] * W + xs[i]) * C;
            for (int64_t c = 0; c < C; ++c) out[c] += wgt * src[c];
          }
        }
      }
    }
  }
}

}  // namespace

void register_warp(KernelTable& t) { t.affine_warp = &affine_warp; }

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
