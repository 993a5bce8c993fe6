"""ReduceLROnPlateau: cut the rate when a metric stops improving (OneFlow/torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from uniopt.lr_scheduler._base import StateDictMixin, param_groups
from uniopt.schedules import _checks as check


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
    along with :meth:`load_state_dict`.
    """

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
        factor = check.real("factor", factor)
        if factor >= 1.0:
            raise ValueError(f"factor should be < 1.0, got {factor}")
        if factor < 0.0:
            raise ValueError(f"factor should be >= 0.0, got {factor}")
        groups = param_groups(optimizer)
        self.optimizer = optimizer
        self.factor = factor
        if isinstance(min_lr, list | tuple):
            if len(min_lr) != len(groups):
                raise ValueError(
                    f"expected {len(groups)} min_lrs (one per group), got {len(min_lr)}"
                )
            self.min_lrs = [check.non_negative(f"min_lr[{i}]", v) for i, v in enumerate(min_lr)]
        else:
            self.min_lrs = [check.non_negative("min_lr", min_lr)] * len(groups)
        self.mode = check.choice("mode", mode, ("min", "max"))
        self.threshold = check.non_negative("threshold", threshold)
        self.threshold_mode = check.choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.patience = check.integer("patience", patience, 0)
        self.cooldown = check.integer("cooldown", cooldown, 0)
        self.eps = check.non_negative("eps", eps)
        self.verbose = bool(verbose)
        self.mode_worse = math.inf if self.mode == "min" else -math.inf
        self.best = self.mode_worse
        self.num_bad_steps = 0
        self.cooldown_counter = 0
        self.last_step = 0
        self._last_lr = [float(g["lr"]) for g in groups]

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
