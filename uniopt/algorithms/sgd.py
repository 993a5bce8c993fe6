r"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1}
        && \text{(sign flipped when maximizing; L2 weight decay)} \\
    b_t &\leftarrow \mu\, b_{t-1} + (1 - \tau)\, g_t, \qquad b_1 = g_1
        && \text{(momentum buffer, when } \mu \ne 0) \\
    d_t &\leftarrow g_t + \mu\, b_t \ \text{(Nesterov)} \quad\text{or}\quad b_t \\
    \theta_t &\leftarrow \theta_{t-1} - \eta\, d_t

With ``lr_in_momentum`` (Keras, OneFlow's documented form) the learning rate enters
the buffer instead: :math:`b_t = \mu b_{t-1} - \eta (1-\tau) g_t`, :math:`\theta_t =
\theta_{t-1} + b_t` (Nesterov: :math:`+ \mu b_t - \eta g_t`); equal at constant lr.

References: Robbins & Monro, "A Stochastic Approximation Method" (1951); Polyak,
"Some methods of speeding up the convergence of iteration methods" (1964); Sutskever
et al., "On the importance of initialization and momentum in deep learning" (ICML 2013)
for the Nesterov form used by torch.optim.SGD.

Complex parameters: every step is linear in :math:`g`, so optimizing the real and
imaginary parts as independent reals (torch, ``complex_mode="real_pairs"``) and the
complex arithmetic of optax (``"conjugate"``) give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.blocks import l2_penalty, signed
from uniopt.flavors import (
    COMPLEX_MODES,
    CONJUGATE,
    NO_COMPLEX,
    REAL_PAIRS,
    Default,
    arguments,
)
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars, select
from uniopt.transform import functional


@dataclass(frozen=True)
class SGDRule(Rule):
    momentum_buffer: bool = False
    nesterov: bool = False
    maximize: bool = False
    lr_in_momentum: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "momentum": v.non_negative,
        "dampening": v.real,
        "weight_decay": v.non_negative,
        "nesterov": v.flag,
        "maximize": v.flag,
        "lr_in_momentum": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "torch": {},
        "optax": {"complex_mode": CONJUGATE},
        # Paddle's Momentum keeps mu and the decay as float32 attributes; its SGD does not
        "paddle": {
            "float32": lambda hp: ("momentum", "weight_decay") if hp["momentum"] else (),
            **NO_COMPLEX,
        },
        "mindspore": {**NO_COMPLEX},
        # Keras's SGD is linear in the gradient: on complex variables it computes what
        # the real pairs give
        "keras": {"lr": 0.01, "lr_in_momentum": True},
        "oneflow": {"lr_in_momentum": True, **NO_COMPLEX},
    }

    @classmethod
    def check(cls, owner: str, hp: Mapping[str, Any]) -> None:
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            v.fail(owner, "nesterov", True, "Nesterov momentum needs momentum > 0 and dampening 0")

    @classmethod
    def from_group(cls, group: Mapping[str, Any]) -> SGDRule:
        return cls(
            group["momentum"] != 0,
            group["nesterov"],
            group["maximize"],
            group["lr_in_momentum"],
            group["complex_mode"],
        )

    def slots(self) -> dict[str, float]:
        return {"momentum_buffer": 0.0} if self.momentum_buffer else {}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        later = step > 1
        return {
            "lr": hp["lr"],
            "momentum": hp["momentum"],
            "weight_decay": hp["weight_decay"],
            # the buffer starts as the first gradient: b_1 = 0 * b_0 + 1 * g_1
            "keep": select(later, hp["momentum"], 0.0, step),
            "add": select(later, 1.0 - hp["dampening"], 1.0, step),
        }

    def update(self, xp, p, g, state, s: Scalars, block):
        g = l2_penalty(signed(g, self.maximize), p, s.weight_decay)
        if not self.momentum_buffer:
            return -s.lr * g, {}
        if self.lr_in_momentum:
            b = s.keep * state["momentum_buffer"] - s.lr * s.add * g
            delta = s.momentum * b - s.lr * g if self.nesterov else b
            return delta, {"momentum_buffer": b}
        b = s.keep * state["momentum_buffer"] + s.add * g
        d = g + s.momentum * b if self.nesterov else b
        return -s.lr * d, {"momentum_buffer": b}


class SGD(Optimizer):
    r"""Stochastic gradient descent (torch.optim.SGD / oneflow.optim.SGD semantics).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        momentum: momentum factor :math:`\mu`.
        dampening: dampening :math:`\tau` of the momentum.
        weight_decay: L2 penalty :math:`\lambda` added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: maximize the objective instead of minimizing.
        lr_in_momentum: keep the learning rate inside the momentum buffer (Keras).
        complex_mode: complex parameters as real pairs (``"real_pairs"``, torch) or as
            complex numbers (``"conjugate"``, optax): the same numbers, SGD being linear
            in the gradient; None refuses them (Paddle, MindSpore, OneFlow flavors).
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "sgd"
    rule = SGDRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(1e-3),
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
        lr_in_momentum: bool = Default(False),
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


sgd = functional(SGD)
