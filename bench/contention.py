"""Training steps and batch-1 latency under competing load: pyconv vs PyTorch, side by side.

    python bench/contention.py [--loads quiet,busy,torch,pyconv] [--rounds 2]
                               [--variant LABEL=ENV ...] [--count-regions]

On a shared machine other processes run on the same cores. Each library's thread pool then
competes with them, and threads that spin while they wait (rather than sleep) take cores
from the work. This script starts the load itself, beside the measured process:

- ``busy``: one busy loop per core (plain single-threaded jobs);
- ``torch``: a PyTorch training loop of the MNIST CNN (a second multi-threaded job);
- ``pyconv``: a pyconv training loop of the MNIST CNN (a second multi-threaded job), with
  pyconv's default environment (``--load-env`` changes it).

For each load it measures, in fresh processes, alternating the libraries round by round: a
full training step (forward, loss, backward, Adam) of the lecture CNNs at batch 128 and a
batch-1 ``predict``, and prints quiet and loaded times (median, best) and the slowdown
(loaded median / quiet median) of each library. A pyconv process gets the environment of its
``--variant`` (several variants compare OpenMP wait policies: ``--variant
spin300k=GOMP_SPINCOUNT=300000`` is libgomp's own default, which pyconv used before it set
one), PyTorch's gets the environment this script runs in. The load processes are killed at
the end, also on an error or Ctrl-C (and die with this script if it is killed).

``--count-regions`` instead counts the OpenMP parallel regions (``GOMP_parallel`` calls with
more than one thread) of one training step and one predict, per outlined function, by
preloading a small counting shim (needs a C compiler); names are resolved with ``addr2line``
where pyconv's ``_core`` still has its symbol table (a Release build is stripped: build one
with ``-DCMAKE_BUILD_TYPE=RelWithDebInfo`` for names).

A benchmark, not a test: nothing asserts a speed. Run it under ``flock /tmp/bench.lock`` on a
machine shared with other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NETS = ("mnist_cnn", "cifar10_cnn")
SHAPES = {"mnist_cnn": (28, 28, 1), "cifar10_cnn": (32, 32, 3)}
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


# --- the measured process and the load processes ------------------------------------------
def _make_step(lib, name, batch):
    """A function running one training step of ``name`` in ``lib`` on random data."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((batch, *SHAPES[name]), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    if lib == "pyconv":
        # not train_bench: it imports torch, whose libgomp would then be shared (see README)
        from pyconv import zoo

        model = getattr(zoo, name)()
        model.compile("adam", "sparse_categorical_crossentropy")
        return lambda: model.train_on_batch(x, y)
    import torch  # noqa: F401  (before train_bench, which imports pyconv: see the README)

    sys.path.insert(0, HERE)
    from train_bench import train_steps

    return train_steps("torch", name, x, y)


def _make_predict(lib, name):
    import numpy as np

    x = np.random.default_rng(1).random((1, *SHAPES[name]), dtype=np.float32)
    if lib == "pyconv":
        from pyconv import zoo

        model = getattr(zoo, name)()
        return lambda: model.predict(x, verbose=0)
    import torch

    sys.path.insert(0, HERE)
    from train_bench import build_torch

    net = build_torch(name).eval()
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def call():
        with torch.no_grad():
            net(xt)

    return call


def _set_threads(lib, threads):
    if lib == "pyconv":
        import pyconv

        pyconv.set_num_threads(threads)
    else:
        import torch

        torch.set_num_threads(threads)


def _timed(fn, warmup, max_n, budget, min_n=2):
    """Times of up to max_n calls after warmup calls, stopping after budget seconds (at
    least min_n calls)."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < max_n and (len(times) < min_n or time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def worker(lib, threads, steps, budget, items):
    """Runs in a fresh process: prints {item: [seconds, ...]} as JSON."""
    _set_threads(lib, threads)
    out = {}
    for name in NETS if "train" in items else ():
        step = _make_step(lib, name, 128)
        out[f"train {name}"] = _timed(step, 1, steps, budget)
    for name in NETS if "predict" in items else ():
        out[f"predict {name}"] = _timed(_make_predict(lib, name), 5, 300, budget / 4, 20)
    print(json.dumps(out))


def load_loop(lib, threads):
    """Runs in a load process: trains the MNIST CNN until killed; says 'ready' after a step."""
    _set_threads(lib, threads)
    step = _make_step(lib, "mnist_cnn", 128)
    step()
    print("ready", flush=True)
    while True:
        step()


# --- the driver ---------------------------------------------------------------------------
def _die_with_parent():
    """preexec_fn: the kernel kills this child when the driver dies, even by SIGKILL."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Load:
    """The competing processes of one load kind, started in their own process group."""

    def __init__(self, kind, threads, load_env):
        self.procs = []
        if kind == "quiet":
            return
        if kind == "busy":
            cmds = [[sys.executable, "-c", "while True: pass"]] * (os.cpu_count() or 1)
        else:
            cmds = [[sys.executable, __file__, "--load", kind, "--threads", str(threads)]]
        env = dict(os.environ)
        if kind == "pyconv":
            env.update(load_env)
        for cmd in cmds:
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    env=env,
                    stdout=subprocess.PIPE if kind != "busy" else subprocess.DEVNULL,
                    text=True,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            )
        for p in self.procs:  # a training load counts once its first step has run
            if p.stdout is not None and p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {kind} load did not start (exit {p.poll()})")
        time.sleep(0.5)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []


def _run_worker(lib, env_extra, args):
    env = {k: v for k, v in os.environ.items() if lib == "torch" or k not in WAIT_VARS}
    env.update(env_extra)
    cmd = [sys.executable, __file__, "--worker", lib, "--threads", str(args.threads),
           "--steps", str(args.steps), "--budget", str(args.budget),
           "--items", args.items]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"{lib} worker failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _parse_env(text):
    """'A=1,B=2' -> {'A': '1', 'B': '2'}; '' -> {}."""
    return dict(kv.split("=", 1) for kv in text.split(",") if kv)


def _measure_load(load_kind, columns, args, times, per_worker):
    load = None
    try:
        load = Load(load_kind, args.threads, _parse_env(args.load_env))
        for col, lib, env in columns:
            for item, t in _run_worker(lib, env, args).items():
                times.setdefault((col, load_kind, item), []).extend(t)
                per_worker.setdefault((col, load_kind, item), []).append(1e3 * statistics.median(t))
    finally:
        if load is not None:
            load.stop()


def measure(args):
    variants = {}
    for spec in args.variant or ["default="]:
        label, _, env = spec.partition("=")
        variants[label] = _parse_env(env)
    columns = [(f"pyconv[{label}]", "pyconv", env) for label, env in variants.items()]
    columns.append(("pytorch", "torch", {}))
    loads = args.loads.split(",")
    times = {}  # (column, load, item) -> [seconds]
    per_worker = {}  # (column, load, item) -> [median ms of each worker process]
    print(f"{args.threads} threads, {os.cpu_count()} cores; uptime: {os.getloadavg()}")
    for r in range(args.rounds):  # loads inside rounds: the machine's own noise hits all
        for load_kind in loads:
            _measure_load(load_kind, columns, args, times, per_worker)
        print(f"  round {r + 1} of {args.rounds} done", flush=True)
    items = [f"{kind} {n}" for kind in ("train", "predict") if kind in args.items for n in NETS]
    print("\nms: median (best) of all steps; slowdown: loaded/quiet of the median, of the best")
    head = f"{'item':<22}{'load':<8}" + "".join(f"{c:>34}" for c, _, _ in columns)
    print(head)
    for item in items:
        for load_kind in loads:
            row = f"{item:<22}{load_kind:<8}"
            for col, _, _ in columns:
                t = times[(col, load_kind, item)]
                med, best = 1e3 * statistics.median(t), 1e3 * min(t)
                cell = f"{med:.2f} ({best:.2f})"
                if load_kind != "quiet" and "quiet" in loads:
                    q = times[(col, "quiet", item)]
                    cell += (
                        f" x{med / (1e3 * statistics.median(q)):.2f},{best / (1e3 * min(q)):.2f}"
                    )
                row += f"{cell:>34}"
            print(row)
    if args.verbose:
        print("\nmedian ms of each worker process, in run order")
        for (col, load_kind, item), meds in per_worker.items():
            print(f"{col:<20}{load_kind:<8}{item:<22}" + " ".join(f"{m:.2f}" for m in meds))
    print(f"uptime at end: {os.getloadavg()}")


# --- counting parallel regions ------------------------------------------------------------
SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
typedef void (*par_fn)(void*);
static void (*real_parallel)(par_fn, void*, unsigned, unsigned);
static void (*real_barrier)(void);
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
enum { SLOTS = 512 };
static void* fns[SLOTS];
static long counts[SLOTS];
static long barriers;
static long single;  /* regions asked for one thread: libgomp runs them without waking any */
/* libgomp came in with pyconv's _core, loaded RTLD_LOCAL: RTLD_NEXT may not see it */
static void* real(const char* name) {
  void* f = dlsym(RTLD_NEXT, name);
  if (!f) f = dlsym(dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD), name);
  return f;
}
void GOMP_parallel(par_fn fn, void* data, unsigned n, unsigned flags) {
  if (!real_parallel) real_parallel = real("GOMP_parallel");
  pthread_mutex_lock(&mu);
  if (n == 1) single++;
  else for (int i = 0; i < SLOTS; i++)
    if (fns[i] == (void*)fn || !fns[i]) { fns[i] = (void*)fn; counts[i]++; break; }
  pthread_mutex_unlock(&mu);
  real_parallel(fn, data, n, flags);
}
void GOMP_barrier(void) {
  if (!real_barrier) real_barrier = real("GOMP_barrier");
  __atomic_fetch_add(&barriers, 1, __ATOMIC_RELAXED);
  real_barrier();
}
void shim_reset(void) {
  pthread_mutex_lock(&mu);
  for (int i = 0; i < SLOTS; i++) { fns[i] = 0; counts[i] = 0; }
  barriers = 0; single = 0;
  pthread_mutex_unlock(&mu);
}
/* writes "file offset count" lines, then "barriers N" and "single N" */
void shim_dump(const char* path) {
  FILE* f = fopen(path, "w");
  for (int i = 0; i < SLOTS && fns[i]; i++) {
    Dl_info info;
    if (dladdr(fns[i], &info) && info.dli_fname)
      fprintf(f, "%s %lx %ld\n", info.dli_fname,
              (unsigned long)((char*)fns[i] - (char*)info.dli_fbase), counts[i]);
  }
  fprintf(f, "barriers %ld\nsingle %ld\n", barriers, single);
  fclose(f);
}
"""


def count_child(out_dir, threads):
    """Runs with the shim preloaded: counts the regions of one step and one predict each."""
    import ctypes

    shim = ctypes.CDLL(os.environ["PYCONV_SHIM"])
    _set_threads("pyconv", threads)
    for name in NETS:
        for kind, fn in (("train", _make_step("pyconv", name, 128)),
                         ("predict", _make_predict("pyconv", name))):  # fmt: skip
            fn(), fn()  # warm: first calls may plan, allocate or start the team
            shim.shim_reset()
            fn()
            shim.shim_dump(os.path.join(out_dir, f"{kind} {name}").encode())


def _has_symtab(so, cache={}):  # noqa: B006 (a per-run cache)
    """Whether ``so`` keeps its symbol table (a stripped file has only exported names, and
    addr2line would name the nearest exported function instead)."""
    if so not in cache:
        try:
            res = subprocess.run(["nm", so], capture_output=True, text=True, timeout=60)
            cache[so] = res.returncode == 0 and bool(res.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            cache[so] = False
    return cache[so]


def _symbol(so, offset, cache={}):  # noqa: B006 (a per-run cache)
    if not _has_symtab(so):
        return f"{os.path.basename(so)}+{offset:#x} (stripped: no name)"
    if (so, offset) not in cache:
        try:
            res = subprocess.run(["addr2line", "-f", "-C", "-e", so, hex(offset)],
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
            name, where = (res.stdout.splitlines() + ["??", "??"])[:2]
        except (OSError, subprocess.SubprocessError):
            name, where = "??", "??"
        cache[(so, offset)] = name if name != "??" else f"{os.path.basename(so)}+{offset:#x}"
        if where not in ("??", "??:0", "??:?"):
            cache[(so, offset)] += f"  [{os.path.basename(where.split(' ')[0])}]"
    return cache[(so, offset)]


def count_regions(args):
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = os.path.join(tmp, "shim.c"), os.path.join(tmp, "shim.so")
        with open(src, "w") as f:
            f.write(SHIM)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", src, "-o", lib, "-ldl", "-lpthread"],
                       check=True)  # fmt: skip
        env = dict(os.environ, LD_PRELOAD=lib, PYCONV_SHIM=lib)
        subprocess.run([sys.executable, __file__, "--count-child", tmp, "--threads",
                        str(args.threads)], env=env, check=True)  # fmt: skip
        print(f"OpenMP parallel regions with >1 thread ({args.threads} threads), per call")
        for kind in ("train", "predict"):
            for name in NETS:
                with open(os.path.join(tmp, f"{kind} {name}")) as f:
                    rows = [line.split() for line in f]
                tail = {r[0]: int(r[1]) for r in rows if len(r) == 2}
                regions = [(int(r[2]), _symbol(r[0], int(r[1], 16))) for r in rows if len(r) == 3]
                total = sum(c for c, _ in regions)
                print(f"\n{kind} {name}: {total} regions, {tail['barriers']} explicit "
                      f"barriers, {tail['single']} one-thread regions")  # fmt: skip
                for c, sym in sorted(regions, reverse=True):
                    print(f"  {c:>5}  {sym}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loads", default="quiet,busy,torch,pyconv")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the libraries")
    ap.add_argument("--variant", action="append", help="LABEL=ENV ('A=1,B=2'): a pyconv column")
    ap.add_argument("--load-env", default="", help="environment of the pyconv load, 'A=1,B=2'")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per worker")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per item per worker")
    ap.add_argument("--items", default="train,predict", help="what to time: train, predict")
    ap.add_argument("--verbose", action="store_true", help="each worker's median too")
    ap.add_argument("--count-regions", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--count-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.threads, args.steps, args.budget, args.items)
    elif args.load:
        load_loop(args.load, args.threads)
    elif args.count_child:
        count_child(args.count_child, args.threads)
    elif args.count_regions:
        count_regions(args)
    else:
        # SIGTERM (e.g. from timeout) unwinds like Ctrl-C, so the loads are stopped
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        measure(args)


if __name__ == "__main__":
    main()
