// pyconv core: the interface between the bindings, the run-time ISA dispatcher and the
// per-ISA kernels (csrc/kernels.cpp, compiled once per instruction set).
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

#include <cstdint>

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

// The entry points every ISA implements. nthreads is the OpenMP team size to use.
struct KernelTable {
  const char* name;
  int vector_width;  // floats per SIMD register
  // y = conv(x, w) + bias, then max(y, 0) when relu (fused into the tile stores). bias may be
  // null.
  void (*conv2d_forward)(const ConvParams&, ConstView4 x, ConstView4 w, const float* bias,
                         bool relu, View4 y, int nthreads);
  // gx = conv_transpose(gy, w)
  void (*conv2d_backward_data)(const ConvParams&, ConstView4 gy, ConstView4 w, View4 gx,
                               int nthreads);
  // gw = sum over pixels of gy (x) x-patch; gbias = sum of gy. Either output may be null.
  void (*conv2d_backward_weight)(const ConvParams&, ConstView4 gy, ConstView4 x, View4* gw,
                                 float* gbias, int nthreads);
  void (*max_pool2d_forward)(const PoolParams&, ConstView4 x, View4 y, int nthreads);
  void (*max_pool2d_backward)(const PoolParams&, ConstView4 gy, ConstView4 x, View4 gx,
                              int nthreads);
  void (*avg_pool2d_forward)(const PoolParams&, ConstView4 x, View4 y, int nthreads);
  void (*avg_pool2d_backward)(const PoolParams&, ConstView4 gy, View4 gx, int nthreads);
  // Batch norm over M rows of C contiguous channels (see kernels.cpp for the formulas).
  void (*batchnorm_forward)(const float* x, int64_t M, int64_t C, const float* gamma,
                            const float* beta, float eps, float* y, float* mean, float* var,
                            int nthreads);
  void (*batchnorm_backward)(const float* dy, const float* x, int64_t M, int64_t C,
                             const float* gamma, const float* mean, const float* var, float eps,
                             bool batch_stats, float* dx, float* dgamma, float* dbeta,
                             int nthreads);
  void (*channel_affine)(const float* x, int64_t M, int64_t C, const float* scale,
                         const float* shift, float* y, int nthreads);
  // Bilinear affine resampling of NHWC images (augmentation); mats: N x 2x3, fill 0/1/2 =
  // constant / nearest / reflect.
  void (*affine_warp)(const float* x, int64_t N, int64_t H, int64_t W, int64_t C, const float* mats,
                      float* y, int fill, float fill_value, int nthreads);
  // Inverted dropout of n contiguous floats: y[i] = keep(i) ? x[i] * scale : 0, where
  // keep(i) = hash(i, key) >= threshold (a counter-based mask: the same key gives the same
  // mask on every ISA and thread count, so backward re-derives it instead of storing it).
  void (*dropout)(const float* x, int64_t n, uint32_t threshold, float scale, uint64_t key,
                  float* y, int nthreads);
  // ReLU backward from the output: dx[i] = y[i] > 0 ? dy[i] : 0 (dx may be dy).
  void (*relu_backward)(const float* dy, const float* y, int64_t n, float* dx, int nthreads);
  // One Adam step over n parameters (Keras's rule; step = lr * sqrt(1-b2^t) / (1-b1^t)):
  // m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); vhat = max(vhat, v) when vhat is given
  // (AMSGrad); w -= step * m / (sqrt(vhat or v) + eps).
  void (*adam_update)(float* w, const float* g, float* m, float* v, float* vhat, int64_t n,
                      float step, float beta_1, float beta_2, float eps, int nthreads);
  // Measured single-thread FMA throughput of this ISA, GFLOP/s.
  double (*peak_gflops)(double seconds);
  void (*release_workspace)();
  // Bytes the calling thread's workspaces hold now (reused by its next calls).
  int64_t (*workspace_bytes)();
};

namespace generic {
extern const KernelTable table;
}
namespace avx2 {
extern const KernelTable table;
}
namespace avx512 {
extern const KernelTable table;
}

// dispatch.cpp
// Which algorithm 3x3 stride-1 convolutions use: automatic choice, always the direct kernel,
// or Winograd F(2x2, 3x3) wherever it applies (the last two for tests and benchmarks).
enum class ConvAlgo { Auto = 0, Direct = 1, Winograd = 2 };
ConvAlgo conv_algorithm();
void set_conv_algorithm(ConvAlgo a);
const KernelTable& active_kernels();
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
