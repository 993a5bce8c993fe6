"""Shared fixtures: the backends every generic test runs on.

JAX runs with float64 enabled so float64 parity can be checked to 1e-12; float32
arrays stay float32. CuPy cases skip cleanly without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from uniopt.parity.arrays import BACKENDS

try:
    import jax

    jax.config.update("jax_enable_x64", True)
except ImportError:  # pragma: no cover - the test extra installs jax
    pass

BACKEND_NAMES = ["numpy", "torch", "jax", "array_api_strict", "cupy"]


def require(name: str) -> None:
    if not BACKENDS[name].available():
        pytest.skip(f"{name} is not available here" + (" (no GPU)" if name == "cupy" else ""))


@pytest.fixture(params=BACKEND_NAMES)
def backend(request) -> str:
    require(request.param)
    return request.param


def to_backend(name: str, x: np.ndarray, dtype: str = "float64"):
    return BACKENDS[name].to_array(np.asarray(x), dtype)


def to_numpy(x) -> np.ndarray:
    return BACKENDS["numpy"].to_numpy(x)
