"""Flattening nested containers of arrays into named leaves, and rebuilding them.

Dicts (keys in sorted order, as JAX does), lists, tuples, NamedTuples and
:class:`uniopt.flat.Flat` are handled here with no framework. Any other container (a
flax ``FrozenDict``, a registered dataclass) is handed to ``jax.tree_util`` when JAX is
already imported. Leaf names
join the path with dots: ``{"dense": {"w": x}}`` gives ``"dense.w"``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from uniopt._adapter import is_array

Rebuild = Callable[[list], Any]
#: containers whose ``arrays`` are their leaves and ``like(arrays)`` rebuilds them:
#: :class:`uniopt.flat.Flat` registers itself here (so this module imports no other)
HOLDERS: list[type] = []


def _is_leaf(x: Any) -> bool:
    return x is None or is_array(x)


def flatten(tree: Any, prefix: str = "") -> tuple[list[str], list[Any], Rebuild]:
    """Return ``(names, leaves, rebuild)``; ``rebuild(new_leaves)`` gives the same structure."""
    if _is_leaf(tree):
        return [prefix], [tree], lambda leaves: leaves[0]
    if isinstance(tree, Mapping):
        keys = sorted(tree, key=str)
        parts = [flatten(tree[k], _join(prefix, k)) for k in keys]
        kind = type(tree)

        def rebuild_mapping(leaves: list) -> Any:
            values = _rebuild_parts(parts, leaves)
            return kind(zip(keys, values)) if kind is not dict else dict(zip(keys, values))

        return _names(parts), _leaves(parts), rebuild_mapping
    if isinstance(tree, (list, tuple)):
        parts = [flatten(v, _join(prefix, i)) for i, v in enumerate(tree)]
        if isinstance(tree, tuple) and hasattr(tree, "_fields"):
            kind = type(tree)
            return _names(parts), _leaves(parts), lambda ls: kind(*_rebuild_parts(parts, ls))
        kind = type(tree)
        return _names(parts), _leaves(parts), lambda ls: kind(_rebuild_parts(parts, ls))
    if isinstance(tree, tuple(HOLDERS)):  # a Flat: its segments' arrays are the leaves
        names = [_join(prefix, f"segment{i}") for i in range(len(tree.arrays))]
        return names, list(tree.arrays), tree.like
    if "jax" in sys.modules:
        return _flatten_jax(tree, prefix)
    raise TypeError(f"cannot find arrays in an object of type {type(tree).__name__}")


def _flatten_jax(tree: Any, prefix: str) -> tuple[list[str], list[Any], Rebuild]:
    import jax

    keyed, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    names = [_join(prefix, ".".join(_key_name(k) for k in path)) for path, _ in keyed]
    return names, [leaf for _, leaf in keyed], lambda ls: jax.tree_util.tree_unflatten(treedef, ls)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _names(parts: list) -> list[str]:
    return [n for names, _, _ in parts for n in names]


def _leaves(parts: list) -> list:
    return [x for _, leaves, _ in parts for x in leaves]


def _rebuild_parts(parts: list, leaves: list) -> list:
    out, start = [], 0
    for _, part_leaves, rebuild in parts:
        out.append(rebuild(leaves[start : start + len(part_leaves)]))
        start += len(part_leaves)
    return out
