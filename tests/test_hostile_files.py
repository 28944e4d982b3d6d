"""Hostile and damaged model files: every one is refused with a ModelFileError naming the
file, quickly and without allocating more than the file justifies; nothing else escapes."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import pyconv
from pyconv import layers as L
from pyconv.saving import ModelFileError


def small_model():
    model = pyconv.Sequential(
        [
            pyconv.Input((6, 6, 1)),  # (names fixed: the edits below refer to them)
            L.Conv2D(2, 3, activation="relu", name="conv2d"),
            L.BatchNormalization(name="batch_normalization"),
            L.Dropout(0.1, seed=1, name="dropout"),
            L.Flatten(name="flatten"),
            L.Dense(3, activation="softmax", name="dense"),
        ],
        name="victim",
    )
    model.compile(pyconv.optimizers.Adam(0.01, amsgrad=True), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.standard_normal((4, 6, 6, 1)).astype(np.float32), [0, 1, 2, 0])
    return model


def graph_model():
    inp = pyconv.Input((4,))
    hidden = L.Dense(3, name="hidden")(inp)
    out = L.Dense(2, name="out")(hidden)
    model = pyconv.Model(inp, out, name="graph")
    model.compile("sgd", "mse")
    return model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(manifest, {member name: bytes}) of a valid, trained, compiled model file."""
    path = tmp_path_factory.mktemp("good") / "good.pyconv"
    small_model().save(path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return json.loads(members.pop("pyconv.json")), members


@pytest.fixture(scope="module")
def good_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "graph.pyconv"
    graph_model().save(path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return json.loads(members.pop("pyconv.json")), members


def write(path, manifest, members, raw_manifest=None):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pyconv.json", raw_manifest or json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def refused(path, *match):
    """load_model(path) raises ModelFileError naming the file (and ``match`` if given)."""
    with pytest.raises(ModelFileError) as e:
        pyconv.load_model(path)
    assert str(path) in str(e.value), str(e.value)
    for m in match:
        assert re.search(m, str(e.value)), str(e.value)
    return e.value


def layer(m, name):
    return next(s for s in m["model"]["config"]["layers"] if s["config"]["name"] == name)


def nest(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


# Each edit turns a valid manifest into a hostile one. Names say what the file claims.
MANIFEST_EDITS = {
    "manifest is a list": lambda m: [m],
    "format_version a string": lambda m: m.update(format_version="1"),
    "format_version true": lambda m: m.update(format_version=True),
    "format_version negative": lambda m: m.update(format_version=-1),
    "model a list": lambda m: m.update(model=[1]),
    "model missing": lambda m: m.pop("model"),
    "model class a number": lambda m: m["model"].update(class_name=5),
    "model class unknown": lambda m: m["model"].update(class_name="Evil"),
    "model config a list": lambda m: m["model"].update(config=[]),
    "layers a dict": lambda m: m["model"]["config"].update(layers={"a": 1}),
    "layers a number": lambda m: m["model"]["config"].update(layers=7),
    "layer spec a string": lambda m: m["model"]["config"]["layers"].insert(1, "Dense"),
    "layer spec null": lambda m: m["model"]["config"]["layers"].insert(1, None),
    "layer class unknown": lambda m: layer(m, "dense").update(class_name="os.system"),
    "layer class a list": lambda m: layer(m, "dense").update(class_name=["Dense"]),
    "layer config a list": lambda m: layer(m, "dense").update(config=[1, 2]),
    "units negative": lambda m: layer(m, "dense")["config"].update(units=-5),
    "units zero": lambda m: layer(m, "dense")["config"].update(units=0),
    "units a NaN string": lambda m: layer(m, "dense")["config"].update(units="nan"),
    "units huge": lambda m: layer(m, "dense")["config"].update(units=10**30),
    "units 1e308": lambda m: layer(m, "dense")["config"].update(units=1e308),
    "units a float": lambda m: layer(m, "dense")["config"].update(units=2.5),
    "units a list": lambda m: layer(m, "dense")["config"].update(units=[3]),
    "unexpected layer argument": lambda m: layer(m, "dense")["config"].update(evil=1),
    "kernel_size negative": lambda m: layer(m, "conv2d")["config"].update(kernel_size=[-1, -1]),
    "strides zero": lambda m: layer(m, "conv2d")["config"].update(strides=[0, 0]),
    "padding unknown": lambda m: layer(m, "conv2d")["config"].update(padding="evil"),
    "filters huge": lambda m: layer(m, "conv2d")["config"].update(filters=2**62),
    "activation unknown": lambda m: layer(m, "conv2d")["config"].update(activation="evil"),
    "initializer a number": lambda m: layer(m, "dense")["config"].update(kernel_initializer=3),
    "dropout rate NaN": lambda m: layer(m, "dropout")["config"].update(rate=float("nan")),
    "dropout rate a string": lambda m: layer(m, "dropout")["config"].update(rate="0.5"),
    "dropout seed negative": lambda m: layer(m, "dropout")["config"].update(seed=-1),
    "input shape negative": lambda m: m["model"]["config"]["layers"][0]["config"].update(
        shape=[-6, 6, 1]
    ),
    "input shape huge": lambda m: m["model"]["config"]["layers"][0]["config"].update(
        shape=[2**40, 2**40, 1]
    ),
    "input shape a string": lambda m: m["model"]["config"]["layers"][0]["config"].update(
        shape="6x6"
    ),
    "duplicate layer names": lambda m: layer(m, "dense")["config"].update(name="conv2d"),
    "nesting 100 deep": lambda m: layer(m, "dense")["config"].update(units=nest(100)),
    "nesting 500 deep": lambda m: layer(m, "dense")["config"].update(units=nest(500)),
    "20,000 layers": lambda m: m["model"]["config"]["layers"].extend(
        [{"class_name": "Activation", "config": {"activation": "relu"}}] * 20_000
    ),
    "weights a dict": lambda m: m.update(weights={"a": 1}),
    "weight entry a string": lambda m: m["weights"].__setitem__(0, "w0000"),
    "weight entry without array": lambda m: m["weights"][0].pop("array"),
    "weight array name a number": lambda m: m["weights"][0].update(array=0),
    "weight array name missing": lambda m: m["weights"][0].update(array="nothere"),
    "weight array name a path": lambda m: m["weights"][0].update(array="../../etc/passwd"),
    "weight array of another shape": lambda m: m["weights"][0].update(array="w0001"),
    "one array for two weights": lambda m: m["weights"][2].update(array="w0001"),
    "one array for two slots": lambda m: m["optimizer_state"]["slots"]["dense/bias"].update(
        v="opt0007_m"
    ),
    "a weight's array as a slot": lambda m: m["optimizer_state"]["slots"]["dense/bias"].update(
        v="w0007"
    ),
    "weight shape negative": lambda m: m["weights"][0].update(shape=[-3, 3, 1, 2]),
    "weight shape of strings": lambda m: m["weights"][0].update(shape=["3", 3, 1, 2]),
    "weight shape lies": lambda m: m["weights"][0].update(shape=[3, 3, 1, 200000]),
    "one weight too few": lambda m: m["weights"].pop(),
    "weights swapped": lambda m: m["weights"].reverse(),
    "compile a list": lambda m: m.update(compile=[1]),
    "compile without loss": lambda m: m["compile"].pop("loss"),
    "optimizer unknown": lambda m: m["compile"].update(optimizer="evil"),
    "optimizer a number": lambda m: m["compile"].update(optimizer=5),
    "optimizer epsilon a NaN string": lambda m: m["compile"]["optimizer"]["config"].update(
        epsilon="nan"
    ),
    "optimizer epsilon NaN": lambda m: m["compile"]["optimizer"]["config"].update(
        epsilon=float("nan")
    ),
    "learning rate negative": lambda m: m["compile"]["optimizer"]["config"].update(
        learning_rate=-1
    ),
    "optimizer unexpected argument": lambda m: m["compile"]["optimizer"]["config"].update(x=1),
    "loss unknown": lambda m: m["compile"].update(loss="evil"),
    "loss a number": lambda m: m["compile"].update(loss=3),
    "loss weights a string": lambda m: m["compile"].update(loss_weights="x"),
    "loss weights infinite": lambda m: m["compile"].update(loss_weights=[float("inf")]),
    "metrics unknown": lambda m: m["compile"].update(metrics=["evil"]),
    "metrics a number": lambda m: m["compile"].update(metrics=5),
    "iterations negative": lambda m: m["optimizer_state"].update(iterations=-5),
    "iterations a string": lambda m: m["optimizer_state"].update(iterations="3"),
    "iterations a float": lambda m: m["optimizer_state"].update(iterations=1.5),
    "iterations true": lambda m: m["optimizer_state"].update(iterations=True),
    "iterations huge": lambda m: m["optimizer_state"].update(iterations=2**70),
    "optimizer state a list": lambda m: m.update(optimizer_state=[1]),
    "slots a list": lambda m: m["optimizer_state"].update(slots=[1]),
    "slots of an unknown weight": lambda m: m["optimizer_state"]["slots"].update(
        evil={"m": "opt0000_m"}
    ),
    "slot of another shape": lambda m: m["optimizer_state"]["slots"]["dense/kernel"].update(
        m="opt0000_m"
    ),
    "slot array missing": lambda m: m["optimizer_state"]["slots"]["dense/kernel"].update(
        m="nothere"
    ),
    "slot names a list": lambda m: m["optimizer_state"]["slots"].update({"dense/kernel": [1]}),
    "rng state a list": lambda m: m.update(rng_state=[1]),
    "rng state a number": lambda m: m["rng_state"].update({"layer:dropout": 5}),
    "rng bit generator unknown": lambda m: m["rng_state"]["layer:dropout"].update(
        bit_generator="Evil"
    ),
    "rng state huge": lambda m: m["rng_state"]["layer:dropout"]["state"].update(state=2**200),
    "rng state negative": lambda m: m["rng_state"]["layer:dropout"]["state"].update(state=-1),
    "rng state a string": lambda m: m["rng_state"]["layer:dropout"].update(state="x"),
    "metadata a list": lambda m: m.update(metadata=[["a", 1]]),
    "metadata a string": lambda m: m.update(metadata="ab"),
}


@pytest.mark.parametrize("edit", MANIFEST_EDITS.values(), ids=MANIFEST_EDITS.keys())
def test_hostile_manifest_is_a_model_file_error(tmp_path, good, edit):
    manifest, members = copy.deepcopy(good)
    result = edit(manifest)
    manifest = result if isinstance(result, list) else manifest
    refused(write(tmp_path / "hostile.pyconv", manifest, members))


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b'{"format": "pyconv-model", "format_version": 1, "model": ' + b"[" * 100_000,
        b'{"format": "pyconv-model", "format_version": ' + b"9" * 5000 + b"}",
        b'{"format": "pyconv-model", "format_version": 1, "model": NaN}',
        b"null",
        b'"pyconv-model"',
    ],
    ids=["invalid", "not utf-8", "deep", "5000 digits", "NaN model", "null", "a string"],
)
def test_unparsable_manifest_is_a_model_file_error(tmp_path, good, raw):
    _, members = good
    refused(write(tmp_path / "raw.pyconv", None, members, raw_manifest=raw))


GRAPH_EDITS = {
    "negative inbound index": lambda c: c["nodes"][2].update(inbound=[-1]),
    "inbound index ahead": lambda c: c["nodes"][1].update(inbound=[2]),
    "inbound index true": lambda c: c["nodes"][1].update(inbound=[True]),
    "output index out of range": lambda c: c.update(outputs=[99]),
    "inputs a number": lambda c: c.update(inputs=0),
    "nodes a dict": lambda c: c.update(nodes={}),
    "node of an unknown layer": lambda c: c["nodes"][1].update(layer="nothere"),
}


@pytest.mark.parametrize("edit", GRAPH_EDITS.values(), ids=GRAPH_EDITS.keys())
def test_hostile_graph_is_a_model_file_error(tmp_path, good_graph, edit):
    manifest, members = copy.deepcopy(good_graph)
    edit(manifest["model"]["config"])
    refused(write(tmp_path / "graph.pyconv", manifest, members))


def test_the_battery_starts_from_a_loadable_file(tmp_path, good, good_graph):
    """(so each refusal above is the edit's doing)"""
    for manifest, members in (good, good_graph):
        pyconv.load_model(write(tmp_path / "ok.pyconv", manifest, members))


ARRAY_EDITS = {
    "bool": lambda a: a.astype(bool),
    "complex": lambda a: a.astype(np.complex64),
    "structured": lambda a: np.zeros(a.shape, [("a", "f4")]),
    "string": lambda a: a.astype("U3"),
    "bytes": lambda a: a.astype("S3"),
    "datetime": lambda a: np.zeros(a.shape, "M8[s]"),
    "wrong shape": lambda a: a.reshape(-1),
}


@pytest.mark.parametrize("edit", ARRAY_EDITS.values(), ids=ARRAY_EDITS.keys())
@pytest.mark.parametrize("member", ["arrays/w0006.npy", "arrays/opt0006_m.npy"])
def test_weight_and_slot_arrays_must_be_real_numbers(tmp_path, good, edit, member):
    manifest, members = copy.deepcopy(good)
    original = np.load(io.BytesIO(members[member]))
    members[member] = npy(edit(original))
    refused(write(tmp_path / "arrays.pyconv", manifest, members), member[7:-4])


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0])
def test_impossible_optimizer_slots_are_refused(tmp_path, good, value):
    manifest, members = copy.deepcopy(good)
    v = np.load(io.BytesIO(members["arrays/opt0006_v.npy"]))
    v.flat[0] = value  # a negative second moment makes the step's square root NaN
    members["arrays/opt0006_v.npy"] = npy(v)
    refused(write(tmp_path / "slots.pyconv", manifest, members), "opt|slot")


def test_a_truncated_array_entry_is_refused_before_it_is_read(tmp_path, good):
    manifest, members = copy.deepcopy(good)
    members["arrays/w0006.npy"] = members["arrays/w0006.npy"][:-8]
    refused(write(tmp_path / "short.pyconv", manifest, members), "w0006", "truncated")


def test_a_huge_declared_layer_is_refused_before_allocation(tmp_path, good):
    """A file of a few KB declaring Dense(400000) once allocated gigabytes before failing."""
    manifest, members = copy.deepcopy(good)
    layer(manifest, "dense")["config"]["units"] = 400_000
    path = write(tmp_path / "huge.pyconv", manifest, members)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        refused(path, "Dense 'dense'", "does not match its weights")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2
    assert peak < 20 * 2**20  # the weight alone would be 29 MB here, gigabytes in the report


def test_a_zip_bomb_is_refused_unread(tmp_path, good):
    """A weight whose entry is a few KB of deflate declaring 64 MB (consistent shapes)."""
    manifest, members = copy.deepcopy(good)
    huge = np.zeros((4096, 4096), np.float32)
    manifest["weights"][6]["shape"] = list(huge.shape)
    members["arrays/w0006.npy"] = npy(huge)
    path = tmp_path / "bomb.pyconv"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pyconv.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        refused(path, "w0006", "zip bomb")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_an_oversized_manifest_is_refused_unread(tmp_path, good):
    manifest, members = good
    raw = json.dumps(manifest).encode() + b" " * (65 * 2**20)
    path = tmp_path / "big.pyconv"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pyconv.json", raw)
    refused(path, "manifest declares")


def test_a_model_may_use_deflate_within_reason(tmp_path, good):
    """A faithful recompression of a file (float weights compress little) still loads."""
    manifest, members = good
    path = tmp_path / "deflated.pyconv"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pyconv.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    assert pyconv.load_model(path).count_params() > 0


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_special_files_are_refused_up_front(tmp_path):
    """/dev/zero once made load_model read forever while memory grew; a FIFO would block."""
    refused("/dev/zero", "not a regular file")
    refused(str(tmp_path), "a directory")
    fifo = tmp_path / "fifo.pyconv"
    os.mkfifo(fifo)
    start = time.perf_counter()
    refused(fifo, "not a regular file")
    assert time.perf_counter() - start < 2


def test_load_weights_refuses_bad_arrays_and_changes_nothing(tmp_path):
    model = small_model()
    model.save_weights(tmp_path / "w.weights")
    with zipfile.ZipFile(tmp_path / "w.weights") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members.pop("pyconv.json"))
    members["arrays/w0000.npy"] = npy(np.zeros((3, 3, 1, 2), np.float32))  # valid
    members["arrays/w0006.npy"] = npy(np.zeros((72, 3), bool))  # refused: a later one
    write(tmp_path / "bad.weights", manifest, members)
    before = model.get_weights()
    with pytest.raises(ModelFileError, match="bad.weights.*w0006"):
        model.load_weights(tmp_path / "bad.weights")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_zip_of_very_many_entries_is_refused_unread(tmp_path, good):
    """zipfile builds an object per entry (~6x the file size in memory) before any check."""
    manifest, members = good
    path = tmp_path / "many.pyconv"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pyconv.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
        for i in range(90_000):
            zf.writestr(str(i), b"")
    start = time.perf_counter()
    refused(path, "90,0.. zip entries")
    assert time.perf_counter() - start < 0.5
