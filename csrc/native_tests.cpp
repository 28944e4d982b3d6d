// Native tests of the convolution planning rules and the kernel tables (compiled once), and
// the entry point that runs them with every supported ISA's packing tests.
#include "native_tests.h"

#include <cstring>
#include <string>
#include <vector>

#include "conv_plan.h"
#include "core.h"

namespace pyconv {
namespace {

constexpr IsaShape kGenericShape{4, 16}, kAvx2Shape{8, 16}, kAvx512Shape{16, 32};

// A conv geometry with the output size worked out (symmetric padding).
ConvParams conv(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t K,
                int64_t stride = 1, int64_t pad = 0, int64_t dil = 1, int64_t groups = 1) {
  const int64_t span = dil * (K - 1) + 1;
  return ConvParams{N,
                    C,
                    H,
                    W,
                    O,
                    K,
                    K,
                    (H + 2 * pad - span) / stride + 1,
                    (W + 2 * pad - span) / stride + 1,
                    stride,
                    stride,
                    dil,
                    dil,
                    pad,
                    pad,
                    pad,
                    pad,
                    groups};
}

std::string describe(const ConvParams& p) {
  return "N" + std::to_string(p.N) + " C" + std::to_string(p.C) + " " + std::to_string(p.H) + "x" +
         std::to_string(p.W) + " O" + std::to_string(p.O) + " K" + std::to_string(p.KH) + " s" +
         std::to_string(p.stride_h) + " g" + std::to_string(p.groups);
}

constexpr ConvLayout kDense{true, true, true};

void test_tiling(TestLog& log) {
  struct Case {
    IsaShape isa;
    int64_t channels;
    int nv, pmax;
    int64_t nt, ntl;
  };
  const Case cases[] = {
      {kAvx512Shape, 64, 4, 6, 64, 1},  {kAvx512Shape, 40, 3, 7, 48, 1},
      {kAvx512Shape, 50, 4, 6, 64, 1},  {kAvx512Shape, 10, 1, 8, 16, 1},
      {kAvx512Shape, 200, 4, 6, 64, 4}, {kAvx2Shape, 33, 2, 6, 16, 3},
      {kAvx2Shape, 8, 1, 8, 8, 1},      {kGenericShape, 3, 1, 8, 4, 1},
      {kGenericShape, 64, 2, 6, 8, 8},
  };
  for (const Case& c : cases) {
    const Tiling t = choose_tiling(c.channels, c.isa);
    log.check(t.nv == c.nv && t.pmax == c.pmax && t.nt == c.nt && t.ntl == c.ntl,
              "choose_tiling(" + std::to_string(c.channels) + ", vw " +
                  std::to_string(c.isa.vector_width) + "): nv " + std::to_string(t.nv) + " pmax " +
                  std::to_string(t.pmax) + " nt " + std::to_string(t.nt) + " ntl " +
                  std::to_string(t.ntl));
  }
}

// The algorithm rule on a table of geometries (the choices pyconv has always made).
void test_algorithm_rule(TestLog& log) {
  struct Case {
    ConvParams p;
    ConvAlgo algo;
    ConvMethod want;
  };
  const Case cases[] = {
      // auto: Winograd for 3x3 stride-1 layers of 32..128 channels with >= 256 tiles
      {conv(8, 64, 32, 32, 64, 3, 1, 1), ConvAlgo::Auto, ConvMethod::Winograd},
      {conv(32, 32, 16, 16, 128, 3, 1, 1), ConvAlgo::Auto, ConvMethod::Winograd},
      {conv(8, 16, 32, 32, 64, 3, 1, 1), ConvAlgo::Auto, ConvMethod::Direct},        // few channels
      {conv(8, 256, 32, 32, 128, 3, 1, 1), ConvAlgo::Auto, ConvMethod::Direct},      // C*O > 128^2
      {conv(1, 64, 16, 16, 64, 3, 1, 1), ConvAlgo::Auto, ConvMethod::Direct},        // 64 tiles
      {conv(8, 64, 32, 32, 64, 3, 2, 1), ConvAlgo::Auto, ConvMethod::Direct},        // stride 2
      {conv(8, 64, 32, 32, 64, 3, 1, 2, 2), ConvAlgo::Auto, ConvMethod::Direct},     // dilation
      {conv(8, 64, 32, 32, 64, 3, 1, 1, 1, 2), ConvAlgo::Auto, ConvMethod::Direct},  // groups
      {conv(8, 64, 32, 32, 64, 5, 1, 2), ConvAlgo::Auto, ConvMethod::Direct},        // 5x5
      {conv(8, 64, 32, 32, 64, 3, 1, 1), ConvAlgo::Direct, ConvMethod::Direct},
      // forced: wherever the shape allows
      {conv(1, 3, 8, 8, 4, 3, 1, 1), ConvAlgo::Winograd, ConvMethod::Winograd},
      {conv(1, 3, 3, 8, 4, 3), ConvAlgo::Winograd, ConvMethod::Direct},  // one output row
      {conv(1, 4, 8, 8, 4, 3, 1, 1, 1, 2), ConvAlgo::Winograd, ConvMethod::Direct},
      // a 1x1 convolution of one or two dense pixels is a small matmul
      {conv(1, 9216, 1, 1, 128, 1), ConvAlgo::Auto, ConvMethod::SmallMatmul},
      {conv(2, 100, 1, 1, 10, 1), ConvAlgo::Auto, ConvMethod::SmallMatmul},
      {conv(3, 100, 1, 1, 10, 1), ConvAlgo::Auto, ConvMethod::Direct},
      {conv(1, 100, 1, 2, 10, 1), ConvAlgo::Auto, ConvMethod::SmallMatmul},
      {conv(1, 100, 3, 3, 10, 1, 1, 1), ConvAlgo::Auto, ConvMethod::Direct},  // padded
  };
  for (const Case& c : cases)
    for (const IsaShape isa : {kGenericShape, kAvx2Shape, kAvx512Shape}) {
      const ConvPlan plan = plan_conv_forward(c.p, kDense, c.algo, isa, 4);
      log.check(plan.method == c.want, "algorithm rule: " + describe(c.p) + " algo " +
                                           std::to_string(static_cast<int>(c.algo)) + " vw " +
                                           std::to_string(isa.vector_width) + ": method " +
                                           std::to_string(static_cast<int>(plan.method)));
    }
  // A small matmul needs dense arrays.
  const ConvParams fc = conv(1, 100, 1, 1, 10, 1);
  for (const ConvLayout l : {ConvLayout{false, true, true}, ConvLayout{true, false, true},
                             ConvLayout{true, true, false}})
    log.check(plan_conv_forward(fc, l, ConvAlgo::Auto, kAvx2Shape, 4).method == ConvMethod::Direct,
              "a small matmul over non-dense arrays");
}

// Task order, threads and weight layout of the direct kernel.
void test_direct_rules(TestLog& log) {
  const ConvParams mid = conv(8, 64, 16, 16, 64, 3, 1, 1);  // T * C = 576 >= 64
  const DirectPlan a2 = plan_conv_forward(mid, kDense, ConvAlgo::Direct, kAvx2Shape, 4).direct;
  // by_cache = 128 KiB / (6 * 64 * 4) = 85, by_tasks = 342 * 4 / 16 = 85: chunk 8
  log.check(a2.chunk == 8 && a2.chunks == 43 && a2.tasks == 4 * 43,
            "AVX2 chunked task order: chunk " + std::to_string(a2.chunk));
  const DirectPlan a512 = plan_conv_forward(mid, kDense, ConvAlgo::Direct, kAvx512Shape, 4).direct;
  log.check(a512.chunk == 1 && a512.tasks == a512.pixel_tiles * a512.tiling.ntl,
            "AVX-512 runs pixel tiles fastest");
  const ConvParams first = conv(8, 3, 32, 32, 32, 3, 1, 1);  // T * C = 27 < 64
  log.check(plan_conv_forward(first, kDense, ConvAlgo::Auto, kAvx2Shape, 4).direct.chunk == 1,
            "AVX2 first layers (T*C < 64) keep the unchunked order");
  const ConvParams tiny = conv(1, 4, 4, 4, 4, 3, 1, 1);  // 16 * 4 * 9 * 4 = 2304 FLOP
  log.check(plan_conv_forward(tiny, kDense, ConvAlgo::Auto, kAvx2Shape, 4).direct.threads == 1,
            "a tiny convolution runs on one thread");
  log.check(plan_conv_forward(mid, kDense, ConvAlgo::Direct, kAvx2Shape, 4).direct.threads == 4,
            "a large convolution runs on every thread");
  // Dense HWIO weights are read in place when one tile covers O, or few pixels re-read them.
  const ConvParams one_tile = conv(8, 64, 16, 16, 64, 3, 1, 1);
  ConvPlan p = plan_conv_forward(one_tile, kDense, ConvAlgo::Direct, kAvx512Shape, 4);
  log.check(p.weight_layout == WeightLayout::HwioInPlace && p.direct.weight_floats == 0,
            "HWIO read in place when one tile covers O");
  p = plan_conv_forward(one_tile, kDense, ConvAlgo::Direct, kAvx2Shape, 4);
  log.check(p.weight_layout == WeightLayout::PackedTiles,
            "HWIO packed when many pixels re-read it");
  p = plan_conv_forward(conv(1, 64, 2, 2, 256, 1), kDense, ConvAlgo::Direct, kAvx2Shape, 4);
  log.check(p.weight_layout == WeightLayout::HwioInPlace, "HWIO read in place at batch 1");
  p = plan_conv_forward(one_tile, ConvLayout{true, true, false}, ConvAlgo::Direct, kAvx512Shape, 4);
  log.check(p.weight_layout == WeightLayout::PackedTiles, "OIHW weights are packed");
}

// Workspace sizes (in floats) from the geometry.
void test_workspace_sizes(TestLog& log) {
  const ConvParams p = conv(2, 6, 10, 12, 20, 3, 2, 1, 1, 2);  // groups 2: Cg 3, Og 10
  const ConvPlan plan =
      plan_conv_forward(p, ConvLayout{false, false, false}, ConvAlgo::Auto, kAvx2Shape, 3);
  const DirectPlan& d = plan.direct;
  // tiling of Og = 10 on AVX2: nv 2, nt 16, one tile
  log.check(d.input_floats == 2 * 12 * 14 * 6, "direct: padded input floats");
  log.check(d.w_tile == 9 * 3 * 16 && d.weight_floats == 2 * 1 * 9 * 3 * 16,
            "direct: packed weight floats");
  log.check(d.bias_floats == 2 * 16 && d.index_entries == 18, "direct: bias and tap tables");
  log.check(d.out_floats == 2 * p.OH * p.OW * 20, "direct: output workspace when y is not NHWC");
  log.check(plan.workspace_bytes ==
                4 * (d.input_floats + d.weight_floats + d.bias_floats + d.out_floats) +
                    8 * d.index_entries,
            "direct: workspace bytes");
  const ConvPlan in_place =
      plan_conv_forward(conv(2, 6, 10, 12, 20, 1), kDense, ConvAlgo::Auto, kAvx2Shape, 3);
  log.check(in_place.direct.input_floats == 0 && in_place.direct.out_floats == 0,
            "direct: an unpadded NHWC input and output need no workspace");

  const ConvParams wp = conv(4, 40, 9, 9, 40, 3, 1, 1);
  const ConvPlan w = plan_conv_forward(wp, kDense, ConvAlgo::Winograd, kAvx512Shape, 2);
  const WinogradPlan& g = w.winograd;
  // 9x9 output: 5x5 tiles, padded input 12x12; O = 40 on AVX-512: one 48-lane tile
  log.check(g.tiles_h == 5 && g.tiles_w == 5 && g.Hp == 12 && g.Wp == 12 && g.pad_b == 2 &&
                g.pad_r == 2 && g.tiles == 100,
            "winograd: tiles and padding");
  log.check(g.input_floats == 4 * 12 * 12 * 40 && g.weight_floats == 16 * 40 * 48 &&
                g.bias_floats == 48 && g.out_floats == 0,
            "winograd: workspace floats");
  // block: 65536 / (16 * 88) = 46 -> whole 7-pixel tiles: 42
  log.check(g.block_tiles == 42 && g.blocks == 3 && g.scratch_floats == 2 * 16 * 42 * 88,
            "winograd: blocks of tiles: " + std::to_string(g.block_tiles));
  log.check(w.weight_layout == WeightLayout::WinogradTiles, "winograd: weight layout");
}

// The gradients' plans: Winograd where the forward's rule picks it, the direct weight
// gradient's row blocks and pixel parts, and the data gradient's two strategies.
void test_gradient_plans(TestLog& log) {
  const ConvParams mid = conv(8, 64, 32, 32, 64, 3, 1, 1);
  log.check(plan_conv_weight_grad(mid, kDense, ConvAlgo::Auto, kAvx2Shape, 4, true).method ==
                ConvMethod::Winograd,
            "weight gradient: Winograd where the forward takes it");
  log.check(plan_conv_weight_grad(mid, kDense, ConvAlgo::Direct, kAvx2Shape, 4, true).method ==
                ConvMethod::Direct,
            "weight gradient: direct when asked for");
  const WeightGradPlan bias_only =
      plan_conv_weight_grad(mid, kDense, ConvAlgo::Auto, kAvx2Shape, 4, false);
  log.check(bias_only.method == ConvMethod::Direct && !bias_only.weights &&
                bias_only.bias_blocks == (8 * 32 * 32 + 511) / 512,
            "weight gradient: a bias-only plan");
  // RGB first layer on AVX-512: 32 outputs = 2 vectors, 12 rows a tile, 27 rows k = 3 blocks
  // across taps; 3 tiles: the 256 output rows go in ceil(16 / 3) = 6 parts.
  const WeightGradPlan rgb = plan_conv_weight_grad(conv(8, 3, 32, 32, 32, 3, 1, 1), kDense,
                                                   ConvAlgo::Auto, kAvx512Shape, 4, true);
  log.check(rgb.tile_rows == 12 && !rgb.contiguous_rows && rgb.row_blocks == 3 && rgb.tiles == 3 &&
                rgb.parts == 6 && rgb.acc_floats == 6 * 27 * 32,
            "weight gradient: first-layer tiles and parts");
  const WeightGradPlan deep = plan_conv_weight_grad(conv(8, 256, 8, 8, 256, 3, 1, 1), kDense,
                                                    ConvAlgo::Auto, kAvx512Shape, 4, true);
  log.check(deep.contiguous_rows && deep.row_blocks == 9 * 43 && deep.parts == 1,
            "weight gradient: deep-layer tiles");
  // Its gy is re-read by 387 row blocks in 4 channel tiles: packed tile-major, and 16 KiB of
  // a tile's gy columns (64 pixels = 8 rows of 8) stay in L1; 1.5 KiB accumulators per tile.
  log.check(deep.gy_layout == GradOutLayout::TileMajor && deep.gy_floats == 8 * 8 * 8 * 256 &&
                deep.l1_rows == 8 && deep.group_tiles == 85,
            "weight gradient: deep-layer gy packed tile-major, L1 blocks");
  // One part and a dense HWIO gw: accumulated in place; an OIHW gw (or pixel parts, as in
  // the RGB layer above) goes through the workspace.
  const WeightGradPlan oihw =
      plan_conv_weight_grad(conv(8, 256, 8, 8, 256, 3, 1, 1), ConvLayout{true, true, false},
                            ConvAlgo::Auto, kAvx512Shape, 4, true);
  log.check(deep.into_output && deep.acc_floats == 0 && !rgb.into_output && !oihw.into_output &&
                oihw.acc_floats == 9 * 256 * 256,
            "weight gradient: accumulated in a dense HWIO gw");
  // A 1x1 layer from 64 channels (11 row blocks) reads a dense gy in place; 70 outputs (two
  // tiles padded to 128) or a gy that is not dense NHWC are packed pixel-major.
  const ConvParams wide = conv(4, 64, 8, 8, 256, 1);
  const WeightGradPlan in_place =
      plan_conv_weight_grad(wide, kDense, ConvAlgo::Auto, kAvx512Shape, 4, true);
  log.check(in_place.gy_layout == GradOutLayout::InPlace && in_place.gy_floats == 0,
            "weight gradient: dense gy read in place");
  const WeightGradPlan ragged = plan_conv_weight_grad(conv(4, 64, 8, 8, 70, 1), kDense,
                                                      ConvAlgo::Auto, kAvx512Shape, 4, true);
  const WeightGradPlan gy_strided = plan_conv_weight_grad(wide, ConvLayout{true, false, true},
                                                          ConvAlgo::Auto, kAvx512Shape, 4, true);
  log.check(ragged.gy_layout == GradOutLayout::PixelMajor && ragged.gy_floats == 4 * 64 * 128 &&
                gy_strided.gy_layout == GradOutLayout::PixelMajor,
            "weight gradient: gy packed pixel-major");

  const DataGradPlan same =
      plan_conv_data_grad(conv(2, 8, 9, 9, 16, 3, 1, 1), kDense, kAvx2Shape, 4);
  log.check(same.as_forward && same.forward.C == 16 && same.forward.O == 8 && same.forward.H == 9 &&
                same.forward.pad_t == 1 && same.forward.OH == 9,
            "data gradient of a stride-1 layer: a forward convolution of gy");
  const DataGradPlan strided =
      plan_conv_data_grad(conv(1, 8, 9, 9, 16, 3, 2, 1), kDense, kAvx2Shape, 4);
  log.check(!strided.as_forward && strided.pad_lo == 1 && strided.pad_hi == 0 && strided.OWp == 6 &&
                strided.phases == 2 && strided.tasks == 9 && strided.gy_floats == 5 * 6 * 16 &&
                strided.index_entries == 4 * 21,
            "data gradient of a stride-2 layer: stride phases");
}

void test_plan_cache(TestLog& log) {
  const ConvParams p = conv(8, 64, 32, 32, 64, 3, 1, 1);
  const ConvPlan fresh = plan_conv_forward(p, kDense, ConvAlgo::Auto, kAvx2Shape, 4);
  const ConvPlan& cached = cached_conv_forward_plan(p, kDense, ConvAlgo::Auto, kAvx2Shape, 4);
  log.check(fresh.method == cached.method && fresh.workspace_bytes == cached.workspace_bytes &&
                fresh.direct.tasks == cached.direct.tasks &&
                fresh.winograd.block_tiles == cached.winograd.block_tiles,
            "a cached plan is the plan");
  const ConvPlan& other = cached_conv_forward_plan(p, kDense, ConvAlgo::Direct, kAvx2Shape, 4);
  log.check(other.method == ConvMethod::Direct, "the plan cache keys on the algorithm setting");
  for (int i = 0; i < 40; ++i)  // evicts everything
    cached_conv_forward_plan(conv(1, 1 + i, 4, 4, 2, 1), kDense, ConvAlgo::Auto, kAvx2Shape, 1);
  log.check(cached_conv_forward_plan(p, kDense, ConvAlgo::Auto, kAvx2Shape, 4).method ==
                ConvMethod::Winograd,
            "an evicted plan is made again");
}

void test_kernel_tables(TestLog& log) {
  const KernelTable empty;
  const std::string missing = missing_entries(empty);
  log.check(missing.find("conv2d_forward (register_conv_direct)") != std::string::npos &&
                missing.find("workspace_bytes (register_workspace)") != std::string::npos,
            "an empty table lists its missing entries: " + missing);
  for (const KernelTable* t : supported_tables())
    log.check(missing_entries(*t).empty(),
              std::string(t->name) + " table lacks " + missing_entries(*t));
}

}  // namespace

std::vector<std::string> run_native_tests() {
  TestLog log;
  test_tiling(log);
  test_algorithm_rule(log);
  test_direct_rules(log);
  test_workspace_sizes(log);
  test_gradient_plans(log);
  test_plan_cache(log);
  test_kernel_tables(log);
  for (const KernelTable* t : supported_tables()) {
#if defined(PYCONV_HAVE_X86)
    if (std::strcmp(t->name, "avx512") == 0) avx512::run_packing_tests(log);
    if (std::strcmp(t->name, "avx2") == 0) avx2::run_packing_tests(log);
#endif
    if (std::strcmp(t->name, "generic") == 0) generic::run_packing_tests(log);
  }
  return log.failures;
}

}  // namespace pyconv
