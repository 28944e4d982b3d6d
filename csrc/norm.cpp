// Batch normalization and the per-channel affine map (compiled once per ISA).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernel_common.h"
#include "small_work.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

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
  nthreads = threads_for_bytes(int64_t{8} * M * C, nthreads);
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

}  // namespace

void register_norm(KernelTable& t) {
  t.batchnorm_forward = &batchnorm_forward;
  t.batchnorm_backward = &batchnorm_backward;
  t.channel_affine = &channel_affine;
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
