// Native tests of this ISA's layout conversion and weight packing: round trips through the
// packed layouts, for the caller layouts the kernels meet (compiled once per ISA).
#include <cstdint>
#include <string>
#include <vector>

#include "kernel_common.h"
#include "native_tests.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

#define PYCONV_STR2(x) #x
#define PYCONV_STR(x) PYCONV_STR2(x)
const std::string kName = PYCONV_STR(PYCONV_ISA_NAME);

// A distinct, exactly representable value per logical index.
float value_at(int64_t i, int64_t j, int64_t k, int64_t l) {
  return static_cast<float>(((i * 31 + j) * 17 + k) * 13 + l) + 0.5f;
}

// Storage for a logical (n, c, h, w) array in one physical order: perm[d] is the logical dim
// stored d-th (outermost first); e.g. {0, 2, 3, 1} is NHWC, {2, 3, 1, 0} a (h, w, c, n) array.
struct Strided {
  std::vector<float> data;
  View4 view;
  Strided(int64_t n, int64_t c, int64_t h, int64_t w, const int (&perm)[4]) {
    const int64_t dims[4] = {n, c, h, w};
    int64_t strides[4];
    int64_t s = 1;
    for (int d = 3; d >= 0; --d) {
      strides[perm[d]] = s;
      s *= dims[perm[d]];
    }
    data.assign(static_cast<size_t>(s), 0.f);
    view = View4{data.data(), n, c, h, w, strides[0], strides[1], strides[2], strides[3]};
  }
  void fill() {
    for (int64_t i = 0; i < view.n; ++i)
      for (int64_t j = 0; j < view.c; ++j)
        for (int64_t k = 0; k < view.h; ++k)
          for (int64_t l = 0; l < view.w; ++l) view.at(i, j, k, l) = value_at(i, j, k, l);
  }
};

constexpr int kNCHW[4] = {0, 1, 2, 3};
constexpr int kNHWC[4] = {0, 2, 3, 1};
constexpr int kHWIO[4] = {2, 3, 1, 0};  // weights (O, C, KH, KW) stored (KH, KW, C, O)

// pack_padded_nhwc puts every element where the padded, channel-padded NHWC layout says and
// zeros everywhere else; unpack_nhwc brings an unpadded one back into any layout.
void test_pack_unpack(TestLog& log) {
  const int64_t N = 2, C = 6, H = 3, W = 5, pt = 1, pb = 2, pl = 0, pr = 1;
  for (const auto* perm : {&kNCHW, &kNHWC}) {
    for (const int64_t G : {int64_t{1}, int64_t{2}}) {
      Strided x(N, C, H, W, *perm);
      x.fill();
      const int64_t Cg = C / G, cg_pad = Cg + 2, Hp = H + pt + pb, Wp = W + pl + pr;
      std::vector<float> packed(static_cast<size_t>(N * Hp * Wp * G * cg_pad), -1.f);
      pack_padded_nhwc(x.view.as_const(), pt, pb, pl, pr, G, cg_pad, packed.data(), 2);
      bool ok = true;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t h = 0; h < Hp; ++h)
          for (int64_t w = 0; w < Wp; ++w)
            for (int64_t g = 0; g < G; ++g)
              for (int64_t c = 0; c < cg_pad; ++c) {
                const int64_t ih = h - pt, iw = w - pl;
                const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W && c < Cg;
                const float want = inside ? value_at(n, g * Cg + c, ih, iw) : 0.f;
                ok &= packed[static_cast<size_t>((((n * Hp + h) * Wp + w) * G + g) * cg_pad + c)] ==
                      want;
              }
      log.check(ok, kName + ": pack_padded_nhwc G=" + std::to_string(G) +
                        (perm == &kNCHW ? " from NCHW" : " from NHWC"));
    }
    Strided src(N, C, H, W, kNHWC), back(N, C, H, W, *perm);
    src.fill();
    std::vector<float> dense(static_cast<size_t>(N * H * W * C));
    pack_padded_nhwc(src.view.as_const(), 0, 0, 0, 0, 1, C, dense.data(), 2);
    unpack_nhwc(dense.data(), back.view, 2);
    bool ok = true;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) ok &= back.view.at(n, c, h, w) == value_at(n, c, h, w);
    log.check(ok, kName + ": pack then unpack_nhwc round trip" +
                      (perm == &kNCHW ? " into NCHW" : " into NHWC"));
  }
}

// pack_weights: every (g, tile, tap, row, lane) holds the weight the microkernel expects, lanes
// past the channel count are zero; for OIHW, HWIO and OHWI sources (its three paths), forward
// and transposed.
void test_pack_weights(TestLog& log) {
  const int64_t KH = 3, KW = 2, T = KH * KW;
  for (const auto* perm : {&kNCHW, &kHWIO, &kNHWC})
    for (const bool transposed : {false, true})
      for (const int64_t G : {int64_t{1}, int64_t{3}})
        for (const int64_t Og : {int64_t{5}, int64_t{VW * 2 + 3}}) {
          const int64_t Cg = 4;
          Strided w(G * Og, Cg, KH, KW, *perm);
          w.fill();
          const int64_t lanes = transposed ? Cg : Og, rows = transposed ? Og : Cg;
          const Tiling tl = pyconv::choose_tiling(lanes, kIsa);
          const int64_t wtile = T * rows * tl.nt;
          std::vector<float> packed(static_cast<size_t>(G * tl.ntl * wtile), -1.f);
          pack_weights(w.view.as_const(), G, tl, transposed, packed.data(), 2);
          bool ok = true;
          for (int64_t g = 0; g < G; ++g)
            for (int64_t tile = 0; tile < tl.ntl; ++tile)
              for (int64_t t = 0; t < T; ++t)
                for (int64_t r = 0; r < rows; ++r)
                  for (int64_t l = 0; l < tl.nt; ++l) {
                    const int64_t lane = tile * tl.nt + l;
                    const int64_t o = g * Og + (transposed ? r : lane), c = transposed ? lane : r;
                    const float want = lane < lanes ? value_at(o, c, t / KW, t % KW) : 0.f;
                    ok &= packed[static_cast<size_t>((g * tl.ntl + tile) * wtile +
                                                     (t * rows + r) * tl.nt + l)] == want;
                  }
          const char* layout = perm == &kNCHW ? "OIHW" : perm == &kHWIO ? "HWIO" : "OHWI";
          log.check(ok, kName + ": pack_weights " + layout + (transposed ? " transposed" : "") +
                            " G=" + std::to_string(G) + " Og=" + std::to_string(Og));
        }
}

}  // namespace

void run_packing_tests(TestLog& log) {
  test_pack_unpack(log);
  test_pack_weights(log);
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
