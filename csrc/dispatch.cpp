// Run-time choice of the kernel table: the best ISA this CPU (and OS) supports, unless the
// PYCONV_ISA environment variable or pyconv.set_isa() asks for a lower one.
#include <omp.h>
#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

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

bool isa_known(const char* name) {
#if defined(PYCONV_HAVE_X86)
  if (std::strcmp(name, "avx512") == 0 || std::strcmp(name, "avx2") == 0) return true;
#endif
  return std::strcmp(name, "generic") == 0;
}

// A table that lacks an entry is refused here, before any of its kernels can run.
const KernelTable& complete(const KernelTable& t) {
  const std::string missing = missing_entries(t);
  if (!missing.empty())
    throw std::logic_error("pyconv: the kernel table lacks " + missing +
                           " (each op family's unit fills its entries in register_<family>)");
  return t;
}

// The table of a known ISA that this CPU supports, else null. Only then is it built: building
// it runs code compiled for that ISA.
const KernelTable* table_for(const char* name) {
  if (!isa_known(name) || !cpu_has(name)) return nullptr;
#if defined(PYCONV_HAVE_X86)
  if (std::strcmp(name, "avx512") == 0) return &complete(avx512::kernel_table());
  if (std::strcmp(name, "avx2") == 0) return &complete(avx2::kernel_table());
#endif
  return &complete(generic::kernel_table());
}

const KernelTable* best_table() {
  for (const char* name : {"avx512", "avx2", "generic"})
    if (const KernelTable* t = table_for(name)) return t;
  return table_for("generic");
}

const KernelTable* initial_table() {
  const char* env = std::getenv("PYCONV_ISA");
  if (env && *env) {
    // An unknown or unsupported request falls back to the best supported ISA; the Python
    // package checks PYCONV_ISA at import and raises a clear error before we get here.
    if (const KernelTable* t = table_for(env)) return t;
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

bool isa_supported(const char* name) { return isa_known(name) && cpu_has(name); }

void set_isa(const char* name) {
  if (!isa_known(name))
    throw std::invalid_argument(
        std::string("isa must be one of 'avx512', 'avx2', 'generic', got '") + name + "'");
  if (!cpu_has(name))
    throw std::invalid_argument(std::string("isa '") + name + "' is not supported by this CPU");
  g_table.store(table_for(name));
}

std::string missing_entries(const KernelTable& t) {
  std::string missing;
  auto note = [&](const char* what) {
    missing += (missing.empty() ? "" : ", ") + std::string(what);
  };
  if (!t.name) note("name");
  if (t.vector_width <= 0) note("vector_width");
  if (t.num_vregs <= 0) note("num_vregs");
#define PYCONV_NOTE_MISSING(type, entry, family) \
  if (!t.entry) note(#entry " (register_" #family ")");
  PYCONV_KERNEL_ENTRIES(PYCONV_NOTE_MISSING)
#undef PYCONV_NOTE_MISSING
  return missing.empty() ? missing : std::string(t.name ? t.name : "?") + ": " + missing;
}

void check_kernel_tables() {
  for (const char* name : {"avx512", "avx2", "generic"}) table_for(name);
}

std::vector<const KernelTable*> supported_tables() {
  std::vector<const KernelTable*> out;
  for (const char* name : {"avx512", "avx2", "generic"})
    if (const KernelTable* t = table_for(name)) out.push_back(t);
  return out;
}

// --- threads -------------------------------------------------------------------------------
// Two ways the OpenMP runtime (libgomp) fails without an exception, both guarded here:
// - It cannot start its threads again in a child forked after they started: the child's
//   first parallel region waits forever for the parent's threads. A fork handler marks such a
//   child, and from then on every kernel runs with a team of one, which libgomp runs on the
//   calling thread without touching its old pool (PyTorch does the same).
// - A failed thread start (a memory or process limit) ends the process ("libgomp: Thread
//   creation failed"). So before a thread count is first used, as many threads are started
//   and joined here, where a failure is an error the caller sees.
namespace {
std::atomic<bool> g_pool_started{false};  // a kernel has been given more than one thread
std::atomic<bool> g_forked_child{false};  // this process was forked after that
std::atomic<int> g_verified{1};           // the largest thread count known to start
std::atomic<int> g_requested_default{0};  // the OpenMP default, before any reduction

void mark_forked_child() {
  if (g_pool_started.load()) g_forked_child.store(true);
}
[[maybe_unused]] const int g_fork_handler = pthread_atfork(nullptr, nullptr, mark_forked_child);

// OMP_STACKSIZE / GOMP_STACKSIZE ("size[B|K|M|G]", K by default) as libgomp reads it; 0 when
// unset (libgomp then uses the default thread attributes, as the probe does).
size_t omp_stack_bytes() {
  const char* env = std::getenv("GOMP_STACKSIZE");
  if (!env || !*env) env = std::getenv("OMP_STACKSIZE");
  if (!env || !*env) return 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(env, &end, 10);
  while (end && *end == ' ') ++end;
  const char unit = end && *end ? static_cast<char>(*end | 0x20) : 'k';
  const unsigned shift = unit == 'b' ? 0 : unit == 'm' ? 20 : unit == 'g' ? 30 : 10;
  return static_cast<size_t>(v) << shift;
}

void* wait_at_gate(void* gate) {
  auto* m = static_cast<pthread_mutex_t*>(gate);
  pthread_mutex_lock(m);
  pthread_mutex_unlock(m);
  return nullptr;
}

// Start n - 1 threads that are all alive at once (as an OpenMP team of n is), then end them.
// Returns 0, or the error of the first thread that could not start.
int probe_threads(int n) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (const size_t stack = omp_stack_bytes()) pthread_attr_setstacksize(&attr, stack);
  pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&gate);
  std::vector<pthread_t> started;
  int err = 0;
  try {
    started.reserve(static_cast<size_t>(n));
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  }
  for (int i = 1; i < n && !err; ++i) {
    pthread_t t;
    err = pthread_create(&t, &attr, wait_at_gate, &gate);
    if (!err) started.push_back(t);
  }
  pthread_mutex_unlock(&gate);
  for (pthread_t t : started) pthread_join(t, nullptr);
  pthread_attr_destroy(&attr);
  return err;
}

// The OpenMP default (OMP_NUM_THREADS or the core count), halved until that many threads
// start.
int default_threads() {
  int n = omp_get_max_threads();
  g_requested_default.store(n);
  while (n > 1 && probe_threads(n) != 0) n /= 2;
  if (n > g_verified.load()) g_verified.store(n);
  return n;
}
}  // namespace

int get_num_threads() {
  if (g_forked_child.load()) return 1;
  int n = g_threads.load();
  if (n <= 0) {
    n = default_threads();
    g_threads.store(n);
  }
  return n;
}

int default_num_threads_requested() {
  get_num_threads();
  return g_requested_default.load();
}

bool in_forked_child() { return g_forked_child.load(); }

namespace {
// libgomp keeps one pool of threads per calling thread: every Python thread that runs a
// kernel gets its own team. So each calling thread, the first time it uses a thread count,
// checks that its team can start and starts it (an empty parallel region) at once, holding
// a lock so that two threads cannot both pass the check and then exhaust the memory
// between them. Where a full team cannot start, that thread's calls run on as many threads
// as can (halving the count): results do not depend on it.
std::mutex g_team_mu;
thread_local int t_count = 0;  // the count this thread last checked
thread_local int t_team = 1;   // the team size that started for it
}  // namespace

int kernel_threads() {
  const int n = get_num_threads();
  if (n <= 1) return 1;
  if (n != t_count) {
    g_pool_started.store(true);  // before the lock: a fork from here on marks the child
    std::lock_guard<std::mutex> lock(g_team_mu);
    int m = n;
    while (m > 1 && probe_threads(m) != 0) m /= 2;
    if (m > 1) {
#pragma omp parallel num_threads(m)
      {
      }
    }
    t_count = n;
    t_team = m;
  }
  return t_team;
}

namespace {
std::atomic<int> g_conv_algo{static_cast<int>(ConvAlgo::Auto)};
}
ConvAlgo conv_algorithm() { return static_cast<ConvAlgo>(g_conv_algo.load()); }
void set_conv_algorithm(ConvAlgo a) { g_conv_algo.store(static_cast<int>(a)); }

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
  if (g_forked_child.load()) {
    if (n > 1)
      throw std::runtime_error(
          "num_threads=" + std::to_string(n) +
          ": this process was forked after pyconv's threads started, and the OpenMP runtime "
          "cannot start threads again in a forked child, so pyconv runs one thread here (use "
          "the 'spawn' or 'forkserver' multiprocessing start method for threaded workers)");
    g_threads.store(1);
    return;
  }
  if (n > g_verified.load()) {
    if (const int err = probe_threads(n)) {
      const int kept = get_num_threads();
      throw std::runtime_error("cannot start num_threads=" + std::to_string(n) + " threads (" +
                               std::strerror(err) + "); still using " + std::to_string(kept) +
                               (kept == 1 ? " thread" : " threads"));
    }
    g_verified.store(n);
  }
  g_threads.store(n);
}

}  // namespace pyconv
