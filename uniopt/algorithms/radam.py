r"""RAdam: Adam whose adaptive step is rectified by the variance of its second moment.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1}
        && \text{(sign flipped when maximizing; L2 weight decay)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
    v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,
        \qquad \hat m_t = \frac{m_t}{1 - \beta_1^t} \\
    \rho_\infty &= \frac{2}{1 - \beta_2} - 1, \qquad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \qquad
    r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                     {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
    \theta_t &\leftarrow \theta_{t-1} - \eta\, r_t\,
        \frac{\hat m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}
        \quad \text{if } \rho_t > 5, \text{ else } \theta_{t-1} - \eta\, \hat m_t

That is torch's RAdam, whose :math:`\epsilon` is added to :math:`\sqrt{v_t}` before
the bias correction (``eps_hat=True``). optax's ``radam`` (``flavor="optax"``) adds it
after, :math:`r_t \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)` with
:math:`\hat v_t = v_t / (1 - \beta_2^t)` (``eps_hat=False``; :math:`\bar\epsilon` is its
``eps_root``), rectifies where :math:`\rho_t \ge` ``threshold`` (5) and offers
Nesterov momentum, :math:`\hat m_t = \beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1)
g_t / (1 - \beta_1^t)`. With ``decoupled_weight_decay`` the decay is
:math:`-\eta\lambda\theta_{t-1}` instead of L2 (torch's option). Under ``jit``
:math:`\rho_t` is formed without the cancellation of its two large terms (through
:math:`y/\mathrm{expm1}(y)` and its series), so a float32 step count rectifies as a
float64 one does. Complex parameters: real pairs (torch) or conjugate second moments
(optax).

Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond"
(ICLR 2020).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import array_api_compat

from uniopt import validation as v
from uniopt.algorithms.nadam import _float32_decay, correction, plus
from uniopt.blocks import adam_moments, decoupled_decay, l2_penalty, signed
from uniopt.flavors import COMPLEX_MODES, CONJUGATE, REAL_PAIRS, Default, arguments
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional

#: coefficients of 1 - y / expm1(y) = y/2 - y^2/12 + y^4/720 - ... (Bernoulli numbers)
_SERIES = (1 / 2, -1 / 12, 0.0, 1 / 720, 0.0, -1 / 30240, 0.0, 1 / 1209600, 0.0, -1 / 47900160)


def sma_length(beta2: float, step: Any) -> Any:
    r""":math:`\rho_t`: torch's arithmetic for a host step; for a traced one
    :math:`\rho_t = c + \frac{2}{L}\,(1 - \frac{y}{\mathrm{expm1}(y)})`, :math:`y = tL`,
    :math:`L = -\ln\beta_2`, :math:`c = \rho_\infty - 2/L` (exact on the host)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    if isinstance(step, int):
        return rho_inf - 2 * step * (beta2**step) / (1.0 - beta2**step)
    if beta2 == 0.0:
        return 0.0 * step + 1.0
    a = 1.0 - beta2
    big_l = -math.log1p(-a)  # -ln(beta2)
    l_minus_a = sum(a**k / k for k in range(2, 80)) if a < 0.5 else big_l - a
    c = 2.0 * l_minus_a / (a * big_l) - 1.0
    xp = array_api_compat.array_namespace(step)
    y = step * big_l
    zero, small = 0.0 * y, y < 0.25
    ys, yl = (
        xp.where(small, y, zero),
        xp.where(small, zero + 1.0, xp.where(y < 64.0, y, zero + 64.0)),
    )
    series = zero
    for coefficient in reversed(_SERIES):
        series = (series + coefficient) * ys
    direct = 1.0 - yl / xp.expm1(yl)  # 1 to the last bit past y = 64
    return c + (2.0 / big_l) * xp.where(small, series, direct)


@dataclass(frozen=True)
class RAdamRule(Rule):
    decoupled_weight_decay: bool = False
    maximize: bool = False
    nesterov: bool = False
    eps_hat: bool = True
    corrected_moments: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "betas": v.betas,
        "eps": v.non_negative,
        "weight_decay": v.non_negative,
        "eps_root": v.non_negative,
        "threshold": v.real,
        "decoupled_weight_decay": v.flag,
        "maximize": v.flag,
        "nesterov": v.flag,
        "eps_hat": v.flag,
        "corrected_moments": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "torch": {},
        "optax": {"eps_hat": False, "corrected_moments": True, "complex_mode": CONJUGATE},
    }

    def slots(self) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        beta1, beta2 = hp["betas"]
        optax, threshold = self.corrected_moments, hp["threshold"]
        rho_inf, rho = 2.0 / (1.0 - beta2) - 1.0, sma_length(beta2, step)
        if isinstance(step, int):
            rectified = rho >= threshold if optax else rho > threshold
            rect = 1.0
            if rectified:
                rect = (
                    (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
                ) ** 0.5
            rectified = float(rectified)
        else:
            xp = array_api_compat.array_namespace(step)
            on = rho >= threshold if optax else rho > threshold
            ratio = (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
            rect = xp.sqrt(xp.where(on, ratio, 1.0 + 0.0 * rho))
            rectified = xp.astype(on, step.dtype)
        bc2 = correction(beta2, step, optax)
        return {
            "lr": hp["lr"],
            "beta1": beta1,
            "beta2": beta2,
            "eps": hp["eps"],
            "eps_root": hp["eps_root"],
            "weight_decay": hp["weight_decay"],
            "bc1": correction(beta1, step, optax),
            "bc1_next": correction(beta1, step + 1, optax),
            "bc2": bc2,
            "bc2_sqrt": bc2**0.5,
            "rect": rect,
            "rectified": rectified,
        }

    def float32_lr(self, scalars: dict[str, Any]) -> dict[str, Any]:
        """torch with a float32 ``lr`` tensor: only its decay factor is a float32 tensor
        (the step multiplies float64 tensors by the tensor, exactly)."""
        return _float32_decay(scalars, self.decoupled_weight_decay)

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        if not self.decoupled_weight_decay:
            g = l2_penalty(g, p, s.weight_decay)
        optax = self.corrected_moments
        m, v_, new_state = adam_moments(xp, state, g, s, False, optax)  # optax: v / bc2
        if self.nesterov:
            m_hat = s.beta1 * (m / s.bc1_next) + (1.0 - s.beta1) * (g / s.bc1)
        else:
            m_hat = m / s.bc1
        if self.eps_hat:  # eps before the correction (torch): sqrt(bc2) / (sqrt(v) + eps)
            v_ = v_ * s.bc2 if optax else v_
            adaptive = s.bc2_sqrt / (xp.sqrt(plus(v_, s.eps_root * s.bc2)) + s.eps)
        else:
            adaptive = 1.0 / (xp.sqrt(plus(v_ if optax else v_ / s.bc2, s.eps_root)) + s.eps)
        if optax:  # optax: where(rho >= threshold, r * m_hat / denom, m_hat) * -lr
            u = _choose(xp, s.rectified, s.rect * m_hat * adaptive, m_hat)
            if self.decoupled_weight_decay:
                u = l2_penalty(u, p, s.weight_decay)
            return u * -s.lr, new_state
        plain = m_hat * s.lr
        delta = -_choose(xp, s.rectified, plain * adaptive * s.rect, plain)
        if self.decoupled_weight_decay:
            delta = decoupled_decay(p, s.lr, s.weight_decay) + delta
        return delta, new_state


def _choose(xp: Any, flag: Any, rectified: Any, plain: Any) -> Any:
    """``rectified`` where ``flag`` (1.0 or 0.0, a host float or a traced 0-d array)."""
    if isinstance(flag, float):
        return rectified if flag else plain
    return xp.where(flag > 0.0, rectified, plain)


class RAdam(Optimizer):
    r"""RAdam (torch.optim.RAdam semantics; optax's through ``flavor="optax"``).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: decay rates :math:`(\beta_1, \beta_2)` of the moment estimates.
        eps: :math:`\epsilon` added to the denominator.
        weight_decay: weight decay :math:`\lambda` (L2 unless decoupled).
        decoupled_weight_decay: decay the weights directly instead of L2 (torch).
        maximize: maximize the objective instead of minimizing.
        nesterov: Nesterov momentum in :math:`\hat m_t` (optax).
        eps_root: :math:`\bar\epsilon` added to :math:`\hat v_t` inside the root (optax).
        threshold: rectify where :math:`\rho_t` exceeds it (torch: 5; optax: reaches it).
        eps_hat: add :math:`\epsilon` to :math:`\sqrt{v_t}` before the bias correction
            (torch) rather than to :math:`\sqrt{\hat v_t}` (optax).
        corrected_moments: optax's order of the arithmetic, and its ``>=`` threshold.
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``,
            torch), with conjugate second moments (``"conjugate"``, optax), or refused
            (None).
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "radam"
    rule = RAdamRule

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        nesterov: bool = False,
        eps_root: float = 0.0,
        threshold: float = 5.0,
        eps_hat: bool = Default(True),
        corrected_moments: bool = Default(False),
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


radam = functional(RAdam)
