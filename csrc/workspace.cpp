// Per-thread workspaces and the one place where layouts are converted (compiled once per ISA).
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernel_common.h"
#include "small_work.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

void release_workspace() { workspace().release(); }
int64_t workspace_bytes() { return workspace().bytes(); }

}  // namespace

Workspace& workspace() {
  static thread_local Workspace ws;
  return ws;
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
  nthreads = threads_for_bytes(int64_t{4} * s.n * Hp * Wp * Cd, nthreads);
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
  nthreads = threads_for_bytes(int64_t{4} * d.n * d.h * d.w * d.c, nthreads);
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

void register_workspace(KernelTable& t) {
  t.release_workspace = &release_workspace;
  t.workspace_bytes = &workspace_bytes;
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
