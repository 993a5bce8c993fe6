"""Shared fixtures: the backends every generic test runs on.

JAX runs with float64 enabled so float64 parity can be checked to 1e-12; float32
arrays stay float32. CuPy cases skip cleanly without a GPU.
"""

from __future__ import annotations

import functools
import os

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


# ---- the lean default run and the full grid -------------------------------------------
#
# ``python -m pytest`` (the README's command, and CI's) runs every test on every
# backend, but each registry-driven test only for the first case of each algorithm,
# and skips the groups marked ``slow``. ``python -m pytest --full`` (or UNIOPT_FULL=1)
# runs every registry case and the slow groups too.


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="run every registry case and the tests marked slow (default: the first "
        "case of each algorithm, no slow groups)",
    )


def _full(config) -> bool:
    return bool(config.getoption("--full") or os.environ.get("UNIOPT_FULL"))


def _secondary_case(item) -> bool:
    """Whether ``item`` is parametrized by a registry case that is not the first of its
    algorithm (by the Case itself or by its id)."""
    from uniopt.parity.cases import Case

    secondary = _secondary_ids()
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec else ():
        case_id = value.id if isinstance(value, Case) else value
        if isinstance(case_id, str) and case_id in secondary:
            return True
    return False


@functools.cache
def _secondary_ids() -> frozenset[str]:
    from uniopt.parity.cases import CASES

    first: dict[str, str] = {}
    for case in CASES:
        first.setdefault(case.algorithm, case.id)
    return frozenset(case.id for case in CASES) - set(first.values())


def pytest_collection_modifyitems(config, items):
    if _full(config):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("slow") or _secondary_case(item) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
