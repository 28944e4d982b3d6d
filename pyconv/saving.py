"""One-file model and weight saves: a zip of a JSON manifest and ``.npy`` arrays.

- Atomic: written to a temporary file beside the target, fsynced, then renamed over it, so
  a crash mid-save leaves the previous file intact.
- Safe: arrays are read with ``allow_pickle=False`` and the architecture is plain JSON
  resolved against known layer classes; nothing in a file is executed.
- Complete: a model file holds the optimizer state and the state of the random generators
  training draws from (shuffling, dropout), so training resumes bit-for-bit.
- Checked: a truncated, corrupted (zip CRC), foreign or newer-format file raises
  ``ModelFileError`` (a ValueError) naming the file and the problem.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile

import numpy as np

from .optimizers import hold_interrupts

FORMAT_VERSION = 1
MANIFEST = "pyconv.json"


class ModelFileError(ValueError):
    """A file that is not a readable pyconv model/weights file."""


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temp file in path's directory, then rename it to path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory!r} for {path!r} does not exist")
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would (or
        # the replaced file's), so saving through a temp file changes nothing visible.
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (best effort: not every OS lets a dir be opened)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_archive(path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write a manifest and named arrays as one zip file."""
    manifest = {**manifest, "format_version": FORMAT_VERSION}

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1))
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                zf.writestr(f"arrays/{name}.npy", buf.getvalue())

    atomic_write(path, write)


class Archive:
    """A pyconv file opened for reading: ``manifest`` and ``array(name)``."""

    def __init__(self, path, kind: str):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"no such file: {self.path!r}")
        try:
            self.zip = zipfile.ZipFile(self.path)
            raw = self.zip.read(MANIFEST)
        except zipfile.BadZipFile as e:
            raise ModelFileError(
                f"{self.path!r} is not a pyconv {kind} file, or it is truncated/corrupted ({e})"
            ) from None
        except KeyError:
            raise ModelFileError(
                f"{self.path!r} is a zip file but not a pyconv {kind} file"
            ) from None
        try:
            self.manifest = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelFileError(f"{self.path!r}: corrupted manifest ({e})") from None
        fmt = self.manifest.get("format") if isinstance(self.manifest, dict) else None
        if fmt not in ("pyconv-model", "pyconv-weights"):
            raise ModelFileError(f"{self.path!r} is not a pyconv {kind} file")
        version = self.manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(
                f"{self.path!r} was written by a newer pyconv (file format version {version}); "
                f"this pyconv reads format versions up to {FORMAT_VERSION}: upgrade pyconv"
            )

    def array(self, name: str) -> np.ndarray:
        try:
            data = self.zip.read(f"arrays/{name}.npy")
            return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        except KeyError:
            raise ModelFileError(f"{self.path!r}: array {name!r} is missing") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise ModelFileError(f"{self.path!r}: array {name!r} is corrupted ({e})") from None

    def close(self) -> None:
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def weight_arrays(variables) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Manifest entries and arrays for a model's variables, in order."""
    entries, arrays = [], {}
    for i, var in enumerate(variables):
        key = f"w{i:04d}"
        entries.append({"name": var.name, "shape": list(var.shape), "array": key})
        arrays[key] = var.value
    return entries, arrays


def load_weight_arrays(archive: Archive, variables) -> None:
    """Assign stored weights to ``variables`` (same order), checking count and shapes."""
    entries = archive.manifest.get("weights", [])
    if len(entries) != len(variables):
        raise ValueError(
            f"{archive.path!r} holds {len(entries)} weight arrays but the model has "
            f"{len(variables)}: the architectures differ"
        )
    values = [archive.array(e["array"]) for e in entries]
    for var, value, entry in zip(variables, values, entries):
        if value.shape != var.shape:
            raise ValueError(
                f"{archive.path!r}: weight {entry['name']!r} has shape {value.shape}, "
                f"the model's {var.name!r} has {var.shape}"
            )
    with hold_interrupts():  # assign only once everything checked out, all or none
        for var, value in zip(variables, values):
            var.value[...] = value


_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


def generator_state(gen: np.random.Generator) -> dict:
    """A JSON-able copy of a NumPy generator's state (arrays become tagged lists)."""

    def encode(v):
        if isinstance(v, dict):
            return {k: encode(x) for k, x in v.items()}
        if isinstance(v, np.ndarray):
            return {"ndarray": v.tolist(), "dtype": v.dtype.str}
        return int(v) if isinstance(v, np.integer) else v

    return encode(gen.bit_generator.state)


def generator_from_state(state, where: str) -> np.random.Generator:
    """A generator continuing exactly where the one ``generator_state`` copied was."""

    def decode(v):
        if isinstance(v, dict) and set(v) == {"ndarray", "dtype"}:
            dtype = np.dtype(v["dtype"])
            if dtype.kind not in "iu":
                raise ValueError(f"unexpected dtype {dtype}")
            return np.array(v["ndarray"], dtype)
        return {k: decode(x) for k, x in v.items()} if isinstance(v, dict) else v

    try:
        name = state["bit_generator"]
        if name not in _BIT_GENERATORS:
            raise ValueError(f"unknown bit generator {name!r}")
        bit_generator = getattr(np.random, name)()
        bit_generator.state = decode(state)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ModelFileError(f"{where} is invalid ({e})") from None
    return np.random.Generator(bit_generator)
