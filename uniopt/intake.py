"""Gradients into a step: matched to the parameters, validated before anything is
written, and remembered while the same arrays come back.

:class:`GradientIntake` is a part of :class:`uniopt.Optimizer` (a mixin over its
``param_groups`` and segments); gradients may be a list in parameter order, a mapping
by name, a structure mirroring the parameters, or None (the parameters' ``.grad``).
"""

from __future__ import annotations

import contextlib
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from uniopt import _tree
from uniopt import params as params_forms
from uniopt._adapter import Adapter, adapter_for, is_array
from uniopt.engine.segment import Segment


def check_gradient(
    owner: str, name: str, g: Any, p: Any, adapter: Adapter, devices: bool = True
) -> None:
    """The checks a gradient ``g`` of ``adapter``'s library passes against its
    parameter ``p`` on both faces: the same sharding (DTensors are never redistributed
    here), shape, dtype and (where ``devices``) device; raise naming the parameter."""
    if adapter.sharding(g) != adapter.sharding(p):
        raise ValueError(
            f"{owner}: gradient for parameter '{name}' is sharded as "
            f"{adapter.sharding(g)}, expected {adapter.sharding(p)} like the parameter"
        )
    if g.shape == p.shape and g.dtype == p.dtype and (not devices or adapter.same_device(g, p)):
        return
    checks = [
        ("shape", tuple(g.shape), tuple(p.shape)),
        ("dtype", adapter.dtype_name(g), adapter.dtype_name(p)),
    ]
    if devices:
        checks.append(("device", adapter.device(g), adapter.device(p)))
    for what, got, expected in checks:
        if got != expected:
            raise ValueError(
                f"{owner}: gradient for parameter '{name}' has {what} {got}, expected {expected}"
            )


class GradientIntake:
    """How an optimizer takes its gradients (see the module docstring)."""

    param_groups: list[dict[str, Any]]
    _segments: list[list[Segment]]
    _seen: _Seen | None
    _owner: str

    def _gradients(self, grads: Any) -> list[list[list[Any]]]:
        """Every gradient per group and segment (in segment-table order), validated
        before anything changes; while the same arrays come back they are not matched
        to names or checked again (:class:`_Seen`)."""
        given = self._given(grads)
        seen = self._seen
        if seen is not None and given is not None and seen.holds(*given, len(self._segments)):
            return seen.sorted(given[1])
        found = self._collect(grads)
        self._seen = None
        mutable = all(s.adapter.mutable for segments in self._segments for s in segments)
        if given is not None and mutable:
            names, arrays = given
            if all(found.get(n, found) is g for n, g in zip(names, arrays)):  # by name
                with contextlib.suppress(TypeError):  # arrays that take no weak reference
                    self._seen = _Seen(names, arrays, self._segments)
        return self._by_segment(found)

    def _by_name(self, grads_by_segment: list[list[list[Any]]]) -> dict[str, Any]:
        """The gradients per group and segment by parameter name."""
        return {
            name: g
            for segments, group in zip(self._segments, grads_by_segment)
            for segment, grads in zip(segments, group)
            for name, g in zip(segment.names, grads)
        }

    def _names(self) -> list[str]:
        """Every parameter's name, in parameter order."""
        return [n for g in self.param_groups for n in g["param_names"]]

    def _given(self, grads: Any) -> tuple[list[str], list[Any]] | None:
        """``(names, gradients)`` as two lists, when ``grads`` is a list (in parameter
        order), a mapping by name, or None (the parameters' own ``.grad``); else None."""
        if grads is None:
            segments = [s for group in self._segments for s in group]
            return [n for s in segments for n in s.names], [
                s.adapter.get_grad(p) if s.adapter.grads_on_params else None
                for s in segments
                for p in s.params
            ]
        if isinstance(grads, Mapping):
            return list(grads), list(grads.values())
        return (self._names(), list(grads)) if isinstance(grads, (list, tuple)) else None

    def _collect(self, grads: Any) -> dict[str, Any]:
        """Every gradient by parameter name, validated before anything changes."""
        if grads is None:
            found = {}
            for group in self.param_groups:
                for name, p in zip(group["param_names"], group["params"]):
                    adapter = adapter_for(p)
                    if not adapter.grads_on_params:
                        raise TypeError(
                            f"{self._owner}: step() needs gradients for {adapter.name} "
                            f"parameters (parameter '{name}'): call step(grads)"
                        )
                    found[name] = adapter.get_grad(p)
        else:
            found = self._match(grads)
        for segments in self._segments:
            for segment in segments:
                for name, p in zip(segment.names, segment.params):
                    if found[name] is not None:
                        self._check_grad(segment, name, p, found[name])
        return found

    def _by_segment(self, found: Mapping[str, Any]) -> list[list[list[Any]]]:
        """The gradients per group and segment, in segment-table order."""
        return [[[found[n] for n in s.names] for s in segments] for segments in self._segments]

    def _match(self, grads: Any) -> dict[str, Any]:
        """Map user gradients to parameter names: by name, else by position."""
        names = self._names()
        if isinstance(grads, Mapping) and set(grads) == set(names):
            return dict(grads)
        if (  # the common case, checked first: a flat list in parameter order
            isinstance(grads, (list, tuple))
            and len(grads) == len(names)
            and _all_arrays_or_none(grads)
        ):
            return dict(zip(names, grads))
        if params_forms.is_group_list(grads):
            grads = [g["params"] for g in grads]
        if (
            isinstance(grads, (list, tuple))
            and grads
            and all(params_forms._is_pair(x) for x in grads)
        ):
            grads = dict(grads)
        given_names, leaves, _ = _tree.flatten(grads)
        if set(given_names) == set(names):
            return dict(zip(given_names, leaves))
        if len(leaves) == len(names) and not isinstance(grads, Mapping):
            return dict(zip(names, leaves))
        missing = sorted(set(names) - set(given_names))
        unknown = sorted(set(given_names) - set(names))
        found = [f"missing gradients for {missing[:10]}"] if missing else []
        found += [f"gradients for unknown parameters {unknown[:10]}"] if unknown else []
        raise ValueError(
            f"{self._owner}: grads do not mirror the parameters: expected {len(names)} "
            f"gradients, got {len(leaves)}; " + "; ".join(found or ["not in the params' order"])
        )

    def _check_grad(self, segment: Segment, name: str, p: Any, g: Any) -> None:
        try:
            adapter = adapter_for(g)
        except TypeError:
            adapter = None
        if adapter is not segment.adapter:
            raise TypeError(
                f"{self._owner}: gradient for parameter '{name}' is a {type(g).__name__}, "
                f"expected a {segment.adapter.name} array like the parameter"
            )
        check_gradient(self._owner, name, g, p, adapter)

    def _backward(
        self, loss: Any, parameters: Any, no_grad_set: Any
    ) -> tuple[dict[str, Any], list[tuple[Any, Any]]]:
        """Backpropagate ``loss``; the gradients to apply by name, and the (param, grad)
        pairs, restricted to ``parameters`` and without ``no_grad_set``."""
        adapter_for(loss).backward(loss)
        chosen = _selector(parameters, default=True)
        excluded = _selector(no_grad_set, default=False)
        grads, pairs = {}, []
        for group in self.param_groups:
            for name, p in zip(group["param_names"], group["params"]):
                g = adapter_for(p).get_grad(p)
                keep = g is not None and chosen(name, p) and not excluded(name, p)
                grads[name] = g if keep else None
                if keep:
                    pairs.append((p, g))
        return grads, pairs


def _selector(items: Any, default: bool) -> Callable[[str, Any], bool]:
    """Membership test over parameters given as objects or names (None: ``default``)."""
    if items is None:
        return lambda name, p: default
    items = list(items)
    ids = {id(x) for x in items}
    names = {x for x in items if isinstance(x, str)} | {
        getattr(x, "name", None) for x in items if isinstance(getattr(x, "name", None), str)
    }
    return lambda name, p: id(p) in ids or name in names


class _Seen:
    """The gradients a step was given, as arrays of mutable libraries (NumPy, torch,
    CuPy), which a training loop usually hands over again: the same objects under the
    same names with the same shapes and dtypes need no second matching to names or
    check (on 2000 tensors that bookkeeping cost 0.7 ms a step). Only weak references
    to them are kept."""

    def __init__(self, names: list[str], given: list[Any], segments: list[list[Segment]]):
        at = {name: i for i, name in enumerate(names)}
        self.names = names
        #: per group and segment, where each of its gradients is in ``given``
        self.order = [[[at[n] for n in s.names] for s in group] for group in segments]
        #: ``given`` is already the one segment's gradients in its order
        self.in_order = self.order == [[list(range(len(given)))]]
        self.gaps = any(g is None for g in given)
        self.refs = [None if g is None else weakref.ref(g) for g in given]
        arrays = [g for g in given if g is not None]
        self.shapes = list(map(_shape, arrays))
        self.dtypes = list(map(_dtype, arrays))

    def holds(self, names: list[str], given: list[Any], groups: int) -> bool:
        """Whether ``given`` are the very arrays seen under ``names``, unchanged, with
        the same groups. Dtypes are compared by identity: an array's dtype object stays
        the same while its dtype does (a different one only costs a full check)."""
        if groups != len(self.order) or names != self.names:
            return False
        if self.gaps:
            seen = [None if ref is None else ref() for ref in self.refs]
            given = [g for g, s in zip(given, seen) if g is s and g is not None]
            if len(given) != len(self.shapes):
                return False
        else:
            seen = [ref() for ref in self.refs]  # None where a seen array has been freed
            if not all(map(operator.is_, given, seen)) or any(g is None for g in seen):
                return False
        return all(map(operator.is_, map(_dtype, given), self.dtypes)) and (
            list(map(_shape, given)) == self.shapes
        )

    def sorted(self, given: list[Any]) -> list[list[list[Any]]]:
        """``given`` per group and segment."""
        if self.in_order:
            return [[given]]
        return [[[given[i] for i in s] for s in group] for group in self.order]


_shape = operator.attrgetter("shape")
_dtype = operator.attrgetter("dtype")


def _all_arrays_or_none(values: Sequence[Any]) -> bool:
    """Every value is an array or None: checked once per type (a step's thousands of
    gradients are usually of one or two types)."""
    firsts = {type(x): x for x in values}
    return all(x is None or is_array(x) for x in firsts.values())
