"""Running one registry case on one backend, on the references and on the peers.

Every runner returns the final parameters as float64 numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import uniopt
from uniopt.parity import reference
from uniopt.parity.arrays import BACKENDS
from uniopt.parity.cases import TORCH_CLASSES, Case
from uniopt.parity.problem import Problem, gradient

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def run_reference(case: Case, problem: Problem) -> list[np.ndarray]:
    """The float64 NumPy oracle of the case's algorithm."""
    oracle = reference.ORACLES[case.algorithm]
    params = [x.astype(np.float64) for x in problem.init]
    states: list[dict] = [{} for _ in params]
    for t, noise in enumerate(problem.noise, start=1):
        params = [
            oracle(p, gradient(p, a, c, n), s, t, **case.options)
            for p, a, c, n, s in zip(params, problem.curvature, problem.center, noise, states)
        ]
    return params


def _arrays(backend: str, problem: Problem, dtype: str):
    to = BACKENDS[backend].to_array
    return (
        [to(x, dtype) for x in problem.init],
        [to(x, dtype) for x in problem.curvature],
        [to(x, dtype) for x in problem.center],
        [[to(x, dtype) for x in noise] for noise in problem.noise],
    )


def run_stateful(case: Case, backend: str, problem: Problem, dtype: str) -> list[np.ndarray]:
    """The stateful face: ``case.build(params).step(...)`` for every step."""
    params, curvature, center, noise = _arrays(backend, problem, dtype)
    if backend == "torch":
        import torch

        params = [torch.nn.Parameter(p) for p in params]
        opt = case.build(params)
        for n in noise:
            for p, a, c, e in zip(params, curvature, center, n):
                p.grad = gradient(p.detach(), a, c, e)
            opt.step()
    else:
        opt = case.build(params)
        for n in noise:
            opt.step([gradient(p, a, c, e) for p, a, c, e in zip(opt.params, curvature, center, n)])
    return [BACKENDS[backend].to_numpy(p) for p in opt.params]


def run_functional(case: Case, backend: str, problem: Problem, dtype: str) -> list[np.ndarray]:
    """The functional face, jitted on jax: ``tx.update`` + ``apply_updates``."""
    params, curvature, center, noise = _arrays(backend, problem, dtype)
    tx = case.build_transform()

    def step(params, state, n):
        grads = [gradient(p, a, c, e) for p, a, c, e in zip(params, curvature, center, n)]
        updates, state = tx.update(grads, state, params)
        return uniopt.apply_updates(params, updates), state

    if backend == "jax":
        import jax

        step = jax.jit(step)
    state = tx.init(params)
    for n in noise:
        params, state = step(params, state, n)
    return [BACKENDS[backend].to_numpy(p) for p in params]


def run_flat(case: Case, backend: str, problem: Problem, dtype: str) -> list[np.ndarray]:
    """The functional face on flat parameters (:func:`uniopt.flatten`), jitted on jax:
    gradients are taken on the unflattened tensors and flattened like the parameters."""
    params, curvature, center, noise = _arrays(backend, problem, dtype)
    tx = case.build_transform()

    def step(flat, state, n):
        tensors = flat.unflatten()
        grads = [gradient(p, a, c, e) for p, a, c, e in zip(tensors, curvature, center, n)]
        updates, state = tx.update(uniopt.flatten(grads), state, flat)
        return uniopt.apply_updates(flat, updates), state

    if backend == "jax":
        import jax

        step = jax.jit(step)
    flat = uniopt.flatten(params)
    state = tx.init(flat)
    for n in noise:
        flat, state = step(flat, state, n)
    return [BACKENDS[backend].to_numpy(p) for p in flat.unflatten()]


def run_torch(case: Case, problem: Problem, dtype: str) -> list[np.ndarray] | None:
    """torch.optim's own optimizer on the same problem (None without a twin)."""
    if case.torch is None:
        return None
    import torch

    params, curvature, center, noise = _arrays("torch", problem, dtype)
    params = [torch.nn.Parameter(p) for p in params]
    opt = getattr(torch.optim, TORCH_CLASSES[case.algorithm])(params, **case.torch)
    for n in noise:
        for p, a, c, e in zip(params, curvature, center, n):
            p.grad = gradient(p.detach(), a, c, e)
        opt.step()
    return [BACKENDS["torch"].to_numpy(p) for p in params]


def run_optax(case: Case, problem: Problem, dtype: str) -> list[np.ndarray] | None:
    """optax's own transform, jitted, on the same problem (None without a twin)."""
    if case.optax is None:
        return None
    import jax
    import optax

    params, curvature, center, noise = _arrays("jax", problem, dtype)
    factory, kwargs = case.optax
    tx = getattr(optax, factory)(**kwargs)

    @jax.jit
    def step(params, state, n):
        grads = [gradient(p, a, c, e) for p, a, c, e in zip(params, curvature, center, n)]
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for n in noise:
        params, state = step(params, state, n)
    return [BACKENDS["jax"].to_numpy(p) for p in params]


def deviation(result: list[np.ndarray], expected: list[np.ndarray]) -> tuple[float, float]:
    """``(max abs, relative)`` deviation; relative is max-abs over max |expected|."""
    diff = max(float(np.max(np.abs(r - e))) for r, e in zip(result, expected))
    scale = max(float(np.max(np.abs(e))) for e in expected)
    return diff, diff / max(scale, np.finfo(np.float64).tiny)


RUNNERS: dict[str, Any] = {
    "stateful": run_stateful,
    "functional": run_functional,
    "flat": run_flat,
}
