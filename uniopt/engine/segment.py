"""A segment at run time: its parameters, segment table, namespace and flat state.

The namespace, device and dtype are resolved once, when the segment is planned.
Each step runs the rule over *runs*: maximal stretches of consecutive tensors that
have a gradient and have taken the same number of steps (so bias corrections are
shared). Usually a run is the whole segment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import array_api_compat

from uniopt._adapter import Adapter
from uniopt.engine.execute import update_block_in_place, update_tensors
from uniopt.engine.layout import Layout
from uniopt.rule import Rule

ScalarsAt = Callable[[int, Any], Mapping[str, Any]]


class Segment:
    """Parameters of one group sharing backend, device and dtype, updated as one."""

    def __init__(
        self,
        names: Sequence[str],
        params: Sequence[Any],
        adapter: Adapter,
        positions: Sequence[int] | None = None,
        master: bool = False,
        compile: bool = False,
    ):
        self.adapter = adapter
        self.params = list(params)
        #: where each tensor sits in its param group's ``params`` list
        self.positions = list(positions) if positions is not None else list(range(len(params)))
        data = [adapter.data(p) for p in self.params]
        self.layout = Layout.of(names, [tuple(x.shape) for x in data])
        self.xp = adapter.namespace(data[0])
        self.dtype = data[0].dtype
        self.device = array_api_compat.device(data[0])
        #: float16/bfloat16 parameters updated through a float32 master copy (state slot
        #: "master") with float32 optimizer state (multi_precision)
        self.master = master
        self.state_dtype = self.xp.float32 if master else self.dtype
        self.steps = [0] * len(self.params)
        #: per tensor, what makes its scalars differ from its group's (e.g. decay on/off,
        #: an lr ratio): tensors only share a run when their profiles are equal
        self.profiles: list[Any] = [()] * len(self.params)
        self.state: dict[str, Any] = {}
        self._compiled: dict[Any, Callable] = {}
        #: the parameters' storage, when the library lets parameters be re-pointed at
        #: views of one flat buffer (torch): the update then gathers nothing
        self.flat = adapter.bind(self.params) if self.layout.size else None
        self._grads: Any = None
        #: run each step as one compiled kernel (torch.compile), where available
        self.compile = compile and self.flat is not None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.layout.spans]

    def ensure_state(self, slots: Mapping[str, float]) -> None:
        """Allocate the flat state arrays the rule needs that are not there yet."""
        for slot, initial in slots.items():
            if slot not in self.state:
                self.state[slot] = self.xp.full(
                    (self.layout.size,), initial, dtype=self.state_dtype, device=self.device
                )
        if self.master and "master" not in self.state:
            self.state["master"] = self.xp.astype(self.flat_params(), self.state_dtype)

    def flat_params(self) -> Any:
        """A flat copy of the segment's parameters (the master copy when there is one)."""
        if "master" in self.state:
            return self.xp.asarray(self.state["master"], copy=True)
        xp = self.xp
        return xp.concat([xp.reshape(self.adapter.data(p), (-1,)) for p in self.params])

    def runs(self, grads: Sequence[Any]) -> list[tuple[int, int]]:
        """Maximal ``[first, last)`` stretches of tensors with a gradient, equal steps and
        equal profiles."""
        out, i, n = [], 0, len(grads)
        key = list(zip(self.steps, self.profiles))
        while i < n:
            if grads[i] is None:
                i += 1
                continue
            j = i + 1
            while j < n and grads[j] is not None and key[j] == key[i]:
                j += 1
            out.append((i, j))
            i = j
        return out

    def step(self, rule: Rule, grads: Sequence[Any], scalars_at: ScalarsAt) -> None:
        """One update of every tensor that has a gradient. ``scalars_at(t, profile)`` gives
        the per-step scalars for tensors of that profile taking their ``t``-th step."""
        self.ensure_state(rule.slots())
        for first, last in self.runs(grads):
            scalars = scalars_at(self.steps[first] + 1, self.profiles[first])
            self.state = self.run(rule, first, last, grads, scalars, self.state)
            for i in range(first, last):
                self.steps[i] += 1

    def run(
        self,
        rule: Rule,
        first: int,
        last: int,
        grads: Sequence[Any],
        scalars: Mapping[str, Any],
        state: dict[str, Any],
    ) -> dict[str, Any]:
        """Apply ``rule`` to tensors ``first .. last-1`` with the flat ``state`` given
        (the segment's own, or a wrapper's such as LookAhead's slow weights); returns
        the new state. Parameters are updated in place or replaced."""
        if self.adapter.mutable:
            self._run_in_place(rule, first, last, grads, scalars, state)
            return state
        return self._run_functional(rule, first, last, grads, scalars, state)

    def _run_in_place(
        self,
        rule: Rule,
        first: int,
        last: int,
        grads: Sequence[Any],
        scalars: Mapping,
        state: dict[str, Any],
    ) -> None:
        if self.flat is not None:
            self._run_flat(rule, first, last, grads, scalars, state)
            return
        adapter, xp = self.adapter, self.xp
        params = [adapter.flat_view(adapter.data(p)) for p in self.params]
        flat_grads = [None if g is None else adapter.flat(g) for g in grads]
        for block in self.layout.blocks(
            first, last, adapter.chunk_elements, rule.needs_tensor_reductions
        ):
            own = {k: v[block.start : block.stop] for k, v in state.items()}
            p = block.gather(xp, params)  # a view when the block is one tensor's piece
            g = block.gather(xp, flat_grads)
            update_block_in_place(xp, adapter.write, rule, block, self.dtype, p, g, own, scalars)
            if len(block.pieces) > 1:  # p was a copy: scatter it back
                for piece, part in zip(block.pieces, block.split(p)):
                    adapter.write(params[piece.index][piece.lo : piece.hi], part)

    def _run_flat(
        self,
        rule: Rule,
        first: int,
        last: int,
        grads: Sequence[Any],
        scalars: Mapping,
        state: dict[str, Any],
    ) -> None:
        """Parameters are views of ``self.flat``: blocks are plain slices, nothing is
        gathered but the gradients (one concatenation into a reused buffer)."""
        adapter, xp, layout = self.adapter, self.xp, self.layout
        self._keep_bound()
        start, stop = layout.spans[first].offset, layout.spans[last - 1].stop
        if self._grads is None:
            self._grads = xp.empty_like(self.flat)
        p_run = self.flat[start:stop]
        g_run = adapter.gather(list(grads[first:last]), out=self._grads[start:stop])
        if self.compile:
            blocks = list(layout.blocks(first, last, None, whole_tensors=True))
            fn = self._compiled_in_place(rule, first, last, tuple(scalars))
            scalars = {k: adapter.scalar(v, p_run) for k, v in scalars.items()}
        else:
            blocks = layout.blocks(
                first, last, adapter.chunk_elements, rule.needs_tensor_reductions
            )
            fn = None
        for block in blocks:
            a, b = block.start - start, block.stop - start
            own = {k: v[block.start : block.stop] for k, v in state.items()}
            if fn is not None:
                fn(p_run[a:b], g_run[a:b], own, scalars)
            else:
                update_block_in_place(
                    xp, adapter.write, rule, block, self.dtype, p_run[a:b], g_run[a:b], own, scalars
                )

    def _compiled_in_place(self, rule: Rule, first: int, last: int, names: tuple) -> Callable:
        key = ("in_place", rule, first, last, names)
        if key not in self._compiled:
            block = next(self.layout.blocks(first, last, None, whole_tensors=True))
            xp, write, dtype = self.xp, self.adapter.write, self.dtype

            def step(p, g, state, scalars):
                update_block_in_place(xp, write, rule, block, dtype, p, g, state, scalars)

            self._compiled[key] = self.adapter.compile_in_place(step)
        return self._compiled[key]

    def _keep_bound(self) -> None:
        """Re-bind when a parameter's storage was replaced (``p.data = ...``)."""
        adapter = self.adapter
        for p, span in zip(self.params, self.layout.spans):
            if not adapter.is_view_of(adapter.data(p), self.flat, span.offset):
                self.flat = adapter.bind(self.params)
                self._grads = None
                return

    def _run_functional(
        self,
        rule: Rule,
        first: int,
        last: int,
        grads: Sequence[Any],
        scalars: Mapping,
        state: dict[str, Any],
    ) -> dict[str, Any]:
        key = (rule, first, last, tuple(scalars))
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = self._build(rule, first, last)
        params = [self.adapter.data(p) for p in self.params[first:last]]
        new_params, new_state = fn(params, list(grads[first:last]), state, dict(scalars))
        self.params[first:last] = new_params
        return new_state

    def _build(self, rule: Rule, first: int, last: int) -> Callable:
        xp, layout = self.xp, self.layout

        def step(params, grads, state, scalars):
            if "master" not in state:
                deltas, new_state = update_tensors(
                    xp, rule, layout, first, last, params, grads, state, scalars
                )
                return [p + d for p, d in zip(params, deltas)], new_state
            spans = layout.spans[first:last]
            master = [xp.reshape(state["master"][s.offset : s.stop], s.shape) for s in spans]
            grads = [xp.astype(g, state["master"].dtype) for g in grads]
            own = {k: v for k, v in state.items() if k != "master"}
            deltas, new_state = update_tensors(
                xp, rule, layout, first, last, master, grads, own, scalars
            )
            new_master = [m + d for m, d in zip(master, deltas)]
            flat = [xp.reshape(m, (-1,)) for m in new_master]
            start, stop = spans[0].offset, spans[-1].stop
            whole = state["master"]
            new_state["master"] = xp.concat([whole[:start], *flat, whole[stop:]])
            return [xp.astype(m, p.dtype) for m, p in zip(new_master, params)], new_state

        return self.adapter.compile(step, donate_argnums=(2,)) or step
