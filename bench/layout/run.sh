#!/usr/bin/env bash
# Compile and run the layout experiment (single thread, AVX-512 CPU required).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
g++ -O3 -std=c++17 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mavx2 \
  "$here/layout_bench.cpp" -o /tmp/pyconv_layout_bench
taskset -c 0 /tmp/pyconv_layout_bench 2>/dev/null || /tmp/pyconv_layout_bench
