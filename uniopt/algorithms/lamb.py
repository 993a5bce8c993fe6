r"""LAMB: Adam's direction rescaled per tensor by the trust ratio.

.. math::

    g_t &\leftarrow \pm g_t \ (+\, \lambda\,\theta_{t-1} \text{ without adam\_w\_mode}) \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
    v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
    u_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
        \ (+\, \lambda\,\theta_{t-1} \text{ with adam\_w\_mode}) \\
    r_t &= \frac{\lVert\theta_{t-1}\rVert_2}{\lVert u_t\rVert_2}
        \quad (1 \text{ when either norm is } 0) \\
    \theta_t &\leftarrow \theta_{t-1} - \eta\, r_t\, u_t

The norms are per tensor, taken through the segment table. This is optax's and
Paddle's LAMB; OneFlow's formula (seed 004) with its ``adam_w_mode`` and
``do_bias_correction`` options. With ``decay_in_trust_ratio=False`` (Keras) the
decoupled decay :math:`-\eta\lambda\theta` is applied beside the ratio-scaled Adam
direction instead of inside it. With ``corrected_moments`` (optax's ``scale_by_adam``)
the direction is formed from the corrected moments,
:math:`u_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon)` with
:math:`\hat m_t = m_t / (1 - \beta_1^t)`, :math:`\hat v_t = v_t / (1 - \beta_2^t)`
(equal but for rounding).

Complex parameters (``complex_mode``): as independent real pairs (the default; the
norms are those of the complex tensors, :math:`\lVert\theta\rVert^2 = \sum
|\theta_i|^2`), or with :math:`v_t` of :math:`|g_t|^2` and :math:`m_t` complex (optax,
``"conjugate"``); the OneFlow, Paddle, MindSpore and Keras flavors refuse them.

Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in
76 minutes" (ICLR 2020).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.blocks import (
    adam_direction,
    adam_moments,
    adam_scalars,
    decoupled_decay,
    gate,
    l2_penalty,
    safe_ratio,
    signed,
    tensor_norms,
)
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
class LAMBRule(Rule):
    adam_w_mode: bool = True
    do_bias_correction: bool = True
    decay_in_trust_ratio: bool = True
    always_adapt: bool = True
    maximize: bool = False
    beta_powers: str | None = None
    corrected_moments: bool = False
    complex_mode: str | None = REAL_PAIRS

    needs_tensor_reductions = True
    hyperparameters = {
        "lr": v.non_negative,
        "betas": v.betas,
        "eps": v.non_negative,
        "weight_decay": v.non_negative,
        "adam_w_mode": v.flag,
        "do_bias_correction": v.flag,
        "amsgrad": v.flag,
        "decay_in_trust_ratio": v.flag,
        "always_adapt": v.flag,
        "maximize": v.flag,
        "beta_powers": v.choice(None, "running", "float32"),
        "corrected_moments": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "oneflow": {**NO_COMPLEX},
        "optax": {"eps": 1e-6, "corrected_moments": True, "complex_mode": CONJUGATE},
        "paddle": {
            "eps": 1e-6,
            "weight_decay": 0.01,
            "always_adapt": False,
            "beta_powers": "running",
            "float32": ("betas", "eps", "weight_decay"),
            **NO_COMPLEX,
        },
        "mindspore": {"eps": 1e-6, **NO_COMPLEX},
        "keras": {"eps": 1e-7, "decay_in_trust_ratio": False, **NO_COMPLEX},
    }

    @classmethod
    def check(cls, owner: str, hp: Mapping[str, Any]) -> None:
        if hp["amsgrad"]:
            v.fail(owner, "amsgrad", True, "LAMB does not support AMSGrad (as in OneFlow)")

    @classmethod
    def from_group(cls, group: Mapping[str, Any]) -> LAMBRule:
        return cls(
            group["adam_w_mode"],
            group["do_bias_correction"],
            group["decay_in_trust_ratio"],
            group["always_adapt"],
            group["maximize"],
            group["beta_powers"],
            group["corrected_moments"],
            group["complex_mode"],
        )

    def reads_params(self, hp: Mapping[str, Any]) -> bool:
        return True  # the trust ratio needs the parameters' norms

    def slots(self) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        return adam_scalars(
            hp, step, self.do_bias_correction, self.beta_powers, optax=self.corrected_moments
        )

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        if not self.adam_w_mode:
            g = l2_penalty(g, p, s.weight_decay)
        m, v_, new_state = adam_moments(xp, state, g, s, False, self.corrected_moments)
        if self.corrected_moments:  # optax: from the corrected moments
            u = adam_direction(xp, m, v_, s)
        else:
            u = (m / s.bc1) / (xp.sqrt(v_) / s.bc2_sqrt + s.eps)
        decayed = self.adam_w_mode and self.decay_in_trust_ratio
        if decayed:
            u = l2_penalty(u, p, s.weight_decay)
        ratio = safe_ratio(xp, tensor_norms(xp, p, block), tensor_norms(xp, u, block))
        if not self.always_adapt:  # Paddle: no trust ratio for parameters without decay
            ratio = gate(xp, s.weight_decay > 0, ratio)
        delta = -s.lr * block.expand(xp, ratio) * u
        if self.adam_w_mode and not decayed:
            delta = delta + decoupled_decay(p, s.lr, s.weight_decay)
        return delta, new_state


class LAMB(Optimizer):
    r"""LAMB (oneflow.optim.LAMB semantics; optax/Paddle/Keras through ``flavor=``).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: decay rates :math:`(\beta_1, \beta_2)` of the moment estimates.
        eps: :math:`\epsilon` added to the denominator.
        weight_decay: weight decay :math:`\lambda`.
        adam_w_mode: decoupled decay inside the update (True) or L2 on the gradient.
        do_bias_correction: divide the moments by :math:`1 - \beta^t`.
        amsgrad: not supported: True raises ValueError, as OneFlow documents.
        decay_in_trust_ratio: with adam_w_mode, include the decay in the trust-ratio
            direction (optax, Paddle, OneFlow) or apply it beside (Keras).
        always_adapt: apply the trust ratio also to parameters without weight decay
            (Paddle's option; its default False uses ratio 1 for them).
        maximize: maximize the objective instead of minimizing.
        beta_powers: how :math:`\beta^t` is formed: exactly (None), or as the running
            product Paddle ("running") or MindSpore ("float32") keep in state.
        corrected_moments: form the direction from the bias-corrected moments (optax).
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``),
            with conjugate second moments (``"conjugate"``, optax), or refused (None).
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "lamb"
    rule = LAMBRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(1e-3),
        betas: tuple[float, float] = Default((0.9, 0.999)),
        eps: float = Default(1e-8),
        weight_decay: float = Default(0.0),
        adam_w_mode: bool = True,
        do_bias_correction: bool = True,
        amsgrad: bool = False,
        decay_in_trust_ratio: bool = Default(True),
        always_adapt: bool = Default(True),
        maximize: bool = False,
        beta_powers: str | None = Default(None),
        corrected_moments: bool = Default(False),
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


lamb = functional(LAMB)
