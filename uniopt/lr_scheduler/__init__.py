"""Stateful learning-rate schedulers with OneFlow/torch names and arguments.

They drive any optimizer that follows this contract: ``optimizer.param_groups`` is a
list of dicts, each with a key ``"lr"`` holding a Python float that the optimizer reads
at each ``step()``. Like torch, a scheduler stores ``initial_lr`` in every group at
construction (``last_step=-1``), performs the initial step there (so ``group["lr"]`` is
the schedule's value at step 0), and is stepped after ``optimizer.step()``.
OneFlow's ``last_step`` is torch's ``last_epoch`` (both names are available).

Every scheduler except ReduceLROnPlateau evaluates a pure schedule of
:mod:`uniopt.schedules` in closed form, so ``state_dict()`` is plain Python data and a
loaded scheduler continues bit-identically.

Arguments are checked by the constructor before it writes into the optimizer's groups,
with messages naming the scheduler and the argument
(``StepLR: invalid step_size=0: it must be an integer >= 1``). ``load_state_dict``
runs the same checks on the loaded values, refuses unknown and missing keys, and
changes nothing unless everything passes.
"""

from uniopt.lr_scheduler._base import LRScheduler
from uniopt.lr_scheduler.basic import (
    ConstantLR,
    ExponentialLR,
    InverseTimeDecay,
    LambdaLR,
    LinearLR,
    MultiplicativeLR,
    MultiStepLR,
    NaturalExpDecay,
    NoamDecay,
    PiecewiseDecay,
    PolynomialLR,
    StepLR,
)
from uniopt.lr_scheduler.compose import ChainedScheduler, SequentialLR, WarmupLR
from uniopt.lr_scheduler.cosine import CosineAnnealingLR, CosineAnnealingWarmRestarts, CosineDecayLR
from uniopt.lr_scheduler.cyclical import CyclicLR, OneCycleLR
from uniopt.lr_scheduler.plateau import ReduceLROnPlateau

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CosineDecayLR",
    "CyclicLR",
    "ExponentialLR",
    "InverseTimeDecay",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "NaturalExpDecay",
    "NoamDecay",
    "OneCycleLR",
    "PiecewiseDecay",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "WarmupLR",
]
