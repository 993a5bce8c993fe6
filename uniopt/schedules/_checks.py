"""Argument checks shared by the schedules and the schedulers: each raises a ValueError
(TypeError for a wrong type) whose message names the argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any


def real(name: str, value: Any) -> float:
    """``value`` as a finite Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def positive(name: str, value: Any) -> float:
    value = real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def non_negative(name: str, value: Any) -> float:
    value = real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def in_range(name: str, value: Any, low: float, high: float) -> float:
    value = real(name, value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an ``int`` >= ``minimum`` (integral floats such as 10.0 are accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value != int(value):
        raise ValueError(f"{name} must be an integer, got {value}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def increasing(name: str, values: Any, minimum: int = 0) -> list[int]:
    """A strictly increasing list of integers >= ``minimum``."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"{name} must be a list of integers, got {type(values).__name__}")
    out = [integer(f"{name}[{i}]", v, minimum) for i, v in enumerate(values)]
    for a, b in zip(out, out[1:], strict=False):
        if b <= a:
            raise ValueError(f"{name} must be strictly increasing, got {out}")
    return out


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(
            f"unknown {name} {value!r}; expected one of {', '.join(map(repr, options))}"
        )
    return value


def callable_(name: str, value: Any) -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value
