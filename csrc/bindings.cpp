// pybind11 bindings: the private module pyconv._core. The Python package (pyconv/functional.py)
// validates arguments, resolves padding and allocates outputs in the caller's layout; this
// layer converts arrays into logical-order views, re-checks the geometry (so calling _core
// directly can never read or write out of bounds) and releases the GIL around the kernels.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "buffer_pool.h"
#include "checked.h"
#include "conv_plan.h"
#include "core.h"
#include "native_tests.h"

namespace py = pybind11;
using pyconv::checked_add;
using pyconv::checked_mul;
using pyconv::ConstView4;
using pyconv::ConvParams;
using pyconv::PoolParams;
using pyconv::View4;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// A float32 4-D array -> logical view. Element strides must be whole floats.
template <class V, class Ptr>
V make_view(const py::array& a, const char* name, Ptr data) {
  if (!a.dtype().is(py::dtype::of<float>())) fail(std::string(name) + " must be float32");
  if (a.ndim() != 4) fail(std::string(name) + " must be 4-D, got shape " + shape_str(a));
  int64_t st[4];
  for (int i = 0; i < 4; ++i) {
    if (a.shape(i) <= 0) fail(std::string(name) + " must not be empty, got shape " + shape_str(a));
    if (a.strides(i) % static_cast<py::ssize_t>(sizeof(float)) != 0)
      fail(std::string(name) + " has strides that are not a multiple of 4 bytes");
    st[i] = a.strides(i) / static_cast<py::ssize_t>(sizeof(float));
  }
  return V{data, a.shape(0), a.shape(1), a.shape(2), a.shape(3), st[0], st[1], st[2], st[3]};
}
ConstView4 cview(const py::array& a, const char* name) {
  return make_view<ConstView4>(a, name, static_cast<const float*>(a.data()));
}
View4 mview(py::array& a, const char* name) {
  if (!a.writeable()) fail(std::string(name) + " must be writeable");
  return make_view<View4>(a, name, static_cast<float*>(a.mutable_data()));
}

template <class V>
void expect_shape(const V& v, const char* name, int64_t n, int64_t c, int64_t h, int64_t w) {
  if (v.n != n || v.c != c || v.h != h || v.w != w)
    fail(std::string(name) + " has logical shape (" + std::to_string(v.n) + ", " +
         std::to_string(v.c) + ", " + std::to_string(v.h) + ", " + std::to_string(v.w) +
         "), expected (" + std::to_string(n) + ", " + std::to_string(c) + ", " + std::to_string(h) +
         ", " + std::to_string(w) + ")");
}

// Strides, dilations, paddings and kernel sizes: the same bound as pyconv/_shapes.py's
// MAX_DIM, so that the window arithmetic below stays far from int64 overflow.
constexpr int64_t kMaxGeometry = (int64_t{1} << 31) - 1;
void check_range(int64_t v, int64_t lo, const char* name) {
  if (v < lo)
    fail(std::string(name) + " must be >= " + std::to_string(lo) + ", got " + std::to_string(v));
  if (v > kMaxGeometry)
    fail(std::string(name) + " must be <= " + std::to_string(kMaxGeometry) + ", got " +
         std::to_string(v));
}

// Geometry from x (N,C,H,W) and w (O,C/G,KH,KW), and the output size it implies. Any
// inconsistency is an error here, before a kernel runs; sizes are overflow-checked.
ConvParams conv_params(const ConstView4& x, const ConstView4& w, int64_t sh, int64_t sw, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw, int64_t groups) {
  check_range(sh, 1, "stride");
  check_range(sw, 1, "stride");
  check_range(dh, 1, "dilation");
  check_range(dw, 1, "dilation");
  for (int64_t pad : {pt, pb, pl, pr}) check_range(pad, 0, "padding");
  if (groups < 1 || x.c % groups != 0 || w.n % groups != 0)
    fail("groups must divide the input and output channels");
  if (w.c * groups != x.c) fail("w.shape[1] * groups must equal the input channels");
  ConvParams p{x.n, x.c, x.h, x.w, w.n, w.h, w.w, 0, 0, sh, sw, dh, dw, pt, pb, pl, pr, groups};
  const int64_t eh = checked_mul(w.h - 1, dh, "the dilated kernel height") + 1;
  const int64_t ew = checked_mul(w.w - 1, dw, "the dilated kernel width") + 1;
  const int64_t hp = checked_add(x.h, pt + pb, "the padded input height");
  const int64_t wp = checked_add(x.w, pl + pr, "the padded input width");
  if (eh > hp || ew > wp) fail("kernel is larger than the padded input");
  p.OH = (hp - eh) / sh + 1;
  p.OW = (wp - ew) / sw + 1;
  return p;
}

PoolParams pool_params(const ConstView4& x, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                       int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t oh, int64_t ow,
                       bool count_include_pad) {
  check_range(kh, 1, "kernel_size");
  check_range(kw, 1, "kernel_size");
  check_range(sh, 1, "stride");
  check_range(sw, 1, "stride");
  for (int64_t pad : {pt, pb, pl, pr}) check_range(pad, 0, "padding");
  if (oh < 1 || ow < 1) fail("output size must be >= 1");
  // Every window must start inside the padded input (ceil_mode may add a last partial one).
  if (checked_mul(oh - 1, sh, "the output height times the stride") >= x.h + pt ||
      checked_mul(ow - 1, sw, "the output width times the stride") >= x.w + pl)
    fail("output size is too large for the input");
  return PoolParams{x.n, x.c, x.h, x.w, kh, kw, oh, ow, sh, sw, pt, pb, pl, pr, count_include_pad};
}

using OptArray = std::optional<py::array>;

// _core.WeightCache: a layer's packed weights between calls (pyconv::WeightCache, core.h). It
// also holds the last weights array it was called with: while it is held, no other array can
// be allocated at its address, so an entry keyed by (address, version) cannot be mistaken for
// a new array's that happens to get the same address and version. A call with weights at
// another address drops every entry first.
struct PyWeightCache {
  pyconv::WeightCache cache;
  py::object owner;  // the weights array of the last call (its data pointer: owner_data)
  const void* owner_data = nullptr;
  // Called with the GIL held, before the kernel runs (with the GIL released).
  pyconv::WeightCacheRef use(const py::array& w, int64_t version) {
    if (version < 0) fail("weight_version must be >= 0, got " + std::to_string(version));
    if (owner_data != w.data()) {
      cache.clear();
      owner = w;
      owner_data = w.data();
    }
    return {&cache, version};
  }
};

void conv2d_forward(const py::array& x, const py::array& w, const OptArray& bias, py::array& y,
                    int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                    int64_t dh, int64_t dw, int64_t groups, bool relu, PyWeightCache* weight_cache,
                    int64_t weight_version) {
  auto xv = cview(x, "x"), wv = cview(w, "w");
  auto yv = mview(y, "y");
  ConvParams p = conv_params(xv, wv, sh, sw, pt, pb, pl, pr, dh, dw, groups);
  expect_shape(yv, "y", p.N, p.O, p.OH, p.OW);
  const float* b = nullptr;
  if (bias) {
    if (!bias->dtype().is(py::dtype::of<float>()) || bias->ndim() != 1 || bias->shape(0) != p.O ||
        !(bias->flags() & py::array::c_style))
      fail("bias must be a contiguous float32 array of shape (" + std::to_string(p.O) + ",)");
    b = static_cast<const float*>(bias->data());
  }
  const pyconv::WeightCacheRef cache =
      weight_cache ? weight_cache->use(w, weight_version) : pyconv::WeightCacheRef{};
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().conv2d_forward(p, xv, wv, b, relu, yv, cache, nt);
}

void conv2d_backward_data(const py::array& gy, const py::array& w, py::array& gx, int64_t sh,
                          int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh,
                          int64_t dw, int64_t groups) {
  auto gyv = cview(gy, "grad_out"), wv = cview(w, "w");
  auto gxv = mview(gx, "grad_x");
  ConvParams p = conv_params(gxv.as_const(), wv, sh, sw, pt, pb, pl, pr, dh, dw, groups);
  expect_shape(gyv, "grad_out", p.N, p.O, p.OH, p.OW);
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().conv2d_backward_data(p, gyv, wv, gxv, nt);
}

void conv2d_backward_weight(const py::array& gy, const py::array& x, OptArray& gw, OptArray& gbias,
                            int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                            int64_t dh, int64_t dw, int64_t groups) {
  auto gyv = cview(gy, "grad_out"), xv = cview(x, "x");
  if (!gw && !gbias) return;
  // The weight shape comes from gw when asked for it; for a bias-only call the kernel size
  // is irrelevant but the geometry check still needs one, so use the output shape.
  View4 gwv{};
  ConvParams p;
  if (gw) {
    gwv = mview(*gw, "grad_w");
    p = conv_params(xv, gwv.as_const(), sh, sw, pt, pb, pl, pr, dh, dw, groups);
  } else {
    p = ConvParams{xv.n, xv.c, xv.h, xv.w, gyv.c, 1,  1,  gyv.h, gyv.w,
                   sh,   sw,   dh,   dw,   pt,    pb, pl, pr,    groups};
    if (groups < 1 || xv.c % groups || gyv.c % groups) fail("groups must divide the channels");
  }
  expect_shape(gyv, "grad_out", p.N, p.O, p.OH, p.OW);
  float* gb = nullptr;
  if (gbias) {
    if (!gbias->dtype().is(py::dtype::of<float>()) || gbias->ndim() != 1 ||
        gbias->shape(0) != p.O || !(gbias->flags() & py::array::c_style) || !gbias->writeable())
      fail("grad_bias must be a writeable contiguous float32 array of shape (" +
           std::to_string(p.O) + ",)");
    gb = static_cast<float*>(gbias->mutable_data());
  }
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().conv2d_backward_weight(p, gyv, xv, gw ? &gwv : nullptr, gb, nt);
}

void max_pool2d_forward(const py::array& x, py::array& y, int64_t kh, int64_t kw, int64_t sh,
                        int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  auto xv = cview(x, "x");
  auto yv = mview(y, "y");
  PoolParams p = pool_params(xv, kh, kw, sh, sw, pt, pb, pl, pr, yv.h, yv.w, false);
  expect_shape(yv, "y", p.N, p.C, p.OH, p.OW);
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().max_pool2d_forward(pyconv::MaxPoolForwardParams{p}, xv, yv, nt);
}

void max_pool2d_backward(const py::array& gy, const py::array& x, py::array& gx, int64_t kh,
                         int64_t kw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                         int64_t pr) {
  auto gyv = cview(gy, "grad_out"), xv = cview(x, "x");
  auto gxv = mview(gx, "grad_x");
  PoolParams p = pool_params(xv, kh, kw, sh, sw, pt, pb, pl, pr, gyv.h, gyv.w, false);
  expect_shape(gyv, "grad_out", p.N, p.C, p.OH, p.OW);
  expect_shape(gxv, "grad_x", p.N, p.C, p.H, p.W);
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().max_pool2d_backward(pyconv::MaxPoolBackwardParams{p}, gyv, xv, gxv, nt);
}

void avg_pool2d_forward(const py::array& x, py::array& y, int64_t kh, int64_t kw, int64_t sh,
                        int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                        bool count_include_pad) {
  auto xv = cview(x, "x");
  auto yv = mview(y, "y");
  PoolParams p = pool_params(xv, kh, kw, sh, sw, pt, pb, pl, pr, yv.h, yv.w, count_include_pad);
  expect_shape(yv, "y", p.N, p.C, p.OH, p.OW);
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().avg_pool2d_forward(pyconv::AvgPoolForwardParams{p}, xv, yv, nt);
}

void avg_pool2d_backward(const py::array& gy, py::array& gx, int64_t kh, int64_t kw, int64_t sh,
                         int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                         bool count_include_pad) {
  auto gyv = cview(gy, "grad_out");
  auto gxv = mview(gx, "grad_x");
  PoolParams p =
      pool_params(gxv.as_const(), kh, kw, sh, sw, pt, pb, pl, pr, gyv.h, gyv.w, count_include_pad);
  expect_shape(gyv, "grad_out", p.N, p.C, p.OH, p.OW);
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().avg_pool2d_backward(pyconv::AvgPoolBackwardParams{p}, gyv, gxv, nt);
}

// --- batch norm: (M, C) C-contiguous float32 rows and (C,) vectors --------------------

struct Rows {
  int64_t m, c;
};

Rows rows_of(const py::array& a, const char* name) {
  if (!a.dtype().is(py::dtype::of<float>()) || a.ndim() != 2 || !(a.flags() & py::array::c_style))
    fail(std::string(name) + " must be a C-contiguous float32 (rows, channels) array, got shape " +
         shape_str(a));
  return {a.shape(0), a.shape(1)};
}

void expect_rows(const py::array& a, const char* name, Rows r, bool writeable) {
  Rows got = rows_of(a, name);
  if (got.m != r.m || got.c != r.c)
    fail(std::string(name) + " must have shape (" + std::to_string(r.m) + ", " +
         std::to_string(r.c) + "), got " + shape_str(a));
  if (writeable && !a.writeable()) fail(std::string(name) + " must be writeable");
}

template <class Ptr>
Ptr channel_vec(const OptArray& a, const char* name, int64_t c, bool writeable) {
  if (!a) return nullptr;
  if (!a->dtype().is(py::dtype::of<float>()) || a->ndim() != 1 || a->shape(0) != c ||
      !(a->flags() & py::array::c_style) || (writeable && !a->writeable()))
    fail(std::string(name) + " must be a contiguous" + (writeable ? " writeable" : "") +
         " float32 array of shape (" + std::to_string(c) + ",)");
  return static_cast<Ptr>(const_cast<void*>(a->data()));  // writeable checked above
}

void check_eps(double eps) {
  if (!(eps > 0)) fail("epsilon must be > 0");
}

void batchnorm_forward(const py::array& x, const OptArray& gamma, const OptArray& beta, double eps,
                       py::array& y, OptArray& mean, OptArray& var) {
  Rows r = rows_of(x, "x");
  if (r.m < 1) fail("x must have at least one row");
  expect_rows(y, "y", r, true);
  check_eps(eps);
  if (!mean || !var) fail("mean and var outputs are required");
  auto* g = channel_vec<const float*>(gamma, "gamma", r.c, false);
  auto* b = channel_vec<const float*>(beta, "beta", r.c, false);
  auto* mu = channel_vec<float*>(mean, "mean", r.c, true);
  auto* v = channel_vec<float*>(var, "var", r.c, true);
  auto* xp = static_cast<const float*>(x.data());
  auto* yp = static_cast<float*>(y.mutable_data());
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().batchnorm_forward(xp, r.m, r.c, g, b, static_cast<float>(eps), yp, mu, v,
                                             nt);
}

void batchnorm_backward(const py::array& dy, const py::array& x, const OptArray& gamma,
                        const OptArray& mean, const OptArray& var, double eps, bool batch_stats,
                        OptArray& dx, OptArray& dgamma, OptArray& dbeta) {
  Rows r = rows_of(x, "x");
  expect_rows(dy, "grad_out", r, false);
  if (dx) expect_rows(*dx, "grad_x", r, true);
  check_eps(eps);
  if (!mean || !var) fail("mean and var are required");
  auto* g = channel_vec<const float*>(gamma, "gamma", r.c, false);
  auto* mu = channel_vec<const float*>(mean, "mean", r.c, false);
  auto* v = channel_vec<const float*>(var, "var", r.c, false);
  auto* dg = channel_vec<float*>(dgamma, "grad_gamma", r.c, true);
  auto* db = channel_vec<float*>(dbeta, "grad_beta", r.c, true);
  auto* dxp = dx ? static_cast<float*>(dx->mutable_data()) : nullptr;
  auto* dyp = static_cast<const float*>(dy.data());
  auto* xp = static_cast<const float*>(x.data());
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().batchnorm_backward(dyp, xp, r.m, r.c, g, mu, v, static_cast<float>(eps),
                                              batch_stats, dxp, dg, db, nt);
}

void channel_affine(const py::array& x, const OptArray& scale, const OptArray& shift,
                    py::array& y) {
  Rows r = rows_of(x, "x");
  expect_rows(y, "y", r, true);
  if (!scale || !shift) fail("scale and shift are required");
  auto* sc = channel_vec<const float*>(scale, "scale", r.c, false);
  auto* sh = channel_vec<const float*>(shift, "shift", r.c, false);
  auto* xp = static_cast<const float*>(x.data());
  auto* yp = static_cast<float*>(y.mutable_data());
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().channel_affine(xp, r.m, r.c, sc, sh, yp, nt);
}

void affine_warp(const py::array& x, const py::array& mats, py::array& y, int fill,
                 double fill_value) {
  if (!x.dtype().is(py::dtype::of<float>()) || x.ndim() != 4 || !(x.flags() & py::array::c_style))
    fail("x must be a C-contiguous float32 (N, H, W, C) array, got shape " + shape_str(x));
  const int64_t n = x.shape(0), h = x.shape(1), w = x.shape(2), c = x.shape(3);
  if (!mats.dtype().is(py::dtype::of<float>()) || mats.ndim() != 3 || mats.shape(0) != n ||
      mats.shape(1) != 2 || mats.shape(2) != 3 || !(mats.flags() & py::array::c_style))
    fail("matrices must be a C-contiguous float32 array of shape (" + std::to_string(n) +
         ", 2, 3), got " + shape_str(mats));
  if (!y.dtype().is(py::dtype::of<float>()) || y.ndim() != 4 || !(y.flags() & py::array::c_style) ||
      y.shape(0) != n || y.shape(1) != h || y.shape(2) != w || y.shape(3) != c || !y.writeable())
    fail("y must be a writeable C-contiguous float32 array shaped like x");
  if (fill < 0 || fill > 2) fail("fill mode must be 0 (constant), 1 (nearest) or 2 (reflect)");
  auto* xp = static_cast<const float*>(x.data());
  auto* mp = static_cast<const float*>(mats.data());
  auto* yp = static_cast<float*>(y.mutable_data());
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().affine_warp(xp, n, h, w, c, mp, yp, fill, static_cast<float>(fill_value),
                                       nt);
}

// Element-wise kernels take C-contiguous float32 arrays of one size (any shape).
void expect_flat(const py::array& a, const char* name, int64_t size, bool writeable,
                 const char* size_of) {
  if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
      a.size() != size || (writeable && !a.writeable()))
    fail(std::string(name) + " must be a " + (writeable ? "writeable " : "") +
         "C-contiguous float32 array of " + size_of + "'s size");
}

void dropout(const py::array& x, double rate, uint64_t key, py::array& y) {
  expect_flat(x, "x", x.size(), false, "x");
  expect_flat(y, "y", x.size(), true, "x");
  if (!(rate >= 0.0 && rate < 1.0)) fail("rate must be in [0, 1)");
  if (x.size() >= (int64_t{1} << 32)) fail("dropout handles fewer than 2**32 elements per call");
  // keep when hash >= threshold: P(keep) = 1 - threshold / 2^32 = 1 - rate (to 2^-32)
  const auto threshold = static_cast<uint32_t>(std::min(rate * 4294967296.0, 4294967295.0));
  const auto scale = static_cast<float>(1.0 / (1.0 - rate));
  auto* xp = static_cast<const float*>(x.data());
  auto* yp = static_cast<float*>(y.mutable_data());
  const int64_t n = x.size();
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().dropout(xp, n, threshold, scale, key, yp, nt);
}

void relu_backward(const py::array& dy, const py::array& y, py::array& dx) {
  expect_flat(dy, "grad_out", y.size(), false, "y");
  expect_flat(y, "y", y.size(), false, "y");
  expect_flat(dx, "grad_x", y.size(), true, "y");
  auto* dyp = static_cast<const float*>(dy.data());
  auto* yp = static_cast<const float*>(y.data());
  auto* dxp = static_cast<float*>(dx.mutable_data());
  const int64_t n = y.size();
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().relu_backward(dyp, yp, n, dxp, nt);
}

void sgd_update(py::array& w, const py::array& g, OptArray& m, double lr, double momentum,
                bool nesterov) {
  expect_flat(w, "w", w.size(), true, "w");
  expect_flat(g, "g", w.size(), false, "w");
  if (m) expect_flat(*m, "m", w.size(), true, "w");
  auto* wp = static_cast<float*>(w.mutable_data());
  auto* gp = static_cast<const float*>(g.data());
  auto* mp = m ? static_cast<float*>(m->mutable_data()) : nullptr;
  const int64_t n = w.size();
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().sgd_update(wp, gp, mp, n, static_cast<float>(lr),
                                      static_cast<float>(momentum), nesterov, nt);
}

void adam_update(py::array& w, const py::array& g, py::array& m, py::array& v, OptArray& vhat,
                 double step, double beta_1, double beta_2, double eps) {
  expect_flat(w, "w", w.size(), true, "w");
  expect_flat(g, "g", w.size(), false, "w");
  expect_flat(m, "m", w.size(), true, "w");
  expect_flat(v, "v", w.size(), true, "w");
  if (vhat) expect_flat(*vhat, "vhat", w.size(), true, "w");
  auto* wp = static_cast<float*>(w.mutable_data());
  auto* gp = static_cast<const float*>(g.data());
  auto* mp = static_cast<float*>(m.mutable_data());
  auto* vp = static_cast<float*>(v.mutable_data());
  auto* hp = vhat ? static_cast<float*>(vhat->mutable_data()) : nullptr;
  const int64_t n = w.size();
  const int nt = pyconv::kernel_threads();
  py::gil_scoped_release nogil;
  pyconv::active_kernels().adam_update(wp, gp, mp, vp, hp, n, static_cast<float>(step),
                                       static_cast<float>(beta_1), static_cast<float>(beta_2),
                                       static_cast<float>(eps), nt);
}

// A new C-contiguous float32 array on a pooled, 64-byte aligned block (buffer_pool.h); the
// block goes back to the pool when the last NumPy view of it dies.
py::array empty_array(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) fail("shape must not have negative dimensions");
    if (d != 0 && count > (int64_t{1} << 60) / d) fail("shape is too large");
    count *= d;
  }
  struct Block {
    void* data;
    std::size_t bytes;
  };
  const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(float);
  auto* block = new Block{pyconv::pool_take(bytes), bytes};
  py::capsule owner(block, [](void* b) {
    auto* blk = static_cast<Block*>(b);
    pyconv::pool_give(blk->data, blk->bytes);
    delete blk;
  });
  return py::array_t<float>(shape, static_cast<float*>(block->data), owner);
}

pyconv::ConvAlgo parse_conv_algorithm(const std::string& name) {
  if (name == "auto") return pyconv::ConvAlgo::Auto;
  if (name == "direct") return pyconv::ConvAlgo::Direct;
  if (name == "winograd") return pyconv::ConvAlgo::Winograd;
  fail("algorithm must be 'auto', 'direct' or 'winograd', got '" + name + "'");
}

// --- test hooks (tests/test_cpp.py) -------------------------------------------------------

const char* method_name(pyconv::ConvMethod m) {
  switch (m) {
    case pyconv::ConvMethod::Winograd:
      return "winograd";
    case pyconv::ConvMethod::SmallMatmul:
      return "small_matmul";
    default:
      return "direct";
  }
}

const char* weight_layout_name(pyconv::WeightLayout l) {
  switch (l) {
    case pyconv::WeightLayout::HwioInPlace:
      return "hwio_in_place";
    case pyconv::WeightLayout::WinogradTiles:
      return "winograd_tiles";
    case pyconv::WeightLayout::DenseCO:
      return "dense_co";
    default:
      return "packed_tiles";
  }
}

py::dict tiling_dict(const pyconv::Tiling& t) {
  using namespace pybind11::literals;
  return py::dict("vectors"_a = t.nv, "pixels"_a = t.pmax, "channels"_a = t.nt, "tiles"_a = t.ntl);
}

// The forward plan of a geometry (x (N, C, H, W), w (O, C/groups, KH, KW)) as a dict, for the
// active ISA, algorithm setting and thread count unless given.
py::dict plan_conv(const std::vector<int64_t>& x_shape, const std::vector<int64_t>& w_shape,
                   int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                   int64_t dh, int64_t dw, int64_t groups, const std::optional<std::string>& isa,
                   const std::optional<std::string>& algorithm, std::optional<int> threads,
                   bool x_dense_nhwc, bool y_dense_nhwc, bool w_dense_hwio, bool weights_cached) {
  if (x_shape.size() != 4 || w_shape.size() != 4) fail("x_shape and w_shape must have 4 dims");
  for (int64_t d : x_shape)
    if (d < 1) fail("x_shape must be positive");
  for (int64_t d : w_shape)
    if (d < 1) fail("w_shape must be positive");
  const ConstView4 x{nullptr, x_shape[0], x_shape[1], x_shape[2], x_shape[3], 0, 0, 0, 0};
  const ConstView4 w{nullptr, w_shape[0], w_shape[1], w_shape[2], w_shape[3], 0, 0, 0, 0};
  const ConvParams p = conv_params(x, w, sh, sw, pt, pb, pl, pr, dh, dw, groups);
  const pyconv::KernelTable* table = &pyconv::active_kernels();
  if (isa) {
    table = nullptr;
    for (const pyconv::KernelTable* t : pyconv::supported_tables())
      if (*isa == t->name) table = t;
    if (!table) fail("isa '" + *isa + "' is not supported by this CPU");
  }
  const pyconv::ConvAlgo algo =
      algorithm ? parse_conv_algorithm(*algorithm) : pyconv::conv_algorithm();
  const int nthreads = threads ? *threads : pyconv::kernel_threads();
  if (nthreads < 1) fail("threads must be >= 1");
  const pyconv::ConvPlan plan =
      pyconv::plan_conv_forward(p, {x_dense_nhwc, y_dense_nhwc, w_dense_hwio, weights_cached}, algo,
                                {table->vector_width, table->num_vregs}, nthreads);
  using namespace pybind11::literals;
  const pyconv::DirectPlan& d = plan.direct;
  py::dict out(
      "method"_a = method_name(plan.method),
      "weight_layout"_a = weight_layout_name(plan.weight_layout),
      "workspace_bytes"_a = plan.workspace_bytes, "output_size"_a = py::make_tuple(p.OH, p.OW),
      "direct"_a = py::dict("tiling"_a = tiling_dict(d.tiling), "pack_input"_a = d.pack_input,
                            "weights_in_place"_a = d.weights_in_place,
                            "merge_row_taps"_a = d.merge_row_taps, "pixel_tiles"_a = d.pixel_tiles,
                            "chunk"_a = d.chunk, "tasks"_a = d.tasks, "threads"_a = d.threads,
                            "input_floats"_a = d.input_floats, "weight_floats"_a = d.weight_floats,
                            "bias_floats"_a = d.bias_floats, "out_floats"_a = d.out_floats));
  if (plan.method == pyconv::ConvMethod::Winograd) {
    const pyconv::WinogradPlan& g = plan.winograd;
    out["winograd"] = py::dict(
        "tiling"_a = tiling_dict(g.tiling), "tiles"_a = g.tiles, "block_tiles"_a = g.block_tiles,
        "blocks"_a = g.blocks, "input_floats"_a = g.input_floats,
        "weight_floats"_a = g.weight_floats, "bias_floats"_a = g.bias_floats,
        "out_floats"_a = g.out_floats, "scratch_floats"_a = g.scratch_floats);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyconv's C++ core (private: use pyconv.functional)";
  pyconv::check_kernel_tables();  // an incomplete table fails the import, naming its entries
  py::register_exception_translator([](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const std::invalid_argument& ex) {
      PyErr_SetString(PyExc_ValueError, ex.what());
    }
  });
  using py::arg;
  py::class_<PyWeightCache>(m, "WeightCache",
                            "A layer's packed weights kept between conv2d_forward calls")
      .def(py::init<>())
      .def(
          "clear",
          [](PyWeightCache& c) {
            c.cache.clear();
            c.owner = py::none();
            c.owner_data = nullptr;
          },
          "Drop every entry (and the weights array held)")
      .def_property_readonly(
          "nbytes", [](PyWeightCache& c) { return c.cache.bytes(); },
          "Bytes of packed weights held");
  m.def("conv2d_forward", &conv2d_forward, arg("x"), arg("w"), arg("bias").none(true), arg("y"),
        arg("stride_h"), arg("stride_w"), arg("pad_t"), arg("pad_b"), arg("pad_l"), arg("pad_r"),
        arg("dil_h"), arg("dil_w"), arg("groups"), arg("relu") = false,
        arg("weight_cache").none(true) = py::none(), arg("weight_version") = 0,
        "y[n,o,oh,ow] = bias[o] + sum x[n,c,oh*s+kh*d-p,...] w[o,c,kh,kw] (then max(y, 0) if "
        "relu); logical NCHW views. weight_cache: packed weights reused while weight_version "
        "(which must change whenever w's values do) and w's address, shape and strides stay");
  m.def("conv2d_backward_data", &conv2d_backward_data, arg("grad_out"), arg("w"), arg("grad_x"),
        arg("stride_h"), arg("stride_w"), arg("pad_t"), arg("pad_b"), arg("pad_l"), arg("pad_r"),
        arg("dil_h"), arg("dil_w"), arg("groups"));
  m.def("conv2d_backward_weight", &conv2d_backward_weight, arg("grad_out"), arg("x"),
        arg("grad_w").none(true), arg("grad_bias").none(true), arg("stride_h"), arg("stride_w"),
        arg("pad_t"), arg("pad_b"), arg("pad_l"), arg("pad_r"), arg("dil_h"), arg("dil_w"),
        arg("groups"));
  m.def("max_pool2d_forward", &max_pool2d_forward, arg("x"), arg("y"), arg("kernel_h"),
        arg("kernel_w"), arg("stride_h"), arg("stride_w"), arg("pad_t"), arg("pad_b"), arg("pad_l"),
        arg("pad_r"));
  m.def("max_pool2d_backward", &max_pool2d_backward, arg("grad_out"), arg("x"), arg("grad_x"),
        arg("kernel_h"), arg("kernel_w"), arg("stride_h"), arg("stride_w"), arg("pad_t"),
        arg("pad_b"), arg("pad_l"), arg("pad_r"));
  m.def("avg_pool2d_forward", &avg_pool2d_forward, arg("x"), arg("y"), arg("kernel_h"),
        arg("kernel_w"), arg("stride_h"), arg("stride_w"), arg("pad_t"), arg("pad_b"), arg("pad_l"),
        arg("pad_r"), arg("count_include_pad"));
  m.def("avg_pool2d_backward", &avg_pool2d_backward, arg("grad_out"), arg("grad_x"),
        arg("kernel_h"), arg("kernel_w"), arg("stride_h"), arg("stride_w"), arg("pad_t"),
        arg("pad_b"), arg("pad_l"), arg("pad_r"), arg("count_include_pad"));
  m.def("batchnorm_forward", &batchnorm_forward, arg("x"), arg("gamma").none(true),
        arg("beta").none(true), arg("epsilon"), arg("y"), arg("mean"), arg("var"),
        "Training batch norm over rows of x (M, C): batch mean/var, y normalized");
  m.def("batchnorm_backward", &batchnorm_backward, arg("grad_out"), arg("x"),
        arg("gamma").none(true), arg("mean"), arg("var"), arg("epsilon"), arg("batch_stats"),
        arg("grad_x").none(true), arg("grad_gamma").none(true), arg("grad_beta").none(true));
  m.def("channel_affine", &channel_affine, arg("x"), arg("scale"), arg("shift"), arg("y"),
        "y = x * scale + shift per channel (column) of x (M, C)");
  m.def("affine_warp", &affine_warp, arg("x"), arg("matrices"), arg("y"), arg("fill"),
        arg("fill_value"), "y[n] = bilinear sample of x[n] at matrices[n] @ (ox, oy, 1)");
  m.def("dropout", &dropout, arg("x"), arg("rate"), arg("key"), arg("y"),
        "y = x / (1 - rate) where hash(index, key) keeps it, else 0 (same key, same mask)");
  m.def("relu_backward", &relu_backward, arg("grad_out"), arg("y"), arg("grad_x"),
        "grad_x = grad_out where y > 0, else 0 (grad_x may be grad_out)");
  m.def("sgd_update", &sgd_update, arg("w"), arg("g"), arg("m").none(true), arg("lr"),
        arg("momentum"), arg("nesterov"));
  m.def("adam_update", &adam_update, arg("w"), arg("g"), arg("m"), arg("v"), arg("vhat").none(true),
        arg("step"), arg("beta_1"), arg("beta_2"), arg("epsilon"),
        "One in-place Adam step (Keras's rule) of w with gradient g and moments m, v");
  m.def("get_isa", [] { return std::string(pyconv::active_isa()); });
  m.def("set_isa", [](const std::string& name) { pyconv::set_isa(name.c_str()); }, arg("name"));
  m.def("available_isas", [] {
    std::vector<std::string> out;
    for (const char* n : {"avx512", "avx2", "generic"})
      if (pyconv::isa_supported(n)) out.emplace_back(n);
    return out;
  });
  m.def("get_num_threads", &pyconv::get_num_threads);
  m.def("set_num_threads", &pyconv::set_num_threads, arg("n"));
  m.def("default_num_threads_requested", &pyconv::default_num_threads_requested);
  m.def("in_forked_child", &pyconv::in_forked_child,
        "True in a child forked after the kernels ran on several threads (it runs one)");
  m.def(
      "peak_gflops",
      [](double seconds) {
        if (!(seconds > 0 && seconds < 60)) fail("seconds must be in (0, 60)");
        py::gil_scoped_release nogil;
        return pyconv::active_kernels().peak_gflops(seconds);
      },
      arg("seconds") = 0.2, "Measured single-thread FMA peak of the active ISA, GFLOP/s");
  m.def(
      "set_conv_algorithm",
      [](const std::string& name) { pyconv::set_conv_algorithm(parse_conv_algorithm(name)); },
      arg("name"));
  m.def("get_conv_algorithm", [] {
    switch (pyconv::conv_algorithm()) {
      case pyconv::ConvAlgo::Direct:
        return std::string("direct");
      case pyconv::ConvAlgo::Winograd:
        return std::string("winograd");
      default:
        return std::string("auto");
    }
  });
  m.def("empty", &empty_array, arg("shape"),
        "Uninitialized C-contiguous float32 array on a pooled 64-byte aligned buffer");
  m.def("buffer_cache_bytes", &pyconv::pool_cached_bytes, "Bytes of idle pooled buffers");
  m.def("buffer_cache_limit", &pyconv::pool_limit);
  m.def(
      "set_buffer_cache_limit",
      [](int64_t bytes) {
        if (bytes < 0) fail("limit must be >= 0 bytes");
        pyconv::pool_set_limit(static_cast<std::size_t>(bytes));
      },
      arg("bytes"));
  m.def("release_buffer_cache", &pyconv::pool_release, "Free every idle pooled buffer");
  m.def(
      "release_workspace",
      [] {
        for (const pyconv::KernelTable* t : pyconv::supported_tables()) t->release_workspace();
      },
      "Free the calling thread's cached workspaces (all ISAs)");
  m.def(
      "workspace_bytes", [] { return pyconv::active_kernels().workspace_bytes(); },
      "Bytes the calling thread's workspaces of the active ISA hold (its next calls reuse them)");
  m.def("_plan_conv", &plan_conv, arg("x_shape"), arg("w_shape"), arg("stride_h"), arg("stride_w"),
        arg("pad_t"), arg("pad_b"), arg("pad_l"), arg("pad_r"), arg("dil_h"), arg("dil_w"),
        arg("groups"), arg("isa") = py::none(), arg("algorithm") = py::none(),
        arg("threads") = py::none(), arg("x_dense_nhwc") = true, arg("y_dense_nhwc") = true,
        arg("w_dense_hwio") = true, arg("weights_cached") = false,
        "Test hook: the convolution forward's plan for a geometry, as a dict");
  m.def("_run_native_tests", &pyconv::run_native_tests,
        "Test hook: runs the C++ unit tests (plans, packing on every supported ISA); returns the "
        "failures");
}
