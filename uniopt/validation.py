"""Uniform checks of hyperparameters: every bad value raises the same kind of message.

``ValueError: Adam: invalid betas=(0.9, 1.0): each beta must be in [0, 1)``
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, MutableMapping
from typing import Any

#: torch.optim's implementation switches: accepted so that torch code ports with only
#: the import changed, and ignored (uniopt picks its own execution path); never stored
TORCH_SWITCHES = ("foreach", "fused", "capturable", "differentiable")


def fail(owner: str, name: str, value: Any, requirement: str) -> None:
    raise ValueError(f"{owner}: invalid {name}={value!r}: {requirement}")


def real(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite Python float, or TypeError naming the argument. A
    one-element array of any library and shape (Paddle accepts a shape-[1] Tensor,
    torch's own tests pass ``betas`` as ``tensor([[0.9]])``) counts as its number."""
    value = one_element(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}")
    value = value if isinstance(value, Float32) else float(value)
    if not math.isfinite(value):
        fail(owner, name, value, "it must be finite")
    return value


class Float32(float):
    """A number that came as a float32 one-element array (torch's ``lr`` tensor): its
    value, remembered as float32 so that ``flavor="torch"`` forms the learning rate's
    products in float32, as torch does with a tensor learning rate."""

    __slots__ = ()


def one_element(value: Any) -> Any:
    """A real one-element array (any shape, any library) as a Python float; anything
    else unchanged."""
    shape = getattr(value, "shape", None)
    if isinstance(value, numbers.Real) or shape is None or math.prod(shape) != 1:
        return value
    dtype = str(getattr(value, "dtype", ""))
    if "float" not in dtype and "int" not in dtype:  # complex, bool: refused by the caller
        return value
    number = float(value.reshape(()) if len(shape) else value)
    return Float32(number) if dtype.rsplit(".", 1)[-1] == "float32" else number


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
    pair = (real(owner, name, value[0]), real(owner, name, value[1]))
    if not all(0.0 <= beta < 1.0 for beta in pair):
        fail(owner, name, pair, "each beta must be in [0, 1)")
    return pair


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


def known_arguments(owner: str, given: MutableMapping[str, Any], known: Iterable[str]) -> None:
    """Refuse keyword arguments ``owner`` does not take, as Python does (``TypeError:
    AdamW got an unexpected keyword argument 'weight_decy'``), naming the closest
    known one. torch.optim's :data:`TORCH_SWITCHES` are removed from ``given``: a bool
    or None, ignored."""
    for switch in TORCH_SWITCHES:
        if switch in given:
            value = given.pop(switch)
            if value is not None and not isinstance(value, bool):
                raise TypeError(
                    f"{owner}: {switch} must be a bool or None, got {type(value).__name__}"
                )
    known = list(known)
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TypeError(f"{owner} got an unexpected keyword argument '{name}'{hint}")
