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
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from uniopt import _tree
from uniopt import lr as lr_forms
from uniopt._adapter import adapter_for, is_array
from uniopt.engine.execute import update_segment, update_tensors, update_whole
from uniopt.engine.layout import Layout
from uniopt.flat import Flat, segments
from uniopt.rule import Rule


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


def make_transform(rule_type: type[Rule], hp: Mapping[str, Any], owner: str) -> Transform:
    """A ``Transform`` running ``rule_type`` with validated hyperparameters ``hp``."""
    rule = rule_type.from_group(hp)
    reads_params = rule.reads_params(hp)

    def init(params: Any) -> TransformState:
        if isinstance(params, Flat):
            return _init_flat(rule, params)
        names, leaves, _ = _tree.flatten(params)
        placed = _to_place(leaves)
        sizes = [array_api_compat.size(x) for x in leaves]
        slots = [
            _flat_slots(rule, leaves[indices[0]], sum(sizes[i] for i in indices))
            for indices in _plan(leaves, placed)
        ]
        own = {  # shaped, and sharded or placed, like the parameter
            names[i]: {
                k: array_api_compat.array_namespace(leaves[i]).full_like(leaves[i], v)
                for k, v in rule.slots().items()
            }
            for i in sorted(placed)
        }
        return TransformState(step_counter(leaves), tuple(slots), own)

    def update(
        grads: Any, state: TransformState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, TransformState]:
        def scalars_for(x: Any) -> dict[str, Any]:
            """This step's scalars, in ``x``'s dtype and where ``x`` is (parameters may
            lie on different devices or meshes; a no-op while tracing)."""
            xp, dtype = array_api_compat.array_namespace(x), x.dtype
            device = adapter_for(x).scalar_device(x)
            done = (
                state.count if device is None else array_api_compat.to_device(state.count, device)
            )
            lr = lr_forms.lr_at(hp["lr"], done)
            step_hp = {**hp, "lr": _as_dtype(xp, lr, dtype)}
            scalars = rule.scalars(step_hp, xp.astype(done + 1, dtype))
            return {k: _as_dtype(xp, v, dtype) for k, v in scalars.items()}

        if params is None and reads_params:
            raise ValueError(f"{owner}: update() needs params (weight decay reads them)")
        if isinstance(grads, Flat):
            return _update_flat(rule, grads, state, params, scalars_for, owner)
        names, g_leaves, rebuild = _tree.flatten(grads)
        if params is None:
            p_leaves = g_leaves  # never read: the rule does not use the parameters
        else:
            _, p_leaves, _ = _tree.flatten(params)
            if len(p_leaves) != len(g_leaves):
                raise ValueError(
                    f"{owner}: {len(g_leaves)} gradients for {len(p_leaves)} parameters"
                )

        updates: list[Any] = [None] * len(g_leaves)
        placed = {i for i, name in enumerate(names) if name in state.placed}
        new_slots = []
        for indices, slots in zip(_plan(g_leaves, placed), state.slots):
            xp = array_api_compat.array_namespace(g_leaves[indices[0]])
            layout = Layout.of(
                [names[i] for i in indices], [tuple(g_leaves[i].shape) for i in indices]
            )
            deltas, new = update_tensors(
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
            updates[i], new_placed[names[i]] = update_whole(
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


def _flat_slots(rule: Rule, like: Any, size: int) -> dict[str, Any]:
    """Each of the rule's state slots as one flat array of ``size`` elements, of
    ``like``'s dtype and on its device."""
    xp, device = array_api_compat.array_namespace(like), array_api_compat.device(like)
    slots = rule.slots().items()
    return {k: xp.full((size,), v, dtype=like.dtype, device=device) for k, v in slots}


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
    deltas, new_slots = [], []
    for layout, p, g, slots in zip(grads.table.layouts, p_arrays, grads.arrays, state.slots):
        xp = array_api_compat.array_namespace(g)
        delta, new = update_segment(xp, rule, layout, p, g, slots, scalars_for(g))
        deltas.append(delta)
        new_slots.append({**slots, **new})
    return grads.like(deltas), TransformState(state.count + 1, tuple(new_slots))


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
    value = np.asarray(saved)
    if value.shape != tuple(like.shape):
        raise ValueError(f"load_state: {where} has shape {value.shape}, expected {like.shape}")
    return adapter_for(like).from_numpy(value, like)


def _unportable(saved: Any, like: TransformState, params: Any, where: str) -> TransformState:
    if not isinstance(saved, Mapping) or saved.get("format") != STATE_FORMAT:
        raise ValueError(f"load_state: {where} is not a uniopt transform state from state_dict()")
    names, leaves, plan = _segments_of(like, params)
    entries = saved.get("state")
    slot_names = set(like.slots[0] if like.slots else next(iter(like.placed.values()), {}))
    problems = []
    if not isinstance(entries, Mapping) or set(entries) != set(names):
        got = set(entries) if isinstance(entries, Mapping) else set()
        problems.append(
            f"parameters differ: missing {sorted(set(names) - got)}, "
            f"unexpected {sorted(got - set(names))}"
        )
    else:
        for name, x in zip(names, leaves):
            entry = entries[name]
            if not isinstance(entry, Mapping) or set(entry) != slot_names:
                problems.append(f"'{name}': slots {sorted(entry)} are not {sorted(slot_names)}")
            elif any(np.shape(v) != tuple(x.shape) for v in entry.values()):
                problems.append(f"'{name}': state is not shaped {tuple(x.shape)}")
    if problems:
        raise ValueError(f"load_state: {where}: " + "; ".join(problems))

    def put(host: Any, like_array: Any) -> Any:
        return adapter_for(like_array).from_numpy(np.asarray(host), like_array)

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
    count = put(np.asarray(saved["count"], dtype=np.int32), like.count)
    return TransformState(count, slots, placed)


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
        if hp.pop("options", None):
            raise TypeError(
                f"uniopt.{name}: grad_clip, loss_scale and the other optimizer options are "
                "for the stateful face; chain clipping transforms (optax.chain) instead"
            )
        hp = optimizer_cls._validated(hp, owner=f"uniopt.{name}", flavor=flavor)
        return make_transform(optimizer_cls.rule, hp, f"uniopt.{name}")

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
    update leaves its parameter as it is)."""
    if isinstance(params, Flat):
        if not isinstance(updates, Flat) or updates.table != params.table:
            raise ValueError("apply_updates: flat parameters need flat updates of the same table")
        return params.like(p + u for p, u in zip(params.arrays, updates.arrays))
    _, p_leaves, rebuild = _tree.flatten(params)
    _, u_leaves, _ = _tree.flatten(updates)
    if len(p_leaves) != len(u_leaves):
        raise ValueError(f"apply_updates: {len(u_leaves)} updates for {len(p_leaves)} parameters")
    return rebuild([p if u is None else p + u for p, u in zip(p_leaves, u_leaves)])
