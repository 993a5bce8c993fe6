"""ReduceLROnPlateau: cut the rate when a metric stops improving (OneFlow/torch)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

from uniopt.lr_scheduler._base import StateDictMixin, param_groups, per_group, rates
from uniopt.schedules import _checks as check


def _worst(mode: str) -> float:
    """The starting ``best``: +inf when minimizing, -inf when maximizing."""
    return math.inf if mode == "min" else -math.inf


class ReduceLROnPlateau(StateDictMixin):
    r"""Multiply every group's rate by ``factor`` when ``metrics`` has not improved for
    more than ``patience`` steps (OneFlow/torch ``ReduceLROnPlateau``).

    Improvement of ``a`` over ``best`` (:meth:`is_better`):

    * ``mode="min"``: ``a < best * (1 - threshold)`` (``rel``) or ``a < best - threshold``
      (``abs``);
    * ``mode="max"``: ``a > best * (1 + threshold)`` (``rel``) or ``a > best + threshold``
      (``abs``).

    On a reduction $\eta \leftarrow \max(\eta \cdot \text{factor}, \text{min\_lr}_g)$,
    skipped when it would change the rate by no more than ``eps``; then ``cooldown``
    steps are ignored. ``min_lr`` is one number or one per group. Unlike the other
    schedulers the rate lives in the optimizer: restore the optimizer's param groups
    along with :meth:`load_state_dict`. ``factor`` is in [0, 1), ``min_lr``, ``threshold``
    and ``eps`` are >= 0, ``patience`` and ``cooldown`` integers >= 0.
    """

    _arg_names: ClassVar[dict[str, str]] = {"min_lrs": "min_lr"}

    def __init__(
        self,
        optimizer: Any,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0,
        eps: float = 1e-8,
        verbose: bool = False,
    ):
        groups = param_groups(optimizer)
        self.optimizer = optimizer
        self.mode = mode
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.min_lrs = min_lr
        self.eps = eps
        self.verbose = verbose
        self._check_args()
        self.mode_worse = _worst(self.mode)
        self.best = self.mode_worse
        self.num_bad_steps = 0
        self.cooldown_counter = 0
        self.last_step = 0
        self._last_lr = [float(g["lr"]) for g in groups]

    def _check_hparams(self) -> None:
        self.factor = check.real("factor", self.factor)
        if not 0.0 <= self.factor < 1.0:
            check.fail("factor", self.factor, "it must be in [0, 1)")
        self.min_lrs = per_group("min_lrs", self.min_lrs, len(param_groups(self.optimizer)))
        self.mode = check.choice("mode", self.mode, ("min", "max"))
        self.threshold = check.non_negative("threshold", self.threshold)
        self.threshold_mode = check.choice("threshold_mode", self.threshold_mode, ("rel", "abs"))
        self.patience = check.integer("patience", self.patience, 0)
        self.cooldown = check.integer("cooldown", self.cooldown, 0)
        self.eps = check.non_negative("eps", self.eps)
        self.verbose = check.flag("verbose", self.verbose)

    def _check_counters(self) -> None:
        self.last_step = check.integer("last_step", self.last_step, 0)
        self.num_bad_steps = check.integer("num_bad_steps", self.num_bad_steps, 0)
        self.cooldown_counter = check.integer("cooldown_counter", self.cooldown_counter, 0)
        if self.cooldown_counter > self.cooldown:
            check.fail(
                "cooldown_counter",
                self.cooldown_counter,
                f"it must be <= cooldown={self.cooldown}",
            )
        if self.mode_worse != _worst(self.mode):
            check.fail(
                "mode_worse",
                self.mode_worse,
                f"it must be {_worst(self.mode)} in mode {self.mode!r}",
            )
        if isinstance(self.best, bool) or not isinstance(self.best, numbers.Real):
            check.wrong_type("best", "a number", self.best)
        self.best = float(self.best)
        if math.isnan(self.best):
            check.fail("best", self.best, "it must be a number (or the mode's worst, +-inf)")
        self._last_lr = rates("_last_lr", self._last_lr, len(param_groups(self.optimizer)))

    @property
    def in_cooldown(self) -> bool:
        """Whether the scheduler is in its cooldown phase after a reduction."""
        return self.cooldown_counter > 0

    @property
    def num_bad_epochs(self) -> int:
        """torch's name for :attr:`num_bad_steps`."""
        return self.num_bad_steps

    def is_better(self, a: float, best: float) -> bool:
        """Whether metric value ``a`` improves on ``best`` (see the class docstring)."""
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return a < best * (1.0 - self.threshold)
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics: Any) -> None:
        """Record one value of the monitored metric (call after validation)."""
        current = float(metrics)
        self.last_step += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_steps = 0
        else:
            self.num_bad_steps += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_steps = 0  # bad steps in cooldown do not count
        if self.num_bad_steps > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_steps = 0
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def _reduce_lr(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr
                if self.verbose:
                    print(
                        f"Step {self.last_step:5d}: reducing learning rate of group {i} "
                        f"to {new_lr:.4e}."
                    )

    def get_last_lr(self) -> list[float]:
        """The groups' learning rates after the last ``step()``."""
        return list(self._last_lr)
