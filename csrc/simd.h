// A minimal SIMD vocabulary over whatever instruction set this translation unit is compiled
// for. Every kernel unit includes it and is compiled once per ISA (see CMakeLists.txt), so the
// same kernel source becomes an AVX-512, an AVX2 and a portable build. VW = floats per register.
#pragma once

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

namespace pyconv {
namespace PYCONV_ISA_NAME {

#if defined(__AVX512F__)
constexpr int VW = 16;
constexpr int NUM_VREGS = 32;
using vf = __m512;
static inline vf vzero() { return _mm512_setzero_ps(); }
static inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf vset1(float x) { return _mm512_set1_ps(x); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
// max(m, v) that keeps a NaN from either side (PyTorch's max-pool rule).
static inline vf vmax_nan(vf m, vf v) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_max_ps(v, m), v);
}
// (a > b or a is NaN) ? t : f -- the max-pool "take this element" rule, lane by lane.
static inline vf vselect_gt_nan(vf a, vf b, vf t, vf f) {
  const __mmask16 m = _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ) | _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
  return _mm512_mask_blend_ps(m, f, t);
}
// a == b ? t : 0
static inline vf vselect_eq(vf a, vf b, vf t) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ), t);
}
#elif defined(__AVX2__)
constexpr int VW = 8;
constexpr int NUM_VREGS = 16;
using vf = __m256;
static inline vf vzero() { return _mm256_setzero_ps(); }
static inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf vset1(float x) { return _mm256_set1_ps(x); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vmax_nan(vf m, vf v) {
  return _mm256_blendv_ps(_mm256_max_ps(v, m), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}
static inline vf vselect_gt_nan(vf a, vf b, vf t, vf f) {
  const vf m = _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  return _mm256_blendv_ps(f, t, m);
}
static inline vf vselect_eq(vf a, vf b, vf t) {
  return _mm256_and_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ), t);
}
#elif defined(__SSE2__)
// Baseline x86-64: SSE2, no FMA (multiply then add).
constexpr int VW = 4;
constexpr int NUM_VREGS = 16;
using vf = __m128;
static inline vf vzero() { return _mm_setzero_ps(); }
static inline vf vload(const float* p) { return _mm_loadu_ps(p); }
static inline void vstore(float* p, vf v) { _mm_storeu_ps(p, v); }
static inline vf vset1(float x) { return _mm_set1_ps(x); }
static inline vf vfma(vf a, vf b, vf c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
static inline vf vadd(vf a, vf b) { return _mm_add_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm_mul_ps(a, b); }
static inline vf vmax_nan(vf m, vf v) {
  const vf nan = _mm_cmpunord_ps(v, v);
  return _mm_or_ps(_mm_and_ps(nan, v), _mm_andnot_ps(nan, _mm_max_ps(v, m)));
}
static inline vf vselect_gt_nan(vf a, vf b, vf t, vf f) {
  const vf m = _mm_or_ps(_mm_cmpgt_ps(a, b), _mm_cmpunord_ps(a, a));
  return _mm_or_ps(_mm_and_ps(m, t), _mm_andnot_ps(m, f));
}
static inline vf vselect_eq(vf a, vf b, vf t) { return _mm_and_ps(_mm_cmpeq_ps(a, b), t); }
#else
// Any other CPU: plain C++ the compiler may auto-vectorize.
constexpr int VW = 4;
constexpr int NUM_VREGS = 16;
struct vf {
  float v[4];
};
static inline vf vzero() { return vf{{0.f, 0.f, 0.f, 0.f}}; }
static inline vf vload(const float* p) { return vf{{p[0], p[1], p[2], p[3]}}; }
static inline void vstore(float* p, vf a) {
  for (int i = 0; i < 4; ++i) p[i] = a.v[i];
}
static inline vf vset1(float x) { return vf{{x, x, x, x}}; }
static inline vf vfma(vf a, vf b, vf c) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
  return r;
}
static inline vf vadd(vf a, vf b) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] + b.v[i];
  return r;
}
static inline vf vmul(vf a, vf b) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] * b.v[i];
  return r;
}
static inline vf vmax_nan(vf m, vf v) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = (v.v[i] > m.v[i] || v.v[i] != v.v[i]) ? v.v[i] : m.v[i];
  return r;
}
static inline vf vselect_gt_nan(vf a, vf b, vf t, vf f) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = (a.v[i] > b.v[i] || a.v[i] != a.v[i]) ? t.v[i] : f.v[i];
  return r;
}
static inline vf vselect_eq(vf a, vf b, vf t) {
  vf r;
  for (int i = 0; i < 4; ++i) r.v[i] = a.v[i] == b.v[i] ? t.v[i] : 0.f;
  return r;
}
#endif

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
