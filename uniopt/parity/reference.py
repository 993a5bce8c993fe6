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
    lr_in_momentum=False,
):
    g = -g if maximize else g
    g = g + weight_decay * p
    if momentum != 0 and lr_in_momentum:  # Keras: the buffer holds -lr * g
        b = state.get("b", np.zeros_like(p))
        state["b"] = momentum * b - lr * (1 - dampening if t > 1 else 1) * g
        return p + (momentum * state["b"] - lr * g if nesterov else state["b"])
    if momentum != 0:
        if t == 1:
            state["b"] = g.copy()
        else:
            state["b"] = momentum * state["b"] + (1 - dampening) * g
        g = g + momentum * state["b"] if nesterov else state["b"]
    return p - lr * g


def _adam(p, g, state, t, lr, betas, eps, amsgrad, do_bias_correction, eps_hat=False):
    b1, b2 = betas
    if "m" not in state:
        state.update(m=np.zeros_like(p), v=np.zeros_like(p), vmax=np.zeros_like(p))
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["v"] = b2 * state["v"] + (1 - b2) * g * g
    v = state["v"]
    if amsgrad:
        state["vmax"] = np.maximum(state["vmax"], state["v"])
        v = state["vmax"]
    c1, c2 = (1 - b1**t, 1 - b2**t) if do_bias_correction else (1.0, 1.0)
    if eps_hat:  # eps added to the uncorrected root, then both corrections
        return lr * np.sqrt(c2) / c1 * state["m"] / (np.sqrt(v) + eps)
    return lr * (state["m"] / c1) / (np.sqrt(v / c2) + eps)


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
    eps_hat=False,
    decoupled_weight_decay=False,
):
    g = -g if maximize else g
    decay = 0.0
    if decoupled_weight_decay:
        decay = lr * weight_decay * p
    else:
        g = g + weight_decay * p
    return p - decay - _adam(p, g, state, t, lr, betas, eps, amsgrad, do_bias_correction, eps_hat)


def adamw(p, g, state, t, *, weight_decay=1e-2, decoupled_weight_decay=True, **options):
    return adam(
        p,
        g,
        state,
        t,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        **options,
    )


ORACLES = {"sgd": sgd, "adam": adam, "adamw": adamw}


def adagrad(
    p,
    g,
    state,
    t,
    *,
    lr,
    lr_decay=0.0,
    weight_decay=0.0,
    initial_accumulator_value=0.0,
    eps=1e-10,
    eps_inside_sqrt=False,
    maximize=False,
):
    g = -g if maximize else g
    g = g + weight_decay * p
    if t == 1:
        state["S"] = np.full_like(p, initial_accumulator_value)
    state["S"] = state["S"] + g * g
    clr = lr / (1 + (t - 1) * lr_decay)
    denom = np.sqrt(state["S"] + eps) if eps_inside_sqrt else np.sqrt(state["S"]) + eps
    return p - clr * g / denom


def rmsprop(
    p,
    g,
    state,
    t,
    *,
    lr,
    alpha=0.99,
    eps=1e-8,
    weight_decay=0.0,
    momentum=0.0,
    centered=False,
    eps_inside_sqrt=False,
    lr_in_momentum=False,
    maximize=False,
):
    g = -g if maximize else g
    g = g + weight_decay * p
    if t == 1:
        state.update(r=np.zeros_like(p), gbar=np.zeros_like(p), b=np.zeros_like(p))
    state["r"] = alpha * state["r"] + (1 - alpha) * g * g
    avg = state["r"]
    if centered:
        state["gbar"] = alpha * state["gbar"] + (1 - alpha) * g
        avg = avg - state["gbar"] ** 2
    denom = np.sqrt(avg + eps) if eps_inside_sqrt else np.sqrt(avg) + eps
    if momentum == 0:
        return p - lr * g / denom
    if lr_in_momentum:
        state["b"] = momentum * state["b"] + lr * g / denom
        return p - state["b"]
    state["b"] = momentum * state["b"] + g / denom
    return p - lr * state["b"]


def lamb(
    p,
    g,
    state,
    t,
    *,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    adam_w_mode=True,
    do_bias_correction=True,
    decay_in_trust_ratio=True,
    maximize=False,
    amsgrad=False,
):
    b1, b2 = betas
    g = -g if maximize else g
    if not adam_w_mode:
        g = g + weight_decay * p
    if t == 1:
        state.update(m=np.zeros_like(p), v=np.zeros_like(p))
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["v"] = b2 * state["v"] + (1 - b2) * g * g
    c1, c2 = (1 - b1**t, 1 - b2**t) if do_bias_correction else (1.0, 1.0)
    u = (state["m"] / c1) / (np.sqrt(state["v"] / c2) + eps)
    if adam_w_mode and decay_in_trust_ratio:
        u = u + weight_decay * p
    pn, un = np.linalg.norm(p), np.linalg.norm(u)
    ratio = pn / un if pn > 0 and un > 0 else 1.0
    out = p - lr * ratio * u
    if adam_w_mode and not decay_in_trust_ratio:
        out = out - lr * weight_decay * p
    return out


def lars_momentum(
    p,
    g,
    state,
    t,
    *,
    lr,
    momentum=0.9,
    lars_coeff=0.001,
    lars_weight_decay=0.0005,
    epsilon=0.0,
    decayed_grad_norm=False,
    maximize=False,
):
    g = -g if maximize else g
    if t == 1:
        state["v"] = np.zeros_like(p)
    pn, gn = np.linalg.norm(p), np.linalg.norm(g)
    if decayed_grad_norm:
        denominator = np.linalg.norm(g + lars_weight_decay * p) + epsilon
    else:
        denominator = gn + lars_weight_decay * pn + epsilon
    local_lr = lr * lars_coeff * pn / denominator if pn > 0 and gn > 0 else lr
    state["v"] = momentum * state["v"] + local_lr * (g + lars_weight_decay * p)
    return p - state["v"]


ORACLES.update(adagrad=adagrad, rmsprop=rmsprop, lamb=lamb, lars_momentum=lars_momentum)


def nadam(
    p,
    g,
    state,
    t,
    *,
    lr=2e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    momentum_decay=4e-3,
    decoupled_weight_decay=False,
    maximize=False,
    eps_root=0.0,
    mu_product="float32",
    corrected_moments=False,  # optax's rounding order: the same numbers
):
    b1, b2 = betas
    g = -g if maximize else g
    decay = lr * weight_decay * p if decoupled_weight_decay else 0.0
    if not decoupled_weight_decay:
        g = g + weight_decay * p
    if t == 1:
        state.update(m=np.zeros_like(p), v=np.zeros_like(p), prod=1.0)
    if momentum_decay is None:  # Dozat's constant momentum (optax)
        mu = mu_next = b1
    else:
        mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    if mu_product == "float32" and momentum_decay is not None:  # torch's float32 state
        state["prod"] = float(np.float32(state["prod"]) * np.float32(mu))
    else:
        state["prod"] = state["prod"] * mu
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["v"] = b2 * state["v"] + (1 - b2) * g * g
    d = np.sqrt(state["v"] / (1 - b2**t) + eps_root) + eps
    prod = state["prod"]
    m_hat = mu_next * state["m"] / (1 - prod * mu_next) + (1 - mu) * g / (1 - prod)
    return p - decay - lr * m_hat / d


def nadamw(p, g, state, t, *, weight_decay=1e-4, decoupled_weight_decay=True, **options):
    return nadam(
        p,
        g,
        state,
        t,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        **options,
    )


ORACLES.update(nadam=nadam, nadamw=nadamw)


def radam(
    p,
    g,
    state,
    t,
    *,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    decoupled_weight_decay=False,
    maximize=False,
    nesterov=False,
    eps_root=0.0,
    threshold=5.0,
    eps_hat=True,
    corrected_moments=False,  # optax's rounding order, and rho >= threshold
):
    b1, b2 = betas
    g = -g if maximize else g
    decay = lr * weight_decay * p if decoupled_weight_decay else 0.0
    if not decoupled_weight_decay:
        g = g + weight_decay * p
    if t == 1:
        state.update(m=np.zeros_like(p), v=np.zeros_like(p))
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["v"] = b2 * state["v"] + (1 - b2) * g * g
    m_hat = state["m"] / (1 - b1**t)
    if nesterov:
        m_hat = b1 * state["m"] / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
    if not (rho >= threshold if corrected_moments else rho > threshold):
        return p - decay - lr * m_hat
    r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    root = np.sqrt(state["v"] / (1 - b2**t) + eps_root)
    denominator = root + (eps / np.sqrt(1 - b2**t) if eps_hat else eps)
    return p - decay - lr * r * m_hat / denominator


ORACLES["radam"] = radam


def adamax(
    p,
    g,
    state,
    t,
    *,
    lr=2e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    decoupled_weight_decay=False,
    maximize=False,
    eps_outside_max=False,
    corrected_moments=False,  # optax's rounding order: the same numbers
):
    b1, b2 = betas
    g = -g if maximize else g
    decay = lr * weight_decay * p if decoupled_weight_decay else 0.0
    if not decoupled_weight_decay:
        g = g + weight_decay * p
    if t == 1:
        state.update(m=np.zeros_like(p), u=np.zeros_like(p))
    state["m"] = b1 * state["m"] + (1 - b1) * g
    if eps_outside_max:  # Keras
        state["u"] = np.maximum(b2 * state["u"], np.abs(g))
        denominator = state["u"] + eps
    else:
        state["u"] = np.maximum(b2 * state["u"], np.abs(g) + eps)
        denominator = state["u"]
    return p - decay - lr / (1 - b1**t) * state["m"] / denominator


def adamaxw(p, g, state, t, *, weight_decay=1e-4, decoupled_weight_decay=True, **options):
    return adamax(
        p,
        g,
        state,
        t,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        **options,
    )


ORACLES.update(adamax=adamax, adamaxw=adamaxw)


def _nesterov_mean(m, g, b1, t, nesterov):
    if nesterov:  # Dozat: the next step's momentum applied now
        return b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
    return m / (1 - b1**t)


def adabelief(
    p,
    g,
    state,
    t,
    *,
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-16,
    eps_root=1e-16,
    weight_decay=0.0,
    nesterov=False,
    maximize=False,
):
    b1, b2 = betas
    g = -g if maximize else g
    if t == 1:
        state.update(m=np.zeros_like(p), s=np.zeros_like(p))
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["s"] = b2 * state["s"] + (1 - b2) * (g - state["m"]) ** 2 + eps_root
    m_hat = _nesterov_mean(state["m"], g, b1, t, nesterov)
    u = m_hat / (np.sqrt(state["s"] / (1 - b2**t)) + eps)
    return p - lr * (u + weight_decay * p)


def yogi(
    p,
    g,
    state,
    t,
    *,
    lr=1e-2,
    betas=(0.9, 0.999),
    eps=1e-3,
    eps_root=0.0,
    weight_decay=0.0,
    initial_accumulator_value=1e-6,
    maximize=False,
):
    b1, b2 = betas
    g = -g if maximize else g
    if t == 1:
        state.update(
            m=np.full_like(p, initial_accumulator_value),
            v=np.full_like(p, initial_accumulator_value),
        )
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["v"] = state["v"] - (1 - b2) * np.sign(state["v"] - g * g) * g * g
    u = state["m"] / (1 - b1**t) / (np.sqrt(state["v"] / (1 - b2**t) + eps_root) + eps)
    return p - lr * (u + weight_decay * p)


def adan(
    p,
    g,
    state,
    t,
    *,
    lr=1e-3,
    betas=(0.98, 0.92, 0.99),
    eps=1e-8,
    eps_root=1e-8,
    weight_decay=0.0,
    maximize=False,
):
    b1, b2, b3 = betas
    g = -g if maximize else g
    if t == 1:
        state.update(m=np.zeros_like(p), d=np.zeros_like(p), n=np.zeros_like(p), prev=g)
    diff = g - state["prev"]  # 0 on the first step
    state["prev"] = g
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["d"] = b2 * state["d"] + (1 - b2) * diff
    state["n"] = b3 * state["n"] + (1 - b3) * (g + (1 - b2) * diff) ** 2
    numerator = state["m"] / (1 - b1**t) + (1 - b2) * state["d"] / (1 - b2**t)
    u = numerator / (np.sqrt(state["n"] / (1 - b3**t) + eps_root) + eps)
    return p - lr * (u + weight_decay * p)


def optimistic_adam(
    p,
    g,
    state,
    t,
    *,
    lr=1e-3,
    alpha=1.0,
    beta=1.0,
    betas=(0.9, 0.999),
    eps=1e-8,
    eps_root=0.0,
    weight_decay=0.0,
    nesterov=True,
    maximize=False,
):
    b1, b2 = betas
    g = -g if maximize else g
    if t == 1:
        state.update(m=np.zeros_like(p), v=np.zeros_like(p))
    state["m"] = b1 * state["m"] + (1 - b1) * g
    state["v"] = b2 * state["v"] + (1 - b2) * g * g
    m_hat = _nesterov_mean(state["m"], g, b1, t, nesterov)
    u = m_hat / (np.sqrt(state["v"] / (1 - b2**t) + eps_root) + eps)
    previous = state.get("u", u)  # the first step extrapolates from itself
    state["u"] = u
    return p - lr * ((alpha + beta) * u - beta * previous + weight_decay * p)


ORACLES.update(adabelief=adabelief, yogi=yogi, adan=adan, optimistic_adam=optimistic_adam)


def lookahead(p, g, state, t, *, inner, inner_options, alpha=0.5, k=5, slow_init="params"):
    if t == 1:
        state.update(inner={}, slow=p.copy())
    fast = ORACLES[inner](p, g, state["inner"], t, **inner_options)
    if t == 1 and slow_init == "first_step":
        state["slow"] = fast.copy()
    if t % k:
        return fast
    state["slow"] = state["slow"] + alpha * (fast - state["slow"])
    return state["slow"].copy()


ORACLES["lookahead"] = lookahead
