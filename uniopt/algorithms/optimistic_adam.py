r"""Optimistic Adam: the Adam direction extrapolated with the previous one.

.. math::

    g_t &\leftarrow \pm g_t \qquad \text{(sign flipped when maximizing)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
    v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
    u_t &= \frac{\hat m_t}{\sqrt{v_t / (1 - \beta_2^t) + \bar\epsilon} + \epsilon},
    \qquad \hat m_t = \frac{\beta_1 m_t}{1 - \beta_1^{t+1}}
        + \frac{(1 - \beta_1)\, g_t}{1 - \beta_1^t}
        \quad (\text{Nesterov; else } m_t / (1 - \beta_1^t)) \\
    \theta_t &\leftarrow \theta_{t-1}
        - \eta\,\big((\alpha + \beta)\, u_t - \beta\, u_{t-1} + \lambda\,\theta_{t-1}\big),
        \qquad u_0 = u_1

as optax's ``optimistic_adam_v2`` (``scale_by_adam(nesterov=True)``, then
``scale_by_optimistic_gradient(alpha, beta)``, then the learning rate; on the first
step the previous direction is the current one). optax's deprecated ``optimistic_adam``
(v1) is the same with ``lr=1``, ``alpha`` its ``learning_rate`` and ``beta`` its
``optimism`` (which defaults to the learning rate): ``OptimisticAdam(params, lr=1.0,
alpha=learning_rate, beta=optimism)``. ``weight_decay`` :math:`\lambda` is decoupled,
scaled by the learning rate (``add_decayed_weights`` before it; 0 by default). Complex
parameters: real pairs (the default), or :math:`|g_t|^2` with :math:`m_t, u_t` complex
(optax, ``"conjugate"``).

Reference: Daskalakis et al., "Training GANs with Optimism" (ICLR 2018).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniopt import validation as v
from uniopt.algorithms.adan import first_step
from uniopt.algorithms.nadam import correction, plus
from uniopt.blocks import adam_moments, l2_penalty, signed
from uniopt.flavors import COMPLEX_MODES, CONJUGATE, REAL_PAIRS, Default, arguments
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional


@dataclass(frozen=True)
class OptimisticAdamRule(Rule):
    nesterov: bool = True
    maximize: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "alpha": v.real,
        "beta": v.real,
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
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0, "prev_direction": 0.0}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        beta1, beta2 = hp["betas"]
        return {
            "lr": hp["lr"],
            "alpha_plus_beta": hp["alpha"] + hp["beta"],
            "beta": hp["beta"],
            "beta1": beta1,
            "beta2": beta2,
            "eps": hp["eps"],
            "eps_root": hp["eps_root"],
            "weight_decay": hp["weight_decay"],
            "bc1": correction(beta1, step, True),
            "bc1_next": correction(beta1, step + 1, True),
            "bc2": correction(beta2, step, True),
            "first": first_step(step),
        }

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        m, v_hat, new_state = adam_moments(xp, state, g, s, False, True)
        if self.nesterov:
            m_hat = s.beta1 * (m / s.bc1_next) + (1.0 - s.beta1) * (g / s.bc1)
        else:
            m_hat = m / s.bc1
        u = m_hat / (xp.sqrt(plus(v_hat, s.eps_root)) + s.eps)
        previous = state["prev_direction"]
        if isinstance(s.first, float):
            previous = u if s.first else previous
        else:
            previous = xp.where(s.first > 0.0, u, previous)
        optimistic = l2_penalty(s.alpha_plus_beta * u - s.beta * previous, p, s.weight_decay)
        return optimistic * -s.lr, {**new_state, "prev_direction": u}


class OptimisticAdam(Optimizer):
    r"""Optimistic Adam (optax.optimistic_adam_v2 semantics; v1 through its arguments).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        alpha: :math:`\alpha`, the weight of the current direction (optax's ``alpha``).
        beta: :math:`\beta`, the optimism: the weight of the extrapolation (``beta``).
        betas: decay rates :math:`(\beta_1, \beta_2)` of the moment estimates.
        eps: :math:`\epsilon` added to the denominator, outside the root.
        eps_root: :math:`\bar\epsilon` added inside the root.
        weight_decay: decoupled weight decay :math:`\lambda` (scaled by the learning rate).
        nesterov: Nesterov momentum in :math:`\hat m_t` (optax's default, True).
        maximize: maximize the objective instead of minimizing.
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``),
            with conjugate second moments (``"conjugate"``, optax), or refused (None).
        flavor: ``"optax"`` (the defaults are optax's; the flavor adds its complex mode).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "optimistic_adam"
    rule = OptimisticAdamRule

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        alpha: float = 1.0,
        beta: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        eps_root: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        maximize: bool = False,
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


optimistic_adam = functional(OptimisticAdam)
