"""One-cycle and cyclical schedulers (torch ``OneCycleLR``, ``CyclicLR``), including the
inverse cycling of momentum / Adam's beta1."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from uniopt import schedules
from uniopt.lr_scheduler._base import (
    LRScheduler,
    Schedule,
    load_callables,
    momentum_mode,
    param_groups,
    per_group,
    save_callables,
    set_momentum,
)
from uniopt.schedules import _checks as check


class _MomentumCycling(LRScheduler):
    """Writes ``self._momentum_schedule(group)`` at ``last_step`` into each group's
    ``momentum`` (or ``betas[0]``) after every step when ``cycle_momentum`` is set."""

    cycle_momentum: bool = False
    use_beta1: bool = False

    def _momentum_schedule(self, group: int) -> Schedule:
        raise NotImplementedError

    def _after_step(self) -> None:
        if not self.cycle_momentum:
            return
        for i, group in enumerate(self.optimizer.param_groups):
            key = ("momentum", i)
            sched = self._schedule_cache.get(key)
            if sched is None:
                sched = self._schedule_cache[key] = self._momentum_schedule(i)
            set_momentum(group, float(sched(self.last_step)), self.use_beta1)


class OneCycleLR(_MomentumCycling):
    r"""One-cycle policy (torch ``OneCycleLR``; Smith & Topin 2017, "Super-Convergence").

    Each group starts at ``max_lr / div_factor`` (written to ``initial_lr``), anneals up
    to ``max_lr`` over the first ``pct_start`` of ``total_steps`` and down to
    ``initial_lr / final_div_factor`` by step ``total_steps - 1`` (three phases with
    ``three_phase``); momentum (or ``betas[0]``) cycles inversely between
    ``max_momentum`` and ``base_momentum`` when ``cycle_momentum`` (every group must then
    have ``"momentum"`` or ``"betas"``). Like torch, stepping beyond ``total_steps``
    raises ValueError; at step ``total_steps`` itself the final rate is held (torch
    evaluates its last cosine slightly past the end there).
    Pure forms: :func:`uniopt.schedules.one_cycle`, :func:`uniopt.schedules.one_cycle_momentum`.
    """

    def __init__(
        self,
        optimizer: Any,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_step: int = -1,
        verbose: bool = False,
    ):
        groups = param_groups(optimizer)
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(
                    "You must define either total_steps OR (epochs AND steps_per_epoch)"
                )
            total_steps = check.integer("epochs", epochs, 1) * check.integer(
                "steps_per_epoch", steps_per_epoch, 1
            )
        schedules.one_cycle(
            1.0, total_steps, pct_start, anneal_strategy, div_factor, final_div_factor, three_phase
        )
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.anneal_strategy = anneal_strategy
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.three_phase = bool(three_phase)
        self.max_lrs = per_group("max_lr", max_lr, len(groups))
        if last_step == -1:
            for group, peak in zip(groups, self.max_lrs, strict=True):
                group["initial_lr"] = peak / self.div_factor
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            self.use_beta1 = momentum_mode(optimizer)
            self.base_momentums = per_group("base_momentum", base_momentum, len(groups))
            self.max_momentums = per_group("max_momentum", max_momentum, len(groups))
        super().__init__(optimizer, last_step, verbose)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.one_cycle(
            base_lr * self.div_factor,
            self.total_steps,
            self.pct_start,
            self.anneal_strategy,
            self.div_factor,
            self.final_div_factor,
            self.three_phase,
        )

    def _momentum_schedule(self, group: int) -> Schedule:
        return schedules.one_cycle_momentum(
            self.total_steps,
            self.base_momentums[group],
            self.max_momentums[group],
            self.pct_start,
            self.anneal_strategy,
            self.three_phase,
        )

    def _lrs_at(self, step: int) -> list[float]:
        if step > self.total_steps:
            raise ValueError(
                f"Tried to step {step} times. The specified number of total steps is "
                f"{self.total_steps}"
            )
        return super()._lrs_at(step)


class CyclicLR(_MomentumCycling):
    r"""Cyclical learning rate between ``base_lr`` and ``max_lr`` (torch ``CyclicLR``;
    Smith 2017), modes ``triangular``, ``triangular2``, ``exp_range`` or a custom
    ``scale_fn``. ``base_lr`` replaces each group's rate at construction (and is the
    group's base rate). Momentum (or ``betas[0]``) cycles inversely between
    ``max_momentum`` and ``base_momentum`` when ``cycle_momentum``.
    Pure form: :func:`uniopt.schedules.cyclic` (momentum: ``cyclic(max_m, base_m, ...)``).
    """

    _unsaved = (*LRScheduler._unsaved, "scale_fn")

    def __init__(
        self,
        optimizer: Any,
        base_lr: float | Sequence[float],
        max_lr: float | Sequence[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[Any], Any] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.8,
        max_momentum: float | Sequence[float] = 0.9,
        last_step: int = -1,
        verbose: bool = False,
    ):
        groups = param_groups(optimizer)
        schedules.cyclic(0.0, 1.0, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)
        self._cyclic_base_lrs = per_group("base_lr", base_lr, len(groups))
        self.max_lrs = per_group("max_lr", max_lr, len(groups))
        if last_step == -1:
            for group, lr in zip(groups, self._cyclic_base_lrs, strict=True):
                group["lr"] = lr
        self.step_size_up = int(step_size_up)
        self.step_size_down = None if step_size_down is None else int(step_size_down)
        self.mode = mode
        self.gamma = float(gamma)
        self.scale_fn = scale_fn
        self.scale_mode = scale_mode
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            self.use_beta1 = momentum_mode(optimizer)
            self.base_momentums = per_group("base_momentum", base_momentum, len(groups))
            self.max_momentums = per_group("max_momentum", max_momentum, len(groups))
        super().__init__(optimizer, last_step, verbose)

    def _initial_base_lrs(self) -> list[float]:
        return list(self._cyclic_base_lrs)

    def _cyclic(self, low: float, high: float) -> Schedule:
        return schedules.cyclic(
            low,
            high,
            self.step_size_up,
            self.step_size_down,
            self.mode,
            self.gamma,
            self.scale_fn,
            self.scale_mode,
        )

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return self._cyclic(base_lr, self.max_lrs[group])

    def _momentum_schedule(self, group: int) -> Schedule:
        return self._cyclic(self.max_momentums[group], self.base_momentums[group])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["scale_fn"] = save_callables([self.scale_fn])[0] if self.scale_fn else None
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.scale_fn is not None:
            load_callables([self.scale_fn], [state_dict.get("scale_fn")])
