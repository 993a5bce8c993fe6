r"""AdamW: Adam with decoupled weight decay.

.. math::

    g_t &\leftarrow \pm g_t \qquad \text{(sign flipped when maximizing)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,
        \qquad \hat v_t = \max(\hat v_{t-1}, v_t) \ \text{(AMSGrad)} \\
    \theta_t &\leftarrow \theta_{t-1} - \eta\lambda\,\theta_{t-1}
        - \frac{\eta}{1 - \beta_1^t}\,
          \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

The decay :math:`\eta\lambda\theta` is scaled by the (scheduled) learning rate and
never enters the moments, as in torch.optim.AdamW.

Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uniopt.algorithms.adam import Adam, AdamRule
from uniopt.blocks import adam_moments, adam_step, decoupled_decay, signed
from uniopt.rule import Scalars
from uniopt.transform import functional


@dataclass(frozen=True)
class AdamWRule(AdamRule):
    name = "adamw"

    def update(self, xp, p, g, state, s: Scalars, block):
        m, v_hat, new_state = adam_moments(xp, state, signed(g, self.maximize), s, self.amsgrad)
        return decoupled_decay(p, s.lr, s.weight_decay) - adam_step(xp, m, v_hat, s), new_state


class AdamW(Adam):
    r"""AdamW (torch.optim.AdamW semantics): Adam with decoupled weight decay.

    Same arguments as :class:`uniopt.Adam`; ``weight_decay`` (default 1e-2, as in
    torch and Paddle) is the decoupled decay :math:`\lambda`.
    """

    rule = AdamWRule

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        do_bias_correction: bool = True,
        maximize: bool = False,
    ):
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, do_bias_correction, maximize
        )


adamw = functional(AdamW)
