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
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import array_api_compat

from uniopt import _tree
from uniopt import lr as lr_forms
from uniopt._adapter import adapter_for
from uniopt.engine.execute import update_tensors
from uniopt.engine.layout import Layout
from uniopt.rule import Rule


class Transform(NamedTuple):
    """A pure optimizer: ``init(params) -> state``, ``update(grads, state, params) ->
    (updates, state)``; new parameters are ``apply_updates(params, updates)``."""

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class TransformState(NamedTuple):
    count: Any  #: completed steps, a 0-d int32 array
    slots: tuple[dict[str, Any], ...]  #: per segment, each state slot as one flat array


def _plan(leaves: list[Any]) -> list[list[int]]:
    """Leaf indices per segment: same backend and dtype, in order of first appearance."""
    buckets: dict[tuple[str, str], list[int]] = {}
    for i, x in enumerate(leaves):
        adapter = adapter_for(x)
        buckets.setdefault((adapter.name, adapter.dtype_name(x)), []).append(i)
    return list(buckets.values())


def _as_dtype(xp: Any, value: Any, dtype: Any) -> Any:
    """Python numbers stay weak-typed; arrays are cast to the segment's dtype."""
    return xp.astype(value, dtype) if hasattr(value, "dtype") else value


def make_transform(rule_type: type[Rule], hp: Mapping[str, Any], owner: str) -> Transform:
    """A ``Transform`` running ``rule_type`` with validated hyperparameters ``hp``."""
    rule = rule_type.from_group(hp)
    reads_params = rule.reads_params(hp)

    def init(params: Any) -> TransformState:
        _, leaves, _ = _tree.flatten(params)
        slots = []
        for indices in _plan(leaves):
            first = leaves[indices[0]]
            xp, device = array_api_compat.array_namespace(first), array_api_compat.device(first)
            size = sum(array_api_compat.size(leaves[i]) for i in indices)
            slots.append(
                {
                    k: xp.full((size,), v, dtype=first.dtype, device=device)
                    for k, v in rule.slots().items()
                }
            )
        xp = array_api_compat.array_namespace(leaves[0])
        count = xp.asarray(0, dtype=xp.int32, device=array_api_compat.device(leaves[0]))
        return TransformState(count, tuple(slots))

    def update(
        grads: Any, state: TransformState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, TransformState]:
        names, g_leaves, rebuild = _tree.flatten(grads)
        if params is None:
            if reads_params:
                raise ValueError(f"{owner}: update() needs params (weight decay reads them)")
            p_leaves = g_leaves  # never read: the rule does not use the parameters
        else:
            _, p_leaves, _ = _tree.flatten(params)
            if len(p_leaves) != len(g_leaves):
                raise ValueError(
                    f"{owner}: {len(g_leaves)} gradients for {len(p_leaves)} parameters"
                )
        count = state.count + 1
        lr = lr_forms.lr_at(hp["lr"], state.count)
        updates: list[Any] = [None] * len(g_leaves)
        new_slots = []
        for indices, slots in zip(_plan(g_leaves), state.slots):
            xp = array_api_compat.array_namespace(g_leaves[indices[0]])
            dtype = g_leaves[indices[0]].dtype
            layout = Layout.of(
                [names[i] for i in indices], [tuple(g_leaves[i].shape) for i in indices]
            )
            step_hp = {**hp, "lr": _as_dtype(xp, lr, dtype)}
            scalars = rule.scalars(step_hp, xp.astype(count, dtype))
            deltas, new = update_tensors(
                xp,
                rule,
                layout,
                0,
                len(indices),
                [p_leaves[i] for i in indices],
                [g_leaves[i] for i in indices],
                slots,
                {k: _as_dtype(xp, s, dtype) for k, s in scalars.items()},
            )
            for i, d in zip(indices, deltas):
                updates[i] = d
            new_slots.append(new)
        return rebuild(updates), TransformState(count, tuple(new_slots))

    return Transform(init, update)


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
    _, p_leaves, rebuild = _tree.flatten(params)
    _, u_leaves, _ = _tree.flatten(updates)
    if len(p_leaves) != len(u_leaves):
        raise ValueError(f"apply_updates: {len(u_leaves)} updates for {len(p_leaves)} parameters")
    return rebuild([p if u is None else p + u for p, u in zip(p_leaves, u_leaves)])
