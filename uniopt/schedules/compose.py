"""Combining schedules: one after another (:func:`join`), multiplied (:func:`chain`), and
behind a linear warmup (:func:`linear_warmup`)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

from uniopt.schedules import _checks as check
from uniopt.schedules._backend import prepare

Schedule = Callable[[Any], Any]


def _schedules(name: str, schedules: Any) -> list[Schedule]:
    schedules = check.sequence(name, schedules, "schedules")
    if not schedules:
        check.fail(name, schedules, "it must not be empty")
    return [check.callable_(f"{name}[{i}]", s) for i, s in enumerate(schedules)]


@check.factory
def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""Run ``schedules[i]`` from ``boundaries[i-1]`` on, restarted at its own step 0
    (optax ``join_schedules``; torch ``SequentialLR`` with milestones = boundaries).

    $$\eta_t = s_i(t - b_{i-1}) \quad\text{for}\quad b_{i-1} \le t < b_i \qquad (b_{-1} = 0)$$

    ``boundaries`` are strictly increasing integers >= 0, one fewer than ``schedules``
    (callables). Each schedule gets its step in the step's own type: an ``int`` on the
    Python path (only the active schedule is called), an array of the step's dtype on
    the array path (every schedule is evaluated, at ``max(t - b, 0)``, and the right
    one is selected with ``where``).
    """
    schedules = _schedules("schedules", schedules)
    boundaries = check.increasing("boundaries", boundaries)
    if len(boundaries) != len(schedules) - 1:
        check.fail(
            "boundaries",
            boundaries,
            f"it must have one entry fewer than schedules ({len(schedules)} entries)",
        )

    def schedule(step: Any) -> Any:
        m, _ = prepare(step, "join")
        if not m.is_array:
            i = bisect.bisect_right(boundaries, m.step)
            return m.result(schedules[i](m.shift(boundaries[i - 1]) if i else m.step))
        lr = schedules[0](m.step)
        for boundary, later in zip(boundaries, schedules[1:], strict=True):
            lr = m.where(m.before(boundary), lr, later(m.shift(boundary)))
        return m.result(lr)

    return schedule


@check.factory
def chain(schedules: Sequence[Schedule]) -> Schedule:
    r"""Pointwise product of schedules (the composition of torch ``ChainedScheduler``).

    $$\eta_t = \prod_i s_i(t)$$

    Give one schedule the base rate and the others ``base_lr=1.0`` so that they act as
    multiplicative factors, e.g. ``chain([exponential_decay(0.1, 0.99),
    constant(1.0, factor=0.1, total_iters=20)])``. ``schedules`` is a non-empty list of
    callables; each gets the step as checked (an ``int``, or the array as given).
    """
    schedules = _schedules("schedules", schedules)

    def schedule(step: Any) -> Any:
        m, _ = prepare(step, "chain")
        lr = schedules[0](m.step)
        for other in schedules[1:]:
            lr = lr * other(m.step)
        return m.result(lr)

    return schedule


@check.factory
def linear_warmup(schedule: Schedule, warmup_steps: int, start_value: float = 0.0) -> Schedule:
    r"""Linear warmup in front of ``schedule``, which then runs from its own step 0.

    $$\eta_t = \begin{cases} v_0 + (s(0) - v_0)\,t / W & t < W \\ s(t - W) & t \ge W \end{cases}$$

    ``start_value`` is an absolute learning rate ($v_0$); the warmup ends exactly at the
    wrapped schedule's first value $s(0)$, so there is no jump. The wrapped schedule
    sees ``step - warmup_steps`` (like Paddle ``LinearWarmup`` and optax's warmup
    schedules), i.e. the warmup delays it rather than eating into it.
    ``warmup_steps=0`` returns ``schedule`` itself. ``schedule`` is a callable, integer
    ``warmup_steps >= 0``, ``start_value >= 0``.
    """
    check.callable_("schedule", schedule)
    warmup_steps = check.integer("warmup_steps", warmup_steps, 0)
    start_value = check.non_negative("start_value", start_value)
    if warmup_steps == 0:
        return schedule
    peak = float(schedule(0))
    slope = (peak - start_value) / warmup_steps

    def warmed(step: Any) -> Any:
        m, t = prepare(step, "linear_warmup")
        if not m.is_array:
            if m.before(warmup_steps):
                return m.result(start_value + slope * t)
            return m.result(schedule(m.shift(warmup_steps)))
        after = schedule(m.shift(warmup_steps))
        return m.result(m.where(m.before(warmup_steps), start_value + slope * t, after))

    return warmed
