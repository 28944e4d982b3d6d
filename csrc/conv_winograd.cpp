// Winograd convolution of 3x3 stride-1 layers: the forward, F(2x2, 3x3), and the weight
// gradient, F(3x3, 2x2) (compiled once per ISA). Whether a geometry takes Winograd is the
// plan's rule (conv_plan.cpp); whether its values allow it is checked here, on the data.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "microkernels.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

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

}  // namespace

// Runs plan (plan_conv_forward's Winograd part). Returns false, having computed nothing,
// when the values need the direct kernel (above).
bool conv2d_winograd(const WinogradPlan& plan, const ConvParams& p, ConstView4 x, ConstView4 w,
                     const float* bias, bool relu, View4 y, WeightCacheRef cache, int nthreads) {
  Workspace& ws = workspace();
  const int64_t C = p.C, O = p.O;
  const int64_t th = plan.tiles_h, tw = plan.tiles_w, Hp = plan.Hp, Wp = plan.Wp;
  float* xp = ws.get(WS_IN, {plan.input_floats});
  pack_padded_nhwc(x, p.pad_t, plan.pad_b, p.pad_l, plan.pad_r, 1, C, xp, nthreads);
  const Tiling tl = plan.tiling;
  const int64_t Opad = tl.ntl * tl.nt, per_xi = tl.ntl * C * tl.nt;
  // U and its max |value| (the value check's weight half), kept with U in the cache.
  const PackedWeights packed =
      packed_weights(cache, weight_key(w, 1, WeightLayout::WinogradTiles, tl), plan.weight_floats,
                     [&](float* dst) {
                       winograd_weights(w, tl, dst, nthreads);
                       return max_abs(dst, 16 * per_xi, nthreads);
                     });
  const float* U = packed.data;
  if (!winograd_values_ok(max_abs(xp, p.N * Hp * Wp * C, nthreads), packed.w_max,
                          36.0 * static_cast<double>(C)))
    return false;
  float* bp = ws.get(WS_BIAS, {plan.bias_floats});  // bias, zero-padded to whole vectors
  for (int64_t o = 0; o < Opad; ++o) bp[o] = (bias && o < O) ? bias[o] : 0.f;
  const bool direct_out = plan.out_floats == 0;  // y is dense NHWC
  float* yo = direct_out ? y.data : ws.get(WS_OUT, {plan.out_floats});

  const int64_t tiles = plan.tiles, TB = plan.block_tiles, blocks = plan.blocks;
  const int64_t vsize = 16 * TB * C, msize = 16 * TB * Opad;
  float* scratch = ws.get(WS_AUX, {plan.scratch_floats});
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
bool wgrad_winograd(const WinogradWgradPlan& plan, const ConvParams& p, const float* gyp,
                    ConstView4 x, View4* gw, const Tiling& tl, int nthreads) {
  Workspace& ws = workspace();
  const int64_t C = p.C, O = p.O, Opad = tl.ntl * tl.nt;
  const int64_t th = plan.tiles_h, tw = plan.tiles_w, Hp = plan.Hp, Wp = plan.Wp;
  float* xp = ws.get(WS_IN, {plan.input_floats});
  pack_padded_nhwc(x, p.pad_t, Hp - p.H - p.pad_t, p.pad_l, Wp - p.W - p.pad_l, 1, C, xp, nthreads);
  const int64_t tiles = plan.tiles;
  if (!winograd_values_ok(max_abs(xp, p.N * Hp * Wp * C, nthreads),
                          max_abs(gyp, p.N * p.OH * p.OW * Opad, nthreads),
                          36.0 * static_cast<double>(tiles)))
    return false;
  const int64_t TB = plan.block_tiles, blocks = plan.blocks, S = plan.parts;
  const int64_t acc_size = 16 * C * Opad, vsize = 16 * TB * C, gsize = 16 * TB * Opad;
  float* acc = ws.get(WS_W, {plan.acc_floats});
  std::memset(acc, 0, sizeof(float) * S * acc_size);
  float* scratch = ws.get(WS_OUT, {plan.scratch_floats});
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

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
