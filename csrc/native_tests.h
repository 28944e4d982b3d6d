// C++ unit tests compiled into the module (run by tests/test_cpp.py through
// _core._run_native_tests()): the convolution planning rules (native_tests.cpp, compiled once)
// and each ISA's packing (native_tests_packing.cpp, compiled per ISA).
#pragma once

#include <string>
#include <vector>

namespace pyconv {

// Collects the failures of one run, each "what: detail".
struct TestLog {
  std::vector<std::string> failures;
  void check(bool ok, const std::string& what) {
    if (!ok) failures.push_back(what);
  }
};

// Every native test, for every ISA this CPU supports.
std::vector<std::string> run_native_tests();

namespace generic {
void run_packing_tests(TestLog& log);
}
namespace avx2 {
void run_packing_tests(TestLog& log);
}
namespace avx512 {
void run_packing_tests(TestLog& log);
}

}  // namespace pyconv
