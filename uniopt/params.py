"""Turning whatever the user passed as ``params`` into named param groups.

Accepted: arrays or ``nn.Parameter``s; ``(name, array)`` pairs (``named_parameters()``);
a mapping name -> array; a JAX pytree (nested dicts, lists, tuples, registered nodes);
or a list of group dicts ``{"params": ..., "lr": ..., ...}`` whose ``params`` may be
any of the former. Unnamed parameters are named by their position: ``"0"``, ``"1"``...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from uniopt import _tree
from uniopt._adapter import is_array

Named = tuple[list[str], list[Any], Callable[[list], Any]]


def _is_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) and is_array(x[1])


def named(params: Any, first_index: int = 0) -> Named:
    """``(names, leaves, rebuild)`` for one collection of parameters."""
    if is_array(params):
        return [str(first_index)], [params], lambda leaves: leaves[0]
    if isinstance(params, Mapping) or hasattr(params, "_fields"):
        return _tree.flatten(params)
    if isinstance(params, Iterable) and not isinstance(params, (str, bytes)):
        items = list(params)
        if items and all(_is_pair(x) for x in items):
            names = [name for name, _ in items]
            return names, [p for _, p in items], lambda leaves: list(zip(names, leaves))
        if all(is_array(x) for x in items):
            names = [str(first_index + i) for i in range(len(items))]
            return names, items, list
        return _tree.flatten(items)
    return _tree.flatten(params)


def is_group_list(params: Any) -> bool:
    return (
        isinstance(params, (list, tuple))
        and bool(params)
        and all(isinstance(g, Mapping) and "params" in g for g in params)
    )


def as_groups(params: Any) -> tuple[list[dict[str, Any]], Callable[[list[list]], Any]]:
    """Normalize ``params`` into group dicts with ``params`` and ``param_names`` lists.

    Returns the groups and ``rebuild(per_group_leaves)``, which gives back the user's
    structure holding the current parameters.
    """
    is_container = isinstance(params, (list, tuple, Mapping, str, bytes)) or is_array(params)
    if not is_container and isinstance(params, Iterable):
        params = list(params)  # a generator such as model.parameters()
    if isinstance(params, (list, tuple)) and any(
        isinstance(g, Mapping) and "params" in g for g in params
    ):
        for i, group in enumerate(params):
            if not isinstance(group, Mapping) or "params" not in group:
                raise TypeError(f"param group {i} must be a dict with a 'params' key")
    if is_group_list(params):
        groups, rebuilds, index = [], [], 0
        for group in params:
            names, leaves, rebuild = named_group(group, index)
            groups.append({**group, "params": leaves, "param_names": names})
            rebuilds.append((group, rebuild))
            index += len(leaves)

        def rebuild_groups(per_group: list[list]) -> list[dict]:
            return [
                {**group, "params": rebuild(leaves)}
                for (group, rebuild), leaves in zip(rebuilds, per_group)
            ]

        return groups, rebuild_groups
    names, leaves, rebuild = named(params)
    return [{"params": leaves, "param_names": names}], lambda per_group: rebuild(per_group[0])


def named_group(group: Mapping[str, Any], first_index: int) -> Named:
    """Names and parameters of one group dict (``param_names`` wins when given)."""
    names, leaves, rebuild = named(group["params"], first_index)
    given = group.get("param_names")
    if given is not None:
        given = list(given)
        if len(given) != len(leaves):
            raise ValueError(
                f"param group has {len(leaves)} parameters but {len(given)} param_names"
            )
        names = [str(n) for n in given]
    return names, leaves, rebuild
