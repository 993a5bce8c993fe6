"""Encoding of saved objects for state files: Python data <-> a JSON tree plus named
NumPy arrays (the ``"uniopt.content"`` of a file; the tags are documented in
:mod:`uniopt.io`).

:class:`Encoder` turns what :func:`uniopt.save` is given (optimizers, schedulers, objects
with ``state_dict()``, dicts, lists, tuples, arrays of any backend, numbers, strings,
booleans, None) into a JSON-able tree whose arrays are references ``{"$array": name}``,
collecting the arrays and a summary of what was saved where. :class:`Decoder` rebuilds
the data from such a tree, accepting only the known tags.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from uniopt.io_safetensors import CODE_OF, CODES, MAX_NDIM, TAGGED, StateFileError

__all__ = ["MAX_DEPTH", "OPTIMIZER_FORMAT", "Decoder", "Encoder", "is_optimizer", "is_scheduler"]

OPTIMIZER_FORMAT = "uniopt.optimizer"  # the "format" of an optimizer state_dict
MAX_DEPTH = 64


def is_optimizer(obj: Any) -> bool:
    """Whether ``obj`` is a uniopt optimizer (imported lazily: no cycle with the core)."""
    from uniopt.optimizer import Optimizer

    return isinstance(obj, Optimizer)


def is_scheduler(obj: Any) -> bool:
    """Whether ``obj`` is a uniopt learning-rate scheduler."""
    from uniopt.lr_scheduler._base import StateDictMixin

    return isinstance(obj, StateDictMixin)


def _path_text(path: tuple) -> str:
    """``("optimizer", "param_groups", 0)`` -> ``['optimizer']['param_groups'][0]``."""
    return "".join(f"[{key!r}]" for key in path) if path else "the object"


class Encoder:
    """Turns a saved object into a JSON-able tree, collecting its arrays."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}
        self.dtypes: dict[str, str] = {}
        #: what was saved where (for ``inspect`` and for checks on load), by path
        self.parts: dict[tuple, dict[str, Any]] = {}
        self._active: set[int] = set()

    def kind(self) -> str:
        """What the whole file holds: the root part's kind, else a checkpoint or data."""
        if () in self.parts:
            return self.parts[()]["kind"]
        return "checkpoint" if self.parts else "data"

    def part(self, path: tuple) -> dict[str, Any]:
        """The summary record of the object saved at ``path`` (created empty)."""
        return self.parts.setdefault(path, {"path": list(path)})

    def encode(self, obj: Any, path: tuple) -> Any:
        """The JSON tree of ``obj`` found at ``path``; its arrays go to ``tensors``."""
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
            if not is_key(k):
                raise TypeError(
                    f"cannot save {_path_text(path)}: key {k!r} is a {type(k).__name__}; "
                    "keys must be strings, numbers, booleans, None or tuples of those"
                )
            pairs.append([self.encode(k, (*path, "<key>")), self.encode(v, (*path, k))])
        return {"$map": pairs}

    def _stateful(self, obj: Any, path: tuple) -> Any:
        portable = getattr(obj, "portable_state_dict", None)  # torch: not state_dict()'s
        state = portable() if portable is not None else obj.state_dict()
        if is_optimizer(obj) or (
            isinstance(state, Mapping) and state.get("format") == OPTIMIZER_FORMAT
        ):
            kind = "optimizer"  # a uniopt optimizer, or a wrapper such as LookAhead
        elif is_scheduler(obj):
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
        sd = dict(sd)
        step = sd.get("step_count", 0)
        groups = sd.get("param_groups")
        unsaved_by_group: dict[str, dict[str, str]] = {}
        if isinstance(groups, list):  # absent or malformed groups are saved as they are
            groups, unsaved_by_group = _savable_groups(groups, step)
            sd["param_groups"] = groups
        state = sd.get("state")
        part = self.part(path)
        part.setdefault("kind", "optimizer")
        part.update(
            algorithm=sd.get("algorithm"),
            flavor=sd.get("flavor"),
            step_count=_json_number(step),
            groups=len(groups) if isinstance(groups, list) else None,
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
        if array.dtype.name in TAGGED:
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


def _savable_groups(groups: list, step: Any) -> tuple[list, dict[str, dict[str, str]]]:
    """Param groups without their callables (learning-rate schedules), each named in the
    group's ``"unsaved"`` (and returned by group index); ``"lr_at_save"`` keeps the rate
    a schedule gives at ``step``."""
    from uniopt import lr as lr_forms

    out: list[Any] = []
    unsaved_by_group: dict[str, dict[str, str]] = {}
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping):
            out.append(group)
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
        out.append(group)
    return out, unsaved_by_group


def _plain_keys(obj: Mapping) -> bool:
    return all(isinstance(k, str) and not k.startswith("$") for k in obj)


def is_key(k: Any) -> bool:
    """Whether ``k`` can be a saved dict key (JSON scalars and tuples of them)."""
    if k is None or isinstance(k, (str, bool, int, float)):
        return True
    return isinstance(k, tuple) and all(is_key(x) for x in k)


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
    if dtype.name in TAGGED:
        return _contiguous(array, dtype)
    if array.ndim > MAX_NDIM:
        raise TypeError(
            f"cannot save {_path_text(path)}: {array.ndim} dimensions; at most {MAX_NDIM} "
            "are supported"
        )
    little = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
    if little not in CODE_OF:
        raise TypeError(
            f"cannot save {_path_text(path)}: arrays of dtype {dtype} are not supported "
            f"(supported: {', '.join(sorted({str(np.dtype(v)) for v in CODES.values()}))}, "
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


class Decoder:
    """Rebuilds Python data from the JSON content and the file's arrays."""

    def __init__(self, path: Any, tensors: Mapping[str, Any]):
        self.path = path
        self.tensors = tensors
        self.used: set[str] = set()

    def fail(self, message: str) -> StateFileError:
        """The error for malformed content."""
        return StateFileError(self.path, f"malformed content: {message}")

    def decode(self, node: Any, depth: int = 0) -> Any:
        """The Python data of the JSON tree ``node`` (``depth``: its nesting level)."""
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
                if not is_key(key):
                    raise self.fail(f"bad key {key!r}")
                out[key] = self.decode(v, depth + 1)
            return out
        raise self.fail(f"unknown tag {tag!r}")
