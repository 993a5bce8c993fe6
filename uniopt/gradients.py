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

Reductions (the global norm, per-tensor norms, the finiteness check of a dynamic
loss scale) accumulate in at least float32 (:mod:`uniopt.norms`); a clip factor or
loss scale applied to float16/bfloat16 gradients multiplies them in float32 and rounds
once, the clip factor itself rounded to their dtype first, as torch's
``clip_grad_norm_`` and Paddle's clipping do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from uniopt import loss_scale as loss_scales
from uniopt import norms
from uniopt import validation as v
from uniopt._adapter import adapter_for
from uniopt.blocks import tensor_norms
from uniopt.engine.layout import Block
from uniopt.rule import Rule, Scalars

if TYPE_CHECKING:
    from uniopt.engine.segment import Segment


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


def grad_scale(
    loss_scale: float | loss_scales.DynamicLossScale,
    grad_clip: Any,
    pairs: Sequence[tuple[Segment, Sequence[Any]]],
) -> float | None:
    """The factor every gradient of a step is multiplied by: ``1 / loss_scale`` times
    the ``ClipGradByGlobalNorm`` factor; None when a :class:`DynamicLossScale` finds a
    non-finite gradient (its scale is updated either way).

    ``pairs`` are ``(segment, gradients)`` (None for a parameter without one). The
    global norm is :func:`uniopt.norms.global_norm`'s: sums of squares in at least
    float32; for float16/bfloat16 gradients rounded back to their dtype as torch's
    ``clip_grad_norm_`` rounds its norms. Finiteness is that of the values
    (``isfinite``): a finite norm proves it at no extra cost, and only an infinite one
    (an overflow of finite values' squares, or a non-finite value) is looked at value
    by value. The clip factor is rounded to the gradients' dtype when they are all of
    one half-precision dtype, as torch's ``clip_grad_norm_`` and Paddle's
    ``ClipGradByGlobalNorm`` round their coefficient.
    """
    scale = 1.0 / loss_scales.current(loss_scale)
    dynamic = isinstance(loss_scale, loss_scales.DynamicLossScale)
    clipping = isinstance(grad_clip, ClipGradByGlobalNorm)
    if not dynamic and not clipping:
        return scale
    norm = norms.global_norm(pairs, scale) if clipping else math.nan
    if dynamic:
        finite = math.isfinite(norm) or norms.all_finite(pairs)
        loss_scale.update(finite)
        if not finite:
            return None
    if clipping:
        factor = grad_clip.factor(norm)
        low = norms.common_low_precision(segment for segment, _ in pairs)
        scale *= factor if low is None else norms.round_to(factor, low)
    return scale


def clip_group(
    found: Mapping[str, Any], names: Sequence[str], max_norm: float, norm_type: float
) -> dict[str, Any]:
    """OneFlow's per-group clipping (``torch.nn.utils.clip_grad_norm_``): the group's
    gradients (``found[name]``, None skipped) scaled by ``max_norm / (norm + 1e-6)``
    when that is below 1, ``norm`` being their joint ``norm_type``-norm. Returns the
    clipped gradients by name, none when nothing is clipped.

    Per-tensor norms are taken in at least float32 (:func:`uniopt.norms.tensor_norm`);
    when the gradients are all of one half-precision dtype, the joint norm and the
    coefficient are formed in that dtype as torch forms them (``max_norm / t`` is
    ``t.reciprocal() * max_norm``), so the result is torch's.
    """
    present = [n for n in names if found[n] is not None]
    norm_type = float(norm_type)
    total = norms.total_norm([norms.tensor_norm(found[n], norm_type) for n in present], norm_type)
    dtypes = {norms.cached_name(found[n].dtype) for n in present}
    low = next(iter(dtypes)) if len(dtypes) == 1 else None
    if low not in norms.LOW_PRECISION:
        coef = max_norm / (total + 1e-6)
    else:
        r = partial(norms.round_to, dtype=low)
        coef = r(r(1.0 / r(r(total) + 1e-6)) * max_norm)
    if coef >= 1.0:
        return {}
    return {n: _times(found[n], coef) for n in present}


def _times(g: Any, factor: float) -> Any:
    """``g * factor``; computed in float32 and rounded once for float16/bfloat16 ``g``
    (a Python float meets a half-precision array as a half-precision number in NumPy
    and JAX, and as a float32 one in torch: a small factor would round differently, or
    to 0)."""
    xp = adapter_for(g).namespace(g)
    wide = norms.host_accumulator(xp, g.dtype)
    return g * factor if wide is None else _rounded(xp, g, factor, wide)


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
        wide = norms.accumulator(xp, g.dtype)  # float32 for float16/bfloat16 gradients
        if self.scaled:  # half precision: multiplied in float32, rounded once
            g = g * s.grad_scale if wide is None else _rounded(xp, g, s.grad_scale, wide)
        if self.norm_clip is not None:  # norms in float32, back in g's dtype (as torch's)
            size = tensor_norms(xp, g, block)
            big = size > self.norm_clip
            factor = xp.where(
                big, self.norm_clip / xp.where(big, size, xp.ones_like(size)), xp.ones_like(size)
            )
            g = g * block.expand(xp, factor)
        if self.value_clip is not None:
            g = xp.clip(g, min=self.value_clip[0], max=self.value_clip[1])
        if self.centralized:
            g = centralize(xp, g, block)
        return self.inner.update(xp, p, g, state, s, block)


def _rounded(xp: Any, g: Any, factor: Any, wide: Any) -> Any:
    """``g * factor`` computed in ``wide`` (float32) and rounded once to ``g``'s dtype."""
    return xp.astype(xp.astype(g, wide) * factor, g.dtype)


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
