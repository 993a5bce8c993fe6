r"""Yogi: Adam whose second moment moves additively, by at most :math:`(1-\beta_2) g^2`.

.. math::

    g_t &\leftarrow \pm g_t \qquad \text{(sign flipped when maximizing)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    v_t &\leftarrow v_{t-1} - (1 - \beta_2)\,\operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2 \\
    \theta_t &\leftarrow \theta_{t-1}
        - \eta\,\Big(\frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t) + \bar\epsilon}
          + \epsilon} + \lambda\,\theta_{t-1}\Big),
        \qquad m_0 = v_0 = \text{initial\_accumulator\_value}

as optax's ``yogi`` (``scale_by_yogi``: both accumulators start at
``initial_accumulator_value``, :math:`10^{-6}`; :math:`\epsilon = 10^{-3}` as in the
paper; :math:`\bar\epsilon` is ``eps_root``). ``weight_decay`` is decoupled, scaled by
the learning rate (``add_decayed_weights`` before the learning rate; 0 by default).
Complex parameters: real pairs (the default), or :math:`|g_t|^2` with :math:`m_t`
complex (optax, ``"conjugate"``).

Reference: Zaheer et al., "Adaptive Methods for Nonconvex Optimization" (NeurIPS 2018).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.algorithms.nadam import correction, plus
from uniopt.blocks import abs_sq, ema_optax, l2_penalty, like_slot, real_part, signed
from uniopt.flavors import COMPLEX_MODES, CONJUGATE, REAL_PAIRS, Default, arguments
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional


@dataclass(frozen=True)
class YogiRule(Rule):
    initial_accumulator_value: float = 1e-6
    maximize: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "betas": v.betas,
        "eps": v.non_negative,
        "eps_root": v.non_negative,
        "weight_decay": v.non_negative,
        "initial_accumulator_value": v.non_negative,
        "maximize": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {"optax": {"complex_mode": CONJUGATE}}

    def slots(self) -> dict[str, float]:
        return {
            "exp_avg": self.initial_accumulator_value,
            "exp_avg_sq": self.initial_accumulator_value,
        }

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        beta1, beta2 = hp["betas"]
        return {
            "lr": hp["lr"],
            "beta1": beta1,
            "one_minus_beta2": 1.0 - beta2,
            "eps": hp["eps"],
            "eps_root": hp["eps_root"],
            "weight_decay": hp["weight_decay"],
            "bc1": correction(beta1, step, True),
            "bc2": correction(beta2, step, True),
        }

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        m = ema_optax(state["exp_avg"], g, s.beta1)
        g2, v_ = abs_sq(xp, g), real_part(xp, state["exp_avg_sq"])
        v_ = v_ - s.one_minus_beta2 * xp.sign(v_ - g2) * g2
        u = (m / s.bc1) / (xp.sqrt(plus(v_ / s.bc2, s.eps_root)) + s.eps)
        u = l2_penalty(u, p, s.weight_decay)
        return u * -s.lr, {"exp_avg": m, "exp_avg_sq": like_slot(xp, v_, state["exp_avg_sq"])}


class Yogi(Optimizer):
    r"""Yogi (optax.yogi semantics).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: decay rates :math:`(\beta_1, \beta_2)` of the moment estimates.
        eps: :math:`\epsilon` added to the denominator, outside the root.
        eps_root: :math:`\bar\epsilon` added inside the root (``scale_by_yogi``'s).
        weight_decay: decoupled weight decay :math:`\lambda` (scaled by the learning rate).
        initial_accumulator_value: the starting value of both accumulators.
        maximize: maximize the objective instead of minimizing.
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``),
            with :math:`|g|^2` (``"conjugate"``, optax), or refused (None).
        flavor: ``"optax"`` (the defaults are optax's; the flavor adds its complex mode).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "yogi"
    rule = YogiRule

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 1e-6,
        maximize: bool = False,
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


yogi = functional(Yogi)
