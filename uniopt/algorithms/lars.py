r"""LARS momentum: SGD with momentum and a per-tensor (layer-wise) learning rate.

Exactly the formula of Paddle's ``LarsMomentumOptimizer`` (seed 000):

.. math::

    \eta_\text{local} &= \eta \cdot c \cdot
        \frac{\lVert\theta\rVert}{\lVert g\rVert + \lambda \lVert\theta\rVert + \epsilon} \\
    v_t &\leftarrow \mu\, v_{t-1} + \eta_\text{local}\,(g_t + \lambda\,\theta_{t-1}) \\
    \theta_t &\leftarrow \theta_{t-1} - v_t

with :math:`c` = ``lars_coeff`` and :math:`\lambda` = ``lars_weight_decay``. Norms
are per tensor, through the segment table. Where either norm is 0 the local rate is
the plain :math:`\eta` (Paddle's kernel does the same). With ``decayed_grad_norm``
(optax's ``lars``) the denominator is :math:`\lVert g + \lambda\theta\rVert + \epsilon`.

Complex parameters (``complex_mode``): the norms are those of the complex tensors,
:math:`\lVert x\rVert^2 = \sum |x_i|^2`, and the update is linear in :math:`g`, so
real pairs (the default) and complex arithmetic (optax, ``"conjugate"``) agree; the
Paddle flavor refuses them (its kernels take real dtypes only).

Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks"
(2017).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.blocks import gate, l2_penalty, signed, tensor_norms
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
class LarsRule(Rule):
    decayed_grad_norm: bool = False
    trust_requires_decay: bool = False
    maximize: bool = False
    complex_mode: str | None = REAL_PAIRS

    needs_tensor_reductions = True
    decay_key = "lars_weight_decay"
    hyperparameters = {
        "lr": v.non_negative,
        "momentum": v.non_negative,
        "lars_coeff": v.non_negative,
        "lars_weight_decay": v.non_negative,
        "epsilon": v.non_negative,
        "decayed_grad_norm": v.flag,
        "trust_requires_decay": v.flag,
        "maximize": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "paddle": {
            "trust_requires_decay": True,
            "float32": ("momentum", "lars_coeff", "lars_weight_decay", "epsilon"),
            **NO_COMPLEX,
        },
        "optax": {
            "momentum": 0.9,
            "lars_weight_decay": 0.0,
            "decayed_grad_norm": True,
            "complex_mode": CONJUGATE,
        },
    }

    def reads_params(self, hp: Mapping[str, Any]) -> bool:
        return True

    def slots(self) -> dict[str, float]:
        return {"velocity": 0.0}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        return {k: hp[k] for k in ("lr", "momentum", "lars_coeff", "lars_weight_decay", "epsilon")}

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        decayed = l2_penalty(g, p, s.lars_weight_decay)
        p_norm = tensor_norms(xp, p, block)
        if self.decayed_grad_norm:
            denominator = tensor_norms(xp, decayed, block) + s.epsilon
        else:
            denominator = tensor_norms(xp, g, block) + s.lars_weight_decay * p_norm + s.epsilon
        g_norm = tensor_norms(xp, g, block)
        ones = xp.ones_like(p_norm)
        usable = (p_norm > 0) & (g_norm > 0)
        trust = xp.where(usable, s.lars_coeff * p_norm / xp.where(usable, denominator, ones), ones)
        if self.trust_requires_decay:  # Paddle's kernel: no decay, no layer-wise rate
            trust = gate(xp, s.lars_weight_decay > 0, trust)
        velocity = s.momentum * state["velocity"] + s.lr * block.expand(xp, trust) * decayed
        return -velocity, {"velocity": velocity}


class LarsMomentum(Optimizer):
    r"""LARS momentum (Paddle ``LarsMomentumOptimizer``, seed 000).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        momentum: momentum factor :math:`\mu`.
        lars_coeff: trust coefficient :math:`c` of the local learning rate.
        lars_weight_decay: weight decay :math:`\lambda` inside the LARS update.
        epsilon: :math:`\epsilon` added to the local rate's denominator.
        decayed_grad_norm: use :math:`\lVert g + \lambda\theta\rVert` in the denominator
            (optax) instead of :math:`\lVert g\rVert + \lambda\lVert\theta\rVert` (Paddle).
        trust_requires_decay: use the plain rate for parameters whose decay is 0
            (Paddle's kernel).
        maximize: maximize the objective instead of minimizing.
        complex_mode: complex parameters as real pairs (``"real_pairs"``) or complex
            numbers (``"conjugate"``, optax), the same numbers; None refuses them.
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "lars_momentum"
    rule = LarsRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(1e-3),
        momentum: float = Default(0.9),
        lars_coeff: float = 0.001,
        lars_weight_decay: float = Default(0.0005),
        epsilon: float = 0.0,
        decayed_grad_norm: bool = Default(False),
        trust_requires_decay: bool = Default(False),
        maximize: bool = False,
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


lars_momentum = functional(LarsMomentum)
