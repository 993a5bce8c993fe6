"""The functional face: optax-style ``Transform(init, update)`` built from the same rules.

    tx = uniopt.adamw(lr=1e-3, weight_decay=1e-2)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = uniopt.apply_updates(params, updates)

``Transform`` is a NamedTuple of two functions, like optax's ``GradientTransformation``,
so it drops into ``optax.chain`` or a flax ``TrainState``. The state is a NamedTuple
holding a 0-d step counter and one dict of flat arrays per segment (parameters of
one backend and dtype laid end to end): a plain pytree that ``jax.jit`` traces and
donates without registration, and ``torch.compile`` traces without graph breaks.
Everything is pure: no Python branch on array values, no host synchronisation.
``update`` checks the gradients against the parameters (when given) and the state
before computing anything (names, shapes, dtypes, backends: per segment for flat
parameters), reading no values, so under ``jax.jit`` the checks run once, while tracing.

Parameters on several devices (jax arrays sharded or replicated over a mesh), and
parameters away from the device of the others of their backend and dtype, are never
laid end to end: each keeps its state by name in ``TransformState.placed``, every slot
shaped and placed like the parameter, and the rule runs on the N-d arrays, so a
jitted update gathers nothing and the state stays sharded like the parameters. Which
parameters these are is decided by ``init`` (on placed arrays) and read back from the
state's structure by ``update``, so it holds under ``jax.jit`` and ``shard_map`` too.

:func:`state_dict` / :func:`load_state` turn such a state into portable host data keyed
by parameter name and back, onto any placement of the parameters.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from uniopt import _tree, validation
from uniopt import lr as lr_forms
from uniopt._adapter import adapter_for, is_array
from uniopt.engine import pairs
from uniopt.engine.execute import update_segment, update_tensors, update_whole
from uniopt.engine.layout import Layout
from uniopt.flat import Flat, segments
from uniopt.intake import check_gradient
from uniopt.norms import is_low_precision
from uniopt.rule import Rule
from uniopt.state import step_problem


class Transform(NamedTuple):
    """A pure optimizer: ``init(params) -> state``, ``update(grads, state, params) ->
    (updates, state)``; new parameters are ``apply_updates(params, updates)``."""

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class TransformState(NamedTuple):
    count: Any  #: completed steps, a 0-d int32 array
    slots: tuple[dict[str, Any], ...]  #: per segment, each state slot as one flat array
    #: parameter name -> its slots, shaped and placed like the parameter (parameters on
    #: several devices, or away from their segment's device: never laid end to end)
    placed: dict[str, dict[str, Any]] = {}  # a shared default, never mutated


def _plan(leaves: list[Any], placed: set[int]) -> list[list[int]]:
    """Leaf indices per segment (:func:`uniopt.flat.segments`), leaving out the
    ``placed`` ones."""
    kept = [i for i in range(len(leaves)) if i not in placed]
    return [[kept[j] for j in segment] for segment in segments([leaves[i] for i in kept])]


def _to_place(leaves: list[Any]) -> set[int]:
    """Leaves that keep their own state: large leaves of a library whose compiler fuses
    each tensor's update (JAX: laying large tensors' state end to end costs XLA a copy
    of it every step, while many small tensors compile faster laid end to end; flat
    parameters, :class:`uniopt.flat.Flat`, are the fast form for both), those on several
    devices, and those not on the device of the first leaf of their backend and dtype
    (never gathered across devices)."""
    out, first_device = set(), {}
    for i, x in enumerate(leaves):
        adapter = adapter_for(x)
        key = (adapter.name, adapter.dtype_name(x))
        device = first_device.setdefault(key, adapter.device(x))
        large = adapter.fuses_per_tensor and array_api_compat.size(x) >= adapter.chunk_elements
        if large or adapter.multi_device(x) or adapter.device(x) != device:
            out.add(i)
    return out


def step_counter(leaves: list[Any]) -> Any:
    """A 0-d int32 zero beside the first leaf (replicated over its mesh, if it has one)."""
    xp = array_api_compat.array_namespace(leaves[0])
    device = adapter_for(leaves[0]).scalar_device(leaves[0])
    return xp.asarray(0, dtype=xp.int32, device=device)


def _as_dtype(xp: Any, value: Any, dtype: Any) -> Any:
    """Python numbers stay weak-typed; arrays are cast to the segment's dtype."""
    return xp.astype(value, dtype) if hasattr(value, "dtype") else value


def _scalar_dtypes(xp: Any, x: Any) -> tuple[Any, Any]:
    """``(rule dtype, step dtype)`` for arrays like ``x``: the rule's scalars are real,
    of ``x``'s dtype or, for complex ``x``, of its parts' (float32 for complex64); the
    traced step count and the scalars formed from it are at least float32 (a bfloat16
    step stops counting at 256), and cast to the rule dtype at the end."""
    dtype = x.dtype
    if pairs.is_complex(x):
        dtype = xp.float64 if dtype == xp.complex128 else xp.float32
    return dtype, (xp.float32 if is_low_precision(dtype) else dtype)


def make_transform(
    rule_type: type[Rule], hp: Mapping[str, Any], owner: str, flavor: str | None = None
) -> Transform:
    """A ``Transform`` running ``rule_type`` with validated hyperparameters ``hp``
    (``flavor``: the preset they came from, named when complex parameters are
    refused)."""
    rule = rule_type.from_group(hp)
    reads_params = rule.reads_params(hp)

    def init(params: Any) -> TransformState:
        if isinstance(params, Flat):
            pairs.refuse(owner, rule, flavor, enumerate(params.arrays))
            return _init_flat(rule, params)
        names, leaves, _ = _tree.flatten(params)
        pairs.refuse(owner, rule, flavor, zip(names, leaves))
        placed = _to_place(leaves)
        sizes = [array_api_compat.size(x) for x in leaves]
        slots = [
            _flat_slots(rule, leaves[indices[0]], sum(sizes[i] for i in indices))
            for indices in _plan(leaves, placed)
        ]
        own = {  # shaped, and sharded or placed, like the parameter
            names[i]: {
                k: array_api_compat.array_namespace(leaves[i]).full_like(leaves[i], v)
                for k, v in _initial(rule, leaves[i]).items()
            }
            for i in sorted(placed)
        }
        return TransformState(step_counter(leaves), tuple(slots), own)

    def update(
        grads: Any, state: TransformState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, TransformState]:
        def scalars_for(x: Any) -> dict[str, Any]:
            """This step's scalars, in ``x``'s real dtype (:func:`_scalar_dtypes`) and
            where ``x`` is (parameters may lie on different devices or meshes; a no-op
            while tracing)."""
            xp = array_api_compat.array_namespace(x)
            dtype, step_dtype = _scalar_dtypes(xp, x)
            device = adapter_for(x).scalar_device(x)
            done = (
                state.count if device is None else array_api_compat.to_device(state.count, device)
            )
            lr = lr_forms.lr_at(hp["lr"], done)
            step_hp = {**hp, "lr": _as_dtype(xp, lr, step_dtype)}
            scalars = rule.scalars(step_hp, xp.astype(done + 1, step_dtype))
            return {k: _as_dtype(xp, v, dtype) for k, v in scalars.items()}

        if params is None and reads_params:
            raise ValueError(f"{owner}: update() needs params (weight decay reads them)")
        if not isinstance(state, TransformState):
            raise TypeError(
                f"{owner}: state must be the TransformState that init() made, "
                f"got {type(state).__name__}"
            )
        if isinstance(grads, Flat):
            return _update_flat(rule, grads, state, params, scalars_for, owner)
        # everything is checked before anything is computed, on structure, shapes,
        # dtypes and types only: under jax.jit all of it happens once, while tracing
        names, g_leaves, rebuild = _flatten_grads(owner, grads)
        if params is None:
            _check_arrays(owner, names, g_leaves)
            p_leaves = g_leaves  # never read: the rule does not use the parameters
        else:
            p_names, p_leaves, _ = _tree.flatten(params)
            _check_grads(owner, names, g_leaves, p_names, p_leaves)
        placed = {i for i, name in enumerate(names) if name in state.placed}
        plan = _plan(g_leaves, placed)
        _check_state(owner, state, names, g_leaves, plan, placed)

        updates: list[Any] = [None] * len(g_leaves)
        new_slots = []
        for indices, slots in zip(plan, state.slots):
            like = g_leaves[indices[0]]
            xp = array_api_compat.array_namespace(like)
            layout = Layout.of(
                [names[i] for i in indices], [tuple(g_leaves[i].shape) for i in indices]
            )
            run = update_tensors
            if pairs.as_pairs(rule, like):  # complex as real pairs (torch's view_as_real)
                run = partial(pairs.pairs_update_tensors, adapter_for(like))
            deltas, new = run(
                xp,
                rule,
                layout,
                0,
                len(indices),
                [p_leaves[i] for i in indices],
                [g_leaves[i] for i in indices],
                slots,
                scalars_for(g_leaves[indices[0]]),
            )
            for i, d in zip(indices, deltas):
                updates[i] = d
            new_slots.append(new)
        new_placed = {}
        for i in sorted(placed):
            p, g = p_leaves[i], g_leaves[i]
            xp = array_api_compat.array_namespace(g)
            run = update_whole
            if pairs.as_pairs(rule, g):
                run = partial(pairs.pairs_update_whole, adapter_for(g))
            updates[i], new_placed[names[i]] = run(
                xp,
                rule,
                p,
                g,
                state.placed[names[i]],
                scalars_for(g),
                adapter_for(p).shard_all_reduce([p]),
            )
        count = state.count + 1
        return rebuild(updates), TransformState(count, tuple(new_slots), new_placed)

    return Transform(init, update)


# ---- checking gradients (and the state) before an update ----------------------------
# Every check reads structure, shapes, dtypes and types, never values: under jax.jit
# and torch.compile it runs while tracing, adds no host sync and no recompilation.


def _flatten_grads(owner: str, grads: Any) -> tuple[list[str], list[Any], Any]:
    """``_tree.flatten(grads)``, with an error naming the entry that is no array (nor
    None, which the caller names)."""
    try:
        names, leaves, rebuild = _tree.flatten(grads)
    except TypeError:
        found = _odd_leaf(grads, "")
        if found is None:
            raise
        raise _odd_leaf_error(owner, *found) from None
    for name, leaf in zip(names, leaves):
        if leaf is not None and not is_array(leaf):  # JAX's trees take any leaf
            raise _odd_leaf_error(owner, name.removesuffix("."), leaf)  # JAX names it "w."
    return names, leaves, rebuild


def _odd_leaf_error(owner: str, name: str, leaf: Any) -> TypeError:
    where = f"gradient for parameter '{name}'" if name else "grads"
    return TypeError(
        f"{owner}: {where} is a {type(leaf).__name__}, expected an array like the parameter"
    )


def _odd_leaf(tree: Any, prefix: str) -> tuple[str, Any] | None:
    """The name and value of the first entry of ``tree`` (walked as
    :func:`uniopt._tree.flatten` walks it) that is neither an array, None nor a
    container, or None."""
    if tree is None or is_array(tree) or isinstance(tree, tuple(_tree.HOLDERS)):
        return None
    if isinstance(tree, Mapping):
        items = [(k, tree[k]) for k in sorted(tree, key=str)]
    elif isinstance(tree, (list, tuple)):
        items = list(enumerate(tree))
    else:
        return prefix, tree
    for key, value in items:
        found = _odd_leaf(value, _tree._join(prefix, key))
        if found is not None:
            return found
    return None


def _not_an_array(owner: str, name: str, g: Any, like: Any = None) -> TypeError:
    """The error for a gradient ``g`` that is None or no array (of ``like``'s backend)."""
    if g is None:
        return TypeError(
            f"{owner}: gradient for parameter '{name}' is None; update() needs a gradient "
            "for every parameter (zeros where there is none)"
        )
    backend = f"{adapter_for(like).name} " if like is not None else ""
    return TypeError(
        f"{owner}: gradient for parameter '{name}' is a {type(g).__name__}, expected a "
        f"{backend}array like the parameter"
    )


def _check_arrays(owner: str, names: list[str], grads: list[Any]) -> None:
    """Every gradient is an array (without parameters, the state says the rest)."""
    for name, g in zip(names, grads):
        if not is_array(g):
            raise _not_an_array(owner, name, g)


def _mirror_problem(owner: str, names: list[str], expected: list[str]) -> str:
    """Why gradients named ``names`` do not mirror parameters named ``expected``."""
    got, want = set(names), set(expected)
    missing, unknown = sorted(want - got), sorted(got - want)
    found = [f"missing gradients for {missing[:10]}"] if missing else []
    found += [f"gradients for unknown parameters {unknown[:10]}"] if unknown else []
    text = "; ".join(found or ["not in the parameters' structure"])
    if len(names) != len(expected):
        return (
            f"{owner}: grads do not mirror the parameters ({text}): "
            f"{len(names)} gradients for {len(expected)} parameters"
        )
    return f"{owner}: grads do not mirror the parameters: {text}"


def _check_grads(
    owner: str, names: list[str], grads: list[Any], p_names: list[str], params: list[Any]
) -> None:
    """Gradients mirror the parameters: the same names, and each gradient an array of
    its parameter's backend, shape, dtype (and device, sharding), as the stateful face
    checks them (:meth:`uniopt.intake.GradientIntake._check_grad`)."""
    if names != p_names:
        raise ValueError(_mirror_problem(owner, names, p_names))
    kind = adapter = None  # the adapter of the last parameter type seen (one lookup per type)
    for name, g, p in zip(names, grads, params):
        if type(p) is not kind:
            if not is_array(p):
                raise TypeError(
                    f"{owner}: parameter '{name}' is a {type(p).__name__}, not an array"
                )
            kind, adapter = type(p), adapter_for(p)
        if type(g) is not kind and (not is_array(g) or adapter_for(g) is not adapter):
            raise _not_an_array(owner, name, g, p)
        # XLA places arrays itself (jit moves its inputs, eager JAX moves uncommitted
        # arrays, and a tracer has no device): devices are compared where it does not
        check_gradient(owner, name, g, p, adapter, devices=not adapter.fuses_per_tensor)


def _check_slots(
    owner: str,
    names: Callable[[], list[str]],
    like: Any,
    shape: tuple[int, ...],
    slots: Mapping[str, Any],
) -> None:
    """Each of a segment's (or a placed parameter's) state slots is what ``init`` makes
    for gradients like ``like``: an array of its backend and dtype, of ``shape``
    (``names()``: the parameters', named in the error only)."""
    adapter = adapter_for(like)
    for slot, v in slots.items():
        fits = is_array(v) and adapter_for(v) is adapter
        if fits and v.dtype == like.dtype and tuple(v.shape) == shape:
            continue
        got = (
            f"{adapter_for(v).name} {adapter_for(v).dtype_name(v)}{list(v.shape)}"
            if is_array(v)
            else f"a {type(v).__name__}"
        )
        named = names()
        who = f"parameter '{named[0]}'" if len(named) == 1 else f"parameters {named[:10]}"
        raise (ValueError if fits else TypeError)(
            f"{owner}: the state does not fit the gradients: its {slot!r} for {who} is "
            f"{got}, expected {adapter.name} {adapter.dtype_name(like)}{list(shape)} "
            "(pass the state that init() made for these parameters)"
        )


def _check_state(
    owner: str,
    state: TransformState,
    names: list[str],
    grads: list[Any],
    plan: list[list[int]],
    placed: set[int],
) -> None:
    """The state fits the gradients: its parameters kept apart are among them, one
    segment of slots per segment of gradients, every slot of their backend, dtype and
    size (checked per segment, not per tensor)."""
    extra = sorted(set(state.placed) - set(names))
    if extra:
        raise ValueError(
            f"{owner}: the state keeps parameters {extra[:10]} that the gradients lack "
            "(pass the state that init() made for these parameters)"
        )
    if len(plan) != len(state.slots):
        kinds = ", ".join(
            f"{adapter_for(grads[s[0]]).dtype_name(grads[s[0]])} {[names[i] for i in s][:10]}"
            for s in plan
        )
        raise ValueError(
            f"{owner}: the gradients form {len(plan)} segment(s) (one per backend and "
            f"dtype: {kinds}), the state {len(state.slots)} (gradients have their "
            "parameters' dtypes)"
        )
    for indices, slots in zip(plan, state.slots):
        size = sum(math.prod(grads[i].shape) for i in indices)
        picked = partial(_picked, names, indices)
        _check_slots(owner, picked, grads[indices[0]], (size,), slots)
    for i in sorted(placed):
        g = grads[i]
        picked = partial(_picked, names, [i])
        _check_slots(owner, picked, g, tuple(g.shape), state.placed[names[i]])


def _picked(names: list[str], indices: list[int]) -> list[str]:
    return [names[i] for i in indices]


def _flat_slots(rule: Rule, like: Any, size: int) -> dict[str, Any]:
    """Each of the rule's state slots as one flat array of ``size`` elements, of
    ``like``'s dtype and on its device."""
    xp, device = array_api_compat.array_namespace(like), array_api_compat.device(like)
    slots = _initial(rule, like).items()
    return {k: xp.full((size,), v, dtype=like.dtype, device=device) for k, v in slots}


def _initial(rule: Rule, like: Any) -> dict[str, Any]:
    """The initial value of each slot for state like ``like`` (complex state in real
    pairs: ``complex(v, v)``, :func:`uniopt.engine.pairs.initial_values`)."""
    return pairs.initial_values(rule, pairs.is_complex(like), rule.slots())


def _init_flat(rule: Rule, params: Flat) -> TransformState:
    """The state for flat parameters: the very state of their unflattened form."""
    slots = tuple(_flat_slots(rule, x, array_api_compat.size(x)) for x in params.arrays)
    return TransformState(step_counter(list(params.arrays)), slots)


def _update_flat(
    rule: Rule,
    grads: Flat,
    state: TransformState,
    params: Any,
    scalars_for: Callable[[Any], dict[str, Any]],
    owner: str,
) -> tuple[Flat, TransformState]:
    """One update of flat parameters: each segment in one piece."""
    if params is not None and (not isinstance(params, Flat) or params.table != grads.table):
        raise ValueError(f"{owner}: flat gradients need the same flat parameters")
    if len(state.slots) != len(grads.arrays) or state.placed:
        raise ValueError(f"{owner}: the state was not made by init() for flat parameters")
    p_arrays = grads.arrays if params is None else params.arrays
    _check_flat(owner, grads, p_arrays, state)
    deltas, new_slots = [], []
    for layout, p, g, slots in zip(grads.table.layouts, p_arrays, grads.arrays, state.slots):
        xp = array_api_compat.array_namespace(g)
        run = update_segment
        if pairs.as_pairs(rule, g):
            run = partial(pairs.pairs_update_segment, adapter_for(g))
        delta, new = run(xp, rule, layout, p, g, slots, scalars_for(g))
        deltas.append(delta)
        new_slots.append({**slots, **new})
    return grads.like(deltas), TransformState(state.count + 1, tuple(new_slots))


def _check_flat(owner: str, grads: Flat, p_arrays: Any, state: TransformState) -> None:
    """Flat gradients fit the flat parameters and the state, segment by segment (never
    tensor by tensor: the table holds the tensors)."""
    layouts = grads.table.layouts
    if len(grads.arrays) != len(layouts):
        raise ValueError(
            f"{owner}: flat gradients hold {len(grads.arrays)} arrays for {len(layouts)} segments"
        )
    for i, (layout, p, g, slots) in enumerate(zip(layouts, p_arrays, grads.arrays, state.slots)):
        names = partial(_span_names, layout)  # per tensor: built for an error only
        if not is_array(g) or (g is not p and adapter_for(g) is not adapter_for(p)):
            backend = f"{adapter_for(p).name} " if is_array(p) else ""
            raise TypeError(
                f"{owner}: flat gradient segment {i} (parameters {names()[:10]}) is a "
                f"{type(g).__name__}, expected a {backend}array like the parameters"
            )
        shape = (layout.size,)
        if tuple(g.shape) != shape or g.dtype != p.dtype:
            adapter = adapter_for(g)
            raise ValueError(
                f"{owner}: flat gradient segment {i} (parameters {names()[:10]}) is "
                f"{adapter.dtype_name(g)}{list(g.shape)}, expected "
                f"{adapter.dtype_name(p)}{list(shape)}"
            )
        _check_slots(owner, names, g, shape, slots)


def _span_names(layout: Layout) -> list[str]:
    return [span.name for span in layout.spans]


#: the ``"format"`` of a transform state made portable by :func:`state_dict`
STATE_FORMAT = "uniopt.transform"


def state_dict(state: Any, params: Any) -> Any:
    """``state`` as portable host data, keyed by parameter name whatever the placement.

    ``state`` is what a transform's ``init``/``update`` returned for ``params``: a
    uniopt transform's state, or any nesting of tuples, lists and dicts holding some
    (``optax.chain``, ``uniopt.lookahead``). Each uniopt transform state becomes
    ``{"format": "uniopt.transform", "count": int, "state": {name: {slot: ndarray}}}``
    with every slot shaped like its parameter; every other array becomes a host NumPy
    array. Save it with :func:`uniopt.save`; restore it with :func:`load_state`.
    """
    if isinstance(state, TransformState):
        return _portable(state, params)
    if isinstance(state, Mapping):
        return {k: state_dict(v, params) for k, v in state.items()}
    if isinstance(state, (list, tuple)):  # NamedTuples become tuples, as in saved files
        items = [state_dict(v, params) for v in state]
        return items if isinstance(state, list) else tuple(items)
    return adapter_for(state).to_numpy(state) if is_array(state) else state


def load_state(saved: Any, tx: Transform, params: Any) -> Any:
    """The state of ``tx`` for ``params`` holding ``saved`` (:func:`state_dict`'s result,
    or it read back by :func:`uniopt.load`): every array is placed as ``tx.init(params)``
    places it, so a state saved from sharded parameters loads onto another sharding or
    a single device, and the other way round. Raises ValueError on any mismatch."""
    return _restored(saved, tx.init(params), params, "state")


def _segments_of(state: TransformState, params: Any) -> tuple[list[str], list[Any], list]:
    """Parameter names and leaves, and the leaf indices of each of ``state.slots``."""
    if isinstance(params, Flat):  # the same state as the unflattened parameters
        params = params.unflatten()
    names, leaves, _ = _tree.flatten(params)
    placed = {i for i, name in enumerate(names) if name in state.placed}
    return names, leaves, _plan(leaves, placed)


def _portable(state: TransformState, params: Any) -> dict[str, Any]:
    names, leaves, plan = _segments_of(state, params)
    entries: dict[str, dict[str, Any]] = {}
    for indices, slots in zip(plan, state.slots):
        host = {k: adapter_for(v).to_numpy(v) for k, v in slots.items()}
        offset = 0
        for i in indices:
            shape, size = tuple(leaves[i].shape), array_api_compat.size(leaves[i])
            entries[names[i]] = {
                k: h[offset : offset + size].reshape(shape) for k, h in host.items()
            }
            offset += size
    for name, slots in state.placed.items():
        entries[name] = {k: adapter_for(v).to_numpy(v) for k, v in slots.items()}
    count = int(adapter_for(state.count).to_numpy(state.count))
    return {"format": STATE_FORMAT, "count": count, "state": entries}


def _restored(saved: Any, like: Any, params: Any, where: str) -> Any:
    """``saved`` in the structure and placement of ``like``."""
    if isinstance(like, TransformState):
        return _unportable(saved, like, params, where)
    if isinstance(like, Mapping):
        if not isinstance(saved, Mapping) or set(saved) != set(like):
            raise ValueError(f"load_state: {where} does not match the transform's state")
        return type(like)(
            {k: _restored(saved[k], v, params, f"{where}[{k!r}]") for k, v in like.items()}
        )
    if isinstance(like, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(like):
            raise ValueError(f"load_state: {where} does not match the transform's state")
        items = [
            _restored(s, v, params, f"{where}[{i}]") for i, (s, v) in enumerate(zip(saved, like))
        ]
        return type(like)(*items) if hasattr(like, "_fields") else type(like)(items)
    if not is_array(like):
        return saved
    if not isinstance(saved, (np.ndarray, np.generic)):
        raise ValueError(f"load_state: {where} is a {type(saved).__name__}, not a NumPy array")
    value, dtype = np.asarray(saved), _host_dtype(like)
    if value.shape != tuple(like.shape) or value.dtype.name != dtype:
        raise ValueError(
            f"load_state: {where} is {value.dtype.name}{list(value.shape)}, "
            f"expected {dtype}{list(like.shape)}"
        )
    return _from_host(value, like)


def _from_host(value: np.ndarray, like: Any) -> Any:
    """``value`` placed as ``like`` is, in its shape (0-d stays 0-d whatever the
    adapter's ``from_numpy`` does with it: torch's makes it 1-d)."""
    adapter = adapter_for(like)
    out = adapter.from_numpy(value, like)
    shape = tuple(like.shape)
    return out if tuple(out.shape) == shape else adapter.namespace(out).reshape(out, shape)


def _unportable(saved: Any, like: TransformState, params: Any, where: str) -> TransformState:
    if not isinstance(saved, Mapping) or saved.get("format") != STATE_FORMAT:
        raise ValueError(f"load_state: {where} is not a uniopt transform state from state_dict()")
    names, leaves, plan = _segments_of(like, params)
    entries = saved.get("state")
    count, problems = _saved_count(saved, like.count)
    unknown = sorted(set(saved) - {"format", "count", "state"}, key=str)
    if unknown:
        problems.append(f"unknown keys {unknown[:10]}")
    if not isinstance(entries, Mapping):
        problems.append(f"'state' is a {type(entries).__name__}, not a dict of parameters")
    elif set(entries) != set(names):
        got = set(entries)
        problems.append(
            f"parameters differ: missing {sorted(set(names) - got)}, "
            f"unexpected {sorted(got - set(names), key=str)}"
        )
    else:
        expected = _expected_slots(like, names, leaves, plan)
        for name in names:
            found = _entry_problems(entries[name], expected[name])
            problems += [f"'{name}': {p}" for p in found]
    if problems:  # nothing is built before everything is checked
        raise ValueError(f"load_state: {where}: " + "; ".join(problems))

    def put(host: Any, like_array: Any) -> Any:
        return _from_host(np.asarray(host), like_array)

    slots = tuple(
        {
            k: put(np.concatenate([np.reshape(entries[names[i]][k], -1) for i in indices]), v)
            for k, v in like_slots.items()
        }
        for indices, like_slots in zip(plan, like.slots)
    )
    placed = {
        name: {k: put(entries[name][k], v) for k, v in like_slots.items()}
        for name, like_slots in like.placed.items()
    }
    return TransformState(put(count, like.count), slots, placed)


def _host_dtype(x: Any) -> str:
    """The NumPy dtype name of ``x``'s host copy (``bfloat16`` for bfloat16 everywhere)."""
    return adapter_for(x).dtype_name(x)


def _saved_count(saved: Mapping[str, Any], like: Any) -> tuple[np.ndarray, list[str]]:
    """The saved step count as a host array of ``like``'s dtype (the state's counter),
    and what is wrong with it: an int from 0 to 2**53 (:func:`uniopt.state.step_problem`)
    that the counter holds. A 0-d integer array passes as its value."""
    if "count" not in saved:
        return np.zeros((), np.int32), ["count is missing"]
    count = saved["count"]
    if isinstance(count, (np.ndarray, np.generic)) and count.shape == ():
        count = count.item() if count.dtype.kind in "iu" else count
    problem = step_problem(count, first=0)
    dtype = np.dtype(_host_dtype(like))
    largest = int(np.iinfo(dtype).max)
    if problem is None and count > largest:
        problem = f"must be at most {largest} (the state counts in {dtype}), got {count}"
    if problem is not None:
        return np.zeros((), dtype), [f"count {problem}"]
    return np.asarray(count, dtype), []


def _expected_slots(
    like: TransformState, names: list[str], leaves: list[Any], plan: list[list[int]]
) -> dict[str, dict[str, tuple[str, tuple[int, ...]]]]:
    """Per parameter name, each slot's host dtype and shape (the parameter's) as
    ``like`` (what ``init`` made) holds it."""
    out = {}
    for indices, slots in zip(plan, like.slots):
        dtypes = {k: _host_dtype(v) for k, v in slots.items()}
        for i in indices:
            shape = tuple(leaves[i].shape)
            out[names[i]] = {k: (dtype, shape) for k, dtype in dtypes.items()}
    for name, slots in like.placed.items():
        out[name] = {k: (_host_dtype(v), tuple(v.shape)) for k, v in slots.items()}
    return out


def _entry_problems(entry: Any, expected: Mapping[str, tuple[str, tuple[int, ...]]]) -> list[str]:
    """What keeps one parameter's saved entry from fitting: a dict holding exactly the
    expected slots, each a NumPy array of the expected dtype and shape (never cast,
    truncated or reshaped)."""
    if not isinstance(entry, Mapping):
        return [f"state entry is a {type(entry).__name__}, not a dict"]
    out = []
    for slot, (dtype, shape) in expected.items():
        value = entry.get(slot)
        if slot not in entry:
            out.append(f"missing state {slot!r}")
        elif not isinstance(value, np.ndarray):
            out.append(f"state {slot!r} is a {type(value).__name__}, not a NumPy array")
        elif value.shape != shape or value.dtype.name != dtype:
            out.append(
                f"state {slot!r} is {value.dtype.name}{list(value.shape)}, "
                f"expected {dtype}{list(shape)}"
            )
    extra = sorted(set(entry) - set(expected), key=str)
    if extra:
        out.append(f"unexpected state {extra[:10]}")
    return out


#: the keyword options of the stateful face (:class:`uniopt.Optimizer`) only
STATEFUL_OPTIONS = (
    "grad_clip",
    "loss_scale",
    "apply_decay_param_fun",
    "lr_ratio",
    "decay_skips_beta_gamma",
    "lazy_mode",
    "multi_precision",
    "compile",
)


def functional(optimizer_cls: type) -> Callable[..., Transform]:
    """The functional twin of a stateful optimizer class: same arguments (less
    ``params``), same defaults and validation, returning a :class:`Transform`."""
    signature = inspect.signature(optimizer_cls.__init__)
    arguments = [p for n, p in signature.parameters.items() if n not in ("self", "params")]
    signature = signature.replace(parameters=arguments, return_annotation=Transform)
    name = optimizer_cls.__name__.lower()

    def factory(*args: Any, **kwargs: Any) -> Transform:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        hp = dict(bound.arguments)
        flavor = hp.pop("flavor", None)
        options = dict(hp.pop("options", None) or {})
        stateful_only = [k for k in options if k in STATEFUL_OPTIONS]
        if stateful_only:
            raise TypeError(
                f"uniopt.{name}: {', '.join(stateful_only)} (like the other common optimizer "
                "options) belong to the stateful face; chain clipping transforms "
                "(optax.chain) instead"
            )
        validation.known_arguments(f"uniopt.{name}", options, hp)
        hp = optimizer_cls._validated(hp, owner=f"uniopt.{name}", flavor=flavor)
        return make_transform(optimizer_cls.rule, hp, f"uniopt.{name}", flavor)

    factory.__name__ = factory.__qualname__ = name
    factory.__signature__ = signature
    factory.__doc__ = (
        f"Functional {optimizer_cls.__name__}: a :class:`Transform` with the arguments "
        f"and defaults of :class:`uniopt.{optimizer_cls.__name__}`.\n\n"
        + (inspect.getdoc(optimizer_cls) or "")
    )
    return factory


def apply_updates(params: Any, updates: Any) -> Any:
    """``params + updates`` leaf by leaf, in the structure of ``params`` (a ``None``
    update leaves its parameter as it is). 0-d parameters stay 0-d arrays (NumPy makes
    the sum of two a scalar)."""
    if isinstance(params, Flat):
        if not isinstance(updates, Flat) or updates.table != params.table:
            raise ValueError("apply_updates: flat parameters need flat updates of the same table")
        return params.like(p + u for p, u in zip(params.arrays, updates.arrays))
    _, p_leaves, rebuild = _tree.flatten(params)
    _, u_leaves, _ = _tree.flatten(updates)
    if len(p_leaves) != len(u_leaves):
        raise ValueError(f"apply_updates: {len(u_leaves)} updates for {len(p_leaves)} parameters")
    return rebuild([p if u is None else _sum(p, u) for p, u in zip(p_leaves, u_leaves)])


def _sum(p: Any, u: Any) -> Any:
    """``p + u``, an array even where NumPy makes the sum of 0-d arrays a scalar."""
    out = p + u
    return np.asarray(out) if isinstance(out, np.generic) else out
