// This ISA's kernel table, filled by name by each op family's unit (compiled once per ISA).
#include "kernel_common.h"

namespace pyconv {
namespace PYCONV_ISA_NAME {
namespace {

KernelTable build_table() {
#define PYCONV_STR2(x) #x
#define PYCONV_STR(x) PYCONV_STR2(x)
  KernelTable t;
  t.name = PYCONV_STR(PYCONV_ISA_NAME);
  t.vector_width = VW;
  t.num_vregs = NUM_VREGS;
  register_conv_direct(t);
  register_conv_wgrad(t);
  register_pool(t);
  register_norm(t);
  register_warp(t);
  register_eltwise(t);
  register_peak(t);
  register_workspace(t);
  return t;
}

}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable table = build_table();
  return table;
}

}  // namespace PYCONV_ISA_NAME
}  // namespace pyconv
