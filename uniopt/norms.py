"""Norms, sums of squares and finiteness checks over gradients, on any backend.

Every reduction accumulates in at least float32 (design principle 6): float16 and
bfloat16 values are squared and summed in float32, as ``torch.linalg.vector_norm``,
``torch.nn.utils.clip_grad_norm_`` and torch's ``GradScaler`` do (a float16 sum of the
squares of 4096 gradients of 5.0 is already ``inf``). Float32 and float64 values are
reduced in their own dtype with the very operations they always were, so runs in
those dtypes keep their bits.

A finiteness check looks at the values themselves (``sum(g - g)``: NaN exactly where
a value is not finite), never at a sum of squares, which can overflow while every value
is finite.

Where a norm comes back into a half-precision computation it is rounded to that dtype,
as the frameworks do: torch's ``linalg.vector_norm`` returns a float16 tensor's norm
as float16 (computed in float32), and ``clip_grad_norm_`` forms its coefficient in
that dtype; Paddle casts its clip factor to the gradients' dtype.

Everything here except :func:`accumulator` and :func:`is_low_precision` (traceable)
runs on the host side of a stateful step (it returns Python numbers); rules take per-tensor norms
through :func:`uniopt.blocks.tensor_norms`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from uniopt._adapter import adapter_for

if TYPE_CHECKING:  # the engine imports this module
    from uniopt.engine.segment import Segment

#: dtypes whose sums and norms accumulate in float32
LOW_PRECISION = ("float16", "bfloat16")

#: elements squared at a time when a half-precision array is widened to float32 on the
#: host side (bounds the float32 temporaries: 16 MiB)
CHUNK = 1 << 22


def dtype_name(dtype: Any) -> str:
    """``dtype``'s name without its library's prefix (``torch.float16`` -> ``float16``)."""
    return str(dtype).rsplit(".", 1)[-1]


def is_low_precision(dtype: Any) -> bool:
    """Whether ``dtype`` (any library's, or NumPy's) is float16 or bfloat16. Traceable
    (``torch.compile`` traces ``str`` of a dtype, not a lookup keyed by one)."""
    return dtype_name(dtype) in LOW_PRECISION


def accumulator(xp: Any, dtype: Any) -> Any:
    """The dtype that sums of ``dtype`` values accumulate in when it is not ``dtype``
    itself: ``xp.float32`` for float16 and bfloat16, None for every other dtype."""
    return xp.float32 if is_low_precision(dtype) else None


def cached_name(dtype: Any) -> str:
    """:func:`dtype_name`, remembered per dtype, for the host side of a step, which asks
    per tensor (``str`` of a NumPy dtype costs 17 us; never called while tracing)."""
    try:
        return _NAMES[dtype]
    except KeyError:
        found = _NAMES[dtype] = dtype_name(dtype)
        return found
    except TypeError:  # a dtype that is not hashable
        return dtype_name(dtype)


_NAMES: dict[Any, str] = {}


def host_accumulator(xp: Any, dtype: Any) -> Any:
    """:func:`accumulator` for the host side (see :func:`cached_name`)."""
    return xp.float32 if cached_name(dtype) in LOW_PRECISION else None


def round_to(value: float, dtype: Any) -> float:
    """``value`` rounded to the nearest ``dtype`` number (to nearest even) when ``dtype``
    is float16 or bfloat16 (a dtype or its name); ``value`` itself otherwise."""
    name = dtype if isinstance(dtype, str) else cached_name(dtype)
    if name == "float16":
        with np.errstate(over="ignore"):  # past 65504: inf, as the dtype holds it
            return float(np.float16(value))
    if name == "bfloat16":  # float32's top 16 bits, rounded to nearest even
        bits = int(np.array(value, dtype=np.float32).view(np.uint32))
        if math.isfinite(value):
            bits += 0x7FFF + ((bits >> 16) & 1)
        return float(np.array((bits >> 16) << 16 & 0xFFFFFFFF, dtype=np.uint32).view(np.float32))
    return value


def sum_of_squares(xp: Any, x: Any) -> Any:
    """``sum(x * x)`` as a 0-d array: in ``x``'s dtype, exactly that expression, for
    float32 and float64; squared and summed in float32 (in chunks of at most
    :data:`CHUNK` elements) for float16 and bfloat16."""
    return _squares(xp, x, host_accumulator(xp, x.dtype))


def _squares(xp: Any, x: Any, wide: Any) -> Any:
    """:func:`sum_of_squares`, squared and summed in ``wide`` unless it is None. Complex
    ``x``: the sum of ``|x|^2`` (real), as torch's norms take it."""
    if xp.isdtype(x.dtype, "complex floating"):
        return _squares(xp, xp.real(x), wide) + _squares(xp, xp.imag(x), wide)
    if wide is None:
        return xp.sum(x * x)
    if math.prod(x.shape) <= CHUNK:
        x = xp.astype(x, wide)
        return xp.sum(x * x)
    flat = xp.reshape(x, (-1,))
    total = None
    for lo in range(0, max(flat.shape[0], 1), CHUNK):
        part = xp.astype(flat[lo : lo + CHUNK], wide)
        piece = xp.sum(part * part)
        total = piece if total is None else total + piece
    return total


def vector_norm(xp: Any, x: Any, ord: float) -> Any:
    """``x``'s ``ord``-norm (``xp.linalg.vector_norm``) as a 0-d array, taken in float32
    for float16 and bfloat16 ``x`` (then in float32)."""
    wide = host_accumulator(xp, x.dtype)
    return xp.linalg.vector_norm(x if wide is None else xp.astype(x, wide), ord=ord)


def _sharded(segment: Segment) -> bool:
    return segment.adapter.sharding(segment.params[0]) is not None


def _shard_tensor_sums(segment: Segment, grads: Sequence[Any]) -> Any:
    """Per-tensor sums of squares (in at least float32) of a segment's gradients that
    are local shards of tensors split across processes (DTensor), summed over the
    processes that hold the other shards; None without gradients."""
    xp, adapter = segment.xp, segment.adapter
    local = [adapter.flat(g) for g in grads if g is not None]
    if not local:
        return None
    sums = xp.stack([sum_of_squares(xp, x) for x in local])
    reduce = segment.layout.all_reduce
    return sums if reduce is None else reduce(sums)


def shard_sum_of_squares(segment: Segment, grads: Sequence[Any]) -> float:
    """The squared norm of a segment's gradients when they are local shards of tensors
    split across processes (DTensor): local sums (in at least float32), summed over
    the processes that hold the other shards (every process gets the same total)."""
    sums = _shard_tensor_sums(segment, grads)
    return 0.0 if sums is None else float(segment.xp.sum(sums))


def _tensor_sums(segment: Segment, grads: Sequence[Any]) -> list[float]:
    """Per-tensor sums of squares of a segment's gradients on the host (None skipped)."""
    if _sharded(segment):
        sums = _shard_tensor_sums(segment, grads)
        return [] if sums is None else segment.adapter.to_numpy(sums).tolist()
    xp = segment.xp
    wide = host_accumulator(xp, segment.dtype)  # the segment's gradients share its dtype
    return [float(_squares(xp, g, wide)) for g in grads if g is not None]


def global_norm(pairs: Sequence[tuple[Segment, Sequence[Any]]], scale: float) -> float:
    """The L2 norm of all the gradients of ``pairs`` (``(segment, gradients)``, None
    skipped) multiplied by ``scale`` (the inverse loss scale), as
    ``torch.nn.utils.get_total_norm`` takes it of the unscaled gradients.

    Float32 and float64 gradients: ``sqrt(total) * scale``, ``total`` the per-tensor
    ``sum(g * g)`` added in order in float64, the expression of old. Float16 and
    bfloat16 ones: each tensor's norm is the float32 square root of its float32 sum
    of squares, scaled and rounded to its dtype (``vector_norm`` returns it so), and
    their joint norm is rounded to their dtype when all gradients share it (``stack``
    keeps it; with another dtype beside, it promotes to float32).
    """
    total, rounded = 0.0, []
    for segment, grads in pairs:
        if cached_name(segment.dtype) not in LOW_PRECISION:
            if _sharded(segment):
                total += shard_sum_of_squares(segment, grads)
            else:
                total += sum(_tensor_sums(segment, grads))
            continue
        for s in _tensor_sums(segment, grads):
            norm = float(np.sqrt(np.float32(s)))
            rounded.append(round_to(norm * scale, segment.dtype))
    if not rounded:
        return math.sqrt(total) * scale
    norm = math.sqrt(total * scale * scale + sum(x * x for x in rounded))
    low = common_low_precision(segment for segment, _ in pairs)
    return norm if low is None else round_to(norm, low)


def segment_finite(segment: Segment, grads: Sequence[Any]) -> bool:
    """Whether every gradient of a segment is finite, from ``sum(g - g)`` per tensor:
    exactly 0 where all values are finite, NaN where one is not (``inf - inf``),
    whatever the values' size, so nothing overflows (unlike a sum of squares: 4096
    float16 gradients of 5.0 are finite). It costs what the sum of squares did (on
    torch ``all(isfinite(g))`` costs 2.5 times more over many small tensors). Local
    shards of tensors split across processes (DTensor) add these over the processes,
    so every process gets the same answer."""
    xp, adapter = segment.xp, segment.adapter
    present = [g for g in grads if g is not None]
    with np.errstate(invalid="ignore"):  # inf - inf is the point (NumPy, array_api_strict)
        if not _sharded(segment):
            return math.isfinite(sum(float(xp.sum(g - g)) for g in present))
        if not present:
            return True
        local = [adapter.flat(g) for g in present]
        flags = xp.stack([xp.sum(x - x) for x in local])
    reduce = segment.layout.all_reduce
    return math.isfinite(float(xp.sum(flags if reduce is None else reduce(flags))))


def all_finite(pairs: Iterable[tuple[Segment, Sequence[Any]]]) -> bool:
    """Whether every gradient of every ``(segment, gradients)`` pair is finite (each
    segment is asked, so that processes sharing sharded segments agree)."""
    found = [segment_finite(segment, grads) for segment, grads in pairs]
    return all(found)


def common_low_precision(segments: Iterable[Segment]) -> Any:
    """The one half-precision dtype of all ``segments``' gradients, else None (mixed
    with another dtype, the global norm is float32's, as ``torch.stack`` promotes)."""
    dtypes = {cached_name(s.dtype) for s in segments}
    if len(dtypes) == 1:
        (name,) = dtypes
        return name if name in LOW_PRECISION else None
    return None


def shard_norm(g: Any, norm_type: float) -> float:
    """The ``norm_type``-norm of a gradient split across processes (DTensor), from its
    local shard: partial sums of ``|g|^p`` (or the maximum) over the shards, taken in at
    least float32."""
    adapter = adapter_for(g)
    local = adapter.flat(g)
    xp = adapter.namespace(local)
    wide = host_accumulator(xp, local.dtype)
    if wide is not None:
        local = xp.astype(local, wide)
    reduce = adapter.shard_all_reduce([g]) or (lambda x, op="sum": x)
    magnitudes = xp.abs(local)
    if norm_type == math.inf:
        padded = xp.concat([magnitudes, xp.zeros((1,), dtype=local.dtype, device=local.device)])
        return float(reduce(xp.reshape(xp.max(padded), (1,)), "max")[0])
    total = reduce(xp.reshape(xp.sum(magnitudes**norm_type), (1,)), "sum")
    return float(total[0]) ** (1.0 / norm_type)


def tensor_norm(g: Any, norm_type: float) -> float:
    """The ``norm_type``-norm of one gradient as a Python float: taken in at least
    float32 and, for float16/bfloat16 ``g``, rounded to its dtype, as
    ``torch.linalg.vector_norm`` returns it."""
    adapter = adapter_for(g)
    if adapter.sharding(g) is not None:
        return round_to(shard_norm(g, norm_type), g.dtype)
    return round_to(float(vector_norm(adapter.namespace(g), g, norm_type)), g.dtype)


def total_norm(norms: Sequence[float], norm_type: float) -> float:
    """The ``norm_type``-norm of the tensors whose norms are ``norms``, as if they were
    laid end to end (``torch.nn.utils.get_total_norm``)."""
    if norm_type == math.inf:
        return max(norms, default=0.0)
    return sum(x**norm_type for x in norms) ** (1.0 / norm_type)
