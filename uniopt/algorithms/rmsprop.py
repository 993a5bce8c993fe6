r"""RMSprop, plain or centered, with momentum.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1} \\
    r_t &\leftarrow \alpha\, r_{t-1} + (1 - \alpha)\, g_t^2 \\
    \bar g_t &\leftarrow \alpha\, \bar g_{t-1} + (1 - \alpha)\, g_t
        && \text{(centered only; then } r_t \to r_t - \bar g_t^2) \\
    d_t &= \sqrt{r_t} + \epsilon \quad\text{or, with } \texttt{eps\_inside\_sqrt},\quad
        \sqrt{r_t + \epsilon} \\
    b_t &\leftarrow \beta\, b_{t-1} + g_t / d_t, \qquad
        \theta_t \leftarrow \theta_{t-1} - \eta\, b_t
        && \text{(no momentum: } \theta_t = \theta_{t-1} - \eta\, g_t / d_t)

With ``lr_in_momentum`` (OneFlow's formula in seed 004, Keras, Paddle, MindSpore)
the buffer holds the scaled step, :math:`b_t = \beta b_{t-1} + \eta g_t / d_t`,
:math:`\theta_t = \theta_{t-1} - b_t`. OneFlow documents momentum > 0 as unsupported;
uniopt supports it.

Complex parameters (``complex_mode``): as independent real pairs (torch's
``view_as_real``, the default), or with :math:`r_t` of :math:`|g_t|^2` and the centered
variance :math:`r_t - |\bar g_t|^2`, :math:`g_t, \bar g_t, b_t` complex (optax,
``"conjugate"``); the other flavors refuse them.

References: Hinton, Srivastava & Swersky, "Neural Networks for Machine Learning",
lecture 6e (2012); Graves, "Generating Sequences With Recurrent Neural Networks"
(2013) for the centered form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.blocks import abs_sq, ema, l2_penalty, like_slot, real_part, signed
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
class RMSpropRule(Rule):
    centered: bool = False
    momentum_buffer: bool = False
    initial_square_avg: float = 0.0
    eps_inside_sqrt: bool = False
    lr_in_momentum: bool = False
    maximize: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "alpha": v.unit_interval,
        "eps": v.non_negative,
        "weight_decay": v.non_negative,
        "momentum": v.non_negative,
        "centered": v.flag,
        "eps_inside_sqrt": v.flag,
        "lr_in_momentum": v.flag,
        "maximize": v.flag,
        "initial_square_avg": v.non_negative,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "torch": {},
        "optax": {"alpha": 0.9, "eps_inside_sqrt": True, "complex_mode": CONJUGATE},
        "oneflow": {"lr": 1e-3, "eps_inside_sqrt": True, "lr_in_momentum": True, **NO_COMPLEX},
        "keras": {
            "lr": 1e-3,
            "alpha": 0.9,
            "eps": 1e-7,
            "eps_inside_sqrt": True,
            "lr_in_momentum": True,
            **NO_COMPLEX,
        },
        "paddle": {
            "lr": 1e-3,
            "alpha": 0.95,
            "eps": 1e-6,
            "eps_inside_sqrt": True,
            "lr_in_momentum": True,
            "float32": ("alpha", "eps", "momentum"),
            **NO_COMPLEX,
        },
        "mindspore": {
            "initial_square_avg": 1.0,
            "lr": 1e-3,
            "alpha": 0.9,
            "eps": 1e-10,
            "eps_inside_sqrt": True,
            "lr_in_momentum": True,
            **NO_COMPLEX,
        },
    }

    @classmethod
    def from_group(cls, group: Mapping[str, Any]) -> RMSpropRule:
        return cls(
            group["centered"],
            group["momentum"] != 0,
            group["initial_square_avg"],
            group["eps_inside_sqrt"],
            group["lr_in_momentum"],
            group["maximize"],
            group["complex_mode"],
        )

    def slots(self) -> dict[str, float]:
        slots = {"square_avg": self.initial_square_avg}
        if self.centered:
            slots["grad_avg"] = 0.0
        if self.momentum_buffer:
            slots["momentum_buffer"] = 0.0
        return slots

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        return {k: hp[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum")}

    def update(self, xp, p, g, state, s: Scalars, block):
        g = l2_penalty(signed(g, self.maximize), p, s.weight_decay)
        square_avg = ema(real_part(xp, state["square_avg"]), abs_sq(xp, g), s.alpha)
        new_state = {"square_avg": like_slot(xp, square_avg, state["square_avg"])}
        variance = square_avg
        if self.centered:
            new_state["grad_avg"] = grad_avg = ema(state["grad_avg"], g, s.alpha)
            variance = square_avg - abs_sq(xp, grad_avg)
        denom = xp.sqrt(variance + s.eps) if self.eps_inside_sqrt else xp.sqrt(variance) + s.eps
        if not self.momentum_buffer:
            return -s.lr * g / denom, new_state
        if self.lr_in_momentum:
            new_state["momentum_buffer"] = b = (
                s.momentum * state["momentum_buffer"] + s.lr * g / denom
            )
            return -b, new_state
        new_state["momentum_buffer"] = b = s.momentum * state["momentum_buffer"] + g / denom
        return -s.lr * b, new_state


class RMSprop(Optimizer):
    r"""RMSprop (torch.optim.RMSprop semantics; OneFlow's via ``flavor="oneflow"``).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        alpha: smoothing constant :math:`\alpha` of the squared-gradient average.
        eps: :math:`\epsilon` for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        momentum: momentum factor :math:`\beta` (0: no buffer).
        centered: normalize by the estimated variance instead of the second moment.
        eps_inside_sqrt: :math:`\sqrt{r + \epsilon}` instead of :math:`\sqrt{r} + \epsilon`.
        lr_in_momentum: keep the learning rate inside the momentum buffer.
        maximize: maximize the objective instead of minimizing.
        initial_square_avg: starting value of the squared-gradient average (MindSpore: 1).
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``,
            torch), with :math:`|g|^2` averages (``"conjugate"``, optax), or refused (None).
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "rmsprop"
    rule = RMSpropRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(1e-2),
        alpha: float = Default(0.99),
        eps: float = Default(1e-8),
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        eps_inside_sqrt: bool = Default(False),
        lr_in_momentum: bool = Default(False),
        maximize: bool = False,
        initial_square_avg: float = Default(0.0),
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


rmsprop = functional(RMSprop)
