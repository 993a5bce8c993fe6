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

import numpy as np

FLAVORS = ("torch", "optax", "keras", "paddle", "mindspore", "oneflow")

#: ``complex_mode="real_pairs"`` (torch, and no flavor): a complex parameter is
#: optimized as the real parameter of its ``(re, im)`` pairs, as torch.optim's
#: ``view_as_real`` does (parameters, gradients and every state slot viewed as real)
REAL_PAIRS = "real_pairs"
#: ``complex_mode="conjugate"`` (optax): first moments stay complex, second moments
#: are of :math:`|g|^2 = \operatorname{Re}(\bar g g)`, as optax's ``abs_sq``
CONJUGATE = "conjugate"
#: the values of ``complex_mode``
COMPLEX_MODES = (REAL_PAIRS, CONJUGATE, None)
#: the preset of a flavor whose framework takes no complex parameters:
#: ``complex_mode=None`` refuses them (a TypeError when the optimizer, or the
#: transform's state, is built)
NO_COMPLEX = {"complex_mode": None}
#: why each such flavor refuses them
COMPLEX_REFUSALS = {
    "keras": (
        "Keras optimizers apply their real formulas to complex variables (the second "
        "moment of g is g**2, not |g|**2, so the step is no descent direction), and "
        "Keras documents no complex support"
    ),
    "paddle": (
        "Paddle's optimizer kernels (sgd, momentum, adam, adamw, lamb, lars_momentum, "
        "rmsprop, adagrad) are registered for real floating-point dtypes only"
    ),
    "mindspore": (
        "MindSpore's optimizer primitives (ApplyMomentum, Adam, ApplyRMSProp, "
        "ApplyAdagrad, ...) take real floating-point parameters only"
    ),
    "oneflow": "OneFlow's optimizer kernels are registered for real floating-point dtypes only",
}


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
    """``hp`` with every :class:`Default` replaced by the flavor's preset or its value.

    A preset's ``"float32"`` entry names hyperparameters that framework stores as
    float32 (Paddle keeps e.g. its momentum and weight decay as float32 attributes even
    for float64 parameters), or is a function of the hyperparameters giving those
    names: their values are rounded to the nearest float32, explicit ones included, so
    float64 runs match to the last bits.
    """
    preset: Mapping[str, Any] = {}
    if flavor is not None:
        if flavor not in FLAVORS:
            raise ValueError(f"{owner}: unknown flavor={flavor!r}; choose one of {FLAVORS}")
        if flavor not in presets:
            raise ValueError(f"{owner}: {flavor} has no {name}; flavors for it: {sorted(presets)}")
        preset = presets[flavor]
    out = {k: preset.get(k, v.value) if isinstance(v, Default) else v for k, v in hp.items()}
    rounded = preset.get("float32", ())
    for name in rounded(out) if callable(rounded) else rounded:
        out[name] = _float32(out[name])
    return out


def _float32(value: Any) -> Any:
    """Numbers (and tuples of numbers) rounded to float32; anything else unchanged."""
    if isinstance(value, tuple):
        return tuple(_float32(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(np.float32(value))
    return value


def arguments(local_variables: Mapping[str, Any]) -> dict[str, Any]:
    """An ``__init__``'s arguments from its ``locals()``, for ``super().__init__(**...)``
    (``**options`` are passed on as keywords)."""
    out = {k: v for k, v in local_variables.items() if k not in ("self", "__class__", "options")}
    return {**out, **local_variables.get("options", {})}


def table() -> str:
    """The flavors x algorithms table (Markdown), from the algorithms' own presets."""
    import uniopt
    from uniopt.optimizer import Optimizer

    classes = [  # every exported optimizer with a rule of its own (not LookAhead)
        c
        for c in vars(uniopt).values()
        if isinstance(c, type) and issubclass(c, Optimizer) and c is not Optimizer and c.rule
    ]
    lines = [
        "| algorithm | " + " | ".join(FLAVORS) + " |",
        "|---" * (len(FLAVORS) + 1) + "|",
    ]
    for cls in classes:
        cells = []
        for flavor in FLAVORS:
            preset = cls.rule.flavors.get(flavor)
            if preset is None:
                cells.append("—")
                continue
            parts = [f"`{k}={v!r}`" for k, v in preset.items() if k != "float32"]
            rounded = preset.get("float32")
            if rounded:
                names = (
                    "momentum, weight_decay if momentum"
                    if callable(rounded)
                    else (", ".join(rounded))
                )
                parts.append(f"float32: {names}")
            cells.append("<br>".join(parts) or "defaults")
        lines.append(f"| `{cls.__name__}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
