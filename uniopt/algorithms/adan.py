r"""Adan: adaptive Nesterov momentum from the gradient and its difference.

.. math::

    g_t &\leftarrow \pm g_t, \qquad
        \Delta_t = g_t - g_{t-1} \ (\Delta_1 = 0) \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
    d_t \leftarrow \beta_2 d_{t-1} + (1 - \beta_2)\, \Delta_t \\
    n_t &\leftarrow \beta_3 n_{t-1} + (1 - \beta_3)\,\big(g_t + (1 - \beta_2)\Delta_t\big)^2 \\
    \theta_t &\leftarrow \theta_{t-1} - \eta\,\Big(
        \frac{\hat m_t + (1 - \beta_2)\,\hat d_t}{\sqrt{\hat n_t + \bar\epsilon} + \epsilon}
        + \lambda\,\theta_{t-1}\Big)

with the bias-corrected :math:`\hat m_t = m_t / (1 - \beta_1^t)`, :math:`\hat d_t = d_t
/ (1 - \beta_2^t)`, :math:`\hat n_t = n_t / (1 - \beta_3^t)`, as optax's ``adan``
(Algorithm 1 of the paper, with decoupled weight decay scaled by the learning rate in
place of the paper's proximal :math:`(1 + \eta\lambda)^{-1}`). ``betas`` holds the three
rates :math:`(\beta_1, \beta_2, \beta_3)` (optax's ``b1, b2, b3``; the paper's and its
PyTorch code's ``betas``). Complex parameters: real pairs (the default), or
:math:`|\cdot|^2` with :math:`m_t, d_t` complex (optax, ``"conjugate"``).

Reference: Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster
Optimizing Deep Models" (TPAMI 2024, arXiv:2208.06677).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import array_api_compat

from uniopt import validation as v
from uniopt.algorithms.nadam import correction, plus
from uniopt.blocks import abs_sq, ema_optax, l2_penalty, like_slot, real_part, signed
from uniopt.flavors import COMPLEX_MODES, CONJUGATE, REAL_PAIRS, Default, arguments
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional


def betas3(owner: str, name: str, value: Any) -> tuple[float, float, float]:
    """Three decay rates, each in [0, 1)."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        v.fail(owner, name, value, "it must be a triple (beta1, beta2, beta3)")
    triple = tuple(v.real(owner, name, b) for b in value)
    if not all(0.0 <= b < 1.0 for b in triple):
        v.fail(owner, name, triple, "each beta must be in [0, 1)")
    return triple  # type: ignore[return-value]


def first_step(step: Any) -> Any:
    """1.0 on the first step, else 0.0: a host float, or a 0-d array of a traced step."""
    if isinstance(step, int):
        return float(step == 1)
    return array_api_compat.array_namespace(step).astype(step == 1, step.dtype)


@dataclass(frozen=True)
class AdanRule(Rule):
    maximize: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "betas": betas3,
        "eps": v.non_negative,
        "eps_root": v.non_negative,
        "weight_decay": v.non_negative,
        "maximize": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {"optax": {"complex_mode": CONJUGATE}}

    def slots(self) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_diff": 0.0, "exp_avg_sq": 0.0, "pre_grad": 0.0}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        beta1, beta2, beta3 = hp["betas"]
        return {
            "lr": hp["lr"],
            "beta1": beta1,
            "beta2": beta2,
            "beta3": beta3,
            "eps": hp["eps"],
            "eps_root": hp["eps_root"],
            "weight_decay": hp["weight_decay"],
            "bc1": correction(beta1, step, True),
            "bc2": correction(beta2, step, True),
            "bc3": correction(beta3, step, True),
            "first": first_step(step),
        }

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        diff = g - state["pre_grad"]
        if isinstance(s.first, float):
            diff = xp.zeros_like(g) if s.first else diff
        else:
            diff = xp.where(s.first > 0.0, xp.zeros_like(g), diff)
        m = ema_optax(state["exp_avg"], g, s.beta1)
        d = ema_optax(state["exp_avg_diff"], diff, s.beta2)
        n = ema_optax(
            real_part(xp, state["exp_avg_sq"]), abs_sq(xp, g + (1.0 - s.beta2) * diff), s.beta3
        )
        u = (m / s.bc1 + (1.0 - s.beta2) * (d / s.bc2)) / (
            xp.sqrt(plus(n / s.bc3, s.eps_root)) + s.eps
        )
        u = l2_penalty(u, p, s.weight_decay)
        new_state = {
            "exp_avg": m,
            "exp_avg_diff": d,
            "exp_avg_sq": like_slot(xp, n, state["exp_avg_sq"]),
            "pre_grad": g,
        }
        return u * -s.lr, new_state


class Adan(Optimizer):
    r"""Adan (optax.adan semantics).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: decay rates :math:`(\beta_1, \beta_2, \beta_3)` of the gradient, of its
            difference and of the squared term.
        eps: :math:`\epsilon` added to the denominator, outside the root.
        eps_root: :math:`\bar\epsilon` added inside the root.
        weight_decay: decoupled weight decay :math:`\lambda` (scaled by the learning rate).
        maximize: maximize the objective instead of minimizing.
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``),
            with :math:`|\cdot|^2` (``"conjugate"``, optax), or refused (None).
        flavor: ``"optax"`` (the defaults are optax's; the flavor adds its complex mode).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "adan"
    rule = AdanRule

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        eps_root: float = 1e-8,
        weight_decay: float = 0.0,
        maximize: bool = False,
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


adan = functional(Adan)
