"""The core under hostile conditions (issue 14): forked children, threads that cannot start,
size products that overflow int64, memory that is not there, and values that make one
algorithm or accumulator fail where another does not.

Anything that could crash or hang the interpreter runs in a subprocess with a timeout, so a
regression fails the test instead of killing or stalling pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import ref64
from conftest import assert_close

import pyconv
from pyconv import _shapes
from pyconv import functional as F


def run_script(code: str, timeout: float = 60, **env) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (outside the checkout, so it imports the installed
    pyconv); a hang raises TimeoutExpired, failing the test."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )


# --- fork ----------------------------------------------------------------------------------

FORK_SCRIPT = """
    import multiprocessing as mp
    import numpy as np
    import pyconv
    from pyconv import functional as F
    from pyconv import layers as L

    x = np.random.default_rng(0).standard_normal((4, 12, 12, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((3, 3, 8, 16)).astype(np.float32)
    pyconv.set_random_seed(0)
    model = pyconv.Sequential([L.Conv2D(16, 3, activation="relu", input_shape=(12, 12, 8)),
                               L.MaxPooling2D(2), L.Flatten(), L.Dense(3, activation="softmax")])

    def work(_):
        out = {"threads": pyconv.get_num_threads(),
               "forked": pyconv._core.in_forked_child(),
               "conv": F.conv2d(x, w, data_format="NHWC", weight_format="HWIO"),
               "predict": model.predict(x, verbose=0)}
        try:
            pyconv.set_num_threads(2)
            out["set2"] = "accepted"
        except RuntimeError as e:
            out["set2"] = str(e)
        pyconv.set_num_threads(1)
        return out

    if __name__ == "__main__":
        pyconv.set_num_threads(2)
        if RUN_IN_PARENT:
            parent = work(0)
        with mp.get_context("fork").Pool(2) as pool:
            children = pool.map(work, range(2))
        if RUN_IN_PARENT:
            for child in children:
                np.testing.assert_array_equal(child["conv"], parent["conv"])
                np.testing.assert_array_equal(child["predict"], parent["predict"])
        for child in children:
            print(child["threads"], child["forked"], child["set2"][:40])
"""


def test_forked_child_after_threaded_ops_runs_on_one_thread():
    """A fork-context Pool child of a parent that ran ops on 2 threads used to hang forever
    in libgomp's first parallel region; now it runs every op on one thread, with the
    parent's results, and says so when asked for more threads."""
    out = run_script("RUN_IN_PARENT = True\n" + textwrap.dedent(FORK_SCRIPT))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")[:2]
    assert all(line.startswith("1 True num_threads=2: this process was forke") for line in lines)


def test_forked_child_before_any_threaded_op_keeps_its_threads():
    """Only a fork after the OpenMP threads started is limited: before, the child may use
    them (its own runtime starts them)."""
    out = run_script("RUN_IN_PARENT = False\n" + textwrap.dedent(FORK_SCRIPT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["2 False accepted"] * 2


# --- threads that cannot start -----------------------------------------------------------

LIMIT_AS = """
    import resource
    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
    limit = vm * 1024 + 2**30  # 1 GiB more than now: not 1000 threads' 8 MiB stacks
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
"""

# Under AddressSanitizer (.ci/run's sanitizer step) the sanitizer itself maps an alternate
# signal stack for every new thread, and under the address-space limit that mapping fails
# inside the sanitizer runtime (it aborts) before pyconv's check can answer: these tests run
# in the normal suite only.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
memory_limit_test = pytest.mark.skipif(
    UNDER_ASAN,
    reason="memory-limit test: not under AddressSanitizer (its thread set-up needs"
    " the memory the limit denies)",
)


@memory_limit_test
def test_thread_start_failure_is_a_runtime_error():
    """Under a memory limit, set_num_threads(1000) used to be accepted and the next op ended
    the process ("libgomp: Thread creation failed"); now it raises RuntimeError naming the
    count and keeps the previous count, and ops go on working."""
    code = (
        "import numpy as np\nimport pyconv\nfrom pyconv import functional as F\n"
        + textwrap.dedent(LIMIT_AS)
        + textwrap.dedent("""
            pyconv.set_num_threads(2)
            try:
                pyconv.set_num_threads(1000)
            except RuntimeError as e:
                print("RuntimeError:", e)
            print("threads", pyconv.get_num_threads())
            x = np.ones((2, 8, 16, 16), np.float32)
            print("sum", float(F.conv2d(x, np.ones((8, 8, 3, 3), np.float32)).sum()))
        """)
    )
    out = run_script(code)
    assert out.returncode == 0, out.stderr
    assert "RuntimeError: cannot start num_threads=1000 threads" in out.stdout
    assert "still using 2 threads" in out.stdout
    assert "threads 2" in out.stdout and f"sum {2 * 8 * 14 * 14 * 72.0}" in out.stdout


@memory_limit_test
def test_each_calling_thread_gets_a_team_that_can_start():
    """libgomp keeps a pool of threads per calling thread: 40 Python threads with 16 OpenMP
    threads each (all alive at once) used to end the process under a memory limit. Each
    thread's first call now checks its team can start and otherwise runs on fewer threads,
    with the same results."""
    code = (
        "import threading\nimport numpy as np\nimport pyconv\nfrom pyconv import functional as F\n"
        + textwrap.dedent("""
            x = np.random.default_rng(0).standard_normal((2, 8, 16, 16)).astype(np.float32)
            w = np.random.default_rng(1).standard_normal((8, 8, 3, 3)).astype(np.float32)
            pyconv.set_num_threads(1)
            want = F.conv2d(x, w)
        """)
        + textwrap.dedent(LIMIT_AS)
        + textwrap.dedent("""
            pyconv.set_num_threads(16)
            threading.stack_size(512 * 1024)
            N = 40
            done = threading.Barrier(N, timeout=60)
            turn = [threading.Event() for _ in range(N + 1)]
            results = [None] * N

            def work(i):
                turn[i].wait(60)  # one thread at a time starts its OpenMP team...
                results[i] = F.conv2d(x, w)
                turn[i + 1].set()
                done.wait()  # ...and keeps it until all have run

            threads = [threading.Thread(target=work, args=(i,)) for i in range(N)]
            for t in threads:
                t.start()
            turn[0].set()
            for t in threads:
                t.join()
            assert all(np.array_equal(r, want) for r in results)
            print("ok")
        """)
    )
    out = run_script(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@memory_limit_test
def test_default_thread_count_that_cannot_start_is_reduced_with_a_warning():
    """OMP_NUM_THREADS=1000 under a memory limit: the import warns and uses as many threads
    as can start, instead of the first op ending the process."""
    code = (
        textwrap.dedent(LIMIT_AS)
        + "import warnings\nwarnings.simplefilter('always')\n"
        + "import numpy as np\nimport pyconv\nfrom pyconv import functional as F\n"
        + "n = pyconv.get_num_threads()\nassert 1 <= n < 1000, n\n"
        + "print(float(F.max_pool2d(np.ones((1, 2, 4, 4), np.float32), 2).sum()))\n"
    )
    out = run_script(code, OMP_NUM_THREADS="1000")
    assert out.returncode == 0, out.stderr
    assert "1000 threads could not start" in out.stderr
    assert out.stdout.strip() == "8.0"


# --- size products that overflow int64 -----------------------------------------------------

OVERFLOW_SCRIPT = """
    import itertools
    import numpy as np
    from pyconv import _core

    def zeros_view(shape):
        # a writeable output view of any logical size backed by one float (zero strides)
        return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, (0,) * 4,
                                               writeable=True)

    def ones_view(shape):
        return np.broadcast_to(np.float32(1), shape)

    def expect_refusal(call, name):
        try:
            call()
        except (ValueError, MemoryError):
            return
        raise AssertionError(f"{name}: accepted")

    P, S = 2**31 - 1, 2**20
    x = np.ones((1, 1, 2, 2), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    big = (2 + 2 * P - 1) // S + 1  # output size of the padded 2**32 x 2**32 input

    # padded input 2**32 x 2**32 = 2**64 floats: the product wrapped to 0 and the packing
    # wrote past a tiny workspace (a segfault)
    expect_refusal(lambda: _core.conv2d_forward(x, w, None, zeros_view((1, 1, big, big)),
                                                S, S, P, P, P, P, 1, 1, 1), "forward pads")
    expect_refusal(lambda: _core.conv2d_backward_weight(
        ones_view((1, 1, big, big)), x, np.zeros((1, 1, 1, 1), np.float32), None,
        S, S, P, P, P, P, 1, 1, 1), "backward-weight pads")
    expect_refusal(lambda: _core.conv2d_backward_data(
        ones_view((1, 2**20, big, big)), ones_view((2**20, 1, 1, 1)), np.zeros_like(x),
        S, S, P, P, P, P, 1, 1, 1), "backward-data")
    # geometry ints beyond int64 arithmetic's comfort
    for huge in (2**31, 2**62, 2**63 - 1):
        expect_refusal(lambda: _core.conv2d_forward(
            x, w, None, zeros_view((1, 1, 2, 2)), huge, 1, 0, 0, 0, 0, 1, 1, 1), "stride")
        expect_refusal(lambda: _core.conv2d_forward(
            x, ones_view((1, 1, 3, 3)), None, zeros_view((1, 1, 2, 2)), 1, 1, 1, 1, 1, 1,
            huge, 1, 1), "dilation")
        expect_refusal(lambda: _core.max_pool2d_forward(
            x, zeros_view((1, 1, 1, 1)), huge, huge, 1, 1, 0, 0, 0, 0), "pool kernel")
        expect_refusal(lambda: _core.avg_pool2d_forward(
            x, zeros_view((1, 1, 2**20, 1)), 1, 1, huge, 1, 0, 0, 0, 0, True), "pool stride")
        expect_refusal(lambda: _core.avg_pool2d_backward(
            ones_view((1, 1, 1, 1)), np.zeros_like(x), 2, 2, 1, 1, huge, huge, 0, 0, True),
            "pool padding")

    # outputs of absurd sizes
    for shape in ([2**40, 2**40], [2**62, 4], [-1, 2], [2**31] * 4):
        expect_refusal(lambda: _core.empty(shape), f"empty {shape}")

    # Random geometry over huge broadcast inputs: every call either runs (only where its
    # buffers are small) or raises ValueError/MemoryError; none may crash.
    rng = np.random.default_rng(SEED)
    ints = [0, 1, 2, 3, 2**16, 2**20, 2**31 - 1, 2**31, 2**40, 2**62, 2**63 - 1, -1]
    dims = [1, 2, 3, 2**10, 2**20, 2**30]
    tried = 0
    while tried < 300:
        n, c, h, wd = (int(rng.choice(dims)) for _ in range(4))
        if n * c * h * wd > 2**60:
            continue
        s, p, d = (int(rng.choice(ints)) for _ in range(3))
        k = int(rng.choice([1, 2, 3, 2**20]))
        o = int(rng.choice([1, 2, 2**20]))
        if o * c * k * k > 2**60:
            continue
        xs = ones_view((n, c, h, wd))
        ws = ones_view((o, c, k, k))
        if not (1 <= s < 2**31 and 0 <= p < 2**31 and 1 <= d < 2**31):
            oh = ow = 1
        else:
            span_h, span_w = h + 2 * p - (k - 1) * d, wd + 2 * p - (k - 1) * d
            if span_h < 1 or span_w < 1:
                oh = ow = 1
            else:
                oh, ow = (span_h - 1) // s + 1, (span_w - 1) // s + 1
                # a valid call whose buffers are real but large would run (or allocate
                # gigabytes): only those that must overflow are tried
                padded = n * c * (h + 2 * p) * (wd + 2 * p)
                if n * o * oh * ow > 2**16 or (2**20 < padded < 2**63):
                    continue
        if n * o * oh * ow > 2**60:
            continue
        tried += 1
        y = zeros_view((n, o, oh, ow))
        calls = [lambda: _core.conv2d_forward(xs, ws, None, y, s, s, p, p, p, p, d, d, 1)]
        if n * c * h * wd <= 2**16:  # the gradients loop over every pixel of x
            gy = ones_view((n, o, oh, ow))
            calls += [
                lambda: _core.conv2d_backward_data(gy, ws, zeros_view(xs.shape), s, s, p, p, p,
                                                   p, d, d, 1),
                lambda: _core.conv2d_backward_weight(gy, xs, zeros_view(ws.shape),
                                                     np.zeros(o, np.float32), s, s, p, p, p, p,
                                                     d, d, 1),
                lambda: _core.max_pool2d_forward(xs, zeros_view((n, c, oh, ow)), k, k, s, s, p,
                                                 p, p, p),
                lambda: _core.avg_pool2d_backward(ones_view((n, c, oh, ow)), zeros_view(xs.shape),
                                                  k, k, s, s, p, p, p, p, True),
            ]
        for call in calls:
            try:
                call()
            except (ValueError, MemoryError):
                pass
    print("ok")
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_core_size_overflow_raises_instead_of_crashing(seed):
    """Direct _core calls whose buffer sizes overflow int64 raise ValueError (or
    MemoryError) on every entry point, in a subprocess so that a crash fails the test."""
    out = run_script(f"SEED = {seed}\n" + textwrap.dedent(OVERFLOW_SCRIPT), timeout=120)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    assert out.stdout.strip() == "ok"


# --- memory --------------------------------------------------------------------------------


def test_available_memory_is_read_from_the_system():
    avail = _shapes.available_memory()
    if not os.path.exists("/proc/meminfo"):
        assert avail is None
        return
    assert 0 < avail <= _shapes.MEMORY_BYTES


def test_memory_guard_counts_the_buffers_of_an_op_together(monkeypatch):
    """conv2d needs its padded input, its output and (NCHW) an unpacking buffer at once:
    each is under the available memory, together they are not. The guard used to compare
    each buffer alone with the machine's total RAM, and let this through to the allocator
    (where Linux's overcommit gets the process killed on first touch instead)."""
    pyconv.release_memory()
    monkeypatch.setattr(_shapes, "available_memory", lambda: 80 * 2**20)
    x = np.broadcast_to(np.float32(1), (8, 64, 128, 128))  # 32 MiB, no memory of its own
    w = np.zeros((64, 64, 3, 3), np.float32)
    with pytest.raises(MemoryError, match=r"conv2d \(x shape \(8, 64, 128, 128\)"):
        F.conv2d(x, w, padding=1)
    gy = np.broadcast_to(np.float32(1), (8, 64, 128, 128))
    with pytest.raises(MemoryError, match="conv2d_backward"):
        F.conv2d_backward(gy, x, w, padding=1)
    # one output of 64 MiB (a 64 MiB view in, no memory of its own)
    monkeypatch.setattr(_shapes, "available_memory", lambda: 40 * 2**20)
    with pytest.raises(MemoryError, match=r"an output of shape \(16, 64, 128, 128\)"):
        F.max_pool2d(np.broadcast_to(np.float32(1), (16, 64, 128, 128)), 1)
    # the float32 copy of a float64 input is a buffer too
    with pytest.raises(MemoryError, match=r"the float32 copy of x \(shape \(16, 64, 128, 128\)"):
        F.max_pool2d(np.broadcast_to(1.0, (16, 64, 128, 128)), 1)
    # memory this thread's workspaces and the buffer cache hold counts as available
    monkeypatch.setattr(pyconv._core, "workspace_bytes", lambda: 2**30)
    _shapes.check_memory(300 * 2**20, "a test")
    # small ops never read /proc/meminfo
    monkeypatch.setattr(_shapes, "available_memory", lambda: pytest.fail("read for a small op"))
    F.conv2d(np.ones((2, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32))


# --- accumulation and algorithm choice ---------------------------------------------------


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_average_pooling_sums_in_double(fmt, isa):
    """A float32 sum stops at 2**24 times its terms: the global average of 8192 x 8192 ones
    was 0.25. Both kernel paths (channel planes and channels-last rows), every ISA."""
    shape = (1, 1, 8192, 8192) if fmt == "NCHW" else (1, 8192, 8192, 1)
    x = np.broadcast_to(np.float32(1), shape)
    assert F.global_avg_pool2d(x, data_format=fmt).tolist() == [[1.0]]
    y = F.avg_pool2d(np.broadcast_to(np.float32(0.1), shape), (8192, 4096), data_format=fmt)
    np.testing.assert_allclose(y.ravel(), [0.1, 0.1], rtol=1e-7)


def test_average_pooling_of_large_windows_matches_reference(isa, rng):
    """Windows of more than 256 cells sum in double, channels in blocks of 64: a count that
    is not a multiple of that, partial windows at the padded edges, both layouts."""
    x = rng.standard_normal((2, 20, 21, 70)).astype(np.float32)  # NHWC, 70 channels
    xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    ref = ref64.avg_pool2d(xc, (17, 18), (3, 3), (8, 8, 9, 9), False, False)
    y = F.avg_pool2d(x, (17, 18), 3, (8, 9), count_include_pad=False, data_format="NHWC")
    assert_close(y.transpose(0, 3, 1, 2), ref, rtol=1e-6)
    assert_close(F.avg_pool2d(xc, (17, 18), 3, (8, 9), count_include_pad=False), ref, rtol=1e-6)


def test_batch_norm_of_huge_values_is_finite(isa, rng):
    """Block sums of 256 values of 1e37 overflowed float32 (mean inf, output NaN)."""
    x = (rng.standard_normal((600, 3)) * 1e37).astype(np.float32)
    y, mean, var = F.batch_norm(x, epsilon=1e-3)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-3)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-5)
    assert np.isinf(var).all()  # the variance itself is beyond float32
    assert_close(y, ref, rtol=1e-5)


def _conv_both_ways(x, w, gy, pad=1):
    """(forward, grad_x, grad_w) with the direct kernel and with Winograd forced."""
    previous = pyconv.get_conv_algorithm()
    results = []
    try:
        for algo in ("direct", "winograd"):
            pyconv.set_conv_algorithm(algo)
            y = F.conv2d(x, w, padding=pad)
            gx, gw, _ = F.conv2d_backward(gy, x, w, padding=pad)
            results.append((y, gx, gw))
    finally:
        pyconv.set_conv_algorithm(previous)
    return results


def _same_values(a, b, what):
    """Equal NaN and infinity patterns; finite values equal to float32 rounding."""
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{what}: NaN pattern")
    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=f"{what}: -inf")
    fin = np.isfinite(a)
    if fin.any():
        np.testing.assert_allclose(a[fin], b[fin], rtol=1e-4, atol=1e-4 * np.abs(b[fin]).max())


@pytest.mark.parametrize("kind", ["inf", "nan", "huge"])
def test_winograd_gives_the_direct_results_for_extreme_values(kind, isa, rng):
    """Winograd turned +inf into NaN and overflowed inputs near 1e38 that the direct kernel
    handles, so results depended on the batch size (which decides the algorithm under
    "auto"). Now such values run on the direct kernel, forward and both gradients."""
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    w = (rng.standard_normal((8, 8, 3, 3)) * 1e-3).astype(np.float32)
    gy = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    if kind == "huge":
        x = (np.sign(x) * 1e38).astype(np.float32)
    else:
        x[1, 3, 4, 5] = np.inf if kind == "inf" else np.nan
        gy[0, 2, 7, 1] = -np.inf if kind == "inf" else np.nan
    (yd, gxd, gwd), (yw, gxw, gww) = _conv_both_ways(x, w, gy)
    if kind == "huge":
        assert np.isfinite(yd).all()
    else:
        assert np.isinf(yd).any() or np.isnan(yd).any()
    _same_values(yw, yd, "forward")
    _same_values(gxw, gxd, "grad_x")
    _same_values(gww, gwd, "grad_w")


def test_winograd_still_runs_for_ordinary_values(rng):
    """The fallback is for extreme values only: ordinary ones keep Winograd's rounding,
    which differs from the direct kernel's in the last bits."""
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    (yd, gxd, gwd), (yw, gxw, gww) = _conv_both_ways(x, w, gy)
    assert not np.array_equal(yd, yw) and not np.array_equal(gwd, gww)
    assert_close(yw, yd, rtol=1e-4)
    assert_close(gww, gwd, rtol=1e-4)


def test_max_pool_nan_propagates(isa):
    """Documented: a NaN in a max-pooling window is the window's result (PyTorch's rule),
    and its gradient goes to the NaN's position."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = F.max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 1, 1] == 15
    gx = F.max_pool2d_backward(np.ones_like(y), x, 2)
    assert gx[0, 0, 0, 1] == 1 and gx[0, 0, 0, 0] == 0
