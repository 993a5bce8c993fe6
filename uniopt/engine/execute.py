"""Running a rule over a segment: one pure function, two ways to drive it.

``rule_on_block`` is the whole of the math the engine does: the rule's delta and
new state for one block. Mutable backends (numpy, torch, cupy) drive it eagerly over
cache-sized blocks and write results in place; immutable ones (jax, array-API) run
``update_tensors`` over a run of tensors at once, jitted where the adapter compiles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from uniopt.engine.layout import Block, Layout, Recorded
from uniopt.rule import Rule, Scalars


def rule_on_block(
    xp: Any,
    rule: Rule,
    block: Block,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """``(delta, new_state)`` of ``rule`` on one block."""
    return rule.update(xp, p, g, state, Scalars(scalars), block)


def update_tensors(
    xp: Any,
    rule: Rule,
    layout: Layout,
    first: int,
    last: int,
    params: Sequence[Any],
    grads: Sequence[Any],
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
) -> tuple[list[Any], dict[str, Any]]:
    """Pure update of tensors ``first .. last-1`` of a segment, given as separate arrays.

    ``state`` holds the segment's flat slots. Returns the deltas, shaped like the
    tensors, and the new flat state. Traceable: no Python branch on array values.
    """
    spans = layout.spans[first:last]
    run = Layout.of([s.name for s in spans], [s.shape for s in spans])
    block = next(run.blocks(0, len(spans), None, whole_tensors=True))
    p = block.gather(xp, [xp.reshape(x, (-1,)) for x in params])
    g = block.gather(xp, [xp.reshape(x, (-1,)) for x in grads])
    start, stop = spans[0].offset, spans[-1].stop
    whole = start == 0 and stop == layout.size
    own = {k: v if whole else v[start:stop] for k, v in state.items()}
    delta, new_own = rule_on_block(xp, rule, block, p, g, own, scalars)
    new_state = dict(state)
    for k, v in new_own.items():
        new_state[k] = v if whole else xp.concat([state[k][:start], v, state[k][stop:]])
    deltas = [xp.reshape(d, s.shape) for d, s in zip(block.split(delta), spans)]
    return deltas, new_state


def update_segment(
    xp: Any,
    rule: Rule,
    layout: Layout,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """``(delta, new_state)`` of ``rule`` on a whole segment whose parameters and
    gradients are given flat (:class:`uniopt.flat.Flat`): nothing gathered or split."""
    block = next(layout.blocks(0, len(layout.spans), None, whole_tensors=True))
    return rule_on_block(xp, rule, block, p, g, state, scalars)


def update_whole(
    xp: Any,
    rule: Rule,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
    all_reduce: Callable[[Any], Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``(delta, new_state)`` of ``rule`` on one whole tensor in its own shape, its state
    arrays shaped and placed like it: for a tensor sharded over devices nothing is
    flattened or gathered (see :meth:`Block.whole` for ``all_reduce``). Traceable."""
    return rule_on_block(xp, rule, Block.whole(tuple(p.shape), all_reduce), p, g, state, scalars)


def step_whole(
    xp: Any,
    rule: Rule,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """The new parameter and state of one whole tensor (as :func:`update_whole`). With a
    float32 ``"master"`` slot (multi_precision) the rule runs on the master, which the
    new state carries, and the parameter is the master rounded to ``p``'s dtype."""
    own = dict(state)
    master = own.pop("master", None)
    if master is None:
        delta, new_state = update_whole(xp, rule, p, g, own, scalars)
        return p + delta, new_state
    delta, new_state = update_whole(xp, rule, master, xp.astype(g, master.dtype), own, scalars)
    new_state["master"] = master + delta
    return xp.astype(new_state["master"], p.dtype), new_state


def update_block_in_place(
    xp: Any,
    write: Any,
    rule: Rule,
    block: Block,
    dtype: Any,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
    sums: Sequence[Any] | None = None,
) -> None:
    """``rule`` on one block, writing the new parameters into ``p`` and the new state
    into ``state``'s arrays. With a float32 ``"master"`` copy in the state
    (multi_precision) the rule runs on the master and ``p`` receives it rounded to
    ``dtype``. With ``sums`` (from :func:`block_sums` on the same arrays) the rule takes
    those per-tensor sums instead of reducing. Traceable by ``torch.compile`` (the
    writes become in-place stores)."""
    if sums is not None:
        block = Recorded.of(block, sums)
    work, own, delta, new_state = _on_work(xp, rule, block, p, g, state, scalars)
    new_p = work + delta
    for k, v in new_state.items():
        write(own[k], v)
    if work is not p:  # the master copy
        write(work, new_p)
        new_p = xp.astype(new_p, dtype)
    write(p, new_p)


def block_sums(
    xp: Any,
    rule: Rule,
    block: Block,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
) -> tuple[Any, ...]:
    """The per-tensor sums ``rule`` takes on one block, in the order it takes them: the
    first of two passes whose second is :func:`update_block_in_place` given them (what
    the rule computes besides is unused, so a compiler keeps none of it)."""
    recording = Recorded.of(block)
    _on_work(xp, rule, recording, p, g, state, scalars)
    return tuple(recording.sums)


def _on_work(
    xp: Any,
    rule: Rule,
    block: Block,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    """``(work, own, delta, new_state)``: the rule on ``work``, the parameters or their
    float32 master copy where the state holds one (``own``: the state without it)."""
    own = dict(state)
    master = own.pop("master", None)
    work = p if master is None else master
    if master is not None:
        g = xp.astype(g, master.dtype)
    delta, new_state = rule_on_block(xp, rule, block, work, g, own, scalars)
    return work, own, delta, new_state
