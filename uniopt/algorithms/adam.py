r"""Adam, with L2 weight decay folded into the gradient.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1}
        && \text{(sign flipped when maximizing; L2 weight decay)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,
        \qquad \hat v_t = \max(\hat v_{t-1}, v_t) \ \text{(AMSGrad)} \\
    \theta_t &\leftarrow \theta_{t-1}
        - \frac{\eta}{1 - \beta_1^t}\,
          \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

Without bias correction the two factors :math:`1 - \beta^t` are 1.

References: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015);
Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond" (ICLR 2018) for AMSGrad.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.blocks import adam_moments, adam_scalars, adam_step, l2_penalty, signed
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional


@dataclass(frozen=True)
class AdamRule(Rule):
    amsgrad: bool = False
    do_bias_correction: bool = True
    maximize: bool = False

    name = "adam"
    hyperparameters = {
        "lr": v.non_negative,
        "betas": v.betas,
        "eps": v.non_negative,
        "weight_decay": v.non_negative,
        "amsgrad": v.flag,
        "do_bias_correction": v.flag,
        "maximize": v.flag,
    }

    def slots(self) -> dict[str, float]:
        moments = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        return {**moments, "max_exp_avg_sq": 0.0} if self.amsgrad else moments

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        return adam_scalars(hp, step, self.do_bias_correction)

    def update(self, xp, p, g, state, s: Scalars, block):
        g = l2_penalty(signed(g, self.maximize), p, s.weight_decay)
        m, v_hat, new_state = adam_moments(xp, state, g, s, self.amsgrad)
        return -adam_step(xp, m, v_hat, s), new_state


class Adam(Optimizer):
    r"""Adam (torch.optim.Adam / oneflow.optim.Adam semantics; ``weight_decay`` is L2).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: decay rates :math:`(\beta_1, \beta_2)` of the moment estimates.
        eps: :math:`\epsilon` added to the denominator.
        weight_decay: L2 penalty :math:`\lambda` added to the gradient.
        amsgrad: keep the running maximum of :math:`v_t` (AMSGrad).
        do_bias_correction: divide by :math:`1 - \beta^t` (OneFlow's option).
        maximize: maximize the objective instead of minimizing.
    """

    rule = AdamRule

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        do_bias_correction: bool = True,
        maximize: bool = False,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            do_bias_correction=do_bias_correction,
            maximize=maximize,
        )


adam = functional(Adam)
