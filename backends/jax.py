"""JAX adapter: immutable arrays, so segments are updated by one jitted pure function
with buffer donation, and the new arrays replace the old ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from uniopt._adapter import Adapter


class JaxAdapter(Adapter):
    name = "jax"
    mutable = False

    def namespace(self, x: Any) -> Any:
        return jnp

    def device(self, x: Any) -> str:
        sharding = getattr(x, "sharding", None)
        return str(sharding) if sharding is not None else "traced"

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

    def compile(self, fn: Callable, donate_argnums: tuple[int, ...] = ()) -> Callable:
        return jax.jit(fn, donate_argnums=donate_argnums)


ADAPTER = JaxAdapter()
