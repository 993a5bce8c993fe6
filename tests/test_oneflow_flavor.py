"""``flavor="oneflow"`` against seed 004's formulas (OneFlow has no installable build),
each written here as a float64 NumPy loop, 200 steps, every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_backend, to_numpy

import uniopt
from uniopt.parity.problem import make_problem

PROBLEM = make_problem(200)


def formula_sgd(p, g, s, t, lr=0.05, momentum=0.9, wd=0.01):
    """V_t = beta * V_{t-1} - lr * (g_t + p * wd);  p_new = p + V_t"""
    s["V"] = momentum * s.get("V", 0.0) - lr * (g + p * wd)
    return p + s["V"]


def formula_adagrad(p, g, s, t, lr=0.05, lr_decay=0.01, init=0.2, eps=1e-3):
    """S_t = S_{t-1} + g*g;  decay_lr = lr / (1 + (t - 1) * lr_decay);
    X_t = X_{t-1} - decay_lr / sqrt(S_t + eps) * g"""
    s["S"] = s.get("S", init) + g * g
    return p - lr / (1 + (t - 1) * lr_decay) / np.sqrt(s["S"] + eps) * g


def formula_rmsprop(p, g, s, t, lr=0.01, alpha=0.9, momentum=0.5, eps=1e-3, centered=True):
    """r = a r + (1 - a) g^2;  g_avg = a g_avg + (1 - a) g (centered);
    v = beta v + lr / sqrt(r - g_avg^2 + eps) g;  w = w - v"""
    s["r"] = alpha * s.get("r", 0.0) + (1 - alpha) * g * g
    s["m"] = alpha * s.get("m", 0.0) + (1 - alpha) * g if centered else 0.0
    s["v"] = momentum * s.get("v", 0.0) + lr / np.sqrt(s["r"] - s["m"] ** 2 + eps) * g
    return p - s["v"]


def formula_adam(p, g, s, t, lr=0.05, b1=0.9, b2=0.999, eps=1e-3, wd=0.0, decoupled=False):
    """V = b1 V + (1 - b1) g;  S = b2 S + (1 - b2) g^2;
    g_hat = lr * (V / (sqrt(S) + eps) [+ wd * p for AdamW]);  p_new = p - g_hat"""
    s["V"] = b1 * s.get("V", 0.0) + (1 - b1) * g
    s["S"] = b2 * s.get("S", 0.0) + (1 - b2) * g * g
    return p - lr * (s["V"] / (np.sqrt(s["S"]) + eps) + (wd * p if decoupled else 0.0))


def formula_lamb(p, g, s, t, lr=0.05, b1=0.9, b2=0.999, eps=1e-3):
    """u = V / (sqrt(S) + eps);  r = lr * ||p|| / ||u||;  p_new = p - r * u"""
    s["V"] = b1 * s.get("V", 0.0) + (1 - b1) * g
    s["S"] = b2 * s.get("S", 0.0) + (1 - b2) * g * g
    u = s["V"] / (np.sqrt(s["S"]) + eps)
    return p - lr * np.linalg.norm(p) / np.linalg.norm(u) * u


CASES = [
    (formula_sgd, uniopt.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    (
        formula_adagrad,
        uniopt.Adagrad,
        dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.2, eps=1e-3),
    ),
    (
        formula_rmsprop,
        uniopt.RMSprop,
        dict(lr=0.01, alpha=0.9, momentum=0.5, eps=1e-3, centered=True),
    ),
    (formula_adam, uniopt.Adam, dict(lr=0.05, eps=1e-3, do_bias_correction=False)),
    (
        lambda *a: formula_adam(*a, wd=0.1, decoupled=True),
        uniopt.AdamW,
        dict(lr=0.05, eps=1e-3, weight_decay=0.1, do_bias_correction=False),
    ),
    (formula_lamb, uniopt.LAMB, dict(lr=0.05, eps=1e-3, do_bias_correction=False)),
]


@pytest.mark.parametrize("formula,cls,kwargs", CASES, ids=[c[1].__name__ for c in CASES])
def test_oneflow_flavor_follows_seed_004(formula, cls, kwargs, backend):
    expected = [x.copy() for x in PROBLEM.init]
    states = [{} for _ in expected]
    opt = cls([to_backend(backend, x) for x in PROBLEM.init], flavor="oneflow", **kwargs)
    for t, noise in enumerate(PROBLEM.noise, start=1):
        grads = [
            a * (p - c) + n
            for p, a, c, n in zip(expected, PROBLEM.curvature, PROBLEM.center, noise)
        ]
        expected = [formula(p, g, s, t) for p, g, s in zip(expected, grads, states)]
        current = [to_numpy(p) for p in opt.params]
        opt.step(
            [
                to_backend(backend, a * (p - c) + n)
                for p, a, c, n in zip(current, PROBLEM.curvature, PROBLEM.center, noise)
            ]
        )
    scale = max(np.max(np.abs(e)) for e in expected)
    diff = max(np.max(np.abs(to_numpy(p) - e)) for p, e in zip(opt.params, expected))
    assert diff <= 1e-12 * scale, f"relative deviation {diff / scale:.3e}"
