// Run-time choice of the kernel table: the best ISA this CPU (and OS) supports, unless the
// PYCONV_ISA environment variable or pyconv.set_isa() asks for a lower one.
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core.h"

namespace pyconv {
namespace {

bool cpu_has(const char* name) {
#if defined(PYCONV_HAVE_X86) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (std::strcmp(name, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
  if (std::strcmp(name, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return std::strcmp(name, "generic") == 0;
}

const KernelTable* table_for(const char* name) {
#if defined(PYCONV_HAVE_X86)
  if (std::strcmp(name, "avx512") == 0) return &avx512::table;
  if (std::strcmp(name, "avx2") == 0) return &avx2::table;
#endif
  if (std::strcmp(name, "generic") == 0) return &generic::table;
  return nullptr;
}

const KernelTable* best_table() {
  for (const char* name : {"avx512", "avx2", "generic"})
    if (table_for(name) && cpu_has(name)) return table_for(name);
  return &generic::table;
}

const KernelTable* initial_table() {
  const char* env = std::getenv("PYCONV_ISA");
  if (env && *env) {
    std::string want(env);
    if (table_for(want.c_str()) && cpu_has(want.c_str())) return table_for(want.c_str());
    // An unknown or unsupported request falls back to the best supported ISA; the Python
    // package checks PYCONV_ISA at import and raises a clear error before we get here.
  }
  return best_table();
}

std::atomic<const KernelTable*> g_table{nullptr};
std::atomic<int> g_threads{0};

}  // namespace

const KernelTable& active_kernels() {
  const KernelTable* t = g_table.load();
  if (!t) {
    t = initial_table();
    g_table.store(t);
  }
  return *t;
}

const char* active_isa() { return active_kernels().name; }

bool isa_supported(const char* name) { return table_for(name) && cpu_has(name); }

void set_isa(const char* name) {
  if (!table_for(name))
    throw std::invalid_argument(
        std::string("isa must be one of 'avx512', 'avx2', 'generic', got '") + name + "'");
  if (!cpu_has(name))
    throw std::invalid_argument(std::string("isa '") + name + "' is not supported by this CPU");
  g_table.store(table_for(name));
}

int get_num_threads() {
  int n = g_threads.load();
  if (n <= 0) {
    n = omp_get_max_threads();
    g_threads.store(n);
  }
  return n;
}

namespace {
std::atomic<int> g_conv_algo{static_cast<int>(ConvAlgo::Auto)};
}
ConvAlgo conv_algorithm() { return static_cast<ConvAlgo>(g_conv_algo.load()); }
void set_conv_algorithm(ConvAlgo a) { g_conv_algo.store(static_cast<int>(a)); }

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
  g_threads.store(n);
}

}  // namespace pyconv
