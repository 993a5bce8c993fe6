"""Cosine schedulers (SGDR, Loshchilov & Hutter 2017)."""

from __future__ import annotations

from typing import Any

from uniopt import schedules
from uniopt.lr_scheduler._base import LRScheduler, Schedule


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from each group's rate to ``eta_min`` over ``T_max`` steps
    (OneFlow/torch ``CosineAnnealingLR``), in closed form:

    $$\eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})(1 + \cos(\pi t / T_{max}))$$

    Past ``T_max`` it rises again, as torch's does. torch evaluates a recursive form
    that equals this one when nothing else changes the rate; here the closed form is
    used always, with the phase reduced modulo ``2 T_max`` on the integer step.
    ``T_max`` is an integer >= 1 and ``eta_min >= 0``.
    Pure form: :func:`uniopt.schedules.cosine_annealing`.
    """

    def __init__(
        self,
        optimizer: Any,
        T_max: int,  # noqa: N803
        eta_min: float = 0.0,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.cosine_annealing(1.0, self.T_max, self.eta_min)
        self.T_max, self.eta_min = int(self.T_max), float(self.eta_min)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.cosine_annealing(base_lr, self.T_max, self.eta_min)


class CosineDecayLR(LRScheduler):
    r"""Cosine decay to ``alpha`` times the base rate in ``decay_steps`` steps, then held
    (OneFlow ``CosineDecayLR``):

    $$\eta_t = \eta_0\left((1-\alpha)\tfrac12(1 + \cos(\pi \min(t, D)/D)) + \alpha\right)$$

    Pure form: :func:`uniopt.schedules.cosine_decay`.
    """

    def __init__(
        self,
        optimizer: Any,
        decay_steps: int,
        alpha: float = 0.0,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.decay_steps = decay_steps
        self.alpha = alpha
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.cosine_decay(1.0, self.decay_steps, self.alpha)
        self.decay_steps, self.alpha = int(self.decay_steps), float(self.alpha)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.cosine_decay(base_lr, self.decay_steps, self.alpha)


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing restarted after ``T_0``, ``T_0 T_mult``, ``T_0 T_mult^2``, ...
    steps (torch ``CosineAnnealingWarmRestarts``; stepped per step, integer steps only):

    $$\eta_t = \eta_{min} + \tfrac12(\eta_0 - \eta_{min})(1 + \cos(\pi T_{cur}/T_i))$$

    ``T_cur`` and ``T_i`` are available as read-only properties.
    Pure form: :func:`uniopt.schedules.cosine_warm_restarts`.
    """

    def __init__(
        self,
        optimizer: Any,
        T_0: int,  # noqa: N803
        T_mult: int = 1,  # noqa: N803
        eta_min: float = 0.0,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.T_0 = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.cosine_warm_restarts(1.0, self.T_0, self.T_mult, self.eta_min)
        self.T_0, self.T_mult, self.eta_min = int(self.T_0), int(self.T_mult), float(self.eta_min)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.cosine_warm_restarts(base_lr, self.T_0, self.T_mult, self.eta_min)

    def _cycle(self) -> tuple[int, int]:
        t_cur, t_i = max(self.last_step, 0), self.T_0
        if self.T_mult == 1:
            return t_cur % t_i, t_i
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= self.T_mult
        return t_cur, t_i

    @property
    def T_cur(self) -> int:  # noqa: N802
        """Steps since the last restart."""
        return self._cycle()[0]

    @property
    def T_i(self) -> int:  # noqa: N802
        """Length of the current cycle."""
        return self._cycle()[1]
