// The weight (and bias) gradient of a convolution (compiled once per ISA).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "microkernels.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

// gy (any strides) -> [G][channel tile][pixel][NT], lanes past a group's channels zero.
void pack_grad_out_tiles(ConstView4 gy, int64_t G, const Tiling& tl, float* dst, int nthreads) {
  const int64_t Og = gy.c / G, pixels = gy.n * gy.h * gy.w, NT = tl.nt;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t row = 0; row < gy.n * gy.h; ++row) {
    const int64_t n = row / gy.h, oh = row % gy.h;
    for (int64_t g = 0; g < G; ++g)
      for (int64_t ot = 0; ot < tl.ntl; ++ot) {
        const int64_t o0 = ot * NT, valid = std::min(NT, Og - o0);
        float* d = dst + ((g * tl.ntl + ot) * pixels + row * gy.w) * NT;
        for (int64_t ow = 0; ow < gy.w; ++ow, d += NT) {
          const float* s = gy.ptr(n, g * Og + o0, oh, ow);
          if (gy.sc == 1) {
            std::memcpy(d, s, sizeof(float) * valid);
          } else {
            for (int64_t o = 0; o < valid; ++o) d[o] = s[o * gy.sc];
          }
          for (int64_t o = valid; o < NT; ++o) d[o] = 0.f;
        }
      }
  }
}

// ---------------------------------------------------------------------------------------
// conv2d backward-weight. With k = (t, c) a flattened (tap, input channel) index of group g:
//   dw[g][k][o] = sum over (n, oh, ow) of x_pad[n, oh*sh + kh*dh, ow*sw + kw*dw, g*Cg + c]
//                                         * gy[n, oh, ow, g*Og + o]
// a GEMM reduced over output pixels. A tile is I rows k x NT output channels in registers.
// With Cg >= I a tile's rows are I consecutive channels of one tap (contiguous loads);
// with fewer channels (first layers: C = 1 or 3) the rows run across taps and are gathered
// through an offset table, so a 3x3 RGB layer still fills a 24-row tile.
// Each work item owns whole tiles, so there are no atomics. When there are few tiles, the
// pixels are also split into S parts (S from the problem size, never from the thread
// count) with private accumulators summed in a fixed order afterwards: the result is the
// same for any number of threads. Pixel rows are processed in L2-sized chunks, and within
// a chunk groups of tiles pass over L1-sized blocks of rows; every accumulator still adds
// its pixels in order, so the blocking does not change a single bit.
// ---------------------------------------------------------------------------------------
void conv2d_backward_weight(const ConvParams& p, ConstView4 gy, ConstView4 x, View4* gw,
                            float* gbias, int nthreads) {
  const bool gw_dense_hwio = gw && p.groups == 1 && gw->sn == 1 && gw->sc == p.O &&
                             (p.KW == 1 || gw->sw == p.C * p.O) &&
                             (p.KH == 1 || gw->sh == p.KW * p.C * p.O);
  const ConvLayout layout{is_dense_nhwc(x), is_dense_nhwc(gy), gw_dense_hwio};
  const WeightGradPlan plan =
      cached_conv_weight_grad_plan(p, layout, conv_algorithm(), kIsa, nthreads, gw != nullptr);
  Workspace& ws = workspace();
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, K = p.KH * p.KW * Cg;
  const Tiling tl = plan.tiling;
  const int64_t Og_pad = plan.og_pad, Gp = G * Og_pad;
  const int64_t pixels = p.N * p.OH * p.OW;
  // gy as the microkernel reads it (full vectors: each group's channels padded to whole
  // tiles): in place, or packed pixel-major ([pixel][G][Og_pad]) or tile-major
  // ([G][tile][pixel][NT]). Column block j of NT lanes starts at gy_col(j); pixels are
  // gy_pix floats apart.
  const float* gyp = gy.data;
  if (plan.gy_layout != GradOutLayout::InPlace) {
    float* buf = ws.get(WS_AUX, {plan.gy_floats});
    if (plan.gy_layout == GradOutLayout::TileMajor)
      pack_grad_out_tiles(gy, G, tl, buf, nthreads);
    else
      pack_padded_nhwc(gy, 0, 0, 0, 0, G, Og_pad, buf, nthreads);
    gyp = buf;
  }
  const bool tile_major = plan.gy_layout == GradOutLayout::TileMajor;
  const int64_t gy_pix = tile_major ? tl.nt : Gp;
  auto gy_col = [&](int64_t j) { return gyp + (tile_major ? j * pixels * tl.nt : j * tl.nt); };

  if (gbias) {
    // Sum gy over pixels, row by row (contiguous channels: vectorizes, reads gy once), in
    // fixed blocks of pixels whose float64 partial sums are added in block order, so the
    // result does not depend on the thread count.
    const int64_t block = plan.bias_block, nblocks = plan.bias_blocks, NT = tl.nt;
    const int64_t cols = Gp / NT;
    double* part = reinterpret_cast<double*>(ws.get(WS_BIAS, {plan.bias_floats}));
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) {
      double* acc = part + b * Gp;
      for (int64_t c = 0; c < Gp; ++c) acc[c] = 0.0;
      const int64_t end = std::min(pixels, (b + 1) * block);
      if (tile_major) {
        for (int64_t j = 0; j < cols; ++j)
          for (int64_t i = b * block; i < end; ++i) {
            const float* row = gy_col(j) + i * NT;
            for (int64_t c = 0; c < NT; ++c) acc[j * NT + c] += row[c];
          }
      } else {
        for (int64_t i = b * block; i < end; ++i) {
          const float* row = gyp + i * Gp;
          for (int64_t c = 0; c < Gp; ++c) acc[c] += row[c];
        }
      }
    }
    for (int64_t o = 0; o < p.O; ++o) {
      const int64_t c = (o / Og) * Og_pad + (o % Og);
      double s = 0.0;
      for (int64_t b = 0; b < nblocks; ++b) s += part[b * Gp + c];
      gbias[o] = static_cast<float>(s);
    }
  }
  if (!gw) return;
  if (plan.method == ConvMethod::Winograd &&
      wgrad_winograd(plan.winograd, p, gyp, x, gw, tl, nthreads))
    return;  // else the values are out of Winograd's range: the direct kernel

  const int64_t Hp = p.H + p.pad_t + p.pad_b, Wp = p.W + p.pad_l + p.pad_r;
  const float* xp = x.data;
  if (plan.pack_input) {
    float* buf = ws.get(WS_IN, {plan.input_floats});
    pack_padded_nhwc(x, p.pad_t, p.pad_b, p.pad_l, p.pad_r, 1, p.C, buf, nthreads);
    xp = buf;
  }
  const int64_t IB = plan.tile_rows;
  const bool contig = plan.contiguous_rows;
  const int64_t kb_per_tap = ceil_div(Cg, IB);
  const int64_t nkb = plan.row_blocks;
  // Per k: its offset in x_pad (tap + channel) and in the gw view (c, kh, kw).
  int64_t* xoff = ws.get_index({plan.index_entries});
  int64_t* gwoff = xoff + K;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t t = k / Cg, c = k % Cg, kh = t / p.KW, kw = t % p.KW;
    xoff[k] = (kh * p.dil_h * Wp + kw * p.dil_w) * p.C + c;
    gwoff[k] = c * gw->sc + kh * gw->sh + kw * gw->sw;
  }
  const int64_t tiles = plan.tiles;
  const int64_t rows = p.N * p.OH;
  const int64_t S = plan.parts;
  const int64_t part = G * K * Og_pad;  // accumulator [g][k][Og_pad], one per pixel part
  // Each tile's accumulators start from zero in its part's first rows (a.zero): no memset.
  float* dw = plan.into_output ? gw->data : ws.get(WS_W, {plan.acc_floats});

  const int64_t rows_per_chunk = plan.rows_per_chunk, l1_rows = plan.l1_rows;
  const int64_t group = plan.group_tiles;
  const int64_t items = S * tiles;  // item = s * tiles + tile
#pragma omp parallel num_threads(nthreads)
  {
    const int nth = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t i0 = items * me / nth, i1 = items * (me + 1) / nth;
    WgradArgs a;
    a.OH = p.OH;
    a.OW = p.OW;
    a.x_img = Hp * Wp * p.C;
    a.x_row = p.stride_h * Wp * p.C;
    a.x_pix = p.stride_w * p.C;
    a.g_pix = gy_pix;
    a.acc_row = Og_pad;
    for (int64_t s = i0 / tiles; s < S && s * tiles < i1; ++s) {
      const int64_t r_begin = rows * s / S, r_end = rows * (s + 1) / S;
      const int64_t tile0 = std::max(i0 - s * tiles, int64_t{0});
      const int64_t tile1 = std::min(i1 - s * tiles, tiles);
      for (int64_t r0 = r_begin; r0 < r_end; r0 += rows_per_chunk) {
        const int64_t r1 = std::min(r_end, r0 + rows_per_chunk);
        for (int64_t gt0 = tile0; gt0 < tile1; gt0 += group) {
          const int64_t gt1 = std::min(tile1, gt0 + group);
          for (int64_t b0 = r0; b0 < r1; b0 += l1_rows) {
            a.row0 = b0;
            a.row1 = std::min(r1, b0 + l1_rows);
            a.zero = b0 == r_begin;
            for (int64_t tile = gt0; tile < gt1; ++tile) {
              const int64_t kb = tile % nkb, ot = (tile / nkb) % tl.ntl, g = tile / (nkb * tl.ntl);
              const int64_t k0 = contig ? (kb / kb_per_tap) * Cg + (kb % kb_per_tap) * IB : kb * IB;
              const int64_t nk =
                  contig ? std::min(IB, Cg - (kb % kb_per_tap) * IB) : std::min(IB, K - k0);
              a.x = xp + g * Cg;
              a.xoff = xoff + k0;
              a.gy = gy_col(g * tl.ntl + ot);
              a.acc = dw + s * part + (g * K + k0) * Og_pad + ot * tl.nt;
              (contig ? wgrad_tile_fn<true>(tl.nv, static_cast<int>(nk))
                      : wgrad_tile_fn<false>(tl.nv, static_cast<int>(nk)))(a);
            }
          }
        }
      }
    }
  }
  if (plan.into_output) return;
  // Sum the parts in order, and write dw[g][k = t*Cg + c][o] -> gw (O, C/G, KH, KW) view,
  // in blocks of 16 x 16 (k, o) so both sides stay in cache.
  const int64_t kblocks = ceil_div(K, 16), oblocks = ceil_div(p.O, 16);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t job = 0; job < kblocks * oblocks; ++job) {
    const int64_t k0 = (job / oblocks) * 16, o0 = (job % oblocks) * 16;
    for (int64_t o = o0; o < std::min(p.O, o0 + 16); ++o) {
      const int64_t g = o / Og, og = o % Og;
      for (int64_t k = k0; k < std::min(K, k0 + 16); ++k) {
        const float* src = dw + (g * K + k) * Og_pad + og;
        float v = src[0];
        for (int64_t s = 1; s < S; ++s) v += src[s * part];
        gw->data[o * gw->sn + gwoff[k]] = v;
      }
    }
  }
}

}  // namespace

void register_conv_wgrad(KernelTable& t) { t.conv2d_backward_weight = &conv2d_backward_weight; }

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
