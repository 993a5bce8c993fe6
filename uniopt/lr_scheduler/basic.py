"""Stateful schedulers whose rate is ``base_lr`` times a closed-form factor (or, for
PiecewiseDecay, absolute values). Each is a thin wrapper over a pure schedule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from uniopt import schedules
from uniopt.lr_scheduler._base import (
    LRScheduler,
    Schedule,
    check_saved_callables,
    load_callables,
    param_groups,
    save_callables,
)
from uniopt.schedules import _checks as check


class StepLR(LRScheduler):
    r"""Decay each group's rate by ``gamma`` every ``step_size`` steps (OneFlow/torch
    ``StepLR``): $\eta_t = \eta_0 \gamma^{\lfloor t/s \rfloor}$.
    Pure form: :func:`uniopt.schedules.step_decay`."""

    def __init__(
        self,
        optimizer: Any,
        step_size: int,
        gamma: float = 0.1,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.step_decay(1.0, self.step_size, self.gamma)
        self.step_size, self.gamma = int(self.step_size), float(self.gamma)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.step_decay(base_lr, self.step_size, self.gamma)


class MultiStepLR(LRScheduler):
    r"""Decay by ``gamma`` at each milestone (OneFlow/torch ``MultiStepLR``):
    $\eta_t = \eta_0 \gamma^{\#\{m_i \le t\}}$. Milestones must be strictly increasing
    (torch counts repeated milestones twice; here they are rejected).
    Pure form: :func:`uniopt.schedules.multistep_decay`."""

    def __init__(
        self,
        optimizer: Any,
        milestones: Sequence[int],
        gamma: float = 0.1,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.milestones = milestones
        self.gamma = gamma
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.multistep_decay(1.0, self.milestones, self.gamma)
        self.milestones = [int(m) for m in self.milestones]
        self.gamma = float(self.gamma)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.multistep_decay(base_lr, self.milestones, self.gamma)


class ExponentialLR(LRScheduler):
    r"""Multiply by ``gamma`` every step (OneFlow/torch ``ExponentialLR``):
    $\eta_t = \eta_0 \gamma^t$. Pure form: :func:`uniopt.schedules.exponential_decay`."""

    def __init__(self, optimizer: Any, gamma: float, last_step: int = -1, verbose: bool = False):
        self.gamma = gamma
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.exponential_decay(1.0, self.gamma)
        self.gamma = float(self.gamma)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.exponential_decay(base_lr, self.gamma)


class ConstantLR(LRScheduler):
    r"""Scale by ``factor`` for the first ``total_iters`` steps, then the base rate
    (torch/OneFlow ``ConstantLR``). Pure form: :func:`uniopt.schedules.constant`."""

    def __init__(
        self,
        optimizer: Any,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.constant(1.0, self.factor, self.total_iters)
        self.factor, self.total_iters = float(self.factor), int(self.total_iters)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.constant(base_lr, self.factor, self.total_iters)


class LinearLR(LRScheduler):
    r"""Linearly change the factor from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps (torch/OneFlow ``LinearLR``):
    $\eta_t = \eta_0 (f_s + (f_e - f_s)\min(t, T)/T)$.
    Pure form: :func:`uniopt.schedules.linear` (which also allows factors of 0 and > 1)."""

    def __init__(
        self,
        optimizer: Any,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.linear(1.0, self.start_factor, self.end_factor, self.total_iters)
        self.start_factor = float(self.start_factor)
        self.end_factor = float(self.end_factor)
        self.total_iters = int(self.total_iters)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.linear(base_lr, self.start_factor, self.end_factor, self.total_iters)


class PolynomialLR(LRScheduler):
    r"""Polynomial decay to ``end_learning_rate`` over ``steps`` (OneFlow ``PolynomialLR``):
    $\eta_t = (\eta_0 - \eta_{end})(1 - \min(t, D)/D)^p + \eta_{end}$, or with ``cycle``
    the horizon $D \lceil t/D \rceil$ (multiplier 1 at $t = 0$).
    torch's ``PolynomialLR(total_iters=D, power=p)`` is ``steps=D, end_learning_rate=0``.
    Pure form: :func:`uniopt.schedules.polynomial_decay`."""

    _arg_names: ClassVar[dict[str, str]] = {"decay_steps": "steps", "end_lr": "end_learning_rate"}
    _state_names: ClassVar[dict[str, str]] = {
        "decay_steps": "max_decay_steps",
        "end_lr": "end_learning_rate",
    }

    def __init__(
        self,
        optimizer: Any,
        steps: int,
        end_learning_rate: float = 0.0001,
        power: float = 1.0,
        cycle: bool = False,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.max_decay_steps = steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = cycle
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.polynomial_decay(
            1.0, self.max_decay_steps, self.end_learning_rate, self.power, self.cycle
        )
        self.max_decay_steps = int(self.max_decay_steps)
        self.end_learning_rate = float(self.end_learning_rate)
        self.power = float(self.power)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.polynomial_decay(
            base_lr, self.max_decay_steps, self.end_learning_rate, self.power, self.cycle
        )


class PiecewiseDecay(LRScheduler):
    r"""Absolute learning rates between boundaries (Paddle ``PiecewiseDecay``):
    $\eta_t = v_i$ for $b_{i-1} \le t < b_i$. The values replace the optimizer's rates,
    so every group gets the same ones. Pure form: :func:`uniopt.schedules.piecewise_decay`."""

    def __init__(
        self,
        optimizer: Any,
        boundaries: Sequence[int],
        values: Sequence[float],
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.boundaries = boundaries
        self.values = values
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.piecewise_decay(self.boundaries, self.values)
        self.boundaries = [int(b) for b in self.boundaries]
        self.values = [float(v) for v in self.values]

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.piecewise_decay(self.boundaries, self.values)


class NoamDecay(LRScheduler):
    r"""Noam schedule (Paddle ``NoamDecay``) with the group's rate as the scale:
    $\eta_t = \eta_0 d^{-0.5} \min(t^{-0.5}, t w^{-1.5})$ ($\eta$ = 0 at step 0).
    Pure form: :func:`uniopt.schedules.noam`."""

    def __init__(
        self,
        optimizer: Any,
        d_model: int,
        warmup_steps: int,
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.noam(1.0, self.d_model, self.warmup_steps)
        self.d_model, self.warmup_steps = int(self.d_model), int(self.warmup_steps)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.noam(base_lr, self.d_model, self.warmup_steps)


class InverseTimeDecay(LRScheduler):
    r"""$\eta_t = \eta_0 / (1 + \gamma t)$ (Paddle ``InverseTimeDecay``).
    Pure form: :func:`uniopt.schedules.inverse_time_decay`."""

    def __init__(self, optimizer: Any, gamma: float, last_step: int = -1, verbose: bool = False):
        self.gamma = gamma
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.inverse_time_decay(1.0, self.gamma)
        self.gamma = float(self.gamma)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.inverse_time_decay(base_lr, self.gamma)


class NaturalExpDecay(LRScheduler):
    r"""$\eta_t = \eta_0 e^{-\gamma t}$ (Paddle ``NaturalExpDecay``).
    Pure form: :func:`uniopt.schedules.natural_exp_decay`."""

    def __init__(self, optimizer: Any, gamma: float, last_step: int = -1, verbose: bool = False):
        self.gamma = gamma
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        schedules.natural_exp_decay(1.0, self.gamma)
        self.gamma = float(self.gamma)

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.natural_exp_decay(base_lr, self.gamma)


class _LambdaBase(LRScheduler):
    """Shared by LambdaLR and MultiplicativeLR: one callable per group, saved as torch
    does (a callable object's ``__dict__``; plain functions and lambdas are skipped)."""

    _unsaved: ClassVar[tuple[str, ...]] = (*LRScheduler._unsaved, "lr_lambdas")
    _arg_names: ClassVar[dict[str, str]] = {"lr_lambdas": "lr_lambda"}

    def __init__(
        self,
        optimizer: Any,
        lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
        last_step: int = -1,
        verbose: bool = False,
    ):
        self.lr_lambdas = lr_lambda
        super().__init__(optimizer, last_step, verbose)

    def _check_hparams(self) -> None:
        n = len(param_groups(self.optimizer))
        fns = self.lr_lambdas
        if isinstance(fns, list | tuple):
            if len(fns) != n:
                check.fail("lr_lambdas", fns, f"it must be one callable or a list of {n}")
        else:
            fns = [fns] * n
        self.lr_lambdas = [check.callable_(f"lr_lambdas[{i}]", fn) for i, fn in enumerate(fns)]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = save_callables(self.lr_lambdas)
        return state

    def _prepare_parts(self, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        saved = check_saved_callables("lr_lambdas", state_dict["lr_lambdas"], len(self.lr_lambdas))
        return lambda: load_callables(self.lr_lambdas, saved)


class LambdaLR(_LambdaBase):
    r"""$\eta_t = \eta_0 \cdot \lambda(t)$ with one ``lr_lambda`` or one per group
    (OneFlow/torch ``LambdaLR``). Pure form: :func:`uniopt.schedules.lambda_schedule`."""

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.lambda_schedule(base_lr, self.lr_lambdas[group])


class MultiplicativeLR(_LambdaBase):
    r"""$\eta_t = \eta_{t-1} \cdot \lambda(t)$, $\eta_0$ = base rate (torch
    ``MultiplicativeLR``), computed from the base rate (not from ``group["lr"]``).
    Pure form: :func:`uniopt.schedules.multiplicative`."""

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        return schedules.multiplicative(base_lr, self.lr_lambdas[group])
