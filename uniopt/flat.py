"""Parameters kept flat: one 1-D array per (backend, dtype) segment, and the table.

Under ``jax.jit`` every separate parameter array is a separate input and output of the
compiled step, and XLA's compile time grows with their number (about 25 ms each on a
CPU: a model of 2000 tensors takes most of a minute before its first step). Keeping
the parameters flat at the jit boundary makes them one array per dtype; the model
reads its tensors as slices, which cost nothing inside a compiled function:

    flat = uniopt.flatten(params)            # a Flat: flat.arrays, flat.unflatten()
    tx = uniopt.adamw(lr=1e-3)
    state = tx.init(flat)

    @jax.jit
    def train_step(flat, state, batch):
        grads = jax.grad(lambda f: loss(f.unflatten(), batch))(flat)   # a Flat too
        updates, state = tx.update(grads, state, flat)
        return uniopt.apply_updates(flat, updates), state

The transform updates each segment in one piece, with the per-tensor reductions of
LAMB and LARS still per tensor (the table says where each tensor lies), and its state
is exactly the one it keeps for the unflattened parameters, so the two forms share
checkpoints. ``Flat`` is a pytree for JAX (registered when the JAX adapter loads): it
passes through ``jax.jit``, ``jax.grad``, ``optax.apply_updates`` and ``optax.chain``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import array_api_compat

from uniopt import _tree
from uniopt._adapter import adapter_for
from uniopt.engine.layout import Layout


@dataclass(frozen=True)
class Table:
    """Where every tensor of a :class:`Flat` lies: the segments' layouts (names, shapes,
    offsets), which leaf of the original structure each row is, and how to rebuild that
    structure. Two tables with the same rows are equal (parameters, their gradients and
    updates share a table); it is the static part of a JAX pytree."""

    layouts: tuple[Layout, ...]
    leaves: tuple[tuple[int, ...], ...]  #: per segment, the leaf index of each row
    count: int  #: leaves in the structure
    rebuild: Any = field(compare=False)  #: new leaves -> the structure

    def unflatten(self, arrays: tuple[Any, ...]) -> Any:
        out: list[Any] = [None] * self.count
        for layout, indices, flat in zip(self.layouts, self.leaves, arrays):
            adapter = adapter_for(flat)
            xp = adapter.namespace(flat)
            parts = adapter.split(flat, [span.size for span in layout.spans])
            for part, span, i in zip(parts, layout.spans, indices):
                out[i] = xp.reshape(part, span.shape)
        return self.rebuild(out)


class Flat:
    """Parameters (or gradients, or updates) as one flat array per segment."""

    __slots__ = ("arrays", "table")

    def __init__(self, arrays: tuple[Any, ...], table: Table):
        self.arrays, self.table = tuple(arrays), table

    def unflatten(self) -> Any:
        """The original structure, each tensor a reshaped slice of its segment."""
        return self.table.unflatten(self.arrays)

    def like(self, arrays: Any) -> Flat:
        """A Flat with the same table holding ``arrays``."""
        return Flat(tuple(arrays), self.table)

    def __repr__(self) -> str:
        rows = sum(len(layout.spans) for layout in self.table.layouts)
        sizes = [layout.size for layout in self.table.layouts]
        return f"Flat({rows} tensors in {len(sizes)} segment(s) of {sizes} elements)"


_tree.HOLDERS.append(Flat)


def segments(leaves: list[Any]) -> list[list[int]]:
    """Leaf indices per segment: same backend and dtype, segments in order of first
    appearance. Within a segment, tensors of equal size lie together (sizes in order of
    first appearance, tensors in structure order): a stretch of equal-sized tensors is
    one ``(k, n)`` array, so LAMB's and LARS's per-tensor norms cost one reduction per
    size, not per tensor, which keeps compiling a model of thousands of tensors fast.
    The transforms lay out their state the same way."""
    buckets: dict[tuple[str, str], dict[int, list[int]]] = {}
    for i, x in enumerate(leaves):
        adapter = adapter_for(x)
        sizes = buckets.setdefault((adapter.name, adapter.dtype_name(x)), {})
        sizes.setdefault(array_api_compat.size(x), []).append(i)
    return [[i for same in sizes.values() for i in same] for sizes in buckets.values()]


def flatten(params: Any) -> Flat:
    """``params`` (any structure of arrays) as a :class:`Flat`: one new 1-D array per
    (backend, dtype) segment, the tensors laid end to end as :func:`segments` orders
    them (equal-sized tensors together); :meth:`Flat.unflatten` gives the structure
    back."""
    names, leaves, rebuild = _tree.flatten(params)
    for name, x in zip(names, leaves):
        if x is None:
            raise ValueError(f"uniopt.flatten: parameter '{name}' is None")
        if adapter_for(x).multi_device(x):
            raise ValueError(
                f"uniopt.flatten: parameter '{name}' lies on several devices; laying it end "
                "to end with others would gather it (pass sharded parameters as they are)"
            )
    layouts, rows, arrays = [], [], []
    for indices in segments(leaves):
        xp = adapter_for(leaves[indices[0]]).namespace(leaves[indices[0]])
        layouts.append(
            Layout.of([names[i] for i in indices], [tuple(leaves[i].shape) for i in indices])
        )
        rows.append(tuple(indices))
        arrays.append(xp.concat([xp.reshape(leaves[i], (-1,)) for i in indices]))
    return Flat(tuple(arrays), Table(tuple(layouts), tuple(rows), len(leaves), rebuild))
