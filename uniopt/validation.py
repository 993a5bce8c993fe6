"""Uniform checks of hyperparameters: every bad value raises the same kind of message.

``ValueError: Adam: invalid betas=(0.9, 1.0): each beta must be in [0, 1)``
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def fail(owner: str, name: str, value: Any, requirement: str) -> None:
    raise ValueError(f"{owner}: invalid {name}={value!r}: {requirement}")


def real(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite Python float, or TypeError naming the argument. A 0-d or
    one-element array (Paddle accepts a shape-[1] Tensor) counts as its number."""
    if not isinstance(value, numbers.Real) and getattr(value, "shape", None) in ((), (1,)):
        value = float(value.reshape(()) if value.shape else value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        fail(owner, name, value, "it must be finite")
    return value


def non_negative(owner: str, name: str, value: Any) -> float:
    value = real(owner, name, value)
    if value < 0:
        fail(owner, name, value, "it must be >= 0")
    return value


def positive(owner: str, name: str, value: Any) -> float:
    value = real(owner, name, value)
    if value <= 0:
        fail(owner, name, value, "it must be > 0")
    return value


def unit_interval(owner: str, name: str, value: Any) -> float:
    """A decay rate in [0, 1)."""
    value = real(owner, name, value)
    if not 0.0 <= value < 1.0:
        fail(owner, name, value, "it must be in [0, 1)")
    return value


def betas(owner: str, name: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        fail(owner, name, value, "it must be a pair (beta1, beta2)")
    for beta in value:
        beta = real(owner, name, beta)
        if not 0.0 <= beta < 1.0:
            fail(owner, name, tuple(value), "each beta must be in [0, 1)")
    return (float(value[0]), float(value[1]))


def flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be a bool, got {type(value).__name__}")
    return value


def choice(*options: Any):
    """A validator accepting exactly one of ``options``."""

    def check(owner: str, name: str, value: Any) -> Any:
        if value not in options:
            fail(owner, name, value, f"it must be one of {options}")
        return value

    return check
