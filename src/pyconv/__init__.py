"""pyconv: fast, exact convolutional networks on the CPU.

The hot paths live in the compiled module ``pyconv._core`` (C++, OpenMP, AVX-512/AVX2 chosen
at run time); this package gives them a NumPy API (:mod:`pyconv.functional`) and a Keras-style
layer/model API (:mod:`pyconv.layers`, :class:`Sequential`, ``compile``/``fit``/``predict``).
"""

from __future__ import annotations

import os as _os

# --- OpenMP wait policy -----------------------------------------------------------------------
# A libgomp thread that waits for work (between parallel regions, at a region's end) spins
# before it sleeps, by default 300,000 iterations: about 12 ms on a 2-core EPYC VM. On a shared
# machine the spinning threads take the cores from the work of this and other processes (a
# training step measured 5-10x slower beside busy loops or another multi-threaded job), and a
# short spin (3,000: 0.1 ms) made batch-1 predict 5-10x slower in most processes even on a
# quiet machine (likely both threads stacked on one core, one spinning while the other waits
# to run; longer spins keep both cores busy, hence placed apart). Sleeping at once
# (passive) costs a wake-up per region (about 0.1 ms more on a quiet machine's batch-1
# predict) and never more: bench/contention.py, README "Threads". libgomp reads
# OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it is loaded (with _core, just below), so pyconv
# sets the policy here where the user set neither, and removes it from the environment again
# once read, so that programs this one starts keep their own defaults. A user's setting of
# either variable is kept as it is.
_WAIT_DEFAULT = ("OMP_WAIT_POLICY", "passive")
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _mapped_libgomp() -> set[str]:
    """Paths of the OpenMP runtimes (libgomp) already mapped into this process."""
    try:
        with open("/proc/self/maps") as f:
            return {
                ln.split(None, 5)[5].strip() for ln in f if "libgomp" in ln and ln.count(" ") >= 5
            }
    except (OSError, IndexError):
        return set()


def _libgomp_of_core() -> str | None:
    """The file of the libgomp that _core's OpenMP calls go to (None where not found)."""
    try:
        import ctypes

        core = ctypes.CDLL(_core.__file__, mode=_os.RTLD_NOLOAD | _os.RTLD_LAZY)
        fn = ctypes.cast(core.GOMP_parallel, ctypes.c_void_p).value

        class DlInfo(ctypes.Structure):
            _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                        ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]  # fmt: skip

        info = DlInfo()
        if not ctypes.CDLL(None).dladdr(ctypes.c_void_p(fn), ctypes.byref(info)):
            return None
        return _os.path.realpath(info.fname.decode())
    except (OSError, AttributeError, ValueError, TypeError):
        return None


_user_wait = {k: _os.environ[k] for k in _WAIT_VARS if k in _os.environ}
_gomp_before = {_os.path.realpath(p) for p in _mapped_libgomp()}
if not _user_wait:
    _os.environ[_WAIT_DEFAULT[0]] = _WAIT_DEFAULT[1]
try:
    from . import _core
finally:
    if not _user_wait:
        del _os.environ[_WAIT_DEFAULT[0]]
from ._shapes import as_int as _as_int  # noqa: E402

__version__ = "0.1.0"

_ISAS = ("avx512", "avx2", "generic")


def available_isas() -> list[str]:
    """Instruction sets this CPU can run, best first (always ends with ``"generic"``)."""
    return list(_core.available_isas())


def get_isa() -> str:
    """The instruction set the kernels currently use."""
    return _core.get_isa()


def set_isa(name: str) -> None:
    """Force the kernels onto ``name`` ("avx512", "avx2" or "generic"), e.g. to test a lower path.

    Raises ValueError for an unknown name or one this CPU cannot run.
    """
    if not isinstance(name, str):
        raise TypeError(f"isa name must be a str, got {type(name).__name__}")
    if name not in _ISAS:  # checked here too: the core reads it as a C string ("avx2\0x")
        raise ValueError(f"isa must be one of 'avx512', 'avx2', 'generic', got {name!r}")
    _core.set_isa(name)


def get_num_threads() -> int:
    """Number of OpenMP threads each op uses (defaults to the number of cores, or as many of
    them as can start; 1 in a child process forked after ops ran on several threads)."""
    return _core.get_num_threads()


# OpenMP starts every thread asked for, and a failed thread start ends the process: far more
# threads than any machine has cores is refused outright, and a count below that is first
# tried by the core (it starts and ends that many threads) before any op uses it.
MAX_THREADS = 1024


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1 to MAX_THREADS = 1024) in every following op (from the next call).

    Raises RuntimeError, keeping the previous count, when ``n`` threads cannot start (a
    memory or process limit), and for ``n > 1`` in a child process forked after ops ran on
    several threads: the OpenMP runtime cannot start threads again there, so such a child
    runs every op on one thread (use the "spawn" or "forkserver" multiprocessing start method
    for threaded workers).
    """
    n = _as_int(n, "num_threads")
    if n < 1:
        raise ValueError(f"num_threads must be >= 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"num_threads must be <= {MAX_THREADS}, got {n}")
    _core.set_num_threads(n)


def _check_default_threads() -> None:
    """The default thread count is tried at import; say so when fewer threads could start."""
    requested, got = _core.default_num_threads_requested(), _core.get_num_threads()
    if got < requested:
        import warnings

        warnings.warn(
            f"pyconv: {requested} threads could not start (a memory or process limit?); "
            f"using {got}. pyconv.set_num_threads(n) chooses another count.",
            RuntimeWarning,
            stacklevel=3,
        )


_check_default_threads()


def _wait_policy_info() -> dict:
    gomp = _libgomp_of_core()
    if gomp is not None and gomp in _gomp_before:
        source = "runtime loaded before pyconv"
    elif gomp is None and _gomp_before:
        source = "unknown"
    else:
        source = "environment" if _user_wait else "pyconv default"
    settings = dict([_WAIT_DEFAULT]) if source == "pyconv default" else dict(_user_wait)
    return {"openmp_runtime": gomp, "source": source, "settings": settings}


_WAIT_INFO = _wait_policy_info()


def thread_info() -> dict:
    """How pyconv's threads run: ``num_threads``; ``openmp_runtime``, the libgomp file its
    OpenMP calls go to; and how that runtime's threads wait for work, which libgomp fixes
    from ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` when it is loaded:

    - ``wait_source`` "pyconv default": neither was set, pyconv set ``OMP_WAIT_POLICY=passive``
      (waiting threads sleep at once, so they give the cores back under contention);
    - "environment": the user's setting (``wait_settings``) was kept;
    - "runtime loaded before pyconv": another library (e.g. PyTorch, which ships a libgomp
      of the same name that pyconv then shares) loaded libgomp before pyconv was imported,
      with the environment of that time (its default spins for milliseconds unless
      ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` was set); ``wait_settings`` shows the
      variables set now. Import pyconv first, or set the variable before Python starts;
    - "unknown": the runtime could not be identified.
    """
    return {
        "num_threads": get_num_threads(),
        "openmp_runtime": _WAIT_INFO["openmp_runtime"],
        "wait_source": _WAIT_INFO["source"],
        "wait_settings": dict(_WAIT_INFO["settings"]),
    }


def set_conv_algorithm(name: str) -> None:
    """How 3x3 stride-1 convolutions run: "auto" (default: Winograd F(2x2, 3x3) where it
    measured faster, from 32 to 128 channels), "direct" or "winograd" (wherever it applies),
    e.g. to compare them or to get the direct kernel's rounding.

    Either way, a call whose input, weights or gradient hold NaN, infinity or values large
    enough that Winograd's transforms could overflow float32 (where the direct kernel would
    not) runs on the direct kernel, so such values never give algorithm-dependent results.
    """
    if not isinstance(name, str):
        raise TypeError(f"algorithm name must be a str, got {type(name).__name__}")
    _core.set_conv_algorithm(name)


def get_conv_algorithm() -> str:
    return _core.get_conv_algorithm()


def set_buffer_cache_limit(nbytes: int) -> None:
    """Keep at most ``nbytes`` of freed op outputs for reuse (default 1 GiB; 0 disables).

    pyconv's ops return arrays on cached buffers: when one is freed its memory is kept for
    the next output of the same size, which saves the page faults of fresh memory (15-20%
    of a training step). Idle buffers count toward the process's memory until reused or
    released.
    """
    nbytes = _as_int(nbytes, "nbytes")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    _core.set_buffer_cache_limit(min(nbytes, 2**63 - 1))  # beyond: no limit either way


def buffer_cache_info() -> dict:
    """{"cached_bytes": idle buffer bytes held for reuse, "limit": the cap}."""
    return {"cached_bytes": _core.buffer_cache_bytes(), "limit": _core.buffer_cache_limit()}


def release_memory() -> None:
    """Free the idle cached buffers and this thread's kernel workspaces."""
    _core.release_buffer_cache()
    _core.release_workspace()


def _apply_isa_env() -> None:
    want = _os.environ.get("PYCONV_ISA", "").strip().lower()
    if not want:
        return
    if want not in _ISAS:
        raise ImportError(f"PYCONV_ISA must be one of {', '.join(_ISAS)}; got {want!r}")
    if want not in available_isas():
        raise ImportError(
            f"PYCONV_ISA={want} but this CPU only supports {', '.join(available_isas())}"
        )
    _core.set_isa(want)


_apply_isa_env()

from . import (  # noqa: E402
    activations,
    augment,
    callbacks,
    datasets,
    functional,
    graph,
    inference,
    initializers,
    layers,
    losses,
    metrics,
    models,
    optimizers,
    regularizers,
    utils,
    zoo,
)
from .inference import get_inference_fusion, set_inference_fusion  # noqa: E402
from .layers import *  # noqa: E402, F403  (Keras-style: pyconv.Conv2D as well as pyconv.layers.Conv2D)
from .models import Model, Sequential, load_model  # noqa: E402
from .saving import ModelFileError  # noqa: E402
from .utils import clear_session, set_random_seed  # noqa: E402

__all__ = [
    "Model",
    "ModelFileError",
    "Sequential",
    "__version__",
    "activations",
    "augment",
    "available_isas",
    "buffer_cache_info",
    "release_memory",
    "set_buffer_cache_limit",
    "set_conv_algorithm",
    "callbacks",
    "zoo",
    "datasets",
    "clear_session",
    "functional",
    "graph",
    "get_conv_algorithm",
    "get_inference_fusion",
    "get_isa",
    "inference",
    "get_num_threads",
    "initializers",
    "layers",
    "load_model",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "regularizers",
    "set_inference_fusion",
    "set_isa",
    "set_num_threads",
    "set_random_seed",
    "thread_info",
    "utils",
    *layers.__all__,
]


def __getattr__(name):
    # pyconv.onnx needs the optional onnx package: imported on first use only
    if name == "onnx":
        import importlib

        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module 'pyconv' has no attribute {name!r}")
