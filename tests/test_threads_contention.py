"""The OpenMP wait policy pyconv sets at import (waiting threads sleep rather than spin, so
they give the cores back on a shared machine), kept out of the user's way: a user's OMP_WAIT_POLICY or
GOMP_SPINCOUNT wins, programs started later do not inherit pyconv's default, and
pyconv.thread_info() says when the runtime was loaded before pyconv and so kept its own.

Each case runs in a fresh interpreter: libgomp reads these variables once, when it is loaded.
OMP_DISPLAY_ENV=verbose makes libgomp print the spin count it took, so the tests check the
runtime itself, not only pyconv's bookkeeping. No timing here (speed lives in
bench/contention.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import pyconv

WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

REPORT = """
import json, os, pyconv
print(json.dumps({"info": pyconv.thread_info(),
                  "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}))
"""


def run(code: str, **env) -> tuple[dict, str]:
    """(the JSON the code printed last, libgomp's spin count from OMP_DISPLAY_ENV) of code run
    in a fresh interpreter with the wait variables removed, then ``env`` set."""
    full = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    # the pyconv under test, also where PYTHONPATH names it relative to the checkout
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyconv.__file__)))
    path = os.pathsep.join(p for p in (here, full.get("PYTHONPATH")) if p)
    full.update(env, OMP_DISPLAY_ENV="verbose", PYTHONPATH=path)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert out.returncode == 0, out.stderr
    spins = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", out.stderr)
    assert len(spins) == 1, out.stderr  # one runtime, loaded once, displayed once
    return json.loads(out.stdout.strip().splitlines()[-1]), spins[0]


def test_default_spin_count_is_applied_when_unset_and_not_inherited():
    res, spin = run(REPORT)
    assert spin == "0"  # passive; libgomp's own default would be 300000
    assert res["info"]["wait_source"] == "pyconv default"
    assert res["info"]["wait_settings"] == {"OMP_WAIT_POLICY": "passive"}
    assert "libgomp" in res["info"]["openmp_runtime"]
    # removed again once read: a program started from here gets its own runtime's default
    assert res["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}


def test_user_wait_policy_is_kept():
    res, spin = run(REPORT, OMP_WAIT_POLICY="active")
    assert spin == "30000000000"  # libgomp's spin count for an active policy, not ours
    assert res["info"]["wait_source"] == "environment"
    assert res["info"]["wait_settings"] == {"OMP_WAIT_POLICY": "active"}
    assert res["env"] == {"OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": None}


def test_user_spin_count_is_kept():
    res, spin = run(REPORT, GOMP_SPINCOUNT="12345")
    assert spin == "12345"
    assert res["info"]["wait_source"] == "environment"
    assert res["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "12345"}


def test_user_setting_made_in_python_before_import_is_kept():
    res, spin = run('import os; os.environ["GOMP_SPINCOUNT"] = "777"\n' + REPORT)
    assert spin == "777"
    assert res["info"]["wait_source"] == "environment"


def test_runtime_loaded_before_pyconv_is_reported():
    """Another library (PyTorch ships a libgomp.so.1 of its own, which pyconv then shares)
    loaded libgomp first: pyconv's default cannot apply, and thread_info says so."""
    pre = "import ctypes, os; ctypes.CDLL('libgomp.so.1', mode=os.RTLD_GLOBAL)\n"
    res, spin = run(pre + REPORT)
    assert spin == "300000"  # libgomp's default, read before pyconv could set one
    assert res["info"]["wait_source"] == "runtime loaded before pyconv"
    assert res["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}


STEP = """
import hashlib, json, numpy as np, pyconv
from pyconv import zoo
pyconv.set_num_threads(2)
pyconv.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.random((16, 28, 28, 1), dtype=np.float32)
y = rng.integers(0, 10, 16)
m = zoo.mnist_cnn()
m.compile("adam", "sparse_categorical_crossentropy")
for _ in range(2):
    m.train_on_batch(x, y)
h = hashlib.sha256()
for w in m.get_weights():
    h.update(np.ascontiguousarray(w).tobytes())
h.update(np.ascontiguousarray(m.predict(x[:1], verbose=0)).tobytes())
print(json.dumps({"digest": h.hexdigest()}))
"""


def test_results_do_not_depend_on_the_wait_policy():
    """Training steps and a predict on two threads give the same bits whether the threads
    spin (libgomp's default, active) or sleep (passive) while they wait."""
    digests = {
        name: run(STEP, **env)[0]["digest"]
        for name, env in {
            "pyconv default": {},
            "passive": {"OMP_WAIT_POLICY": "passive"},
            "active": {"OMP_WAIT_POLICY": "active"},
            "libgomp default": {"GOMP_SPINCOUNT": "300000"},
        }.items()
    }
    assert len(set(digests.values())) == 1, digests
