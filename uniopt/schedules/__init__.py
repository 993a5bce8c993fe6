"""Pure learning-rate schedules: ``schedule = factory(...)``, then ``lr = schedule(step)``.

* ``step`` is the number of optimizer steps already completed: 0 for the first step
  (optax's convention, and Paddle's, whose first step uses the value at step 0). It is
  a whole number >= 0: a negative, fractional or non-finite step raises
  ``ValueError: <schedule>: invalid step=<value>: ...`` (a bool or a string
  ``TypeError``); nothing is clamped. So does a rate that is not a finite number >= 0
  (``exponential_decay`` with ``gamma > 1`` overflowing, a user function returning a
  negative factor).
* A Python ``int`` step gives a Python ``float`` computed in float64 with :mod:`math`.
  A 0-d integer or floating array of any array-API library (numpy, torch, jax incl.
  tracers under ``jax.jit``, array_api_strict) gives a 0-d floating array of the same
  library: float steps keep their dtype, integer steps are cast to float64 (float32
  when the library has no float64, e.g. jax without x64). The array path has no
  Python branching on values, so jitted schedules trace once and never recompile.
  Arrays of any shape work elementwise.
* Array steps are checked where their values can be read for free: numpy and
  array_api_strict arrays, torch and jax arrays on the CPU. **Traced steps (under
  ``jax.jit`` or ``torch.compile``) and arrays on an accelerator are not checked**
  (that would stop the trace, or force a host sync every step): there a negative step
  gives whatever the formula gives.
* Periods and boundaries are computed on the integer step (``step % period`` before
  any conversion to float), so large steps keep their precision even in float32:
  ``cosine_annealing(0.1, 100)`` at a jax ``int32`` step ``10**9`` is exactly 0.1.
* Factories take the absolute base learning rate first (``cosine_annealing(0.1, 100)``);
  exceptions: :func:`piecewise_decay` (absolute values), :func:`one_cycle` (peak rate),
  :func:`one_cycle_momentum`, and the combinators :func:`join`, :func:`chain`,
  :func:`linear_warmup`, which take schedules.
* Bad arguments raise ``ValueError`` (``TypeError`` for wrong types) naming the factory
  and the argument: ``cosine_annealing: invalid T_max=0: it must be an integer >= 1``.
  Rates, factors and values must be finite and >= 0, counts integers.

The stateful, torch-style schedulers in :mod:`uniopt.lr_scheduler` are built on these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uniopt.schedules.compose import chain, join, linear_warmup
from uniopt.schedules.cosine import cosine_annealing, cosine_decay, cosine_warm_restarts
from uniopt.schedules.cyclical import cyclic, one_cycle, one_cycle_momentum
from uniopt.schedules.decay import (
    constant,
    exponential_decay,
    inverse_time_decay,
    lambda_schedule,
    linear,
    multiplicative,
    multistep_decay,
    natural_exp_decay,
    noam,
    piecewise_decay,
    polynomial_decay,
    step_decay,
)

Schedule = Callable[[Any], Any]
"""``schedule(step) -> lr``: an int gives a float, an array gives an array."""

SCHEDULES: dict[str, Callable[..., Schedule]] = {
    f.__name__: f
    for f in (
        constant,
        step_decay,
        multistep_decay,
        exponential_decay,
        inverse_time_decay,
        natural_exp_decay,
        polynomial_decay,
        linear,
        piecewise_decay,
        noam,
        cosine_annealing,
        cosine_decay,
        cosine_warm_restarts,
        one_cycle,
        one_cycle_momentum,
        cyclic,
    )
}
"""Factories whose arguments are all numbers, lists or strings, by name (used by the
``plot-schedule`` command). The ones taking callables or schedules are left out."""

__all__ = [
    "SCHEDULES",
    "Schedule",
    "chain",
    "constant",
    "cosine_annealing",
    "cosine_decay",
    "cosine_warm_restarts",
    "cyclic",
    "exponential_decay",
    "inverse_time_decay",
    "join",
    "lambda_schedule",
    "linear",
    "linear_warmup",
    "multiplicative",
    "multistep_decay",
    "natural_exp_decay",
    "noam",
    "one_cycle",
    "one_cycle_momentum",
    "piecewise_decay",
    "polynomial_decay",
    "step_decay",
]
