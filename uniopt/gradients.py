"""Gradient preprocessing that runs fused in front of any rule: loss-scale division,
global-norm clipping, per-tensor norm clipping, value clipping and gradient
centralization, in that order (Paddle clips before adding regularization; the L2
term of the rule comes after).

The clipping strategies are Paddle's (``paddle.nn.ClipGradBy*``, seed 001), usable
with every optimizer through ``grad_clip=``:

* ``ClipGradByGlobalNorm(c)``: :math:`g \\leftarrow g \\cdot c / \\max(\\lVert G\\rVert, c)`
  with :math:`\\lVert G\\rVert` the norm of all gradients together;
* ``ClipGradByNorm(c)``: the same per tensor;
* ``ClipGradByValue(max, min=-max)``: :math:`g \\leftarrow \\mathrm{clip}(g, \\min, \\max)`.

Gradient centralization (Yong et al., "Gradient Centralization: A New Optimization
Technique for Deep Neural Networks", ECCV 2020; MindSpore's ``grad_centralization``
group key): for tensors of two or more dimensions,
:math:`g \\leftarrow g - \\mathrm{mean}(g)` over all axes but the first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.blocks import tensor_norms
from uniopt.engine.layout import Block
from uniopt.rule import Rule, Scalars


@dataclass(frozen=True)
class ClipGradByGlobalNorm:
    """Scale all gradients together so that their joint L2 norm is at most ``clip_norm``."""

    clip_norm: float

    def __post_init__(self):
        v.positive("ClipGradByGlobalNorm", "clip_norm", self.clip_norm)

    def factor(self, global_norm: float) -> float:
        return self.clip_norm / max(global_norm, self.clip_norm)


@dataclass(frozen=True)
class ClipGradByNorm:
    """Scale each gradient so that its own L2 norm is at most ``clip_norm``."""

    clip_norm: float

    def __post_init__(self):
        v.positive("ClipGradByNorm", "clip_norm", self.clip_norm)


@dataclass(frozen=True)
class ClipGradByValue:
    """Clip every gradient element to ``[min, max]`` (``min`` defaults to ``-max``)."""

    max: float
    min: float | None = None

    def __post_init__(self):
        high = v.real("ClipGradByValue", "max", self.max)
        low = -high if self.min is None else v.real("ClipGradByValue", "min", self.min)
        if low > high:
            v.fail("ClipGradByValue", "min", low, f"it must be <= max={high}")

    @property
    def bounds(self) -> tuple[float, float]:
        return (-self.max if self.min is None else self.min), self.max


GRAD_CLIPS = (ClipGradByGlobalNorm, ClipGradByNorm, ClipGradByValue)


def centralize(xp: Any, g: Any, block: Block) -> Any:
    """Subtract from each tensor of two or more dimensions its mean over all axes but
    the first (the block holds whole tensors)."""
    parts = []
    for piece, part in zip(block.pieces, block.split(g)):
        if len(piece.shape) > 1 and math.prod(piece.shape) > 0:
            rows = xp.reshape(part, (piece.shape[0], -1))
            part = xp.reshape(rows - xp.mean(rows, axis=1, keepdims=True), part.shape)
        parts.append(part)
    return parts[0] if len(parts) == 1 else xp.concat(parts)


@dataclass(frozen=True)
class Wrapped(Rule):
    """A rule around another one: same slots, scalars and use of the parameters."""

    inner: Rule
    hyperparameters = {}

    def reads_params(self, hp: Mapping[str, Any]) -> bool:
        return self.inner.reads_params(hp)

    def slots(self) -> dict[str, float]:
        return self.inner.slots()

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        return self.inner.scalars(hp, step)


@dataclass(frozen=True)
class Preprocessed(Wrapped):
    """``inner`` with gradient preprocessing fused in front; ``s.grad_scale`` (loss
    scale and global clipping together) is a per-step scalar."""

    scaled: bool = False
    norm_clip: float | None = None
    value_clip: tuple[float, float] | None = None
    centralized: bool = False

    hyperparameters = {}

    @property
    def needs_tensor_reductions(self) -> bool:  # type: ignore[override]
        return (
            self.inner.needs_tensor_reductions or self.norm_clip is not None or (self.centralized)
        )

    def reads_params(self, hp: Mapping[str, Any]) -> bool:
        return self.inner.reads_params(hp)

    def slots(self) -> dict[str, float]:
        return self.inner.slots()

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        return self.inner.scalars(hp, step)

    def update(self, xp, p, g, state, s: Scalars, block):
        if self.scaled:
            g = g * s.grad_scale
        if self.norm_clip is not None:
            norms = tensor_norms(xp, g, block)
            big = norms > self.norm_clip
            factor = xp.where(
                big, self.norm_clip / xp.where(big, norms, xp.ones_like(norms)), xp.ones_like(norms)
            )
            g = g * block.expand(xp, factor)
        if self.value_clip is not None:
            g = xp.clip(g, min=self.value_clip[0], max=self.value_clip[1])
        if self.centralized:
            g = centralize(xp, g, block)
        return self.inner.update(xp, p, g, state, s, block)


def active_rows(xp: Any, g: Any, block: Block) -> Any:
    """Per element: does its row (first-axis slice of its tensor) have a non-zero
    gradient? (The block holds whole tensors.)"""
    parts = []
    for piece, part in zip(block.pieces, block.split(g)):
        rows = piece.shape[0] if piece.shape else 1
        grid = xp.reshape(part != 0, (rows, -1))
        hit = xp.any(grid, axis=1, keepdims=True)
        parts.append(xp.reshape(xp.broadcast_to(hit, grid.shape), part.shape))
    return parts[0] if len(parts) == 1 else xp.concat(parts)


@dataclass(frozen=True)
class Lazy(Wrapped):
    """``inner`` where only rows with a non-zero gradient change (Paddle's ``lazy_mode``):
    the other rows keep their parameters and optimizer state exactly."""

    needs_tensor_reductions = True

    def update(self, xp, p, g, state, s: Scalars, block):
        rows = active_rows(xp, g, block)
        delta, new_state = self.inner.update(xp, p, g, state, s, block)
        kept = {k: xp.where(rows, v, state[k]) for k, v in new_state.items()}
        return xp.where(rows, delta, xp.zeros_like(delta)), kept
