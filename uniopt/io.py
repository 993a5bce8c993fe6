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
(``"2"``), ``"uniopt.info"`` (a JSON summary for ``python -m uniopt inspect``: what was
saved, algorithm, flavor, steps, parameter names/shapes/dtypes), ``"uniopt.dtypes"``
(logical dtypes of arrays stored under another dtype: bfloat16 is stored as its raw
``U16`` bits, the float8 types as ``U8``), ``"uniopt.crc32"`` (a CRC-32 per array) and
``"uniopt.header-sha256"`` (a SHA-256 of the header: all metadata and every array's
name, dtype and shape; see :mod:`uniopt.io_safetensors`). Tensor names are the arrays'
paths (``state/fc.weight/exp_avg``), so the file also opens with
``safetensors.numpy.load_file``. The file is written and read by uniopt alone (NumPy and
the standard library); the ``safetensors`` package is not needed.

**Versions.** Version 2 added the header checksum: a file that says it is version 2 or
later must carry a matching one. Version 1 files (no header checksum) still load.

**Safety.** Nothing is ever unpickled or evaluated: loading parses JSON and copies
bytes into NumPy arrays of a fixed set of dtypes, and checks the header checksum, every
size, shape, offset, tag, and array checksum first. Any defect raises
:class:`StateFileError` (a ``ValueError``).

**Atomic writes** (:mod:`uniopt.io_atomic`). The file is written to a temporary file
``.<name>.<12 hex digits>.tmp`` beside the target, flushed and fsynced, then renamed over
the target with ``os.replace``: a crash leaves either the old file or the new one, never
a mix. Temporaries left by a save that was killed are removed by the next save of the
same target. A symlinked target is written through (the link's target is replaced, the
link stays); an existing target keeps its permission bits.

**What can be saved.** uniopt optimizers (their ``state_dict()``), uniopt schedulers
and any object with ``state_dict()`` (its state dict), state dicts, and any nesting of
dicts, lists and tuples of those, arrays (NumPy, or any backend's, stored as NumPy),
Python numbers, strings, booleans and None. Functions cannot be saved: a param group's
learning-rate *schedule* is saved as its current value (``"lr_at_save"``) and left out
(``"unsaved"`` names it), so loading keeps the target optimizer's own ``lr``; re-attach
the schedule when constructing the optimizer you load into.

The implementation is split by layer: :mod:`uniopt.io_atomic` (atomic replacement),
:mod:`uniopt.io_safetensors` (the file format), :mod:`uniopt.io_codec` (objects <-> JSON
and arrays) and :mod:`uniopt.io_match` (matching state to an optimizer by name). This
module is the public face; every name below is importable from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uniopt.io_atomic import PathLike, atomic_write
from uniopt.io_codec import MAX_DEPTH, OPTIMIZER_FORMAT, Decoder, Encoder
from uniopt.io_match import LoadReport, StateMismatchError, load_state, restore
from uniopt.io_safetensors import (
    CRC_KEY,
    DIGEST_KEY,
    MAX_HEADER_BYTES,
    Header,
    StateFileError,
    TensorEntry,
    dumps,
    parse_json,
    read_header,
    read_safetensors,
    write_safetensors,
)

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "MAX_DEPTH",
    "MAX_HEADER_BYTES",
    "OPTIMIZER_FORMAT",
    "Header",
    "LoadReport",
    "PathLike",
    "StateFileError",
    "StateMismatchError",
    "TensorEntry",
    "atomic_write",
    "load",
    "load_state",
    "read_header",
    "read_info",
    "read_safetensors",
    "save",
    "write_safetensors",
]

FILE_FORMAT = "uniopt.state-file"
#: the format version written; 2 added the header checksum (``uniopt.header-sha256``)
FILE_VERSION = 2
#: the first version whose files must carry the header checksum
CHECKSUMMED_VERSION = 2


def save(obj: Any, path: PathLike) -> None:
    """Write ``obj`` to ``path`` as a uniopt state file (safetensors; atomic).

    ``obj`` may be a uniopt optimizer or scheduler (their ``state_dict()`` is saved),
    any object with ``state_dict()``, a state dict, or a checkpoint: a dict mixing
    those with plain data, e.g. ``{"optimizer": opt, "scheduler": sched, "epoch": 3}``.
    Arrays of any backend are stored as host NumPy arrays with their dtype.

    The write is atomic and first removes temporaries that an earlier, killed save of
    the same ``path`` left behind. A symlinked ``path`` is written through (its target
    is replaced); an existing file keeps its permission bits.

    Raises:
        TypeError: ``obj`` holds something that is not data (a function, an
            arbitrary object), naming where it is.
        IsADirectoryError: ``path`` is a directory.
        OSError: ``path`` cannot be written (missing directory, permissions, disk full).
    """
    encoder = Encoder()
    content = encoder.encode(obj, ())
    info = {"kind": encoder.kind(), "parts": list(encoder.parts.values())}
    metadata = {
        "uniopt.format": FILE_FORMAT,
        "uniopt.version": str(FILE_VERSION),
        "uniopt.content": dumps(content),
        "uniopt.info": dumps(info),
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
            corrupted (its header or an array fails its checksum), or from a newer
            uniopt.
        StateMismatchError: the state does not fit the optimizer (every mismatch listed).
    """
    obj, info = _read(path)
    if into is None:
        return obj
    return restore(path, obj, info, into, strict)


def _check_uniopt(path: Any, metadata: Mapping[str, str]) -> None:
    """Refuse what is not a uniopt state file this uniopt reads. (A header checksum
    present was verified by :func:`read_header`; here its absence is refused from
    version 2 on.)"""
    fmt = metadata.get("uniopt.format")
    if fmt != FILE_FORMAT:
        raise StateFileError(
            path,
            "not a uniopt state file (a safetensors file without uniopt metadata"
            + (f"; format {fmt!r})" if fmt else ")"),
        )
    version = metadata.get("uniopt.version", "")
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise StateFileError(path, f"bad uniopt.version {version!r}")
    if int(version) > FILE_VERSION:
        raise StateFileError(
            path,
            f"written by a newer uniopt (file format version {version}); this uniopt reads "
            f"versions up to {FILE_VERSION}: upgrade uniopt",
        )
    if int(version) >= CHECKSUMMED_VERSION:
        absent = [key for key in (DIGEST_KEY, CRC_KEY) if key not in metadata]
        if absent:
            raise StateFileError(
                path,
                f"corrupted: a version {version} file must carry {' and '.join(absent)}, "
                "and this one does not",
            )
    if "uniopt.content" not in metadata:
        raise StateFileError(path, "missing uniopt.content")


def _info(path: Any, metadata: Mapping[str, str]) -> dict[str, Any]:
    """The file's ``uniopt.info`` summary, checked: ``parts`` is a list of objects, each
    with a ``path`` that is a list (of the keys leading to the part)."""
    info = parse_json(path, metadata.get("uniopt.info", "{}"), "uniopt.info")
    if not isinstance(info, dict) or not isinstance(info.get("parts", []), list):
        raise StateFileError(path, "malformed uniopt.info")
    for part in info.setdefault("parts", []):
        if not isinstance(part, dict) or not isinstance(part.get("path", []), list):
            raise StateFileError(path, "malformed uniopt.info: a part without a valid path")
    return info


def _read(path: PathLike) -> tuple[Any, dict[str, Any]]:
    """``(content, info)`` of a whole file, every array checked."""
    metadata, arrays = read_safetensors(path)
    _check_uniopt(path, metadata)
    content = parse_json(path, metadata["uniopt.content"], "uniopt.content")
    decoder = Decoder(path, arrays)
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
    content = parse_json(path, header.metadata["uniopt.content"], "uniopt.content")
    return _info(path, header.metadata), Decoder(path, header.entries).decode(content), header
