"""Moving the parity problem's numpy arrays onto each backend and back.

This harness, like ``peers``, imports a framework only when asked to run on it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    to_array: Callable[[np.ndarray, str], Any]
    to_numpy: Callable[[Any], np.ndarray]

    def available(self) -> bool:
        if importlib.util.find_spec(self.module) is None:
            return False
        if self.name == "cupy":
            try:
                import cupy

                return cupy.cuda.runtime.getDeviceCount() > 0
            except Exception:  # noqa: BLE001 - any CUDA failure means "no GPU"
                return False
        return True


def _torch(a: np.ndarray, dtype: str) -> Any:
    import torch

    return torch.tensor(a.astype(dtype))


def _jax(a: np.ndarray, dtype: str) -> Any:
    import jax
    import jax.numpy as jnp

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    return jax.device_put(jnp.asarray(a.astype(dtype)), jax.devices()[0])


def _strict(a: np.ndarray, dtype: str) -> Any:
    import array_api_strict as xs

    return xs.asarray(a.astype(dtype))


def _cupy(a: np.ndarray, dtype: str) -> Any:
    import cupy

    return cupy.asarray(a.astype(dtype))


def _to_numpy(x: Any) -> np.ndarray:
    """A float64 (complex128 for complex arrays) NumPy copy of ``x``."""
    wide = np.complex128 if "complex" in str(x.dtype) else np.float64
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.resolve_conj().numpy().astype(wide) if x.is_complex() else x.double().numpy()
        return x.copy()
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get().astype(wide)
    try:
        return np.array(x, dtype=wide, copy=True)
    except TypeError:
        return np.from_dlpack(x).astype(wide)


BACKENDS = {
    b.name: b
    for b in (
        Backend("numpy", "numpy", lambda a, dtype: a.astype(dtype), _to_numpy),
        Backend("torch", "torch", _torch, _to_numpy),
        Backend("jax", "jax", _jax, _to_numpy),
        Backend("array_api_strict", "array_api_strict", _strict, _to_numpy),
        Backend("cupy", "cupy", _cupy, _to_numpy),
    )
}
