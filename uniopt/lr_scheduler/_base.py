"""The scheduler base class: optimizer contract, closed-form stepping, state dicts.

The optimizer contract: ``optimizer.param_groups`` is a list of dicts, each with a key
``"lr"`` holding a Python float that the optimizer reads at each ``step()``.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Sequence
from typing import Any

from uniopt.schedules import _checks as check

Schedule = Callable[[Any], Any]


def param_groups(optimizer: Any) -> list[dict]:
    """``optimizer.param_groups``, checked against the contract."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "lr" in g for g in groups):
        raise TypeError(
            f"{type(optimizer).__name__} is not an optimizer: expected `param_groups`, "
            "a list of dicts each with an 'lr' entry"
        )
    return groups


def per_group(name: str, value: Any, n: int) -> list[float]:
    """A scalar repeated for ``n`` groups, or a list/tuple of exactly ``n`` numbers."""
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise ValueError(f"expected {n} values for {name} (one per group), got {len(value)}")
        return [check.real(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [check.real(name, value)] * n


def save_callables(fns: Sequence[Any]) -> list[dict | None]:
    """torch's rule: a callable object's ``__dict__`` is saved, a function's is not."""
    saved: list[dict | None] = []
    for fn in fns:
        plain = isinstance(fn, types.FunctionType) or not hasattr(fn, "__dict__")
        saved.append(None if plain else dict(vars(fn)))
    return saved


def load_callables(fns: Sequence[Any], saved: Sequence[dict | None] | None) -> None:
    for fn, state in zip(fns, saved or (), strict=False):
        if state is not None:
            fn.__dict__.update(copy.deepcopy(state))


class StateDictMixin:
    """``state_dict()``: every attribute but the optimizer (and ``_unsaved`` ones),
    deep-copied, so it is plain Python data; ``load_state_dict()`` puts it back."""

    _unsaved: tuple[str, ...] = ("optimizer",)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as a dict of plain Python data (no optimizer, no
        functions; a callable object's ``__dict__`` is saved as torch/OneFlow do)."""
        return copy.deepcopy({k: v for k, v in vars(self).items() if k not in self._unsaved})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the next ``step()`` continues the
        sequence exactly where the saved scheduler left off."""
        state = {k: v for k, v in state_dict.items() if k not in self._unsaved}
        vars(self).update(copy.deepcopy(state))


class LRScheduler(StateDictMixin):
    """Base class of the step-driven schedulers (OneFlow ``LRScheduler`` conventions).

    A subclass implements :meth:`_schedule`, returning the pure schedule
    (:mod:`uniopt.schedules`) of one parameter group for a given base rate; this class
    evaluates it at ``last_step`` and writes the result into ``group["lr"]``. Like torch
    and OneFlow:

    * with ``last_step=-1`` each group gets ``initial_lr`` (``setdefault`` from its
      ``lr``); otherwise ``initial_lr`` must already be there (resuming);
    * construction performs the initial ``step()``: afterwards ``last_step == 0`` and
      ``group["lr"]`` is the schedule at step 0;
    * call ``step()`` after ``optimizer.step()``.

    Learning rates are recomputed from the closed form each step (never from the
    current ``group["lr"]``), so a saved/loaded scheduler continues bit-identically.
    Hyper-parameters are read when the per-group schedules are built (construction and
    :meth:`load_state_dict`).
    """

    _unsaved = ("optimizer", "_schedule_cache")

    def __init__(self, optimizer: Any, last_step: int = -1, verbose: bool = False):
        self.optimizer = optimizer
        groups = param_groups(optimizer)
        self.last_step = check.integer("last_step", last_step, -1)
        self.verbose = bool(verbose)
        if self.last_step == -1:
            for group in groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        "resuming a scheduler (last_step >= 0)"
                    )
        self.base_lrs: list[float] = self._initial_base_lrs()
        self._last_lr: list[float] = []
        self._schedule_cache: dict[Any, Schedule] = {}
        self.step()

    # -- subclass hooks ---------------------------------------------------------------
    def _initial_base_lrs(self) -> list[float]:
        return [float(g["initial_lr"]) for g in self.optimizer.param_groups]

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        """The pure schedule of parameter group ``group`` starting from ``base_lr``."""
        raise NotImplementedError

    def _after_step(self) -> None:
        """Side effects beyond ``lr`` (momentum cycling)."""

    # -- evaluation ---------------------------------------------------------------------
    def _group_schedule(self, group: int) -> Schedule:
        key = (group, self.base_lrs[group])
        sched = self._schedule_cache.get(key)
        if sched is None:
            sched = self._schedule_cache[key] = self._schedule(self.base_lrs[group], group)
        return sched

    def _lrs_at(self, step: int) -> list[float]:
        return [float(self._group_schedule(i)(step)) for i in range(len(self.base_lrs))]

    def get_lr(self, base_lr: float, step: int, group: int = 0) -> float:
        """The closed-form learning rate at ``step`` for a group whose base rate is
        ``base_lr`` (hyper-parameters given per group are those of ``group``)."""
        return float(self._schedule(float(base_lr), group)(step))

    def get_last_lr(self) -> list[float]:
        """The learning rates written by the last ``step()``, one per group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one step and write the new learning rate into every group."""
        lrs = self._lrs_at(self.last_step + 1)
        self.last_step += 1
        self._set_lrs(lrs)
        self._after_step()

    def _set_lrs(self, lrs: Sequence[float]) -> None:
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, lrs, strict=False)):
            group["lr"] = lr
            if self.verbose:
                print(
                    f"Last step {self.last_step} adjusting learning rate of "
                    f"param_groups[{i}] to {lr:.6e}"
                )
        self._last_lr = list(lrs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._schedule_cache = {}

    @property
    def last_epoch(self) -> int:
        """torch's name for :attr:`last_step`."""
        return self.last_step

    @last_epoch.setter
    def last_epoch(self, value: int) -> None:
        self.last_step = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_step={self.last_step}, lr={self._last_lr})"


def momentum_mode(optimizer: Any) -> bool:
    """For momentum cycling: ``True`` to write ``betas[0]``, ``False`` for ``momentum``.

    Every group must carry one of the two keys (torch raises the same ValueError)."""
    groups = param_groups(optimizer)
    for i, group in enumerate(groups):
        if "momentum" not in group and "betas" not in group:
            raise ValueError(
                "optimizer must support momentum or beta1 with `cycle_momentum` option "
                f"enabled: param_groups[{i}] has neither 'momentum' nor 'betas'"
            )
    return "betas" in groups[0]


def set_momentum(group: dict, value: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (value, *tuple(group["betas"])[1:])
    else:
        group["momentum"] = value
