"""Cosine schedules: annealing (SGDR without restarts), decay to a floor, warm restarts.

Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from uniopt.schedules import _checks as check
from uniopt.schedules._backend import prepare

Schedule = Callable[[Any], Any]


def _half_cosine(m: Any, base_lr: float, eta_min: float, done: Any, period: Any) -> Any:
    """eta_min + (base_lr - eta_min) * (1 + cos(pi * done / period)) / 2."""
    return eta_min + (base_lr - eta_min) * (1.0 + m.cos(math.pi * done / period)) / 2.0


@check.factory
def cosine_annealing(base_lr: float, T_max: int, eta_min: float = 0.0) -> Schedule:  # noqa: N803
    r"""Cosine annealing, torch/OneFlow ``CosineAnnealingLR`` closed form.

    $$\eta_t = \eta_{min} + \frac{1}{2}(\eta_0 - \eta_{min})
      \left(1 + \cos\frac{\pi t}{T_{max}}\right)$$

    Not clipped: past ``T_max`` the rate rises again (period ``2 T_max``), exactly as
    torch's scheduler does. Use :func:`cosine_decay` to hold the floor instead.
    The phase is taken modulo the period first, on the integer step
    (``t mod 2 T_max``), so a large step loses no precision, even when the rate is
    computed in float32 (a jax ``int32`` step without x64): ``cosine_annealing(0.1,
    100)`` is exactly 0.1 at step ``10**9``.

    ``base_lr >= 0``, integer ``T_max >= 1``, ``eta_min >= 0`` (above ``base_lr``
    the rate rises to it first).
    """
    base_lr = check.non_negative("base_lr", base_lr)
    T_max = check.integer("T_max", T_max, 1)  # noqa: N806
    eta_min = check.non_negative("eta_min", eta_min)

    def schedule(step: Any) -> Any:
        m, _ = prepare(step, "cosine_annealing")
        phase = m.mod(2 * T_max)
        return m.result(_half_cosine(m, base_lr, eta_min, phase, T_max))

    return schedule


@check.factory
def cosine_decay(base_lr: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    r"""Cosine decay to ``alpha * base_lr``, then held (OneFlow ``CosineDecayLR``,
    optax ``cosine_decay_schedule``).

    $$\eta_t = \eta_0\left((1-\alpha)\,\frac{1}{2}\left(1 + \cos\frac{\pi \min(t, D)}{D}\right)
      + \alpha\right)$$

    ``base_lr >= 0``, integer ``decay_steps >= 1``, ``alpha`` in [0, 1].
    """
    base_lr = check.non_negative("base_lr", base_lr)
    decay_steps = check.integer("decay_steps", decay_steps, 1)
    alpha = check.in_range("alpha", alpha, 0.0, 1.0)

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "cosine_decay")
        done = m.clip(t, max=float(decay_steps))
        return m.result(base_lr * _half_cosine(m, 1.0, alpha, done, decay_steps))

    return schedule


@check.factory
def cosine_warm_restarts(
    base_lr: float,
    T_0: int,  # noqa: N803
    T_mult: int = 1,  # noqa: N803
    eta_min: float = 0.0,
) -> Schedule:
    r"""Cosine annealing with warm restarts (torch ``CosineAnnealingWarmRestarts``).

    Cycle ``i`` lasts $T_i = T_0 T_{mult}^i$ steps and starts at
    $S_i = T_0 (T_{mult}^i - 1)/(T_{mult} - 1)$ ($S_i = i T_0$ when $T_{mult}=1$):

    $$\eta_t = \eta_{min} + \frac{1}{2}(\eta_0 - \eta_{min})
      \left(1 + \cos\frac{\pi (t - S_i)}{T_i}\right), \qquad S_i \le t < S_{i+1}$$

    The cycle index comes from a logarithm and is then corrected by one either way, so
    restarts land exactly on ``S_i`` (float rounding of the logarithm cannot shift them).
    With ``T_mult = 1`` the phase is the integer remainder ``t mod T_0``.
    ``base_lr >= 0``, integers ``T_0 >= 1`` and ``T_mult >= 1``, ``eta_min >= 0``.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    T_0 = check.integer("T_0", T_0, 1)  # noqa: N806
    T_mult = check.integer("T_mult", T_mult, 1)  # noqa: N806
    eta_min = check.non_negative("eta_min", eta_min)
    log_mult = math.log(T_mult) if T_mult > 1 else 1.0

    def start(n: Any) -> Any:  # first step of cycle n (T_mult > 1)
        return T_0 * (T_mult**n - 1.0) / (T_mult - 1)

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "cosine_warm_restarts")
        if T_mult == 1:
            period = float(T_0)
            done = m.mod(T_0)
        else:
            t0 = m.clip(t, min=0.0)
            n = m.clip(m.floor(m.log(t0 / T_0 * (T_mult - 1) + 1.0) / log_mult), min=0.0)
            n = n + m.indicator(t0 >= start(n + 1.0)) - m.indicator(t0 < start(n))
            period = T_0 * T_mult**n
            done = t - start(n)
        return m.result(_half_cosine(m, base_lr, eta_min, done, period))

    return schedule
