// What every per-ISA kernel unit shares: the SIMD vocabulary, per-thread workspaces, the layout
// conversion, size helpers, and the declarations through which the units call each other and
// register their kernel-table entries.
//
// Each op family has one unit (conv_direct.cpp, conv_winograd.cpp, conv_wgrad.cpp, matmul.cpp,
// pool.cpp, norm.cpp, eltwise.cpp, warp.cpp, peak.cpp, workspace.cpp), and CMakeLists.txt
// compiles every unit once per instruction set with PYCONV_ISA_NAME = generic | avx2 | avx512
// and the matching -m flags: everything here lives in namespace pyconv::<isa>. registry.cpp
// builds each ISA's table from the units' register_<family> functions; dispatch.cpp picks a
// table at run time.
//
// Layout: every convolution runs on channels-last (NHWC) buffers. The caller's tensors, in any
// layout and with any strides, are packed once per call into a padded NHWC workspace
// (pack_padded_nhwc: the one place where layouts are converted), so the microkernels
// (microkernels.h) see a uniform problem with no bounds checks and vectorize over channels.
#pragma once

#include <omp.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <vector>

#include "checked.h"
#include "conv_plan.h"
#include "core.h"
#include "simd.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {

// This ISA's register budget, as the (ISA-independent) planner sees it.
constexpr IsaShape kIsa{VW, NUM_VREGS};

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
    if (static_cast<int64_t>(index.size()) < n) {
      require_allocatable(checked_mul(n, sizeof(int64_t), "an index table size"));
      index.resize(static_cast<size_t>(n));
    }
    return index.data();
  }
  float* get(Slot s, std::initializer_list<int64_t> factors) {
    constexpr int64_t kAlignFloats = 16;
    const int64_t n = checked_add(checked_product(factors, "a workspace size"), kAlignFloats + VW,
                                  "a workspace size");
    auto& b = buf[s];
    if (static_cast<int64_t>(b.size()) < n) {
      require_allocatable(checked_mul(n, sizeof(float), "a workspace size"));
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

// The calling thread's workspaces of this ISA.
Workspace& workspace();

// --- packed weights, from a WeightCache (core.h) or packed for this call -------------------
// This ISA's identity in the cache keys: the address of an object each ISA has its own of.
inline constexpr char kIsaTag = 0;

// A cache key for weights w of a convolution with `groups` groups, packed into `layout`
// with `tiling` (the version and the ISA are added by packed_weights).
inline WeightCache::Key weight_key(const ConstView4& w, int64_t groups, WeightLayout layout,
                                   const Tiling& tiling) {
  return {0,
          0,
          static_cast<int64_t>(reinterpret_cast<std::intptr_t>(w.data)),
          w.n,
          w.c,
          w.h,
          w.w,
          w.sn,
          w.sc,
          w.sh,
          w.sw,
          groups,
          static_cast<int64_t>(layout),
          tiling.nv,
          tiling.nt,
          tiling.ntl,
          0,
          0,
          0,
          0};
}

// The packed weights one call runs on. hold keeps a cache entry's buffer alive while the call
// uses it (another thread may replace the entry meanwhile).
struct PackedWeights {
  std::shared_ptr<std::vector<float>> hold;
  const float* data;
  float w_max;  // what pack returned (Winograd: max |U|)
};

// The weights in a layout of `floats` floats that pack(float* dst) -> float writes: the cache's
// entry for key when there is one, else packed into the cache (when given; the call's
// workspace otherwise, as without a cache). A miss packs under the cache's mutex, so two
// threads missing at once pack once.
template <class Pack>
PackedWeights packed_weights(WeightCacheRef ref, WeightCache::Key key, int64_t floats, Pack pack);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
inline int64_t pos_mod(int64_t a, int64_t b) { return ((a % b) + b) % b; }

// True when v is exactly a dense NHWC array (size-1 dims may have any stride).
inline bool is_dense_nhwc(int64_t n, int64_t c, int64_t h, int64_t w, int64_t sn, int64_t sc,
                          int64_t sh, int64_t sw) {
  return (c == 1 || sc == 1) && (w == 1 || sw == c) && (h == 1 || sh == w * c) &&
         (n == 1 || sn == h * w * c);
}
template <class V>
bool is_dense_nhwc(const V& v) {
  return is_dense_nhwc(v.n, v.c, v.h, v.w, v.sn, v.sc, v.sh, v.sw);
}

// The plan's view of a convolution's arrays (conv_plan.h). The conditions short-circuit in
// this order, as they always did, so that no size product is formed for arrays that are not
// dense HWIO (the strides of a broadcast or as_strided view).
inline ConvLayout conv_layout(const ConvParams& p, const ConstView4& x, const ConstView4& w,
                              const View4& y, bool weights_cached = false) {
  ConvLayout l;
  l.x_dense_nhwc = is_dense_nhwc(x);
  l.y_dense_nhwc = is_dense_nhwc(y);
  l.w_dense_hwio = p.groups == 1 && w.sn == 1 && w.sc == p.O && (p.KW == 1 || w.sw == p.C * p.O) &&
                   (p.KH == 1 || w.sh == p.KW * p.C * p.O);
  l.weights_cached = weights_cached;
  return l;
}

template <class Pack>
PackedWeights packed_weights(WeightCacheRef ref, WeightCache::Key key, int64_t floats, Pack pack) {
  if (!ref.cache) {
    float* dst = workspace().get(WS_W, {floats});
    const float m = pack(dst);
    return {nullptr, dst, m};
  }
  key[0] = ref.version;
  key[1] = static_cast<int64_t>(reinterpret_cast<std::intptr_t>(&kIsaTag));
  WeightCache& c = *ref.cache;
  std::lock_guard<std::mutex> lock(c.mutex);
  for (const WeightCache::Entry& e : c.entries)
    if (e.buffer && e.key == key) return {e.buffer, e.data, e.w_max};
  WeightCache::Entry& e = c.entries[static_cast<size_t>(c.next)];
  e = WeightCache::Entry{};  // free the old buffer first (unless a running call holds it)
  constexpr int64_t kAlignFloats = 16;
  const int64_t n = checked_add(floats, kAlignFloats + VW, "the cached weights' size");
  require_allocatable(checked_mul(n, sizeof(float), "the cached weights' size"));
  auto buffer = std::make_shared<std::vector<float>>(static_cast<size_t>(n));
  const auto addr = reinterpret_cast<std::uintptr_t>(buffer->data());
  float* data = buffer->data() + ((64 - addr % 64) % 64) / sizeof(float);
  const float m = pack(data);  // may throw: the entry stays empty
  e.key = key;
  e.buffer = buffer;
  e.data = data;
  e.w_max = m;
  c.next = (c.next + 1) % WeightCache::kEntries;
  return {buffer, data, m};
}

// --- layout conversion (workspace.cpp) -----------------------------------------------------
// src (any strides) -> dst dense [N][H+pt+pb][W+pl+pr][G][cg_pad], zeros in the spatial
// padding and in the channel padding lanes (cg_pad >= C/G rounds each group up to whole
// vectors where a kernel needs it).
void pack_padded_nhwc(ConstView4 s, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t G,
                      int64_t cg_pad, float* dst, int nthreads);
// Dense NHWC src [N][H][W][C] -> dst view (any strides).
void unpack_nhwc(const float* src, View4 d, int nthreads);
// conv_direct.cpp: weights w (O, C/G, KH, KW) -> [g][tile][tap][row][NT]: lanes are output
// channels and rows input channels, or the reverse when transposed (backward-data).
void pack_weights(ConstView4 w, int64_t G, const Tiling& tl, bool transposed, float* dst,
                  int nthreads);

// --- calls between the units ---------------------------------------------------------------
// matmul.cpp: y (M, O) = x (M, C) . w (C, O) + bias (then relu), M <= kSmallMatmulRows.
void matmul_small_m(const float* x, int64_t M, int64_t C, const float* w, int64_t O,
                    const float* bias, bool relu, float* y, int nthreads);
// conv_winograd.cpp. Both return false, having computed nothing, when the values are out of
// the range where Winograd agrees with the direct kernel (a run-time check of the data, not
// part of the plan): the caller then runs the direct kernel.
bool conv2d_winograd(const WinogradPlan& plan, const ConvParams& p, ConstView4 x, ConstView4 w,
                     const float* bias, bool relu, View4 y, WeightCacheRef cache, int nthreads);
bool wgrad_winograd(const WinogradWgradPlan& plan, const ConvParams& p, const float* gyp,
                    ConstView4 x, View4* gw, const Tiling& tl, int nthreads);

// --- registration (registry.cpp calls each) ------------------------------------------------
void register_conv_direct(KernelTable& t);
void register_conv_wgrad(KernelTable& t);
void register_pool(KernelTable& t);
void register_norm(KernelTable& t);
void register_warp(KernelTable& t);
void register_eltwise(KernelTable& t);
void register_peak(KernelTable& t);
void register_workspace(KernelTable& t);

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
