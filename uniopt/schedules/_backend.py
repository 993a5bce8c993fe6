"""One formula, two evaluators: Python ``math`` for number steps, array API for array steps.

Every schedule is written once as arithmetic on a step ``t`` plus a handful of
operations taken from an ``ops`` object (``cos``, ``where``, ``clip``, ...).
:func:`prepare` looks at the step and returns the right ``ops`` with ``t`` already
converted:

* a Python number (``int``, ``float``, numpy scalar): ``t`` is a Python float and the
  operations come from :mod:`math`, so the schedule returns a Python float computed in
  float64;
* an array of any array-API library (numpy, torch, jax incl. tracers under ``jax.jit``,
  array_api_strict): ``t`` is the step cast to a floating dtype (kept if the step is
  already floating; otherwise float64, or float32 where the namespace has no float64,
  e.g. jax with x64 disabled) and the operations are the namespace's. Nothing branches
  in Python on array values, so the schedules trace under ``jax.jit``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from array_api_compat import array_namespace, device


def is_number(step: Any) -> bool:
    """Whether ``step`` is a plain (non-array) real number; ``bool`` is rejected."""
    if isinstance(step, bool):
        raise TypeError("step must be an int or an array, not bool")
    return isinstance(step, numbers.Real)


class ScalarOps:
    """float64 operations on Python floats (the ``int`` step path)."""

    is_array = False
    cos = staticmethod(math.cos)
    exp = staticmethod(math.exp)
    log = staticmethod(math.log)

    @staticmethod
    def floor(x: float) -> float:
        return float(math.floor(x))

    @staticmethod
    def ceil(x: float) -> float:
        return float(math.ceil(x))

    @staticmethod
    def where(cond: bool, a: Any, b: Any) -> Any:
        return a if cond else b

    @staticmethod
    def clip(x: float, min: float | None = None, max: float | None = None) -> float:  # noqa: A002
        if min is not None and x < min:
            x = min
        if max is not None and x > max:
            x = max
        return float(x)

    @staticmethod
    def indicator(cond: bool) -> float:
        return 1.0 if cond else 0.0

    @staticmethod
    def index(x: float) -> int:
        """A whole-number float as the ``int`` a user callback expects."""
        return int(x)

    @staticmethod
    def result(x: Any) -> float:
        return float(x)


class ArrayOps:
    """The same operations on arrays of one array-API namespace."""

    is_array = True

    def __init__(self, xp: Any, like: Any):
        self.xp = xp
        self.like = like
        self.dtype = like.dtype
        self.cos = xp.cos
        self.exp = xp.exp
        self.log = xp.log
        self.floor = xp.floor
        self.ceil = xp.ceil

    def array(self, x: Any) -> Any:
        """``x`` as an array of the step's dtype, shape and device."""
        if isinstance(x, numbers.Real):
            return self.xp.full_like(self.like, float(x))
        return x

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return self.xp.where(cond, self.array(a), self.array(b))

    def clip(self, x: Any, min: float | None = None, max: float | None = None) -> Any:  # noqa: A002
        # clip, not maximum/minimum with a Python scalar: the latter is slow and breaks
        # torch.compile graphs (ARRAY_API_NOTES.md).
        return self.xp.clip(self.array(x), min=min, max=max)

    def indicator(self, cond: Any) -> Any:
        return self.xp.astype(cond, self.dtype)

    @staticmethod
    def index(x: Any) -> Any:
        return x

    def result(self, x: Any) -> Any:
        x = self.array(x)
        if x.dtype != self.dtype:
            x = self.xp.astype(x, self.dtype)
        return x


SCALAR_OPS = ScalarOps()


def float_dtype(xp: Any, step: Any) -> Any:
    """The floating dtype a schedule computes in for an array ``step``."""
    if xp.isdtype(step.dtype, "real floating"):
        return step.dtype
    info = xp.__array_namespace_info__()
    try:  # per device where the library knows (torch on MPS has no float64)
        floats = info.dtypes(kind="real floating", device=device(step))
    except Exception:  # a tracer or a namespace that rejects the device: library-wide
        floats = info.dtypes(kind="real floating")
    if "float64" in floats:
        return floats["float64"]
    return info.default_dtypes()["real floating"]


def prepare(step: Any) -> tuple[Any, Any]:
    """``(ops, t)`` for ``step``: see the module docstring."""
    if is_number(step):
        return SCALAR_OPS, float(step)
    xp = array_namespace(step)
    t = xp.astype(step, float_dtype(xp, step))
    return ArrayOps(xp, t), t
