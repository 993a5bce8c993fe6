r"""Adagrad: per-coordinate learning rates from the sum of squared gradients.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1} \\
    S_t &\leftarrow S_{t-1} + g_t \odot g_t, \qquad S_0 = \text{initial\_accumulator\_value} \\
    \eta_t &= \frac{\eta}{1 + (t - 1)\,\text{lr\_decay}} \\
    \theta_t &\leftarrow \theta_{t-1} - \eta_t\, \frac{g_t}{\sqrt{S_t} + \epsilon}
        \quad\text{or, with } \texttt{eps\_inside\_sqrt},\quad
        \theta_{t-1} - \eta_t\, \frac{g_t}{\sqrt{S_t + \epsilon}}

torch puts :math:`\epsilon` outside the root; OneFlow's formula (seed 004), Keras and
optax inside, and Keras/optax/MindSpore start the accumulator at 0.1.

Complex parameters (``complex_mode``): as independent real pairs (torch's
``view_as_real``, the default; the accumulator of each part starts at
``initial_accumulator_value``, as torch's ``complex(v, v)``), or with
:math:`S_t = S_{t-1} + |g_t|^2` real and :math:`g_t` complex (optax, ``"conjugate"``;
the accumulator starts at ``v + 0j`` and keeps the complex dtype, as optax's state);
the other flavors refuse them.

Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning
and Stochastic Optimization" (JMLR 2011).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.blocks import abs_sq, float32, l2_penalty, like_slot, real_part, signed
from uniopt.flavors import (
    COMPLEX_MODES,
    CONJUGATE,
    NO_COMPLEX,
    REAL_PAIRS,
    Default,
    arguments,
)
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional


@dataclass(frozen=True)
class AdagradRule(Rule):
    initial_accumulator_value: float = 0.0
    eps_inside_sqrt: bool = False
    maximize: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "lr_decay": v.non_negative,
        "weight_decay": v.non_negative,
        "initial_accumulator_value": v.non_negative,
        "eps": v.non_negative,
        "eps_inside_sqrt": v.flag,
        "maximize": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "torch": {},
        "oneflow": {"lr": 1e-3, "eps_inside_sqrt": True, **NO_COMPLEX},
        "paddle": {"lr": 1e-3, "eps": 1e-6, "float32": ("eps",), **NO_COMPLEX},
        "optax": {
            "initial_accumulator_value": 0.1,
            "eps": 1e-7,
            "eps_inside_sqrt": True,
            "complex_mode": CONJUGATE,
        },
        "keras": {
            "lr": 1e-3,
            "initial_accumulator_value": 0.1,
            "eps": 1e-7,
            "eps_inside_sqrt": True,
            **NO_COMPLEX,
        },
        "mindspore": {
            "lr": 1e-3,
            "initial_accumulator_value": 0.1,
            "eps": 0.0,
            "eps_inside_sqrt": True,
            **NO_COMPLEX,
        },
    }

    def slots(self) -> dict[str, float]:
        return {"sum": self.initial_accumulator_value}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        return {
            "clr": hp["lr"] / (1.0 + (step - 1) * hp["lr_decay"]),
            "lr": hp["lr"],
            "eps": hp["eps"],
            "weight_decay": hp["weight_decay"],
        }

    def float32_lr(self, scalars: dict[str, Any]) -> dict[str, Any]:
        """torch with a float32 ``lr`` tensor: ``clr`` is a float32 tensor."""
        return {**scalars, "clr": float32(scalars["clr"])}

    def update(self, xp, p, g, state, s: Scalars, block):
        g = l2_penalty(signed(g, self.maximize), p, s.weight_decay)
        total = real_part(xp, state["sum"]) + abs_sq(xp, g)
        denom = xp.sqrt(total + s.eps) if self.eps_inside_sqrt else xp.sqrt(total) + s.eps
        return -s.clr * g / denom, {"sum": like_slot(xp, total, state["sum"])}


class Adagrad(Optimizer):
    r"""Adagrad (torch.optim.Adagrad / oneflow.optim.Adagrad semantics).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        lr_decay: learning-rate decay, :math:`\eta_t = \eta / (1 + (t-1)\,\text{lr\_decay})`.
        weight_decay: L2 penalty added to the gradient.
        initial_accumulator_value: starting value of the accumulator :math:`S`.
        eps: :math:`\epsilon` for numerical stability.
        eps_inside_sqrt: :math:`\sqrt{S + \epsilon}` (OneFlow, Keras, optax) instead of
            :math:`\sqrt{S} + \epsilon` (torch).
        maximize: maximize the objective instead of minimizing.
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``,
            torch), with :math:`|g|^2` accumulated (``"conjugate"``, optax), or refused
            (None).
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "adagrad"
    rule = AdagradRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(1e-2),
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = Default(0.0),
        eps: float = Default(1e-10),
        eps_inside_sqrt: bool = Default(False),
        maximize: bool = False,
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


adagrad = functional(Adagrad)
