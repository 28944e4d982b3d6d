// Layout experiment behind pyconv's choice of channels-last (NHWC) inside the core.
//
// Two register-blocked AVX-512 direct convolutions (3x3, stride 1, input pre-padded by 1,
// no bias), single thread, same FLOPs:
//   (A) NCHW, vectorized along output width: 12 output channels x 2 vectors of 16 output
//       pixels of one row in registers (24 accumulators); per (input channel, tap): 2
//       unaligned input loads, 12 weight broadcasts from a packed [O/12][C][9][12] buffer.
//   (B) NHWC, vectorized along output channels (pyconv's scheme): 6 output pixels x 4
//       vectors of 16 output channels (24 accumulators); per (tap, input channel): 4 weight
//       loads from a packed [tap][c][64] buffer, 6 input broadcasts.
// Both are checked against a naive loop. Also timed: converting NCHW to padded NHWC, the
// cost pyconv pays when handed NCHW arrays.
//
// Build and run: bench/layout/run.sh
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

using Clock = std::chrono::steady_clock;

template <class F>
double best_seconds(F f, int reps = 5) {
  f();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// (A) x: [C][H+2][W+2] padded NCHW (one image), w: packed [O/12][C][9][12] (zero past O),
// y: [O][H][W].
void conv_nchw(const float* x, const float* w, float* y, int C, int O, int H, int W) {
  const int Wp = W + 2, Hp = H + 2;
  constexpr int OB = 12;
  for (int o0 = 0; o0 < O; o0 += OB) {
    const int ob = std::min(OB, O - o0);
    for (int h = 0; h < H; ++h) {
      for (int w0 = 0; w0 < W; w0 += 32) {
        const int nw = std::min(32, W - w0);
        const __mmask16 m0 = nw >= 16 ? 0xFFFF : (__mmask16)((1u << nw) - 1);
        const __mmask16 m1 =
            nw <= 16 ? 0 : (nw >= 32 ? 0xFFFF : (__mmask16)((1u << (nw - 16)) - 1));
        __m512 acc[OB][2];
        for (int i = 0; i < OB; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        for (int c = 0; c < C; ++c) {
          for (int kh = 0; kh < 3; ++kh) {
            const float* row = x + ((size_t)c * Hp + h + kh) * Wp + w0;
            for (int kw = 0; kw < 3; ++kw) {
              const __m512 v0 = _mm512_maskz_loadu_ps(m0, row + kw);
              const __m512 v1 = _mm512_maskz_loadu_ps(m1, row + kw + 16);
              const float* wp = w + (((size_t)(o0 / OB) * C + c) * 9 + kh * 3 + kw) * OB;
#pragma GCC unroll 12
              for (int i = 0; i < OB; ++i) {
                const __m512 b = _mm512_set1_ps(wp[i]);
                acc[i][0] = _mm512_fmadd_ps(b, v0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(b, v1, acc[i][1]);
              }
            }
          }
        }
        for (int i = 0; i < ob; ++i) {
          float* out = y + ((size_t)(o0 + i) * H + h) * W + w0;
          _mm512_mask_storeu_ps(out, m0, acc[i][0]);
          _mm512_mask_storeu_ps(out + 16, m1, acc[i][1]);
        }
      }
    }
  }
}

// (B) x: [H+2][W+2][C] padded NHWC, wp: [O/64][9][C][64] packed, y: [H][W][O]. O % 64 == 0.
void conv_nhwc(const float* x, const float* wp, float* y, int C, int O, int H, int W) {
  const int Wp = W + 2;
  constexpr int P = 6;
  for (int ot = 0; ot < O / 64; ++ot) {
    const float* wt = wp + (size_t)ot * 9 * C * 64;
    for (int m0 = 0; m0 < H * W; m0 += P) {
      const int np = std::min(P, H * W - m0);
      size_t off[P];
      for (int p = 0; p < P; ++p) {
        const int m = m0 + std::min(p, np - 1);
        off[p] = ((size_t)(m / W) * Wp + m % W) * C;
      }
      __m512 acc[P][4];
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < 4; ++v) acc[p][v] = _mm512_setzero_ps();
      for (int t = 0; t < 9; ++t) {
        const float* xt = x + ((size_t)(t / 3) * Wp + t % 3) * C;
        const float* wtt = wt + (size_t)t * C * 64;
        for (int c = 0; c < C; ++c) {
          __m512 wv[4];
          for (int v = 0; v < 4; ++v) wv[v] = _mm512_loadu_ps(wtt + c * 64 + v * 16);
#pragma GCC unroll 6
          for (int p = 0; p < P; ++p) {
            const __m512 b = _mm512_set1_ps(xt[off[p] + c]);
            for (int v = 0; v < 4; ++v) acc[p][v] = _mm512_fmadd_ps(b, wv[v], acc[p][v]);
          }
        }
      }
      for (int p = 0; p < np; ++p)
        for (int v = 0; v < 4; ++v)
          _mm512_storeu_ps(y + (size_t)(m0 + p) * O + ot * 64 + v * 16, acc[p][v]);
    }
  }
}

double peak_gflops() {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  const long iters = 20000000;
  auto t0 = Clock::now();
  for (long k = 0; k < iters; ++k)
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < 24; ++i) sum = _mm512_add_ps(sum, acc[i]);
  volatile float keep = _mm512_reduce_add_ps(sum);
  (void)keep;
  return 2.0 * 16 * 24 * iters / s * 1e-9;
}

int main() {
  struct Shape {
    int C, O, H, W;
  };
  const Shape shapes[] = {{32, 64, 32, 32},   {64, 64, 32, 32}, {128, 128, 16, 16},
                          {256, 256, 14, 14}, {512, 512, 7, 7}, {64, 64, 56, 56}};
  std::printf("single-core AVX-512 FMA peak: %.1f GFLOP/s\n", peak_gflops());
  std::printf(
      "| C -> O | HxW | NCHW (along W) GFLOP/s | NHWC (along C) GFLOP/s | NCHW->NHWC "
      "pack, %% of NHWC conv time |\n|---|---|---|---|---|\n");
  for (const Shape& s : shapes) {
    const int Hp = s.H + 2, Wp = s.W + 2;
    std::vector<float> x((size_t)s.C * s.H * s.W), w((size_t)s.O * s.C * 9);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
    for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(0.11f * i) * 0.1f;
    std::vector<float> xa((size_t)s.C * Hp * Wp, 0.f), xb((size_t)Hp * Wp * s.C, 0.f);
    auto pack = [&] {  // NCHW -> padded NHWC, the conversion pyconv does
      for (int h = 0; h < s.H; ++h)
        for (int c = 0; c < s.C; ++c)
          for (int ww = 0; ww < s.W; ++ww)
            xb[((size_t)(h + 1) * Wp + ww + 1) * s.C + c] = x[((size_t)c * s.H + h) * s.W + ww];
    };
    for (int c = 0; c < s.C; ++c)
      for (int h = 0; h < s.H; ++h)
        std::memcpy(&xa[((size_t)c * Hp + h + 1) * Wp + 1], &x[((size_t)c * s.H + h) * s.W],
                    sizeof(float) * s.W);
    pack();
    std::vector<float> wp((size_t)s.O * 9 * s.C);
    for (int o = 0; o < s.O; ++o)
      for (int c = 0; c < s.C; ++c)
        for (int t = 0; t < 9; ++t)
          wp[(((size_t)(o / 64) * 9 + t) * s.C + c) * 64 + o % 64] =
              w[((size_t)o * s.C + c) * 9 + t];
    const int ob = (s.O + 11) / 12;
    std::vector<float> wa((size_t)ob * s.C * 9 * 12, 0.f);
    for (int o = 0; o < s.O; ++o)
      for (int c = 0; c < s.C; ++c)
        for (int t = 0; t < 9; ++t)
          wa[(((size_t)(o / 12) * s.C + c) * 9 + t) * 12 + o % 12] =
              w[((size_t)o * s.C + c) * 9 + t];
    std::vector<float> ya((size_t)s.O * s.H * s.W), yb((size_t)s.H * s.W * s.O);
    const double ta =
        best_seconds([&] { conv_nchw(xa.data(), wa.data(), ya.data(), s.C, s.O, s.H, s.W); });
    const double tb =
        best_seconds([&] { conv_nhwc(xb.data(), wp.data(), yb.data(), s.C, s.O, s.H, s.W); });
    const double tp = best_seconds(pack);
    // naive check on a few outputs
    double maxerr = 0, scale = 1e-6;
    for (int o = 0; o < s.O; o += 7)
      for (int h = 0; h < s.H; h += 3)
        for (int ww = 0; ww < s.W; ww += 5) {
          double ref = 0;
          for (int c = 0; c < s.C; ++c)
            for (int kh = 0; kh < 3; ++kh)
              for (int kw = 0; kw < 3; ++kw)
                ref += (double)xa[((size_t)c * Hp + h + kh) * Wp + ww + kw] *
                       w[(((size_t)o * s.C + c) * 3 + kh) * 3 + kw];
          scale = std::max(scale, std::fabs(ref));
          maxerr = std::max(maxerr, std::fabs(ref - ya[((size_t)o * s.H + h) * s.W + ww]));
          maxerr = std::max(maxerr, std::fabs(ref - yb[((size_t)h * s.W + ww) * s.O + o]));
        }
    if (maxerr > 1e-4 * scale) {
      std::printf("MISMATCH C=%d: err %g\n", s.C, maxerr);
      return 1;
    }
    const double flops = 2.0 * s.O * s.H * s.W * s.C * 9;
    std::printf("| %d -> %d | %dx%d | %.1f | %.1f | %.0f%% |\n", s.C, s.O, s.H, s.W,
                flops / ta * 1e-9, flops / tb * 1e-9, 100 * tp / tb);
  }
  return 0;
}
