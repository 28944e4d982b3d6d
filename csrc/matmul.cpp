// A matrix times a few rows: the small-batch 1x1 convolution (compiled once per ISA).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernel_common.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {

// ---------------------------------------------------------------------------------------
// Matrix times a few rows: y (M, O) = x (M, C) . w (C, O) + bias, M <= kSmallMatmulRows, all dense.
// A 1x1 convolution over one or two pixels (a Dense layer at batch 1) is a stream over w:
// the MNIST CNN's 9216x128 kernel is 4.7 MB read for 1.2 MFLOP. The pixel-tile microkernel
// keeps one accumulator chain per vector there (latency-bound at a fraction of the memory
// bandwidth); here rows of w are split into fixed blocks of kRows, each block's partial sums
// are made with eight vector chains per pixel and kept apart, and the blocks are added in
// block order afterwards: the same result for any thread count.
// ---------------------------------------------------------------------------------------
void matmul_small_m(const float* x, int64_t M, int64_t C, const float* w, int64_t O,
                    const float* bias, bool relu, float* y, int nthreads) {
  constexpr int64_t kRows = kSmallMatmulBlockRows, kCols = kSmallMatmulColumnVectors * VW;
  const int64_t rblocks = ceil_div(C, kRows), cblocks = ceil_div(O, kCols);
  const int64_t Opad = cblocks * kCols;
  float* part = workspace().get(WS_AUX, {rblocks, M, Opad});  // [rblock][m][Opad]
  // A classifier head (e.g. 128 x 10) is a microsecond of work: waking a second thread
  // costs more (and, on a busy machine, a scheduler slice).
  const int threads = C * O < 32768 ? 1 : nthreads;
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
  for (int64_t rb = 0; rb < rblocks; ++rb)
    for (int64_t cb = 0; cb < cblocks; ++cb) {
      const int64_t c0 = rb * kRows, c1 = std::min(C, c0 + kRows), o0 = cb * kCols;
      const int64_t cols = std::min(kCols, O - o0);
      for (int64_t m = 0; m < M; ++m) {
        float* out = part + (rb * M + m) * Opad + o0;
        const float* xm = x + m * C;
        if (cols == kCols) {
          vf acc[kSmallMatmulColumnVectors];
          for (int v = 0; v < kSmallMatmulColumnVectors; ++v) acc[v] = vzero();
          for (int64_t c = c0; c < c1; ++c) {
            const vf xv = vset1(xm[c]);
            const float* wr = w + c * O + o0;
            for (int v = 0; v < kSmallMatmulColumnVectors; ++v)
              acc[v] = vfma(xv, vload(wr + v * VW), acc[v]);
          }
          for (int v = 0; v < kSmallMatmulColumnVectors; ++v) vstore(out + v * VW, acc[v]);
        } else {  // the last, partial column block (O not a multiple of 8 vectors)
          float acc[kCols] = {};
          for (int64_t c = c0; c < c1; ++c)
            for (int64_t o = 0; o < cols; ++o) acc[o] += xm[c] * w[c * O + o0 + o];
          std::memcpy(out, acc, sizeof(float) * static_cast<size_t>(cols));
        }
      }
    }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t o = 0; o < O; ++o) {
      float s = 0.f;
      for (int64_t rb = 0; rb < rblocks; ++rb) s += part[(rb * M + m) * Opad + o];
      if (bias) s += bias[o];
      y[m * O + o] = relu ? (s > 0.f ? s : (s == s ? 0.f : s)) : s;
    }
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
