// The FMA peak probe (compiled once per ISA).
#include <chrono>
#include <cstdint>

#include "microkernels.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

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

}  // namespace

void register_peak(KernelTable& t) { t.peak_gflops = &peak_gflops; }

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
