// The direct convolution kernels: the forward and the data gradient (compiled once per ISA).
// The forward runs a plan (conv_plan.h); the data gradient of a stride-1, one-group layer is a
// forward convolution of gy, and otherwise walks the input's stride phases.
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "microkernels.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {

// Weights -> [g][tile][tap][row][NT]. Forward: lanes are output channels o, rows input
// channels c. Transposed (backward-data): lanes are c, rows o. Lanes past the channel count
// are zero. Each (g, tile, row) writes T runs of NT contiguous floats; the NT source filters
// are read a few taps at a time, so their cache lines are reused across t.
void pack_weights(ConstView4 w, int64_t G, const Tiling& tl, bool transposed, float* dst,
                  int nthreads) {
  const int64_t Og = w.n / G, Cg = w.c, T = w.h * w.w;
  const int64_t lanes = transposed ? Cg : Og, rows = transposed ? Og : Cg;
  const int64_t wtile = T * rows * tl.nt;
  auto source = [&](int64_t g, int64_t r, int64_t lane, int64_t t) {
    return transposed ? w.at(g * Og + r, lane, t / w.w, t % w.w)
                      : w.at(g * Og + lane, r, t / w.w, t % w.w);
  };
  if ((transposed ? w.sc : w.sn) == 1) {
    // Lanes contiguous in the source (Keras's HWIO kernel): read each (tap, row) run of
    // lanes once, front to back, and deal it out to the tiles. Walking tile by tile instead
    // read 64 bytes from every 2 KB row of a 512x512 layer's 9.4 MB, a TLB miss per row
    // (half of a batch-1 convolution's time).
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t job = 0; job < G * rows; ++job) {
      const int64_t r = job % rows, g = job / rows;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t tile = 0; tile < tl.ntl; ++tile) {
          float* dt = dst + (g * tl.ntl + tile) * wtile + (t * rows + r) * tl.nt;
          const int64_t valid = std::min(tl.nt, lanes - tile * tl.nt);
          for (int64_t l = 0; l < valid; ++l) dt[l] = source(g, r, tile * tl.nt + l, t);
          for (int64_t l = valid; l < tl.nt; ++l) dt[l] = 0.f;
        }
    }
    return;
  }
  if ((transposed ? w.sn : w.sc) == 1) {
    // Rows contiguous, lanes strided (a HWIO kernel read transposed, for backward-data): a
    // block transpose, 64 rows x one tile of lanes at a time, so the NT source lines of a
    // block are reused from L1 for 16 rows in a row instead of fetched once per value.
    constexpr int64_t kRowBlock = 64;
    const int64_t rblocks = ceil_div(rows, kRowBlock);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t job = 0; job < G * tl.ntl * T * rblocks; ++job) {
      const int64_t rb = job % rblocks, t = (job / rblocks) % T;
      const int64_t tile = (job / (rblocks * T)) % tl.ntl, g = job / (rblocks * T * tl.ntl);
      const int64_t r1 = std::min(rows, (rb + 1) * kRowBlock);
      const int64_t valid = std::min(tl.nt, lanes - tile * tl.nt);
      float* d = dst + (g * tl.ntl + tile) * wtile + t * rows * tl.nt;
      for (int64_t r = rb * kRowBlock; r < r1; ++r) {
        for (int64_t l = 0; l < valid; ++l) d[r * tl.nt + l] = source(g, r, tile * tl.nt + l, t);
        for (int64_t l = valid; l < tl.nt; ++l) d[r * tl.nt + l] = 0.f;
      }
    }
    return;
  }
  // Lanes strided, rows strided too (OIHW): each lane's (row, tap) values are contiguous,
  // so walk a tile's lanes side by side down the rows.
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t job = 0; job < G * tl.ntl * rows; ++job) {
    const int64_t r = job % rows, tile = (job / rows) % tl.ntl, g = job / (rows * tl.ntl);
    float* d = dst + (g * tl.ntl + tile) * wtile + r * tl.nt;
    const int64_t valid = std::min(tl.nt, lanes - tile * tl.nt);
    for (int64_t t = 0; t < T; ++t) {
      float* dt = d + t * rows * tl.nt;
      for (int64_t l = 0; l < valid; ++l) dt[l] = source(g, r, tile * tl.nt + l, t);
      for (int64_t l = valid; l < tl.nt; ++l) dt[l] = 0.f;
    }
  }
}

// ---------------------------------------------------------------------------------------
// conv2d forward. x: (N,C,H,W) view, w: (O,C/G,KH,KW) view, y: (N,O,OH,OW) view.
// ---------------------------------------------------------------------------------------
namespace {

// Runs a direct-kernel plan (plan_conv_forward's DirectPlan).
void run_direct_forward(const DirectPlan& d, const ConvParams& p, ConstView4 x, ConstView4 w,
                        const float* bias, bool relu, View4 y, WeightCacheRef cache, int nthreads) {
  Workspace& ws = workspace();
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, T = p.KH * p.KW;
  const int64_t Hp = p.H + p.pad_t + p.pad_b, Wp = p.W + p.pad_l + p.pad_r;
  const Tiling tl = d.tiling;
  const int64_t M = d.pixels;

  // Input -> padded NHWC (skipped when the caller already hands us exactly that).
  const float* xp = x.data;
  if (d.pack_input) {
    float* buf = ws.get(WS_IN, {d.input_floats});
    pack_padded_nhwc(x, p.pad_t, p.pad_b, p.pad_l, p.pad_r, 1, p.C, buf, nthreads);
    xp = buf;
  }
  // Weights -> wp[g][tile][tap][c][NT] unless read in place; bias -> bp[g][tile][NT], zero
  // beyond Og.
  const int64_t wtile = d.w_tile, w_row = d.w_row, w_tap = d.w_tap;
  const float* wp = w.data;
  PackedWeights packed{};
  if (!d.weights_in_place) {
    packed = packed_weights(cache, weight_key(w, G, WeightLayout::PackedTiles, tl), d.weight_floats,
                            [&](float* dst) {
                              pack_weights(w, G, tl, false, dst, nthreads);
                              return 0.f;
                            });
    wp = packed.data;
  }
  float* bp = nullptr;
  if (bias) {
    bp = ws.get(WS_BIAS, {d.bias_floats});
    for (int64_t g = 0; g < G; ++g)
      for (int64_t i = 0; i < tl.ntl * tl.nt; ++i)
        bp[g * tl.ntl * tl.nt + i] = i < Og ? bias[g * Og + i] : 0.f;
  }
  int64_t* in_off = ws.get_index({d.index_entries});
  int64_t* w_off = in_off + T;
  // Taps: (kh, kw) with Cg channels each, or (merge_row_taps) kernel rows kh with KW * Cg.
  const int64_t taps = d.merge_row_taps ? p.KH : T, tap_kw = d.merge_row_taps ? 1 : p.KW;
  const int64_t tap_rows = d.merge_row_taps ? p.KW * Cg : Cg;
  for (int64_t kh = 0; kh < p.KH; ++kh)
    for (int64_t kw = 0; kw < tap_kw; ++kw) {
      in_off[kh * tap_kw + kw] = (kh * p.dil_h * Wp + kw * p.dil_w) * p.C;
      w_off[kh * tap_kw + kw] = (kh * p.KW + kw) * w_tap;
    }

  const bool direct_out = d.out_floats == 0;  // y is dense NHWC
  float* yo = direct_out ? y.data : ws.get(WS_OUT, {d.out_floats});
  const int64_t mtiles = d.pixel_tiles, chunk = d.chunk, mchunks = d.chunks, tasks = d.tasks;
  const TileFn full = conv_tile_fn<true>(tl.nv, tl.pmax);
  const int threads = d.threads;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t task = 0; task < tasks; ++task) {
    // chunk == 1: (g, ot, mt) with mt fastest; else (g, mc, ot) with ot fastest
    int64_t ot, mc, g;
    if (chunk == 1) {
      mc = task % mchunks, ot = (task / mchunks) % tl.ntl, g = task / (mchunks * tl.ntl);
    } else {
      ot = task % tl.ntl, mc = (task / tl.ntl) % mchunks, g = task / (mchunks * tl.ntl);
    }
    const int64_t mt_end = std::min(mtiles, (mc + 1) * chunk);
    for (int64_t mt = mc * chunk; mt < mt_end; ++mt) {
      const int64_t m0 = mt * tl.pmax, np = std::min<int64_t>(tl.pmax, M - m0);
      int64_t pix_off[ACC];
      // Walk (n, oh, ow) from m0 without a division per pixel (divisions cost more than the
      // whole tile on 1- and 3-channel layers).
      int64_t ow = m0 % p.OW, oh = (m0 / p.OW) % p.OH, n = m0 / (p.OW * p.OH);
      for (int64_t i = 0; i < np; ++i) {
        pix_off[i] = ((n * Hp + oh * p.stride_h) * Wp + ow * p.stride_w) * p.C;
        if (++ow == p.OW) {
          ow = 0;
          if (++oh == p.OH) {
            oh = 0;
            ++n;
          }
        }
      }
      TileArgs a;
      a.in = xp + g * Cg;
      a.in_pix = 0;
      a.pix_off = pix_off;
      a.in_off = in_off;
      a.w_off = w_off;
      a.ntaps = static_cast<int>(taps);
      a.C = tap_rows;
      a.w = wp + (g * tl.ntl + ot) * wtile;
      a.w_row = w_row;
      a.out = yo + m0 * p.O + g * Og + ot * tl.nt;
      a.out_pix = p.O;
      a.oc_valid = static_cast<int>(std::min<int64_t>(tl.nt, Og - ot * tl.nt));
      a.bias = bp ? bp + (g * tl.ntl + ot) * tl.nt : nullptr;
      a.relu = relu;
      (np == tl.pmax ? full : conv_tile_fn<true>(tl.nv, static_cast<int>(np)))(a);
    }
  }
  if (!direct_out) unpack_nhwc(yo, y, nthreads);
}

// conv2d forward. x: (N,C,H,W) view, w: (O,C/G,KH,KW) view, y: (N,O,OH,OW) view. Looks up
// (or makes) this geometry's plan and runs it.
void conv2d_forward(const ConvParams& p, ConstView4 x, ConstView4 w, const float* bias, bool relu,
                    View4 y, WeightCacheRef cache, int nthreads) {
  const ConvPlan plan = cached_conv_forward_plan(p, conv_layout(p, x, w, y, cache.cache != nullptr),
                                                 conv_algorithm(), kIsa, nthreads);
  switch (plan.method) {
    case ConvMethod::Winograd:
      if (conv2d_winograd(plan.winograd, p, x, w, bias, relu, y, cache, nthreads)) return;
      break;                       // values out of Winograd's range: the direct kernel
    case ConvMethod::SmallMatmul:  // w: (C, O)
      matmul_small_m(x.data, p.N * p.OH * p.OW, p.C, w.data, p.O, bias, relu, y.data, nthreads);
      return;
    case ConvMethod::Direct:
      break;
  }
  run_direct_forward(plan.direct, p, x, w, bias, relu, y, cache, nthreads);
}

// ---------------------------------------------------------------------------------------
// conv2d backward-data. gx[n, ih, iw, c] = sum over taps (kh,kw) with
//   oh = (ih + pad_t - kh*dil_h) / stride_h integral and in range (same for ow), and over o:
//   gy[n, oh, ow, o] * w[o, c, kh, kw].
// Input pixels iw = r, r+s, r+2s, ... (one stride phase r) use the same taps and read
// consecutive ow, so each phase of a row is one run of conv_row over padded gy.
// With stride 1 and one group this is exactly a forward convolution of gy, padded by
// (K-1)*d - pad, with the kernel flipped and its channel axes swapped (a strided view of w,
// no copy), so it takes the forward's faster row-wrapping tiles.
// ---------------------------------------------------------------------------------------
void conv2d_backward_data(const ConvParams& p, ConstView4 gy, ConstView4 w, View4 gx,
                          int nthreads) {
  const ConvLayout layout{false, is_dense_nhwc(gx), false};
  const DataGradPlan plan = cached_conv_data_grad_plan(p, layout, kIsa, nthreads);
  if (plan.as_forward) {
    // w_t[c][o][kh][kw] = w[o][c][KH-1-kh][KW-1-kw]
    const ConstView4 wt{
        w.ptr(0, 0, p.KH - 1, p.KW - 1), w.c, w.n, w.h, w.w, w.sc, w.sn, -w.sh, -w.sw};
    conv2d_forward(plan.forward, gy, wt, nullptr, false, gx, WeightCacheRef{}, nthreads);
    return;
  }
  Workspace& ws = workspace();
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, T = p.KH * p.KW;
  const int64_t sh = p.stride_h, sw = p.stride_w;
  const Tiling tl = plan.tiling;
  const int64_t plo = plan.pad_lo, phi = plan.pad_hi, OWp = plan.OWp;
  float* gyp = ws.get(WS_IN, {plan.gy_floats});
  pack_padded_nhwc(gy, 0, 0, plo, phi, 1, p.O, gyp, nthreads);
  // Weights -> wT[g][tile][tap][o][NT]: lanes are input channels c.
  const int64_t wtile = plan.w_tile;
  float* wt = ws.get(WS_W, {plan.weight_floats});
  pack_weights(w, G, tl, true, wt, nthreads);
  const bool direct_out = plan.out_floats == 0;  // gx is dense NHWC
  float* gxo = direct_out ? gx.data : ws.get(WS_OUT, {plan.out_floats});
  const int64_t phases = plan.phases, tasks = plan.tasks;
  int64_t* index = ws.get_index({plan.index_entries});
#pragma omp parallel num_threads(nthreads)
  {
    int64_t* in_off = index + omp_get_thread_num() * (2 * T + p.KH);
    int64_t* w_off = in_off + T;
    int64_t* row_taps = w_off + T;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t ih = task % p.H, n = (task / p.H) % p.N;
      const int64_t it = (task / (p.H * p.N)) % tl.ntl, g = task / (p.H * p.N * tl.ntl);
      // Kernel rows that reach this input row, and the gy row each reads.
      int nkh = 0;
      for (int64_t kh = 0; kh < p.KH; ++kh) {
        const int64_t num = ih + p.pad_t - kh * p.dil_h;
        if (pos_mod(num, sh) != 0) continue;
        const int64_t oh = floor_div(num, sh);
        if (oh < 0 || oh >= p.OH) continue;
        row_taps[nkh++] = kh;
      }
      TileArgs a;
      a.in_pix = p.O;
      a.in_off = in_off;
      a.w_off = w_off;
      a.C = Og;
      a.w = wt + (g * tl.ntl + it) * wtile;
      a.w_row = tl.nt;
      a.out_pix = sw * p.C;
      a.oc_valid = static_cast<int>(std::min<int64_t>(tl.nt, Cg - it * tl.nt));
      a.pix_off = nullptr;
      a.bias = nullptr;
      a.relu = false;
      for (int64_t r = 0; r < phases; ++r) {
        int nt = 0;
        for (int i = 0; i < nkh; ++i) {
          const int64_t kh = row_taps[i];
          const int64_t oh = floor_div(ih + p.pad_t - kh * p.dil_h, sh);
          for (int64_t kw = 0; kw < p.KW; ++kw) {
            const int64_t num = r + p.pad_l - kw * p.dil_w;
            if (pos_mod(num, sw) != 0) continue;
            const int64_t owp = floor_div(num, sw) + plo;  // >= 0 by construction of plo
            in_off[nt] = ((n * p.OH + oh) * OWp + owp) * p.O + g * Og;
            w_off[nt] = (kh * p.KW + kw) * Og * tl.nt;
            ++nt;
          }
        }
        a.ntaps = nt;
        a.in = gyp;
        a.out = gxo + ((n * p.H + ih) * p.W + r) * p.C + g * Cg + it * tl.nt;
        conv_row(tl, a, ceil_div(p.W - r, sw));
      }
    }
  }
  if (!direct_out) unpack_nhwc(gxo, gx, nthreads);
}

}  // namespace

void register_conv_direct(KernelTable& t) {
  t.conv2d_forward = &conv2d_forward;
  t.conv2d_backward_data = &conv2d_backward_data;
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
