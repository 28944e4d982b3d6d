// pyconv core: the interface between the bindings, the run-time ISA dispatcher and the
// per-ISA kernels (one unit per op family, csrc/conv_direct.cpp ... csrc/peak.cpp, each
// compiled once per instruction set; see kernel_common.h).
//
// Conventions
// - All tensors are float32 4-D views addressed through element strides given in the
//   *logical* order (N, C, H, W), whatever the physical layout is. So one kernel reads
//   NCHW, NHWC, sliced or negatively-strided NumPy arrays without the caller copying.
// - Weights are logical (O, C/groups, KH, KW) (PyTorch OIHW), again with arbitrary strides,
//   so an HWIO (Keras) array is just a transposed view.
// - Internally the convolution kernels run on channels-last (NHWC) buffers, padded and
//   packed once per call into per-thread reusable workspaces (see README "Design").
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

namespace pyconv {

// A read-only 4-D view: logical dims (n, c, h, w) with element strides.
struct ConstView4 {
  const float* data;
  int64_t n, c, h, w;
  int64_t sn, sc, sh, sw;
  const float* ptr(int64_t i, int64_t j, int64_t k, int64_t l) const {
    return data + i * sn + j * sc + k * sh + l * sw;
  }
  float at(int64_t i, int64_t j, int64_t k, int64_t l) const { return *ptr(i, j, k, l); }
};

// A writable 4-D view, same conventions.
struct View4 {
  float* data;
  int64_t n, c, h, w;
  int64_t sn, sc, sh, sw;
  float& at(int64_t i, int64_t j, int64_t k, int64_t l) const {
    return data[i * sn + j * sc + k * sh + l * sw];
  }
  ConstView4 as_const() const { return {data, n, c, h, w, sn, sc, sh, sw}; }
};

// Shape arithmetic is done once, in Python (pyconv/_shapes.py); the core receives the
// resolved geometry and re-checks it (check_conv_params) so a direct _core call can't crash.
struct ConvParams {
  int64_t N, C, H, W;                  // input
  int64_t O, KH, KW;                   // output channels, kernel size
  int64_t OH, OW;                      // output size
  int64_t stride_h, stride_w;          // >= 1
  int64_t dil_h, dil_w;                // >= 1
  int64_t pad_t, pad_b, pad_l, pad_r;  // >= 0 (asymmetric "same" padding allowed)
  int64_t groups;                      // divides C and O
};

struct PoolParams {
  int64_t N, C, H, W;
  int64_t KH, KW, OH, OW;
  int64_t stride_h, stride_w;
  int64_t pad_t, pad_b, pad_l, pad_r;
  bool count_include_pad;  // avg pool only
};
// One type per pooling entry: without them max and average pooling's forwards (and average
// pooling's forward and backward) would share a signature, and could be swapped in the table.
struct MaxPoolForwardParams : PoolParams {};
struct MaxPoolBackwardParams : PoolParams {};
struct AvgPoolForwardParams : PoolParams {};
struct AvgPoolBackwardParams : PoolParams {};

// Packed weights kept between calls (plan once, run many). A convolution's kernels read its
// weights in a layout of their own (conv_plan.h's WeightLayout: tiles of output channels,
// or Winograd's transformed U) that costs a pass over the weights to make -- at batch 1 about
// as much as the convolution itself for a 512-channel layer. A layer owns one WeightCache
// and passes it with its kernel's version (bumped on every write): the kernels reuse an
// entry whose key (version, the weights' address, shape and strides, the plan's weight
// layout and tiling, the ISA) matches, and else pack into it instead of into their
// workspace. Only layouts that are a copy are kept (weights read in place are not).
// Thread-safe: the entries are looked up and filled under the mutex, and a call keeps the
// entry's buffer alive (shared_ptr) while it runs, even if another call replaces it.
struct WeightCache {
  static constexpr int kKeyLength = 20;
  using Key = std::array<int64_t, kKeyLength>;
  struct Entry {
    Key key{};
    std::shared_ptr<std::vector<float>> buffer;  // null: empty entry
    float* data = nullptr;                       // 64-byte aligned, inside buffer
    float w_max = 0.f;                           // Winograd: max |U| (its value check)
  };
  // Two entries: a layer called at two geometries that pack differently (a Winograd and a
  // direct plan, say: batch 1 and batch 64 of one 512-channel layer) keeps both.
  static constexpr int kEntries = 2;
  std::mutex mutex;
  std::array<Entry, kEntries> entries;
  int next = 0;  // the entry a miss replaces
  void clear() {
    std::lock_guard<std::mutex> lock(mutex);
    for (Entry& e : entries) e = Entry{};
  }
  int64_t bytes() {
    std::lock_guard<std::mutex> lock(mutex);
    int64_t n = 0;
    for (const Entry& e : entries)
      if (e.buffer) n += static_cast<int64_t>(e.buffer->capacity() * sizeof(float));
    return n;
  }
};
// What a call hands the kernels: no cache (null), or a cache and the weights' version.
struct WeightCacheRef {
  WeightCache* cache = nullptr;
  int64_t version = 0;
};

// --- the kernel table ------------------------------------------------------------------------
// The entry points every ISA implements, each with its own function type (so that a kernel
// registered under the wrong name does not compile). nthreads is the OpenMP team size to use.
//
// y = conv(x, w) + bias, then max(y, 0) when relu (fused into the tile stores). bias may be
// null. cache: where the packed weights are kept between calls (WeightCache), or none.
using Conv2dForwardFn = void (*)(const ConvParams&, ConstView4 x, ConstView4 w, const float* bias,
                                 bool relu, View4 y, WeightCacheRef cache, int nthreads);
// gx = conv_transpose(gy, w)
using Conv2dBackwardDataFn = void (*)(const ConvParams&, ConstView4 gy, ConstView4 w, View4 gx,
                                      int nthreads);
// gw = sum over pixels of gy (x) x-patch; gbias = sum of gy. Either output may be null.
using Conv2dBackwardWeightFn = void (*)(const ConvParams&, ConstView4 gy, ConstView4 x, View4* gw,
                                        float* gbias, int nthreads);
using MaxPool2dForwardFn = void (*)(const MaxPoolForwardParams&, ConstView4 x, View4 y,
                                    int nthreads);
using MaxPool2dBackwardFn = void (*)(const MaxPoolBackwardParams&, ConstView4 gy, ConstView4 x,
                                     View4 gx, int nthreads);
using AvgPool2dForwardFn = void (*)(const AvgPoolForwardParams&, ConstView4 x, View4 y,
                                    int nthreads);
using AvgPool2dBackwardFn = void (*)(const AvgPoolBackwardParams&, ConstView4 gy, View4 gx,
                                     int nthreads);
// Batch norm over M rows of C contiguous channels (see norm.cpp for the formulas).
using BatchnormForwardFn = void (*)(const float* x, int64_t M, int64_t C, const float* gamma,
                                    const float* beta, float eps, float* y, float* mean, float* var,
                                    int nthreads);
using BatchnormBackwardFn = void (*)(const float* dy, const float* x, int64_t M, int64_t C,
                                     const float* gamma, const float* mean, const float* var,
                                     float eps, bool batch_stats, float* dx, float* dgamma,
                                     float* dbeta, int nthreads);
using ChannelAffineFn = void (*)(const float* x, int64_t M, int64_t C, const float* scale,
                                 const float* shift, float* y, int nthreads);
// Bilinear affine resampling of NHWC images (augmentation); mats: N x 2x3, fill 0/1/2 =
// constant / nearest / reflect.
using AffineWarpFn = void (*)(const float* x, int64_t N, int64_t H, int64_t W, int64_t C,
                              const float* mats, float* y, int fill, float fill_value,
                              int nthreads);
// Inverted dropout of n contiguous floats: y[i] = keep(i) ? x[i] * scale : 0, where
// keep(i) = hash(i, key) >= threshold (a counter-based mask: the same key gives the same
// mask on every ISA and thread count, so backward re-derives it instead of storing it).
using DropoutFn = void (*)(const float* x, int64_t n, uint32_t threshold, float scale, uint64_t key,
                           float* y, int nthreads);
// ReLU backward from the output: dx[i] = y[i] > 0 ? dy[i] : 0 (dx may be dy).
using ReluBackwardFn = void (*)(const float* dy, const float* y, int64_t n, float* dx,
                                int nthreads);
// One Adam step over n parameters (Keras's rule; step = lr * sqrt(1-b2^t) / (1-b1^t)):
// m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); vhat = max(vhat, v) when vhat is given
// (AMSGrad); w -= step * m / (sqrt(vhat or v) + eps).
using SgdUpdateFn = void (*)(float* w, const float* g, float* m, int64_t n, float lr,
                             float momentum, bool nesterov, int nthreads);
using AdamUpdateFn = void (*)(float* w, const float* g, float* m, float* v, float* vhat, int64_t n,
                              float step, float beta_1, float beta_2, float eps, int nthreads);
// Measured single-thread FMA throughput of this ISA, GFLOP/s.
using PeakGflopsFn = double (*)(double seconds);
// Frees the calling thread's workspaces of this ISA.
using ReleaseWorkspaceFn = void (*)();
// Bytes the calling thread's workspaces hold now (reused by its next calls).
using WorkspaceBytesFn = int64_t (*)();

// Every entry, once: (type, name, the op family's unit that registers it).
#define PYCONV_KERNEL_ENTRIES(X)                                \
  X(Conv2dForwardFn, conv2d_forward, conv_direct)               \
  X(Conv2dBackwardDataFn, conv2d_backward_data, conv_direct)    \
  X(Conv2dBackwardWeightFn, conv2d_backward_weight, conv_wgrad) \
  X(MaxPool2dForwardFn, max_pool2d_forward, pool)               \
  X(MaxPool2dBackwardFn, max_pool2d_backward, pool)             \
  X(AvgPool2dForwardFn, avg_pool2d_forward, pool)               \
  X(AvgPool2dBackwardFn, avg_pool2d_backward, pool)             \
  X(BatchnormForwardFn, batchnorm_forward, norm)                \
  X(BatchnormBackwardFn, batchnorm_backward, norm)              \
  X(ChannelAffineFn, channel_affine, norm)                      \
  X(AffineWarpFn, affine_warp, warp)                            \
  X(DropoutFn, dropout, eltwise)                                \
  X(ReluBackwardFn, relu_backward, eltwise)                     \
  X(AdamUpdateFn, adam_update, eltwise)                         \
  X(SgdUpdateFn, sgd_update, eltwise)                           \
  X(PeakGflopsFn, peak_gflops, peak)                            \
  X(ReleaseWorkspaceFn, release_workspace, workspace)           \
  X(WorkspaceBytesFn, workspace_bytes, workspace)

// One ISA's kernels. Filled by name, by each op family's unit (register_<family> in
// csrc/<family>.cpp); an entry left null is reported by missing_entries() and refused at
// start-up (dispatch.cpp), never called.
struct KernelTable {
  const char* name = nullptr;
  int vector_width = 0;  // floats per SIMD register
  int num_vregs = 0;     // SIMD registers (what the convolution plans' tiling depends on)
#define PYCONV_DECLARE_ENTRY(type, entry, family) type entry = nullptr;
  PYCONV_KERNEL_ENTRIES(PYCONV_DECLARE_ENTRY)
#undef PYCONV_DECLARE_ENTRY
};

// Two entries of one type could be swapped without a compile error: there are none.
template <class... T>
struct AllDistinct;
template <>
struct AllDistinct<> : std::true_type {};
template <class T, class... Rest>
struct AllDistinct<T, Rest...>
    : std::bool_constant<!(std::is_same_v<T, Rest> || ...) && AllDistinct<Rest...>::value> {};
#define PYCONV_ENTRY_TYPE(type, entry, family) type,
static_assert(AllDistinct<PYCONV_KERNEL_ENTRIES(PYCONV_ENTRY_TYPE) void>::value,
              "two kernel table entries share a function type");
#undef PYCONV_ENTRY_TYPE

// "isa: entry, entry" for the entries left null; empty when the table is complete.
std::string missing_entries(const KernelTable& t);

// Each ISA's table, built (by its units' register_<family> functions) on first use. Only
// call it for an ISA the CPU supports: building it runs code compiled for that ISA.
namespace generic {
const KernelTable& kernel_table();
}
namespace avx2 {
const KernelTable& kernel_table();
}
namespace avx512 {
const KernelTable& kernel_table();
}

// --- dispatch.cpp ----------------------------------------------------------------------------
// Which algorithm 3x3 stride-1 convolutions use: automatic choice, always the direct kernel,
// or Winograd F(2x2, 3x3) wherever it applies (the last two for tests and benchmarks).
enum class ConvAlgo { Auto = 0, Direct = 1, Winograd = 2 };
ConvAlgo conv_algorithm();
void set_conv_algorithm(ConvAlgo a);
// The active ISA's table. The first call checks every supported ISA's table (see
// check_kernel_tables), so a missing entry is an error at start-up, not a null call.
const KernelTable& active_kernels();
// Throws std::logic_error naming every entry a supported ISA's table lacks.
void check_kernel_tables();
// The tables of every ISA this CPU supports, best first.
std::vector<const KernelTable*> supported_tables();
const char* active_isa();
bool isa_supported(const char* name);
void set_isa(const char* name);  // throws std::invalid_argument
// Threads (dispatch.cpp). get_num_threads is 1 in a child forked after the kernels ran on
// several threads; set_num_threads starts (and ends) that many threads before it accepts a
// count, and throws std::runtime_error when they cannot start.
int get_num_threads();
void set_num_threads(int n);          // throws std::invalid_argument on n < 1
int default_num_threads_requested();  // the OpenMP default before it was checked
bool in_forked_child();
// The thread count to hand a kernel: get_num_threads, or fewer where the calling thread's
// OpenMP team cannot start that many (see dispatch.cpp).
int kernel_threads();

}  // namespace pyconv
