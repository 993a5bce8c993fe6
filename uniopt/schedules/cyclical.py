"""Cyclical schedules: one-cycle (Smith & Topin 2017, "Super-Convergence") and cyclical
learning rates (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"),
following torch's ``OneCycleLR`` and ``CyclicLR``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from uniopt.schedules import _checks as check
from uniopt.schedules._backend import prepare

Schedule = Callable[[Any], Any]

ANNEAL_STRATEGIES = ("cos", "linear")
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _anneal(m: Any, strategy: str, start: float, end: float, pct: Any) -> Any:
    """torch ``OneCycleLR._annealing_cos`` / ``_annealing_linear``."""
    if strategy == "cos":
        return end + (start - end) / 2.0 * (m.cos(math.pi * pct) + 1.0)
    return (end - start) * pct + start


def _phases(total_steps: int, pct_start: float, three_phase: bool) -> list[float]:
    """End step of each phase, as torch computes them."""
    ends = [float(pct_start * total_steps) - 1]
    if three_phase:
        ends.append(float(2 * pct_start * total_steps) - 2)
    ends.append(float(total_steps - 1))
    return ends


def _piecewise_anneal(
    owner: str, ends: Sequence[float], values: Sequence[float], strategy: str
) -> Schedule:
    """Anneal ``values[i] -> values[i+1]`` over phase ``i`` (steps ``ends[i-1]..ends[i]``).

    A step belongs to the first phase whose end it does not exceed (torch's rule); the
    last phase also takes every later step and holds its end value there.
    """
    starts = [0.0, *ends[:-1]]
    spans = [e - s for s, e in zip(starts, ends, strict=True)]
    last = len(ends) - 1

    # for a whole step t, t <= end <=> t < floor(end) + 1 (compared exactly by m.before)
    bounds = [math.floor(e) + 1 for e in ends]

    def schedule(step: Any) -> Any:
        m, t = prepare(step, owner)
        # last phase: pct clipped to 1 (hold), and 1 outright if the phase is empty
        pct = m.clip((t - starts[last]) / spans[last], max=1.0) if spans[last] > 0 else 1.0
        lr = _anneal(m, strategy, values[last], values[last + 1], pct)
        for i in reversed(range(last)):
            pct = (t - starts[i]) / spans[i] if spans[i] > 0 else 0.0  # empty: never chosen
            lr = m.where(
                m.before(bounds[i]), _anneal(m, strategy, values[i], values[i + 1], pct), lr
            )
        return m.result(lr)

    return schedule


def _one_cycle_args(total_steps: Any, pct_start: Any, anneal_strategy: Any) -> tuple:
    total_steps = check.integer("total_steps", total_steps, 1)
    pct_start = check.in_range("pct_start", pct_start, 0.0, 1.0)
    anneal_strategy = check.choice("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
    return total_steps, pct_start, anneal_strategy


@check.factory
def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""One-cycle policy (torch ``OneCycleLR``).

    With $\eta_{init} = \eta_{max}/\text{div\_factor}$ and
    $\eta_{end} = \eta_{init}/\text{final\_div\_factor}$, the rate anneals
    $\eta_{init} \to \eta_{max}$ over steps $[0, p T - 1]$, then
    $\eta_{max} \to \eta_{end}$ until step $T - 1$. With ``three_phase`` it goes
    $\eta_{init} \to \eta_{max} \to \eta_{init}$ (steps $p T - 1$, $2 p T - 2$) and then
    $\eta_{init} \to \eta_{end}$. Each phase from $a$ to $b$ over $[s, e]$ uses

    $$\text{cos:}\ \ b + \frac{a - b}{2}\left(1 + \cos \pi\frac{t - s}{e - s}\right)
      \qquad \text{linear:}\ \ a + (b - a)\frac{t - s}{e - s}$$

    Past ``total_steps - 1`` this pure schedule holds $\eta_{end}$ (torch's scheduler
    raises after ``total_steps``; :class:`uniopt.lr_scheduler.OneCycleLR` does too).
    The first argument is the peak rate, not the starting one.

    ``max_lr >= 0``, integer ``total_steps >= 1``, ``pct_start`` in [0, 1],
    ``anneal_strategy`` ``"cos"`` or ``"linear"``, ``div_factor > 0``,
    ``final_div_factor > 0``, ``three_phase`` a bool.
    """
    max_lr = check.non_negative("max_lr", max_lr)
    total_steps, pct_start, anneal_strategy = _one_cycle_args(
        total_steps, pct_start, anneal_strategy
    )
    div_factor = check.positive("div_factor", div_factor)
    final_div_factor = check.positive("final_div_factor", final_div_factor)
    three_phase = check.flag("three_phase", three_phase)
    initial = max_lr / div_factor
    final = initial / final_div_factor
    values = [initial, max_lr, initial, final] if three_phase else [initial, max_lr, final]
    ends = _phases(total_steps, pct_start, three_phase)
    return _piecewise_anneal("one_cycle", ends, values, anneal_strategy)


@check.factory
def one_cycle_momentum(
    total_steps: int,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
) -> Schedule:
    r"""The momentum (or Adam $\beta_1$) that torch ``OneCycleLR`` cycles with the rate:
    inverse to it, $m_{max} \to m_{base} \to m_{max}$ (three-phase:
    $m_{max} \to m_{base} \to m_{max}$, then held at $m_{max}$), same phases and annealing
    as :func:`one_cycle`. ``0 <= base_momentum <= max_momentum``."""
    total_steps, pct_start, anneal_strategy = _one_cycle_args(
        total_steps, pct_start, anneal_strategy
    )
    base_momentum = check.non_negative("base_momentum", base_momentum)
    max_momentum = check.non_negative("max_momentum", max_momentum)
    check.at_least("max_momentum", max_momentum, "base_momentum", base_momentum)
    three_phase = check.flag("three_phase", three_phase)
    hi, lo = max_momentum, base_momentum
    values = [hi, lo, hi, hi] if three_phase else [hi, lo, hi]
    ends = _phases(total_steps, pct_start, three_phase)
    return _piecewise_anneal("one_cycle_momentum", ends, values, anneal_strategy)


@check.factory
def cyclic(
    base_lr: float,
    max_lr: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
) -> Schedule:
    r"""Cyclical learning rate (torch ``CyclicLR``).

    With $L = u + d$ (steps up + down), $c = \lfloor 1 + t/L \rfloor$ and
    $x = 1 + t/L - c$:

    $$s = \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases},\ r = u/L,
      \qquad \eta_t = \eta_{base} + (\eta_{max} - \eta_{base})\, s\, g$$

    where $g = 1$ (``triangular``), $g = 2^{-(c-1)}$ (``triangular2``) or
    $g = \gamma^{t}$ (``exp_range``), or ``scale_fn(c)`` / ``scale_fn(t)`` for a custom
    ``scale_fn`` with ``scale_mode`` ``"cycle"`` / ``"iterations"`` (it receives an
    ``int`` on the Python path and a float array on the array path).

    ``0 <= base_lr <= max_lr``, integers ``step_size_up >= 1`` and ``step_size_down >= 1``
    (``None``: equal to ``step_size_up``), ``mode`` one of ``"triangular"``,
    ``"triangular2"``, ``"exp_range"``, ``gamma`` in (0, 1] (the amplitude never grows
    past ``max_lr``), ``scale_mode`` ``"cycle"`` or ``"iterations"``. The cycle and the
    position in it are an exact integer division of an integer step (no precision is
    lost at large steps, even in float32). The momentum torch's ``CyclicLR`` cycles is
    the same curve from ``max_momentum`` down to ``base_momentum``
    (:class:`uniopt.lr_scheduler.CyclicLR` does that).
    """
    base_lr = check.non_negative("base_lr", base_lr)
    max_lr = check.non_negative("max_lr", max_lr)
    check.at_least("max_lr", max_lr, "base_lr", base_lr)
    up = check.integer("step_size_up", step_size_up, 1)
    down = up if step_size_down is None else check.integer("step_size_down", step_size_down, 1)
    mode = check.choice("mode", mode, CYCLIC_MODES)
    if not 0.0 < check.real("gamma", gamma) <= 1.0:
        check.fail("gamma", gamma, "it must be in (0, 1]")
    gamma = float(gamma)
    scale_mode = check.choice("scale_mode", scale_mode, ("cycle", "iterations"))
    if scale_fn is not None:
        check.callable_("scale_fn", scale_fn)
    scale_mode = scale_mode_of(mode, scale_fn, scale_mode)
    return cycle_between("cyclic", base_lr, max_lr, up, down, mode, gamma, scale_fn, scale_mode)


def scale_mode_of(mode: str, scale_fn: Callable[[Any], Any] | None, scale_mode: str) -> str:
    """What the scale is a function of: ``scale_mode`` for a custom ``scale_fn``, else
    the iteration for ``exp_range`` and the cycle for the triangular modes (torch)."""
    if scale_fn is not None:
        return scale_mode
    return "iterations" if mode == "exp_range" else "cycle"


def cycle_between(
    owner: str,
    start: float,
    turn: float,
    up: int,
    down: int,
    mode: str,
    gamma: float,
    scale_fn: Callable[[Any], Any] | None,
    scale_mode: str,
) -> Schedule:
    """The curve of :func:`cyclic` from ``start`` towards ``turn`` and back, arguments
    already checked (``turn < start`` gives torch's cycled momentum)."""
    total = up + down
    ratio = up / total
    height = turn - start

    def scale(m: Any, x: Any) -> Any:
        if scale_fn is not None:
            return scale_fn(m.index(x))
        if mode == "triangular":
            return 1.0
        if mode == "triangular2":
            return m.pow(0.5, x - 1.0)  # torch's 1 / 2 ** (x - 1), without its overflow
        return m.pow(gamma, x)

    def schedule(step: Any) -> Any:
        m, t = prepare(step, owner)
        done, rest = m.divmod(total)  # exact for an integer step
        cycle = done + 1.0
        x = rest / total
        factor = m.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
        g = scale(m, cycle if scale_mode == "cycle" else t)
        return m.result(start + height * factor * g)

    return schedule
