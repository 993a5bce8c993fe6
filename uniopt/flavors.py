"""``flavor=``: reproduce one framework's numerics and defaults.

Where frameworks compute the "same" optimizer differently (eps inside or outside the
square root, before or after bias correction; lr inside or outside the momentum
buffer; initial accumulators; default hyperparameters), each difference is a
documented keyword option of the algorithm, and a flavor is a preset of those options
per algorithm (the rule's ``flavors`` table). Options the user passes explicitly win
over the preset; the signature defaults (torch's) apply where neither says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FLAVORS = ("torch", "optax", "keras", "paddle", "mindspore", "oneflow")


class Default:
    """A signature default that a flavor preset may replace (shows as its value)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def resolve(
    owner: str,
    name: str,
    presets: Mapping[str, Mapping[str, Any]],
    hp: Mapping[str, Any],
    flavor: str | None,
) -> dict[str, Any]:
    """``hp`` with every :class:`Default` replaced by the flavor's preset or its value."""
    preset: Mapping[str, Any] = {}
    if flavor is not None:
        if flavor not in FLAVORS:
            raise ValueError(f"{owner}: unknown flavor={flavor!r}; choose one of {FLAVORS}")
        if flavor not in presets:
            raise ValueError(f"{owner}: {flavor} has no {name}; flavors for it: {sorted(presets)}")
        preset = presets[flavor]
    return {k: preset.get(k, v.value) if isinstance(v, Default) else v for k, v in hp.items()}


def arguments(local_variables: Mapping[str, Any]) -> dict[str, Any]:
    """An ``__init__``'s arguments from its ``locals()``, for ``super().__init__(**...)``
    (``**options`` are passed on as keywords)."""
    out = {k: v for k, v in local_variables.items() if k not in ("self", "__class__", "options")}
    return {**out, **local_variables.get("options", {})}
