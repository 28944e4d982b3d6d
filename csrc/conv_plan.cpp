// Convolution planning (see conv_plan.h): pure functions of the geometry, the layouts, the ISA's
// register budget, the algorithm setting and the thread count.
#include "conv_plan.h"

#include <algorithm>
#include <array>

#include "checked.h"

namespace pyconv {
namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
}  // namespace

Tiling choose_tiling(int64_t channels, IsaShape isa) {
  const int vw = isa.vector_width;
  int nv =
      static_cast<int>(std::min<int64_t>(max_tile_vectors(isa.num_vregs), ceil_div(channels, vw)));
  if (nv == 3 && channels > 3 * vw) nv = 2;  // 3-vector tiles only for exactly <= 3 vectors
  Tiling t;
  t.nv = nv;
  t.pmax = tile_pixels(nv, isa.num_vregs);
  t.nt = static_cast<int64_t>(nv) * vw;
  t.ntl = ceil_div(channels, t.nt);
  return t;
}

bool winograd_shape_ok(const ConvParams& p) {
  return p.KH == 3 && p.KW == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 &&
         p.dil_w == 1 && p.groups == 1 && p.OH >= 2 && p.OW >= 2;
}

bool winograd_chosen(const ConvParams& p, ConvAlgo algo, bool weights_cached) {
  if (algo == ConvAlgo::Direct) return false;
  const bool shape_ok = winograd_shape_ok(p);
  if (algo == ConvAlgo::Winograd) return shape_ok;
  // With the transformed weights cached (inference), the weight transform no longer counts
  // and Winograd wins down to batch 1 on layers up to 256 channels: measured on AVX-512 with
  // 2 threads, 128@28x28 0.35 ms vs 0.58 (direct), 256@14x14 0.33 vs 0.55. Not at 512
  // channels: 512@7x7 0.63 vs 0.57, U (16 MB) streams from memory for 16 tiles.
  const int64_t tiles = p.N * ((p.OH + 1) / 2) * ((p.OW + 1) / 2);
  if (weights_cached && shape_ok && p.C >= 32 && p.O >= 32 && p.C * p.O <= 256 * 256 && tiles >= 32)
    return true;
  // Measured (bench/README.md): 1.2-1.7x the direct kernel from 32 to 128 channels. Fewer
  // channels: the transforms cost what the GEMMs save. More: the transformed weights
  // (16*C*O floats) leave L2 and are re-read for every block of tiles. Few tiles: too
  // little parallel work.
  return shape_ok && p.C >= 32 && p.O >= 32 && p.C * p.O <= 128 * 128 && tiles >= 256;
}

bool small_matmul_applies(const ConvParams& p, const ConvLayout& layout) {
  const int64_t M = p.N * p.OH * p.OW;
  return M <= kSmallMatmulRows && p.KH == 1 && p.KW == 1 && p.groups == 1 && p.stride_h == 1 &&
         p.stride_w == 1 && !(p.pad_t | p.pad_b | p.pad_l | p.pad_r) && layout.x_dense_nhwc &&
         layout.y_dense_nhwc && layout.w_dense_hwio;
}

namespace {

DirectPlan plan_direct(const ConvParams& p, const ConvLayout& layout, IsaShape isa, int nthreads) {
  DirectPlan d;
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, T = p.KH * p.KW;
  const int64_t Hp = p.H + p.pad_t + p.pad_b, Wp = p.W + p.pad_l + p.pad_r;
  const Tiling tl = choose_tiling(Og, isa);
  d.tiling = tl;
  d.pixels = p.N * p.OH * p.OW;
  // Input -> padded NHWC (skipped when the caller already hands us exactly that).
  d.pack_input = p.pad_t || p.pad_b || p.pad_l || p.pad_r || !layout.x_dense_nhwc;
  d.input_floats = d.pack_input ? checked_product({p.N, Hp, Wp, p.C}, "a workspace size") : 0;
  // Weights -> wp[g][tile][tap][c][NT]; bias -> bp[g][tile][NT], zero beyond Og. Keras's
  // dense HWIO kernel (kh, kw, c, o) already has that shape when one tile covers O, and is
  // then read in place. With several tiles its rows are strided (each tile reads NT of O
  // floats per row), which maps a tile onto a fraction of the L2 sets: worth it only when
  // few pixel tiles re-read the weights (batch-1 inference, where repacking a dense layer's
  // weights cost more than the layer itself).
  d.weights_in_place = G == 1 && p.O % tl.nt == 0 && layout.w_dense_hwio &&
                       (p.O == tl.nt || d.pixels <= 4 * tl.pmax);
  d.merge_row_taps = G == 1 && p.dil_w == 1;
  d.w_tile = d.weights_in_place ? tl.nt : checked_product({T, Cg, tl.nt}, "the packed weights");
  d.w_row = d.weights_in_place ? p.O : tl.nt;
  d.w_tap = d.weights_in_place ? p.C * p.O : Cg * tl.nt;
  d.weight_floats =
      d.weights_in_place ? 0 : checked_product({G, tl.ntl, d.w_tile}, "a workspace size");
  d.bias_floats = checked_product({G, tl.ntl, tl.nt}, "a workspace size");
  d.index_entries = checked_product({2, T}, "an index table size");
  d.out_floats =
      layout.y_dense_nhwc ? 0 : checked_product({p.N, p.OH, p.OW, p.O}, "a workspace size");
  // Tiles of pmax consecutive output pixels in (n, oh, ow) order, wrapping across rows and
  // images (the output is dense NHWC, so only the input side needs a per-pixel offset).
  d.pixel_tiles = ceil_div(d.pixels, tl.pmax);
  // Task order. With 32 registers (AVX-512: 4 weight vectors and 6 broadcasts per 24 FMAs)
  // pixel tiles run fastest: each thread keeps one channel tile's weights in L1/L2 and
  // streams the input (85-95% of peak measured on Zen 5 and Xeon). With 16 (AVX2: 2 weight
  // vectors and 6 broadcasts per 12 FMAs, twice the input loads per FMA) the input matters
  // more: a chunk of pixel tiles (its input rows in L1/L2) runs through every channel tile
  // before the next chunk, streaming the weights instead. On Zen 3 that took a 256-channel
  // 3x3 layer from 60% to 84-94% of one core's peak and a stride-2 layer from 53% to 80%.
  d.chunk = 1;
  // (Not for first layers: with a reduction of T * Cg < 64 per tile there is little input
  // to keep, and the old order measured 20-30% faster on 1- and 3-channel layers.)
  if (isa.num_vregs < 32 && T * Cg >= 64) {
    const int64_t by_cache = (128 * 1024) / (tl.pmax * Cg * 4);  // input bytes <= 128 KB
    const int64_t by_tasks = d.pixel_tiles * tl.ntl * G / (4 * int64_t{nthreads});  // >= 4/thread
    d.chunk = std::max<int64_t>(1, std::min({int64_t{8}, by_cache, by_tasks}));
  }
  d.chunks = ceil_div(d.pixel_tiles, d.chunk);
  d.tasks = G * tl.ntl * d.chunks;
  // Under ~64 KFLOP (a small head or a tiny layer) one thread beats a fork and join.
  d.threads = static_cast<double>(d.pixels) * p.O * T * Cg < 32768 ? 1 : nthreads;
  return d;
}

WinogradPlan plan_winograd(const ConvParams& p, const ConvLayout& layout, IsaShape isa,
                           int nthreads) {
  WinogradPlan wp;
  const int64_t C = p.C, O = p.O;
  wp.tiles_h = ceil_div(p.OH, 2);
  wp.tiles_w = ceil_div(p.OW, 2);
  wp.Hp = 2 * wp.tiles_h + 2;
  wp.Wp = 2 * wp.tiles_w + 2;
  wp.pad_b = wp.Hp - p.H - p.pad_t;
  wp.pad_r = wp.Wp - p.W - p.pad_l;
  wp.input_floats = checked_product({p.N, wp.Hp, wp.Wp, C}, "a workspace size");
  const Tiling tl = choose_tiling(O, isa);
  wp.tiling = tl;
  const int64_t Opad = tl.ntl * tl.nt;
  wp.weight_floats = checked_product({16, tl.ntl, C, tl.nt}, "a workspace size");
  wp.bias_floats = Opad;
  wp.out_floats =
      layout.y_dense_nhwc ? 0 : checked_product({p.N, p.OH, p.OW, O}, "a workspace size");
  // Tiles per block: V (16 x TB x C) and M (16 x TB x Opad) in about 256 KB.
  wp.tiles = p.N * wp.tiles_h * wp.tiles_w;
  int64_t TB = (256 * 1024 / 4) / (16 * (C + Opad));
  TB = std::max<int64_t>(tl.pmax, std::min<int64_t>(128, TB / tl.pmax * tl.pmax));
  wp.block_tiles = TB;
  wp.blocks = ceil_div(wp.tiles, TB);
  wp.scratch_floats = checked_product({nthreads, 16 * TB, C + Opad}, "a workspace size");
  return wp;
}

}  // namespace

ConvPlan plan_conv_forward(const ConvParams& p, const ConvLayout& layout, ConvAlgo algo,
                           IsaShape isa, int nthreads) {
  ConvPlan plan{};
  plan.direct = plan_direct(p, layout, isa, nthreads);
  const DirectPlan& d = plan.direct;
  if (winograd_chosen(p, algo, layout.weights_cached)) {
    plan.method = ConvMethod::Winograd;
    plan.weight_layout = WeightLayout::WinogradTiles;
    plan.winograd = plan_winograd(p, layout, isa, nthreads);
    const WinogradPlan& w = plan.winograd;
    plan.workspace_bytes =
        4 * (w.input_floats + w.weight_floats + w.bias_floats + w.out_floats + w.scratch_floats);
  } else if (small_matmul_applies(p, layout)) {
    plan.method = ConvMethod::SmallMatmul;
    plan.weight_layout = WeightLayout::DenseCO;
    // matmul_small_m's partial sums: [row block of w][pixel][O padded to column blocks]
    const int64_t cols = kSmallMatmulColumnVectors * int64_t{isa.vector_width};
    plan.workspace_bytes =
        4 * ceil_div(p.C, kSmallMatmulBlockRows) * d.pixels * ceil_div(p.O, cols) * cols;
  } else {
    plan.method = ConvMethod::Direct;
    plan.weight_layout = d.weights_in_place ? WeightLayout::HwioInPlace : WeightLayout::PackedTiles;
    plan.workspace_bytes =
        4 * (d.input_floats + d.weight_floats + d.bias_floats + d.out_floats) + 8 * d.index_entries;
  }
  return plan;
}

WeightGradPlan plan_conv_weight_grad(const ConvParams& p, const ConvLayout& layout, ConvAlgo algo,
                                     IsaShape isa, int nthreads, bool weights) {
  WeightGradPlan wp{};
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, T = p.KH * p.KW, K = T * Cg;
  const Tiling tl = choose_tiling(Og, isa);
  wp.tiling = tl;
  wp.og_pad = tl.ntl * tl.nt;
  const int64_t Gp = G * wp.og_pad;
  const int64_t pixels = p.N * p.OH * p.OW;
  // gy: read in place when it is dense NHWC with whole tiles per group (the common case: a
  // copy of a 1x1 layer's gy can cost more than its GEMM), else packed pixel-major.
  wp.gy_layout =
      layout.y_dense_nhwc && wp.og_pad == Og ? GradOutLayout::InPlace : GradOutLayout::PixelMajor;
  wp.bias_block = 512;
  wp.bias_blocks = ceil_div(pixels, wp.bias_block);
  wp.bias_floats = checked_product({2, wp.bias_blocks, Gp}, "a workspace size");
  wp.weights = weights;
  wp.method = ConvMethod::Direct;
  wp.gy_floats = wp.gy_layout == GradOutLayout::InPlace
                     ? 0
                     : checked_product({pixels, G, wp.og_pad}, "a workspace size");
  if (!weights) return wp;
  if (winograd_chosen(p, algo)) {
    wp.method = ConvMethod::Winograd;
    WinogradWgradPlan& w = wp.winograd;
    const int64_t C = p.C, Opad = wp.og_pad;
    w.tiles_h = ceil_div(p.OH, 2);
    w.tiles_w = ceil_div(p.OW, 2);
    w.Hp = 2 * w.tiles_h + 2;
    w.Wp = 2 * w.tiles_w + 2;
    w.input_floats = checked_product({p.N, w.Hp, w.Wp, C}, "a workspace size");
    w.tiles = p.N * w.tiles_h * w.tiles_w;
    // Tiles per block: V and Gt in about 768 KiB (each block's GEMMs read and write the whole
    // 16 x C x O accumulator once, so blocks must not be small).
    int64_t TB = (768 * 1024 / 4) / (16 * (C + Opad));
    TB = std::max<int64_t>(32, std::min<int64_t>(256, TB));
    w.block_tiles = TB;
    w.blocks = ceil_div(w.tiles, TB);
    w.parts = std::min<int64_t>(w.blocks, 4);
    w.acc_floats = checked_product({w.parts, 16, C, Opad}, "a workspace size");
    w.scratch_floats = checked_product({nthreads, 16 * TB, C + Opad}, "a workspace size");
  }
  // The direct kernel: always planned, Winograd's fallback.
  const int64_t Hp = p.H + p.pad_t + p.pad_b, Wp = p.W + p.pad_l + p.pad_r;
  wp.pack_input = p.pad_t || p.pad_b || p.pad_l || p.pad_r || !layout.x_dense_nhwc;
  wp.input_floats = wp.pack_input ? checked_product({p.N, Hp, Wp, p.C}, "a workspace size") : 0;
  // Row blocks of the flattened k = t*Cg + c dimension.
  wp.tile_rows = wgrad_tile_rows(tl.nv, isa.num_vregs);
  wp.contiguous_rows = Cg >= wp.tile_rows;
  wp.row_blocks = wp.contiguous_rows ? T * ceil_div(Cg, wp.tile_rows) : ceil_div(K, wp.tile_rows);
  wp.index_entries = checked_product({2, K}, "an index table size");
  wp.tiles = G * wp.row_blocks * tl.ntl;
  const int64_t rows = p.N * p.OH;
  wp.parts = wp.tiles >= 16 ? 1 : std::min<int64_t>(rows, ceil_div(16, wp.tiles));
  wp.into_output = wp.parts == 1 && G == 1 && wp.og_pad == Og && layout.w_dense_hwio;
  wp.acc_floats =
      wp.into_output ? 0 : checked_product({wp.parts, G, K, wp.og_pad}, "a workspace size");
  // A chunk's x rows (for all taps: about stride_h rows of padded input per output row) and
  // gy rows together take about 384 KiB, so they stay in L2 while all tiles pass over them.
  const int64_t chunk_row_bytes = 4 * (p.stride_h * Wp * p.C + p.OW * Gp);
  wp.rows_per_chunk = std::max<int64_t>(1, (384 * 1024) / chunk_row_bytes);
  // The direct kernel re-reads a tile's gy columns once per row block: with several channel
  // tiles, pixel-major gy puts each pixel's NT floats a whole row of channels apart (2 KiB
  // for 512 channels: every pixel in the same few L1 sets), so those columns are packed
  // contiguous once, and then blocks of about 16 KiB of them stay in L1 across the tiles.
  // (Only where gy is re-read often enough to pay for the copy: with fewer than 24 row blocks,
  // e.g. a 1x1 layer from 64 channels, reading it in place measured up to 1.4x faster.)
  if (wp.method == ConvMethod::Direct && tl.ntl > 1 && wp.row_blocks >= 24) {
    wp.gy_layout = GradOutLayout::TileMajor;
    wp.gy_floats = checked_product({pixels, G, wp.og_pad}, "a workspace size");
  }
  const int64_t l1_pixels = (16 * 1024) / (4 * tl.nt);
  wp.l1_rows = std::max<int64_t>(1, l1_pixels / p.OW);
  // Chunks of whole L1 blocks (a ragged last block per chunk measured slower on 7x7 layers).
  wp.rows_per_chunk = std::max(wp.l1_rows, wp.rows_per_chunk / wp.l1_rows * wp.l1_rows);
  // A group's accumulators (tile_rows x NT floats a tile) in about 128 KiB of L2.
  wp.group_tiles = std::max<int64_t>(1, (128 * 1024) / (4 * wp.tile_rows * tl.nt));
  return wp;
}

DataGradPlan plan_conv_data_grad(const ConvParams& p, const ConvLayout& layout, IsaShape isa,
                                 int nthreads) {
  DataGradPlan dp{};
  const int64_t eh = (p.KH - 1) * p.dil_h, ew = (p.KW - 1) * p.dil_w;
  dp.as_forward = p.stride_h == 1 && p.stride_w == 1 && p.groups == 1 && p.pad_t <= eh &&
                  p.pad_b <= eh && p.pad_l <= ew && p.pad_r <= ew;
  if (dp.as_forward) {
    dp.forward = ConvParams{
        p.N, p.O, p.OH,    p.OW,    p.C,          p.KH,         p.KW,         p.H,          p.W,
        1,   1,   p.dil_h, p.dil_w, eh - p.pad_t, eh - p.pad_b, ew - p.pad_l, ew - p.pad_r, 1};
    return dp;
  }
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, T = p.KH * p.KW;
  const int64_t sw = p.stride_w;
  const Tiling tl = choose_tiling(Cg, isa);
  dp.tiling = tl;
  // Columns of gy are padded so every (phase, tap, pixel) reads inside the buffer; rows are
  // filtered exactly per input row instead.
  dp.pad_lo = std::max<int64_t>(0, -floor_div(p.pad_l - (p.KW - 1) * p.dil_w, sw));
  dp.pad_hi = std::max<int64_t>(0, floor_div(p.W - 1 + p.pad_l, sw) - (p.OW - 1));
  dp.OWp = p.OW + dp.pad_lo + dp.pad_hi;
  dp.gy_floats = checked_product({p.N, p.OH, dp.OWp, p.O}, "a workspace size");
  // Weights -> wT[g][tile][tap][o][NT]: lanes are input channels c.
  dp.w_tile = checked_product({T, Og, tl.nt}, "the packed weights");
  dp.weight_floats = checked_product({G, tl.ntl, dp.w_tile}, "a workspace size");
  dp.out_floats =
      layout.y_dense_nhwc ? 0 : checked_product({p.N, p.H, p.W, p.C}, "a workspace size");
  dp.phases = std::min(sw, p.W);
  dp.tasks = G * tl.ntl * p.N * p.H;
  dp.index_entries = checked_product({nthreads, 2 * T + p.KH}, "an index table size");
  return dp;
}

namespace {

// The last few plans of one kind this thread made, by everything a plan depends on.
using PlanKey = std::array<int64_t, 27>;
PlanKey plan_key(const ConvParams& p, const ConvLayout& layout, int64_t algo, IsaShape isa,
                 int nthreads, int64_t extra) {
  return {p.N,
          p.C,
          p.H,
          p.W,
          p.O,
          p.KH,
          p.KW,
          p.OH,
          p.OW,
          p.stride_h,
          p.stride_w,
          p.dil_h,
          p.dil_w,
          p.pad_t,
          p.pad_b,
          p.pad_l,
          p.pad_r,
          p.groups,
          layout.x_dense_nhwc,
          layout.y_dense_nhwc,
          layout.w_dense_hwio,
          layout.weights_cached,
          algo,
          isa.vector_width,
          isa.num_vregs,
          nthreads,
          extra};
}

template <class Plan, class Make>
const Plan& cached_plan(const PlanKey& key, Make make) {
  constexpr int kEntries = 16;  // a network's distinct geometries, and then some
  struct Entry {
    PlanKey key;
    Plan plan;
    bool used = false;
  };
  static thread_local std::array<Entry, kEntries> cache;
  static thread_local int next = 0;
  for (const Entry& e : cache)
    if (e.used && e.key == key) return e.plan;
  Entry& e = cache[static_cast<size_t>(next)];
  e.plan = make();  // may throw (SizeOverflow): the entry stays as it was
  e.key = key;
  e.used = true;
  next = (next + 1) % kEntries;
  return e.plan;
}

}  // namespace

const ConvPlan& cached_conv_forward_plan(const ConvParams& p, const ConvLayout& layout,
                                         ConvAlgo algo, IsaShape isa, int nthreads) {
  return cached_plan<ConvPlan>(plan_key(p, layout, static_cast<int64_t>(algo), isa, nthreads, 0),
                               [&] { return plan_conv_forward(p, layout, algo, isa, nthreads); });
}

const WeightGradPlan& cached_conv_weight_grad_plan(const ConvParams& p, const ConvLayout& layout,
                                                   ConvAlgo algo, IsaShape isa, int nthreads,
                                                   bool weights) {
  return cached_plan<WeightGradPlan>(
      plan_key(p, layout, static_cast<int64_t>(algo), isa, nthreads, weights),
      [&] { return plan_conv_weight_grad(p, layout, algo, isa, nthreads, weights); });
}

const DataGradPlan& cached_conv_data_grad_plan(const ConvParams& p, const ConvLayout& layout,
                                               IsaShape isa, int nthreads) {
  return cached_plan<DataGradPlan>(plan_key(p, layout, 0, isa, nthreads, 0),
                                   [&] { return plan_conv_data_grad(p, layout, isa, nthreads); });
}

}  // namespace pyconv
