"""A segment at run time: its parameters, segment table, namespace and flat state.

The namespace, device and dtype are resolved once, when the segment is planned.
Each step runs the rule over *runs*: maximal stretches of consecutive tensors that
have a gradient and have taken the same number of steps (so bias corrections are
shared). Usually a run is the whole segment.
"""

from __future__ import annotations

import contextlib
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any

import array_api_compat

from uniopt._adapter import Adapter
from uniopt.engine import pairs
from uniopt.engine.execute import (
    block_sums,
    step_whole,
    update_block_in_place,
    update_tensors,
)
from uniopt.engine.layout import Block, Layout
from uniopt.engine.plan import Plan, Untraceable
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
        self.layout = Layout.of(
            names, [tuple(x.shape) for x in data], adapter.shard_all_reduce(self.params)
        )
        self.xp = adapter.namespace(data[0])
        self.dtype = data[0].dtype
        self.device = array_api_compat.device(data[0])
        #: what :meth:`check_params` expects of every parameter: (dtype, device) names
        self._kind = (adapter.dtype_name(data[0]), adapter.device(data[0]))
        #: one tensor on several devices (a sharded jax array): its state arrays keep its
        #: shape and placement and the rule runs on them unflattened, gathering nothing
        self.shaped = len(data) == 1 and adapter.multi_device(data[0])
        self.state_shape = tuple(data[0].shape) if self.shaped else (self.layout.size,)
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
        self._planned: dict[tuple, list] = {}
        self._scratch: dict[Any, tuple[Plan, list]] = {}
        self._grad_views: dict[int, tuple[tuple, Any, Any]] = {}
        self._views: dict[tuple, tuple[tuple, list[dict[str, Any]]]] = {}
        #: the parameters' addresses when last found bound (``Adapter.addresses``)
        self._bound_at: Any = None
        #: the parameters' storage, when the library lets parameters be re-pointed at
        #: views of one flat buffer (torch): the update then gathers nothing. Bound at
        #: the first step, not at construction, so that building an optimizer (or a
        #: failed ``from_torch``) leaves the user's parameters as they were
        self.flat: Any = None
        self._unbound = bool(self.layout.size)
        self._grads: Any = None
        #: run each step as one compiled kernel (torch.compile), where available (the
        #: parameters bound to one flat buffer)
        self.compile = compile
        #: the parameters' addresses when last found unchanged (:meth:`check_params`)
        self._checked_at: Any = None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.layout.spans]

    def ensure_state(self, slots: Mapping[str, float]) -> None:
        """Allocate the flat state arrays the rule needs that are not there yet."""
        for slot, initial in slots.items():
            if slot not in self.state:
                self.state[slot] = self.xp.full(
                    self.state_shape, initial, dtype=self.state_dtype, device=self.device
                )
        if self.master and "master" not in self.state:
            self.state["master"] = self.xp.astype(self.flat_params(), self.state_dtype)

    def flat_params(self) -> Any:
        """A flat copy of the segment's parameters (the master copy when there is one)."""
        if "master" in self.state:
            return self.xp.asarray(self.state["master"], copy=True)
        return self.packed([self.adapter.data(p) for p in self.params])

    def packed(self, arrays: Sequence[Any]) -> Any:
        """A copy of arrays like the segment's tensors in the form of its state: laid end
        to end, or (shaped segment) the one tensor as it is."""
        xp = self.xp
        parts = arrays if self.shaped else [xp.reshape(a, (-1,)) for a in arrays]
        # one array: a copy (jax's concat of one array is that array, and state is donated)
        return xp.asarray(parts[0], copy=True) if len(parts) == 1 else xp.concat(parts)

    def check_params(self, owner: str) -> None:
        """Refuse, before anything is written, parameters whose shape, dtype or device
        changed since the segment was planned (torch: ``p.data = ...``): the segment's
        layout and state no longer fit them, and a silent re-bind would cast them back.
        Skipped while the parameters sit where they were last found."""
        adapter = self.adapter
        if not adapter.mutable:  # the parameters are the optimizer's own (JAX)
            return
        where = adapter.addresses(self.params)
        if where is not None and where == self._checked_at:
            return
        dtype, device = self._kind
        for span, p in zip(self.layout.spans, self.params):
            data = adapter.data(p)
            found = (tuple(data.shape), adapter.dtype_name(data), adapter.device(data))
            if found != (span.shape, dtype, device):
                raise ValueError(
                    f"{owner}: parameter '{span.name}' was changed to shape {list(found[0])}, "
                    f"dtype {found[1]}, device {found[2]} since the optimizer was built "
                    f"(shape {list(span.shape)}, dtype {dtype}, device {device}); its state "
                    "no longer fits: build a new optimizer for it"
                )
        self._checked_at = where

    def runs(self, grads: Sequence[Any]) -> list[tuple[int, int]]:
        """Maximal ``[first, last)`` stretches of tensors with a gradient, equal steps and
        equal profiles."""
        n = len(grads)
        steps, profiles = self.steps, self.profiles
        if (  # the usual case, checked first: one run of all the tensors
            n
            and steps.count(steps[0]) == n
            and profiles.count(profiles[0]) == n
            and not any(map(operator.is_, grads, repeat(None)))
        ):
            return [(0, n)]
        out, i = [], 0
        key = list(zip(steps, profiles))
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
        complex_state = pairs.is_complex(self.state_dtype)
        self.ensure_state(pairs.initial_values(rule, complex_state, rule.slots()))
        for first, last in self.runs(grads):
            scalars = scalars_at(self.steps[first] + 1, self.profiles[first])
            self.state = self.run(rule, first, last, grads, scalars, self.state)
            self.steps[first:last] = [t + 1 for t in self.steps[first:last]]

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
        the new state. Parameters are updated in place or replaced. A complex segment
        whose rule takes real pairs runs as the real segment of twice its length
        (:mod:`uniopt.engine.pairs`)."""
        if pairs.as_pairs(rule, self.dtype):
            return pairs.run(self, rule, first, last, grads, scalars, state)
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
        if self._unbound:
            self._unbound = False
            self.flat = self.adapter.bind(self.params)
            self.compile = self.compile and self.flat is not None
        if self.flat is not None and self._keep_bound():
            self._run_flat(rule, first, last, grads, scalars, state)
            return
        adapter, xp = self.adapter, self.xp
        params = [adapter.flat_view(adapter.data(p)) for p in self.params]
        flat_grads = [None if g is None else adapter.flat(g) for g in grads]
        g_run = self._shared_grads(first, list(grads[first:last]))
        start = self.layout.spans[first].offset
        run, whole = self._eager(rule, scalars, state, first, last)
        blocks = self._blocks(first, last, adapter.chunk_elements, whole)

        def views(final: bool):
            for block in blocks:
                own = {k: v[block.start : block.stop] for k, v in state.items()}
                p = block.gather(xp, params)  # a view when the block is one tensor's piece
                if g_run is None:
                    g = block.gather(xp, flat_grads)
                else:
                    g = g_run[block.start - start : block.stop - start]
                yield block, {"p": p, "g": g, **own}
                if final and len(block.pieces) > 1:  # p was a copy: scatter it back
                    for piece, part in zip(block.pieces, block.split(p)):
                        adapter.write(params[piece.index][piece.lo : piece.hi], part)

        run(views)

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
        start, stop = layout.spans[first].offset, layout.spans[last - 1].stop
        run_grads = list(grads[first:last])
        g_run = self._shared_grads(first, run_grads)
        if g_run is None:
            if self._grads is None:
                self._grads = xp.empty_like(self.flat)
            g_run = adapter.gather(run_grads, out=self._grads[start:stop])
            adapter.point_grads(self.params[first:last], run_grads, g_run)
        fn = None
        if self.compile and self._compiles(rule, last - first):
            fn = self._compiled_in_place(rule, first, last, tuple(scalars))
            self.compile = fn is not None  # the library compiles nothing (NumPy): eager
        if fn is not None:
            (arrays,) = self._block_arrays(self._blocks(first, last, None, True), g_run, state)
            own = {k: v for k, v in arrays.items() if k not in ("p", "g")}
            like = own.get("master", arrays["p"])  # the rule runs in the master's dtype
            scalars = {k: adapter.scalar(v, like) for k, v in scalars.items()}
            fn(arrays["p"], arrays["g"], own, scalars)
            return
        run, whole = self._eager(rule, scalars, state, first, last)
        blocks = self._blocks(first, last, adapter.chunk_elements, whole)
        arrays = self._block_arrays(blocks, g_run, state)
        run(lambda final: zip(blocks, arrays))

    def _block_arrays(
        self, blocks: list[Block], g_run: Any, state: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Each block's arrays: views of the flat parameters, of the run's gradients
        ``g_run`` and of ``state``, made once and reused while these are the same arrays
        (on 2000 tensors making them cost about 0.1 ms a step)."""
        key = (id(blocks), tuple(state))  # planned blocks live as long as the segment
        sources = (self.flat, g_run, *state.values())
        memo = self._views.get(key)
        if memo is not None and all(map(operator.is_, memo[0], sources)):
            return memo[1]
        start = blocks[0].start
        arrays = [
            {
                "p": self.flat[block.start : block.stop],
                "g": g_run[block.start - start : block.stop - start],
                **{k: v[block.start : block.stop] for k, v in state.items()},
            }
            for block in blocks
        ]
        self._views[key] = (sources, arrays)
        return arrays

    def _eager(
        self, rule: Rule, scalars: Mapping, state: Mapping[str, Any], first: int, last: int
    ) -> tuple[Callable, bool]:
        """``(run, whole)``: ``run(views)`` applies the rule to tensors ``first ..
        last-1``, whose blocks (holding whole tensors where ``whole``) and arrays
        ``views(final)`` yields; the arrays of the ``final`` sweep are written in place.
        Replayed from a recorded plan where the adapter allows it (the rule's numbers,
        see :mod:`uniopt.engine.plan`), else the rule as written on each block."""
        xp, write, dtype = self.xp, self.adapter.write, self.dtype

        def as_written(views):
            for block, arrays in views(True):
                own = {k: v for k, v in arrays.items() if k not in ("p", "g")}
                p, g = arrays["p"], arrays["g"]
                update_block_in_place(xp, write, rule, block, dtype, p, g, own, scalars)

        found = self._plan(rule, scalars, state)
        if found is None:
            return as_written, rule.needs_tensor_reductions
        plan, values, scratch = found
        ops = self.adapter.replay

        def replayed(views):
            for _, arrays in views(True):
                plan.run(ops, arrays, values, scratch)

        def in_passes(views):
            plan.run_passes(ops, views, values, scratch, first, last - first)

        return (in_passes if plan.reduces else replayed), False

    def _plan(self, rule: Rule, scalars: Mapping, state: Mapping[str, Any]) -> Any:
        """``(plan, this step's scalar table, scratch)`` for the rule, recorded on first
        use and again when a guard fails; None where the rule runs as written."""
        ops = self.adapter.replay
        if ops is None or "master" in state:
            return None
        if rule.needs_tensor_reductions and self.layout.all_reduce is not None:
            return None  # sums over shards in other processes: whole blocks, as written
        key = ("plan", rule, tuple(scalars), tuple(state))
        plan = self._compiled.get(key)
        values = plan.scalar_values(scalars) if plan is not None else None
        if values is None and self._compiled.get(key, 0) is not None:
            dtypes = {"p": self.dtype, "g": self.dtype, **{k: v.dtype for k, v in state.items()}}
            dtypes = {k: ops.numpy_dtype(v) for k, v in dtypes.items()}
            try:
                if any(d is None for d in dtypes.values()):
                    raise Untraceable("a dtype NumPy has no stand-in for")
                plan = Plan.trace(self.xp, rule, dtypes, scalars)
            except Untraceable:
                plan = None
            self._compiled[key] = plan
            values = plan.scalar_values(scalars) if plan is not None else None
        if values is None:
            return None
        size = self.adapter.chunk_elements
        owner, scratch = self._scratch.get(key, (None, []))
        if owner is not plan or any(x.shape[0] < size for x in scratch):
            scratch = plan.scratch(ops, size, self.adapter.data(self.params[0]))
            self._scratch[key] = (plan, scratch)
        return plan, values, scratch

    #: the most tensors a compiled step with per-tensor sums takes: torch.compile's time
    #: grows with their number (LAMB over 161 tensors: 2 s and slower than the replay;
    #: over 2000: 498 s), while the replay in passes streams them at any number
    COMPILED_SUMS_MAX_TENSORS = 8

    def _compiles(self, rule: Rule, tensors: int) -> bool:
        """Whether a run of ``tensors`` is compiled (``compile=True``) rather than
        replayed."""
        return not rule.needs_tensor_reductions or tensors <= self.COMPILED_SUMS_MAX_TENSORS

    def _compiled_in_place(self, rule: Rule, first: int, last: int, names: tuple) -> Callable:
        """The run's step compiled to write in place (None where the library compiles
        nothing). A rule with per-tensor sums compiles as two passes, its sums and then
        the update given them, so no block-sized intermediate is kept between the two
        (LAMB's direction: 100% of the parameters' bytes as one kernel)."""
        key = ("in_place", rule, first, last, names)
        if key not in self._compiled:
            block = next(self.layout.blocks(first, last, None, whole_tensors=True))
            xp, write, dtype = self.xp, self.adapter.write, self.dtype
            compile = self.adapter.compile_in_place

            def step(p, g, state, scalars, sums=None):
                update_block_in_place(xp, write, rule, block, dtype, p, g, state, scalars, sums)

            def sums_of(p, g, state, scalars):
                return block_sums(xp, rule, block, p, g, state, scalars)

            fn = compile(step)
            if fn is not None and rule.needs_tensor_reductions:
                first_pass, second_pass = compile(sums_of), fn

                def fn(p, g, state, scalars):
                    second_pass(p, g, state, scalars, first_pass(p, g, state, scalars))

            self._compiled[key] = fn
        return self._compiled[key]

    def _shared_grads(self, first: int, grads: list[Any]) -> Any:
        """The run's gradients as one flat view, when they lie end to end in one buffer
        (else None). Remembered while the same gradient objects come back where they
        were (``Adapter.addresses``)."""
        adapter = self.adapter
        memo = self._grad_views.get(first)
        same = memo is not None and len(memo[0]) == len(grads)
        same = same and all(map(operator.is_, [ref() for ref in memo[0]], grads))
        if same and memo[1] == adapter.addresses(grads):
            return memo[2]
        flat = adapter.shared_flat(grads)
        where = adapter.addresses(grads) if flat is not None else None
        if where is not None:  # weakly: no step keeps a gradient object alive
            with contextlib.suppress(TypeError):
                self._grad_views[first] = ([weakref.ref(g) for g in grads], where, flat)
        return flat

    def zero_grads(self) -> bool:
        """Zero every gradient in one call when they are all views of the segment's
        gradient buffer (see ``Adapter.point_grads``); False when they are not."""
        if self._grads is None or not self.adapter.grads_on_params:
            return False
        grads = [self.adapter.get_grad(p) for p in self.params]
        if any(g is None for g in grads) or self.adapter.shared_flat(grads) is None:
            return False
        if not self.adapter.is_view_of(grads[0], self._grads, 0):
            return False
        self._grads[...] = 0
        return True

    def _blocks(self, first: int, last: int, max_elements: int | None, whole: bool) -> list:
        """The layout's blocks for a run (one block when ``max_elements`` is None; never
        splitting a tensor where ``whole``), planned once and reused every step."""
        key = (first, last, max_elements, whole)
        if key not in self._planned:
            self._planned[key] = list(self.layout.blocks(first, last, max_elements, whole))
        return self._planned[key]

    def _keep_bound(self) -> bool:
        """Re-bind when a parameter's storage was replaced (``p.data = ...``); False when
        the parameters no longer share one flat buffer."""
        adapter = self.adapter
        where = adapter.addresses(self.params)  # () where memory never moves
        if where is not None and where == self._bound_at:
            return True
        for p, span in zip(self.params, self.layout.spans):
            if not adapter.is_view_of(p, self.flat, span.offset):
                self.flat = adapter.bind(self.params, self.flat)
                self._grads = None
                break
        self._bound_at = adapter.addresses(self.params) if self.flat is not None else None
        return self.flat is not None

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

        def shaped_step(params, grads, state, scalars):
            new_p, new_state = step_whole(xp, rule, params[0], grads[0], state, scalars)
            return [new_p], new_state

        fn = shaped_step if self.shaped else step
        return self.adapter.compile(fn, donate_argnums=(2,)) or fn
