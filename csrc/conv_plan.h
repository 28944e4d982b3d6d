// Convolution plans: everything about how a convolution runs that follows from its geometry,
// the caller's layouts, the ISA's register budget, the algorithm setting and the thread count
// -- decided once per geometry (conv_plan.cpp, compiled once, not per ISA: pure functions that
// a test can call for every ISA) and then run by short per-ISA executors (conv_direct.cpp,
// conv_winograd.cpp). The rules that choose an algorithm live here and only here.
#pragma once

#include <cstdint>

#include "core.h"

namespace pyconv {

// What tiling depends on in an ISA: floats per vector and vector registers.
struct IsaShape {
  int vector_width;
  int num_vregs;
};

// Register blocking. The accumulators leave room for the weight vectors + a broadcast.
constexpr int accumulator_regs(int num_vregs) { return num_vregs >= 32 ? 24 : 12; }
constexpr int max_tile_vectors(int num_vregs) { return num_vregs >= 32 ? 4 : 2; }
// Pixels per tile: each needs its own input pointer, and with more than 8 of them (or 8 with
// three weight vectors) GCC runs out of general registers and spills pointers into vector
// registers, then weights onto the stack: 12-pixel tiles ran at half speed.
constexpr int tile_pixels(int nv, int num_vregs) {
  return nv == 3 ? 7
                 : (accumulator_regs(num_vregs) / nv < 8 ? accumulator_regs(num_vregs) / nv : 8);
}
// Weight-gradient tiles broadcast from one pointer at fixed offsets, so they can use every
// accumulator register.
constexpr int wgrad_tile_rows(int nv, int num_vregs) { return accumulator_regs(num_vregs) / nv; }

struct Tiling {
  int nv;       // vectors of output channels per tile
  int pmax;     // pixels per tile
  int64_t nt;   // channels per tile = nv * vector width
  int64_t ntl;  // number of channel tiles
};

// Channels-per-tile from the channel count: the widest tile that the channels fill.
Tiling choose_tiling(int64_t channels, IsaShape isa);

// What a plan needs to know of the caller's arrays besides their shapes.
struct ConvLayout {
  bool x_dense_nhwc;  // x is exactly a dense NHWC array (read in place when unpadded)
  bool y_dense_nhwc;  // y too (written in place, else through a workspace and unpacked)
  bool w_dense_hwio;  // one group, and w (O, C, KH, KW) is a view of a dense (KH, KW, C, O)
                      // (the weight gradient: of gw)
  // The forward's packed weights come from a WeightCache (core.h): their packing is paid once
  // per weight version, not per call, which moves the Winograd rule (winograd_chosen).
  bool weights_cached = false;
};

enum class ConvMethod { Direct = 0, Winograd = 1, SmallMatmul = 2 };

// How the forward's weights reach the microkernel.
enum class WeightLayout {
  HwioInPlace = 0,    // Keras's dense HWIO array, read where it is
  PackedTiles = 1,    // [g][channel tile][tap][c][NT], zero lanes past the channels
  WinogradTiles = 2,  // U = G g G^T as [xi 0..15][channel tile][c][NT]
  DenseCO = 3,        // the (C, O) matrix of a 1x1 kernel, read where it is (small matmul)
};

// The direct kernel: tiles of pmax consecutive output pixels (n, oh, ow) x NT channels.
struct DirectPlan {
  Tiling tiling;          // over the output channels of a group
  bool pack_input;        // x padded/repacked to NHWC in a workspace (else read in place)
  bool weights_in_place;  // w read in place (HWIO), else packed into tiles
  // One group, no column dilation: a kernel row's KW taps read KW*C consecutive input floats
  // and KW*Cg consecutive weight rows (in both layouts), so they run as one tap of KW*Cg
  // channels -- the same sums in the same order, with KW times fewer tap loops (a first
  // layer's 3 channels per tap made the loop overhead count).
  bool merge_row_taps;
  int64_t w_tile, w_row, w_tap;  // floats between channel tiles / channel rows / taps of w
  int64_t pixels;                // M = N * OH * OW
  int64_t pixel_tiles;           // ceil(M / pmax)
  // Task order: chunk == 1 runs tasks (g, channel tile, pixel tile), pixel tiles fastest; a
  // chunk > 1 runs (g, chunk of pixel tiles, channel tile), channel tiles fastest.
  int64_t chunk, chunks, tasks;
  int threads;  // the team: nthreads, or 1 for a tiny convolution
  // Workspace floats per slot (0: not used).
  int64_t input_floats, weight_floats, bias_floats, out_floats, index_entries;
};

// Winograd F(2x2, 3x3): 4x4 input tiles, in blocks of block_tiles whose transforms stay in L2.
struct WinogradPlan {
  Tiling tiling;             // over the output channels
  int64_t tiles_h, tiles_w;  // 2x2 output tiles per column and row
  int64_t Hp, Wp;            // padded input covering every 4x4 tile
  int64_t pad_b, pad_r;      // the padding that makes Hp x Wp
  int64_t tiles, block_tiles, blocks;
  int64_t input_floats, weight_floats, bias_floats, out_floats, scratch_floats;
};

struct ConvPlan {
  ConvMethod method;
  WeightLayout weight_layout;
  DirectPlan direct;        // always set: Winograd falls back to it for values out of its range
  WinogradPlan winograd;    // set when method == Winograd
  int64_t workspace_bytes;  // the chosen method's workspaces (before alignment slack)
};

// The weight (and bias) gradient: a GEMM reduced over output pixels (conv_wgrad.cpp), or
// Winograd F(3x3, 2x2) (conv_winograd.cpp) where the forward's rule picks Winograd.
struct WinogradWgradPlan {
  int64_t tiles_h, tiles_w, Hp, Wp;  // 2x2 gy tiles; the padded input covering their 4x4 tiles
  int64_t tiles, block_tiles, blocks;
  int64_t parts;  // blocks split into parts with private accumulators, summed in order
  int64_t input_floats, acc_floats, scratch_floats;
};

// Where the weight gradient reads gy from.
enum class GradOutLayout {
  InPlace = 0,     // the caller's dense NHWC gy (each group's channels already whole tiles)
  PixelMajor = 1,  // packed to dense [N*OH*OW][G][og_pad]
  TileMajor = 2,   // packed to [G][channel tile][N*OH*OW][NT]: a tile's pixels contiguous
};

struct WeightGradPlan {
  ConvMethod method;  // Direct or Winograd (whose value check may still fall back to Direct)
  Tiling tiling;      // over the output channels of a group
  int64_t og_pad;     // a group's output channels, padded to whole tiles
  GradOutLayout gy_layout;
  int64_t gy_floats;  // the packed gy (0 when read in place)
  // The bias sums: blocks of bias_block pixels, whose float64 partial sums add in block order.
  int64_t bias_block, bias_blocks, bias_floats;
  bool weights;  // planned for the weight gradient too (else the bias's only: no more below)
  // The direct kernel: tiles of tile_rows rows k = (tap, channel) x NT output channels.
  bool pack_input;
  int64_t input_floats;
  int64_t tile_rows;
  bool contiguous_rows;  // C/G >= tile_rows: a tile's rows are channels of one tap
  int64_t row_blocks, tiles;
  int64_t parts;           // pixels split into parts with private accumulators when tiles are few
  int64_t rows_per_chunk;  // output rows whose x and gy stay in L2 while every tile passes
  // Within a chunk: groups of group_tiles tiles (their accumulators stay in L2) pass over
  // blocks of l1_rows output rows (their gy stays in L1 while every tile of the group reads it).
  // Tiles are numbered (g, channel tile, row block), row blocks fastest, so a group's
  // consecutive tiles share their gy columns.
  int64_t group_tiles, l1_rows;
  // One part, one group, whole tiles and gw a dense (KH, KW, C, O) array (Keras's HWIO, what
  // the layers use): dw[k = (kh, kw, c)][o] is gw itself, accumulated in place (no workspace,
  // no final pass over 4 * C * O * KH * KW bytes: at batch 1 those passes cost more than the
  // GEMM).
  bool into_output;
  int64_t acc_floats, index_entries;
  WinogradWgradPlan winograd;  // when method == Winograd
};

// The data gradient. With stride 1 and one group (and paddings within the dilated kernel) it is
// a forward convolution of gy with the flipped kernel, which that forward's plan runs; otherwise
// the input's stride phases are walked (conv_direct.cpp).
struct DataGradPlan {
  bool as_forward;
  ConvParams forward;           // that forward's geometry, when as_forward
  Tiling tiling;                // over the input channels of a group
  int64_t pad_lo, pad_hi, OWp;  // gy's columns padded so every (phase, tap, pixel) reads inside
  int64_t phases, tasks;
  int64_t gy_floats, w_tile, weight_floats, out_floats, index_entries;
};

// --- the rules, each a pure function -------------------------------------------------------
// 3x3, stride 1, no dilation, one group, at least one 2x2 output tile.
bool winograd_shape_ok(const ConvParams& p);
// Whether a forward (and a weight gradient) of this geometry uses Winograd under `algo`;
// weights_cached: a forward whose transformed weights come from a WeightCache.
bool winograd_chosen(const ConvParams& p, ConvAlgo algo, bool weights_cached = false);
// A 1x1 convolution over at most two pixels, all dense: a matrix times a few rows.
bool small_matmul_applies(const ConvParams& p, const ConvLayout& layout);
constexpr int64_t kSmallMatmulRows = 2;
// Its blocks of w: kSmallMatmulBlockRows rows x kSmallMatmulColumnVectors vectors.
constexpr int64_t kSmallMatmulBlockRows = 256;
constexpr int kSmallMatmulColumnVectors = 8;

// The forward's plan. Throws SizeOverflow (checked.h) when a workspace size overflows.
ConvPlan plan_conv_forward(const ConvParams& p, const ConvLayout& layout, ConvAlgo algo,
                           IsaShape isa, int nthreads);
// The weight gradient's plan; `weights` false plans the bias gradient only.
WeightGradPlan plan_conv_weight_grad(const ConvParams& p, const ConvLayout& layout, ConvAlgo algo,
                                     IsaShape isa, int nthreads, bool weights);
// The data gradient's plan (layout: of gy as "x", w, and gx as "y").
DataGradPlan plan_conv_data_grad(const ConvParams& p, const ConvLayout& layout, IsaShape isa,
                                 int nthreads);

// The same, remembered per calling thread for the last few geometries (a network repeats a
// few): a returned reference stays valid until this thread's next call of the same function.
const ConvPlan& cached_conv_forward_plan(const ConvParams& p, const ConvLayout& layout,
                                         ConvAlgo algo, IsaShape isa, int nthreads);
const WeightGradPlan& cached_conv_weight_grad_plan(const ConvParams& p, const ConvLayout& layout,
                                                   ConvAlgo algo, IsaShape isa, int nthreads,
                                                   bool weights);
const DataGradPlan& cached_conv_data_grad_plan(const ConvParams& p, const ConvLayout& layout,
                                               IsaShape isa, int nthreads);

}  // namespace pyconv
