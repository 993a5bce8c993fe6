"""Argument checks shared by the schedules and the schedulers.

Every message has the form of :mod:`uniopt.validation`::

    ValueError: cosine_annealing: invalid T_max=0: it must be an integer >= 1
    TypeError: step_decay: step_size must be an integer, got str

The owner is the factory being called (:func:`factory` sets it). A scheduler that
validates its arguments through a factory sets itself as the owner instead, with the
argument names it uses (:func:`owner`), so ``PolynomialLR(opt, steps=0)`` says
``PolynomialLR: invalid steps=0``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_OWNER: ContextVar[tuple[str, Mapping[str, str]] | None] = ContextVar(
    "uniopt_schedule_owner", default=None
)


@contextmanager
def owner(name: str, renames: Mapping[str, str] | None = None) -> Iterator[None]:
    """Name ``name`` as the owner of the argument errors raised inside the block, and
    show each argument ``a`` as ``renames[a]`` (``a[i]`` as ``renames[a][i]``)."""
    token = _OWNER.set((name, dict(renames or {})))
    try:
        yield
    finally:
        _OWNER.reset(token)


def factory(fn: F) -> F:
    """Decorator for a schedule factory: argument errors raised while it runs name it as
    their owner, unless a caller (a scheduler) already set one with :func:`owner`."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if _OWNER.get() is not None:
            return fn(*args, **kwargs)
        with owner(fn.__name__):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def current_owner() -> str:
    """The owner errors are reported for (``"schedule"`` outside any factory)."""
    context = _OWNER.get()
    return context[0] if context is not None else "schedule"


def _shown(name: str) -> str:
    context = _OWNER.get()
    if context is None:
        return name
    base, bracket, rest = name.partition("[")
    return context[1].get(base, base) + bracket + rest


def fail(name: str, value: Any, requirement: str) -> NoReturn:
    """``ValueError: <owner>: invalid <name>=<value>: <requirement>``."""
    raise ValueError(f"{current_owner()}: invalid {_shown(name)}={value!r}: {requirement}")


def wrong_type(name: str, expected: str, value: Any) -> NoReturn:
    """``TypeError: <owner>: <name> must be <expected>, got <type>``."""
    raise TypeError(
        f"{current_owner()}: {_shown(name)} must be {expected}, got {type(value).__name__}"
    )


def real(name: str, value: Any) -> float:
    """``value`` as a finite Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        wrong_type(name, "a real number", value)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float64
        fail(name, value, "it must be finite")
    if not math.isfinite(number):
        fail(name, value, "it must be finite")
    return number


def positive(name: str, value: Any) -> float:
    """A finite float > 0."""
    number = real(name, value)
    if number <= 0:
        fail(name, value, "it must be > 0")
    return number


def non_negative(name: str, value: Any) -> float:
    """A finite float >= 0."""
    number = real(name, value)
    if number < 0:
        fail(name, value, "it must be >= 0")
    return number


def in_range(name: str, value: Any, low: float, high: float) -> float:
    """A finite float in ``[low, high]``."""
    number = real(name, value)
    if not low <= number <= high:
        fail(name, value, f"it must be in [{low}, {high}]")
    return number


def at_least(name: str, value: float, bound_name: str, bound: float) -> float:
    """``value >= bound`` for two already checked numbers (e.g. ``max_lr >= base_lr``)."""
    if value < bound:
        fail(name, value, f"it must be >= {_shown(bound_name)}={bound!r}")
    return value


def integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int`` >= ``minimum`` (integral floats such as 10.0 are accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        wrong_type(name, "an integer", value)
    if not isinstance(value, numbers.Integral):
        number = float(value)
        if not math.isfinite(number) or not number.is_integer():
            fail(name, value, f"it must be an integer >= {minimum}")
    whole = int(value)
    if whole < minimum:
        fail(name, value, f"it must be an integer >= {minimum}")
    return whole


def flag(name: str, value: Any) -> bool:
    """A ``bool`` (numbers and strings are refused: ``"false"`` is truthy)."""
    if not isinstance(value, bool):
        wrong_type(name, "a bool", value)
    return value


def sequence(name: str, values: Any, what: str) -> Sequence[Any]:
    """A list or tuple (not a string), else TypeError."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        wrong_type(name, f"a list of {what}", values)
    return values


def increasing(name: str, values: Any, minimum: int = 0) -> list[int]:
    """A strictly increasing list of integers >= ``minimum``."""
    out = [
        integer(f"{name}[{i}]", v, minimum)
        for i, v in enumerate(sequence(name, values, "integers"))
    ]
    for a, b in zip(out, out[1:], strict=False):
        if b <= a:
            fail(name, list(values), "it must be strictly increasing")
    return out


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    """One of ``options``."""
    if not isinstance(value, str):
        wrong_type(name, f"one of {', '.join(map(repr, options))}", value)
    if value not in options:
        fail(name, value, f"it must be one of {', '.join(map(repr, options))}")
    return value


def callable_(name: str, value: Any) -> Any:
    """A callable."""
    if not callable(value):
        wrong_type(name, "callable", value)
    return value
