"""JAX adapter: immutable arrays, so segments are updated by one jitted pure function
with buffer donation, and the new arrays replace the old ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from uniopt._adapter import Adapter
from uniopt.flat import Flat


class JaxAdapter(Adapter):
    name = "jax"
    mutable = False
    fuses_per_tensor = True

    def namespace(self, x: Any) -> Any:
        return jnp

    def device(self, x: Any) -> str:
        sharding = getattr(x, "sharding", None)
        return str(sharding) if sharding is not None else "traced"

    def multi_device(self, x: Any) -> bool:
        if isinstance(x, jax.core.Tracer):  # known while tracing only on explicit meshes
            mesh = getattr(getattr(jax.typeof(x), "sharding", None), "mesh", None)
            explicit = jax.sharding.AxisType.Explicit in getattr(mesh, "axis_types", ())
            return explicit and mesh.size > 1
        sharding = getattr(x, "sharding", None)
        return sharding is not None and len(sharding.device_set) > 1

    def same_device(self, a: Any, b: Any) -> bool:
        """Same devices and the same split over them (``P()`` and ``P(None)`` alike)."""
        return a.sharding.is_equivalent_to(b.sharding, a.ndim)

    def scalar_device(self, x: Any) -> Any:
        """A single device's array: its device; over a mesh: replicated on the mesh;
        while tracing: None (jit places it)."""
        if isinstance(x, jax.core.Tracer):
            return None
        sharding = x.sharding
        if len(sharding.device_set) == 1:
            return next(iter(sharding.device_set))
        if isinstance(sharding, jax.sharding.NamedSharding):
            return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        return None

    def shard_all_reduce(self, params: list[Any]) -> Callable[[Any], Any] | None:
        """Inside ``shard_map``, where each device holds a shard of the tensors: a psum
        over the mesh axes they vary along (the axes they are sharded over); else None."""
        axes: set[str] = set()
        for x in params:
            if isinstance(x, jax.core.Tracer):
                aval = jax.typeof(x)
                varying = getattr(aval, "vma", None)
                if varying is None:  # jax >= 0.10 keeps them in the manual-axis type
                    varying = getattr(getattr(aval, "mat", None), "varying", ())
                axes |= set(varying)
        if not axes:
            return None
        names = tuple(sorted(axes))
        return lambda sums: jax.lax.psum(sums, names)

    def dtype_name(self, x: Any) -> str:
        return np.dtype(x.dtype).name

    def flat(self, x: Any) -> Any:
        return jnp.reshape(x, (-1,))

    def write(self, dst: Any, src: Any) -> None:
        raise TypeError("jax arrays are immutable")

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.array(x, copy=True)

    def from_numpy(self, a: np.ndarray, like: Any) -> Any:
        return jax.device_put(jnp.asarray(a, dtype=like.dtype), like.sharding)

    def from_real(self, r: Any) -> Any:
        """``lax.complex`` of the pairs (exact)."""
        return jax.lax.complex(r[..., 0], r[..., 1])

    def split(self, flat: Any, sizes: list[int]) -> list[Any]:
        """One split, whose gradient is one concatenation (slices' gradients would be
        one full-size pad per piece)."""
        cuts = np.cumsum(sizes)[:-1].tolist()
        return jnp.split(flat, cuts) if cuts else [flat]

    def compile(self, fn: Callable, donate_argnums: tuple[int, ...] = ()) -> Callable:
        return jax.jit(fn, donate_argnums=donate_argnums)


ADAPTER = JaxAdapter()

jax.tree_util.register_pytree_node(
    Flat, lambda f: (f.arrays, f.table), lambda table, arrays: Flat(tuple(arrays), table)
)
