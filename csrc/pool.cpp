// Max and average pooling, forward and backward (compiled once per ISA).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernel_common.h"
#include "small_work.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

// ---------------------------------------------------------------------------------------
// Pooling. Memory-bound. Channels-contiguous views (NHWC) take SIMD paths over channels;
// any other view (NCHW, strided) walks one channel plane at a time. Window of output
// (oh, ow): rows [oh*sh - pad_t, +KH) and columns [ow*sw - pad_l, +KW), clipped to the input.
// Backward passes split the work over (image, channel block) so their scatters never race.
// ---------------------------------------------------------------------------------------
constexpr int64_t POOL_CB = 64;  // channels per backward work item

struct Window {
  int64_t h0, h1, w0, w1;
};
inline Window window(const PoolParams& p, int64_t oh, int64_t ow) {
  const int64_t hs = oh * p.stride_h - p.pad_t, ws = ow * p.stride_w - p.pad_l;
  return {std::max<int64_t>(0, hs), std::min(p.H, hs + p.KH), std::max<int64_t>(0, ws),
          std::min(p.W, ws + p.KW)};
}

inline int64_t avg_divisor(const PoolParams& p, int64_t oh, int64_t ow) {
  const int64_t hs = oh * p.stride_h - p.pad_t, ws = ow * p.stride_w - p.pad_l;
  if (p.count_include_pad) {  // PyTorch: padded cells count, cells past the padding don't
    const int64_t he = std::min(hs + p.KH, p.H + p.pad_b), we = std::min(ws + p.KW, p.W + p.pad_r);
    return (he - hs) * (we - ws);
  }
  const Window w = window(p, oh, ow);
  return (w.h1 - w.h0) * (w.w1 - w.w0);
}

template <class V>
bool channels_contiguous(const V& v) {
  return v.c == 1 || v.sc == 1;
}

template <class Body>
void for_channel_blocks(const PoolParams& p, int nthreads, Body body) {
  nthreads = threads_for_bytes(int64_t{4} * p.N * p.H * p.W * p.C, nthreads);
  const int64_t ncb = ceil_div(p.C, POOL_CB);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t task = 0; task < p.N * ncb; ++task) {
    const int64_t n = task / ncb, c0 = (task % ncb) * POOL_CB;
    body(n, c0, std::min(p.C, c0 + POOL_CB));
  }
}

// Average pooling: a float sum stops growing once it is 2**24 times its terms (a global
// average of 8192x8192 ones came out as 0.25), and its rounding error grows with the count.
// Windows of at most kFloatSumMax cells (every pooling layer's; error at most that many ulps,
// as in a convolution's float sums) sum in float vectors; larger ones (global averages of
// big maps) in double. Each output is one thread's sum of its window in a fixed order
// (vectorized across channels only), so the result is the same for any thread count and on
// every ISA.
constexpr int64_t kFloatSumMax = 256;
constexpr int64_t kAvgBlock = 64;  // channels summed side by side in double

// One channel of one window in float: the maximum (a NaN wins, as in PyTorch) or the sum.
template <bool MAX>
inline float reduce_window(ConstView4 x, int64_t n, int64_t c, const Window& win) {
  float acc = MAX ? -std::numeric_limits<float>::infinity() : 0.f;
  for (int64_t h = win.h0; h < win.h1; ++h)
    for (int64_t w = win.w0; w < win.w1; ++w) {
      const float v = x.at(n, c, h, w);
      if (MAX) {
        if (v > acc || std::isnan(v)) acc = v;  // NaN propagates, as in PyTorch
      } else {
        acc += v;
      }
    }
  return acc;
}

// Forward max / average over one output row of a channels-contiguous view: y[c] for all
// channels, a vector of VW channels at a time (kAvgBlock for double sums).
template <bool MAX>
void pool_row_nhwc(const PoolParams& p, ConstView4 x, View4 y, int64_t n, int64_t oh) {
  for (int64_t ow = 0; ow < p.OW; ++ow) {
    const Window win = window(p, oh, ow);
    float* out = &y.at(n, 0, oh, ow);
    if (!MAX && (win.h1 - win.h0) * (win.w1 - win.w0) > kFloatSumMax) {
      const double divisor = static_cast<double>(avg_divisor(p, oh, ow));
      for (int64_t c0 = 0; c0 < p.C; c0 += kAvgBlock) {
        const int64_t nc = std::min(kAvgBlock, p.C - c0);
        double acc[kAvgBlock] = {};
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) {
            const float* src = x.ptr(n, c0, h, w);  // channels contiguous
            for (int64_t c = 0; c < nc; ++c) acc[c] += src[c];
          }
        for (int64_t c = 0; c < nc; ++c) out[c0 + c] = static_cast<float>(acc[c] / divisor);
      }
      continue;
    }
    const float scale = MAX ? 1.f : 1.f / static_cast<float>(avg_divisor(p, oh, ow));
    int64_t c = 0;
    for (; c + VW <= p.C; c += VW) {
      vf acc = vset1(MAX ? -std::numeric_limits<float>::infinity() : 0.f);
      for (int64_t h = win.h0; h < win.h1; ++h)
        for (int64_t w = win.w0; w < win.w1; ++w) {
          const vf v = vload(x.ptr(n, c, h, w));
          acc = MAX ? vmax_nan(acc, v) : vadd(acc, v);
        }
      vstore(out + c, MAX ? acc : vmul(acc, vset1(scale)));
    }
    for (; c < p.C; ++c) {
      const float acc = reduce_window<MAX>(x, n, c, win);
      out[c] = MAX ? acc : acc * scale;
    }
  }
}

// Forward over one channel plane of any view.
template <bool MAX>
void pool_plane(const PoolParams& p, ConstView4 x, View4 y, int64_t n, int64_t c) {
  for (int64_t oh = 0; oh < p.OH; ++oh)
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const Window win = window(p, oh, ow);
      if (!MAX && (win.h1 - win.h0) * (win.w1 - win.w0) > kFloatSumMax) {
        double acc = 0.0;
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) acc += x.at(n, c, h, w);
        y.at(n, c, oh, ow) = static_cast<float>(acc / static_cast<double>(avg_divisor(p, oh, ow)));
        continue;
      }
      const float acc = reduce_window<MAX>(x, n, c, win);
      y.at(n, c, oh, ow) = MAX ? acc : acc / static_cast<float>(avg_divisor(p, oh, ow));
    }
}

template <bool MAX>
void pool_forward(const PoolParams& p, ConstView4 x, View4 y, int nthreads) {
  nthreads = threads_for_bytes(int64_t{4} * p.N * p.H * p.W * p.C, nthreads);
  if (channels_contiguous(x) && channels_contiguous(y)) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t row = 0; row < p.N * p.OH; ++row)
      pool_row_nhwc<MAX>(p, x, y, row / p.OH, row % p.OH);
  } else {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t plane = 0; plane < p.N * p.C; ++plane)
      pool_plane<MAX>(p, x, y, plane / p.C, plane % p.C);
  }
}

void max_pool2d_forward(const MaxPoolForwardParams& p, ConstView4 x, View4 y, int nthreads) {
  pool_forward<true>(p, x, y, nthreads);
}
void avg_pool2d_forward(const AvgPoolForwardParams& p, ConstView4 x, View4 y, int nthreads) {
  pool_forward<false>(p, x, y, nthreads);
}

void zero_channels(View4 v, int64_t n, int64_t c0, int64_t c1) {
  for (int64_t h = 0; h < v.h; ++h)
    for (int64_t w = 0; w < v.w; ++w)
      for (int64_t c = c0; c < c1; ++c) v.at(n, c, h, w) = 0.f;
}

// Max-pool backward over windows that do not overlap (stride >= kernel: every input pixel
// is in at most one window), channels-contiguous views. For VW channels at a time: the
// window's first maximum (forward's rule, NaN wins) as a position index k, then each
// window pixel gets gy where k matches and 0 elsewhere -- plain stores, no scatter.
// Pixels outside every window (padding / leftover rows) are zeroed first when there are any.
void max_pool_backward_tiled(const PoolParams& p, ConstView4 gy, ConstView4 x, View4 gx,
                             int nthreads) {
  nthreads = threads_for_bytes(int64_t{8} * p.N * p.H * p.W * p.C, nthreads);
  const bool covered = p.pad_t == 0 && p.pad_l == 0 && p.OH * p.KH == p.H && p.OW * p.KW == p.W &&
                       p.stride_h == p.KH && p.stride_w == p.KW;
  auto window_row = [&](int64_t n, int64_t oh) {
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const Window win = window(p, oh, ow);
      const int64_t ww = win.w1 - win.w0, npos = (win.h1 - win.h0) * ww;
      if (npos <= 0) continue;
      const float* g = gy.ptr(n, 0, oh, ow);
      int64_t c = 0;
      for (; c + VW <= p.C; c += VW) {
        vf best = vload(x.ptr(n, c, win.h0, win.w0)), arg = vzero();
        for (int64_t k = 1; k < npos; ++k) {
          const vf v = vload(x.ptr(n, c, win.h0 + k / ww, win.w0 + k % ww));
          const vf kv = vset1(static_cast<float>(k));
          arg = vselect_gt_nan(v, best, kv, arg);
          best = vselect_gt_nan(v, best, v, best);
        }
        const vf gv = vload(g + c * gy.sc);
        for (int64_t k = 0; k < npos; ++k)
          vstore(&gx.at(n, c, win.h0 + k / ww, win.w0 + k % ww),
                 vselect_eq(arg, vset1(static_cast<float>(k)), gv));
      }
      for (; c < p.C; ++c) {
        float best = x.at(n, c, win.h0, win.w0);
        int64_t arg = 0;
        for (int64_t k = 1; k < npos; ++k) {
          const float v = x.at(n, c, win.h0 + k / ww, win.w0 + k % ww);
          if (v > best || std::isnan(v)) best = v, arg = k;
        }
        for (int64_t k = 0; k < npos; ++k)
          gx.at(n, c, win.h0 + k / ww, win.w0 + k % ww) = k == arg ? g[c * gy.sc] : 0.f;
      }
    }
  };
  if (covered) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t row = 0; row < p.N * p.OH; ++row) window_row(row / p.OH, row % p.OH);
  } else {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t n = 0; n < p.N; ++n) {
      zero_channels(gx, n, 0, p.C);
      for (int64_t oh = 0; oh < p.OH; ++oh) window_row(n, oh);
    }
  }
}

// Max-pool backward: each window's gradient goes to its first maximum (argmax recomputed
// from x, with the forward's rule). Channels are the inner loop, so NHWC views stream.
void max_pool2d_backward(const MaxPoolBackwardParams& p, ConstView4 gy, ConstView4 x, View4 gx,
                         int nthreads) {
  if (p.stride_h >= p.KH && p.stride_w >= p.KW && channels_contiguous(x) &&
      channels_contiguous(gx) && channels_contiguous(gy)) {
    max_pool_backward_tiled(p, gy, x, gx, nthreads);
    return;
  }
  for_channel_blocks(p, nthreads, [&](int64_t n, int64_t c0, int64_t c1) {
    zero_channels(gx, n, c0, c1);
    float best[POOL_CB];
    int64_t arg[POOL_CB];
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const Window win = window(p, oh, ow);
        for (int64_t c = c0; c < c1; ++c) {
          best[c - c0] = -std::numeric_limits<float>::infinity();
          arg[c - c0] = -1;
        }
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w)
            for (int64_t c = c0; c < c1; ++c) {
              const float v = x.at(n, c, h, w);
              if (arg[c - c0] < 0 || v > best[c - c0] || std::isnan(v)) {
                best[c - c0] = v;
                arg[c - c0] = h * p.W + w;
              }
            }
        for (int64_t c = c0; c < c1; ++c)
          gx.at(n, c, arg[c - c0] / p.W, arg[c - c0] % p.W) += gy.at(n, c, oh, ow);
      }
  });
}

void avg_pool2d_backward(const AvgPoolBackwardParams& p, ConstView4 gy, View4 gx, int nthreads) {
  for_channel_blocks(p, nthreads, [&](int64_t n, int64_t c0, int64_t c1) {
    zero_channels(gx, n, c0, c1);
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const Window win = window(p, oh, ow);
        const auto inv = static_cast<float>(1.0 / static_cast<double>(avg_divisor(p, oh, ow)));
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w)
            for (int64_t c = c0; c < c1; ++c) gx.at(n, c, h, w) += gy.at(n, c, oh, ow) * inv;
      }
  });
}

}  // namespace

void register_pool(KernelTable& t) {
  t.max_pool2d_forward = &max_pool2d_forward;
  t.max_pool2d_backward = &max_pool2d_backward;
  t.avg_pool2d_forward = &avg_pool2d_forward;
  t.avg_pool2d_backward = &avg_pool2d_backward;
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
