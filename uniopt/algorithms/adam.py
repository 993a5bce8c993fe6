r"""Adam, with L2 or decoupled weight decay.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1}
        && \text{(sign flipped when maximizing; L2 weight decay)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,
        \qquad \hat v_t = \max(\hat v_{t-1}, v_t) \ \text{(AMSGrad)} \\
    \theta_t &\leftarrow \theta_{t-1}
        - \frac{\eta}{1 - \beta_1^t}\,
          \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

Without bias correction the two factors :math:`1 - \beta^t` are 1. With ``eps_hat``
(Keras, MindSpore ``nn.Adam``) :math:`\epsilon` is added before the correction:
:math:`\theta_t = \theta_{t-1} - \eta \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
\frac{m_t}{\sqrt{v_t} + \epsilon}`. With ``decoupled_weight_decay`` the decay leaves
the gradient and becomes :math:`-\eta\lambda\theta_{t-1}` (AdamW).

With ``corrected_moments`` (optax's ``scale_by_adam``, ``flavor="optax"``) the moments
are corrected first and the learning rate scales the result,

.. math::

    \hat m_t = \frac{m_t}{1 - \beta_1^t}, \quad
    \hat v_t = \frac{v_t}{1 - \beta_2^t}, \quad
    u_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \quad
    \theta_t = \theta_{t-1} - \eta\,(u_t + \lambda\theta_{t-1})

(the decay term with ``decoupled_weight_decay``, as ``optax.adamw``): the same as above
but for rounding, except with AMSGrad, where optax keeps the running maximum of the
corrected :math:`\hat v_t` (``optax.amsgrad``) and torch that of :math:`v_t`.
``bias_correction_mu`` / ``bias_correction_nu`` switch either correction off
(``optax.amsgrad``'s switches; off for both: the AMSGrad paper).

Complex parameters (``complex_mode``): ``"real_pairs"`` (torch, the default) optimizes
the real and imaginary parts as independent reals, as ``torch.optim.Adam`` does through
``view_as_real``; ``"conjugate"`` (optax) keeps :math:`m_t` complex and takes
:math:`v_t` of :math:`|g_t|^2 = \operatorname{Re}(\bar g_t g_t)`; the Keras, Paddle,
MindSpore and OneFlow flavors refuse complex parameters (TypeError).

References: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015);
Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond" (ICLR 2018) for AMSGrad;
Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019).
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
    adam_step,
    decoupled_decay,
    float32,
    l2_penalty,
    signed,
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
class AdamRule(Rule):
    amsgrad: bool = False
    do_bias_correction: bool = True
    maximize: bool = False
    beta_powers: str | None = None
    eps_hat: bool = False
    decoupled_weight_decay: bool = False
    corrected_moments: bool = False
    bias_correction_mu: bool = True
    bias_correction_nu: bool = True
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "betas": v.betas,
        "eps": v.non_negative,
        "weight_decay": v.non_negative,
        "amsgrad": v.flag,
        "do_bias_correction": v.flag,
        "maximize": v.flag,
        "eps_hat": v.flag,
        "decoupled_weight_decay": v.flag,
        "beta_powers": v.choice(None, "running", "float32"),
        "corrected_moments": v.flag,
        "bias_correction_mu": v.flag,
        "bias_correction_nu": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "torch": {},
        "optax": {"corrected_moments": True, "complex_mode": CONJUGATE},
        "paddle": {"beta_powers": "running", **NO_COMPLEX},
        "oneflow": {**NO_COMPLEX},
        "keras": {"eps": 1e-7, "eps_hat": True, "decoupled_weight_decay": True, **NO_COMPLEX},
        "mindspore": {
            "eps_hat": True,
            "beta_powers": "float32",
            "float32": ("lr", "betas", "eps", "weight_decay"),
            **NO_COMPLEX,
        },
    }

    @classmethod
    def check(cls, owner: str, hp: Mapping[str, Any]) -> None:
        if hp["corrected_moments"] and hp["eps_hat"]:
            v.fail(
                owner,
                "eps_hat",
                True,
                "eps_hat (Keras, MindSpore) and corrected_moments (optax) are two forms of "
                "the step; choose one",
            )

    def slots(self) -> dict[str, float]:
        moments = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        return {**moments, "max_exp_avg_sq": 0.0} if self.amsgrad else moments

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        return adam_scalars(
            hp,
            step,
            self.do_bias_correction,
            self.beta_powers,
            mu=self.bias_correction_mu,
            nu=self.bias_correction_nu,
            optax=self.corrected_moments,
        )

    def float32_lr(self, scalars: dict[str, Any]) -> dict[str, Any]:
        """torch with a float32 ``lr`` tensor: ``lr / bc1`` and ``1 - lr * wd`` are
        float32 tensors (the decay as the factor torch multiplies by)."""
        out = {**scalars, "step_size": float32(scalars["step_size"])}
        lr, wd = scalars["lr"], scalars["weight_decay"]
        if self.decoupled_weight_decay and wd and lr:
            kept = float32(1.0 - float32(lr * wd))  # torch: p.mul_(1 - lr * wd)
            out["weight_decay"] = (1.0 - kept) / lr
        return out

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        if not self.decoupled_weight_decay:
            g = l2_penalty(g, p, s.weight_decay)
        m, v_hat, new_state = adam_moments(xp, state, g, s, self.amsgrad, self.corrected_moments)
        if self.corrected_moments:  # optax: (u + wd * p) * -lr
            u = adam_direction(xp, m, v_hat, s)
            if self.decoupled_weight_decay:
                u = l2_penalty(u, p, s.weight_decay)
            return u * -s.lr, new_state
        step = adam_step(xp, m, v_hat, s, self.eps_hat)
        if self.decoupled_weight_decay:
            return decoupled_decay(p, s.lr, s.weight_decay) - step, new_state
        return -step, new_state


class Adam(Optimizer):
    r"""Adam (torch.optim.Adam / oneflow.optim.Adam semantics; ``weight_decay`` is L2).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: decay rates :math:`(\beta_1, \beta_2)` of the moment estimates.
        eps: :math:`\epsilon` added to the denominator.
        weight_decay: weight decay :math:`\lambda` (L2 unless decoupled).
        amsgrad: keep the running maximum of :math:`v_t` (AMSGrad).
        do_bias_correction: divide by :math:`1 - \beta^t` (OneFlow's option).
        maximize: maximize the objective instead of minimizing.
        eps_hat: add :math:`\epsilon` before the bias correction (Keras, MindSpore).
        decoupled_weight_decay: decay the weights directly (AdamW) instead of L2.
        beta_powers: how :math:`\beta^t` is formed: exactly (None), or as the running
            product Paddle ("running") or MindSpore ("float32") keep in state.
        corrected_moments: optax's form: divide the moments by their bias corrections,
            then :math:`\eta\,\hat m / (\sqrt{\hat v} + \epsilon)`; AMSGrad keeps the
            maximum of :math:`\hat v` (``optax.amsgrad``).
        bias_correction_mu: correct the first moment (``optax.amsgrad``'s switch).
        bias_correction_nu: correct the second moment (``optax.amsgrad``'s switch).
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``,
            torch), with conjugate second moments (``"conjugate"``, optax), or refused
            (None).
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "adam"
    rule = AdamRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(1e-3),
        betas: tuple[float, float] = Default((0.9, 0.999)),
        eps: float = Default(1e-8),
        weight_decay: float = Default(0.0),
        amsgrad: bool = False,
        do_bias_correction: bool = Default(True),
        maximize: bool = False,
        beta_powers: str | None = Default(None),
        eps_hat: bool = Default(False),
        decoupled_weight_decay: bool = Default(False),
        corrected_moments: bool = Default(False),
        bias_correction_mu: bool = True,
        bias_correction_nu: bool = True,
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


adam = functional(Adam)
