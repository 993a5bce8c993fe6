"""Learning rates in every form a reference framework accepts.

A learning rate may be a non-negative number, a 0-d array, a schedule (any callable
``step -> lr``, where ``step`` counts completed optimizer steps from 0), or a
sequence: a list, tuple or 1-D array, or any other iterable, whose i-th value is the
learning rate of step i (MindSpore's dynamic learning rate). Past the end of a
finite sequence the last value is kept.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from uniopt import validation
from uniopt.schedules._backend import step_index


class LRSequence:
    """Per-step learning rates taken from a list, 1-D array or iterable, read lazily."""

    def __init__(self, values: Iterable[Any], owner: str):
        self._owner = owner
        self._source: Iterator[Any] | None = iter(values)
        self._values: list[float] = []
        if not self._fill(0):
            raise ValueError(f"{owner}: learning_rate sequence is empty")

    def _fill(self, index: int) -> bool:
        while self._source is not None and len(self._values) <= index:
            try:
                value = next(self._source)
            except StopIteration:
                self._source = None
                break
            self._values.append(
                validation.non_negative(self._owner, "learning_rate", _scalar(value))
            )
        return len(self._values) > index

    def __call__(self, step: int) -> float:
        """The rate of step ``step``: a concrete whole number >= 0 (``ValueError``
        naming the owner otherwise; a traced step is a ``TypeError``)."""
        index = step_index(self._owner, step)
        self._fill(index)
        return self._values[min(index, len(self._values) - 1)]

    def __repr__(self) -> str:
        return f"LRSequence({self._values!r}{', ...' if self._source is not None else ''})"


def _scalar(value: Any) -> Any:
    """A 0-d array or numpy scalar as a Python number; anything else unchanged."""
    shape = getattr(value, "shape", None)
    if shape == () and not isinstance(value, numbers.Number):
        return float(np.asarray(value)) if not hasattr(value, "item") else value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def learning_rate(owner: str, name: str, value: Any) -> float | Callable[[int], Any]:
    """Validate a learning rate; numbers come back as floats, the rest as ``step -> lr``."""
    value = _scalar(validation.one_element(value))  # torch takes lr as a 1-element tensor
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return validation.non_negative(owner, name, value)
    shape = getattr(value, "shape", None)
    if shape is not None:
        if len(shape) != 1:
            raise ValueError(f"{owner}: {name} array must be 0-d or 1-D, got shape {tuple(shape)}")
        return LRSequence(np.asarray(value).tolist(), owner)
    if callable(value):
        return value
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict)):
        return LRSequence(value, owner)
    raise TypeError(
        f"{owner}: {name} must be a float, int, 0-d or 1-D array, iterable or schedule, "
        f"got {type(value).__name__}"
    )


def lr_at(lr: Any, step: int) -> Any:
    """The learning rate for step ``step`` (0-based)."""
    return lr(step) if callable(lr) else lr
