"""Reliability (issue 7): interrupted training, exact resume, flat memory, threads, and the
determinism promised in the README's "Guarantees" section (each claim there has a test here).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile

import numpy as np
import pytest

import pyconv
from pyconv import functional as F
from pyconv import gradcam
from pyconv import layers as L
from pyconv.callbacks import Callback, LearningRateScheduler, ModelCheckpoint

EPOCHS, BATCH = 4, 8


# --- a small seeded training run with every source of state that resuming must restore ----


def make_model(seed=0):
    """Conv -> BN -> pool -> dropout -> dense -> dropout -> softmax, Adam (moments matter)."""
    pyconv.set_random_seed(seed)
    pyconv.clear_session()  # the same layer names (optimizer slots are keyed by them)
    model = pyconv.Sequential(
        [
            L.Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 1)),
            L.BatchNormalization(),
            L.MaxPooling2D(2),
            L.Dropout(0.25),
            L.Flatten(),
            L.Dense(8, activation="relu"),
            L.Dropout(0.25),
            L.Dense(3, activation="softmax"),
        ]
    )
    model.compile(pyconv.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    return model


def data(n=48):
    rng = np.random.default_rng(7)
    return rng.standard_normal((n, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, n)


STEPS = -(-int(48 * 0.75) // BATCH)  # training steps per epoch (validation_split=0.25)


def schedule():
    """A learning rate that depends on the epoch: resuming must continue it."""
    return LearningRateScheduler(lambda epoch, lr: 0.01 * 0.7**epoch)


def fit(model, epochs=EPOCHS, initial_epoch=0, callbacks=()):
    x, y = data()
    return model.fit(
        x, y, batch_size=BATCH, epochs=epochs, initial_epoch=initial_epoch, shuffle=True,
        validation_split=0.25, callbacks=[schedule(), *callbacks], verbose=0,
    )  # fmt: skip


def assert_same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for i, (u, v) in enumerate(zip(wa, wb)):
        np.testing.assert_array_equal(u, v, err_msg=f"weight {i} ({a.weights[i].name})")


def joined(*histories) -> dict:
    out: dict = {}
    for h in histories:
        for k, v in h.history.items():
            out.setdefault(k, []).extend(v)
    return out


class Recorder(Callback):
    """Copies of the weights and optimizer state after every step and every epoch."""

    def on_train_begin(self, logs=None):
        self.steps, self.epochs = [], []

    def _state(self):
        opt = self.model.optimizer
        slots = {k: {s: a.copy() for s, a in d.items()} for k, d in opt.slots.items()}
        return self.model.get_weights(), opt.iterations, slots

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self._state())

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(self._state())


class Interrupt(Callback):
    """Raise KeyboardInterrupt from ``hook`` at (epoch, step) as a Ctrl-C would."""

    def __init__(self, epoch, step=0, hook="on_train_batch_end"):
        super().__init__()
        self.at, self.hook, self.epoch = (epoch, step), hook, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.hook == "on_train_batch_end" and (self.epoch, batch) == self.at:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if self.hook == "on_epoch_end" and epoch == self.at[0]:
            raise KeyboardInterrupt


def assert_state(model, state, trainable_only=False):
    weights, iterations, slots = state
    assert model.optimizer.iterations == iterations
    variables = model.weights
    for var, w in zip(variables, weights, strict=True):
        if trainable_only and var not in model.trainable_weights:
            continue
        np.testing.assert_array_equal(var.value, w, err_msg=var.name)
    assert slots.keys() == model.optimizer.slots.keys()
    for name, d in slots.items():
        for s, a in d.items():
            np.testing.assert_array_equal(model.optimizer.slots[name][s], a, err_msg=name + s)


def assert_usable(model):
    """Finite weights, no gradient left behind; predict, evaluate and fit still work."""
    x, y = data()
    for v in model.weights:
        assert np.isfinite(v.value).all(), v.name
        assert v.grad is None, f"{v.name} kept a gradient"
    assert np.isfinite(model.predict(x)).all()
    assert np.isfinite(model.evaluate(x, y, verbose=0)).all()
    h = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(h.history["loss"]).all()


# --- 1. interrupted training --------------------------------------------------------------


@pytest.mark.parametrize("hook", ["on_train_batch_end", "on_epoch_end"])
def test_interrupt_from_a_callback_propagates_and_keeps_the_checkpoint(tmp_path, hook):
    """A KeyboardInterrupt in a callback reaches the caller; the model holds exactly the
    state of the last complete step; the last checkpoint is intact, loadable and holds the
    state of the end of its epoch; the model keeps working."""
    model, rec = make_model(), Recorder()
    path = tmp_path / "ckpt.pyconv"
    stop = Interrupt(epoch=2, step=1, hook=hook)
    with pytest.raises(KeyboardInterrupt):
        fit(model, callbacks=[ModelCheckpoint(path, monitor="loss"), rec, stop])
    steps_done = 2 * STEPS + 2 if hook == "on_train_batch_end" else 3 * STEPS
    assert model.optimizer.iterations == steps_done
    assert_state(model, rec.steps[-1])
    assert model.history.epoch == [0, 1]  # the epochs that completed before the interrupt
    assert os.listdir(tmp_path) == ["ckpt.pyconv"]  # no temporary file left
    loaded = pyconv.load_model(path)
    assert_state(loaded, rec.epochs[-1])  # the end of the last complete epoch
    assert_usable(model)
    assert_usable(loaded)


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_an_exception_inside_a_layer_applies_no_part_of_the_step(monkeypatch, where):
    """A KeyboardInterrupt raised inside a layer's forward or backward (here as a direct
    raise) leaves every trainable weight, the optimizer slots and the step count as after
    the previous step, with no gradient left on any variable."""
    model, rec = make_model(), Recorder()
    layer = model.layers[-1] if where == "forward" else model.layers[0]
    real = getattr(layer, where)
    calls = {"n": 0}

    def crash(*args, **kwargs):
        if where == "backward" or args[1]:  # forward: training calls only
            calls["n"] += 1
            if calls["n"] == STEPS + 2:  # the 2nd step of epoch 1
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(layer, where, crash)
    with pytest.raises(KeyboardInterrupt):
        fit(model, callbacks=[rec])
    monkeypatch.undo()
    assert len(rec.steps) == STEPS + 1
    assert_state(model, rec.steps[-1], trainable_only=True)
    assert_usable(model)


def _raise_sigint(times):
    for _ in range(times):
        signal.raise_signal(signal.SIGINT)


@pytest.mark.skipif(not hasattr(signal, "raise_signal"), reason="needs signal.raise_signal")
@pytest.mark.parametrize(
    ("where", "times", "steps_done"),
    [("forward", 1, 5), ("optimizer", 1, 5), ("forward", 2, 4), ("optimizer", 2, 5)],
)
def test_ctrl_c_is_held_until_the_step_is_complete(monkeypatch, where, times, steps_done):
    """A real SIGINT (Ctrl-C) arriving in the middle of step 5 (in a layer's forward, or
    between two variables of the optimizer update) is raised only once the step is fully
    applied: the model equals an uninterrupted run after 5 steps. A second Ctrl-C stops at
    once, but never inside the optimizer update (nothing half-applied either way). The
    default SIGINT handler is back afterwards."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("the test runner replaced Python's SIGINT handler")
    reference = Recorder()
    fit(make_model(), epochs=2, callbacks=[reference])

    model = make_model()
    calls = {"n": 0}
    if where == "forward":
        layer = model.layers[-1]
        real = layer.forward

        def patched(x, training):
            if training:
                calls["n"] += 1
                if calls["n"] == 5:
                    _raise_sigint(times)
            return real(x, training)

        monkeypatch.setattr(layer, "forward", patched)
    else:
        opt = model.optimizer
        real = opt._update
        n_vars = len(model.trainable_weights)

        def patched(var, g, lr):
            calls["n"] += 1
            if calls["n"] == 4 * n_vars + 2:  # step 5, after its first variable
                _raise_sigint(times)
            return real(var, g, lr)

        monkeypatch.setattr(opt, "_update", patched)
    with pytest.raises(KeyboardInterrupt):
        fit(model)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert model.optimizer.iterations == steps_done
    assert_state(model, reference.steps[steps_done - 1], trainable_only=True)
    assert_usable(model)


def test_interrupt_during_a_checkpoint_save_keeps_the_previous_file(tmp_path, monkeypatch):
    """Ctrl-C while ModelCheckpoint writes epoch 3 leaves the epoch-2 file byte for byte,
    loadable, with no temporary file beside it; the model stays usable."""
    path = tmp_path / "ckpt.pyconv"
    real = np.lib.format.write_array
    saved = {}

    class Arm(Callback):  # runs after ModelCheckpoint
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                saved["bytes"] = path.read_bytes()  # the epoch-2 checkpoint

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                calls = {"n": 0}

                def crash(*args, **kwargs):
                    calls["n"] += 1
                    if calls["n"] == 4:
                        raise KeyboardInterrupt
                    return real(*args, **kwargs)

                monkeypatch.setattr(np.lib.format, "write_array", crash)

    model = make_model()
    with pytest.raises(KeyboardInterrupt):
        fit(model, callbacks=[ModelCheckpoint(path, monitor="loss"), Arm()])
    monkeypatch.undo()
    assert path.read_bytes() == saved["bytes"]
    assert os.listdir(tmp_path) == ["ckpt.pyconv"]
    assert pyconv.load_model(path).optimizer.iterations == 2 * STEPS
    assert_usable(model)


# --- 2. resuming ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["checkpoint", "save"])
def test_resume_equals_the_uninterrupted_run(tmp_path, how):
    """Train 4 epochs in one go; separately train 2, save (ModelCheckpoint or model.save),
    load_model and fit(initial_epoch=2, epochs=4): final weights, optimizer state and the
    history (losses, metrics, validation, learning rate) are bit-identical. Shuffling,
    dropout, batch norm, Adam and an epoch-dependent learning rate all take part."""
    whole = make_model()
    h_whole = fit(whole)

    first = make_model()
    path = tmp_path / "ckpt.pyconv"
    cbs = [ModelCheckpoint(path, monitor="loss")] if how == "checkpoint" else []
    h1 = fit(first, epochs=2, callbacks=cbs)
    if how == "save":
        first.save(path)
    resumed = pyconv.load_model(path)
    h2 = fit(resumed, initial_epoch=2)
    assert_same_weights(whole, resumed)
    assert resumed.optimizer.iterations == whole.optimizer.iterations == EPOCHS * STEPS
    assert resumed.optimizer.learning_rate == whole.optimizer.learning_rate
    assert h2.epoch == [2, 3]
    assert joined(h1, h2) == h_whole.history
    assert len(h_whole.history["learning_rate"]) == EPOCHS


def test_interrupt_then_resume_from_the_last_checkpoint(tmp_path):
    """Ctrl-C in the middle of epoch 3; loading the epoch-2 checkpoint and resuming gives
    the same weights and history as a run that was never interrupted."""
    whole = make_model()
    h_whole = fit(whole)

    model = make_model()
    pattern = str(tmp_path / "ckpt-{epoch}.pyconv")
    with pytest.raises(KeyboardInterrupt):
        fit(model, callbacks=[ModelCheckpoint(pattern, monitor="loss"), Interrupt(2, step=2)])
    h1 = model.history  # the epochs that completed
    assert h1.epoch == [0, 1]
    resumed = pyconv.load_model(tmp_path / "ckpt-2.pyconv")
    h2 = fit(resumed, initial_epoch=2)
    assert_same_weights(whole, resumed)
    assert joined(h1, h2) == h_whole.history


def test_a_loaded_model_continues_the_same_random_streams(tmp_path):
    """Without the generator states in the file the copy would shuffle and drop out
    differently: after save + load, the copy and the original train identically."""
    model = make_model()
    fit(model, epochs=1)
    model.save(tmp_path / "m.pyconv")
    copy = pyconv.load_model(tmp_path / "m.pyconv")
    fit(model, epochs=2, initial_epoch=1)
    fit(copy, epochs=2, initial_epoch=1)
    assert_same_weights(model, copy)


def test_invalid_random_state_in_a_file_is_a_model_file_error(tmp_path):
    """A damaged or foreign generator state is refused with ModelFileError naming it."""
    model = make_model()
    fit(model, epochs=1)
    model.save(tmp_path / "m.pyconv")
    for bad in ({"fit": {"bit_generator": "Evil"}}, {"fit": 3}, [1, 2]):
        with zipfile.ZipFile(tmp_path / "m.pyconv") as zin:
            items = [(i, zin.read(i.filename)) for i in zin.infolist()]
        with zipfile.ZipFile(tmp_path / "bad.pyconv", "w") as zout:
            for item, raw in items:
                if item.filename == "pyconv.json":
                    manifest = json.loads(raw)
                    manifest["rng_state"] = bad
                    raw = json.dumps(manifest).encode()
                zout.writestr(item, raw)
        with pytest.raises(pyconv.ModelFileError, match="bad.pyconv.*random state"):
            pyconv.load_model(tmp_path / "bad.pyconv")


# --- 3. memory --------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Current resident anonymous memory (heap, arrays, workspaces): statm's resident minus
    shared pages. Not the peak (ru_maxrss only grows), and not the file-backed code pages of
    the shared libraries, which the kernel drops and reads back under memory pressure."""
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def settled_rss_bytes() -> int:
    """rss_bytes once garbage is collected and the C allocator has handed its free pages
    back (glibc's malloc_trim): otherwise up to ~20 MiB of freed heap kept for reuse comes
    and goes with the heap's layout, and would hide or fake a leak."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return rss_bytes()


try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def assert_flat_rss(work, warmup, repeats, slack_mib):
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc/self/statm (Linux)")
    for _ in range(warmup):
        work()
    before = settled_rss_bytes()
    for _ in range(repeats):
        work()
    grown = (settled_rss_bytes() - before) / 2**20
    assert grown < slack_mib, f"RSS grew by {grown:.1f} MiB over {repeats} repetitions"


def test_memory_is_flat_over_10000_op_calls():
    """10,000 rounds of conv2d, conv2d_backward, max_pool2d and its backward on small
    arrays keep the resident memory within 2 MiB (a leak of one small array per call would
    add ~40 MiB)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)

    def work():
        y = F.conv2d(x, w, padding=1)
        F.conv2d_backward(y, x, w, padding=1)
        F.max_pool2d_backward(F.max_pool2d(y, 2), y, 2)

    assert_flat_rss(work, warmup=200, repeats=10_000, slack_mib=2)


def test_memory_is_flat_over_repeated_model_lifecycles():
    """Building, compiling, fitting (1 epoch) and predicting with a fresh 1 MiB model 20
    times keeps the resident memory within 2 MiB (each leaked model, with Adam's slots,
    would keep about 3 MiB)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 32)

    def work():
        model = pyconv.Sequential(
            [
                L.Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 1)),
                L.BatchNormalization(),
                L.Dropout(0.2),
                L.Flatten(),
                L.Dense(1024, activation="relu"),
                L.Dense(3, activation="softmax"),
            ]
        )
        model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        model.predict(x)

    assert_flat_rss(work, warmup=3, repeats=20, slack_mib=2)


def test_memory_is_flat_over_repeated_grad_cam_calls():
    """500 Grad-CAM / Grad-CAM++ calls on a batch of 16 keep the resident memory within
    1 MiB (keeping just the 4 KiB of heatmaps of each call would add 2 MiB)."""
    pyconv.set_random_seed(0)
    model = pyconv.Sequential(
        [
            L.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 2)),
            L.Conv2D(3, 3, name="target"),
            L.BatchNormalization(),
            L.ReLU(),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(4, activation="softmax"),
        ]
    )
    x = np.random.default_rng(7).normal(size=(16, 8, 8, 2)).astype(np.float32)
    methods = iter(["gradcam", "gradcam++"] * 1000)
    assert_flat_rss(lambda: gradcam.grad_cam(model, x, method=next(methods)), 10, 500, 1)


# --- 4. threads -------------------------------------------------------------------------------


def run_threads(targets):
    errors = []

    def guard(f):
        try:
            f()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=guard, args=(f,)) for f in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_predict_on_one_model_equals_sequential():
    """Four Python threads calling predict on one model at once (different batches and batch
    sizes) get exactly the sequential results."""
    model = make_model()
    fit(model, epochs=1)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((n, 8, 8, 1)).astype(np.float32) for n in (1, 7, 33, 64)]
    expected = [model.predict(x, batch_size=16) for x in xs]
    results = [[] for _ in xs]

    def worker(i):
        return lambda: [results[i].append(model.predict(xs[i], batch_size=16)) for _ in range(5)]

    run_threads([worker(i) for i in range(len(xs))])
    for got, want in zip(results, expected, strict=True):
        assert len(got) == 5
        for g in got:
            np.testing.assert_array_equal(g, want)


def test_set_num_threads_from_another_thread_while_ops_run():
    """One thread switching the thread count (1, 2, 3, 4) while three others run
    convolutions and pooling: every result still equals the sequential one (each call reads
    the count once, and results do not depend on it)."""
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((2, 16, 12, 12)).astype(np.float32) for _ in range(3)]
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)

    def work(x):
        y = F.conv2d(x, w, padding=1)
        return (y, *F.conv2d_backward(y, x, w, padding=1), F.max_pool2d(y, 2))

    expected = [work(x) for x in xs]
    done = threading.Event()
    mismatches = []

    def compute(i):
        def run():
            for _ in range(15):
                for a, b in zip(work(xs[i]), expected[i], strict=True):
                    if not np.array_equal(a, b):
                        mismatches.append(i)
            done.set()

        return run

    def switch():
        n = 0
        while not done.is_set():
            pyconv.set_num_threads(1 + n % 4)
            n += 1

    before = pyconv.get_num_threads()
    try:
        run_threads([switch, *(compute(i) for i in range(3))])
    finally:
        pyconv.set_num_threads(before)
    assert not mismatches


# --- 5. determinism ---------------------------------------------------------------------------


def _ops(rng):
    """Every kernel family once: conv fwd / bwd-data / bwd-weight / bias (3x3 with 32
    channels: Winograd-eligible; a 1-channel first layer; stride 2; groups; dilation; 1x1 /
    Dense with small and large batches), pooling, batch norm, dropout, affine."""
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    out = []
    convs = [
        (r(4, 32, 14, 14), r(32, 32, 3, 3), dict(padding=1)),
        (r(8, 1, 28, 28), r(8, 1, 3, 3), dict()),
        (r(4, 16, 15, 15), r(24, 16, 3, 3), dict(stride=2, padding="same")),
        (r(2, 8, 10, 10), r(8, 4, 3, 3), dict(groups=2, dilation=2, padding=2)),
        (r(1, 256, 1, 1), r(64, 256, 1, 1), dict()),  # Dense at batch 1
        (r(64, 256, 1, 1), r(64, 256, 1, 1), dict()),
    ]
    for x, w, kw in convs:
        y = F.conv2d(x, w, bias=r(w.shape[0]), **kw)
        out += [y, *F.conv2d_backward(y, x, w, **kw)]
    x = r(8, 16, 16, 16)
    out += [F.max_pool2d(x, 3, 2, 1), F.max_pool2d_backward(r(8, 16, 8, 8), x, 3, 2, 1)]
    out += [F.avg_pool2d(x, 2), F.avg_pool2d_backward(r(8, 16, 8, 8), x, 2)]
    out += [F.global_avg_pool2d(x), F.global_avg_pool2d_backward(r(8, 16), x)]
    rows, c = r(64 * 14 * 14, 32), 32
    y, mean, var = F.batch_norm(rows, r(c), r(c))
    out += [y, mean, var, *F.batch_norm_backward(r(*rows.shape), rows, mean, var, r(c))]
    out += [F.dropout(rows, 0.3, 12345), F.channel_affine(rows, r(c), r(c))]
    return out


def test_kernels_are_bit_identical_for_any_thread_count(isa, conv_algo):
    """Every kernel, on each ISA and with the direct and the Winograd convolution, gives
    bit-identical results with 1, 2, 3 and 4 threads."""
    before = pyconv.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 3, 4):
            pyconv.set_num_threads(n)
            results[n] = _ops(np.random.default_rng(0))
    finally:
        pyconv.set_num_threads(before)
    for n in (2, 3, 4):
        for i, (a, b) in enumerate(zip(results[n], results[1], strict=True)):
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}, {n} threads vs 1")


def test_a_sample_does_not_depend_on_its_batch_with_a_fixed_algorithm(conv_algo):
    """With the convolution algorithm pinned (direct or Winograd), a sample's forward
    output is the same bit for bit whether it is computed alone or in a batch of 64 (under
    "auto" a batch large enough for Winograd rounds differently from a small one)."""
    rng = np.random.default_rng(2)
    cases = [
        (rng.standard_normal((64, 32, 16, 16)), rng.standard_normal((32, 32, 3, 3)), 1),
        (rng.standard_normal((64, 3, 16, 16)), rng.standard_normal((8, 3, 5, 5)), 0),
        (rng.standard_normal((64, 256, 1, 1)), rng.standard_normal((10, 256, 1, 1)), 0),
    ]
    for x, w, pad in cases:
        x, w = x.astype(np.float32), w.astype(np.float32)
        alone = np.concatenate([F.conv2d(x[i : i + 1], w, padding=pad) for i in range(len(x))])
        np.testing.assert_array_equal(F.conv2d(x, w, padding=pad), alone)
    model = make_model()
    xb = data(64)[0]
    np.testing.assert_array_equal(model.predict(xb, batch_size=64), model.predict(xb, 1))


def _seeded_run():
    model = make_model(seed=3)
    history = fit(model, epochs=2)
    return model.get_weights(), history.history


def test_seeded_fit_is_bit_identical_across_runs_and_thread_counts():
    """The same seeded fit (shuffle, dropout, batch norm, Adam) twice with 2 threads and once
    with 1 gives bit-identical weights and histories."""
    before = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(2)
        a, b = _seeded_run(), _seeded_run()
        pyconv.set_num_threads(1)
        c = _seeded_run()
    finally:
        pyconv.set_num_threads(before)
    for other in (b, c):
        for u, v in zip(a[0], other[0], strict=True):
            np.testing.assert_array_equal(u, v)
        assert a[1] == other[1]


_DIGEST_SCRIPT = """
import hashlib, sys
import numpy as np
import pyconv
from pyconv import layers as L
pyconv.set_num_threads(int(sys.argv[1]))
pyconv.set_random_seed(5)
m = pyconv.Sequential([
    L.Conv2D(8, 3, activation="relu", input_shape=(12, 12, 1)), L.BatchNormalization(),
    L.MaxPooling2D(2), L.Dropout(0.3), L.Flatten(), L.Dense(3, activation="softmax")])
m.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
rng = np.random.default_rng(0)
x, y = rng.random((64, 12, 12, 1), np.float32), rng.integers(0, 3, 64)
h = m.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0)
d = hashlib.sha256(repr(h.history).encode())
for w in m.get_weights():
    d.update(w.tobytes())
print(d.hexdigest())
"""


def test_seeded_fit_is_bit_identical_in_fresh_processes():
    """The same seeded script in two fresh interpreters, with 1 and with 3 threads, prints
    the same digest of its weights and history."""
    digests = []
    for n in (1, 3):
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT, str(n)],
            capture_output=True, text=True, cwd=tempfile.gettempdir(),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.strip())
    assert len(digests[0]) == 64 and digests[0] == digests[1]


def test_isa_and_algorithm_paths_agree_to_float32_rounding():
    """What may differ between machines: other ISAs and direct vs Winograd round
    differently, but agree to float32 rounding (1e-4 relative here)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 32, 12, 12)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    isa, algo = pyconv.get_isa(), pyconv.get_conv_algorithm()
    results = []
    try:
        for name in pyconv.available_isas():
            for a in ("direct", "winograd"):
                pyconv.set_isa(name)
                pyconv.set_conv_algorithm(a)
                y = F.conv2d(x, w, padding=1)
                results.append([y, *F.conv2d_backward(y, x, w, padding=1)])
    finally:
        pyconv.set_isa(isa)
        pyconv.set_conv_algorithm(algo)
    for got in results[1:]:
        for a, b in zip(got, results[0], strict=True):
            scale = float(np.abs(b).max())
            assert float(np.abs(a - b).max()) <= 1e-4 * scale
