r"""AdaBelief: Adam whose second moment tracks the belief in the gradient, the squared
deviation of the gradient from its running mean.

.. math::

    g_t &\leftarrow \pm g_t \qquad \text{(sign flipped when maximizing)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    s_t &\leftarrow \beta_2 s_{t-1} + (1 - \beta_2)\,(g_t - m_t)^2 + \bar\epsilon \\
    \hat m_t &= \frac{m_t}{1 - \beta_1^t}, \qquad \hat s_t = \frac{s_t}{1 - \beta_2^t} \\
    \theta_t &\leftarrow \theta_{t-1}
        - \eta\,\Big(\frac{\hat m_t}{\sqrt{\hat s_t} + \epsilon} + \lambda\,\theta_{t-1}\Big)

as optax's ``adabelief`` (:math:`\bar\epsilon` is its ``eps_root``, kept in the state as
optax keeps it; both epsilons default to :math:`10^{-16}`). With ``nesterov``,
:math:`\hat m_t = \beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1) g_t / (1 -
\beta_1^t)` (optax's option). ``weight_decay`` is decoupled, scaled by the learning rate
(``optax.chain(scale_by_belief(), add_decayed_weights(wd), scale_by_learning_rate(lr))``;
0 by default). Complex parameters: real pairs (the default), or :math:`|g_t - m_t|^2`
with :math:`m_t` complex (optax, ``"conjugate"``).

Reference: Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
Observed Gradients" (NeurIPS 2020).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.algorithms.nadam import correction
from uniopt.blocks import abs_sq, ema_optax, l2_penalty, like_slot, real_part, signed
from uniopt.flavors import COMPLEX_MODES, CONJUGATE, REAL_PAIRS, Default, arguments
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional


@dataclass(frozen=True)
class AdaBeliefRule(Rule):
    nesterov: bool = False
    maximize: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "betas": v.betas,
        "eps": v.non_negative,
        "eps_root": v.non_negative,
        "weight_decay": v.non_negative,
        "nesterov": v.flag,
        "maximize": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {"optax": {"complex_mode": CONJUGATE}}

    def slots(self) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_var": 0.0}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        beta1, beta2 = hp["betas"]
        return {
            "lr": hp["lr"],
            "beta1": beta1,
            "beta2": beta2,
            "eps": hp["eps"],
            "eps_root": hp["eps_root"],
            "weight_decay": hp["weight_decay"],
            "bc1": correction(beta1, step, True),
            "bc1_next": correction(beta1, step + 1, True),
            "bc2": correction(beta2, step, True),
        }

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        m = ema_optax(state["exp_avg"], g, s.beta1)
        belief = abs_sq(xp, g - m)
        var = ema_optax(real_part(xp, state["exp_avg_var"]), belief, s.beta2) + s.eps_root
        if self.nesterov:
            m_hat = s.beta1 * (m / s.bc1_next) + (1.0 - s.beta1) * (g / s.bc1)
        else:
            m_hat = m / s.bc1
        u = l2_penalty(m_hat / (xp.sqrt(var / s.bc2) + s.eps), p, s.weight_decay)
        return u * -s.lr, {"exp_avg": m, "exp_avg_var": like_slot(xp, var, state["exp_avg_var"])}


class AdaBelief(Optimizer):
    r"""AdaBelief (optax.adabelief semantics).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: decay rates :math:`(\beta_1, \beta_2)` of the mean and of the belief.
        eps: :math:`\epsilon` added to the denominator, outside the root.
        eps_root: :math:`\bar\epsilon` added to the belief :math:`s_t` (kept in state).
        weight_decay: decoupled weight decay :math:`\lambda` (scaled by the learning rate).
        nesterov: Nesterov momentum in :math:`\hat m_t` (optax's option).
        maximize: maximize the objective instead of minimizing.
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``),
            with :math:`|g - m|^2` (``"conjugate"``, optax), or refused (None).
        flavor: ``"optax"`` (the defaults are optax's; the flavor adds its complex mode).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "adabelief"
    rule = AdaBeliefRule

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        eps_root: float = 1e-16,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


adabelief = functional(AdaBelief)
