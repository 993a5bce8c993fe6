"""One formula, two evaluators: Python ``math`` for number steps, array API for array steps.

Every schedule is written once as arithmetic on a step ``t`` plus a handful of
operations taken from an ``ops`` object (``cos``, ``where``, ``clip``, ``divmod``, ...).
:func:`prepare` checks the step, looks at it and returns the right ``ops`` with ``t``
already converted:

* a Python number (``int``, integral ``float``, numpy scalar): ``t`` is a Python float
  and the operations come from :mod:`math`, so the schedule returns a Python float
  computed in float64;
* an array of any array-API library (numpy, torch, jax incl. tracers under ``jax.jit``,
  array_api_strict): ``t`` is the step cast to a floating dtype (kept if the step is
  already floating; otherwise float64, or float32 where the namespace has no float64,
  e.g. jax with x64 disabled) and the operations are the namespace's. Nothing branches
  in Python on array values, so the schedules trace under ``jax.jit``.

**Precision.** Whatever counts whole periods or compares the step with a boundary uses
the step as given: for an integer step (a Python ``int`` or an integer array)
``ops.divmod`` and ``ops.before`` work in exact integer arithmetic and only the
remainder within one period is converted to float. So a jax ``int32`` step of
``10**9`` evaluated in float32 still lands exactly on a period of
``cosine_annealing`` (the float32 value ``pi * 1e9 / T`` would not).

**Checks.** A step is a whole number >= 0 (the number of completed optimizer steps);
anything else raises ``ValueError: <schedule>: invalid step=<value>: ...``
(``TypeError`` for a bool, a string or a non-numeric array), and so does a rate that
is not a finite number >= 0 (an overflowing ``gamma ** t``, a user's function
returning a negative factor). These checks read values, so they apply where values
can be read without tracing or a device transfer: Python numbers, numpy and
array_api_strict arrays, and torch and jax arrays on the CPU outside ``torch.compile``
/ ``jax.jit``. Traced steps (``jax.jit``, ``torch.compile``) and arrays on an
accelerator are not checked (reading them would stop the trace or force a host sync
each step); nothing is clamped: a negative traced step gives the formula's value.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from array_api_compat import (
    array_namespace,
    device,
    is_array_api_strict_namespace,
    is_jax_array,
    is_numpy_array,
    is_torch_array,
)

STEP_RULE = "it must be a whole number >= 0 (the number of completed steps)"
RATE_RULE = "it must be a finite number >= 0"


def _shown(value: Any) -> str:
    """``repr(value)``, with the digits of a huge int elided."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:12]}...({len(text)} digits)"


def _bad_step(owner: str, step: Any, requirement: str = STEP_RULE) -> ValueError:
    """``<owner>: invalid step=<step>: <requirement>``; a str ``step`` is shown as is."""
    shown = step if isinstance(step, str) else _shown(step)
    return ValueError(f"{owner}: invalid step={shown}: {requirement}")


def _bad_rate(owner: str, step: Any, rate: Any) -> ValueError:
    return _bad_step(owner, step, f"the rate there is {rate!r}, but {RATE_RULE}")


def number_step(owner: str, step: Any) -> int:
    """A Python number step as an exact ``int`` >= 0, or ValueError naming ``owner``."""
    if isinstance(step, numbers.Integral):
        whole = int(step)
    else:
        try:
            value = float(step)
        except OverflowError:
            raise _bad_step(owner, step) from None
        if not math.isfinite(value) or not value.is_integer():
            raise _bad_step(owner, step)
        whole = int(value)
    if whole < 0:
        raise _bad_step(owner, step)
    try:
        float(whole)
    except OverflowError:
        raise _bad_step(owner, step, "it must fit in a float64") from None
    return whole


class ScalarOps:
    """float64 operations on Python floats (the number step path)."""

    is_array = False
    cos = staticmethod(math.cos)
    log = staticmethod(math.log)

    def __init__(self, owner: str, step: int):
        self.owner = owner
        self.step = step  # the exact int step

    @staticmethod
    def exp(x: float) -> float:
        try:
            return math.exp(x)
        except OverflowError:
            return math.inf

    @staticmethod
    def pow(base: float, exponent: float) -> float:
        """``base ** exponent``; ``inf`` (refused by :meth:`result`) on overflow."""
        try:
            return base**exponent
        except OverflowError:
            return math.inf

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

    def divmod(self, period: int) -> tuple[float, float]:
        """``(step // period, step % period)`` as floats, computed on the exact int."""
        q, r = divmod(self.step, period)
        return float(q), float(r)

    def mod(self, period: int) -> float:
        """``step % period`` as a float, computed on the exact int."""
        return float(self.step % period)

    def before(self, bound: float) -> bool:
        """``step < bound``, exactly."""
        return self.step < bound

    def shift(self, offset: int) -> int:
        """``max(step - offset, 0)`` as an int (a later schedule's own step)."""
        return max(self.step - offset, 0)

    def result(self, x: Any) -> float:
        value = float(x)
        if not value >= 0 or value == math.inf:  # also catches nan
            raise _bad_rate(self.owner, self.step, value)
        return value


class ArrayOps:
    """The same operations on arrays of one array-API namespace."""

    is_array = True

    def __init__(self, owner: str, xp: Any, step: Any, like: Any, integer: bool, readable: bool):
        self.owner = owner
        self.xp = xp
        self.step = step  # as given (integer or floating dtype)
        self.integer = integer
        self.readable = readable
        self.like = like  # the step in the floating dtype schedules compute in
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

    @staticmethod
    def pow(base: float, exponent: Any) -> Any:
        return base**exponent

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

    def _beyond_integers(self, bound: int) -> bool:
        """Whether ``bound`` exceeds every value of the (integer) step's dtype."""
        return bound > int(self.xp.iinfo(self.step.dtype).max)

    def divmod(self, period: int) -> tuple[Any, Any]:
        """``(step // period, step % period)`` in the floating dtype; for an integer
        step both are computed on the integers, so the remainder is exact."""
        xp = self.xp
        if not self.integer:
            return xp.floor(self.like / period), self.like % float(period)
        if self._beyond_integers(period):  # the step is within the first period
            return xp.zeros_like(self.like), self.like
        whole = self.step // period
        return xp.astype(whole, self.dtype), xp.astype(self.step - whole * period, self.dtype)

    def mod(self, period: int) -> Any:
        """``step % period`` in the floating dtype; exact for an integer step."""
        if not self.integer:
            return self.like % float(period)
        if self._beyond_integers(period):  # the step is within the first period
            return self.like
        return self.xp.astype(self.step % period, self.dtype)

    def before(self, bound: float) -> Any:
        """``step < bound`` (a boolean array); exact for an integer step."""
        if not self.integer:
            return self.like < bound
        xp = self.xp
        whole = math.ceil(bound)  # for an integer step, step < bound <=> step < ceil(bound)
        info = xp.iinfo(self.step.dtype)
        if whole > int(info.max) or whole <= int(info.min):  # outside the dtype: constant
            return xp.full_like(self.step, whole > int(info.max), dtype=xp.bool)
        return self.step < whole

    def shift(self, offset: int) -> Any:
        """``max(step - offset, 0)`` in the step's own dtype (a later schedule's step)."""
        xp = self.xp
        if not self.integer:
            return xp.clip(self.step - float(offset), min=0.0)
        if self._beyond_integers(offset):
            return xp.zeros_like(self.step)
        # where, not clip: an unsigned step - offset wraps around below zero
        return xp.where(self.step >= offset, self.step - offset, xp.zeros_like(self.step))

    def result(self, x: Any) -> Any:
        x = self.array(x)
        if x.dtype != self.dtype:
            x = self.xp.astype(x, self.dtype)
        if self.readable:
            if x.ndim == 0:  # the usual case: one read, checked in Python
                value = float(x)
                if not value >= 0 or value == math.inf:
                    raise _bad_rate(self.owner, _number(self.step, self.integer), value)
                return x
            xp = self.xp
            bad = ~(xp.isfinite(x) & (x >= 0))
            if bool(xp.any(bad)):
                step = _first(xp, self.step, bad, self.integer)
                raise _bad_rate(self.owner, step, _first(xp, x, bad, False))
        return x


def _number(x: Any, integer: bool) -> Any:
    """A 0-d array as a Python number."""
    return int(x) if integer else float(x)


def _first(xp: Any, x: Any, mask: Any, integer: bool) -> Any:
    """The first value of ``x`` where ``mask`` holds, as a Python number."""
    flat = xp.reshape(x, (-1,))
    index = int(xp.argmax(xp.astype(xp.reshape(mask, (-1,)), xp.int8)))
    return _number(flat[index], integer)


_KINDS: dict[Any, str] = {}


def _kind(xp: Any, dtype: Any) -> str:
    """``"int"``, ``"float"`` or ``"other"`` (bool, complex) for a dtype of ``xp``
    (remembered: ``isdtype`` is slow on some namespaces)."""
    key = (xp.__name__, dtype)
    try:
        return _KINDS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable dtype
        key = None
    if dtype == xp.bool:
        kind = "other"
    elif xp.isdtype(dtype, "integral"):
        kind = "int"
    elif xp.isdtype(dtype, "real floating"):
        kind = "float"
    else:
        kind = "other"
    if key is not None:
        _KINDS[key] = kind
    return kind


def readable(xp: Any, step: Any) -> bool:
    """Whether the values of array ``step`` can be read with no trace stopped and no
    device transfer: numpy and array_api_strict arrays, torch and jax arrays on the
    CPU outside ``torch.compile`` / ``jax.jit`` (and other tracing transforms)."""
    if is_numpy_array(step) or is_array_api_strict_namespace(xp):
        return True
    if is_torch_array(step):
        import torch

        wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
        return (
            step.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and not (wrapped is not None and wrapped(step))  # vmap, grad
        )
    if is_jax_array(step):
        import jax

        if isinstance(step, jax.core.Tracer):
            return False
        return all(d.platform == "cpu" for d in step.devices())
    return False  # cupy, dask, ...: on a device or lazy


def _check_array_values(owner: str, xp: Any, step: Any, integer: bool) -> None:
    if step.ndim == 0:  # the usual case: one read, checked in Python
        value = _number(step, integer)
        if value < 0 or not integer and not (math.isfinite(value) and value.is_integer()):
            raise _bad_step(owner, value)
        return
    bad = step < 0
    if not integer:
        bad = bad | ~xp.isfinite(step) | (xp.floor(step) != step)
    if bool(xp.any(bad)):
        raise _bad_step(owner, f"<array holding {_first(xp, step, bad, integer)!r}>")


def float_dtype(xp: Any, step: Any) -> Any:
    """The floating dtype a schedule computes in for an array ``step``."""
    if _kind(xp, step.dtype) == "float":
        return step.dtype
    info = xp.__array_namespace_info__()
    try:  # per device where the library knows (torch on MPS has no float64)
        floats = info.dtypes(kind="real floating", device=device(step))
    except Exception:  # a tracer or a namespace that rejects the device: library-wide
        floats = info.dtypes(kind="real floating")
    if "float64" in floats:
        return floats["float64"]
    return info.default_dtypes()["real floating"]


def prepare(step: Any, owner: str) -> tuple[Any, Any]:
    """``(ops, t)`` for ``step`` of schedule ``owner``, after checking the step (see the
    module docstring)."""
    if isinstance(step, bool):
        raise TypeError(f"{owner}: step must be an int or an array, not bool")
    if isinstance(step, numbers.Real):
        whole = number_step(owner, step)
        return ScalarOps(owner, whole), float(whole)
    try:
        xp = array_namespace(step)
    except TypeError:
        raise TypeError(
            f"{owner}: step must be an int or an array, got {type(step).__name__}"
        ) from None
    kind = _kind(xp, step.dtype)
    if kind == "other":
        raise TypeError(f"{owner}: step must be an integer or floating array, got {step.dtype}")
    integer = kind == "int"
    can_read = readable(xp, step)
    if can_read:
        _check_array_values(owner, xp, step, integer)
    t = xp.astype(step, float_dtype(xp, step)) if integer else step
    return ArrayOps(owner, xp, step, t, integer, can_read), t


def step_index(owner: str, step: Any) -> int:
    """A concrete step (a Python int or a 0-d integer array) as an ``int`` >= 0: for the
    forms that look the rate up by position (a list of learning rates)."""
    if isinstance(step, bool):
        raise TypeError(f"{owner}: step must be an int, not bool")
    if not isinstance(step, numbers.Real):
        try:
            step = operator.index(step)
        except TypeError:
            raise TypeError(
                f"{owner}: step must be a concrete integer to look up a list of learning "
                f"rates, got {type(step).__name__} (traced steps need a schedule such as "
                "uniopt.schedules.piecewise_decay)"
            ) from None
    return number_step(owner, step)
