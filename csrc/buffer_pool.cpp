// See buffer_pool.h. One mutex-guarded free list per rounded size; blocks are handed out
// whole (no splitting), so a block's size is known from the request that made it.
#include "buffer_pool.h"

#include <pthread.h>

#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "checked.h"

namespace pyconv {
namespace {

constexpr std::size_t kAlign = 64;
constexpr std::size_t kGranule = std::size_t{1} << 16;  // sizes rounded to 64 KiB

struct Pool {
  std::mutex mu;
  std::map<std::size_t, std::vector<void*>> idle;  // rounded size -> idle blocks
  std::size_t cached = 0;
  std::size_t limit = std::size_t{1} << 30;  // 1 GiB of idle buffers at most
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: capsules may run after static destruction
  return *p;
}

// A fork while another thread holds the lock would leave it locked forever in the child
// (where that thread does not exist): the forking thread takes it across the fork.
void lock_for_fork() { pool().mu.lock(); }
void unlock_after_fork() { pool().mu.unlock(); }
[[maybe_unused]] const int g_fork_handlers =
    pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);

std::size_t rounded(std::size_t bytes) {
  if (bytes < kMinPooledBytes) return (bytes + kAlign - 1) / kAlign * kAlign;
  return (bytes + kGranule - 1) / kGranule * kGranule;
}

void trim_locked(Pool& p) {
  while (p.cached > p.limit && !p.idle.empty()) {
    auto it = std::prev(p.idle.end());  // largest blocks first
    std::free(it->second.back());
    it->second.pop_back();
    p.cached -= it->first;
    if (it->second.empty()) p.idle.erase(it);
  }
}

}  // namespace

void* pool_take(std::size_t bytes) {
  // Rounding up must not wrap a huge request around to a small block.
  if (bytes > std::numeric_limits<std::size_t>::max() / 2) throw std::bad_alloc();
  require_allocatable(static_cast<int64_t>(bytes));
  const std::size_t size = rounded(bytes == 0 ? 1 : bytes);
  if (size >= kMinPooledBytes) {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    auto it = p.idle.find(size);
    if (it != p.idle.end()) {
      void* block = it->second.back();
      it->second.pop_back();
      p.cached -= size;
      if (it->second.empty()) p.idle.erase(it);
      return block;
    }
  }
  void* block = std::aligned_alloc(kAlign, size);
  if (!block) throw std::bad_alloc();
  return block;
}

void pool_give(void* block, std::size_t bytes) {
  if (!block) return;
  const std::size_t size = rounded(bytes == 0 ? 1 : bytes);
  if (size < kMinPooledBytes) {
    std::free(block);
    return;
  }
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  if (p.cached + size > p.limit) {
    std::free(block);
    return;
  }
  p.idle[size].push_back(block);
  p.cached += size;
}

std::size_t pool_cached_bytes() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return p.cached;
}

std::size_t pool_limit() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return p.limit;
}

void pool_set_limit(std::size_t bytes) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  p.limit = bytes;
  trim_locked(p);
}

void pool_release() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  for (auto& [size, blocks] : p.idle)
    for (void* b : blocks) std::free(b);
  p.idle.clear();
  p.cached = 0;
}

}  // namespace pyconv
