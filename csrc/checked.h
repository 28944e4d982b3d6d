// Overflow-checked size arithmetic: the one place where the core multiplies or adds sizes that
// come from its callers (array dimensions, paddings, strides) into buffer sizes and geometry.
// A wrapped product would size a workspace too small and the kernels would write past it, so
// every such product goes through here and an overflow throws SizeOverflow (a ValueError in
// Python) before anything is allocated.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>

namespace pyconv {

struct SizeOverflow : std::length_error {
  explicit SizeOverflow(const char* what)
      : std::length_error(std::string(what) + " overflows 64-bit sizes") {}
};

inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw SizeOverflow(what);
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw SizeOverflow(what);
  return r;
}

// Refuse an allocation larger than the machine's physical memory before asking for it: it
// can never succeed, and under AddressSanitizer (whose allocator aborts on such sizes instead
// of throwing) it would end the process. std::bad_alloc becomes MemoryError in Python.
inline void require_allocatable(int64_t bytes) {
  static const int64_t physical = [] {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : INT64_MAX;
  }();
  if (bytes > physical) throw std::bad_alloc();
}

// The product of non-negative factors (a buffer's size in elements).
inline int64_t checked_product(std::initializer_list<int64_t> factors, const char* what) {
  int64_t r = 1;
  for (int64_t f : factors) {
    if (f < 0) throw SizeOverflow(what);  // only a wrapped sum upstream can be negative
    r = checked_mul(r, f, what);
  }
  return r;
}

}  // namespace pyconv
