r"""NAdam: Adam with Nesterov momentum and a momentum schedule; NAdamW with decoupled decay.

.. math::

    g_t &\leftarrow \pm g_t + \lambda\,\theta_{t-1}
        && \text{(sign flipped when maximizing; L2 weight decay)} \\
    \mu_t &= \beta_1\big(1 - \tfrac12\, 0.96^{t\psi}\big), \qquad
        \Pi_t = \textstyle\prod_{i=1}^{t} \mu_i \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
    v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
    \theta_t &\leftarrow \theta_{t-1}
        - \eta\,\frac{1 - \mu_t}{1 - \Pi_t}\,\frac{g_t}{d_t}
        - \eta\,\frac{\mu_{t+1}}{1 - \Pi_t\,\mu_{t+1}}\,\frac{m_t}{d_t},
        \qquad d_t = \sqrt{v_t / (1 - \beta_2^t) + \bar\epsilon} + \epsilon

:math:`\psi` is ``momentum_decay`` (torch 0.004; Keras's ``0.96^t`` is
:math:`\psi = 1`). With ``momentum_decay=None`` the momentum is the constant
:math:`\mu_t = \beta_1`, :math:`\Pi_t = \beta_1^t`: Dozat's simplified form, which is
``optax.nadam`` (:math:`\hat m_t = \beta_1 m_t / (1 - \beta_1^{t+1}) + (1 - \beta_1)
g_t / (1 - \beta_1^t)`). With ``decoupled_weight_decay`` (torch's NAdamW option,
``optax.nadamw``, Keras's ``weight_decay``) the decay leaves the gradient and becomes
:math:`-\eta\lambda\theta_{t-1}`. :math:`\bar\epsilon` is optax's ``eps_root`` (0).

torch keeps :math:`\Pi_t` as a float32 number (a 0-d tensor of its default dtype)
multiplied by the float32-rounded :math:`\mu_t` each step: ``mu_product="float32"``
(the default, and the torch flavor) reproduces that rounding, ``"exact"`` keeps the
product exact. Under ``jit`` (a traced step) the exact product comes from a closed
form (a 60-term series in :math:`t`), and torch's float32 one from a table of its
first steps, until it is too small to change :math:`1 - \Pi_t` (at most 4096 steps).
``corrected_moments`` (optax) sums the averages in optax's order and forms
:math:`\hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)` before the learning
rate, the same arithmetic but for rounding. Complex parameters: real pairs (torch),
conjugate second moments (optax), refused by the Keras flavor.

References: Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR 2016 workshop);
Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from uniopt import validation as v
from uniopt.blocks import (
    adam_moments,
    bias_correction,
    decoupled_decay,
    float32,
    l2_penalty,
    signed,
)
from uniopt.flavors import COMPLEX_MODES, CONJUGATE, NO_COMPLEX, REAL_PAIRS, Default, arguments
from uniopt.optimizer import Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import functional

_TINY = 2.0**-80  #: a product this small leaves 1 - product == 1 (float64 and below)
_HOST_STEPS, _TRACED_STEPS = 2**16, 4096  #: longest tables, on the host / under jit
_TERMS = np.arange(1, 61)  #: terms of the series of log(prod(1 - 0.5 q^i))


def plus(x: Any, c: Any) -> Any:
    """``x + c``, or ``x`` itself where ``c`` is the float 0 (``eps_root``'s default)."""
    return x if isinstance(c, float) and c == 0.0 else x + c


def correction(beta: float, step: Any, optax: bool) -> Any:
    """:func:`uniopt.blocks.bias_correction`; in optax's own arithmetic (``optax``: ``1 -
    beta**t`` in the default float dtype) on JAX, or where that dtype is float64, not
    in torch's float32 default, which would round the ``1 - beta**t`` of every run."""
    if optax and not isinstance(step, int):
        xp = array_api_compat.array_namespace(step)
        optax = array_api_compat.is_jax_namespace(xp) or xp.asarray(0.0).dtype == xp.float64
    return bias_correction(beta, step, optax=optax)


def _float32_decay(scalars: dict[str, Any], decoupled: bool) -> dict[str, Any]:
    """torch's decoupled decay with a float32 ``lr`` tensor: ``p.mul_(1 - lr * wd)``
    multiplies by a float32 factor; as the ``weight_decay`` that gives it."""
    lr, wd = scalars["lr"], scalars["weight_decay"]
    if decoupled and wd and lr:
        kept = float32(1.0 - float32(lr * wd))
        return {**scalars, "weight_decay": (1.0 - kept) / lr}
    return scalars


def _momentum_decay(owner: str, name: str, value: Any) -> float | None:
    return None if value is None else v.non_negative(owner, name, value)


def momentum_cache(beta1: float, psi: float, step: Any) -> Any:
    r""":math:`\mu_t = \beta_1 (1 - 0.5 \cdot 0.96^{t\psi})` (torch's arithmetic)."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (step * psi)))


@functools.lru_cache(maxsize=64)
def _products(beta1: float, psi: float, mode: str, limit: int) -> tuple[float, ...]:
    """:math:`\\Pi_1, \\Pi_2, ...` until negligible (or ``limit`` of them), each
    rounded to float32 after multiplying by the float32 ``mu`` (torch) or exact."""
    out, product = [], 1.0
    while len(out) < limit and product >= _TINY:
        mu = momentum_cache(beta1, psi, float(len(out) + 1))
        if mode == "float32":
            product = float(np.float32(product) * np.float32(mu))
        else:
            product *= mu
        out.append(product)
    return tuple(out)


def _series(beta1: float, psi: float, step: Any, xp: Any = None) -> Any:
    r""":math:`\Pi_t = \beta_1^t \exp \sum_k a_k\, \mathrm{expm1}(k t \psi \ln 0.96)`, with
    :math:`a_k = 2^{-k} / (k\, \mathrm{expm1}(-k \psi \ln 0.96))` (the series of
    :math:`\sum_i \log(1 - q^i/2)`, :math:`q = 0.96^\psi`), for any ``t``."""
    if beta1 == 0.0:
        return 0.0 * step
    if psi == 0.0:
        return (0.5 * beta1) ** step
    c = _TERMS * (psi * math.log(0.96))
    a = 0.5**_TERMS / _TERMS / np.expm1(-c)
    if xp is None:
        return float(np.exp(step * math.log(beta1) + np.sum(a * np.expm1(c * step))))
    dev = array_api_compat.device(step)
    c_, a_ = (xp.asarray(x, dtype=step.dtype, device=dev) for x in (c, a))
    return xp.exp(step * math.log(beta1) + xp.sum(a_ * xp.expm1(c_ * step)))


def mu_product(beta1: float, psi: float, step: Any, mode: str) -> Any:
    r""":math:`\Pi_t`: from a table of running products (torch's float32 ones, or exact)
    where they matter, else the closed form (:func:`_series`)."""
    if isinstance(step, int):
        table = _products(beta1, psi, mode, _HOST_STEPS)
        if step <= len(table):
            return table[step - 1]
        return 0.0 if table[-1] < _TINY else _series(beta1, psi, step)
    xp = array_api_compat.array_namespace(step)
    exact = _series(beta1, psi, step, xp)
    if mode != "float32":
        return exact
    table = _products(beta1, psi, mode, _TRACED_STEPS)
    dev = array_api_compat.device(step)
    last = xp.asarray(len(table) - 1, dtype=xp.int32, device=dev)
    index = xp.minimum(xp.astype(step, xp.int32) - 1, last)
    values = xp.asarray(table, dtype=step.dtype, device=dev)
    tabled = xp.reshape(xp.take(values, xp.reshape(index, (1,))), ())
    return xp.where(step <= len(table), tabled, exact)


@dataclass(frozen=True)
class NAdamRule(Rule):
    decoupled_weight_decay: bool = False
    maximize: bool = False
    mu_product: str = "float32"
    corrected_moments: bool = False
    complex_mode: str | None = REAL_PAIRS

    hyperparameters = {
        "lr": v.non_negative,
        "betas": v.betas,
        "eps": v.non_negative,
        "weight_decay": v.non_negative,
        "momentum_decay": _momentum_decay,
        "eps_root": v.non_negative,
        "decoupled_weight_decay": v.flag,
        "maximize": v.flag,
        "mu_product": v.choice("float32", "exact"),
        "corrected_moments": v.flag,
        "complex_mode": v.choice(*COMPLEX_MODES),
    }
    flavors = {
        "torch": {},
        "optax": {"momentum_decay": None, "corrected_moments": True, "complex_mode": CONJUGATE},
        "keras": {
            "lr": 1e-3,
            "eps": 1e-7,
            "momentum_decay": 1.0,
            "decoupled_weight_decay": True,
            "mu_product": "exact",
            **NO_COMPLEX,
        },
    }

    def slots(self) -> dict[str, float]:
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        (beta1, beta2), psi, lr = hp["betas"], hp["momentum_decay"], hp["lr"]
        optax = self.corrected_moments
        if psi is None:  # constant momentum: the products are powers of beta1
            mu = mu_next = beta1
            bc_g, bc_m = correction(beta1, step, optax), correction(beta1, step + 1, optax)
        else:
            mu, mu_next = momentum_cache(beta1, psi, step), momentum_cache(beta1, psi, step + 1)
            product = mu_product(beta1, psi, step, self.mu_product)
            bc_g, bc_m = 1.0 - product, 1.0 - product * mu_next
        return {
            "lr": lr,
            "beta1": beta1,
            "beta2": beta2,
            "eps": hp["eps"],
            "eps_root": hp["eps_root"],
            "weight_decay": hp["weight_decay"],
            "bc2": correction(beta2, step, optax),
            "mu": mu,
            "mu_next": mu_next,
            "bc_g": bc_g,
            "bc_m": bc_m,
            "g_coef": lr * (1.0 - mu) / bc_g,
            "m_coef": lr * mu_next / bc_m,
        }

    def float32_lr(self, scalars: dict[str, Any]) -> dict[str, Any]:
        """torch with a float32 ``lr`` tensor: its step coefficients and decay factor are
        float32 tensors (each operand with a Python float rounded to float32 first)."""
        out, lr = dict(scalars), scalars["lr"]
        for key, numerator, denominator in (
            ("g_coef", 1.0 - scalars["mu"], scalars["bc_g"]),
            ("m_coef", scalars["mu_next"], scalars["bc_m"]),
        ):
            out[key] = float32(float32(lr * float32(numerator)) / float32(denominator))
        return _float32_decay(out, self.decoupled_weight_decay)

    def update(self, xp, p, g, state, s: Scalars, block):
        g = signed(g, self.maximize)
        if not self.decoupled_weight_decay:
            g = l2_penalty(g, p, s.weight_decay)
        optax = self.corrected_moments
        m, v_hat, new_state = adam_moments(xp, state, g, s, False, optax)
        if not optax:
            v_hat = v_hat / s.bc2
        denom = xp.sqrt(plus(v_hat, s.eps_root)) + s.eps
        if optax:  # optax: (m_hat / denom + wd * p) * -lr
            m_hat = s.mu_next * (m / s.bc_m) + (1.0 - s.mu) * (g / s.bc_g)
            u = m_hat / denom
            if self.decoupled_weight_decay:
                u = l2_penalty(u, p, s.weight_decay)
            return u * -s.lr, new_state
        delta = -(s.g_coef * g) / denom - (s.m_coef * m) / denom
        if self.decoupled_weight_decay:
            delta = decoupled_decay(p, s.lr, s.weight_decay) + delta
        return delta, new_state


class NAdam(Optimizer):
    r"""NAdam (torch.optim.NAdam semantics; optax and Keras through ``flavor=``).

    Args:
        params: parameters or param groups (see :class:`uniopt.Optimizer`).
        lr: learning rate :math:`\eta` (a number or a schedule).
        betas: decay rates :math:`(\beta_1, \beta_2)` of the moment estimates.
        eps: :math:`\epsilon` added to the denominator, outside the root.
        weight_decay: weight decay :math:`\lambda` (L2 unless decoupled).
        momentum_decay: :math:`\psi` of the momentum schedule; None: the constant
            momentum :math:`\beta_1` (optax).
        decoupled_weight_decay: decay the weights directly (NAdamW) instead of L2.
        maximize: maximize the objective instead of minimizing.
        eps_root: :math:`\bar\epsilon` added inside the root (optax's ``eps_root``).
        mu_product: the product of the momenta rounded to float32 every step as
            torch keeps it (``"float32"``) or exact (``"exact"``).
        corrected_moments: optax's order of the same arithmetic.
        complex_mode: complex parameters as independent real pairs (``"real_pairs"``,
            torch), with conjugate second moments (``"conjugate"``, optax), or refused
            (None).
        flavor: reproduce a framework's numerics and defaults (see :mod:`uniopt.flavors`).
        **options: options every optimizer takes (``grad_clip``, ``loss_scale``,
            ``apply_decay_param_fun``, ``lr_ratio`` ...; see :class:`uniopt.Optimizer`).
    """

    algorithm = "nadam"
    rule = NAdamRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(2e-3),
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = Default(1e-8),
        weight_decay: float = 0.0,
        momentum_decay: float | None = Default(4e-3),
        decoupled_weight_decay: bool = Default(False),
        maximize: bool = False,
        eps_root: float = 0.0,
        mu_product: str = Default("float32"),
        corrected_moments: bool = Default(False),
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


@dataclass(frozen=True)
class NAdamWRule(NAdamRule):
    flavors = {
        "torch": {"weight_decay": 0.0},
        "optax": {**NAdamRule.flavors["optax"], "weight_decay": 1e-4},
        "keras": {**NAdamRule.flavors["keras"], "weight_decay": 0.0},
    }


class NAdamW(NAdam):
    r"""NAdamW: NAdam with decoupled weight decay (``optax.nadamw``; torch.optim.NAdam
    with ``decoupled_weight_decay=True``).

    Same arguments as :class:`uniopt.NAdam`; ``weight_decay`` (default 1e-4, optax's:
    torch and Keras default to 0) is the decoupled decay :math:`\lambda`.
    """

    algorithm = "nadamw"
    rule = NAdamWRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(2e-3),
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = Default(1e-8),
        weight_decay: float = Default(1e-4),
        momentum_decay: float | None = Default(4e-3),
        decoupled_weight_decay: bool = True,
        maximize: bool = False,
        eps_root: float = 0.0,
        mu_product: str = Default("float32"),
        corrected_moments: bool = Default(False),
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


nadam = functional(NAdam)
nadamw = functional(NAdamW)
