"""The safetensors layer of uniopt state files: write (atomic, checksummed) and read
(validated), with NumPy and the standard library only.

A file is an 8-byte little-endian header length, a JSON header (padded with spaces to 8
bytes), then the raw little-endian bytes of every array. Besides the arrays' entries the
header holds a ``__metadata__`` string map; the writer adds to it

* ``"uniopt.crc32"``: a CRC-32 of every array's bytes, checked on read;
* ``"uniopt.dtypes"``: the logical dtype of arrays stored as raw bits (bfloat16 as
  ``U16``, the float8 types as ``U8``), or as real pairs (complex128, which safetensors
  has no code for, as ``F64`` with a last axis of 2: real, imaginary part);
* ``"uniopt.header-sha256"``: the SHA-256 of the header itself (:func:`header_digest`:
  the metadata and every array's name, dtype and shape), checked on read before anything
  in the header is used. Data offsets are left out of it so that other safetensors
  writers may lay the arrays out differently; they are checked by the exact tiling of the
  data, and the bytes they point at by the CRC-32s, which the digest covers.

Anything malformed raises :class:`StateFileError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from uniopt.io_atomic import PathLike, atomic_write

__all__ = [
    "DIGEST_KEY",
    "Header",
    "StateFileError",
    "TensorEntry",
    "header_digest",
    "read_header",
    "read_safetensors",
    "write_safetensors",
]

MAX_HEADER_BYTES = 100 * 2**20  # as the safetensors library
#: dimensions an array may have (NumPy 1's limit; NumPy 2 allows 64)
MAX_NDIM = 32
_MAX_BYTES = int(np.iinfo(np.intp).max)
DIGEST_KEY = "uniopt.header-sha256"
CRC_KEY = "uniopt.crc32"
DTYPES_KEY = "uniopt.dtypes"

#: safetensors dtype code -> NumPy dtype (little-endian)
CODES = {
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
CODE_OF = {np.dtype(v): k for k, v in CODES.items()}
#: ml_dtypes types: logical name -> (storage code, native safetensors code accepted on read)
TAGGED = {
    "bfloat16": ("U16", "BF16"),
    "float8_e4m3fn": ("U8", "F8_E4M3"),
    "float8_e5m2": ("U8", "F8_E5M2"),
    "complex128": ("F64", None),  # real pairs: one more axis, of 2 (see PAIRED)
}
#: tagged dtypes stored as real pairs: the stored shape has a last axis of 2
PAIRED = ("complex128",)
_NATIVE_TAGGED = {native: name for name, (_, native) in TAGGED.items()}


class StateFileError(ValueError):
    """A file that is not a readable uniopt state file: not safetensors, truncated,
    corrupted, malformed, or written by a newer uniopt. Nothing was loaded."""

    __module__ = "uniopt.io"  # where users import it from

    def __init__(self, path: Any, message: str):
        self.path = os.fspath(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


def dumps(x: Any) -> str:
    """Compact, ASCII, strict JSON (no NaN): the form of every metadata value."""
    return json.dumps(x, allow_nan=False, separators=(",", ":"), ensure_ascii=True)


# ---------------------------------------------------------------------------------
# write
# ---------------------------------------------------------------------------------


def header_digest(header: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a parsed safetensors header: its ``__metadata__`` (less
    :data:`DIGEST_KEY`) and every array entry less its ``data_offsets``, as canonical
    JSON (sorted keys, no spaces, ASCII)."""
    covered: dict[str, Any] = {}
    for name, entry in header.items():
        if name == "__metadata__" and isinstance(entry, Mapping):
            entry = {k: v for k, v in entry.items() if k != DIGEST_KEY}
        elif isinstance(entry, Mapping):
            entry = {k: v for k, v in entry.items() if k != "data_offsets"}
        covered[name] = entry
    text = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def write_safetensors(
    path: PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
    dtypes: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file atomically (:func:`uniopt.io_atomic.atomic_write`).
    Arrays whose dtype is an ml_dtypes type (bfloat16, float8) are stored as their raw
    unsigned-integer bits; ``dtypes`` (name -> logical dtype), a CRC-32 per array and the
    header's SHA-256 are added to the metadata."""
    order = sorted(tensors, key=lambda k: (-stored_view(tensors[k]).dtype.itemsize, k))
    entries: dict[str, Any] = {}
    offset = 0
    checksums = {}
    for name in order:
        stored = stored_view(tensors[name])
        nbytes = stored.nbytes
        entries[name] = {
            "dtype": CODE_OF[stored.dtype],
            "shape": list(stored.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        checksums[name] = zlib.crc32(_bytes_of(stored))
        offset += nbytes
    meta = {k: v for k, v in metadata.items() if k != DIGEST_KEY}
    if dtypes:
        meta[DTYPES_KEY] = dumps(dict(dtypes))
    meta[CRC_KEY] = dumps(checksums)
    header = {"__metadata__": meta, **entries}
    meta[DIGEST_KEY] = header_digest(header)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    raw += b" " * (-len(raw) % 8)

    def write(f: IO[bytes]) -> None:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        _write_data(f, [stored_view(tensors[name]) for name in order])

    atomic_write(path, write)


def stored_view(array: np.ndarray) -> np.ndarray:
    """``array`` as the dtype it is stored with (ml_dtypes types as unsigned bits)."""
    name = array.dtype.name
    if name in PAIRED:  # little-endian (re, im) float64 pairs
        return np.ascontiguousarray(array, "<c16").reshape(*array.shape, 1).view("<f8")
    if name in TAGGED:
        return array.view(CODES[TAGGED[name][0]])
    return array


def _bytes_of(array: np.ndarray) -> memoryview:
    return memoryview(array.reshape(-1).view(np.uint8))


def _write_data(f: IO[bytes], arrays: list[np.ndarray]) -> None:
    for array in arrays:
        f.write(_bytes_of(array))


# ---------------------------------------------------------------------------------
# read
# ---------------------------------------------------------------------------------


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


def parse_json(path: Any, text: str | bytes, what: str) -> Any:
    """Strict JSON (no NaN/Infinity literals, no duplicate keys) or a StateFileError."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError, UnicodeDecodeError) as error:
        raise StateFileError(path, f"{what} is not valid JSON ({error})") from None


def read_header(path: PathLike) -> Header:
    """Read and validate a safetensors header without reading array data. A header that
    carries :data:`DIGEST_KEY` must match it."""
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
    header = parse_json(path, raw.rstrip(b" "), "the safetensors header")
    if not isinstance(header, dict):
        raise StateFileError(path, "not a safetensors file (header is not a JSON object)")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise StateFileError(path, "__metadata__ must map strings to strings")
    if DIGEST_KEY in metadata and metadata[DIGEST_KEY] != header_digest(header):
        raise StateFileError(
            path,
            "corrupted: the header fails its checksum (uniopt.header-sha256); the "
            "file was changed after it was written",
        )
    header.pop("__metadata__", None)
    dtypes = {}
    if DTYPES_KEY in metadata:
        dtypes = parse_json(path, metadata[DTYPES_KEY], DTYPES_KEY)
        if not isinstance(dtypes, dict) or not all(
            isinstance(v, str) and v in TAGGED for v in dtypes.values()
        ):
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
    """Validate one header entry: a known dtype, a shape NumPy can hold, offsets within
    the data that span exactly the shape's bytes."""

    def bad(why: str) -> StateFileError:
        return StateFileError(path, f"corrupted header entry for array {name!r}: {why}")

    if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
        raise bad("expected dtype, shape and data_offsets")
    code, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
    if not isinstance(code, str):
        raise bad(f"dtype must be a string, not {code!r}")
    if code in _NATIVE_TAGGED:
        logical, itemsize = _NATIVE_TAGGED[code], 2 if code == "BF16" else 1
    elif code in CODES:
        itemsize = np.dtype(CODES[code]).itemsize
        logical = np.dtype(CODES[code]).name
        if tagged is not None:
            if TAGGED[tagged][0] != code:
                raise bad(f"{tagged} cannot be stored as {code}")
            logical = tagged
    else:
        raise bad(f"unsupported dtype {code!r}")
    if not _naturals(shape) or not _naturals(offsets) or len(offsets) != 2:
        raise bad("shape and data_offsets must be lists of non-negative integers")
    if len(shape) > MAX_NDIM:
        raise bad(f"{len(shape)} dimensions; at most {MAX_NDIM} are supported")
    extent = itemsize * math.prod(d for d in shape if d)  # NumPy's limit ignores zeros
    if extent > _MAX_BYTES:
        raise bad(f"shape {shape} is too large for an array")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise bad(f"data_offsets {offsets} outside the {data_size} data bytes")
    nbytes = math.prod(shape) * itemsize
    if nbytes != end - begin:
        raise bad(f"shape {shape} of {code} needs {nbytes} bytes, data_offsets give {end - begin}")
    if logical in PAIRED:  # the logical shape, less the pairs' axis
        if not shape or shape[-1] != 2:
            raise bad(f"{logical} is stored as {code} pairs: the last axis must be 2")
        shape = shape[:-1]
    return TensorEntry(name, logical, tuple(shape), begin, end)


def _naturals(xs: Any) -> bool:
    return isinstance(xs, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in xs
    )


def logical_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a logical dtype name (ml_dtypes types included)."""
    if name in TAGGED and name not in PAIRED:
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
    against its CRC-32 when the file carries them (then every array must have one)."""
    header = read_header(path)
    checksums = {}
    if CRC_KEY in header.metadata:
        checksums = parse_json(path, header.metadata[CRC_KEY], CRC_KEY)
        if not isinstance(checksums, dict):
            raise StateFileError(path, "uniopt.crc32 must be an object")
        unchecked = sorted(set(header.entries) - set(checksums))
        if unchecked:
            raise StateFileError(path, f"corrupted: arrays {unchecked[:5]} have no checksum")
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
        arrays[name] = _array(path, chunk, e)
    return header.metadata, arrays


def _array(path: Any, chunk: memoryview, e: TensorEntry) -> np.ndarray:
    """The bytes of entry ``e`` as a native-endian array that owns its memory."""
    logical = logical_dtype(e.dtype)
    stored = np.dtype(CODES[TAGGED[e.dtype][0]]) if e.dtype in TAGGED else logical.newbyteorder("<")
    paired = e.dtype in PAIRED
    try:
        array = np.frombuffer(chunk, dtype=stored).reshape(e.shape + (2,) * paired)
    except (ValueError, OverflowError) as error:  # _entry's checks should make this dead
        raise StateFileError(path, f"array {e.name!r}: {error}") from None
    if paired:
        array = array.view(logical).reshape(e.shape)
    elif e.dtype in TAGGED:
        array = array.view(logical)
    elif stored.byteorder not in ("=", "|") and stored != logical:
        array = array.astype(logical)
    return array.copy()  # owns its memory, aligned and writable
