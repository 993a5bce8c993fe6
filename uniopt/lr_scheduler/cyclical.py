"""One-cycle and cyclical schedulers (torch ``OneCycleLR``, ``CyclicLR``), including the
inverse cycling of momentum / Adam's beta1."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from uniopt import schedules
from uniopt.lr_scheduler._base import (
    LRScheduler,
    Schedule,
    check_momentum_state,
    load_callables,
    momentum_mode,
    param_groups,
    per_group,
    save_callables,
    set_momentum,
)
from uniopt.schedules import _checks as check
from uniopt.schedules.cyclical import cycle_between, scale_mode_of


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
    ``max_lr``, ``base_momentum`` and ``max_momentum`` are numbers >= 0 or one per
    group, with ``base_momentum <= max_momentum``.
    """

    _arg_names: ClassVar[dict[str, str]] = {
        "max_lrs": "max_lr",
        "base_momentums": "base_momentum",
        "max_momentums": "max_momentum",
    }
    _state_names: ClassVar[dict[str, str]] = {
        "base_momentum": "base_momentums",
        "max_momentum": "max_momentums",
    }

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
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(
                    "OneCycleLR: you must define either total_steps OR (epochs AND steps_per_epoch)"
                )
            with check.owner("OneCycleLR"):
                total_steps = check.integer("epochs", epochs, 1) * check.integer(
                    "steps_per_epoch", steps_per_epoch, 1
                )
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.anneal_strategy = anneal_strategy
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.three_phase = three_phase
        self.max_lrs = max_lr
        self.cycle_momentum = cycle_momentum
        self.use_beta1 = False
        self.base_momentums = base_momentum
        self.max_momentums = max_momentum
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        n = len(param_groups(self.optimizer))
        schedules.one_cycle(
            1.0,
            self.total_steps,
            self.pct_start,
            self.anneal_strategy,
            self.div_factor,
            self.final_div_factor,
            self.three_phase,
        )
        self.total_steps = int(self.total_steps)
        self.pct_start = float(self.pct_start)
        self.div_factor = float(self.div_factor)
        self.final_div_factor = float(self.final_div_factor)
        self.max_lrs = per_group("max_lrs", self.max_lrs, n)
        self.cycle_momentum = check.flag("cycle_momentum", self.cycle_momentum)
        self.base_momentums = per_group("base_momentums", self.base_momentums, n)
        self.max_momentums = per_group("max_momentums", self.max_momentums, n)
        for low, high in zip(self.base_momentums, self.max_momentums, strict=True):
            schedules.one_cycle_momentum(
                self.total_steps, low, high, self.pct_start, self.anneal_strategy, self.three_phase
            )

    def _check_counters(self) -> None:
        super()._check_counters()
        self.use_beta1 = check_momentum_state(self.optimizer, self.cycle_momentum, self.use_beta1)
        if self.last_step > self.total_steps:
            check.fail("last_step", self.last_step, f"it must be <= total_steps={self.total_steps}")

    def _init_groups(self, groups: list[dict], last_step: int) -> None:
        if self.cycle_momentum:
            self.use_beta1 = momentum_mode(self.optimizer)
        if last_step == -1:
            for group, peak in zip(groups, self.max_lrs, strict=True):
                group["initial_lr"] = peak / self.div_factor

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

    _unsaved: ClassVar[tuple[str, ...]] = (*LRScheduler._unsaved, "scale_fn")
    _arg_names: ClassVar[dict[str, str]] = {
        "_cyclic_base_lrs": "base_lr",
        "max_lrs": "max_lr",
        "base_momentums": "base_momentum",
        "max_momentums": "max_momentum",
    }
    _state_names: ClassVar[dict[str, str]] = {"base_lr": "_cyclic_base_lrs", "max_lr": "max_lrs"}

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
        self._cyclic_base_lrs = base_lr
        self.max_lrs = max_lr
        self.step_size_up = step_size_up
        self.step_size_down = step_size_down
        self.mode = mode
        self.gamma = gamma
        self.scale_fn = scale_fn
        self.scale_mode = scale_mode
        self.cycle_momentum = cycle_momentum
        self.use_beta1 = False
        self.base_momentums = base_momentum
        self.max_momentums = max_momentum
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        n = len(param_groups(self.optimizer))
        self._cyclic_base_lrs = per_group("_cyclic_base_lrs", self._cyclic_base_lrs, n)
        self.max_lrs = per_group("max_lrs", self.max_lrs, n)
        for low, high in zip(self._cyclic_base_lrs, self.max_lrs, strict=True):
            schedules.cyclic(
                low,
                high,
                self.step_size_up,
                self.step_size_down,
                self.mode,
                self.gamma,
                self.scale_fn,
                self.scale_mode,
            )
        self.step_size_up = int(self.step_size_up)
        if self.step_size_down is not None:
            self.step_size_down = int(self.step_size_down)
        self.gamma = float(self.gamma)
        self.cycle_momentum = check.flag("cycle_momentum", self.cycle_momentum)
        self.base_momentums = per_group("base_momentums", self.base_momentums, n)
        self.max_momentums = per_group("max_momentums", self.max_momentums, n)
        for i, (low, high) in enumerate(zip(self.base_momentums, self.max_momentums, strict=True)):
            check.at_least(f"max_momentums[{i}]", high, f"base_momentums[{i}]", low)

    def _check_counters(self) -> None:
        super()._check_counters()
        self.use_beta1 = check_momentum_state(self.optimizer, self.cycle_momentum, self.use_beta1)

    def _init_groups(self, groups: list[dict], last_step: int) -> None:
        if self.cycle_momentum:
            self.use_beta1 = momentum_mode(self.optimizer)
        if last_step == -1:
            for group, lr in zip(groups, self._cyclic_base_lrs, strict=True):
                group["lr"] = lr

    def _initial_base_lrs(self) -> list[float]:
        return list(self._cyclic_base_lrs)

    def _cyclic(self, start: float, turn: float) -> Schedule:
        """The cycle from ``start`` to ``turn`` and back (arguments already checked)."""
        down = self.step_size_up if self.step_size_down is None else self.step_size_down
        return cycle_between(
            "CyclicLR",
            start,
            turn,
            self.step_size_up,
            down,
            self.mode,
            self.gamma,
            self.scale_fn,
            scale_mode_of(self.mode, self.scale_fn, self.scale_mode),
        )

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return self._cyclic(base_lr, self.max_lrs[group])

    def _momentum_schedule(self, group: int) -> Schedule:
        return self._cyclic(self.max_momentums[group], self.base_momentums[group])

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["scale_fn"] = save_callables([self.scale_fn])[0] if self.scale_fn else None
        return state

    def _prepare_parts(self, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        saved = state_dict["scale_fn"]
        if saved is not None and not isinstance(saved, Mapping):
            check.fail("scale_fn", saved, "it must be None or a dict (a callable's state)")

        def commit() -> None:
            if self.scale_fn is not None:
                load_callables([self.scale_fn], [saved])

        return commit
