// The compute kernels of pyconv. This one source is compiled once per instruction set with
// PYCONV_ISA_NAME = generic | avx2 | avx512 and the matching -m flags (CMakeLists.txt); the
// dispatcher (dispatch.cpp) picks a table at run time.
//
// Layout: every convolution runs on channels-last (NHWC) buffers. The caller's tensors, in
// any layout and with any strides, are packed once per call into a padded NHWC workspace
// (pack_padded_nhwc: the one place where layouts are converted), so the microkernels see a
// uniform problem with no bounds checks and vectorize over channels.
//
// The three convolution passes share one register-blocked microkernel (conv_tile):
//   out[p][0:NT] (+)= sum_t sum_c in[in_off[t] + p*in_pix + c] * w[w_off[t] + c*NT + 0:NT]
// i.e. P output pixels x NT = NV*VW output channels in registers, reduced over taps t and
// channels c, broadcasting one input scalar per (pixel, channel) and loading NV weight
// vectors per (tap, channel).
//   forward:        in = padded x,  channels c = C/groups, out = y (NT output channels)
//   backward-data:  in = padded gy, channels c = O/groups, out = gx (NT input channels),
//                   taps = the kernel taps that land on this input pixel's stride phase.
// backward-weight has its own microkernel (wgrad_tile): I input channels x NT output
// channels in registers, reduced over output pixels.
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "checked.h"
#include "core.h"
#include "simd.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

// ---------------------------------------------------------------------------------------
// Workspaces: grow-only buffers owned by the calling thread, so repeated calls do no heap
// churn and concurrent calls from several Python threads never share a buffer.
// ---------------------------------------------------------------------------------------
enum Slot { WS_IN = 0, WS_W, WS_BIAS, WS_OUT, WS_AUX, WS_COUNT };

// Buffers are handed out 64-byte aligned: a vector load that straddles two cache lines
// costs about twice as much, and malloc alone only promises 16 bytes.
struct Workspace {
  std::vector<float> buf[WS_COUNT];
  std::vector<int64_t> index;  // tap / pixel offset tables
  // Sizes are given as their factors, multiplied here with overflow checks (checked.h).
  int64_t* get_index(std::initializer_list<int64_t> factors) {
    const int64_t n = checked_product(factors, "an index table size");
    if (static_cast<int64_t>(index.size()) < n) index.resize(static_cast<size_t>(n));
    return index.data();
  }
  float* get(Slot s, std::initializer_list<int64_t> factors) {
    constexpr int64_t kAlignFloats = 16;
    const int64_t n = checked_add(checked_product(factors, "a workspace size"), kAlignFloats + VW,
                                  "a workspace size");
    auto& b = buf[s];
    if (static_cast<int64_t>(b.size()) < n) {
      std::vector<float>().swap(b);  // free first: never hold old + new at once
      b.resize(static_cast<size_t>(n));
    }
    const auto addr = reinterpret_cast<std::uintptr_t>(b.data());
    return b.data() + ((64 - addr % 64) % 64) / sizeof(float);
  }
  void release() {
    std::vector<int64_t>().swap(index);
    for (auto& b : buf) std::vector<float>().swap(b);
  }
  int64_t bytes() const {
    size_t n = index.capacity() * sizeof(int64_t);
    for (const auto& b : buf) n += b.capacity() * sizeof(float);
    return static_cast<int64_t>(n);
  }
};

Workspace& workspace() {
  static thread_local Workspace ws;
  return ws;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
inline int64_t pos_mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

// True when v is exactly a dense NHWC array (size-1 dims may have any stride).
bool is_dense_nhwc(int64_t n, int64_t c, int64_t h, int64_t w, int64_t sn, int64_t sc, int64_t sh,
                   int64_t sw) {
  return (c == 1 || sc == 1) && (w == 1 || sw == c) && (h == 1 || sh == w * c) &&
         (n == 1 || sn == h * w * c);
}
template <class V>
bool is_dense_nhwc(const V& v) {
  return is_dense_nhwc(v.n, v.c, v.h, v.w, v.sn, v.sc, v.sh, v.sw);
}

// ---------------------------------------------------------------------------------------
// Layout conversion (the only place): src (any strides) -> dst dense
// [N][H+pt+pb][W+pl+pr][G][cg_pad], zeros in the spatial padding and in the channel padding
// lanes (cg_pad >= C/G rounds each group up to whole vectors where a kernel needs it).
// ---------------------------------------------------------------------------------------
void pack_padded_nhwc(ConstView4 s, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t G,
                      int64_t cg_pad, float* dst, int nthreads) {
  const int64_t Hp = s.h + pt + pb, Wp = s.w + pl + pr, Cg = s.c / G, Cd = G * cg_pad;
  const bool channels_inner = std::llabs(s.sc) <= std::llabs(s.sw);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t row = 0; row < s.n * Hp; ++row) {
    const int64_t n = row / Hp, hp = row % Hp, h = hp - pt;
    float* d = dst + row * Wp * Cd;
    if (h < 0 || h >= s.h) {
      std::memset(d, 0, sizeof(float) * Wp * Cd);
      continue;
    }
    std::memset(d, 0, sizeof(float) * pl * Cd);
    std::memset(d + (pl + s.w) * Cd, 0, sizeof(float) * pr * Cd);
    float* dr = d + pl * Cd;
    const float* sr = s.data + n * s.sn + h * s.sh;
    if (cg_pad != Cg) {
      for (int64_t w = 0; w < s.w; ++w)
        for (int64_t g = 0; g < G; ++g)
          std::memset(dr + w * Cd + g * cg_pad + Cg, 0, sizeof(float) * (cg_pad - Cg));
    }
    if (channels_inner) {
      for (int64_t w = 0; w < s.w; ++w)
        for (int64_t g = 0; g < G; ++g)
          for (int64_t c = 0; c < Cg; ++c)
            dr[w * Cd + g * cg_pad + c] = sr[w * s.sw + (g * Cg + c) * s.sc];
    } else {  // e.g. NCHW: read rows contiguously, write strided
      for (int64_t g = 0; g < G; ++g)
        for (int64_t c = 0; c < Cg; ++c) {
          const float* sc = sr + (g * Cg + c) * s.sc;
          float* dc = dr + g * cg_pad + c;
          for (int64_t w = 0; w < s.w; ++w) dc[w * Cd] = sc[w * s.sw];
        }
    }
  }
}

// Dense NHWC src [N][H][W][C] -> dst view (any strides).
void unpack_nhwc(const float* src, View4 d, int nthreads) {
  const bool channels_inner = std::llabs(d.sc) <= std::llabs(d.sw);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t row = 0; row < d.n * d.h; ++row) {
    const int64_t n = row / d.h, h = row % d.h;
    const float* s = src + row * d.w * d.c;
    float* dr = d.data + n * d.sn + h * d.sh;
    if (channels_inner) {
      for (int64_t w = 0; w < d.w; ++w)
        for (int64_t c = 0; c < d.c; ++c) dr[w * d.sw + c * d.sc] = s[w * d.c + c];
    } else {
      for (int64_t c = 0; c < d.c; ++c)
        for (int64_t w = 0; w < d.w; ++w) dr[w * d.sw + c * d.sc] = s[w * d.c + c];
    }
  }
}

// ---------------------------------------------------------------------------------------
// Register blocking. ACC accumulators leave room for the NV weight vectors + a broadcast.
// ---------------------------------------------------------------------------------------
constexpr int ACC = NUM_VREGS >= 32 ? 24 : 12;
constexpr int NV_MAX = NUM_VREGS >= 32 ? 4 : 2;
// Pixels per tile: each needs its own input pointer, and with more than 8 of them (or 8 with
// three weight vectors) GCC runs out of general registers and spills pointers into vector
// registers, then weights onto the stack: 12-pixel tiles ran at half speed.
constexpr int pmax_for(int nv) { return nv == 3 ? 7 : (ACC / nv < 8 ? ACC / nv : 8); }
// Weight-gradient tiles broadcast from one pointer at fixed offsets, so they can use every
// accumulator register.
constexpr int wgrad_rows_for(int nv) { return ACC / nv; }

struct Tiling {
  int nv;       // vectors of output channels per tile
  int pmax;     // pixels per tile
  int64_t nt;   // channels per tile = nv * VW
  int64_t ntl;  // number of channel tiles
};

// Channels-per-tile from the channel count: the widest tile that the channels fill.
Tiling choose_tiling(int64_t channels) {
  int nv = static_cast<int>(std::min<int64_t>(NV_MAX, ceil_div(channels, VW)));
  if (nv == 3 && channels > 3 * VW) nv = 2;  // 3-vector tiles only for exactly <= 3 vectors
  Tiling t;
  t.nv = nv;
  t.pmax = pmax_for(nv);
  t.nt = static_cast<int64_t>(nv) * VW;
  t.ntl = ceil_div(channels, t.nt);
  return t;
}

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
// Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray, arXiv:1509.09308).
// Each 2x2 output tile comes from a 4x4 input tile d:  Y = A^T [ U (.) V ] A, with
//   V = B^T d B (input transform), U = G g G^T (weights), and (.) summed over channels:
// for each of the 16 positions xi, M[xi] (tiles x O) = V[xi] (tiles x C) . U[xi] (C x O),
// a GEMM run by the same microkernel as a 1x1 convolution. 16 multiplies per tile and
// channel pair instead of 36: 2.25x fewer FLOPs. Tiles go in blocks whose V and M stay in
// L2 (transform, 16 GEMMs, inverse transform, then the next block), one block per task,
// so each tile is computed by one thread in one fixed order: results do not depend on
// the thread count. Rounding differs from the direct kernel by a few ulps (the transforms
// add and subtract up to 4 terms).
// ---------------------------------------------------------------------------------------
// The transforms make intermediate values larger than any the direct kernel forms: an input
// (or gy) tile's transform adds up to 4 values, the products are summed over C channels (or
// over the tiles, for the weight gradient), and the output transform adds up to 9 of those
// sums. With X, W the largest |input| and |transformed weight| (or |gy|), every intermediate is
// at most growth * X * W, growth = 36 C for the forward (4 x 9 per channel) and 36 tiles for
// the weight gradient; the direct kernel's sums are bounded by 9 C X W (or pixels X W). So the
// Winograd path runs only where that bound stays below half of FLT_MAX (then neither path
// overflows, and they agree to rounding), and no input is NaN or infinite (inf - inf in the
// transforms gives NaN where the direct kernel gives inf): otherwise the direct kernel runs,
// whichever algorithm was asked for, and results never depend on which one was chosen. The
// check is one read of the packed input and weights (see README "Design" for its cost).
bool winograd_values_ok(double x_max, double w_max, double growth) {
  constexpr double kMax = std::numeric_limits<float>::max();
  return x_max <= kMax / 8 && w_max <= kMax / 8 && growth * x_max * w_max <= kMax / 2;
}

// max |a[i]| over n contiguous floats; +inf when any of them is NaN or infinite. Vector
// maxima that keep NaN (a scalar loop does not vectorize: 6.4 ms for 9.5 MB instead of 0.4).
float max_abs(const float* a, int64_t n, int nthreads) {
  constexpr int64_t kBlock = 1 << 14;  // a multiple of every VW
  const int64_t nblocks = ceil_div(n, kBlock);
  float m = 0.f;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(max : m)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    const vf neg = vset1(-1.f);
    vf acc = vzero();
    int64_t i = lo;
    for (; i + VW <= hi; i += VW) {
      const vf v = vload(a + i);
      acc = vmax_nan(acc, vmax_nan(vmul(v, neg), v));  // |v|, NaN kept
    }
    alignas(64) float lanes[VW];
    vstore(lanes, acc);
    float bm = 0.f;
    for (int l = 0; l < VW; ++l) bm = std::isnan(lanes[l]) || lanes[l] > bm ? lanes[l] : bm;
    for (; i < hi; ++i) {
      const float v = std::fabs(a[i]);
      bm = std::isnan(v) || v > bm ? v : bm;
    }
    m = std::isnan(bm) ? std::numeric_limits<float>::infinity() : std::max(m, bm);
  }
  return m;
}

bool winograd_applies(const ConvParams& p) {
  const ConvAlgo algo = conv_algorithm();
  if (algo == ConvAlgo::Direct) return false;
  const bool shape_ok = p.KH == 3 && p.KW == 3 && p.stride_h == 1 && p.stride_w == 1 &&
                        p.dil_h == 1 && p.dil_w == 1 && p.groups == 1 && p.OH >= 2 && p.OW >= 2;
  if (algo == ConvAlgo::Winograd) return shape_ok;
  // Measured (bench/README.md): 1.2-1.7x the direct kernel from 32 to 128 channels. Fewer
  // channels: the transforms cost what the GEMMs save. More: the transformed weights
  // (16*C*O floats) leave L2 and are re-read for every block of tiles. Few tiles: too
  // little parallel work.
  const int64_t tiles = p.N * ((p.OH + 1) / 2) * ((p.OW + 1) / 2);
  return shape_ok && p.C >= 32 && p.O >= 32 && p.C * p.O <= 128 * 128 && tiles >= 256;
}

// U[xi][tile][c][NT] from w (O, C, 3, 3): U = G g G^T, G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1].
void winograd_weights(ConstView4 w, const Tiling& tl, float* U, int nthreads) {
  const int64_t C = w.c, O = w.n, per_xi = tl.ntl * C * tl.nt;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t job = 0; job < tl.ntl * C; ++job) {
    const int64_t tile = job / C, c = job % C;
    for (int64_t l = 0; l < tl.nt; ++l) {
      const int64_t o = tile * tl.nt + l;
      float u[4][4] = {};
      if (o < O) {
        float g[3][3], t[4][3];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) g[i][j] = w.at(o, c, i, j);
        for (int j = 0; j < 3; ++j) {  // t = G g
          t[0][j] = g[0][j];
          t[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
          t[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
          t[3][j] = g[2][j];
        }
        for (int i = 0; i < 4; ++i) {  // u = t G^T
          u[i][0] = t[i][0];
          u[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
          u[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
          u[i][3] = t[i][2];
        }
      }
      for (int xi = 0; xi < 16; ++xi)
        U[xi * per_xi + (tile * C + c) * tl.nt + l] = u[xi / 4][xi % 4];
    }
  }
}

// V = B^T d B on vectors of channels. Forward (F(2x2, 3x3)):
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1];
// the weight gradient's F(3x3, 2x2) differs only in the sign of the last row: [0 -1 0 1].
template <bool WGRAD, class Load, class Store>
inline void winograd_input_tile(Load load, Store store) {
  vf d[4][4], t[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) d[i][j] = load(i, j);
  const vf neg = vset1(-1.f);
  auto last = [&](vf a1, vf a3) { return WGRAD ? vfma(neg, a1, a3) : vfma(neg, a3, a1); };
  for (int j = 0; j < 4; ++j) {
    t[0][j] = vfma(neg, d[2][j], d[0][j]);
    t[1][j] = vadd(d[1][j], d[2][j]);
    t[2][j] = vfma(neg, d[1][j], d[2][j]);
    t[3][j] = last(d[1][j], d[3][j]);
  }
  for (int i = 0; i < 4; ++i) {
    store(i * 4 + 0, vfma(neg, t[i][2], t[i][0]));
    store(i * 4 + 1, vadd(t[i][1], t[i][2]));
    store(i * 4 + 2, vfma(neg, t[i][1], t[i][2]));
    store(i * 4 + 3, last(t[i][1], t[i][3]));
  }
}

// All C channels of the 4x4 input tile at `base` (pixel row stride Wp*C) -> out[xi * stride
// + c]: whole vectors, then the channel tail through a zero-padded vector.
template <bool WGRAD>
void winograd_input_channels(const float* base, int64_t Wp, int64_t C, float* out, int64_t stride) {
  int64_t c = 0;
  for (; c + VW <= C; c += VW)
    winograd_input_tile<WGRAD>([&](int i, int j) { return vload(base + (i * Wp + j) * C + c); },
                               [&](int xi, vf v) { vstore(out + xi * stride + c, v); });
  if (c == C) return;
  alignas(64) float dt[16][VW] = {}, ot[16][VW];
  for (int i = 0; i < 16; ++i)
    for (int64_t l = 0; l < C - c; ++l) dt[i][l] = base[((i / 4) * Wp + i % 4) * C + c + l];
  winograd_input_tile<WGRAD>([&](int i, int j) { return vload(dt[i * 4 + j]); },
                             [&](int xi, vf v) { vstore(ot[xi], v); });
  for (int xi = 0; xi < 16; ++xi)
    for (int64_t l = 0; l < C - c; ++l) out[xi * stride + c + l] = ot[xi][l];
}

// Returns false, having computed nothing, when the values need the direct kernel (above).
bool conv2d_winograd(const ConvParams& p, ConstView4 x, ConstView4 w, const float* bias, bool relu,
                     View4 y, int nthreads) {
  Workspace& ws = workspace();
  const int64_t C = p.C, O = p.O;
  const int64_t th = ceil_div(p.OH, 2), tw = ceil_div(p.OW, 2);
  // Padded input covering every 4x4 tile: rows 2*th + 2, columns 2*tw + 2.
  const int64_t Hp = 2 * th + 2, Wp = 2 * tw + 2;
  const int64_t pad_b = Hp - p.H - p.pad_t, pad_r = Wp - p.W - p.pad_l;
  float* xp = ws.get(WS_IN, {p.N, Hp, Wp, C});
  pack_padded_nhwc(x, p.pad_t, pad_b, p.pad_l, pad_r, 1, C, xp, nthreads);
  const Tiling tl = choose_tiling(O);
  const int64_t Opad = tl.ntl * tl.nt, per_xi = tl.ntl * C * tl.nt;
  float* U = ws.get(WS_W, {16, tl.ntl, C, tl.nt});
  winograd_weights(w, tl, U, nthreads);
  if (!winograd_values_ok(max_abs(xp, p.N * Hp * Wp * C, nthreads),
                          max_abs(U, 16 * per_xi, nthreads), 36.0 * static_cast<double>(C)))
    return false;
  float* bp = ws.get(WS_BIAS, {Opad});  // bias, zero-padded to whole vectors
  for (int64_t o = 0; o < Opad; ++o) bp[o] = (bias && o < O) ? bias[o] : 0.f;
  const bool direct_out = is_dense_nhwc(y);
  float* yo = direct_out ? y.data : ws.get(WS_OUT, {p.N, p.OH, p.OW, O});

  // Tiles per block: V (16 x TB x C) and M (16 x TB x Opad) in about 256 KB.
  const int64_t tiles = p.N * th * tw;
  int64_t TB = (256 * 1024 / 4) / (16 * (C + Opad));
  TB = std::max<int64_t>(tl.pmax, std::min<int64_t>(128, TB / tl.pmax * tl.pmax));
  const int64_t blocks = ceil_div(tiles, TB);
  const int64_t vsize = 16 * TB * C, msize = 16 * TB * Opad;
  float* scratch = ws.get(WS_AUX, {nthreads, 16 * TB, C + Opad});
  const int64_t ov_end = O / VW * VW;  // output channels in whole vectors
  const int64_t in_off0 = 0, w_off0 = 0;

#pragma omp parallel num_threads(nthreads)
  {
    float* V = scratch + omp_get_thread_num() * (vsize + msize);
    float* M = V + vsize;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t t0 = b * TB, nb = std::min(TB, tiles - t0);
      // 1. input transform: V[xi][t][c]
      for (int64_t t = 0; t < nb; ++t) {
        const int64_t tile = t0 + t, n = tile / (th * tw), ti = (tile / tw) % th, tj = tile % tw;
        const float* base = xp + ((n * Hp + 2 * ti) * Wp + 2 * tj) * C;
        winograd_input_channels<false>(base, Wp, C, V + t * C, TB * C);
      }
      // 2. sixteen GEMMs M[xi] (nb x Opad) = V[xi] (nb x C) . U[xi] (C x Opad)
      TileArgs a;
      a.in_pix = C;
      a.pix_off = nullptr;
      a.in_off = &in_off0;
      a.w_off = &w_off0;
      a.ntaps = 1;
      a.C = C;
      a.w_row = tl.nt;
      a.out_pix = Opad;
      a.oc_valid = static_cast<int>(tl.nt);
      a.bias = nullptr;
      a.relu = false;
      for (int xi = 0; xi < 16; ++xi)
        for (int64_t ot = 0; ot < tl.ntl; ++ot) {
          a.in = V + xi * TB * C;
          a.w = U + xi * per_xi + ot * C * tl.nt;
          a.out = M + xi * TB * Opad + ot * tl.nt;
          conv_row(tl, a, nb);
        }
      // 3. output transform Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], + bias, relu, store
      for (int64_t t = 0; t < nb; ++t) {
        const int64_t tile = t0 + t, n = tile / (th * tw), ti = (tile / tw) % th, tj = tile % tw;
        const int rows = static_cast<int>(std::min<int64_t>(2, p.OH - 2 * ti));
        const int cols = static_cast<int>(std::min<int64_t>(2, p.OW - 2 * tj));
        float* out = yo + ((n * p.OH + 2 * ti) * p.OW + 2 * tj) * O;
        const float* mt = M + t * Opad;
        for (int64_t o = 0; o < O; o += VW) {
          vf m[16], r[2][4], res[2][2];
          for (int xi = 0; xi < 16; ++xi) m[xi] = vload(mt + xi * TB * Opad + o);
          for (int j = 0; j < 4; ++j) {
            r[0][j] = vadd(vadd(m[j], m[4 + j]), m[8 + j]);
            r[1][j] = vfma(vset1(-1.f), vadd(m[8 + j], m[12 + j]), m[4 + j]);
          }
          for (int i = 0; i < 2; ++i) {
            res[i][0] = vadd(vadd(r[i][0], r[i][1]), r[i][2]);
            res[i][1] = vfma(vset1(-1.f), vadd(r[i][2], r[i][3]), r[i][1]);
          }
          const vf bvv = vload(bp + o);
          for (int i = 0; i < rows; ++i)
            for (int j = 0; j < cols; ++j) {
              vf v = vadd(res[i][j], bvv);
              if (relu) v = vmax_nan(vzero(), v);
              float* dst = out + (i * p.OW + j) * O + o;
              if (o < ov_end) {
                vstore(dst, v);
              } else {
                alignas(64) float tmp[VW];
                vstore(tmp, v);
                std::memcpy(dst, tmp,
                            sizeof(float) * static_cast<size_t>(std::min<int64_t>(VW, O - o)));
              }
            }
        }
      }
    }
  }
  if (!direct_out) unpack_nhwc(yo, y, nthreads);
  return true;
}

// ---------------------------------------------------------------------------------------
// Matrix times a few rows: y (M, O) = x (M, C) . w (C, O) + bias, M <= kSmallM, all dense.
// A 1x1 convolution over one or two pixels (a Dense layer at batch 1) is a stream over w:
// the MNIST CNN's 9216x128 kernel is 4.7 MB read for 1.2 MFLOP. The pixel-tile microkernel
// keeps one accumulator chain per vector there (latency-bound at a fraction of the memory
// bandwidth); here rows of w are split into fixed blocks of kRows, each block's partial sums
// are made with eight vector chains per pixel and kept apart, and the blocks are added in
// block order afterwards: the same result for any thread count.
// ---------------------------------------------------------------------------------------
constexpr int64_t kSmallM = 2;

void matmul_small_m(const float* x, int64_t M, int64_t C, const float* w, int64_t O,
                    const float* bias, bool relu, float* y, int nthreads) {
  constexpr int64_t kRows = 256, kCols = 8 * VW;  // a block: kRows x kCols of w
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
          vf acc[8];
          for (int v = 0; v < 8; ++v) acc[v] = vzero();
          for (int64_t c = c0; c < c1; ++c) {
            const vf xv = vset1(xm[c]);
            const float* wr = w + c * O + o0;
            for (int v = 0; v < 8; ++v) acc[v] = vfma(xv, vload(wr + v * VW), acc[v]);
          }
          for (int v = 0; v < 8; ++v) vstore(out + v * VW, acc[v]);
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

// ---------------------------------------------------------------------------------------
// conv2d forward. x: (N,C,H,W) view, w: (O,C/G,KH,KW) view, y: (N,O,OH,OW) view.
// ---------------------------------------------------------------------------------------
void conv2d_forward(const ConvParams& p, ConstView4 x, ConstView4 w, const float* bias, bool relu,
                    View4 y, int nthreads) {
  if (winograd_applies(p) && conv2d_winograd(p, x, w, bias, relu, y, nthreads)) return;
  const int64_t M = p.N * p.OH * p.OW;
  if (M <= kSmallM && p.KH == 1 && p.KW == 1 && p.groups == 1 && p.stride_h == 1 &&
      p.stride_w == 1 && !(p.pad_t | p.pad_b | p.pad_l | p.pad_r) && is_dense_nhwc(x) &&
      is_dense_nhwc(y) && w.sn == 1 && w.sc == p.O) {
    matmul_small_m(x.data, M, p.C, w.data, p.O, bias, relu, y.data, nthreads);  // w: (C, O)
    return;
  }
  Workspace& ws = workspace();
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, T = p.KH * p.KW;
  const int64_t Hp = p.H + p.pad_t + p.pad_b, Wp = p.W + p.pad_l + p.pad_r;
  const Tiling tl = choose_tiling(Og);

  // Input -> padded NHWC (skipped when the caller already hands us exactly that).
  const float* xp = x.data;
  if (p.pad_t || p.pad_b || p.pad_l || p.pad_r || !is_dense_nhwc(x)) {
    float* buf = ws.get(WS_IN, {p.N, Hp, Wp, p.C});
    pack_padded_nhwc(x, p.pad_t, p.pad_b, p.pad_l, p.pad_r, 1, p.C, buf, nthreads);
    xp = buf;
  }
  // Weights -> wp[g][tile][tap][c][NT]; bias -> bp[g][tile][NT], zero beyond Og. Keras's
  // dense HWIO kernel (kh, kw, c, o) already has that shape when one tile covers O, and is
  // then read in place. With several tiles its rows are strided (each tile reads NT of O
  // floats per row), which maps a tile onto a fraction of the L2 sets: worth it only when
  // few pixel tiles re-read the weights (batch-1 inference, where repacking a dense layer's
  // weights cost more than the layer itself).
  const bool hwio_in_place =
      G == 1 && p.O % tl.nt == 0 && w.sn == 1 && w.sc == p.O && (p.KW == 1 || w.sw == p.C * p.O) &&
      (p.KH == 1 || w.sh == p.KW * p.C * p.O) && (p.O == tl.nt || M <= 4 * tl.pmax);
  const int64_t wtile =  // between channel tiles
      hwio_in_place ? tl.nt : checked_product({T, Cg, tl.nt}, "the packed weights");
  const int64_t w_row = hwio_in_place ? p.O : tl.nt;
  const int64_t w_tap = hwio_in_place ? p.C * p.O : Cg * tl.nt;
  const float* wp = w.data;
  if (!hwio_in_place) {
    float* packed = ws.get(WS_W, {G, tl.ntl, wtile});
    pack_weights(w, G, tl, false, packed, nthreads);
    wp = packed;
  }
  float* bp = nullptr;
  if (bias) {
    bp = ws.get(WS_BIAS, {G, tl.ntl, tl.nt});
    for (int64_t g = 0; g < G; ++g)
      for (int64_t i = 0; i < tl.ntl * tl.nt; ++i)
        bp[g * tl.ntl * tl.nt + i] = i < Og ? bias[g * Og + i] : 0.f;
  }
  int64_t* in_off = ws.get_index({2, T});
  int64_t* w_off = in_off + T;
  for (int64_t kh = 0; kh < p.KH; ++kh)
    for (int64_t kw = 0; kw < p.KW; ++kw) {
      in_off[kh * p.KW + kw] = (kh * p.dil_h * Wp + kw * p.dil_w) * p.C;
      w_off[kh * p.KW + kw] = (kh * p.KW + kw) * w_tap;
    }

  const bool direct_out = is_dense_nhwc(y);
  float* yo = direct_out ? y.data : ws.get(WS_OUT, {p.N, p.OH, p.OW, p.O});
  // Tiles of pmax consecutive output pixels in (n, oh, ow) order, wrapping across rows and
  // images (the output is dense NHWC, so only the input side needs a per-pixel offset).
  const int64_t mtiles = ceil_div(M, tl.pmax);
  // Task order. With 32 registers (AVX-512: 4 weight vectors and 6 broadcasts per 24 FMAs)
  // pixel tiles run fastest: each thread keeps one channel tile's weights in L1/L2 and
  // streams the input (85-95% of peak measured on Zen 5 and Xeon). With 16 (AVX2: 2 weight
  // vectors and 6 broadcasts per 12 FMAs, twice the input loads per FMA) the input matters
  // more: a chunk of pixel tiles (its input rows in L1/L2) runs through every channel tile
  // before the next chunk, streaming the weights instead. On Zen 3 that took a 256-channel
  // 3x3 layer from 60% to 84-94% of one core's peak and a stride-2 layer from 53% to 80%.
  int64_t chunk = 1;
  // (Not for first layers: with a reduction of T * Cg < 64 per tile there is little input
  // to keep, and the old order measured 20-30% faster on 1- and 3-channel layers.)
  if (NUM_VREGS < 32 && T * Cg >= 64) {
    const int64_t by_cache = (128 * 1024) / (tl.pmax * Cg * 4);  // input bytes <= 128 KB
    const int64_t by_tasks = mtiles * tl.ntl * G / (4 * int64_t{nthreads});  // >= 4 tasks/thread
    chunk = std::max<int64_t>(1, std::min({int64_t{8}, by_cache, by_tasks}));
  }
  const int64_t mchunks = ceil_div(mtiles, chunk);
  const int64_t tasks = G * tl.ntl * mchunks;
  const TileFn full = conv_tile_fn<true>(tl.nv, tl.pmax);
  // Under ~64 KFLOP (a small head or a tiny layer) one thread beats a fork and join.
  const int threads = static_cast<double>(M) * p.O * T * Cg < 32768 ? 1 : nthreads;
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
      a.ntaps = static_cast<int>(T);
      a.C = Cg;
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
  const int64_t eh = (p.KH - 1) * p.dil_h, ew = (p.KW - 1) * p.dil_w;
  if (p.stride_h == 1 && p.stride_w == 1 && p.groups == 1 && p.pad_t <= eh && p.pad_b <= eh &&
      p.pad_l <= ew && p.pad_r <= ew) {
    const ConvParams q{
        p.N, p.O, p.OH,    p.OW,    p.C,          p.KH,         p.KW,         p.H,          p.W,
        1,   1,   p.dil_h, p.dil_w, eh - p.pad_t, eh - p.pad_b, ew - p.pad_l, ew - p.pad_r, 1};
    // w_t[c][o][kh][kw] = w[o][c][KH-1-kh][KW-1-kw]
    const ConstView4 wt{
        w.ptr(0, 0, p.KH - 1, p.KW - 1), w.c, w.n, w.h, w.w, w.sc, w.sn, -w.sh, -w.sw};
    conv2d_forward(q, gy, wt, nullptr, false, gx, nthreads);
    return;
  }
  Workspace& ws = workspace();
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, T = p.KH * p.KW;
  const int64_t sh = p.stride_h, sw = p.stride_w;
  const Tiling tl = choose_tiling(Cg);
  // Columns of gy are padded so every (phase, tap, pixel) reads inside the buffer; rows are
  // filtered exactly per input row instead.
  const int64_t plo = std::max<int64_t>(0, -floor_div(p.pad_l - (p.KW - 1) * p.dil_w, sw));
  const int64_t phi = std::max<int64_t>(0, floor_div(p.W - 1 + p.pad_l, sw) - (p.OW - 1));
  const int64_t OWp = p.OW + plo + phi;
  float* gyp = ws.get(WS_IN, {p.N, p.OH, OWp, p.O});
  pack_padded_nhwc(gy, 0, 0, plo, phi, 1, p.O, gyp, nthreads);
  // Weights -> wT[g][tile][tap][o][NT]: lanes are input channels c.
  const int64_t wtile = checked_product({T, Og, tl.nt}, "the packed weights");
  float* wt = ws.get(WS_W, {G, tl.ntl, wtile});
  pack_weights(w, G, tl, true, wt, nthreads);
  const bool direct_out = is_dense_nhwc(gx);
  float* gxo = direct_out ? gx.data : ws.get(WS_OUT, {p.N, p.H, p.W, p.C});
  const int64_t phases = std::min(sw, p.W);
  const int64_t tasks = G * tl.ntl * p.N * p.H;
  int64_t* index = ws.get_index({nthreads, 2 * T + p.KH});
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
// same for any number of threads. Pixel rows are processed in L2-sized chunks.
// ---------------------------------------------------------------------------------------
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
};

template <int I, int NV, bool CONTIG>
void wgrad_tile(const WgradArgs& a) {
  vf acc[I][NV];
#pragma GCC unroll 32
  for (int i = 0; i < I; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vload(a.acc + i * a.acc_row + v * VW);
  int64_t off[CONTIG ? 1 : I];
  for (int i = 0; i < (CONTIG ? 1 : I); ++i) off[i] = a.xoff[i];
  for (int64_t row = a.row0; row < a.row1; ++row) {
    const int64_t n = row / a.OH, oh = row % a.OH;
    const float* xr = a.x + n * a.x_img + oh * a.x_row;
    const float* gr = a.gy + row * a.OW * a.g_pix;
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

// Weight gradient of a 3x3 stride-1 convolution by Winograd F(3x3, 2x2): the 3x3 kernel
// gradient of one 2x2 tile of gy is the correlation of its 4x4 input tile with it, so
//   dW = A^T [ sum over tiles (B^T d B) (.) (G g G^T) ] A,   with F(3, 2)'s matrices
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 -1 0 1], G = [1 0; .5 .5; .5 -.5; 0 1],
//   A^T = [1 1 1 0; 0 1 -1 0; 0 1 1 1].
// The sum over tiles is, for each of the 16 positions xi, a GEMM Acc[xi] (C x O) +=
// V[xi]^T (C x tiles) . Gt[xi] (tiles x O) reduced over tiles: the weight-gradient
// microkernel's own shape. Tiles go in L2-sized blocks; the blocks are split into S parts
// (S from the problem size, not the thread count) with private accumulators summed in part
// order, so the result is the same for any number of threads.
// Returns false, having computed nothing, when the values need the direct kernel (above).
bool wgrad_winograd(const ConvParams& p, const float* gyp, ConstView4 x, View4* gw,
                    const Tiling& tl, int nthreads) {
  Workspace& ws = workspace();
  const int64_t C = p.C, O = p.O, Opad = tl.ntl * tl.nt;
  const int64_t th = ceil_div(p.OH, 2), tw = ceil_div(p.OW, 2);
  const int64_t Hp = 2 * th + 2, Wp = 2 * tw + 2;
  float* xp = ws.get(WS_IN, {p.N, Hp, Wp, C});
  pack_padded_nhwc(x, p.pad_t, Hp - p.H - p.pad_t, p.pad_l, Wp - p.W - p.pad_l, 1, C, xp, nthreads);
  const int64_t tiles = p.N * th * tw;
  if (!winograd_values_ok(max_abs(xp, p.N * Hp * Wp * C, nthreads),
                          max_abs(gyp, p.N * p.OH * p.OW * Opad, nthreads),
                          36.0 * static_cast<double>(tiles)))
    return false;
  // Tiles per block: V and Gt in about 768 KiB (each block's GEMMs read and write the whole
  // 16 x C x O accumulator once, so blocks must not be small).
  int64_t TB = (768 * 1024 / 4) / (16 * (C + Opad));
  TB = std::max<int64_t>(32, std::min<int64_t>(256, TB));
  const int64_t blocks = ceil_div(tiles, TB), S = std::min<int64_t>(blocks, 4);
  const int64_t acc_size = 16 * C * Opad, vsize = 16 * TB * C, gsize = 16 * TB * Opad;
  float* acc = ws.get(WS_W, {S, 16, C, Opad});
  std::memset(acc, 0, sizeof(float) * S * acc_size);
  float* scratch = ws.get(WS_OUT, {nthreads, 16 * TB, C + Opad});
  const int64_t IB = wgrad_rows_for(tl.nv);
  int64_t* xoff = ws.get_index({C});
  for (int64_t c = 0; c < C; ++c) xoff[c] = c;
  const vf half = vset1(0.5f), neg = vset1(-1.f);

#pragma omp parallel num_threads(nthreads)
  {
    float* V = scratch + omp_get_thread_num() * (vsize + gsize);
    float* Gt = V + vsize;
#pragma omp for schedule(static)
    for (int64_t part = 0; part < S; ++part) {
      for (int64_t b = blocks * part / S; b < blocks * (part + 1) / S; ++b) {
        const int64_t t0 = b * TB, nb = std::min(TB, tiles - t0);
        for (int64_t t = 0; t < nb; ++t) {
          const int64_t tile = t0 + t, n = tile / (th * tw), ti = (tile / tw) % th;
          const int64_t tj = tile % tw;
          // x tile -> V[xi][t][c] = B^T d B
          const float* base = xp + ((n * Hp + 2 * ti) * Wp + 2 * tj) * C;
          winograd_input_channels<true>(base, Wp, C, V + t * C, TB * C);
          // gy tile (zero past the edges) -> Gt[xi][t][o] = G g G^T
          const int64_t oh = 2 * ti, ow = 2 * tj;
          for (int64_t o = 0; o < Opad; o += VW) {
            vf g[2][2];
            for (int i = 0; i < 2; ++i)
              for (int j = 0; j < 2; ++j)
                g[i][j] = (oh + i < p.OH && ow + j < p.OW)
                              ? vload(gyp + ((n * p.OH + oh + i) * p.OW + ow + j) * Opad + o)
                              : vzero();
            vf r[4][2];
            for (int j = 0; j < 2; ++j) {
              r[0][j] = g[0][j];
              r[1][j] = vmul(half, vadd(g[0][j], g[1][j]));
              r[2][j] = vmul(half, vfma(neg, g[1][j], g[0][j]));
              r[3][j] = g[1][j];
            }
            for (int i = 0; i < 4; ++i) {
              float* dst = Gt + (i * 4 * TB + t) * Opad + o;
              vstore(dst, r[i][0]);
              vstore(dst + TB * Opad, vmul(half, vadd(r[i][0], r[i][1])));
              vstore(dst + 2 * TB * Opad, vmul(half, vfma(neg, r[i][1], r[i][0])));
              vstore(dst + 3 * TB * Opad, r[i][1]);
            }
          }
        }
        // 16 GEMMs reduced over this block's tiles, into this part's accumulator
        WgradArgs a;
        a.row0 = 0;
        a.row1 = 1;
        a.OH = 1;
        a.OW = nb;
        a.x_img = 0;
        a.x_row = 0;
        a.x_pix = C;
        a.g_pix = Opad;
        a.acc_row = Opad;
        for (int xi = 0; xi < 16; ++xi)
          for (int64_t ot = 0; ot < tl.ntl; ++ot)
            for (int64_t k0 = 0; k0 < C; k0 += IB) {
              const int nk = static_cast<int>(std::min(IB, C - k0));
              a.x = V + xi * TB * C;
              a.xoff = xoff + k0;
              a.gy = Gt + xi * TB * Opad + ot * tl.nt;
              a.acc = acc + part * acc_size + (xi * C + k0) * Opad + ot * tl.nt;
              wgrad_tile_fn<true>(tl.nv, nk)(a);
            }
      }
    }
  }
  // Sum the parts in order and transform back: dW[o][c] (3x3) = A^T Acc[.][c][o] A.
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t o = 0; o < O; ++o) {
      float m[16];
      for (int xi = 0; xi < 16; ++xi) {
        float sum = acc[(xi * C + c) * Opad + o];
        for (int64_t part = 1; part < S; ++part)
          sum += acc[part * acc_size + (xi * C + c) * Opad + o];
        m[xi] = sum;
      }
      float r[3][4];
      for (int j = 0; j < 4; ++j) {
        r[0][j] = m[j] + m[4 + j] + m[8 + j];
        r[1][j] = m[4 + j] - m[8 + j];
        r[2][j] = m[4 + j] + m[8 + j] + m[12 + j];
      }
      for (int i = 0; i < 3; ++i) {
        gw->at(o, c, i, 0) = r[i][0] + r[i][1] + r[i][2];
        gw->at(o, c, i, 1) = r[i][1] - r[i][2];
        gw->at(o, c, i, 2) = r[i][1] + r[i][2] + r[i][3];
      }
    }
  }
  return true;
}

void conv2d_backward_weight(const ConvParams& p, ConstView4 gy, ConstView4 x, View4* gw,
                            float* gbias, int nthreads) {
  Workspace& ws = workspace();
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, T = p.KH * p.KW, K = T * Cg;
  const Tiling tl = choose_tiling(Og);
  const int64_t Og_pad = tl.ntl * tl.nt, Gp = G * Og_pad;
  // gy -> dense NHWC with each group's channels padded to whole tiles (the microkernel
  // loads full vectors).
  float* gyp = ws.get(WS_AUX, {p.N, p.OH, p.OW, G, Og_pad});
  pack_padded_nhwc(gy, 0, 0, 0, 0, G, Og_pad, gyp, nthreads);

  if (gbias) {
    // Sum gy over pixels, row by row (contiguous channels: vectorizes, reads gy once), in
    // fixed blocks of pixels whose float64 partial sums are added in block order, so the
    // result does not depend on the thread count.
    const int64_t pixels = p.N * p.OH * p.OW, block = 512;
    const int64_t nblocks = (pixels + block - 1) / block;
    double* part = reinterpret_cast<double*>(ws.get(WS_BIAS, {2, nblocks, Gp}));
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) {
      double* acc = part + b * Gp;
      for (int64_t c = 0; c < Gp; ++c) acc[c] = 0.0;
      const int64_t end = std::min(pixels, (b + 1) * block);
      for (int64_t i = b * block; i < end; ++i) {
        const float* row = gyp + i * Gp;
        for (int64_t c = 0; c < Gp; ++c) acc[c] += row[c];
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
  if (winograd_applies(p) && wgrad_winograd(p, gyp, x, gw, tl, nthreads)) return;

  const int64_t Hp = p.H + p.pad_t + p.pad_b, Wp = p.W + p.pad_l + p.pad_r;
  const float* xp = x.data;
  if (p.pad_t || p.pad_b || p.pad_l || p.pad_r || !is_dense_nhwc(x)) {
    float* buf = ws.get(WS_IN, {p.N, Hp, Wp, p.C});
    pack_padded_nhwc(x, p.pad_t, p.pad_b, p.pad_l, p.pad_r, 1, p.C, buf, nthreads);
    xp = buf;
  }
  // Row blocks of the flattened k = t*Cg + c dimension.
  const int64_t IB = wgrad_rows_for(tl.nv);
  const bool contig = Cg >= IB;
  const int64_t kb_per_tap = ceil_div(Cg, IB);
  const int64_t nkb = contig ? T * kb_per_tap : ceil_div(K, IB);
  // Per k: its offset in x_pad (tap + channel) and in the gw view (c, kh, kw).
  int64_t* xoff = ws.get_index({2, K});
  int64_t* gwoff = xoff + K;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t t = k / Cg, c = k % Cg, kh = t / p.KW, kw = t % p.KW;
    xoff[k] = (kh * p.dil_h * Wp + kw * p.dil_w) * p.C + c;
    gwoff[k] = c * gw->sc + kh * gw->sh + kw * gw->sw;
  }
  const int64_t tiles = G * nkb * tl.ntl;
  const int64_t rows = p.N * p.OH;
  const int64_t S = tiles >= 16 ? 1 : std::min<int64_t>(rows, ceil_div(16, tiles));
  const int64_t part = G * K * Og_pad;  // accumulator [g][k][Og_pad], one per pixel part
  float* dw = ws.get(WS_W, {S, G, K, Og_pad});
  std::memset(dw, 0, sizeof(float) * S * part);

  // A chunk's x rows (for all taps: about stride_h rows of padded input per output row) and
  // gy rows together take about 384 KiB, so they stay in L2 while all tiles pass over them.
  const int64_t chunk_row_bytes = 4 * (p.stride_h * Wp * p.C + p.OW * Gp);
  const int64_t rows_per_chunk = std::max<int64_t>(1, (384 * 1024) / chunk_row_bytes);
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
    a.g_pix = Gp;
    a.acc_row = Og_pad;
    for (int64_t s = i0 / tiles; s < S && s * tiles < i1; ++s) {
      const int64_t r_begin = rows * s / S, r_end = rows * (s + 1) / S;
      const int64_t tile0 = std::max(i0 - s * tiles, int64_t{0});
      const int64_t tile1 = std::min(i1 - s * tiles, tiles);
      for (int64_t r0 = r_begin; r0 < r_end; r0 += rows_per_chunk) {
        a.row0 = r0;
        a.row1 = std::min(r_end, r0 + rows_per_chunk);
        for (int64_t tile = tile0; tile < tile1; ++tile) {
          const int64_t ot = tile % tl.ntl, kb = (tile / tl.ntl) % nkb, g = tile / (tl.ntl * nkb);
          const int64_t k0 = contig ? (kb / kb_per_tap) * Cg + (kb % kb_per_tap) * IB : kb * IB;
          const int64_t nk =
              contig ? std::min(IB, Cg - (kb % kb_per_tap) * IB) : std::min(IB, K - k0);
          a.x = xp + g * Cg;
          a.xoff = xoff + k0;
          a.gy = gyp + g * Og_pad + ot * tl.nt;
          a.acc = dw + s * part + (g * K + k0) * Og_pad + ot * tl.nt;
          (contig ? wgrad_tile_fn<true>(tl.nv, static_cast<int>(nk))
                  : wgrad_tile_fn<false>(tl.nv, static_cast<int>(nk)))(a);
        }
      }
    }
  }
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
      y.at(n, c, oh, ow) = MAX ? acc : acc / static_cast<float>(avg_divisor(p, oh, ow));
    }
}

template <bool MAX>
void pool_forward(const PoolParams& p, ConstView4 x, View4 y, int nthreads) {
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

void max_pool2d_forward(const PoolParams& p, ConstView4 x, View4 y, int nthreads) {
  pool_forward<true>(p, x, y, nthreads);
}
void avg_pool2d_forward(const PoolParams& p, ConstView4 x, View4 y, int nthreads) {
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
void max_pool2d_backward(const PoolParams& p, ConstView4 gy, ConstView4 x, View4 gx, int nthreads) {
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

void avg_pool2d_backward(const PoolParams& p, ConstView4 gy, View4 gx, int nthreads) {
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

// ---------------------------------------------------------------------------------------
// Peak: ACC independent FMA chains on one core, long enough to hide FMA latency.
// ---------------------------------------------------------------------------------------
double peak_gflops(double seconds) {
  vf acc[ACC];
  for (int i = 0; i < ACC; ++i) acc[i] = vset1(0.001f * i);
  const vf a = vset1(0.999999f), b = vset1(1e-7f);
  const int64_t inner = 1 << 16;
  int64_t iters = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0.0;
  do {
    for (int64_t k = 0; k < inner; ++k) {
#pragma GCC unroll 24
      for (int i = 0; i < ACC; ++i) acc[i] = vfma(acc[i], a, b);
    }
    iters += inner;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < seconds);
  alignas(64) float sink[VW];
  vf s = vzero();
  for (int i = 0; i < ACC; ++i) s = vadd(s, acc[i]);
  vstore(sink, s);
  volatile float keep = sink[0];
  (void)keep;
  return 2.0 * VW * ACC * static_cast<double>(iters) / elapsed * 1e-9;
}

// ---------------------------------------------------------------------------------------
// Batch normalization over rows: x is M rows of C contiguous channels (NHWC flattened, or a
// Dense layer's (N, units)). Per-channel sums run in float64 (a float32 sum of 256 values of
// 1e37 overflows) in fixed blocks of rows added in block order, so results do not depend
// on the thread count; the inner loops run over channels and vectorize.
// ---------------------------------------------------------------------------------------

constexpr int64_t kRowBlock = 256;

// out[s * C + c] = sum over rows i of term(s, i, c) for s < S; `add_row(i, acc)` adds row i's
// S x C terms into acc.
template <int S, class AddRow>
void column_sums(int64_t M, int64_t C, double* out, AddRow add_row, int nthreads) {
  const int64_t nblocks = std::max<int64_t>(1, ceil_div(M, kRowBlock));
  auto* part = reinterpret_cast<double*>(workspace().get(WS_AUX, {nblocks, 2 * S, C}));
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < nblocks; ++b) {
    double* acc = part + b * S * C;
    for (int64_t k = 0; k < S * C; ++k) acc[k] = 0.0;
    const int64_t end = std::min(M, (b + 1) * kRowBlock);
    for (int64_t i = b * kRowBlock; i < end; ++i) add_row(i, acc);
  }
  for (int64_t k = 0; k < S * C; ++k) {
    double t = 0.0;
    for (int64_t b = 0; b < nblocks; ++b) t += part[b * S * C + k];
    out[k] = t;
  }
}

// y = x * scale + shift per channel (batch norm's normalization, inference, and dx).
void channel_affine(const float* x, int64_t M, int64_t C, const float* scale, const float* shift,
                    float* y, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t i = 0; i < M; ++i) {
    const float* xr = x + i * C;
    float* yr = y + i * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * scale[c] + shift[c];
  }
}

// Training forward: batch mean and biased variance (two passes: exact for data with a large
// mean), then y = gamma * (x - mean) / sqrt(var + eps) + beta. gamma/beta may be null.
void batchnorm_forward(const float* x, int64_t M, int64_t C, const float* gamma, const float* beta,
                       float eps, float* y, float* mean, float* var, int nthreads) {
  std::vector<double> s(static_cast<size_t>(C));
  column_sums<1>(
      M, C, s.data(),
      [&](int64_t i, double* acc) {
        const float* xr = x + i * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += xr[c];
      },
      nthreads);
  for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<float>(s[c] / static_cast<double>(M));
  column_sums<1>(
      M, C, s.data(),
      [&](int64_t i, double* acc) {
        const float* xr = x + i * C;
        for (int64_t c = 0; c < C; ++c) {
          const double d = static_cast<double>(xr[c]) - mean[c];
          acc[c] += d * d;
        }
      },
      nthreads);
  std::vector<float> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const double v = s[c] / static_cast<double>(M);  // may exceed float32 (var is then inf)
    var[c] = static_cast<float>(v);
    const double inv = 1.0 / std::sqrt(v + eps);
    scale[c] = static_cast<float>((gamma ? gamma[c] : 1.f) * inv);
    shift[c] = (beta ? beta[c] : 0.f) - mean[c] * scale[c];
  }
  channel_affine(x, M, C, scale.data(), shift.data(), y, nthreads);
}

// Backward for normalization by (mean, var): dgamma = sum dy * xhat, dbeta = sum dy, and
// with `batch_stats` (training: mean and var depend on x)
//   dx = gamma*inv * (dy - dbeta/M - xhat * dgamma/M)
// else (inference: fixed statistics) dx = gamma*inv * dy. dx/dgamma/dbeta may be null.
void batchnorm_backward(const float* dy, const float* x, int64_t M, int64_t C, const float* gamma,
                        const float* mean, const float* var, float eps, bool batch_stats, float* dx,
                        float* dgamma, float* dbeta, int nthreads) {
  std::vector<float> inv(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c)
    inv[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c]) + eps));
  std::vector<double> s(static_cast<size_t>(2 * C));
  column_sums<2>(
      M, C, s.data(),
      [&](int64_t i, double* acc) {
        const float* g = dy + i * C;
        const float* xr = x + i * C;
        for (int64_t c = 0; c < C; ++c) {
          acc[c] += g[c];
          acc[C + c] += g[c] * ((xr[c] - mean[c]) * inv[c]);
        }
      },
      nthreads);
  for (int64_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = static_cast<float>(s[c]);
    if (dgamma) dgamma[c] = static_cast<float>(s[C + c]);
  }
  if (!dx) return;
  // dx = a*dy + b*x + k per channel.
  std::vector<float> a(static_cast<size_t>(C)), b(static_cast<size_t>(C)),
      k(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const double ac = (gamma ? gamma[c] : 1.0) * inv[c];
    double bc = 0.0, kc = 0.0;
    if (batch_stats) {
      bc = -ac * inv[c] * s[C + c] / static_cast<double>(M);
      kc = -bc * mean[c] - ac * s[c] / static_cast<double>(M);
    }
    a[c] = static_cast<float>(ac);
    b[c] = static_cast<float>(bc);
    k[c] = static_cast<float>(kc);
  }
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t i = 0; i < M; ++i) {
    const float* g = dy + i * C;
    const float* xr = x + i * C;
    float* o = dx + i * C;
    for (int64_t c = 0; c < C; ++c) o[c] = a[c] * g[c] + b[c] * xr[c] + k[c];
  }
}

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

// ---------------------------------------------------------------------------------------
// Dropout. The mask bit of element i is a hash of (i, key): two rounds of the "lowbias32"
// integer finalizer (C. Wellons), 32-bit multiplies and shifts only, so every ISA vectorizes
// it and all give bit-identical masks. keep when the hash >= threshold = rate * 2^32.
// ---------------------------------------------------------------------------------------
inline uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x7feb352dU;
  h ^= h >> 15;
  h *= 0x846ca68bU;
  h ^= h >> 16;
  return h;
}

void dropout(const float* x, int64_t n, uint32_t threshold, float scale, uint64_t key, float* y,
             int nthreads) {
  const uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  constexpr int64_t kBlock = 1 << 14;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < ceil_div(n, kBlock); ++b) {
    const int64_t end = std::min(n, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) {
      const uint32_t h = mix32(mix32(static_cast<uint32_t>(i) ^ k0) + k1);
      y[i] = h >= threshold ? x[i] * scale : 0.f;
    }
  }
}

void relu_backward(const float* dy, const float* y, int64_t n, float* dx, int nthreads) {
  constexpr int64_t kBlock = 1 << 14;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < ceil_div(n, kBlock); ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    for (int64_t i = lo; i < hi; ++i) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
  }
}

// Adam: one pass over the parameters instead of NumPy's eight (and no temporaries).
void adam_update(float* w, const float* g, float* m, float* v, float* vhat, int64_t n, float step,
                 float beta_1, float beta_2, float eps, int nthreads) {
  const float a1 = 1.f - beta_1, a2 = 1.f - beta_2;
  constexpr int64_t kBlock = 1 << 14;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < ceil_div(n, kBlock); ++b) {
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    if (vhat) {
      for (int64_t i = lo; i < hi; ++i) {
        m[i] += (g[i] - m[i]) * a1;
        v[i] += (g[i] * g[i] - v[i]) * a2;
        vhat[i] = std::max(vhat[i], v[i]);
        w[i] -= step * m[i] / (std::sqrt(vhat[i]) + eps);
      }
    } else {
      for (int64_t i = lo; i < hi; ++i) {
        m[i] += (g[i] - m[i]) * a1;
        v[i] += (g[i] * g[i] - v[i]) * a2;
        w[i] -= step * m[i] / (std::sqrt(v[i]) + eps);
      }
    }
  }
}

void release_workspace() { workspace().release(); }
int64_t workspace_bytes() { return workspace().bytes(); }

}  // namespace

const KernelTable table = {
#define PYCONV_STR2(x) #x
#define PYCONV_STR(x) PYCONV_STR2(x)
    PYCONV_STR(PYCONV_ISA_NAME),
    VW,
    &conv2d_forward,
    &conv2d_backward_data,
    &conv2d_backward_weight,
    &max_pool2d_forward,
    &max_pool2d_backward,
    &avg_pool2d_forward,
    &avg_pool2d_backward,
    &batchnorm_forward,
    &batchnorm_backward,
    &channel_affine,
    &affine_warp,
    &dropout,
    &relu_backward,
    &adam_update,
    &peak_gflops,
    &release_workspace,
    &workspace_bytes,
};

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
