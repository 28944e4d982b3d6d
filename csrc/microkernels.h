// The register-blocked microkernels the convolution units share (compiled once per ISA, as
// part of each unit that includes it).
//
// conv_tile:  out[p][0:NT] (+)= sum_t sum_c in[in_off[t] + p*in_pix + c] * w[w_off[t] + c*NT +
// 0:NT] i.e. P output pixels x NT = NV*VW output channels in registers, reduced over taps t and
// channels c, broadcasting one input scalar per (pixel, channel) and loading NV weight
// vectors per (tap, channel).
//   forward:        in = padded x,  channels c = C/groups, out = y (NT output channels)
//   backward-data:  in = padded gy, channels c = O/groups, out = gx (NT input channels),
//                   taps = the kernel taps that land on this input pixel's stride phase.
//   Winograd:       in = transformed input tiles, one tap, out = the 16 GEMMs' products.
// wgrad_tile (weight gradient): I input channels x NT output channels in registers, reduced
// over output pixels.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernel_common.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {

// Register blocking for this ISA (conv_plan.h has the rules).
constexpr int ACC = accumulator_regs(NUM_VREGS);
constexpr int NV_MAX = max_tile_vectors(NUM_VREGS);
constexpr int pmax_for(int nv) { return tile_pixels(nv, NUM_VREGS); }
constexpr int wgrad_rows_for(int nv) { return wgrad_tile_rows(nv, NUM_VREGS); }
inline Tiling choose_tiling(int64_t channels) { return pyconv::choose_tiling(channels, kIsa); }

struct TileArgs {
  const float* in;         // input at channel 0 (and pixel 0 for strided tiles)
  int64_t in_pix;          // strided tiles: stride between consecutive pixels
  const int64_t* pix_off;  // gathered tiles: [P] offset of each pixel
  const int64_t* in_off;   // [ntaps] offsets of each tap
  const int64_t* w_off;    // [ntaps] offsets into w of each tap
  int ntaps;
  int64_t C;          // channels reduced per tap
  const float* w;     // [..][C][w_row]: NT lanes per channel row (packed: w_row == NT)
  int64_t w_row;      // floats between consecutive channel rows of w
  float* out;         // first pixel, first output channel of the tile
  int64_t out_pix;    // stride between output pixels
  int oc_valid;       // output channels actually stored (<= NT)
  const float* bias;  // [NT] or null
  bool relu;          // store max(acc, 0) (NaN stays NaN)
};

template <int P, int NV, bool GATHER>
void conv_tile(const TileArgs& a) {
  constexpr int NT = NV * VW;
  vf acc[P][NV];
#pragma GCC unroll 32
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[p][v] = a.bias ? vload(a.bias + v * VW) : vzero();
  int64_t po[P];  // pixel offsets: a stride, or a table when a tile wraps across rows
#pragma GCC unroll 32
  for (int p = 0; p < P; ++p) po[p] = GATHER ? a.pix_off[p] : p * a.in_pix;
  for (int t = 0; t < a.ntaps; ++t) {
    const float* ip = a.in + a.in_off[t];
    const float* wp = a.w + a.w_off[t];
    for (int64_t c = 0; c < a.C; ++c) {
      vf wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = vload(wp + c * a.w_row + v * VW);
#pragma GCC unroll 32
      for (int p = 0; p < P; ++p) {
        const vf xb = vset1(ip[po[p] + c]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[p][v] = vfma(xb, wv[v], acc[p][v]);
      }
    }
  }
  if (a.relu) {
#pragma GCC unroll 32
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[p][v] = vmax_nan(vzero(), acc[p][v]);
  }
  if (a.oc_valid == NT) {
#pragma GCC unroll 32
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) vstore(a.out + p * a.out_pix + v * VW, acc[p][v]);
  } else {
    alignas(64) float tmp[NT];
    for (int p = 0; p < P; ++p) {
      for (int v = 0; v < NV; ++v) vstore(tmp + v * VW, acc[p][v]);
      std::memcpy(a.out + p * a.out_pix, tmp, sizeof(float) * a.oc_valid);
    }
  }
}

using TileFn = void (*)(const TileArgs&);

template <int NV, bool GATHER, int... Ps>
constexpr std::array<TileFn, sizeof...(Ps)> conv_tile_row(std::integer_sequence<int, Ps...>) {
  return {&conv_tile<Ps + 1, NV, GATHER>...};
}

// conv_tile_fn<GATHER>(nv, p): the instantiation for nv vectors x p pixels, 1 <= p <= pmax.
template <bool GATHER>
TileFn conv_tile_fn(int nv, int p) {
  static const auto r1 = conv_tile_row<1, GATHER>(std::make_integer_sequence<int, pmax_for(1)>{});
  static const auto r2 = conv_tile_row<2, GATHER>(std::make_integer_sequence<int, pmax_for(2)>{});
  if (nv == 1) return r1[p - 1];
  if (nv == 2) return r2[p - 1];
  if constexpr (NV_MAX >= 4) {
    static const auto r3 = conv_tile_row<3, GATHER>(std::make_integer_sequence<int, pmax_for(3)>{});
    static const auto r4 = conv_tile_row<4, GATHER>(std::make_integer_sequence<int, pmax_for(4)>{});
    if (nv == 3) return r3[p - 1];
    return r4[p - 1];
  }
  return nullptr;
}

// Run a row of `count` output pixels through tiles of up to t.pmax pixels.
inline void conv_row(const Tiling& t, TileArgs a, int64_t count) {
  const TileFn full = conv_tile_fn<false>(t.nv, t.pmax);
  int64_t done = 0;
  for (; done + t.pmax <= count; done += t.pmax) {
    full(a);
    a.in += t.pmax * a.in_pix;
    a.out += t.pmax * a.out_pix;
  }
  if (done < count) conv_tile_fn<false>(t.nv, static_cast<int>(count - done))(a);
}

struct WgradArgs {
  const float* x;       // x_pad at image 0, output row 0, pixel 0 (+ group offset)
  const int64_t* xoff;  // offsets of the tile's rows k (tap offset + channel)
  const float* gy;      // gy at pixel 0 + first output channel of the tile
  int64_t row0, row1;   // flattened (n, oh) output rows to reduce over
  int64_t OH, OW;
  int64_t x_img, x_row, x_pix;  // x strides: per image, per output row, per output pixel
  int64_t g_pix;                // gy stride per output pixel
  float* acc;                   // accumulator block [I][acc_row] (read-modify-write)
  int64_t acc_row;
  bool zero = false;  // start from zero instead of reading acc (its first rows)
};

template <int I, int NV, bool CONTIG>
void wgrad_tile(const WgradArgs& a) {
  vf acc[I][NV];
#pragma GCC unroll 32
  for (int i = 0; i < I; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[i][v] = a.zero ? vzero() : vload(a.acc + i * a.acc_row + v * VW);
  int64_t off[CONTIG ? 1 : I];
  for (int i = 0; i < (CONTIG ? 1 : I); ++i) off[i] = a.xoff[i];
  // (n, oh) of the row, stepped rather than divided: rows of 7 pixels paid a division each.
  int64_t n = a.row0 / a.OH, oh = a.row0 % a.OH;
  for (int64_t row = a.row0; row < a.row1; ++row) {
    const float* xr = a.x + n * a.x_img + oh * a.x_row;
    const float* gr = a.gy + row * a.OW * a.g_pix;
    if (++oh == a.OH) {
      oh = 0;
      ++n;
    }
    for (int64_t ow = 0; ow < a.OW; ++ow) {
      vf gv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) gv[v] = vload(gr + ow * a.g_pix + v * VW);
      const float* xp = xr + ow * a.x_pix;
#pragma GCC unroll 32
      for (int i = 0; i < I; ++i) {
        const vf xb = vset1(CONTIG ? xp[off[0] + i] : xp[off[i]]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = vfma(xb, gv[v], acc[i][v]);
      }
    }
  }
#pragma GCC unroll 32
  for (int i = 0; i < I; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(a.acc + i * a.acc_row + v * VW, acc[i][v]);
}

using WgradFn = void (*)(const WgradArgs&);
template <int NV, bool CONTIG, int... Is>
constexpr std::array<WgradFn, sizeof...(Is)> wgrad_row(std::integer_sequence<int, Is...>) {
  return {&wgrad_tile<Is + 1, NV, CONTIG>...};
}
template <bool CONTIG>
WgradFn wgrad_tile_fn(int nv, int i) {
  static const auto r1 = wgrad_row<1, CONTIG>(std::make_integer_sequence<int, wgrad_rows_for(1)>{});
  static const auto r2 = wgrad_row<2, CONTIG>(std::make_integer_sequence<int, wgrad_rows_for(2)>{});
  if (nv == 1) return r1[i - 1];
  if (nv == 2) return r2[i - 1];
  if constexpr (NV_MAX >= 4) {
    static const auto r3 =
        wgrad_row<3, CONTIG>(std::make_integer_sequence<int, wgrad_rows_for(3)>{});
    static const auto r4 =
        wgrad_row<4, CONTIG>(std::make_integer_sequence<int, wgrad_rows_for(4)>{});
    if (nv == 3) return r3[i - 1];
    return r4[i - 1];
  }
  return nullptr;
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
