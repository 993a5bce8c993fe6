r"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1}
        && \text{(sign flipped when maximizing; L2 weight decay)} \\
    b_t &\leftarrow \mu\, b_{t-1} + (1 - \tau)\, g_t, \qquad b_1 = g_1
        && \text{(momentum buffer, when } \mu \ne 0) \\
    d_t &\leftarrow g_t + \mu\, b_t \ \text{(Nesterov)} \quad\text{or}\quad b_t \\
    \theta_t &\leftarrow \theta_{t-1} - \eta\, d_t

References: Robbins & Monro, "A Stochastic Approximation Method" (1951); Polyak,
"Some methods of speeding up the convergence of iteration methods" (1964); Sutskever
et al., "On the importance of initialization and momentum in deep learning" (ICML 2013)
for the Nesterov form used by torch.optim.SGD.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.blocks import l2_penalty, signed
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars, select
from uniopt.transform import functional


@dataclass(frozen=True)
class SGDRule(Rule):
    momentum_buffer: bool = False
    nesterov: bool = False
    maximize: bool = False

    name = "sgd"
    hyperparameters = {
        "lr": v.non_negative,
        "momentum": v.non_negative,
        "dampening": v.real,
        "weight_decay": v.non_negative,
        "nesterov": v.flag,
        "maximize": v.flag,
    }

    @classmethod
    def check(cls, owner: str, hp: Mapping[str, Any]) -> None:
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            v.fail(owner, "nesterov", True, "Nesterov momentum needs momentum > 0 and dampening 0")

    @classmethod
    def from_group(cls, group: Mapping[str, Any]) -> SGDRule:
        return cls(group["momentum"] != 0, group["nesterov"], group["maximize"])

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
        b = s.keep * state["momentum_buffer"] + s.add * g
        d = g + s.momentum * b if self.nesterov else b
        return -s.lr * d, {"momentum_buffer": b}


class SGD(Optimizer):
    """Stochastic gradient descent (torch.optim.SGD / oneflow.optim.SGD semantics).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\\eta` (a number or a schedule).
        momentum: momentum factor :math:`\\mu`.
        dampening: dampening :math:`\\tau` of the momentum.
        weight_decay: L2 penalty :math:`\\lambda` added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: maximize the objective instead of minimizing.
    """

    rule = SGDRule

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
    ):
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )


sgd = functional(SGD)
