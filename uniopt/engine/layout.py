"""The segment table: where each tensor lies in its segment's flat index space,
and how a range of it is cut into blocks.

A *segment* is the parameters of one param group that share a backend, device and
dtype, laid end to end. Its optimizer state is one flat array per slot. Update rules
run on *blocks*: contiguous ranges of a segment, cut so that eager temporaries stay
cache-sized, or never splitting a tensor when the rule reduces over whole tensors.

A tensor spread over several devices (a sharded jax array) is a segment of its own
whose state keeps the tensor's shape and placement: its block, :meth:`Block.whole`,
holds the N-d arrays themselves, so nothing is flattened across a sharded axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from uniopt.norms import accumulator


@dataclass(frozen=True)
class Span:
    """One tensor's row in the segment table."""

    name: str
    shape: tuple[int, ...]
    offset: int
    size: int

    @property
    def stop(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Piece:
    """The part ``[lo, hi)`` of tensor ``index``'s flat view that a block covers."""

    index: int
    lo: int
    hi: int
    shape: tuple[int, ...] = ()  #: the whole tensor's shape


@dataclass(frozen=True)
class Block:
    """A contiguous range ``[start, stop)`` of a segment and the tensor pieces in it."""

    start: int
    stop: int
    pieces: tuple[Piece, ...]
    #: the arrays are one whole tensor in its own shape, not flat (see :meth:`whole`)
    shaped: bool = False
    #: where each process (torch DTensor) or device (inside jax ``shard_map``) holds a
    #: shard of the tensors: turns the shards' sums into the whole tensors' (an all-reduce)
    all_reduce: Callable[[Any], Any] | None = None

    @classmethod
    def whole(cls, shape: tuple[int, ...], all_reduce: Callable[[Any], Any] | None = None) -> Block:
        """The block of one whole tensor of ``shape`` whose arrays keep that shape."""
        size = math.prod(shape)
        return cls(0, size, (Piece(0, 0, size, tuple(shape)),), True, all_reduce)

    def gather(self, xp: Any, flats: Sequence[Any]) -> Any:
        """The block's values from the tensors' flat views (a view when one piece)."""
        parts = [flats[p.index][p.lo : p.hi] for p in self.pieces]
        return parts[0] if len(parts) == 1 else xp.concat(parts)

    def split(self, x: Any) -> list[Any]:
        """Cut a block-sized array back into its pieces."""
        if self.shaped:
            return [x]
        out, at = [], 0
        for p in self.pieces:
            out.append(x[at : at + p.hi - p.lo])
            at += p.hi - p.lo
        return out

    @property
    def whole_tensors(self) -> bool:
        return all(p.lo == 0 for p in self.pieces)

    @property
    def stretches(self) -> tuple[tuple[int, int, int, int, int], ...]:
        """The block as stretches ``(a, b, index, k, n)`` of equal-length pieces:
        elements ``[a, b)`` are ``k`` pieces of ``n`` elements of the consecutive
        tensors ``index .. index+k-1``. A stretch is one ``(k, n)`` array, so per-tensor
        sums and broadcasts cost one operation per stretch, not per tensor."""
        out: list[tuple[int, int, int, int, int]] = []
        at = 0
        for piece in self.pieces:
            n = piece.hi - piece.lo
            if out and out[-1][4] == n and out[-1][2] + out[-1][3] == piece.index:
                a, b, index, k, _ = out[-1]
                out[-1] = (a, b + n, index, k + 1, n)
            else:
                out.append((at, at + n, piece.index, 1, n))
            at += n
        return tuple(out)

    def tensor_sums(self, xp: Any, x: Any) -> Any:
        """Per-tensor sums of a block-sized array (the block must hold whole tensors),
        accumulated in at least float32: float16 and bfloat16 values are summed into
        float32 sums (``xp.sum(..., dtype=xp.float32)``, no widened copy), others in
        their own dtype."""
        wide = accumulator(xp, x.dtype)
        options = {} if wide is None else {"dtype": wide}
        if self.shaped:
            sums = xp.reshape(xp.sum(x, **options), (1,))
        else:
            parts = [
                xp.sum(xp.reshape(x[a:b], (k, n)), axis=1, **options)
                for a, b, _, k, n in self.stretches
            ]
            sums = parts[0] if len(parts) == 1 else xp.concat(parts)
        return sums if self.all_reduce is None else self.all_reduce(sums)

    def expand(self, xp: Any, per_tensor: Any) -> Any:
        """Broadcast one value per tensor back to every element of the block."""
        if self.shaped:
            shape = self.pieces[0].shape
            return xp.broadcast_to(xp.reshape(per_tensor, (1,) * len(shape)), shape)
        parts, t = [], 0
        for a, b, _, k, n in self.stretches:
            column = xp.reshape(per_tensor[t : t + k], (k, 1))
            parts.append(xp.reshape(xp.broadcast_to(column, (k, n)), (b - a,)))
            t += k
        return parts[0] if len(parts) == 1 else xp.concat(parts)


_BLOCK_FIELDS = tuple(f.name for f in fields(Block))  # names only: torch.compile traces them


@dataclass(frozen=True)
class Recorded(Block):
    """A block that keeps the per-tensor sums a rule takes on it (``sums`` filled in
    call order), or, made with sums taken before, hands those back in the same order:
    a rule run twice, first for its sums and then with them, never holds a block-sized
    intermediate (LAMB's direction) between a reduction and its use."""

    sums: list = field(default_factory=list, compare=False)
    given: bool = False

    @classmethod
    def of(cls, block: Block, sums: Sequence[Any] | None = None) -> Recorded:
        copied = {name: getattr(block, name) for name in _BLOCK_FIELDS}
        return cls(**copied, sums=[] if sums is None else list(sums), given=sums is not None)

    def tensor_sums(self, xp: Any, x: Any) -> Any:
        if self.given:
            return self.sums.pop(0)
        sums = super().tensor_sums(xp, x)
        self.sums.append(sums)
        return sums


@dataclass(frozen=True)
class Layout:
    """The segment table of one segment."""

    spans: tuple[Span, ...]
    #: the segment's tensors are local shards of tensors split across processes (torch
    #: DTensor): turns per-tensor sums over the shards into the whole tensors' sums.
    #: Every process must then make the same reductions in the same order, so a run
    #: whose rule reduces over whole tensors is one block (with empty shards too)
    all_reduce: Callable[[Any], Any] | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        names: Sequence[str],
        shapes: Sequence[tuple[int, ...]],
        all_reduce: Callable[[Any], Any] | None = None,
    ) -> Layout:
        spans, offset = [], 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            spans.append(Span(name, tuple(shape), offset, size))
            offset += size
        return cls(tuple(spans), all_reduce)

    @property
    def size(self) -> int:
        return self.spans[-1].stop if self.spans else 0

    def real_pairs(self) -> Layout:
        """The table of the same tensors seen as real pairs, shape ``shape + (2,)`` (last
        axis: real, imaginary part): a complex segment run as the real segment of twice
        its length (``complex_mode="real_pairs"``, :mod:`uniopt.engine.pairs`)."""
        shapes = [(*s.shape, 2) for s in self.spans]
        return Layout.of([s.name for s in self.spans], shapes, self.all_reduce)

    def blocks(
        self, first: int, last: int, max_elements: int | None, whole_tensors: bool
    ) -> Iterator[Block]:
        """Blocks covering tensors ``first .. last-1``.

        ``max_elements=None`` gives one block. Otherwise blocks hold at most
        ``max_elements`` elements, except that with ``whole_tensors`` a tensor is
        never split (a tensor larger than the limit is a block of its own).
        """
        spans = self.spans[first:last]
        if not spans:
            return
        if whole_tensors and self.all_reduce is not None:
            max_elements = None
        if max_elements is None:
            yield Block(
                spans[0].offset,
                spans[-1].stop,
                tuple(Piece(first + i, 0, s.size, s.shape) for i, s in enumerate(spans)),
                all_reduce=self.all_reduce,
            )
            return
        pieces: list[Piece] = []
        start = filled = spans[0].offset
        for i, span in enumerate(spans, start=first):
            lo = 0
            while lo < span.size:
                room = max_elements - (filled - start)
                if whole_tensors:
                    if pieces and span.size > room:
                        yield Block(start, filled, tuple(pieces))
                        pieces, start = [], filled
                    take = span.size
                else:
                    take = min(span.size - lo, room)
                pieces.append(Piece(i, lo, lo + take, span.shape))
                lo += take
                filled += take
                if filled - start >= max_elements:
                    yield Block(start, filled, tuple(pieces))
                    pieces, start = [], filled
        if pieces:
            yield Block(start, filled, tuple(pieces))
