r"""Adamax: Adam with the infinity norm in place of the second moment; AdamaxW with
decoupled weight decay.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1}
        && \text{(sign flipped when maximizing; L2 weight decay)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    u_t &\leftarrow \max(\beta_2 u_{t-1},\ |g_t| + \epsilon) \\
    \theta_t &\leftarrow \theta_{t-1} - \frac{\eta}{1 - \beta_1^t}\,\frac{m_t}{u_t}

as torch.optim.Adamax and optax's ``adamax``. Keras adds :math:`\epsilon` after the
maximum, :math:`u_t = \max(\beta_2 u_{t-1}, |g_t|)` and
:math:`\theta_t = \theta_{t-1} - \eta\, m_t / ((1 - \beta_1^t)(u_t + \epsilon))`
(``eps_outside_max``, ``flavor="keras"``). With ``decoupled_weight_decay`` (AdamaxW:
``optax.adamaxw``, Keras's ``weight_decay``) the decay leaves the gradient and becomes
:math:`-\eta\lambda\theta_{t-1}`. ``corrected_moments`` (optax) forms
:math:`\hat m_t / u_t` with :math:`\hat m_t = m_t / (1 - \beta_1^t)` before the learning
rate: the same arithmetic but for rounding. Complex parameters: real pairs (torch,
:math:`|\cdot|` of each part), or the modulus :math:`|g_t|` with :math:`m_t` complex
(optax, ``"conjugate"``); the Keras flavor refuses them.

Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015),
section 7.1; Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.algorithms.nadam import correction
from uniopt.blocks import (
    decoupled_decay,
    ema,
    ema_optax,
    float32,
    l2_penalty,
    like_slot,
    real_part,
    signed,
)
from uniopt.flavors import COMPLEX_MODES, CONJUGATE, NO_COMPLEX, REAL_PAIRS, Default, arguments
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional


@dataclass(frozen=True)
class AdamaxRule(Rule):
    decoupled_weight_decay: bool = False
    maximize: bool = False
    eps_outside_max: bool = False
    corrected_moments: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "betas": v.betas,
        "eps": v.non_negative,
        "weight_decay": v.non_negative,
        "decoupled_weight_decay": v.flag,
        "maximize": v.flag,
        "eps_outside_max": v.flag,
        "corrected_moments": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "torch": {},
        "optax": {"corrected_moments": True, "complex_mode": CONJUGATE},
        "keras": {
            "lr": 1e-3,
            "eps": 1e-7,
            "eps_outside_max": True,
            "decoupled_weight_decay": True,
            **NO_COMPLEX,
        },
    }

    def slots(self) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_inf": 0.0}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        beta1, beta2 = hp["betas"]
        bc1 = correction(beta1, step, self.corrected_moments)
        return {
            "lr": hp["lr"],
            "beta1": beta1,
            "beta2": beta2,
            "eps": hp["eps"],
            "weight_decay": hp["weight_decay"],
            "bc1": bc1,
            "clr": hp["lr"] / bc1,
        }

    def float32_lr(self, scalars: dict[str, Any]) -> dict[str, Any]:
        """torch with a float32 ``lr`` tensor: ``clr = lr / (1 - beta1^t)`` is a float32
        tensor (the correction rounded to float32 first)."""
        return {**scalars, "clr": float32(scalars["lr"] / float32(scalars["bc1"]))}

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        if not self.decoupled_weight_decay:
            g = l2_penalty(g, p, s.weight_decay)
        optax = self.corrected_moments
        m = (ema_optax if optax else ema)(state["exp_avg"], g, s.beta1)
        decayed = s.beta2 * real_part(xp, state["exp_inf"])
        if self.eps_outside_max:  # Keras: max(beta2 u, |g|), then u + eps
            u = xp.maximum(decayed, xp.abs(g))
            denom = u + s.eps
        else:
            u = denom = xp.maximum(decayed, xp.abs(g) + s.eps)
        new_state = {"exp_avg": m, "exp_inf": like_slot(xp, u, state["exp_inf"])}
        if optax:  # optax: (m_hat / u + wd * p) * -lr
            step = (m / s.bc1) / denom
            if self.decoupled_weight_decay:
                step = l2_penalty(step, p, s.weight_decay)
            return step * -s.lr, new_state
        delta = -(s.clr * m) / denom
        if self.decoupled_weight_decay:
            delta = decoupled_decay(p, s.lr, s.weight_decay) + delta
        return delta, new_state


class Adamax(Optimizer):
    r"""Adamax (torch.optim.Adamax semantics; optax and Keras through ``flavor=``).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: :math:`(\beta_1, \beta_2)`: decay of the first moment and of the
            infinity norm.
        eps: :math:`\epsilon` added to :math:`|g_t|` inside the maximum.
        weight_decay: weight decay :math:`\lambda` (L2 unless decoupled).
        decoupled_weight_decay: decay the weights directly (AdamaxW) instead of L2.
        maximize: maximize the objective instead of minimizing.
        eps_outside_max: add :math:`\epsilon` to the norm after the maximum (Keras).
        corrected_moments: optax's order of the same arithmetic.
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``,
            torch), with the modulus of the gradient (``"conjugate"``, optax), or
            refused (None).
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "adamax"
    rule = AdamaxRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(2e-3),
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = Default(1e-8),
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = Default(False),
        maximize: bool = False,
        eps_outside_max: bool = Default(False),
        corrected_moments: bool = Default(False),
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


@dataclass(frozen=True)
class AdamaxWRule(AdamaxRule):
    flavors = {
        "optax": {**AdamaxRule.flavors["optax"], "weight_decay": 1e-4},
        "keras": {**AdamaxRule.flavors["keras"], "weight_decay": 0.0},
    }


class AdamaxW(Adamax):
    r"""AdamaxW: Adamax with decoupled weight decay (``optax.adamaxw``; Keras's Adamax
    with ``weight_decay``). torch.optim.Adamax has only L2 decay: no torch flavor.

    Same arguments as :class:`uniopt.Adamax`; ``weight_decay`` (default 1e-4, optax's)
    is the decoupled decay :math:`\lambda`.
    """

    algorithm = "adamaxw"
    rule = AdamaxWRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(2e-3),
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = Default(1e-8),
        weight_decay: float = Default(1e-4),
        decoupled_weight_decay: bool = True,
        maximize: bool = False,
        eps_outside_max: bool = Default(False),
        corrected_moments: bool = Default(False),
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


adamax = functional(Adamax)
adamaxw = functional(AdamaxW)
