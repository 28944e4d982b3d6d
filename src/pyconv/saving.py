"""One-file model and weight saves: a zip of a JSON manifest and ``.npy`` arrays.

- Atomic: written to a temporary file beside the target, fsynced, then renamed over it, so
  a crash mid-save leaves the previous file intact. A temporary file left by a writer that
  was killed is removed by the next save of the same file. Saving over a symbolic link
  writes to the file it points to and keeps the link.
- Safe: arrays are read with ``allow_pickle=False`` and the architecture is plain JSON
  resolved against known layer classes; nothing in a file is executed.
- Complete: a model file holds the optimizer state and the state of the random generators
  training draws from (shuffling, dropout), so training resumes bit-for-bit.
- Checked: a truncated, corrupted (zip CRC), foreign, hostile or newer-format file raises
  ``ModelFileError`` (a ValueError) naming the file and the problem. Sizes are checked before
  anything is read or allocated: the manifest is at most ``MAX_MANIFEST_BYTES``; every array's
  ``.npy`` header must agree with the manifest and with its zip entry's size; an entry
  compressed more than ``MAX_COMPRESSION_RATIO``:1 is refused (pyconv writes arrays
  uncompressed); rebuilding a model may not create more weight values than the file holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import math
import os
import socket
import stat
import tempfile
import zipfile

import numpy as np

from ._shapes import MEMORY_BYTES
from .utils import hold_interrupts, real_array

FORMAT_VERSION = 1
MANIFEST = "pyconv.json"
# A real manifest is a few hundred KB even for a thousand-layer model.
MAX_MANIFEST_BYTES = 64 * 2**20
# JSON nesting deeper than this is no manifest pyconv wrote (a layer config is ~5 deep).
MAX_NESTING = 64
# Layers (with nested models' layers) in one file: far above any real model; bounds the time
# spent rebuilding a hostile architecture of many tiny layers.
MAX_LAYERS = 10_000
# A manifest plus each weight's array and optimizer slots (at most 4 per weight).
MAX_ZIP_ENTRIES = 8 * MAX_LAYERS + 1
# Zip entries larger than this (uncompressed) may not be compressed more than the ratio:
# float weights compress little, and pyconv stores them uncompressed.
MAX_COMPRESSION_RATIO = 200
_RATIO_CHECKED_ABOVE = 2**20


# Keras's files, recognised only to say so: pyconv reads its own format alone.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NOT_KERAS = (
    "pyconv reads only its own format (.pyconv, written by model.save / save_weights), "
    "not Keras files"
)


def _starts_with(file, signature: bytes) -> bool:
    file.seek(0)
    head = file.read(len(signature))
    file.seek(0)
    return head == signature


class ModelFileError(ValueError):
    """A file that is not a readable pyconv model/weights file."""


# --- writing -------------------------------------------------------------------------------

# Temp files carry the writer's host and pid, so a later save can tell a killed writer's
# leftover (removed) from a live writer's file (never touched).
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(base: str) -> str:
    return f".{base}.pyconv-{_HOST_TAG}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a pid we cannot ask about): leave it
    return True


def _remove_stale_temp_files(directory: str, base: str) -> None:
    """Remove temp files of ``base`` left by writers (on this host) that no longer run."""
    prefix = _temp_prefix(base)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temp file in path's directory, then rename it to path.

    A symbolic link ``path`` stays a link: the file it points to is replaced."""
    path = os.fspath(path)
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory!r} for {path!r} does not exist")
    base = os.path.basename(path)
    _remove_stale_temp_files(directory, base)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f"{_temp_prefix(base)}{os.getpid()}.", suffix=".tmp"
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


# --- reading -------------------------------------------------------------------------------


def _open_regular_file(path: str):
    """``path`` opened for reading, refusing anything but a regular file up front (a FIFO
    would block the open, ``/dev/zero`` would be read forever)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path!r}") from None
    except IsADirectoryError:  # (Windows)
        raise ModelFileError(f"{path!r} is a directory, not a pyconv file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise ModelFileError(f"{path!r} is {what}, not a pyconv file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _zip_entry_count(f) -> int | None:
    """How many entries a zip file's end record declares (None where it has none: then
    ``zipfile`` reports the damage). Read before ``zipfile`` builds an object per entry."""
    size = f.seek(0, os.SEEK_END)
    tail_start = max(0, size - (22 + 65535))  # the end record, after at most a 64 KiB comment
    f.seek(tail_start)
    tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    count = int.from_bytes(tail[at + 10 : at + 12], "little")
    locator = tail_start + at - 20  # a ZIP64 file keeps the real count in another record
    if count == 0xFFFF and locator >= 0:
        f.seek(locator)
        loc = f.read(20)
        if loc[:4] == b"PK\x06\x07":
            f.seek(int.from_bytes(loc[8:16], "little"))
            record = f.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) == 56:
                count = int.from_bytes(record[32:40], "little")
    f.seek(0)
    return count


def _nesting_depth(value) -> int:
    """How deeply lists and dicts nest in ``value`` (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_NESTING:
                return depth
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


# The .npy versions NumPy writes for arrays like a model's (3.0 only adds UTF-8 field names).
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class Archive:
    """A pyconv file opened for reading: ``manifest``, ``array_header(name)``, ``array(name)``.

    Opening checks the container and the manifest's framing (format, version); what the
    manifest declares is checked by ``check_weight_entries`` and the loaders."""

    def __init__(self, path, kind: str):
        self.path = os.fspath(path)
        self._headers: dict[str, tuple] = {}
        self._claimed: set[str] = set()
        self.weight_values: int | None = None  # set by check_weight_entries
        self._file = _open_regular_file(self.path)
        try:
            self._open(kind)
        except BaseException:
            self.close()
            raise

    def _error(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path!r}: {what}")

    def _open(self, kind: str) -> None:
        entries = _zip_entry_count(self._file)
        if entries is not None and entries > MAX_ZIP_ENTRIES:
            raise self._error(
                f"declares {entries:,} zip entries, more than the {MAX_ZIP_ENTRIES:,} any "
                "pyconv file has; refused unread"
            )
        try:
            self.zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            if _starts_with(self._file, HDF5_SIGNATURE):
                raise self._error(f"is an HDF5 (Keras .h5) file; {NOT_KERAS}") from None
            raise ModelFileError(
                f"{self.path!r} is not a pyconv {kind} file, or it is truncated/corrupted ({e})"
            ) from None
        try:
            info = self.zip.getinfo(MANIFEST)
        except KeyError:
            if {"config.json", "model.weights.h5"} & set(self.zip.namelist()):
                raise self._error(f"is a Keras .keras file; {NOT_KERAS}") from None
            raise ModelFileError(
                f"{self.path!r} is a zip file but not a pyconv {kind} file"
            ) from None
        if info.file_size > MAX_MANIFEST_BYTES:
            raise self._error(
                f"its manifest declares {info.file_size:,} bytes, more than the "
                f"{MAX_MANIFEST_BYTES:,} any pyconv file has; refused unread"
            )
        raw = self._read_member(info, "the manifest")
        try:
            self.manifest = json.loads(raw)
        except (ValueError, RecursionError) as e:  # bad JSON/UTF-8, 4300+ digit numbers
            raise self._error(f"corrupted manifest ({type(e).__name__}: {e})") from None
        if _nesting_depth(self.manifest) > MAX_NESTING:
            raise self._error(f"its manifest nests deeper than {MAX_NESTING} levels")
        fmt = self.manifest.get("format") if isinstance(self.manifest, dict) else None
        if fmt not in ("pyconv-model", "pyconv-weights"):
            raise ModelFileError(f"{self.path!r} is not a pyconv {kind} file")
        version = self.manifest.get("format_version")
        if not _is_int(version) or version < 1:
            raise self._error(f"invalid file format version {version!r}")
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"{self.path!r} was written by a newer pyconv (file format version {version}); "
                f"this pyconv reads format versions up to {FORMAT_VERSION}: upgrade pyconv"
            )

    def _read_member(self, info: zipfile.ZipInfo, what: str) -> bytes:
        self._check_compression(info, what)
        try:
            return self.zip.read(info)
        except Exception as e:  # CRC, truncation, zlib, encryption, unknown compression
            raise self._error(f"{what} is corrupted ({type(e).__name__}: {e})") from None

    def _check_compression(self, info: zipfile.ZipInfo, what: str) -> None:
        if info.file_size > _RATIO_CHECKED_ABOVE and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise self._error(
                f"{what} is compressed {info.file_size / max(info.compress_size, 1):,.0f}:1 "
                f"({info.compress_size:,} bytes declaring {info.file_size:,}); refused as a "
                "possible zip bomb (pyconv stores arrays uncompressed)"
            )

    def _member(self, name) -> zipfile.ZipInfo:
        if not isinstance(name, str) or not name:
            raise self._error(f"invalid array name {name!r}")
        try:
            return self.zip.getinfo(f"arrays/{name}.npy")
        except KeyError:
            raise self._error(f"array {name!r} is missing") from None

    def array_header(self, name) -> tuple[tuple, np.dtype]:
        """(shape, dtype) of array ``name`` from its ``.npy`` header alone, after checking
        that its zip entry holds exactly that much data and is not a bomb. A dtype other
        than real numbers (bool, complex, strings, records, objects) is refused."""
        if name in self._headers:
            return self._headers[name]
        info = self._member(name)
        what = f"array {name!r}"
        self._check_compression(info, what)
        try:
            with self.zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = _NPY_HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, _, dtype = read_header(f)
                offset = f.tell()
        except Exception as e:
            raise self._error(f"{what} is corrupted ({type(e).__name__}: {e})") from None
        if dtype.kind not in "iuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise self._error(f"{what} has dtype {dtype}; weights must be real numbers")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise self._error(
                f"{what} declares shape {shape} ({nbytes:,} bytes of {dtype}) but its entry "
                f"holds {info.file_size - offset:,} bytes; truncated or corrupted"
            )
        self._headers[name] = (tuple(shape), dtype)
        return self._headers[name]

    def claim_array(self, name) -> tuple[tuple, np.dtype]:
        """``array_header(name)`` for one use only: a manifest naming an array twice would
        make its few bytes count as many weights (and justify allocating them)."""
        if name in self._claimed:
            raise self._error(f"array {name!r} is named twice in the manifest")
        header = self.array_header(name)
        self._claimed.add(name)
        return header

    def array(self, name, shape=None) -> np.ndarray:
        """Array ``name``; with ``shape``, its header must declare that shape (checked before
        the data is read)."""
        header_shape, dtype = self.array_header(name)
        if shape is not None and header_shape != tuple(shape):
            raise self._error(f"array {name!r} has shape {header_shape}, expected {tuple(shape)}")
        try:
            with self.zip.open(self._member(name)) as f:
                arr = np.lib.format.read_array(f, allow_pickle=False)
                f.read(1)  # reach the end: the zip's CRC check runs there
        except Exception as e:
            raise self._error(f"array {name!r} is corrupted ({type(e).__name__}: {e})") from None
        return arr

    def close(self) -> None:
        zf = getattr(self, "zip", None)
        if zf is not None:
            zf.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_weight_entries(archive: Archive) -> int:
    """Check the manifest's list of weight entries against the arrays' headers (nothing is
    read but headers, once per archive); return how many values they hold in all."""
    if archive.weight_values is not None:
        return archive.weight_values
    entries = archive.manifest.get("weights", [])
    if not isinstance(entries, list):
        raise archive._error(f"'weights' must be a list, got {type(entries).__name__}")
    total = 0
    for i, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("array"), str)
            and isinstance(entry.get("shape"), list)
            and all(_is_int(d) and d >= 0 for d in entry["shape"])
        ):
            raise archive._error(
                f"weights entry {i} must be {{'name': str, 'shape': [ints >= 0], "
                f"'array': str}}, got {str(entry)[:200]}"
            )
        shape, _ = archive.claim_array(entry["array"])
        if shape != tuple(entry["shape"]):
            raise archive._error(
                f"weight {entry['name']!r}: the manifest says shape {tuple(entry['shape'])}, "
                f"its array {entry['array']!r} has {shape}"
            )
        total += math.prod(shape)
    if total * 4 > MEMORY_BYTES:
        raise archive._error(f"its arrays hold {total:,} values, more than this machine's RAM")
    archive.weight_values = total
    return total


def _walk(value):
    """Every (path, item) in nested JSON ``value``, iteratively (depth is bounded already)."""
    stack = [("", value)]
    while stack:
        path, v = stack.pop()
        yield path, v
        if isinstance(v, dict):
            stack.extend((f"{path}.{k}", x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x) for i, x in enumerate(v))


def _check_graph_config(archive: Archive, config: dict) -> None:
    """A graph's nodes may only refer to nodes before them, by index (a negative or bool
    index would silently wire another layer in)."""
    nodes = config.get("nodes")
    if not isinstance(nodes, list):
        raise archive._error("a graph model's 'nodes' must be a list")

    def indices(value, bound: int, what: str) -> None:
        if not isinstance(value, list) or not all(_is_int(i) and 0 <= i < bound for i in value):
            raise archive._error(f"{what} must be a list of node indices in [0, {bound})")

    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("layer"), str):
            raise archive._error(f"graph node {i} must be a dict naming its layer")
        indices(node.get("inbound"), i, f"graph node {i}'s 'inbound'")
    indices(config.get("inputs"), len(nodes), "the graph's 'inputs'")
    indices(config.get("outputs"), len(nodes), "the graph's 'outputs'")


def check_model_manifest(archive: Archive) -> int:
    """Check a model file's manifest before anything is built or read (types, sizes, the
    arrays' headers); return how many weight values its arrays hold."""
    m = archive.manifest
    spec = m.get("model")
    if not (
        isinstance(spec, dict)
        and isinstance(spec.get("class_name"), str)
        and isinstance(spec.get("config", {}), dict)
    ):
        raise archive._error("'model' must be {'class_name': str, 'config': dict}")
    sections = {"compile": "compile settings", "optimizer_state": "optimizer state",
                "rng_state": "random state", "metadata": "metadata"}  # fmt: skip
    for key, label in sections.items():
        if m.get(key) is not None and not isinstance(m[key], dict):
            raise archive._error(f"invalid {label} ({key!r} must be a dict or null)")
    layers = sum(isinstance(v, dict) and "class_name" in v for _, v in _walk(spec))
    if layers > MAX_LAYERS:
        raise archive._error(f"declares {layers:,} layers, more than the {MAX_LAYERS:,} allowed")
    # NaN is no setting of anything; infinity none of the training settings (learning rate,
    # epsilon, clipping, loss weights), though a layer may have an unbounded one.
    for section, allowed in (("model", math.isinf), ("compile", lambda v: False)):
        for path, v in _walk(m.get(section)):
            if isinstance(v, float) and not math.isfinite(v) and not allowed(v):
                raise archive._error(f"{section}{path} is {v}")
    if spec.get("class_name") == "Functional":
        _check_graph_config(archive, spec.get("config", {}))
    optimizer = (m.get("compile") or {}).get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("config"), dict):
        for k, v in optimizer["config"].items():
            if k != "name" and isinstance(v, str):  # ("nan", "1e-7": numbers are numbers)
                raise archive._error(f"the optimizer's {k!r} must be a number, got {v!r}")
    total = check_weight_entries(archive)
    entries = m.get("weights", [])
    if m.get("optimizer_state") is not None:
        _check_optimizer_state(archive, m["optimizer_state"], entries)
    return total


# Optimizer slots that hold running averages of squared gradients: never negative (a
# negative one makes the step's square root NaN).
_NON_NEGATIVE_SLOTS = frozenset({"v", "vhat", "velocity"})


def _check_optimizer_state(archive: Archive, state: dict, entries: list) -> None:
    iterations = state.get("iterations")
    if not _is_int(iterations) or not 0 <= iterations < 2**63:
        raise archive._error(f"optimizer iterations must be an int >= 0, got {iterations!r}")
    slots = state.get("slots", {})
    shapes = {e["name"]: tuple(e["shape"]) for e in entries}
    if not isinstance(slots, dict):
        raise archive._error("optimizer 'slots' must be a dict")
    for var_name, by_slot in slots.items():
        if var_name not in shapes:
            raise archive._error(
                f"optimizer state for {var_name!r}, which is not among the file's weights"
            )
        if not isinstance(by_slot, dict) or not all(isinstance(k, str) for k in by_slot.values()):
            raise archive._error(f"optimizer slots of {var_name!r} must map names to arrays")
        for slot, key in by_slot.items():
            shape, _ = archive.claim_array(key)
            if shape != shapes[var_name]:
                raise archive._error(
                    f"optimizer slot {slot!r} of {var_name!r} (array {key!r}) has shape "
                    f"{shape}, the weight {shapes[var_name]}"
                )


def restore_optimizer_state(archive: Archive, optimizer, variables) -> None:
    """Give ``optimizer`` the iterations and slots ``archive`` holds (checked by
    ``check_model_manifest``): values finite, converted to the weights' float32, and set
    only once all of them are read."""
    state = archive.manifest["optimizer_state"]
    by_name = {v.name: v for v in variables}
    slots = {}
    for var_name, by_slot in state.get("slots", {}).items():
        var = by_name.get(var_name)
        if var is None:
            raise archive._error(
                f"optimizer state for {var_name!r}, which is not among the file's weights"
            )
        slots[var_name] = {}
        for slot, key in by_slot.items():
            where = f"{archive.path!r}: optimizer slot {slot!r} of {var_name!r}"
            value = _checked_value(var, archive.array(key, var.shape), where)
            if not np.all(np.isfinite(value)) or (
                slot in _NON_NEGATIVE_SLOTS and np.any(value < 0)
            ):
                raise ModelFileError(f"{where} holds NaN, infinite or impossible values")
            slots[var_name][slot] = np.ascontiguousarray(value)
    with hold_interrupts():
        optimizer.iterations = state["iterations"]
        optimizer.slots.update(slots)


# --- how much a model rebuilt from a file may allocate -------------------------------------

_weight_budget: contextvars.ContextVar = contextvars.ContextVar("weight_budget", default=None)


@contextlib.contextmanager
def weight_budget(count: int, source: str):
    """Within the block (this thread), layers may create at most ``count`` weight values in
    all: a model rebuilt from a file whose arrays hold ``count`` values needs no more, and an
    architecture declaring more (``Dense(400000)``) is refused before it is allocated."""
    token = _weight_budget.set({"left": count, "total": count, "source": source})
    try:
        yield
    finally:
        _weight_budget.reset(token)


def charge_weight(count: int, what: str) -> None:
    """Account for a new weight of ``count`` values (called by ``Layer.add_weight``)."""
    budget = _weight_budget.get()
    if budget is None:
        return
    if count > budget["left"]:
        raise ValueError(
            f"{what} would need {count:,} values, but the arrays of {budget['source']} hold "
            f"{budget['total']:,} in all: the architecture does not match its weights"
        )
    budget["left"] -= count


def weight_arrays(variables) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Manifest entries and arrays for a model's variables, in order."""
    entries, arrays = [], {}
    for i, var in enumerate(variables):
        key = f"w{i:04d}"
        entries.append({"name": var.name, "shape": list(var.shape), "array": key})
        arrays[key] = var.value
    return entries, arrays


def _checked_value(var, value, where: str) -> np.ndarray:
    """``value`` as a new array of ``var``'s shape and dtype, or a clear error."""
    name = f"{where}: the value for weight {var.name!r}"
    # Booleans, complex numbers, strings, records, objects and dates are no weights: a
    # silent conversion would drop imaginary parts or turn text into garbage.
    arr = real_array(value, name, kinds="iuf")
    if arr.shape != var.shape:
        raise ValueError(f"{name} has shape {arr.shape}, the weight has shape {var.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = arr.astype(var.value.dtype)
    if arr.dtype.kind == "f" and not np.array_equal(np.isfinite(converted), np.isfinite(arr)):
        raise ValueError(f"{name} holds values too large for {var.value.dtype}")
    return converted


def assign_weights(variables, arrays, where: str) -> None:
    """Give ``variables`` the values ``arrays`` (same order): all of them or none.

    Every array is checked (count, shape, real numeric dtype, representable in the
    variable's dtype) and converted before the first assignment, which then all happen
    with Ctrl-C held, so a bad array or an interruption leaves every variable unchanged.
    ``where`` names what the arrays come from in error messages.
    """
    if isinstance(arrays, (str, bytes, dict, np.ndarray)) or not hasattr(arrays, "__iter__"):
        raise TypeError(f"{where}: weights must be a list of arrays, got {type(arrays).__name__}")
    variables, arrays = list(variables), list(arrays)
    if len(arrays) != len(variables):
        raise ValueError(
            f"{where}: got {len(arrays)} weight arrays for {len(variables)} weights: "
            "the architectures differ"
        )
    values = [_checked_value(var, a, where) for var, a in zip(variables, arrays)]
    with hold_interrupts():
        for var, value in zip(variables, values):
            with var.updating() as w:
                w[...] = value


def load_weight_arrays(archive: Archive, variables) -> None:
    """Assign stored weights to ``variables`` (same order): count, shapes and dtypes checked
    from the headers before any data is read, then all of them assigned or none."""
    check_weight_entries(archive)
    entries = archive.manifest.get("weights", [])
    variables = list(variables)
    if len(entries) != len(variables):
        raise archive._error(
            f"holds {len(entries)} weight arrays but the model has {len(variables)}: "
            "the architectures differ"
        )
    for var, entry in zip(variables, entries):
        if tuple(entry["shape"]) != var.shape:
            raise archive._error(
                f"weight {entry['name']!r} has shape {tuple(entry['shape'])}, "
                f"the model's {var.name!r} has {var.shape}"
            )
    values = [archive.array(e["array"], var.shape) for e, var in zip(entries, variables)]
    try:
        assign_weights(variables, values, repr(archive.path))
    except (TypeError, ValueError) as e:
        raise ModelFileError(str(e)) from None


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
