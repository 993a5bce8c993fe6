"""Loss scaling: gradients arrive multiplied by the scale and are divided by it.

A fixed scale is a number (MindSpore's ``loss_scale``). ``DynamicLossScale`` also
watches the gradients: a step whose gradients are not all finite is skipped
(parameters and optimizer state stay bitwise as they were) and the scale is cut;
after ``growth_interval`` finite steps in a row the scale grows. This is the policy of
MindSpore's ``DynamicLossScaleManager`` and torch's ``GradScaler``.

Finite means every gradient value is finite, as GradScaler's
``_amp_foreach_non_finite_check_and_unscale_`` checks, never that a sum of their
squares is: float16 gradients of 5.0 are finite however many there are
(:func:`uniopt.gradients.grad_scale`, :func:`uniopt.norms.segment_finite`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from uniopt import validation as v

#: the largest float32: GradScaler keeps its scale as a float32 tensor
FLOAT32_MAX = 3.4028234663852886e38


class DynamicLossScale:
    """A loss scale that backs off on overflow and grows after a run of finite steps."""

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        min_scale: float = 1.0,
    ):
        owner = "DynamicLossScale"
        self.scale = v.positive(owner, "init_scale", init_scale)
        self.growth_factor = v.positive(owner, "growth_factor", growth_factor)
        if self.growth_factor < 1:
            v.fail(owner, "growth_factor", growth_factor, "it must be >= 1")
        self.backoff_factor = v.positive(owner, "backoff_factor", backoff_factor)
        if self.backoff_factor >= 1:
            v.fail(owner, "backoff_factor", backoff_factor, "it must be < 1")
        if (
            isinstance(growth_interval, bool)
            or not isinstance(growth_interval, int)
            or (growth_interval < 1)
        ):
            v.fail(owner, "growth_interval", growth_interval, "it must be a positive int")
        self.growth_interval = growth_interval
        self.min_scale = v.positive(owner, "min_scale", min_scale)
        self.good_steps = 0

    def update(self, finite: bool) -> None:
        """Account for one step whose gradients were (not) all finite."""
        if not finite:
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)
            self.good_steps = 0
            return
        self.good_steps += 1
        if self.good_steps == self.growth_interval:
            grown = self.scale * self.growth_factor
            if grown <= FLOAT32_MAX:  # GradScaler: a float32 scale grows while it stays finite
                self.scale = grown
            self.good_steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load ``{"scale": float > 0, "good_steps": int >= 0}``; on anything else raise
        ValueError naming the key and change nothing."""
        if not isinstance(state, Mapping) or set(state) != {"scale", "good_steps"}:
            found = sorted(state, key=str) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                "DynamicLossScale: a loss-scale state is a dict with the keys 'scale' and "
                f"'good_steps', got {found}"
            )
        scale = v.positive("DynamicLossScale", "scale", state["scale"])
        good = state["good_steps"]
        if isinstance(good, bool) or not isinstance(good, int) or good < 0:
            v.fail("DynamicLossScale", "good_steps", good, "it must be an int >= 0")
        self.scale, self.good_steps = scale, good

    def __repr__(self) -> str:
        return f"DynamicLossScale(scale={self.scale}, good_steps={self.good_steps})"


def checked(owner: str, loss_scale: Any) -> float | DynamicLossScale:
    """A fixed scale as a float > 0 (ints converted), or a :class:`DynamicLossScale`."""
    if isinstance(loss_scale, DynamicLossScale):
        return loss_scale
    if isinstance(loss_scale, bool) or not isinstance(loss_scale, numbers.Real):
        raise TypeError(f"{owner}: loss_scale must be a float, got {type(loss_scale).__name__}")
    return v.positive(owner, "loss_scale", loss_scale)


def current(loss_scale: float | DynamicLossScale) -> float:
    return loss_scale.scale if isinstance(loss_scale, DynamicLossScale) else loss_scale
