"""Step-wise and smooth decays: constant, step, multistep, exponential, inverse time,
natural exponential, polynomial, linear, piecewise, Noam.

Convention for every factory here: the first argument is the absolute base learning
rate (except :func:`piecewise_decay`, whose values are absolute), and the returned
``schedule(step)`` takes the number of completed optimizer steps (0 for the first).
Rates, factors and values are finite and >= 0, counts are integers; anything else
raises ``ValueError`` (``TypeError`` for a wrong type) naming the factory and the
argument.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

from uniopt.schedules import _checks as check
from uniopt.schedules._backend import prepare

Schedule = Callable[[Any], Any]


@check.factory
def constant(base_lr: float, factor: float = 1.0, total_iters: int = 0) -> Schedule:
    r"""Constant learning rate, optionally scaled by ``factor`` for the first steps.

    $$\eta_t = \eta_0 \cdot \begin{cases} f & t < T \\ 1 & t \ge T \end{cases}$$

    With the defaults this is simply ``base_lr``. ``factor``/``total_iters`` give
    torch ``ConstantLR``. ``base_lr >= 0``, ``factor`` in [0, 1], ``total_iters >= 0``.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    factor = check.in_range("factor", factor, 0.0, 1.0)
    total_iters = check.integer("total_iters", total_iters, 0)
    low = base_lr * factor

    def schedule(step: Any) -> Any:
        m, _ = prepare(step, "constant")
        return m.result(m.where(m.before(total_iters), low, base_lr))

    return schedule


@check.factory
def step_decay(base_lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    r"""Decay by ``gamma`` every ``step_size`` steps (torch/OneFlow ``StepLR``).

    $$\eta_t = \eta_0 \, \gamma^{\lfloor t / s \rfloor}$$

    ``base_lr >= 0``, integer ``step_size >= 1``, ``gamma > 0``. The number of decays
    $\lfloor t / s \rfloor$ is an exact integer division of an integer step.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    step_size = check.integer("step_size", step_size, 1)
    gamma = check.positive("gamma", gamma)

    def schedule(step: Any) -> Any:
        m, _ = prepare(step, "step_decay")
        decays, _ = m.divmod(step_size)
        return m.result(base_lr * m.pow(gamma, decays))

    return schedule


@check.factory
def multistep_decay(base_lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    r"""Decay by ``gamma`` at each milestone (torch/OneFlow ``MultiStepLR``).

    $$\eta_t = \eta_0 \, \gamma^{\#\{i : m_i \le t\}}$$

    ``milestones`` must be strictly increasing non-negative integers; ``base_lr >= 0``,
    ``gamma > 0``.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    milestones = check.increasing("milestones", milestones)
    gamma = check.positive("gamma", gamma)

    def schedule(step: Any) -> Any:
        m, _ = prepare(step, "multistep_decay")
        passed = 0.0
        for milestone in milestones:
            passed = passed + (1.0 - m.indicator(m.before(milestone)))
        return m.result(base_lr * m.pow(gamma, passed))

    return schedule


@check.factory
def exponential_decay(base_lr: float, gamma: float) -> Schedule:
    r"""Multiply by ``gamma`` every step (torch/OneFlow ``ExponentialLR``).

    $$\eta_t = \eta_0 \, \gamma^{t}$$

    ``base_lr >= 0``, ``gamma > 0`` (``gamma > 1`` grows the rate; a step where it
    overflows float64 raises ``ValueError``).
    """
    base_lr = check.non_negative("base_lr", base_lr)
    gamma = check.positive("gamma", gamma)

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "exponential_decay")
        return m.result(base_lr * m.pow(gamma, t))

    return schedule


@check.factory
def inverse_time_decay(base_lr: float, gamma: float) -> Schedule:
    r"""Inverse time decay (Paddle ``InverseTimeDecay``).

    $$\eta_t = \frac{\eta_0}{1 + \gamma t}$$

    ``base_lr >= 0``, ``gamma > 0``.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    gamma = check.positive("gamma", gamma)

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "inverse_time_decay")
        return m.result(base_lr / (1.0 + gamma * t))

    return schedule


@check.factory
def natural_exp_decay(base_lr: float, gamma: float) -> Schedule:
    r"""Natural exponential decay (Paddle ``NaturalExpDecay``).

    $$\eta_t = \eta_0 \, e^{-\gamma t}$$

    ``base_lr >= 0``, ``gamma > 0``.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    gamma = check.positive("gamma", gamma)

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "natural_exp_decay")
        return m.result(base_lr * m.exp(-gamma * t))

    return schedule


@check.factory
def polynomial_decay(
    base_lr: float,
    decay_steps: int,
    end_lr: float = 0.0001,
    power: float = 1.0,
    cycle: bool = False,
) -> Schedule:
    r"""Polynomial decay from ``base_lr`` to ``end_lr`` (OneFlow ``PolynomialLR``,
    Paddle ``PolynomialDecay``, TF ``polynomial_decay``).

    Without ``cycle`` the step is capped at ``decay_steps`` (``end_lr`` is held after):

    $$\eta_t = (\eta_0 - \eta_{end})\left(1 - \frac{\min(t, D)}{D}\right)^{p} + \eta_{end}$$

    With ``cycle`` the horizon grows to the next multiple of ``D``:

    $$D_t = D \cdot \max\left(1, \left\lceil t / D \right\rceil\right), \qquad
      \eta_t = (\eta_0 - \eta_{end})\left(1 - \frac{t}{D_t}\right)^{p} + \eta_{end}$$

    At ``t = 0`` the ceiling is 0; like Paddle and TensorFlow we use a multiplier of 1
    there, so ``lr(0) = base_lr`` (OneFlow's code evaluates step 0 as step 1 instead).
    With ``end_lr=0`` this is torch ``PolynomialLR(total_iters=D, power=p)``.
    ``base_lr >= 0``, ``end_lr >= 0`` (above ``base_lr`` the rate rises to it), integer
    ``decay_steps >= 1``, ``power >= 0``, ``cycle`` a bool.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    decay_steps = check.integer("decay_steps", decay_steps, 1)
    end_lr = check.non_negative("end_lr", end_lr)
    power = check.non_negative("power", power)
    cycle = check.flag("cycle", cycle)
    span = base_lr - end_lr

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "polynomial_decay")
        if cycle:
            whole, rest = m.divmod(decay_steps)  # ceil(t / D) = whole + (rest > 0), exactly
            periods = whole + m.indicator(rest > 0)
            horizon = decay_steps * m.clip(periods, min=1.0)
            frac = t / horizon
        else:
            frac = m.clip(t, max=float(decay_steps)) / decay_steps
        return m.result(span * (1.0 - frac) ** power + end_lr)

    return schedule


@check.factory
def linear(
    base_lr: float,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
    total_iters: int = 5,
) -> Schedule:
    r"""Linear change of a multiplicative factor (torch/OneFlow ``LinearLR``).

    $$\eta_t = \eta_0 \left(f_s + (f_e - f_s)\frac{\min(t, T)}{T}\right)$$

    ``base_lr >= 0``, both factors >= 0 and ``total_iters >= 1``. torch also demands
    ``0 < start_factor <= 1`` and ``end_factor <= 1`` because its recursive form divides
    by the previous factor; the closed form does not need that, so a warmup may start
    from 0 (as OneFlow's ``WarmupLR(warmup_factor=0)`` does).
    """
    base_lr = check.non_negative("base_lr", base_lr)
    start_factor = check.non_negative("start_factor", start_factor)
    end_factor = check.non_negative("end_factor", end_factor)
    total_iters = check.integer("total_iters", total_iters, 1)
    slope = end_factor - start_factor

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "linear")
        done = m.clip(t, max=float(total_iters))
        return m.result(base_lr * (start_factor + slope * done / total_iters))

    return schedule


@check.factory
def piecewise_decay(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    r"""Piecewise constant with absolute values (Paddle ``PiecewiseDecay``).

    $$\eta_t = v_i \quad\text{for}\quad b_{i-1} \le t < b_i,
      \qquad b_{-1} = -\infty,\ b_n = \infty$$

    ``len(values)`` must be ``len(boundaries) + 1``. Example: boundaries ``[2, 4, 6, 8]``
    and values ``[0.2, 0.4, 0.6, 0.8, 1.0]`` give 0.2, 0.2, 0.4, 0.4, ..., 1.0, 1.0 for
    steps 0, 1, 2, 3, ..., 8, 9. There is no base learning rate: ``values`` are the
    learning rates (optax's ``piecewise_constant_schedule`` takes scales instead), each
    >= 0; ``boundaries`` are strictly increasing integers >= 0.
    """
    boundaries = check.increasing("boundaries", boundaries)
    values = [
        check.non_negative(f"values[{i}]", v)
        for i, v in enumerate(check.sequence("values", values, "numbers"))
    ]
    if len(values) != len(boundaries) + 1:
        check.fail(
            "values",
            values,
            f"it must have one entry more than boundaries ({len(boundaries)} entries)",
        )

    def schedule(step: Any) -> Any:
        m, _ = prepare(step, "piecewise_decay")
        lr = values[-1]
        for boundary, value in zip(reversed(boundaries), reversed(values[:-1]), strict=True):
            lr = m.where(m.before(boundary), value, lr)
        return m.result(lr)

    return schedule


@check.factory
def noam(base_lr: float, d_model: int, warmup_steps: int) -> Schedule:
    r"""Noam schedule of "Attention Is All You Need" (Paddle ``NoamDecay``).

    $$\eta_t = \eta_0 \, d_{model}^{-0.5} \min\left(t^{-0.5},\ t \cdot w^{-1.5}\right)$$

    ``base_lr`` is the overall scale (Paddle's ``learning_rate``, usually 1.0). As in
    Paddle the step is used as is, so ``lr(0) = 0`` (the ``t^{-0.5}`` term is taken
    as 1 at ``t = 0``). ``base_lr >= 0``, integers ``d_model >= 1``,
    ``warmup_steps >= 1``.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    d_model = check.integer("d_model", d_model, 1)
    warmup_steps = check.integer("warmup_steps", warmup_steps, 1)
    scale = base_lr * d_model**-0.5
    ramp = warmup_steps**-1.5

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "noam")
        decay = m.clip(t, min=1.0) ** -0.5
        warm = t * ramp
        return m.result(scale * m.where(warm < decay, warm, decay))

    return schedule


@check.factory
def lambda_schedule(base_lr: float, lr_lambda: Callable[[Any], Any]) -> Schedule:
    r"""A user factor times the base rate (torch/OneFlow ``LambdaLR``).

    $$\eta_t = \eta_0 \cdot \lambda(t)$$

    ``lr_lambda`` receives the step as given for Python numbers (an ``int`` stays an
    ``int``), and as a floating array for array steps; it must then use array
    operations only if the schedule is to be traced (``jax.jit``). ``base_lr >= 0``; a
    factor that makes the rate negative or not finite raises ``ValueError`` where the
    rate can be read (not under a tracer).
    """
    base_lr = check.non_negative("base_lr", base_lr)
    lr_lambda = check.callable_("lr_lambda", lr_lambda)

    def schedule(step: Any) -> Any:
        m, t = prepare(step, "lambda_schedule")
        factor = lr_lambda(t if m.is_array else step)
        if m.is_array and not isinstance(factor, numbers.Real):
            factor = m.xp.astype(factor, m.dtype)  # e.g. an integer array from t // 30
        return m.result(base_lr * factor)

    return schedule


@check.factory
def multiplicative(base_lr: float, lr_lambda: Callable[[int], float]) -> Schedule:
    r"""Running product of user factors (torch ``MultiplicativeLR``).

    $$\eta_0 = \eta_{base}, \qquad \eta_t = \eta_{t-1} \cdot \lambda(t)$$

    ``lr_lambda`` is called with Python ints ``1..t`` and the product is evaluated in
    that order (bit-identical to torch's recursion). The last ``(t, lr)`` is cached so
    stepping forward one step at a time costs one call. Array steps must be concrete
    (numpy, torch, eager jax, array_api_strict): this schedule cannot be traced under
    ``jax.jit`` because the product has a data-dependent number of factors.
    """
    base_lr = check.non_negative("base_lr", base_lr)
    lr_lambda = check.callable_("lr_lambda", lr_lambda)
    last = [0, base_lr]  # (t, lr) of the last evaluation

    def value(n: int) -> float:
        t0, lr = last if n >= last[0] else (0, base_lr)
        for k in range(t0 + 1, n + 1):
            lr = lr * float(lr_lambda(k))
        last[:] = [max(n, 0), lr]
        return lr

    def schedule(step: Any) -> Any:
        m, _ = prepare(step, "multiplicative")
        if not m.is_array:
            return m.result(value(m.step))
        try:
            n = int(m.step)
        except Exception as exc:  # jax tracer, or not a single number
            raise TypeError(
                "multiplicative needs a concrete scalar step; it cannot be traced "
                "(e.g. under jax.jit). Use lambda_schedule with a closed form instead."
            ) from exc
        return m.result(value(n))

    return schedule
