"""Optimizer state files: ``uniopt.save(obj, path)`` / ``uniopt.load(path)``.

    uniopt.save(opt, "opt.safetensors")                      # an optimizer
    uniopt.save({"optimizer": opt, "scheduler": sched, "epoch": 3}, "ckpt.safetensors")
    opt.load_state_dict(uniopt.load("opt.safetensors"))      # plain dict of numpy arrays
    uniopt.load("ckpt.safetensors", into={"optimizer": opt, "scheduler": sched})

**Format.** A `safetensors <https://github.com/huggingface/safetensors>`_ file: an
8-byte little-endian header length, a JSON header, then the raw little-endian bytes of
every array. The structure around the arrays (dicts, lists, tuples, numbers, strings,
booleans, None) is one JSON document in the header's ``__metadata__`` map under
``"uniopt.content"``, where each array is a reference ``{"$array": "<tensor name>"}``.
Other metadata keys: ``"uniopt.format"`` (``"uniopt.state-file"``), ``"uniopt.version"``
(``"1"``), ``"uniopt.info"`` (a JSON summary for ``python -m uniopt inspect``: what was
saved, algorithm, flavor, steps, parameter names/shapes/dtypes), ``"uniopt.dtypes"``
(logical dtypes of arrays stored under another dtype: bfloat16 is stored as its raw
``U16`` bits, the float8 types as ``U8``) and ``"uniopt.crc32"`` (a CRC-32 per array).
Tensor names are the arrays' paths (``state/fc.weight/exp_avg``), so the file also
opens with ``safetensors.numpy.load_file``. The file is written and read by this module
alone (NumPy and the standard library); the ``safetensors`` package is not needed.

**Safety.** Nothing is ever unpickled or evaluated: loading parses JSON and copies
bytes into NumPy arrays of a fixed set of dtypes, and checks every size, offset, tag,
and checksum first. Any defect raises :class:`StateFileError` (a ``ValueError``).

**Atomic writes.** The file is written to a temporary file in the same directory,
flushed and fsynced, then renamed over the target with ``os.replace``: a crash leaves
either the old file or the new one, never a mix, and no temporary file behind.

**What can be saved.** uniopt optimizers (their ``state_dict()``), uniopt schedulers
and any object with ``state_dict()`` (its state dict), state dicts, and any nesting of
dicts, lists and tuples of those, arrays (NumPy, or any backend's, stored as NumPy),
Python numbers, strings, booleans and None. Functions cannot be saved: a param group's
learning-rate *schedule* is saved as its current value (``"lr_at_save"``) and left out
(``"unsaved"`` names it), so loading keeps the target optimizer's own ``lr``; re-attach
the schedule when constructing the optimizer you load into.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import secrets
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from uniopt.state import entry_problems

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "LoadReport",
    "StateFileError",
    "StateMismatchError",
    "load",
    "load_state",
    "read_header",
    "read_info",
    "read_safetensors",
    "save",
    "write_safetensors",
]

FILE_FORMAT = "uniopt.state-file"
FILE_VERSION = 1
OPTIMIZER_FORMAT = "uniopt.optimizer"  # the "format" of an optimizer state_dict
MAX_HEADER_BYTES = 100 * 2**20  # as the safetensors library
MAX_DEPTH = 64

#: safetensors dtype code -> NumPy dtype (little-endian)
_CODES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
    "C64": "<c8",
}
_CODE_OF = {np.dtype(v): k for k, v in _CODES.items()}
#: ml_dtypes types: logical name -> (storage code, native safetensors code accepted on read)
_TAGGED = {
    "bfloat16": ("U16", "BF16"),
    "float8_e4m3fn": ("U8", "F8_E4M3"),
    "float8_e5m2": ("U8", "F8_E5M2"),
}
_NATIVE_TAGGED = {native: name for name, (_, native) in _TAGGED.items()}

PathLike = str | os.PathLike


class StateFileError(ValueError):
    """A file that is not a readable uniopt state file: not safetensors, truncated,
    corrupted, malformed, or written by a newer uniopt. Nothing was loaded."""

    def __init__(self, path: Any, message: str):
        self.path = os.fspath(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class StateMismatchError(ValueError):
    """A state that does not fit the optimizer; ``problems`` lists every mismatch.
    The optimizer was not changed."""

    def __init__(self, owner: str, problems: list[str]):
        self.problems = list(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(
            f"{owner}: the state does not match the optimizer "
            f"({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"
            f"\n  - {lines}"
        )


@dataclass
class LoadReport:
    """What :func:`load_state` (or ``load(..., into=opt)``) did."""

    #: parameters whose state was loaded
    loaded: list[str] = field(default_factory=list)
    #: saved state that was left out (``strict=False``), with the reason
    skipped: dict[str, str] = field(default_factory=dict)
    #: parameters of the optimizer the file has nothing for (they start fresh)
    missing: list[str] = field(default_factory=list)
    #: other remarks (param groups matched differently, schedules not restored)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Everything in the state was loaded and every parameter was covered."""
        return not self.skipped and not self.missing


# ---------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------


def save(obj: Any, path: PathLike) -> None:
    """Write ``obj`` to ``path`` as a uniopt state file (safetensors; atomic).

    ``obj`` may be a uniopt optimizer or scheduler (their ``state_dict()`` is saved),
    any object with ``state_dict()``, a state dict, or a checkpoint: a dict mixing
    those with plain data, e.g. ``{"optimizer": opt, "scheduler": sched, "epoch": 3}``.
    Arrays of any backend are stored as host NumPy arrays with their dtype.

    Raises:
        TypeError: ``obj`` holds something that is not data (a function, an
            arbitrary object), naming where it is.
    """
    encoder = _Encoder()
    content = encoder.encode(obj, ())
    info = {"kind": encoder.kind(), "parts": list(encoder.parts.values())}
    metadata = {
        "uniopt.format": FILE_FORMAT,
        "uniopt.version": str(FILE_VERSION),
        "uniopt.content": _dumps(content),
        "uniopt.info": _dumps(info),
    }
    write_safetensors(path, encoder.tensors, metadata, encoder.dtypes)


def load(path: PathLike, into: Any = None, *, strict: bool = True) -> Any:
    """Read a file written by :func:`save`.

    Without ``into``: return what was saved, as plain data (optimizers and schedulers
    as their state dicts; arrays as NumPy arrays), so ``opt.load_state_dict(load(p))``
    restores an optimizer.

    With ``into``: load the file into it and return a :class:`LoadReport`. ``into`` is
    an optimizer or scheduler (the file must hold one), or a dict of them matched by key
    against a saved checkpoint (``into={"optimizer": opt, "scheduler": sched}``; then the
    result is a dict of reports, ``None`` for non-optimizers). Everything is checked
    before anything changes; if loading a later part fails, earlier parts are restored.
    ``strict`` is as in :func:`load_state`.

    Raises:
        StateFileError: the file is missing, not a uniopt state file, truncated,
            corrupted, or from a newer uniopt.
        StateMismatchError: the state does not fit the optimizer (every mismatch listed).
    """
    obj, info = _read(path)
    if into is None:
        return obj
    return _restore(path, obj, info, into, strict)


def load_state(opt: Any, state_dict: Mapping[str, Any], *, strict: bool = True) -> LoadReport:
    """Load an optimizer ``state_dict`` into the uniopt optimizer ``opt``, by name.

    State is matched by parameter name, never by position. With ``strict=True`` (the
    default) any difference (algorithm, parameter names, param groups, state slots,
    shapes, dtypes, invalid hyperparameters) raises one :class:`StateMismatchError`
    listing every problem, and ``opt`` is unchanged. With ``strict=False`` the
    intersection is loaded: state of parameters ``opt`` does not have, or whose
    shape/dtype/slots do not fit, is skipped; parameters with no saved state start
    fresh; each group takes the hyperparameters of the saved group its parameters came
    from (or keeps its own). The returned report lists what was skipped. A different
    algorithm is an error in both modes.
    """
    plan = _match(opt, state_dict, strict)
    if plan.problems:
        raise StateMismatchError(f"{type(opt).__name__}.load_state_dict", plan.problems)
    opt.load_state_dict(plan.state_dict)
    return plan.report


# ---------------------------------------------------------------------------------
# encoding: Python data <-> JSON content + named arrays
# ---------------------------------------------------------------------------------


def _dumps(x: Any) -> str:
    return json.dumps(x, allow_nan=False, separators=(",", ":"), ensure_ascii=True)


def _is_optimizer(obj: Any) -> bool:
    from uniopt.optimizer import Optimizer

    return isinstance(obj, Optimizer)


def _is_scheduler(obj: Any) -> bool:
    from uniopt.lr_scheduler._base import StateDictMixin

    return isinstance(obj, StateDictMixin)


def _path_text(path: tuple) -> str:
    """``("optimizer", "param_groups", 0)`` -> ``['optimizer']['param_groups'][0]``."""
    return "".join(f"[{key!r}]" for key in path) if path else "the object"


class _Encoder:
    """Turns a saved object into a JSON-able tree, collecting its arrays."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}
        self.dtypes: dict[str, str] = {}
        #: what was saved where (for ``inspect`` and for checks on load), by path
        self.parts: dict[tuple, dict[str, Any]] = {}
        self._active: set[int] = set()

    def kind(self) -> str:
        if () in self.parts:
            return self.parts[()]["kind"]
        return "checkpoint" if self.parts else "data"

    def part(self, path: tuple) -> dict[str, Any]:
        return self.parts.setdefault(path, {"path": list(path)})

    def encode(self, obj: Any, path: tuple) -> Any:
        if len(path) > MAX_DEPTH:
            raise TypeError(f"cannot save: nesting deeper than {MAX_DEPTH} at {_path_text(path)}")
        if obj is None or isinstance(obj, bool):
            return obj
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj) if math.isfinite(obj) else {"$float": repr(float(obj))}
        if isinstance(obj, (np.ndarray, np.generic)) or _is_foreign_array(obj):
            return self._array(obj, path)
        if isinstance(obj, Mapping):
            return self._guarded(obj, path, self._mapping)
        if isinstance(obj, (list, tuple)):
            return self._guarded(obj, path, self._sequence)
        state_dict = getattr(obj, "state_dict", None)
        if callable(state_dict) and not isinstance(obj, type):
            return self._stateful(obj, path)
        what = "a function" if callable(obj) else f"a {type(obj).__module__}.{type(obj).__name__}"
        raise TypeError(
            f"cannot save {_path_text(path)}: it is {what}; uniopt files hold data only "
            "(arrays, numbers, strings, booleans, None, dicts, lists, tuples, and objects "
            "with state_dict())"
        )

    def _guarded(self, obj: Any, path: tuple, fn: Callable[[Any, tuple], Any]) -> Any:
        if id(obj) in self._active:
            raise TypeError(f"cannot save {_path_text(path)}: it contains itself")
        self._active.add(id(obj))
        try:
            return fn(obj, path)
        finally:
            self._active.discard(id(obj))

    def _sequence(self, obj: list | tuple, path: tuple) -> Any:
        items = [self.encode(v, (*path, i)) for i, v in enumerate(obj)]
        return {"$tuple": items} if isinstance(obj, tuple) else items

    def _mapping(self, obj: Mapping, path: tuple) -> Any:
        if _plain_keys(obj):
            if obj.get("format") == OPTIMIZER_FORMAT:
                obj = self._optimizer_state(obj, path)
            return {k: self.encode(v, (*path, k)) for k, v in obj.items()}
        pairs = []
        for k, v in obj.items():
            if not _is_key(k):
                raise TypeError(
                    f"cannot save {_path_text(path)}: key {k!r} is a {type(k).__name__}; "
                    "keys must be strings, numbers, booleans, None or tuples of those"
                )
            pairs.append([self.encode(k, (*path, "<key>")), self.encode(v, (*path, k))])
        return {"$map": pairs}

    def _stateful(self, obj: Any, path: tuple) -> Any:
        state = obj.state_dict()
        if _is_optimizer(obj) or (
            isinstance(state, Mapping) and state.get("format") == OPTIMIZER_FORMAT
        ):
            kind = "optimizer"  # a uniopt optimizer, or a wrapper such as LookAhead
        elif _is_scheduler(obj):
            kind = "scheduler"
        else:
            kind = "object"
        part = self.part(path)
        part.update(kind=kind, **{"class": type(obj).__qualname__}, module=type(obj).__module__)
        if kind == "optimizer" and isinstance(getattr(obj, "param_groups", None), list):
            part["parameters"] = _parameter_table(obj)
        elif kind == "scheduler" and isinstance(state, Mapping):
            part["last_step"] = _json_number(state.get("last_step"))
        return self.encode(state, path)

    def _optimizer_state(self, sd: Mapping, path: tuple) -> dict[str, Any]:
        """An optimizer state dict made savable: callables in param groups (learning-rate
        schedules) are left out, named in ``"unsaved"``; ``"lr_at_save"`` keeps the rate."""
        from uniopt import lr as lr_forms

        sd = dict(sd)
        step = sd.get("step_count", 0)
        groups, unsaved_by_group = [], {}
        for i, group in enumerate(sd.get("param_groups") or []):
            if not isinstance(group, Mapping):
                groups.append(group)
                continue
            group = dict(group)
            unsaved = {}
            for key in [k for k, v in group.items() if callable(v)]:
                value = group.pop(key)
                unsaved[key] = f"{type(value).__name__}: {value!r}"[:200]
                if key == "lr":
                    with contextlib.suppress(Exception):
                        group["lr_at_save"] = float(lr_forms.lr_at(value, int(step)))
            if unsaved:
                group["unsaved"] = unsaved
                unsaved_by_group[str(i)] = unsaved
            groups.append(group)
        sd["param_groups"] = groups
        state = sd.get("state")
        part = self.part(path)
        part.setdefault("kind", "optimizer")
        part.update(
            algorithm=sd.get("algorithm"),
            flavor=sd.get("flavor"),
            step_count=_json_number(step),
            groups=len(groups),
            stepped=len(state) if isinstance(state, Mapping) else None,
        )
        if unsaved_by_group:
            part["unsaved"] = unsaved_by_group
        return sd

    def _array(self, obj: Any, path: tuple) -> dict[str, str]:
        scalar = isinstance(obj, np.generic)
        if isinstance(obj, (np.ndarray, np.generic)):
            array = np.asarray(obj)
        else:
            from uniopt._adapter import adapter_for

            adapter = adapter_for(obj)
            array = adapter.to_numpy(adapter.data(obj))
        array = _storable(array, path)
        name = self._name(path)
        if array.dtype.name in _TAGGED:
            self.dtypes[name] = array.dtype.name
        self.tensors[name] = array
        return {"$scalar" if scalar else "$array": name}

    def _name(self, path: tuple) -> str:
        base = "/".join(str(k) for k in path) or "value"
        if base == "__metadata__":
            base = "_metadata_"
        name, n = base, 1
        while name in self.tensors:
            n += 1
            name = f"{base}~{n}"
        return name


def _plain_keys(obj: Mapping) -> bool:
    return all(isinstance(k, str) and not k.startswith("$") for k in obj)


def _is_key(k: Any) -> bool:
    if k is None or isinstance(k, (str, bool, int, float)):
        return True
    return isinstance(k, tuple) and all(_is_key(x) for x in k)


def _is_foreign_array(obj: Any) -> bool:
    from uniopt._adapter import is_array

    return is_array(obj)


def _json_number(x: Any) -> Any:
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real) and math.isfinite(float(x)):
        return float(x)
    return None


def _storable(array: np.ndarray, path: tuple) -> np.ndarray:
    """``array`` as a contiguous little-endian array of a dtype the format can hold."""
    dtype = array.dtype
    if dtype.name in _TAGGED:
        return _contiguous(array, dtype)
    little = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
    if little not in _CODE_OF:
        raise TypeError(
            f"cannot save {_path_text(path)}: arrays of dtype {dtype} are not supported "
            f"(supported: {', '.join(sorted({str(np.dtype(v)) for v in _CODES.values()}))}, "
            "bfloat16, float8_e4m3fn, float8_e5m2)"
        )
    return _contiguous(array, little)


def _contiguous(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous with ``dtype``, keeping 0-d arrays 0-d (``ascontiguousarray`` does not)."""
    if array.flags.c_contiguous and array.dtype == dtype:
        return array
    return np.array(array, dtype=dtype, order="C")


def _parameter_table(opt: Any) -> list[list[Any]]:
    """``[name, shape, dtype, group, backend]`` for every parameter of a uniopt optimizer."""
    from uniopt._adapter import adapter_for

    rows = []
    for i, group in enumerate(opt.param_groups):
        for name, p in zip(group["param_names"], group["params"]):
            adapter = adapter_for(p)
            data = adapter.data(p)
            rows.append([name, list(data.shape), adapter.dtype_name(data), i, adapter.name])
    return rows


class _Decoder:
    """Rebuilds Python data from the JSON content and the file's arrays."""

    def __init__(self, path: Any, tensors: Mapping[str, Any]):
        self.path = path
        self.tensors = tensors
        self.used: set[str] = set()

    def fail(self, message: str) -> StateFileError:
        return StateFileError(self.path, f"malformed content: {message}")

    def decode(self, node: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(x, depth + 1) for x in node]
        if not isinstance(node, dict):
            raise self.fail(f"unexpected {type(node).__name__}")
        tags = [k for k in node if k.startswith("$")]
        if not tags:
            return {k: self.decode(v, depth + 1) for k, v in node.items()}
        if len(node) != 1:
            raise self.fail(f"tag {tags[0]!r} mixed with other keys")
        tag, value = next(iter(node.items()))
        if tag in ("$array", "$scalar"):
            if not isinstance(value, str) or value not in self.tensors:
                raise self.fail(f"reference to a missing array {value!r}")
            if value in self.used:
                raise self.fail(f"array {value!r} is referenced twice")
            self.used.add(value)
            array = self.tensors[value]
            if tag == "$scalar":
                if getattr(array, "shape", None) != ():
                    raise self.fail(f"scalar {value!r} is not 0-d")
                return array[()] if isinstance(array, np.ndarray) else array
            return array
        if tag == "$tuple":
            if not isinstance(value, list):
                raise self.fail("$tuple must hold a list")
            return tuple(self.decode(x, depth + 1) for x in value)
        if tag == "$float":
            if value not in ("nan", "inf", "-inf"):
                raise self.fail(f"bad $float {value!r}")
            return float(value)
        if tag == "$map":
            if not isinstance(value, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in value
            ):
                raise self.fail("$map must hold [key, value] pairs")
            out = {}
            for k, v in value:
                key = self.decode(k, depth + 1)
                if not _is_key(key):
                    raise self.fail(f"bad key {key!r}")
                out[key] = self.decode(v, depth + 1)
            return out
        raise self.fail(f"unknown tag {tag!r}")


# ---------------------------------------------------------------------------------
# safetensors: write (atomic) and read (validated)
# ---------------------------------------------------------------------------------


def write_safetensors(
    path: PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
    dtypes: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file atomically. Arrays whose dtype is an ml_dtypes type
    (bfloat16, float8) are stored as their raw unsigned-integer bits; ``dtypes`` (name ->
    logical dtype) and a CRC-32 per array are added to the metadata."""
    order = sorted(tensors, key=lambda k: (-_stored(tensors[k]).dtype.itemsize, k))
    header: dict[str, Any] = {}
    offset = 0
    checksums = {}
    for name in order:
        stored = _stored(tensors[name])
        nbytes = stored.nbytes
        header[name] = {
            "dtype": _CODE_OF[stored.dtype],
            "shape": list(stored.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        checksums[name] = zlib.crc32(_bytes_of(stored))
        offset += nbytes
    meta = dict(metadata)
    if dtypes:
        meta["uniopt.dtypes"] = _dumps(dict(dtypes))
    meta["uniopt.crc32"] = _dumps(checksums)
    header = {"__metadata__": meta, **header}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    raw += b" " * (-len(raw) % 8)

    def write(f: IO[bytes]) -> None:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        _write_data(f, [_stored(tensors[name]) for name in order])

    atomic_write(path, write)


def _stored(array: np.ndarray) -> np.ndarray:
    name = array.dtype.name
    if name in _TAGGED:
        return array.view(_CODES[_TAGGED[name][0]])
    return array


def _bytes_of(array: np.ndarray) -> memoryview:
    return memoryview(array.reshape(-1).view(np.uint8))


def _write_data(f: IO[bytes], arrays: list[np.ndarray]) -> None:
    for array in arrays:
        f.write(_bytes_of(array))


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, and rename it over
    ``path``; on any failure the temporary file is removed and ``path`` is untouched."""
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise IsADirectoryError(f"{os.fspath(path)} is a directory")
    directory, base = os.path.split(target)
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TensorEntry:
    """One array as the file's header describes it."""

    name: str
    dtype: str  #: logical dtype name (``"float32"``, ``"bfloat16"``)
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A safetensors header: metadata and array entries (no array data read)."""

    metadata: dict[str, str]
    entries: dict[str, TensorEntry]
    data_start: int
    data_size: int


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse_json(path: Any, text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise StateFileError(path, f"{what} is not valid JSON ({error})") from None


def read_header(path: PathLike) -> Header:
    """Read and validate a safetensors header without reading array data."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise StateFileError(path, "not a safetensors file (shorter than 8 bytes)")
            n = int.from_bytes(head, "little")
            if n < 2 or n > MAX_HEADER_BYTES or n > size - 8:
                raise StateFileError(
                    path,
                    "not a safetensors file, or truncated: the header length "
                    f"{n} does not fit a file of {size} bytes{_looks_like(head)}",
                )
            raw = f.read(n)
    except OSError as error:
        raise StateFileError(path, f"cannot read: {error.strerror or error}") from None
    if len(raw) < n:
        raise StateFileError(path, "truncated header")
    header = _parse_json(path, raw.rstrip(b" "), "the safetensors header")
    if not isinstance(header, dict):
        raise StateFileError(path, "not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise StateFileError(path, "__metadata__ must map strings to strings")
    dtypes = {}
    if "uniopt.dtypes" in metadata:
        dtypes = _parse_json(path, metadata["uniopt.dtypes"], "uniopt.dtypes")
        if not isinstance(dtypes, dict) or not all(v in _TAGGED for v in dtypes.values()):
            raise StateFileError(path, "uniopt.dtypes names an unsupported dtype")
    data_size = size - 8 - n
    entries = {}
    for name, e in header.items():
        entries[name] = _entry(path, name, e, dtypes.get(name), data_size)
    spans = sorted((e.begin, e.end, e.name) for e in entries.values())
    at = 0
    for begin, end, name in spans:
        if begin != at:
            raise StateFileError(path, f"corrupted: array {name!r} does not start at byte {at}")
        at = end
    if at != data_size:
        raise StateFileError(
            path,
            f"truncated or corrupted: the header describes {at} bytes of array data, "
            f"the file holds {data_size}",
        )
    return Header(metadata, entries, 8 + n, data_size)


def _looks_like(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        kind = "a zip archive (torch.save)"
    elif head[:1] == b"\x80":
        kind = "a pickle"
    else:
        return ""
    return (
        f"; it looks like {kind}, which uniopt never unpickles (a torch.optim "
        "state_dict converts with: python -m uniopt convert IN OUT)"
    )


def _entry(path: Any, name: str, e: Any, tagged: str | None, data_size: int) -> TensorEntry:
    def bad(why: str) -> StateFileError:
        return StateFileError(path, f"corrupted header entry for array {name!r}: {why}")

    if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
        raise bad("expected dtype, shape and data_offsets")
    code, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
    if code in _NATIVE_TAGGED:
        logical, itemsize = _NATIVE_TAGGED[code], 2 if code == "BF16" else 1
    elif code in _CODES:
        itemsize = np.dtype(_CODES[code]).itemsize
        logical = np.dtype(_CODES[code]).name
        if tagged is not None:
            if _TAGGED[tagged][0] != code:
                raise bad(f"{tagged} cannot be stored as {code}")
            logical = tagged
    else:
        raise bad(f"unsupported dtype {code!r}")
    if not _naturals(shape) or not _naturals(offsets) or len(offsets) != 2:
        raise bad("shape and data_offsets must be lists of non-negative integers")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise bad(f"data_offsets {offsets} outside the {data_size} data bytes")
    if math.prod(shape) * itemsize != end - begin:
        raise bad(f"shape {shape} of {code} needs {math.prod(shape) * itemsize} bytes")
    return TensorEntry(name, logical, tuple(shape), begin, end)


def _naturals(xs: Any) -> bool:
    return isinstance(xs, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs
    )


def _logical_dtype(name: str) -> np.dtype:
    if name in _TAGGED:
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - jax and torch installs have it
            raise TypeError(
                f"reading {name} arrays needs ml_dtypes: pip install ml_dtypes"
            ) from None
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def read_safetensors(path: PathLike) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Read and validate a whole safetensors file: ``(metadata, arrays)``. Arrays are
    native-endian NumPy arrays (bfloat16/float8 as ml_dtypes types), each checked
    against its CRC-32 when the file carries them."""
    header = read_header(path)
    checksums = {}
    if "uniopt.crc32" in header.metadata:
        checksums = _parse_json(path, header.metadata["uniopt.crc32"], "uniopt.crc32")
        if not isinstance(checksums, dict):
            raise StateFileError(path, "uniopt.crc32 must be an object")
    buffer = bytearray(header.data_size)
    try:
        with open(path, "rb") as f:
            f.seek(header.data_start)
            got = f.readinto(buffer)
    except OSError as error:
        raise StateFileError(path, f"cannot read: {error.strerror or error}") from None
    if got != header.data_size:
        raise StateFileError(path, "truncated: the file changed while being read")
    arrays = {}
    view = memoryview(buffer)
    for name, e in header.entries.items():
        chunk = view[e.begin : e.end]
        expected = checksums.get(name)
        if expected is not None and zlib.crc32(chunk) != expected:
            raise StateFileError(path, f"corrupted: array {name!r} fails its checksum")
        logical = _logical_dtype(e.dtype)
        stored = (
            np.dtype(_CODES[_TAGGED[e.dtype][0]])
            if e.dtype in _TAGGED
            else logical.newbyteorder("<")
        )
        array = np.frombuffer(chunk, dtype=stored).reshape(e.shape)
        if e.dtype in _TAGGED:
            array = array.view(logical)
        elif stored.byteorder not in ("=", "|") and stored != logical:
            array = array.astype(logical)
        arrays[name] = array.copy()  # owns its memory, aligned and writable
    return header.metadata, arrays


def _check_uniopt(path: Any, metadata: Mapping[str, str]) -> None:
    fmt = metadata.get("uniopt.format")
    if fmt != FILE_FORMAT:
        raise StateFileError(
            path,
            "not a uniopt state file (a safetensors file without uniopt metadata"
            + (f"; format {fmt!r})" if fmt else ")"),
        )
    version = metadata.get("uniopt.version", "")
    if not version.isdigit():
        raise StateFileError(path, f"bad uniopt.version {version!r}")
    if int(version) > FILE_VERSION:
        raise StateFileError(
            path,
            f"written by a newer uniopt (file format version {version}); this uniopt reads "
            f"versions up to {FILE_VERSION}: upgrade uniopt",
        )
    if int(version) < 1:
        raise StateFileError(path, f"bad uniopt.version {version!r}")
    if "uniopt.content" not in metadata:
        raise StateFileError(path, "missing uniopt.content")


def _info(path: Any, metadata: Mapping[str, str]) -> dict[str, Any]:
    info = _parse_json(path, metadata.get("uniopt.info", "{}"), "uniopt.info")
    if not isinstance(info, dict) or not isinstance(info.get("parts", []), list):
        raise StateFileError(path, "malformed uniopt.info")
    info.setdefault("parts", [])
    return info


def _read(path: PathLike) -> tuple[Any, dict[str, Any]]:
    metadata, arrays = read_safetensors(path)
    _check_uniopt(path, metadata)
    content = _parse_json(path, metadata["uniopt.content"], "uniopt.content")
    decoder = _Decoder(path, arrays)
    obj = decoder.decode(content)
    unused = sorted(set(arrays) - decoder.used)
    if unused:
        raise StateFileError(path, f"malformed content: arrays {unused[:5]} are not referenced")
    return obj, _info(path, metadata)


def read_info(path: PathLike) -> tuple[dict[str, Any], Any, Header]:
    """``(info, content, header)`` of a uniopt state file without reading array data:
    ``content`` is the saved structure with each array replaced by its
    :class:`TensorEntry`."""
    header = read_header(path)
    _check_uniopt(path, header.metadata)
    content = _parse_json(path, header.metadata["uniopt.content"], "uniopt.content")
    return _info(path, header.metadata), _Decoder(path, header.entries).decode(content), header


# ---------------------------------------------------------------------------------
# loading into objects, strict / non-strict matching
# ---------------------------------------------------------------------------------


def _part(info: Mapping[str, Any], path: list) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in info.get("parts", []):
        if isinstance(part, dict) and part.get("path") == path:
            merged.update(part)
    return merged


def _restore(path: Any, obj: Any, info: dict[str, Any], into: Any, strict: bool) -> Any:
    if isinstance(into, Mapping):
        if not isinstance(obj, Mapping):
            raise StateFileError(path, "the file does not hold a checkpoint dict; pass one object")
        missing = [k for k in into if k not in obj]
        if missing:
            raise StateFileError(
                path, f"the checkpoint has no entries {missing}; it holds {sorted(map(str, obj))}"
            )
        targets = [(k, into[k], obj[k], _part(info, [k])) for k in into]
    else:
        if info.get("kind") == "checkpoint" and isinstance(obj, Mapping):
            raise StateFileError(
                path,
                f"the file holds a checkpoint with entries {sorted(map(str, obj))}: pass "
                "into={key: object, ...}",
            )
        targets = [(None, into, obj, _part(info, []))]
    plans = []
    problems = []
    for key, target, state, part in targets:
        prefix = f"[{key!r}] " if key is not None else ""
        if _is_optimizer(target):
            plan = _match(target, state, strict)
            problems += [prefix + p for p in plan.problems]
            plans.append(plan)
        else:
            plans.append(None)
            if not callable(getattr(target, "load_state_dict", None)):
                problems.append(f"{prefix}{type(target).__name__} has no load_state_dict()")
            elif part.get("class") and part["class"] != type(target).__qualname__:
                problems.append(
                    f"{prefix}the file holds a {part['class']} state, not a "
                    f"{type(target).__qualname__} state"
                )
            elif _is_scheduler(target) and part.get("kind") == "optimizer":
                problems.append(f"{prefix}the file holds an optimizer state, not a scheduler state")
    if problems:
        raise StateMismatchError(f"uniopt.load({os.fspath(path)!r})", problems)
    done: list[tuple[Any, Any]] = []
    reports = {}
    try:
        for (key, target, state, _), plan in zip(targets, plans):
            snapshot = target.state_dict() if len(targets) > 1 else None
            if plan is not None:
                target.load_state_dict(plan.state_dict)
                reports[key] = plan.report
            else:
                target.load_state_dict(state)
                reports[key] = None
            done.append((target, snapshot))
    except BaseException:
        for target, snapshot in reversed(done):
            with contextlib.suppress(Exception):
                target.load_state_dict(snapshot)
        raise
    return reports if isinstance(into, Mapping) else reports[None]


@dataclass
class _Plan:
    state_dict: dict[str, Any]
    problems: list[str]
    report: LoadReport


def _match(opt: Any, sd: Any, strict: bool) -> _Plan:
    """Check ``sd`` against ``opt`` by name and build the state dict to load.

    ``problems`` is what must be refused: every mismatch with ``strict``, otherwise only
    what no intersection can fix (another algorithm, invalid hyperparameters)."""
    owner = f"{type(opt).__name__}.load_state_dict"
    if not isinstance(sd, Mapping):
        raise TypeError(f"{owner}: expected a state dict, got {type(sd).__name__}")
    if sd.get("format") != OPTIMIZER_FORMAT:
        raise ValueError(f"{owner}: not a uniopt optimizer state (format={sd.get('format')!r})")
    saved_groups, saved_state = sd.get("param_groups"), sd.get("state")
    if not isinstance(saved_groups, list) or not all(
        isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in saved_groups
    ):
        raise ValueError(f"{owner}: malformed state: 'param_groups' must be a list of groups")
    if not isinstance(saved_state, Mapping):
        raise ValueError(f"{owner}: malformed state: 'state' must be a dict")
    fatal: list[str] = []  # refused in both modes
    mismatches: list[str] = []  # refused with strict, skipped without
    report = LoadReport()
    algorithm = opt.algorithm
    same_algorithm = sd.get("algorithm") == algorithm
    if not same_algorithm:
        fatal.append(f"the state is for {sd.get('algorithm')!r}, the optimizer is {algorithm!r}")
    params = _targets(opt)  # name -> (group index, shape, dtype)
    saved_group_of = {n: j for j, g in enumerate(saved_groups) for n in g["params"]}

    if strict:
        if len(saved_groups) != len(opt.param_groups):
            mismatches.append(
                f"the state has {len(saved_groups)} param groups, the optimizer "
                f"{len(opt.param_groups)}"
            )
        for i, (saved, group) in enumerate(zip(saved_groups, opt.param_groups)):
            missing = [n for n in group["param_names"] if n not in saved["params"]]
            unexpected = [n for n in saved["params"] if n not in group["param_names"]]
            if missing:
                mismatches.append(f"group {i}: the state has no parameters {missing}")
            if unexpected:
                mismatches.append(f"group {i}: the optimizer has no parameters {unexpected}")
        groups = [dict(g) for g in saved_groups]
    else:
        groups = []
        for i, group in enumerate(opt.param_groups):
            origin = {saved_group_of[n] for n in group["param_names"] if n in saved_group_of}
            hp: dict[str, Any] = {}
            if len(origin) == 1:
                hp = {k: v for k, v in saved_groups[origin.pop()].items() if k != "params"}
            elif origin:
                report.notes.append(
                    f"group {i}: its parameters come from saved groups {sorted(origin)}; "
                    "it keeps its own hyperparameters"
                )
            groups.append({**hp, "params": list(group["param_names"])})
        report.missing = [n for n in params if n not in saved_group_of]
        for n in saved_group_of:
            if n not in params:
                report.skipped[n] = "the optimizer has no such parameter"
    for i, group in enumerate(groups):
        if isinstance(group.get("unsaved"), Mapping):
            report.notes.append(
                f"group {i}: saved without {sorted(group['unsaved'])} (functions cannot be "
                "saved); the optimizer keeps its own"
            )

    slots_of = {}
    for i, group in enumerate(opt.param_groups):
        source = groups[i] if i < len(groups) else {}
        hp = {k: source.get(k, group[k]) for k in opt.defaults}
        try:
            hp = type(opt)._validated(hp, owner)
            slots_of[i] = opt.rule.from_group(hp).slots()
        except (TypeError, ValueError, KeyError) as error:
            fatal.append(f"group {i}: {error}")

    state: dict[str, Any] = {}
    for name, entry in saved_state.items():
        if name not in params:
            if strict:
                mismatches.append(f"the optimizer has no parameter {name!r} (the state has)")
            else:
                report.skipped[name] = "the optimizer has no such parameter"
            continue
        i, shape, dtype, master = params[name]
        if i not in slots_of or not same_algorithm:
            continue  # already refused: slot checks would only add noise
        slots = {**slots_of[i], "master": 0.0} if master else slots_of[i]
        wrong = entry_problems(entry, slots, shape, dtype)
        if wrong:
            mismatches += [f"{name!r}: {w}" for w in wrong]
            report.skipped[name] = "; ".join(wrong)
            continue
        state[name] = entry
        report.loaded.append(name)
    if strict:
        report.skipped = {}
    problems = fatal + mismatches if strict else fatal
    return _Plan({**sd, "param_groups": groups, "state": state}, problems, report)


def _targets(opt: Any) -> dict[str, tuple[int, tuple[int, ...], str, bool]]:
    """``name -> (group index, shape, state dtype, master)`` of every parameter. With
    ``multi_precision`` float16/bfloat16 parameters keep float32 state and a float32
    ``master`` copy (as the engine's segments do)."""
    from uniopt._adapter import adapter_for

    multi_precision = bool(getattr(opt, "multi_precision", False))
    out = {}
    for i, group in enumerate(opt.param_groups):
        for name, p in zip(group["param_names"], group["params"]):
            adapter = adapter_for(p)
            data = adapter.data(p)
            dtype = adapter.dtype_name(data)
            master = multi_precision and dtype in ("float16", "bfloat16")
            out[name] = (i, tuple(data.shape), "float32" if master else dtype, master)
    return out
