"""Schedulers made of schedulers: SequentialLR, ChainedScheduler, WarmupLR."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from uniopt import schedules
from uniopt.lr_scheduler._base import LRScheduler, Schedule, param_groups
from uniopt.lr_scheduler.plateau import ReduceLROnPlateau
from uniopt.schedules import _checks as check

WARMUP_METHODS = ("linear", "constant")


def _shift(schedule: Schedule, offset: int) -> Schedule:
    """``schedule`` seen from ``offset`` steps later (undoes join's restart at 0)."""

    def shifted(step: Any) -> Any:
        return schedule(step + offset)

    return shifted


def _check_schedulers(owner: str, schedulers: Any, optimizer: Any) -> list[LRScheduler]:
    with check.owner(owner):
        schedulers = check.sequence("schedulers", schedulers, "schedulers")
        if not schedulers:
            check.fail("schedulers", schedulers, "it must be a non-empty list of schedulers")
        for i, sched in enumerate(schedulers):
            if isinstance(sched, ReduceLROnPlateau):
                check.fail(
                    f"schedulers[{i}]",
                    sched,
                    "ReduceLROnPlateau is not supported here (its step() needs a metric)",
                )
            if not isinstance(sched, LRScheduler):
                check.wrong_type(f"schedulers[{i}]", "an LRScheduler", sched)
            if sched.optimizer is not optimizer:
                check.fail(f"schedulers[{i}]", sched, "all schedulers must use the same optimizer")
    return list(schedulers)


class _Composite(LRScheduler):
    """Saves and loads its sub-schedulers' states under ``"_schedulers"``; builds each
    group's schedule from the sub-schedulers' own per-group schedules."""

    _unsaved = (*LRScheduler._unsaved, "_schedulers")
    _schedulers: list[LRScheduler]

    def _compose(self, base_lr: float, parts: list[Schedule]) -> Schedule:
        raise NotImplementedError

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return self._compose(base_lr, [s._schedule(base_lr, group) for s in self._schedulers])

    def _group_schedule(self, group: int) -> Schedule:
        key = ("composite", group)
        sched = self._schedule_cache.get(key)
        if sched is None:
            parts = [s._group_schedule(group) for s in self._schedulers]
            sched = self._schedule_cache[key] = self._compose(self.base_lrs[group], parts)
        return sched

    def _sync(self, sched: LRScheduler, step: int) -> None:
        """Bring the active sub-scheduler's own counters in line (and its momentum)."""
        sched.last_step = step
        sched._last_lr = list(self._last_lr)
        sched._after_step()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def _prepare_parts(self, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        """Each sub-scheduler checks its own state; nothing loads until all pass."""
        saved = state_dict["_schedulers"]
        n = len(self._schedulers)
        if not isinstance(saved, list | tuple) or len(saved) != n:
            sized = isinstance(saved, list | tuple)
            got = f"{len(saved)} entries" if sized else f"a {type(saved).__name__}"
            raise ValueError(
                f"{check.current_owner()}: invalid _schedulers: it must be a list of {n} "
                f"scheduler states (one per wrapped scheduler), got {got}"
            )
        commits = [sched._prepare_load(state) for sched, state in zip(self._schedulers, saved)]

        def commit() -> None:
            for load in commits:
                load()

        return commit


class SequentialLR(_Composite):
    r"""Run ``schedulers[i]`` from ``milestones[i-1]`` on (torch ``SequentialLR``;
    OneFlow's adds ``interval_rescaling``).

    With ``interval_rescaling`` true (the default here, torch's behaviour) each scheduler
    restarts from its own step 0 at its milestone:
    $\eta_t = s_i(t - m_{i-1})$; where false (OneFlow's default) it sees the global step
    $t$. One bool or one per milestone. At construction the groups' rates are reset to
    ``initial_lr`` as in torch. Pure form: :func:`uniopt.schedules.join`.
    """

    def __init__(
        self,
        optimizer: Any,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        interval_rescaling: bool | Sequence[bool] = True,
        last_step: int = -1,
        verbose: bool = False,
    ):
        param_groups(optimizer)
        self._schedulers = _check_schedulers("SequentialLR", schedulers, optimizer)
        self.milestones = milestones
        self.interval_rescaling = interval_rescaling
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        self.milestones = check.increasing("milestones", self.milestones)
        n = len(self.milestones)
        if n != len(self._schedulers) - 1:
            check.fail(
                "milestones",
                self.milestones,
                f"it must have one entry fewer than schedulers ({len(self._schedulers)})",
            )
        rescaling = self.interval_rescaling
        if isinstance(rescaling, list | tuple):
            if len(rescaling) != n:
                check.fail(
                    "interval_rescaling",
                    rescaling,
                    f"it must be a bool or a list of {n} bools (one per milestone)",
                )
            self.interval_rescaling = [
                check.flag(f"interval_rescaling[{i}]", r) for i, r in enumerate(rescaling)
            ]
        else:
            self.interval_rescaling = [check.flag("interval_rescaling", rescaling)] * n

    def _init_groups(self, groups: list[dict], last_step: int) -> None:
        for group in groups:  # torch resets the rates the sub-schedulers changed
            if "initial_lr" in group:
                group["lr"] = group["initial_lr"]

    def _compose(self, base_lr: float, parts: list[Schedule]) -> Schedule:
        parts = list(parts)
        for i in range(1, len(parts)):
            if not self.interval_rescaling[i - 1]:
                parts[i] = _shift(parts[i], self.milestones[i - 1])
        return schedules.join(parts, self.milestones)

    def step(self) -> None:
        """Advance one step; the scheduler whose interval contains it sets the rate."""
        super().step()
        t = self.last_step
        i = bisect.bisect_right(self.milestones, t)
        local = t - self.milestones[i - 1] if i and self.interval_rescaling[i - 1] else t
        self._sync(self._schedulers[i], local)


class ChainedScheduler(_Composite):
    r"""Apply several schedulers at once (torch ``ChainedScheduler``): the rate is the
    first scheduler's rate times the other schedulers' factors,

    $$\eta_t = s_0(t) \prod_{i \ge 1} \frac{s_i(t)}{\eta_0}$$

    (each ``s_i`` evaluated with base rate 1). This is exactly torch's chain for the
    multiplicative schedulers (Step, MultiStep, Exponential, Constant, Linear, Lambda,
    Multiplicative, Polynomial to 0, CosineAnnealing with ``eta_min=0``, ...); torch's
    result for additive ones (``eta_min != 0``, cyclic) depends on the order of its
    recursive updates and is not reproduced. Pure form: :func:`uniopt.schedules.chain`.
    """

    def __init__(
        self,
        schedulers: Sequence[LRScheduler],
        optimizer: Any | None = None,
        verbose: bool = False,
    ):
        if isinstance(schedulers, Sequence) and schedulers and optimizer is None:
            optimizer = getattr(schedulers[0], "optimizer", None)
        groups = param_groups(optimizer)
        self._schedulers = _check_schedulers("ChainedScheduler", schedulers, optimizer)
        with check.owner("ChainedScheduler"):
            verbose = check.flag("verbose", verbose)
        self.optimizer = optimizer
        self.verbose = verbose
        self.last_step = self._schedulers[0].last_step
        self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in groups]
        self._last_lr = []
        self._schedule_cache = {}
        self._set_lrs(self._lrs_now())

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        first, *rest = self._schedulers
        factors = [s._schedule(1.0, group) for s in rest]
        return schedules.chain([first._schedule(base_lr, group), *factors])

    def _part(self, i: int, group: int) -> Schedule:
        key = ("part", i, group)
        sched = self._schedule_cache.get(key)
        if sched is None:
            owner = self._schedulers[i]
            sched = owner._group_schedule(group) if i == 0 else owner._schedule(1.0, group)
            self._schedule_cache[key] = sched
        return sched

    def _group_schedule(self, group: int) -> Schedule:
        """All parts at one common step (used when nested in another composite)."""
        return schedules.chain([self._part(i, group) for i in range(len(self._schedulers))])

    def _lrs_now(self) -> list[float]:
        return [
            math.prod(float(self._part(i, g)(s.last_step)) for i, s in enumerate(self._schedulers))
            for g in range(len(self.base_lrs))
        ]

    def step(self) -> None:
        """Step every scheduler and multiply their factors."""
        for sched in self._schedulers:
            sched.last_step += 1
        self.last_step += 1
        self._set_lrs(self._lrs_now())
        for sched in self._schedulers:
            self._sync(sched, sched.last_step)


class WarmupLR(_Composite):
    r"""Warmup in front of a scheduler, or alone on an optimizer (OneFlow ``WarmupLR``).

    For the first ``warmup_iters`` steps the rate is, per group with base rate $\eta_0$:

    * ``"linear"``: $\eta_0 (f + (e - f)\,t/W)$, rising from ``warmup_factor`` $f$ to the
      end factor $e$: $e = s(W)/\eta_0$ (the wrapped scheduler's own rate at step $W$,
      so the join is continuous) when ``warmup_prefix`` is false, else $e = 1$;
    * ``"constant"``: $\eta_0 f$.

    Afterwards the wrapped scheduler runs, seeing the global step $t$ when
    ``warmup_prefix`` is false (OneFlow's default: the warmup overlays the schedule's
    first steps) or $t - W$ when true (the warmup is prepended). Without a wrapped
    scheduler the base rate follows the warmup. (OneFlow's docstring example shows a
    linear warmup to the base rate even with ``warmup_prefix=False``; its code, which
    this follows, ends the warmup at the wrapped schedule's value.) Pure form:
    :func:`uniopt.schedules.linear_warmup` (prefix semantics).
    """

    def __init__(
        self,
        scheduler_or_optimizer: Any,
        warmup_factor: float = 1.0 / 3,
        warmup_iters: int = 5,
        warmup_method: str = "linear",
        warmup_prefix: bool = False,
        last_step: int = -1,
        verbose: bool = False,
    ):
        if isinstance(scheduler_or_optimizer, ReduceLROnPlateau):
            raise TypeError("WarmupLR cannot wrap ReduceLROnPlateau")
        if isinstance(scheduler_or_optimizer, LRScheduler):
            self._schedulers = [scheduler_or_optimizer]
            optimizer = scheduler_or_optimizer.optimizer
        else:
            self._schedulers = []
            optimizer = scheduler_or_optimizer
        param_groups(optimizer)
        self.warmup_method = warmup_method
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.warmup_prefix = warmup_prefix
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        self.warmup_method = check.choice("warmup_method", self.warmup_method, WARMUP_METHODS)
        self.warmup_iters = check.integer("warmup_iters", self.warmup_iters, 0)
        if self.warmup_method == "constant":
            self.warmup_factor = check.in_range("warmup_factor", self.warmup_factor, 0.0, 1.0)
        else:
            self.warmup_factor = check.non_negative("warmup_factor", self.warmup_factor)
        self.warmup_prefix = check.flag("warmup_prefix", self.warmup_prefix)
        if not self._schedulers and self.warmup_iters == 0:
            check.fail(
                "warmup_iters", 0, "it must be >= 1 when WarmupLR wraps an optimizer directly"
            )

    def _compose(self, base_lr: float, parts: list[Schedule]) -> Schedule:
        inner = parts[0] if parts else None
        iters = self.warmup_iters
        if iters == 0:
            return inner
        if self.warmup_method == "constant":
            warm = schedules.constant(base_lr, self.warmup_factor, iters)
        else:
            end = 1.0
            if inner is not None and not self.warmup_prefix and base_lr != 0:
                end = float(inner(iters)) / base_lr
            warm = schedules.linear(base_lr, self.warmup_factor, end, iters)
        if inner is None:
            return warm
        after = inner if self.warmup_prefix else _shift(inner, iters)
        return schedules.join([warm, after], [iters])

    def step(self) -> None:
        """Advance one step (warmup, then the wrapped scheduler)."""
        super().step()
        t = self.last_step
        if self._schedulers and t >= self.warmup_iters:
            self._sync(self._schedulers[0], t - self.warmup_iters if self.warmup_prefix else t)
