"""Every registry case, 200 steps, on every backend and both faces, against the float64
NumPy oracle and against torch.optim / optax themselves."""

from __future__ import annotations

import functools

import pytest
from conftest import BACKEND_NAMES, require

from uniopt.parity.arrays import BACKENDS
from uniopt.parity.cases import CASES
from uniopt.parity.problem import make_problem
from uniopt.parity.report import PEERS
from uniopt.parity.runner import RUNNERS, TOLERANCE, deviation, run_reference

STEPS = 200
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


PEER_CASES = [
    (backend, c.id)
    for backend, attr in (("torch", "torch"), ("jax", "optax"))
    for c in CASES
    if getattr(c, attr) is not None
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("face", list(RUNNERS))
@pytest.mark.parametrize("backend,case_id", PEER_CASES)
def test_matches_the_framework_itself(backend, case_id, face, dtype):
    """torch.optim on torch, optax (jitted) on jax."""
    require(backend)
    name, run = PEERS[backend]
    peer = run(BY_ID[case_id], PROBLEM, dtype)
    _, rel = deviation(result(case_id, backend, face, dtype), peer)
    assert rel <= TOLERANCE[dtype], f"relative deviation from {name} {rel:.3e}"


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
