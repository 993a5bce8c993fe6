"""Float64 NumPy oracles: each algorithm written straight from its equation, one
tensor at a time, sharing no code with uniopt's rules or engine."""

from __future__ import annotations

import numpy as np


def sgd(
    p,
    g,
    state,
    t,
    *,
    lr,
    momentum=0.0,
    dampening=0.0,
    weight_decay=0.0,
    nesterov=False,
    maximize=False,
):
    g = -g if maximize else g
    g = g + weight_decay * p
    if momentum != 0:
        if t == 1:
            state["b"] = g.copy()
        else:
            state["b"] = momentum * state["b"] + (1 - dampening) * g
        g = g + momentum * state["b"] if nesterov else state["b"]
    return p - lr * g


def _adam(p, g, state, t, lr, betas, eps, amsgrad, do_bias_correction):
    b1, b2 = betas
    if t == 1:
        state.update(m=np.zeros_like(p), v=np.zeros_like(p), vmax=np.zeros_like(p))
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["v"] = b2 * state["v"] + (1 - b2) * g * g
    v = state["v"]
    if amsgrad:
        state["vmax"] = np.maximum(state["vmax"], state["v"])
        v = state["vmax"]
    m_hat = state["m"] / (1 - b1**t) if do_bias_correction else state["m"]
    v_hat = v / (1 - b2**t) if do_bias_correction else v
    return lr * m_hat / (np.sqrt(v_hat) + eps)


def adam(
    p,
    g,
    state,
    t,
    *,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    amsgrad=False,
    do_bias_correction=True,
    maximize=False,
):
    g = -g if maximize else g
    g = g + weight_decay * p
    return p - _adam(p, g, state, t, lr, betas, eps, amsgrad, do_bias_correction)


def adamw(
    p,
    g,
    state,
    t,
    *,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=1e-2,
    amsgrad=False,
    do_bias_correction=True,
    maximize=False,
):
    g = -g if maximize else g
    return (
        p
        - lr * weight_decay * p
        - _adam(p, g, state, t, lr, betas, eps, amsgrad, do_bias_correction)
    )


ORACLES = {"sgd": sgd, "adam": adam, "adamw": adamw}
