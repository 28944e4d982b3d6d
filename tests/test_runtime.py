"""ISA switch, threads, the GIL, workspaces and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

import pyconv
from pyconv import functional as F


def _run(args, **env):
    """A fresh interpreter, started outside the checkout so it imports the installed pyconv."""
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, *args], env=full, capture_output=True, text=True, cwd=tempfile.gettempdir()
    )


@pytest.mark.parametrize("name", pyconv.available_isas())
def test_env_var_forces_isa(name):
    out = _run(["-c", "import pyconv; print(pyconv.get_isa())"], PYCONV_ISA=name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


def test_env_var_rejects_unknown_isa():
    out = _run(["-c", "import pyconv"], PYCONV_ISA="sse9")
    assert out.returncode != 0 and "PYCONV_ISA must be one of" in out.stderr


def test_available_isas_is_ordered_and_ends_generic():
    isas = pyconv.available_isas()
    assert isas[-1] == "generic"
    assert isas == [n for n in ("avx512", "avx2", "generic") if n in isas]
    assert pyconv.get_isa() in isas


def test_set_num_threads_round_trip():
    before = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(1)
        assert pyconv.get_num_threads() == 1
        pyconv.set_num_threads(3)  # more threads than cores is allowed
        assert pyconv.get_num_threads() == 3
    finally:
        pyconv.set_num_threads(before)


def test_concurrent_python_threads_match_sequential(rng):
    """Calls from several Python threads (GIL released inside) equal sequential calls."""
    xs = [rng.standard_normal((2, 8, 12, 12)).astype(np.float32) for _ in range(4)]
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)

    def work(x):
        y = F.conv2d(x, w, padding=1)
        return (y, *F.conv2d_backward(np.ones_like(y), x, w, padding=1), F.max_pool2d(y, 2))

    expected = [work(x) for x in xs]
    results = [None] * len(xs)

    def target(i):
        for _ in range(5):
            results[i] = work(xs[i])

    threads = [threading.Thread(target=target, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected, strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_command_line_version_and_info():
    out = _run(["-m", "pyconv", "--version"])
    assert out.returncode == 0 and out.stdout.strip() == f"pyconv {pyconv.__version__}"
    out = _run(["-m", "pyconv", "info"])
    assert out.returncode == 0 and "isa:" in out.stdout and "GFLOP/s" in out.stdout


def test_peak_measurement_is_positive():
    assert pyconv._core.peak_gflops(0.05) > 0.1
    with pytest.raises(ValueError):
        pyconv._core.peak_gflops(-1)


def test_op_outputs_come_from_the_buffer_cache():
    """Freed outputs (>= 1 MiB) are kept for the next output of the same size; live arrays
    never share memory; the limit and release_memory are honoured."""
    pyconv.release_memory()
    x = np.random.default_rng(0).standard_normal((4, 64, 64, 32)).astype(np.float32)  # 2 MiB
    y = F.max_pool2d(x, 1, data_format="NHWC")  # a fresh 2 MiB output
    assert y.ctypes.data % 64 == 0 and y.flags.c_contiguous and y.flags.writeable
    np.testing.assert_array_equal(y, x)
    address = y.ctypes.data
    del y
    assert pyconv.buffer_cache_info()["cached_bytes"] >= x.nbytes
    y1 = F.max_pool2d(x, 1, data_format="NHWC")
    assert y1.ctypes.data == address  # the same memory, already mapped
    y2 = F.max_pool2d(x, 1, data_format="NHWC")  # while y1 lives: other memory
    assert not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, y2)
    del y1, y2
    pyconv.release_memory()
    assert pyconv.buffer_cache_info()["cached_bytes"] == 0
    limit = pyconv.buffer_cache_info()["limit"]
    try:
        pyconv.set_buffer_cache_limit(0)
        y = F.max_pool2d(x, 1, data_format="NHWC")
        del y
        assert pyconv.buffer_cache_info()["cached_bytes"] == 0
    finally:
        pyconv.set_buffer_cache_limit(limit)
    with pytest.raises(ValueError, match="nbytes"):
        pyconv.set_buffer_cache_limit(-1)
    with pytest.raises(TypeError, match="nbytes"):
        pyconv.set_buffer_cache_limit("1GB")
