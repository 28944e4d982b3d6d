"""The benchmark scripts (bench/) run end to end on tiny settings: the PyTorch copies of the
zoo networks have pyconv's parameter counts, ONNX Runtime's outputs on pyconv's export match
pyconv's (checked inside the scripts), the peak-memory child processes report, and the report
renders every target line. Nothing here times anything or asserts a speed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import pyconv

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench  # noqa: E402
import networks  # noqa: E402
import torch_nets  # noqa: E402
import train_bench  # noqa: E402


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    """The pauses between libraries only matter for timing, which these tests do not check;
    the scripts set both libraries' thread counts: restored afterwards."""
    monkeypatch.setattr(train_bench, "SETTLE_S", 0.0)
    threads = (pyconv.get_num_threads(), torch.get_num_threads())
    yield
    pyconv.set_num_threads(threads[0])
    torch.set_num_threads(threads[1])


def test_torch_networks_have_the_zoo_parameter_counts():
    torch_nets.check_param_counts()  # raises naming the network on a mismatch
    counts = {n: torch_nets.trainable_params(torch_nets.BUILDERS[n]()) for n in
              ("resnet18", "resnet50", "vgg16")}  # fmt: skip
    assert counts == {"resnet18": 11_689_512, "resnet50": 25_557_032, "vgg16": 138_357_544}
    # --image-size: VGG's first dense layer follows the input size in both libraries
    small = train_bench.build_pyconv("vgg16", 32)
    ours = sum(v.value.size for v in small.trainable_weights)
    assert ours == torch_nets.trainable_params(train_bench.build_torch("vgg16", image_size=32))


def test_parse_batches():
    names = ["resnet18", "vgg16"]
    assert networks.parse_batches(None, names) == {"resnet18": 32, "vgg16": 8}
    assert networks.parse_batches("4", names) == {"resnet18": 4, "vgg16": 4}
    assert networks.parse_batches("vgg16=2", names) == {"resnet18": 32, "vgg16": 2}
    with pytest.raises(SystemExit, match="unknown network 'vgg19'"):
        networks.parse_batches("vgg19=2", names)


def test_networks_script_small(capsys):
    res = networks.main(["--networks", "resnet18", "--image-size", "32", "--batch", "2",
                         "--steps", "1", "--repeats", "2", "--no-latency", "--threads", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert "| resnet18 32px | 2 |" in out
    for row in res["rows"]:
        for part in ("train", "infer"):
            assert row[part]["pyconv"] > 0 and row[part]["torch"] > 0
        assert row["infer"]["ort"] > 0
        assert row["train"]["torch layout"] in train_bench.TORCH_LAYOUTS
        # the first SGD step allocates the momentum slots: the peak must rise above set-up
        assert row["memory"]["pyconv"] > 0 and row["memory"]["torch"] > 0


def test_batch1_latency_has_every_peer():
    r = train_bench.latency("mnist_cnn", 1, repeats=1, budget=0.01)
    assert r["pyconv"] > 0 and r["torch"] > 0 and r["ort"] > 0
    assert r["torch layout"] in train_bench.TORCH_LAYOUTS


def _net_row(name, ours, theirs):
    rates = {"pyconv": ours, "torch": theirs, "torch layout": "NCHW", "ort": theirs}
    return {"name": name, "batch": 2, "size": 224, "train": rates, "infer": dict(rates),
            "memory": {"pyconv": 1024 * ours, "torch": 1024 * theirs}}  # fmt: skip


def test_report_lists_every_target():
    row = bench.bench_conv(("tiny 3x3", 16, 64, 6, 6, 64, 3, 1, 1), 1)
    nets = {
        "networks": {
            "rows": [_net_row("resnet18", 2.0, 1.0), _net_row("vgg16", 1.0, 2.0)],
            "latency": {"mnist_cnn": {"pyconv": 1.0, "torch": 3.0, "torch layout": "NCHW",
                                      "ort": 1.0}},
            "steps": 1,
            "repeats": 1,
        }
    }  # fmt: skip
    note = bench.scaling_note((100.0, 200.0), 2, bench.copy_bandwidth(2, mib=4, reps=1),
                              bench.cache_sizes())  # fmt: skip
    text = bench.render([row], [], [("tiny 3x3", 1, 1.0, 1.0)], (100.0, 200.0), 2, "cmd",
                        nets, note)  # fmt: skip
    lines = text.splitlines()
    for ps in bench.PASSES:
        assert any(f"- {ps}, every shape:" in line for line in lines)
    assert any(line.startswith("- forward >= 80% of the measured peak") for line in lines)
    assert any(line.startswith("- vs NumPy im2col+matmul") for line in lines)
    assert "- training resnet18 batch 2: 2.00x PyTorch (target >= 1.3x): **met**" in lines
    assert "- training vgg16 batch 2: 0.50x PyTorch (target >= 1.3x): **not met**" in lines
    assert any(
        line.startswith("- inference resnet18 batch 2: 2.00x PyTorch") and "ONNX Runtime" in line
        for line in lines
    )
    assert "- peak memory of a vgg16 batch 2 training step: 1 MiB vs PyTorch 2 MiB " \
        "(target <= PyTorch): **met**" in lines  # fmt: skip
    latency = next(line for line in lines if line.startswith("- batch-1 latency mnist_cnn"))
    assert "3.00x PyTorch (target >= 2.0x), 1.00x ONNX Runtime (target >= 1.3x): **not met**" \
        in latency  # fmt: skip
    assert "| resnet18 224px | 2 |" in text and "What changes at 16-64 cores" in text
    assert np.isfinite(bench.copy_bandwidth(1, mib=4, reps=1)[1])
