"""Every registry case, 100 steps, on every backend and both faces, against the float64
NumPy oracle and against torch.optim / optax themselves."""

from __future__ import annotations

import functools

import pytest
from conftest import BACKEND_NAMES, require

from uniopt.parity.arrays import BACKENDS
from uniopt.parity.cases import CASES
from uniopt.parity.problem import make_problem
from uniopt.parity.runner import (
    RUNNERS,
    TOLERANCE,
    deviation,
    run_optax,
    run_reference,
    run_torch,
)

STEPS = 100
PROBLEM = make_problem(STEPS)
BY_ID = {case.id: case for case in CASES}
DTYPES = list(TOLERANCE)


@functools.cache
def result(case_id: str, backend: str, face: str, dtype: str):
    return RUNNERS[face](BY_ID[case_id], backend, PROBLEM, dtype)


@functools.cache
def reference(case_id: str):
    return run_reference(BY_ID[case_id], PROBLEM)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("face", list(RUNNERS))
@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case_id", list(BY_ID))
def test_matches_float64_oracle(case_id, backend, face, dtype):
    require(backend)
    _, rel = deviation(result(case_id, backend, face, dtype), reference(case_id))
    assert rel <= TOLERANCE[dtype], f"relative deviation {rel:.3e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("face", list(RUNNERS))
@pytest.mark.parametrize("case_id", [c.id for c in CASES if c.torch is not None])
def test_matches_torch_optim(case_id, face, dtype):
    require("torch")
    peer = run_torch(BY_ID[case_id], PROBLEM, dtype)
    _, rel = deviation(result(case_id, "torch", face, dtype), peer)
    assert rel <= TOLERANCE[dtype], f"relative deviation from torch.optim {rel:.3e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("face", list(RUNNERS))
@pytest.mark.parametrize("case_id", [c.id for c in CASES if c.optax is not None])
def test_matches_optax(case_id, face, dtype):
    require("jax")
    peer = run_optax(BY_ID[case_id], PROBLEM, dtype)
    _, rel = deviation(result(case_id, "jax", face, dtype), peer)
    assert rel <= TOLERANCE[dtype], f"relative deviation from optax {rel:.3e}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", list(BY_ID))
def test_backends_and_faces_agree(case_id, dtype):
    """Every backend and face against numpy's stateful run, directly."""
    base = result(case_id, "numpy", "stateful", dtype)
    for backend in BACKEND_NAMES:
        if not BACKENDS[backend].available():
            continue
        for face in RUNNERS:
            _, rel = deviation(result(case_id, backend, face, dtype), base)
            assert rel <= TOLERANCE[dtype], f"{backend}/{face} differs from numpy by {rel:.3e}"
