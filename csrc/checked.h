// Overflow-checked size arithmetic: the one place where the core multiplies or adds sizes that
// come from its callers (array dimensions, paddings, strides) into buffer sizes and geometry.
// A wrapped product would size a workspace too small and the kernels would write past it, so
// every such product goes through here and an overflow throws SizeOverflow (a ValueError in
// Python) before anything is allocated.
#pragma once

#include <cstdint>
#include <initializer_list>
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
