"""Small pieces of update math that algorithms compose (never copy).

Each works on whole flat blocks and on Python-float or 0-d-array scalars alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from uniopt.engine.layout import Block
from uniopt.rule import Scalars


def signed(g: Any, maximize: bool) -> Any:
    """The descent direction's gradient: ``-g`` when maximizing."""
    return -g if maximize else g


def l2_penalty(g: Any, p: Any, weight_decay: Any) -> Any:
    """L2 regularization folded into the gradient: ``g + wd * p``."""
    if isinstance(weight_decay, float) and weight_decay == 0.0:
        return g
    return g + weight_decay * p


def decoupled_decay(p: Any, lr: Any, weight_decay: Any) -> Any:
    """Decoupled weight decay as a delta (Loshchilov & Hutter, 2019): ``-lr * wd * p``."""
    return -(lr * weight_decay) * p


def ema(average: Any, x: Any, beta: Any) -> Any:
    """Exponential moving average ``beta * average + (1 - beta) * x``."""
    return beta * average + (1.0 - beta) * x


def beta_power(beta: float, step: Any, mode: str | None) -> Any:
    """``beta^t``: exactly (``None``), or as the running product some frameworks keep in
    state instead of a step count: in float64 (``"running"``, Paddle) or rounded to
    float32 after every multiplication (``"float32"``, MindSpore). Running products need
    a host step (Python int); traced steps use the power."""
    if mode is None or not isinstance(step, int):
        return beta**step
    return _running_powers(beta, mode, step)


_POWERS: dict[tuple[float, str], list[float]] = {}


def _running_powers(beta: float, mode: str, step: int) -> float:
    powers = _POWERS.setdefault((beta, mode), [1.0])
    while len(powers) <= step:
        value = powers[-1] * beta
        powers.append(float(np.float32(value)) if mode == "float32" else value)
    return powers[step]


def bias_corrections(
    beta1: float, beta2: float, step: Any, enabled: bool, powers: str | None = None
) -> tuple[Any, Any]:
    """``(1 - beta1^t, sqrt(1 - beta2^t))``, or ``(1, 1)`` without bias correction."""
    if not enabled:
        return 1.0, 1.0
    return 1.0 - beta_power(beta1, step, powers), (1.0 - beta_power(beta2, step, powers)) ** 0.5


def adam_moments(
    xp: Any, state: Mapping[str, Any], g: Any, s: Scalars, amsgrad: bool
) -> tuple[Any, Any, dict[str, Any]]:
    """Adam's moment estimates (Kingma & Ba, 2015), with the AMSGrad maximum
    (Reddi et al., 2018) when asked:

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;   v_max = max(v_max, v)

    Returns ``(m, v_used, new_state)``.
    """
    m = ema(state["exp_avg"], g, s.beta1)
    v = ema(state["exp_avg_sq"], g * g, s.beta2)
    new_state = {"exp_avg": m, "exp_avg_sq": v}
    if not amsgrad:
        return m, v, new_state
    v_max = xp.maximum(state["max_exp_avg_sq"], v)
    new_state["max_exp_avg_sq"] = v_max
    return m, v_max, new_state


def adam_step(xp: Any, m: Any, v: Any, s: Scalars, eps_hat: bool = False) -> Any:
    """The bias-corrected Adam step ``lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)``, or with
    ``eps_hat`` (Keras, MindSpore) ``lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)``."""
    if eps_hat:
        return s.hat_step_size * m / (xp.sqrt(v) + s.eps)
    return s.step_size * m / (xp.sqrt(v) / s.bc2_sqrt + s.eps)


def adam_scalars(
    hp: Mapping[str, Any], step: Any, bias_correction: bool, powers: str | None = None
) -> dict[str, Any]:
    """Per-step scalars of the Adam family."""
    beta1, beta2 = hp["betas"]
    bc1, bc2_sqrt = bias_corrections(beta1, beta2, step, bias_correction, powers)
    return {
        "lr": hp["lr"],
        "beta1": beta1,
        "beta2": beta2,
        "eps": hp["eps"],
        "weight_decay": hp["weight_decay"],
        "bc1": bc1,
        "step_size": hp["lr"] / bc1,
        "bc2_sqrt": bc2_sqrt,
        "hat_step_size": hp["lr"] * bc2_sqrt / bc1,
    }


def tensor_norms(xp: Any, x: Any, block: Block) -> Any:
    """The L2 norm of each tensor of the block (one value per tensor)."""
    return xp.sqrt(block.tensor_sums(xp, x * x))


def safe_ratio(xp: Any, numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator`` per tensor, and 1 where either is 0 (trust ratios)."""
    ones = xp.ones_like(numerator)
    both = (numerator > 0) & (denominator > 0)
    return xp.where(both, numerator / xp.where(denominator > 0, denominator, ones), ones)


def gate(xp: Any, condition: Any, per_tensor: Any) -> Any:
    """``per_tensor`` where ``condition`` holds, else ones (``condition`` a Python bool or
    a traced 0-d boolean array)."""
    if isinstance(condition, bool):
        return per_tensor if condition else xp.ones_like(per_tensor)
    return xp.where(condition, per_tensor, xp.ones_like(per_tensor))
