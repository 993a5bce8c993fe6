"""Small pieces of update math that algorithms compose (never copy).

Each works on whole flat blocks and on Python-float or 0-d-array scalars alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import array_api_compat
import numpy as np

from uniopt.engine.layout import Block
from uniopt.norms import accumulator
from uniopt.rule import Scalars


def float32(x: float) -> float:
    """A host number rounded to the nearest float32 (a framework's float32 scalar)."""
    return float(np.float32(x))


def signed(g: Any, maximize: bool) -> Any:
    """The descent direction's gradient: ``-g`` when maximizing."""
    return -g if maximize else g


def l2_penalty(g: Any, p: Any, weight_decay: Any) -> Any:
    """L2 regularization folded into the gradient: ``g + wd * p``."""
    if isinstance(weight_decay, float) and weight_decay == 0.0:
        return g
    return g + weight_decay * p


def decoupled_decay(p: Any, lr: Any, weight_decay: Any) -> Any:
    """Decoupled weight decay as a delta (Loshchilov & Hutter, 2019): ``-lr * wd * p``."""
    return -(lr * weight_decay) * p


def ema(average: Any, x: Any, beta: Any) -> Any:
    """Exponential moving average ``beta * average + (1 - beta) * x``."""
    return beta * average + (1.0 - beta) * x


def ema_optax(average: Any, x: Any, beta: Any) -> Any:
    """:func:`ema` summed in optax's order, ``(1 - beta) * x + beta * average``
    (``update_moment``): where a compiler fuses a multiply and an add (XLA on CPU
    does), the order of the terms decides the rounding."""
    return (1.0 - beta) * x + beta * average


def is_complex(x: Any) -> bool:
    """Whether ``x`` holds complex numbers, told by its dtype's name: the same on every
    library's arrays, on tracers and on the plan recorder's stand-ins, with no call
    into a namespace."""
    return "complex" in str(x.dtype)


def abs_sq(xp: Any, x: Any) -> Any:
    r"""The squared magnitude :math:`|x|^2 = \operatorname{Re}(\bar x\, x)`, real (optax's
    ``numerics.abs_sq``); ``x * x`` for real ``x``."""
    return xp.real(xp.conj(x) * x) if is_complex(x) else x * x


def real_part(xp: Any, x: Any) -> Any:
    r"""A second-moment slot as the real number it holds: :math:`\operatorname{Re}(x)`
    of a complex slot (with ``complex_mode="conjugate"`` such slots keep the parameters'
    complex dtype, imaginary part 0, as optax's state), ``x`` itself when real."""
    return xp.real(x) if is_complex(x) else x


def like_slot(xp: Any, value: Any, slot: Any) -> Any:
    """A real ``value`` in the dtype of state ``slot`` (complex for a complex slot)."""
    return xp.astype(value, slot.dtype) if is_complex(slot) and not is_complex(value) else value


def beta_power(beta: float, step: Any, mode: str | None) -> Any:
    """``beta^t``: exactly (``None``), or as the running product some frameworks keep in
    state instead of a step count: in float64 (``"running"``, Paddle) or rounded to
    float32 after every multiplication (``"float32"``, MindSpore). Running products need
    a host step (Python int); traced steps use the power."""
    if mode is None or not isinstance(step, int):
        return beta**step
    return _running_power(beta, mode, step)


class _Running:
    """One beta's running products: the first :data:`_TABLE_STEPS` in a table (grown on
    demand), later ones walked from a few remembered (step, value) cursors."""

    __slots__ = ("beta", "round", "table", "cursors")

    def __init__(self, beta: float, mode: str):
        self.beta = beta
        self.round = (lambda x: float(np.float32(x))) if mode == "float32" else float
        self.table = [1.0]
        self.cursors: list[tuple[int, float]] = []

    def at(self, step: int) -> float:
        beta, round_, table = self.beta, self.round, self.table
        while len(table) <= min(step, _TABLE_STEPS):
            table.append(round_(table[-1] * beta))
        if step < len(table):
            return table[step]
        at, value = max(
            (c for c in self.cursors if c[0] <= step), default=(len(table) - 1, table[-1])
        )
        if step - at > _MAX_WALK:  # a far jump (a loaded step): the power itself
            value = round_(beta**step)
        else:
            for _ in range(step - at):
                if value == 0.0:  # underflowed: zero from here on
                    break
                value = round_(value * beta)
        self.cursors = [*self.cursors[-3:], (step, value)]
        return value


#: running products kept exactly for the first steps (a table of at most this many
#: floats per beta), and walked at most this far from the nearest remembered step;
#: further jumps (a loaded step count of 10**12) take ``beta**t`` rounded as the mode
#: rounds, which differs from the framework's running product in the last bits
_TABLE_STEPS = 2**14
_MAX_WALK = 2**16
_RUNNING: dict[tuple[float, str], _Running] = {}
_RUNNING_BETAS = 32  #: the most betas remembered (the oldest used is dropped)


def _running_power(beta: float, mode: str, step: int) -> float:
    key = (beta, mode)
    running = _RUNNING.pop(key, None) or _Running(beta, mode)
    _RUNNING[key] = running  # last: the most recently used
    if len(_RUNNING) > _RUNNING_BETAS:
        del _RUNNING[next(iter(_RUNNING))]
    return running.at(step)


def bias_correction(beta: float, step: Any, powers: str | None = None, optax: bool = False) -> Any:
    r"""The bias correction :math:`1 - \beta^t`.

    With a Python-int step (the stateful faces) it is formed in float64 on the host,
    from :func:`beta_power` (the exact power, or the running product Paddle and
    MindSpore keep). With a traced step (a 0-d array of the parameters' real dtype, at
    least float32: the functional face, under ``jax.jit`` or ``torch.compile``) it is

    .. math:: 1 - \beta^t = -\operatorname{expm1}(t \ln \beta),

    accurate to about an ulp of that dtype, where ``1 - beta**t`` in float32 loses the
    leading bits that cancel (6.8e-6 relative after one step at
    :math:`\beta = 0.999`). With ``optax`` (``corrected_moments``, the optax flavor)
    it is optax's own arithmetic instead, ``1 - beta**t`` with ``t`` in the
    namespace's default float dtype (optax's ``decay**count``), so that a jitted step
    stays equal to optax's.
    """
    if isinstance(step, int):
        return 1.0 - beta_power(beta, step, powers)
    xp = array_api_compat.array_namespace(step)
    if optax:
        return 1.0 - beta ** xp.astype(step, xp.asarray(0.0).dtype)
    if beta == 0.0:
        return 1.0
    return -xp.expm1(step * math.log(beta))


def bias_corrections(
    beta1: float, beta2: float, step: Any, enabled: bool, powers: str | None = None
) -> tuple[Any, Any]:
    """``(1 - beta1^t, sqrt(1 - beta2^t))`` (:func:`bias_correction`), or ``(1, 1)``
    without bias correction."""
    if not enabled:
        return 1.0, 1.0
    return bias_correction(beta1, step, powers), bias_correction(beta2, step, powers) ** 0.5


def adam_moments(
    xp: Any,
    state: Mapping[str, Any],
    g: Any,
    s: Scalars,
    amsgrad: bool,
    corrected: bool = False,
) -> tuple[Any, Any, dict[str, Any]]:
    r"""Adam's moment estimates (Kingma & Ba, 2015), with the AMSGrad maximum
    (Reddi et al., 2018) when asked:

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) |g_t|^2, \qquad
        \hat v_t = \max(\hat v_{t-1}, v_t)

    With ``corrected`` (optax) the averages are summed in optax's order
    (:func:`ema_optax`), the second moment used is the bias-corrected
    :math:`v_t / (1 - \beta_2^t)`, and AMSGrad keeps the running maximum of that
    (``optax.amsgrad``) rather than of :math:`v_t` (torch). For a complex gradient
    (``complex_mode="conjugate"``) :math:`|g|^2 = \operatorname{Re}(\bar g g)` is
    real, :math:`m` stays complex, and the second-moment slots keep the parameters'
    complex dtype with imaginary part 0, as optax's state does.

    Returns ``(m, v_used, new_state)``.
    """
    average = ema_optax if corrected else ema
    m = average(state["exp_avg"], g, s.beta1)
    v = average(real_part(xp, state["exp_avg_sq"]), abs_sq(xp, g), s.beta2)
    new_state = {"exp_avg": m, "exp_avg_sq": like_slot(xp, v, state["exp_avg_sq"])}
    used = v / s.bc2 if corrected else v
    if not amsgrad:
        return m, used, new_state
    v_max = xp.maximum(real_part(xp, state["max_exp_avg_sq"]), used)
    new_state["max_exp_avg_sq"] = like_slot(xp, v_max, state["max_exp_avg_sq"])
    return m, v_max, new_state


def adam_step(xp: Any, m: Any, v: Any, s: Scalars, eps_hat: bool = False) -> Any:
    """The bias-corrected Adam step ``lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)``, or with
    ``eps_hat`` (Keras, MindSpore) ``lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)``."""
    if eps_hat:
        return s.hat_step_size * m / (xp.sqrt(v) + s.eps)
    return s.step_size * m / (xp.sqrt(v) / s.bc2_sqrt + s.eps)


def adam_direction(xp: Any, m: Any, v_hat: Any, s: Scalars) -> Any:
    r"""optax's ``scale_by_adam`` direction (before the learning rate), from the
    bias-corrected second moment ``v_hat`` (:func:`adam_moments` with ``corrected``):

    .. math:: u_t = \frac{m_t / (1 - \beta_1^t)}{\sqrt{\hat v_t} + \epsilon}
    """
    return (m / s.bc1) / (xp.sqrt(v_hat) + s.eps)


def adam_scalars(
    hp: Mapping[str, Any],
    step: Any,
    bias_correction_on: bool,
    powers: str | None = None,
    *,
    mu: bool = True,
    nu: bool = True,
    optax: bool = False,
) -> dict[str, Any]:
    """Per-step scalars of the Adam family: ``bc1 = 1 - beta1^t`` and ``bc2 = 1 -
    beta2^t`` (:func:`bias_correction`; 1 where ``bias_correction_on`` is off, or
    ``mu`` / ``nu`` for the first / second moment, optax.amsgrad's switches)."""
    beta1, beta2 = hp["betas"]
    bc1 = bias_correction(beta1, step, powers, optax) if bias_correction_on and mu else 1.0
    bc2 = bias_correction(beta2, step, powers, optax) if bias_correction_on and nu else 1.0
    bc2_sqrt = bc2**0.5
    return {
        "lr": hp["lr"],
        "beta1": beta1,
        "beta2": beta2,
        "eps": hp["eps"],
        "weight_decay": hp["weight_decay"],
        "bc1": bc1,
        "bc2": bc2,
        "step_size": hp["lr"] / bc1,
        "bc2_sqrt": bc2_sqrt,
        "hat_step_size": hp["lr"] * bc2_sqrt / bc1,
    }


def tensor_norms(xp: Any, x: Any, block: Block) -> Any:
    """The L2 norm of each tensor of the block (one value per tensor).

    Float16 and bfloat16 values are squared and summed in float32 (a float16 sum of
    squares overflows past 65504: 70k values of 1.0), and the norms are rounded back to
    ``x``'s dtype, as ``torch.linalg.vector_norm`` returns them. Float32 and float64
    norms are ``sqrt(sum(x * x))`` in their dtype.
    """
    wide = accumulator(xp, x.dtype)
    if wide is None:
        return xp.sqrt(block.tensor_sums(xp, abs_sq(xp, x)))
    values = xp.astype(x, wide)
    norms = xp.sqrt(block.tensor_sums(xp, values * values))
    return xp.astype(norms, x.dtype)


def safe_ratio(xp: Any, numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator`` per tensor, and 1 where either is 0 (trust ratios)."""
    ones = xp.ones_like(numerator)
    both = (numerator > 0) & (denominator > 0)
    return xp.where(both, numerator / xp.where(denominator > 0, denominator, ones), ones)


def gate(xp: Any, condition: Any, per_tensor: Any) -> Any:
    """``per_tensor`` where ``condition`` holds, else ones (``condition`` a Python bool or
    a traced 0-d boolean array)."""
    if isinstance(condition, bool):
        return per_tensor if condition else xp.ones_like(per_tensor)
    return xp.where(condition, per_tensor, xp.ones_like(per_tensor))
