"""Pure schedules: closed forms written independently here in float64 numpy, the same
values from every array library, jax.jit without recompiles, argument checks (a table of
bad arguments per factory), step checks (negative, fractional, non-finite, huge steps:
ValueError naming the schedule, on every backend), precision at large steps (float32
and jax int32), and hypothesis properties (seeded, bounded): valid arguments give the
docstring's rates, an invalid one is named."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from typing import Any, NamedTuple

import numpy as np
import pytest

from uniopt import schedules as S

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - the property tests skip without it
    st = None

N = 60  # steps checked per schedule


# --- independent float64 references (framework docs / formulas) -------------------------
def _cyclic_ref(t, base, high, up, down, scale):
    total = up + down
    cycle = np.floor(1 + t / total)
    x = 1 + t / total - cycle
    ratio = up / total
    factor = np.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
    return base + (high - base) * factor * scale(cycle, t)


def _one_cycle_ref(t, peak, total, pct, div, final_div, strategy, three):
    init = peak / div
    low = init / final_div
    if three:
        knots = [0, pct * total - 1, 2 * pct * total - 2, total - 1]
        vals = [init, peak, init, low]
    else:
        knots = [0, pct * total - 1, total - 1]
        vals = [init, peak, low]
    out = []
    for s in t:
        i = next((k for k in range(1, len(knots)) if s <= knots[k]), len(knots) - 1)
        p = min((s - knots[i - 1]) / (knots[i] - knots[i - 1]), 1.0)
        a, b = vals[i - 1], vals[i]
        out.append(
            b + (a - b) / 2 * (np.cos(np.pi * p) + 1) if strategy == "cos" else a + (b - a) * p
        )
    return np.array(out)


def _warm_restarts_ref(t, base, t0, mult, eta_min):
    out = []
    for s in t:
        cur, period = s, t0
        while cur >= period:
            cur, period = cur - period, period * mult
        out.append(eta_min + (base - eta_min) * (1 + np.cos(np.pi * cur / period)) / 2)
    return np.array(out)


def _poly_ref(t, base, steps, end, power, cycle):
    if cycle:
        mult = np.where(t == 0, 1.0, np.ceil(t / steps))
        return (base - end) * (1 - t / (steps * mult)) ** power + end
    return (base - end) * (1 - np.minimum(t, steps) / steps) ** power + end


def _cosdecay_ref(t, base, steps, alpha):
    cos = 0.5 * (1 + np.cos(np.pi * np.minimum(t, steps) / steps))
    return base * np.where(t < steps, (1 - alpha) * cos + alpha, alpha)


def _noam_ref(t, scale, d_model, warmup):
    a = np.where(t == 0, 1.0, np.maximum(t, 1) ** -0.5)
    return scale * d_model**-0.5 * np.minimum(a, warmup**-1.5 * t)


def _mult_factor(k):
    return 0.9 if k % 3 else 1.05


CASES = {
    "constant": (lambda: S.constant(0.1), lambda t: np.full(t.shape, 0.1)),
    "constant_factor": (
        lambda: S.constant(0.1, factor=0.5, total_iters=3),
        lambda t: np.where(t < 3, 0.05, 0.1),
    ),
    "step_decay": (lambda: S.step_decay(0.1, 7, 0.5), lambda t: 0.1 * 0.5 ** (t // 7)),
    "multistep_decay": (
        lambda: S.multistep_decay(0.1, [5, 12, 30], 0.3),
        lambda t: 0.1 * 0.3 ** np.searchsorted([5, 12, 30], t, side="right"),
    ),
    "exponential_decay": (lambda: S.exponential_decay(0.1, 0.95), lambda t: 0.1 * 0.95**t),
    "inverse_time_decay": (
        lambda: S.inverse_time_decay(0.1, 0.5),
        lambda t: 0.1 / (1 + 0.5 * t),
    ),
    "natural_exp_decay": (
        lambda: S.natural_exp_decay(0.1, 0.1),
        lambda t: 0.1 * np.exp(-0.1 * t),
    ),
    "polynomial_decay": (
        lambda: S.polynomial_decay(0.1, 10, end_lr=0.001, power=2.0),
        lambda t: _poly_ref(t, 0.1, 10, 0.001, 2.0, False),
    ),
    "polynomial_decay_cycle": (
        lambda: S.polynomial_decay(0.1, 10, end_lr=0.001, power=1.5, cycle=True),
        lambda t: _poly_ref(t, 0.1, 10, 0.001, 1.5, True),
    ),
    "linear": (
        lambda: S.linear(0.1, 0.25, 1.0, 8),
        lambda t: 0.1 * (0.25 + 0.75 * np.minimum(t, 8) / 8),
    ),
    "piecewise_decay": (
        lambda: S.piecewise_decay([2, 4, 6, 8], [0.2, 0.4, 0.6, 0.8, 1.0]),
        lambda t: np.array([0.2, 0.4, 0.6, 0.8, 1.0])[np.searchsorted([2, 4, 6, 8], t, "right")],
    ),
    "noam": (lambda: S.noam(2.0, 512, 10), lambda t: _noam_ref(t, 2.0, 512, 10)),
    "cosine_annealing": (
        lambda: S.cosine_annealing(0.1, 12, eta_min=0.01),
        lambda t: 0.01 + 0.09 * (1 + np.cos(np.pi * t / 12)) / 2,
    ),
    "cosine_decay": (
        lambda: S.cosine_decay(0.1, 12, alpha=0.2),
        lambda t: _cosdecay_ref(t, 0.1, 12, 0.2),
    ),
    "cosine_warm_restarts": (
        lambda: S.cosine_warm_restarts(0.1, 3, 2, eta_min=0.005),
        lambda t: _warm_restarts_ref(t, 0.1, 3, 2, 0.005),
    ),
    "cosine_warm_restarts_1": (
        lambda: S.cosine_warm_restarts(0.1, 7),
        lambda t: _warm_restarts_ref(t, 0.1, 7, 1, 0.0),
    ),
    "one_cycle": (
        lambda: S.one_cycle(1.0, 40, pct_start=0.25),
        lambda t: _one_cycle_ref(t, 1.0, 40, 0.25, 25.0, 1e4, "cos", False),
    ),
    "one_cycle_three_linear": (
        lambda: S.one_cycle(0.5, 50, anneal_strategy="linear", three_phase=True, div_factor=10),
        lambda t: _one_cycle_ref(t, 0.5, 50, 0.3, 10.0, 1e4, "linear", True),
    ),
    "cyclic_triangular": (
        lambda: S.cyclic(0.01, 0.1, 4, 6),
        lambda t: _cyclic_ref(t, 0.01, 0.1, 4, 6, lambda c, s: 1.0),
    ),
    "cyclic_triangular2": (
        lambda: S.cyclic(0.01, 0.1, 5, mode="triangular2"),
        lambda t: _cyclic_ref(t, 0.01, 0.1, 5, 5, lambda c, s: 0.5 ** (c - 1)),
    ),
    "cyclic_exp_range": (
        lambda: S.cyclic(0.01, 0.1, 3, 4, mode="exp_range", gamma=0.97),
        lambda t: _cyclic_ref(t, 0.01, 0.1, 3, 4, lambda c, s: 0.97**s),
    ),
    "lambda_schedule": (
        lambda: S.lambda_schedule(0.1, lambda s: 0.9**s),
        lambda t: 0.1 * 0.9**t,
    ),
    "multiplicative": (
        lambda: S.multiplicative(0.1, _mult_factor),
        lambda t: np.array(
            [0.1 * math.prod(_mult_factor(k) for k in range(1, int(s) + 1)) for s in t]
        ),
    ),
    "join": (
        lambda: S.join(
            [S.constant(0.1), S.cosine_decay(0.1, 10), S.exponential_decay(0.05, 0.9)], [5, 15]
        ),
        lambda t: np.where(
            t < 5,
            0.1,
            np.where(t < 15, _cosdecay_ref(t - 5, 0.1, 10, 0.0), 0.05 * 0.9 ** (t - 15.0)),
        ),
    ),
    "chain": (
        lambda: S.chain([S.exponential_decay(0.1, 0.9), S.constant(1.0, 0.5, 4)]),
        lambda t: 0.1 * 0.9**t * np.where(t < 4, 0.5, 1.0),
    ),
    "linear_warmup": (
        lambda: S.linear_warmup(S.cosine_decay(0.1, 10, 0.1), 5, start_value=0.01),
        lambda t: np.where(
            t < 5, 0.01 + 0.09 * t / 5, _cosdecay_ref(np.maximum(t - 5, 0), 0.1, 10, 0.1)
        ),
    ),
}
TRACEABLE = [name for name in CASES if name != "multiplicative"]


def _int_path(sched, steps=range(N)):
    return [sched(t) for t in steps]


@pytest.mark.parametrize("name", CASES)
def test_closed_form_matches_reference(name):
    make, ref = CASES[name]
    got = _int_path(make())
    assert all(type(v) is float for v in got)
    np.testing.assert_allclose(got, ref(np.arange(N, dtype=np.float64)), rtol=1e-12, atol=1e-15)


def test_piecewise_matches_paddle_example():
    sched = S.piecewise_decay([2, 4, 6, 8], [0.2, 0.4, 0.6, 0.8, 1.0])
    expected = [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert [sched(i) for i in range(12)] == expected


def test_edge_values():
    # polynomial with cycle: step 0 is the start of the first cycle (no 0/0)
    assert S.polynomial_decay(0.1, 10, end_lr=0.0, cycle=True)(0) == 0.1
    assert S.polynomial_decay(0.1, 10, end_lr=0.01)(1000) == 0.01
    # one-cycle holds its final rate past total_steps
    oc = S.one_cycle(1.0, 20)
    assert oc(19) == oc(20) == oc(10_000) == pytest.approx(1.0 / 25 / 1e4, rel=1e-12)
    # cosine decay holds alpha * base; cosine annealing keeps oscillating (torch)
    assert S.cosine_decay(0.1, 10, alpha=0.1)(50) == pytest.approx(0.01, rel=1e-12)
    assert S.cosine_annealing(0.1, 10)(20) == pytest.approx(0.1, rel=1e-12)
    # Noam is 0 at step 0 (Paddle), peaks at warmup_steps
    nm = S.noam(1.0, 64, 100)
    assert nm(0) == 0.0 and nm(100) > nm(99) and nm(100) > nm(101)
    # warmup with zero steps is the schedule itself
    inner = S.exponential_decay(0.1, 0.9)
    assert S.linear_warmup(inner, 0) is inner


def test_warm_restarts_land_exactly_on_restarts():
    for t0, mult in [(1, 3), (3, 2), (5, 7), (10, 2)]:
        sched = S.cosine_warm_restarts(1.0, t0, mult)
        start, period = 0, t0
        for _ in range(8):
            assert sched(start) == 1.0, (t0, mult, start)
            if period > 1:
                assert sched(start + 1) < 1.0 and sched(start + period - 1) < 1.0
            start, period = start + period, period * mult


def test_vectorized_steps_numpy():
    sched = S.cosine_decay(0.1, 30, 0.1)
    steps = np.arange(50)
    got = sched(steps)
    assert got.shape == (50,) and got.dtype == np.float64
    np.testing.assert_allclose(got, _int_path(sched, range(50)), rtol=1e-15)


# --- array libraries --------------------------------------------------------------------
def _backends():
    """(name, make_step(i), expected float dtype name, rtol)."""
    out = [
        ("numpy-int", lambda i: np.asarray(i), "float64", 1e-12),
        ("numpy-float32", lambda i: np.asarray(i, dtype=np.float32), "float32", 2e-5),
    ]
    try:
        import torch

        out += [
            ("torch-int", lambda i: torch.tensor(i), "float64", 1e-12),
            ("torch-float32", lambda i: torch.tensor(float(i)), "float32", 2e-5),
        ]
    except ImportError:  # pragma: no cover
        pass
    try:
        import array_api_strict as xs

        out.append(("strict-int", lambda i: xs.asarray(i), "float64", 1e-12))
    except ImportError:  # pragma: no cover
        pass
    return out


BACKENDS = _backends()


@pytest.mark.parametrize("backend", BACKENDS, ids=[b[0] for b in BACKENDS])
@pytest.mark.parametrize("name", CASES)
def test_array_steps_match_int_path(name, backend):
    _, make_step, dtype, rtol = backend
    sched = CASES[name][0]()
    expected = _int_path(sched, range(25))
    got = []
    for i in range(25):
        out = sched(make_step(i))
        assert not isinstance(out, float), "array step must give an array"
        assert tuple(out.shape) == ()
        assert str(out.dtype).endswith(dtype)
        got.append(float(out))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * 1e-2)


@pytest.fixture(params=[True, False], ids=["x64", "x32"])
def jax_x64(request):
    jax = pytest.importorskip("jax")
    with jax.enable_x64(request.param):
        yield request.param


@pytest.mark.parametrize("name", CASES)
def test_jax_eager_matches_int_path(name, jax_x64):
    import jax.numpy as jnp

    sched = CASES[name][0]()
    got = [sched(jnp.asarray(i)) for i in range(25)]
    assert all(str(g.dtype) == ("float64" if jax_x64 else "float32") for g in got)
    rtol = 1e-12 if jax_x64 else 2e-5
    got = [float(g) for g in got]
    np.testing.assert_allclose(got, _int_path(sched, range(25)), rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("name", TRACEABLE)
def test_jax_jit_matches_eager_without_recompiling(name, jax_x64):
    import jax
    import jax.numpy as jnp

    sched = CASES[name][0]()
    traces = []

    def traced(step):
        traces.append(1)
        return sched(step)

    jitted = jax.jit(traced)
    got = [float(jitted(jnp.asarray(i))) for i in range(N)]
    assert len(traces) == 1, "the jitted schedule must not recompile for new steps"
    eager = [float(sched(jnp.asarray(i))) for i in range(N)]
    exact = _int_path(sched)
    # float64: 1e-12 relative. float32: 1e-6 of the schedule's scale (XLA fuses and
    # reorders float32 arithmetic, so values near a cancellation differ in the last bits)
    rtol, atol = (1e-12, 1e-15) if jax_x64 else (1e-6, 1e-6 * max(map(abs, exact)))
    np.testing.assert_allclose(got, eager, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got, exact, rtol=rtol if jax_x64 else 2e-5, atol=atol * 10)


def test_multiplicative_refuses_tracing(jax_x64):
    import jax
    import jax.numpy as jnp

    sched = S.multiplicative(0.1, lambda k: 0.9)
    with pytest.raises(TypeError, match="cannot be traced"):
        jax.jit(sched)(jnp.asarray(3))


# --- argument checks ----------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
_ONE = [S.constant(0.1)]

#: (factory, args, kwargs, error, message fragment): every argument of every factory,
#: out of range or of the wrong type; each message names the factory and the argument
BAD_ARGS = [
    # rates, factors and values are finite and >= 0 (issue 15: negative ones were taken)
    (S.constant, (-0.1,), {}, ValueError, "constant: invalid base_lr=-0.1: it must be >= 0"),
    (S.constant, (0.1,), {"factor": 1.5}, ValueError, "constant: invalid factor=1.5"),
    (S.constant, (0.1,), {"total_iters": -1}, ValueError, "constant: invalid total_iters=-1"),
    (S.constant, ("0.1",), {}, TypeError, "constant: base_lr must be a real number, got str"),
    (S.step_decay, (-1.0, 10), {}, ValueError, "step_decay: invalid base_lr=-1.0"),
    (S.step_decay, (0.1, 0), {}, ValueError, "step_decay: invalid step_size=0"),
    (S.step_decay, (0.1, INF), {}, ValueError, "step_decay: invalid step_size=inf"),
    (S.step_decay, (0.1, NAN), {}, ValueError, "step_decay: invalid step_size=nan"),
    (S.step_decay, (0.1, 2.5), {}, ValueError, "step_decay: invalid step_size=2.5"),
    (S.step_decay, (0.1, "10"), {}, TypeError, "step_decay: step_size must be an integer"),
    (S.step_decay, (0.1, True), {}, TypeError, "step_decay: step_size must be an integer"),
    (S.step_decay, (0.1, 10), {"gamma": 0}, ValueError, "step_decay: invalid gamma=0"),
    (S.step_decay, (0.1, 10), {"gamma": INF}, ValueError, "step_decay: invalid gamma=inf"),
    (S.multistep_decay, (0.1, [10, 5]), {}, ValueError, "multistep_decay: invalid milestones"),
    (S.multistep_decay, (0.1, [5, 5]), {}, ValueError, "multistep_decay: invalid milestones"),
    (S.multistep_decay, (0.1, [-1, 5]), {}, ValueError, "multistep_decay: invalid milestones[0]"),
    (S.multistep_decay, (0.1, 5), {}, TypeError, "multistep_decay: milestones must be a list"),
    (S.multistep_decay, (0.1, [5]), {"gamma": -1}, ValueError, "multistep_decay: invalid gamma"),
    (S.exponential_decay, (0.1, 0.0), {}, ValueError, "exponential_decay: invalid gamma=0.0"),
    (S.exponential_decay, (0.1, -0.5), {}, ValueError, "exponential_decay: invalid gamma"),
    (S.exponential_decay, (NAN, 0.9), {}, ValueError, "exponential_decay: invalid base_lr=nan"),
    (S.exponential_decay, (-0.1, 0.9), {}, ValueError, "exponential_decay: invalid base_lr"),
    (S.inverse_time_decay, (0.1, 0), {}, ValueError, "inverse_time_decay: invalid gamma=0"),
    (S.inverse_time_decay, (-0.1, 1), {}, ValueError, "inverse_time_decay: invalid base_lr"),
    (S.natural_exp_decay, (0.1, -1), {}, ValueError, "natural_exp_decay: invalid gamma=-1"),
    (S.natural_exp_decay, (0.1, None), {}, TypeError, "natural_exp_decay: gamma must be"),
    (S.polynomial_decay, (0.1, 0), {}, ValueError, "polynomial_decay: invalid decay_steps=0"),
    (S.polynomial_decay, (0.1, 10), {"power": -1}, ValueError, "polynomial_decay: invalid power"),
    (S.polynomial_decay, (0.1, 10), {"end_lr": -1e-4}, ValueError, "invalid end_lr=-0.0001"),
    (S.polynomial_decay, (0.1, 10), {"cycle": "yes"}, TypeError, "cycle must be a bool"),
    (S.linear, (0.1, -0.1), {}, ValueError, "linear: invalid start_factor=-0.1"),
    (S.linear, (0.1,), {"end_factor": INF}, ValueError, "linear: invalid end_factor=inf"),
    (S.linear, (0.1,), {"total_iters": 0}, ValueError, "linear: invalid total_iters=0"),
    (S.piecewise_decay, ([2, 4], [0.1, 0.2]), {}, ValueError, "piecewise_decay: invalid values"),
    (S.piecewise_decay, ([4, 2], [0.1, 0.2, 0.3]), {}, ValueError, "invalid boundaries"),
    (S.piecewise_decay, ([2], [0.1, -0.2]), {}, ValueError, "invalid values[1]=-0.2"),
    (S.piecewise_decay, ([2], "ab"), {}, TypeError, "piecewise_decay: values must be a list"),
    (S.noam, (1.0, 0, 10), {}, ValueError, "noam: invalid d_model=0"),
    (S.noam, (1.0, 512, 0), {}, ValueError, "noam: invalid warmup_steps=0"),
    (S.noam, (-1.0, 512, 10), {}, ValueError, "noam: invalid base_lr=-1.0"),
    (S.cosine_annealing, (0.1, 0), {}, ValueError, "cosine_annealing: invalid T_max=0"),
    (S.cosine_annealing, (0.1, -5), {}, ValueError, "cosine_annealing: invalid T_max=-5"),
    (S.cosine_annealing, (0.1, 2.5), {}, ValueError, "cosine_annealing: invalid T_max=2.5"),
    (S.cosine_annealing, (0.1, 10, -0.01), {}, ValueError, "cosine_annealing: invalid eta_min"),
    (S.cosine_annealing, (0.1, 10, NAN), {}, ValueError, "cosine_annealing: invalid eta_min=nan"),
    (S.cosine_decay, (0.1, 0), {}, ValueError, "cosine_decay: invalid decay_steps=0"),
    (S.cosine_decay, (0.1, 10), {"alpha": 2.0}, ValueError, "cosine_decay: invalid alpha=2.0"),
    (S.cosine_warm_restarts, (0.1, 0), {}, ValueError, "cosine_warm_restarts: invalid T_0=0"),
    (S.cosine_warm_restarts, (0.1, 10), {"T_mult": 0}, ValueError, "invalid T_mult=0"),
    (S.cosine_warm_restarts, (0.1, 10), {"T_mult": 1.5}, ValueError, "invalid T_mult=1.5"),
    (S.cosine_warm_restarts, (0.1, 10), {"eta_min": -1}, ValueError, "invalid eta_min=-1"),
    (S.one_cycle, (1.0, 100), {"anneal_strategy": "cosine"}, ValueError, "anneal_strategy"),
    (S.one_cycle, (1.0, 100), {"anneal_strategy": 1}, TypeError, "anneal_strategy must be"),
    (S.one_cycle, (1.0, 0), {}, ValueError, "one_cycle: invalid total_steps=0"),
    (S.one_cycle, (-1.0, 10), {}, ValueError, "one_cycle: invalid max_lr=-1.0"),
    (S.one_cycle, (1.0, 100), {"pct_start": 1.5}, ValueError, "invalid pct_start=1.5"),
    (S.one_cycle, (1.0, 100), {"div_factor": 0}, ValueError, "invalid div_factor=0"),
    (S.one_cycle, (1.0, 100), {"final_div_factor": -1}, ValueError, "final_div_factor=-1"),
    (S.one_cycle, (1.0, 100), {"three_phase": 1}, TypeError, "three_phase must be a bool"),
    (S.one_cycle_momentum, (100, 0.95, 0.85), {}, ValueError, "invalid max_momentum=0.85"),
    (S.one_cycle_momentum, (100, -0.1), {}, ValueError, "invalid base_momentum=-0.1"),
    (S.cyclic, (0.1, 0.01), {}, ValueError, "cyclic: invalid max_lr=0.01: it must be >= base"),
    (S.cyclic, (-0.01, 0.1), {}, ValueError, "cyclic: invalid base_lr=-0.01"),
    (S.cyclic, (0.01, 0.1), {"mode": "sawtooth"}, ValueError, "cyclic: invalid mode='sawtooth'"),
    (S.cyclic, (0.01, 0.1), {"step_size_up": 0}, ValueError, "invalid step_size_up=0"),
    (S.cyclic, (0.01, 0.1), {"step_size_down": 0}, ValueError, "invalid step_size_down=0"),
    (S.cyclic, (0.01, 0.1), {"mode": "exp_range", "gamma": 0}, ValueError, "invalid gamma=0"),
    (S.cyclic, (0.01, 0.1), {"gamma": 1.5}, ValueError, "cyclic: invalid gamma=1.5"),
    (S.cyclic, (0.01, 0.1), {"scale_mode": "epoch"}, ValueError, "invalid scale_mode='epoch'"),
    (S.cyclic, (0.01, 0.1), {"scale_fn": 3}, TypeError, "cyclic: scale_fn must be callable"),
    (S.lambda_schedule, (0.1, 3.0), {}, TypeError, "lambda_schedule: lr_lambda must be callable"),
    (S.lambda_schedule, (-0.1, abs), {}, ValueError, "lambda_schedule: invalid base_lr"),
    (S.multiplicative, (0.1, None), {}, TypeError, "multiplicative: lr_lambda must be callable"),
    (S.join, (_ONE * 2, []), {}, ValueError, "join: invalid boundaries=[]"),
    (S.join, (_ONE * 2, [3, 5]), {}, ValueError, "join: invalid boundaries"),
    (S.join, ([], []), {}, ValueError, "join: invalid schedules=[]"),
    (S.join, ([0.1, 0.2], [3]), {}, TypeError, "join: schedules[0] must be callable"),
    (S.chain, (_ONE[0],), {}, TypeError, "chain: schedules must be a list"),
    (S.linear_warmup, (_ONE[0], -1), {}, ValueError, "linear_warmup: invalid warmup_steps=-1"),
    (S.linear_warmup, (_ONE[0], 5, -0.1), {}, ValueError, "invalid start_value=-0.1"),
    (S.linear_warmup, (0.1, 5), {}, TypeError, "linear_warmup: schedule must be callable"),
]


@pytest.mark.parametrize(
    "factory, args, kwargs, error, fragment",
    BAD_ARGS,
    ids=[f"{b[0].__name__}-{b[4].split('invalid ')[-1][:24]}" for b in BAD_ARGS],
)
def test_bad_arguments_raise_naming_the_factory_and_the_argument(
    factory, args, kwargs, error, fragment
):
    with pytest.raises(error) as info:
        factory(*args, **kwargs)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{factory.__name__}: ")


def test_bad_step_types_raise_type_error():
    with pytest.raises(TypeError, match="constant: step must be an int or an array, not bool"):
        S.constant(0.1)(True)
    with pytest.raises(TypeError, match="noam: step must be an int or an array, got str"):
        S.noam(1.0, 8, 4)("3")
    with pytest.raises(TypeError, match="step must be an integer or floating array"):
        S.constant(0.1)(np.asarray(True))


# --- steps: whole numbers >= 0, checked wherever values can be read (issue 15 A, C) ---------
def _owner(case: str) -> str:
    """The factory behind a CASES entry (the longest public name it starts with)."""
    return max((n for n in S.__all__ if case.startswith(n)), key=len)


@pytest.mark.parametrize("name", CASES)
def test_negative_int_step_is_a_value_error_naming_the_schedule(name):
    sched = CASES[name][0]()
    for step in (-1, -7, np.int64(-3), -2.0):
        expected = re.escape(f"{_owner(name)}: invalid step={step!r}: ")
        with pytest.raises(ValueError, match=f"^{expected}"):
            sched(step)


@pytest.mark.parametrize("name", CASES)
def test_negative_array_step_is_a_value_error_on_every_backend(name, backend):
    from conftest import to_backend

    if backend == "cupy":
        pytest.skip("arrays on a GPU are not read (a host sync per step); documented")
    sched = CASES[name][0]()
    for dtype in ("int64", "float32"):
        with pytest.raises(ValueError, match=rf"^{_owner(name)}: invalid step=-3(\.0)?: "):
            sched(to_backend(backend, np.asarray(-3), dtype))
    with pytest.raises(ValueError, match=r"invalid step=<array holding -2>"):
        sched(to_backend(backend, np.asarray([1, -2, 3]), "int32"))


BAD_STEPS = {"2.5": 2.5, "inf": INF, "-inf": -INF, "nan": NAN, "1e400": 10**400}


@pytest.mark.parametrize("step", BAD_STEPS.values(), ids=BAD_STEPS)
def test_non_integral_infinite_or_huge_number_steps_are_value_errors(step):
    # before: "math domain error" (inf), OverflowError (10**400), a rate at step 2.5
    for make, _ in CASES.values():
        with pytest.raises(ValueError, match=r"^\w+: invalid step="):
            make()(step)
    assert S.cosine_decay(0.1, 10, alpha=0.5)(1e300) == 0.05  # whole, if huge: valid


def test_array_steps_must_be_whole_and_finite(backend):
    from conftest import to_backend

    if backend == "cupy":
        pytest.skip("arrays on a GPU are not read")
    sched = S.cosine_decay(0.1, 10)
    for bad in (2.5, INF, NAN):
        with pytest.raises(ValueError, match=r"^cosine_decay: invalid step="):
            sched(to_backend(backend, np.asarray(bad), "float64"))


def test_traced_negative_steps_are_not_checked_nor_clamped(jax_x64):
    # documented: a traced step cannot be read; the formula's value comes back
    import jax
    import jax.numpy as jnp

    got = float(jax.jit(S.inverse_time_decay(0.1, 0.25))(jnp.asarray(-2)))
    assert got == pytest.approx(0.1 / (1 - 0.5), rel=1e-6)


def test_overflowing_rates_are_value_errors_naming_the_step():
    grow = S.exponential_decay(0.1, 1.01)
    assert grow(1000) == pytest.approx(0.1 * 1.01**1000, rel=1e-12)
    with pytest.raises(ValueError, match=r"^exponential_decay: invalid step=1000000: the rate"):
        grow(10**6)  # before: OverflowError
    at_million = r"exponential_decay: invalid step=1000000: the rate"
    with pytest.raises(ValueError, match=at_million), np.errstate(over="ignore"):
        grow(np.asarray(10**6))  # before: inf
    with pytest.raises(ValueError, match=r"^lambda_schedule: invalid step=3: the rate"):
        S.lambda_schedule(0.1, lambda t: -1.0)(3)
    # triangular2 halves the amplitude each cycle: 2.0 ** 5000 overflowed
    assert S.cyclic(0.01, 0.1, 1, mode="triangular2")(10_001) == 0.01


# --- precision at large steps (issue 15 C) ------------------------------------------------
def test_large_float32_steps_keep_the_phase(backend):
    """The phase of a periodic schedule is reduced before the float arithmetic: a
    float32 step of 1e9 (exactly representable) is a whole number of periods. Before:
    ``pi * 1e9 / 100`` in float32 gave 0.0553 instead of 0.1."""
    from conftest import to_backend, to_numpy

    def at(sched, step):
        return float(to_numpy(sched(to_backend(backend, np.asarray(step), "float32"))))

    assert at(S.cosine_annealing(0.1, 100), 10**9) == pytest.approx(0.1, rel=1e-6)
    # float32 steps near 1e9 are multiples of 64: 10**9 + 64 is half a period of 128
    assert at(S.cosine_annealing(0.1, 64), 10**9 + 64) == pytest.approx(0.0, abs=1e-8)
    assert at(S.cosine_warm_restarts(0.1, 8), 2**30) == pytest.approx(0.1, rel=1e-6)
    # 2**30 is a whole number of cycles of 2**10 steps: the cycle starts at base_lr
    assert at(S.cyclic(0.01, 0.1, 2**9), 2**30) == pytest.approx(0.01, rel=1e-6)


def test_large_int32_steps_under_jax_without_x64():
    """jax without x64 evaluates an int32 step in float32: the period, the cycle and the
    boundaries are computed on the integers first (before: 0.0553 for 0.1; a milestone
    of 2**24 + 1 reached one step early)."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(False):
        step = jnp.asarray(10**9, dtype=jnp.int32)
        assert step.dtype == jnp.int32
        for fn in (lambda s: s, jax.jit):
            assert float(fn(S.cosine_annealing(0.1, 100))(step)) == pytest.approx(0.1, rel=1e-6)
            cyc = float(fn(S.cyclic(0.01, 0.1, 7, 3))(step))  # 10**9 % 10 == 0: cycle start
            assert cyc == pytest.approx(0.01, rel=1e-6)
            late = jnp.asarray(2**24, dtype=jnp.int32)
            assert float(fn(S.multistep_decay(1.0, [2**24 + 1], 0.5))(late)) == 1.0
            assert float(fn(S.piecewise_decay([2**24 + 1], [1.0, 0.5]))(late)) == 1.0
            poly = float(fn(S.polynomial_decay(1.0, 3, 0.0, 1.0, cycle=True))(late + 2))
            assert poly == pytest.approx(1 - (2**24 + 2) / (3 * (2**24 // 3 + 1)), abs=1e-6)


def test_python_int_steps_reduce_the_phase_exactly():
    assert S.cosine_annealing(0.1, 100)(10**20) == 0.1
    assert S.cosine_annealing(0.1, 7, 0.01)(7 * (2 * 10**15 + 1)) == pytest.approx(0.01)
    assert S.cyclic(0.01, 0.1, 3)(6 * 10**18 + 3) == pytest.approx(0.1, rel=1e-12)
    assert S.step_decay(1.0, 3, 0.5)(2**60) == 0.0


# --- properties (hypothesis, seeded and bounded) -------------------------------------------
# For valid random arguments and steps >= 0 every factory gives a finite rate >= 0 equal
# to a float64 reference written from the equation in its docstring; with one argument
# made invalid it raises ValueError/TypeError naming the factory and that argument.
V, T = ValueError, TypeError


class Arg(NamedTuple):
    """How to draw a valid value of one argument, and invalid values with their error."""

    valid: Any
    invalid: tuple[tuple[Any, type], ...]


def _rate(hi: float = 2.0) -> Arg:
    bad = ((-0.1, V), (-1e-300, V), (NAN, V), (INF, V), ("0.1", T), (True, T), (None, T))
    return Arg(st.floats(0.0, hi), bad)


def _positive(lo: float, hi: float) -> Arg:
    return Arg(st.floats(lo, hi), ((0.0, V), (-0.5, V), (NAN, V), (INF, V), ("1", T)))


def _unit() -> Arg:
    return Arg(st.floats(0.0, 1.0), ((-0.01, V), (1.01, V), (NAN, V), ("0.5", T), (None, T)))


def _count(lo: int, hi: int) -> Arg:
    bad = ((lo - 1, V), (2.5, V), (INF, V), (NAN, V), ("3", T), (True, T), (None, T))
    return Arg(st.integers(lo, hi), bad)


def _flag() -> Arg:
    return Arg(st.booleans(), ((1, T), ("true", T), (None, T)))


def _choice(*options: str) -> Arg:
    return Arg(st.sampled_from(options), (("nope", V), (1, T), (None, T)))


def _ordered(low: str, high: str):
    """A fix-up: swap two drawn values so that ``low <= high``."""

    def fix(kw: dict) -> dict:
        if kw[low] > kw[high]:
            kw[low], kw[high] = kw[high], kw[low]
        return kw

    return fix


def _anneal_ref(kw: dict, values: list[float], t: int) -> float:
    """one_cycle's docstring: phases ending at pT-1 (, 2pT-2), T-1, cos or linear."""
    total, pct = kw["total_steps"], kw["pct_start"]
    knots = [0.0, pct * total - 1, 2 * pct * total - 2, total - 1.0]
    if not kw["three_phase"]:
        knots = [knots[0], knots[1], knots[3]]
    i = next((k for k in range(1, len(knots) - 1) if t <= knots[k]), len(knots) - 1)
    span = knots[i] - knots[i - 1]
    held = 1.0 if i == len(knots) - 1 else 0.0  # an empty phase: its end (hold) or start
    x = held if span <= 0 else min((t - knots[i - 1]) / span, 1.0)
    a, b = values[i - 1], values[i]
    if kw["anneal_strategy"] == "cos":
        return b + (a - b) / 2 * (1 + math.cos(math.pi * x))
    return a + (b - a) * x


def _restarts_ref(kw: dict, t: int) -> float:
    cur, period = t, kw["T_0"]
    while cur >= period:  # S_i <= t < S_{i+1}, T_i = T_0 T_mult^i
        cur, period = cur - period, period * kw["T_mult"]
    half = (1 + math.cos(math.pi * cur / period)) / 2
    return kw["eta_min"] + (kw["base_lr"] - kw["eta_min"]) * half


def _cyclic_ref_kw(kw: dict, t: int) -> float:
    up = kw["step_size_up"]
    down = up if kw["step_size_down"] is None else kw["step_size_down"]
    total = up + down
    c = math.floor(1 + t / total)
    x = 1 + t / total - c
    r = up / total
    s = x / r if x <= r else (x - 1) / (r - 1)
    g = {"triangular": 1.0, "triangular2": 2.0 ** -(c - 1), "exp_range": kw["gamma"] ** t}
    return kw["base_lr"] + (kw["max_lr"] - kw["base_lr"]) * s * g[kw["mode"]]


def _poly_ref_one(kw: dict, t: int) -> float:
    d, span = kw["decay_steps"], kw["base_lr"] - kw["end_lr"]
    frac = t / (d * max(1, math.ceil(t / d))) if kw["cycle"] else min(t, d) / d
    return span * (1 - frac) ** kw["power"] + kw["end_lr"]


def _noam_ref_one(kw: dict, t: int) -> float:
    decay = 1.0 if t == 0 else t**-0.5
    return kw["base_lr"] * kw["d_model"] ** -0.5 * min(decay, t * kw["warmup_steps"] ** -1.5)


#: factory -> (arguments, fix-up, float64 reference from the docstring's equation)
SPECS: dict[str, tuple[dict[str, Arg], Any, Any]] = {}
if st is not None:
    SPECS = {
        "constant": (
            {"base_lr": _rate(), "factor": _unit(), "total_iters": _count(0, 50)},
            None,
            lambda kw, t: kw["base_lr"] * (kw["factor"] if t < kw["total_iters"] else 1.0),
        ),
        "step_decay": (
            {"base_lr": _rate(), "step_size": _count(1, 40), "gamma": _positive(1e-3, 1.2)},
            None,
            lambda kw, t: kw["base_lr"] * kw["gamma"] ** (t // kw["step_size"]),
        ),
        "exponential_decay": (
            {"base_lr": _rate(), "gamma": _positive(0.5, 1.05)},
            None,
            lambda kw, t: kw["base_lr"] * kw["gamma"] ** t,
        ),
        "inverse_time_decay": (
            {"base_lr": _rate(), "gamma": _positive(1e-4, 10.0)},
            None,
            lambda kw, t: kw["base_lr"] / (1 + kw["gamma"] * t),
        ),
        "natural_exp_decay": (
            {"base_lr": _rate(), "gamma": _positive(1e-4, 10.0)},
            None,
            lambda kw, t: kw["base_lr"] * math.exp(-kw["gamma"] * t),
        ),
        "polynomial_decay": (
            {
                "base_lr": _rate(),
                "decay_steps": _count(1, 60),
                "end_lr": _rate(0.5),
                "power": _rate(3.0),
                "cycle": _flag(),
            },
            None,
            _poly_ref_one,
        ),
        "linear": (
            {
                "base_lr": _rate(),
                "start_factor": _rate(),
                "end_factor": _rate(),
                "total_iters": _count(1, 60),
            },
            None,
            lambda kw, t: (
                kw["base_lr"]
                * (
                    kw["start_factor"]
                    + (kw["end_factor"] - kw["start_factor"])
                    * min(t, kw["total_iters"])
                    / kw["total_iters"]
                )
            ),
        ),
        "noam": (
            {"base_lr": _rate(), "d_model": _count(1, 1024), "warmup_steps": _count(1, 500)},
            None,
            _noam_ref_one,
        ),
        "cosine_annealing": (
            {"base_lr": _rate(), "T_max": _count(1, 200), "eta_min": _rate(0.5)},
            None,
            lambda kw, t: (
                kw["eta_min"]
                + (kw["base_lr"] - kw["eta_min"]) * (1 + math.cos(math.pi * t / kw["T_max"])) / 2
            ),
        ),
        "cosine_decay": (
            {"base_lr": _rate(), "decay_steps": _count(1, 200), "alpha": _unit()},
            None,
            lambda kw, t: (
                kw["base_lr"]
                * (
                    (1 - kw["alpha"])
                    * (1 + math.cos(math.pi * min(t, kw["decay_steps"]) / kw["decay_steps"]))
                    / 2
                    + kw["alpha"]
                )
            ),
        ),
        "cosine_warm_restarts": (
            {
                "base_lr": _rate(),
                "T_0": _count(1, 50),
                "T_mult": _count(1, 4),
                "eta_min": _rate(0.5),
            },
            None,
            _restarts_ref,
        ),
        "one_cycle": (
            {
                "max_lr": _rate(),
                "total_steps": _count(1, 300),
                "pct_start": _unit(),
                "anneal_strategy": _choice("cos", "linear"),
                "div_factor": _positive(1.0, 100.0),
                "final_div_factor": _positive(1.0, 1e4),
                "three_phase": _flag(),
            },
            None,
            lambda kw, t: _anneal_ref(
                kw,
                [
                    (init := kw["max_lr"] / kw["div_factor"]),
                    kw["max_lr"],
                    *([init] if kw["three_phase"] else []),
                    init / kw["final_div_factor"],
                ],
                t,
            ),
        ),
        "one_cycle_momentum": (
            {
                "total_steps": _count(1, 300),
                "base_momentum": _rate(1.0),
                "max_momentum": _rate(1.0),
                "pct_start": _unit(),
                "anneal_strategy": _choice("cos", "linear"),
                "three_phase": _flag(),
            },
            _ordered("base_momentum", "max_momentum"),
            lambda kw, t: _anneal_ref(
                kw,
                [kw["max_momentum"], kw["base_momentum"], kw["max_momentum"]]
                + ([kw["max_momentum"]] if kw["three_phase"] else []),
                t,
            ),
        ),
        "cyclic": (
            {
                "base_lr": _rate(),
                "max_lr": _rate(),
                "step_size_up": _count(1, 40),
                "step_size_down": Arg(st.none() | st.integers(1, 40), ((0, V), (1.5, V))),
                "mode": _choice("triangular", "triangular2", "exp_range"),
                "gamma": Arg(st.floats(0.5, 1.0), ((0.0, V), (1.5, V), (NAN, V), ("1", T))),
            },
            _ordered("base_lr", "max_lr"),
            _cyclic_ref_kw,
        ),
    }
    _INNER = {  # schedules to compose, with their references
        S.constant(0.3): lambda t: 0.3,
        S.exponential_decay(0.2, 0.99): lambda t: 0.2 * 0.99**t,
        S.cosine_decay(0.1, 50, 0.1): lambda t: (
            0.1 * (0.9 * (1 + math.cos(math.pi * min(t, 50) / 50)) / 2 + 0.1)
        ),
    }
    _LAMBDAS = {  # user factors that work on ints and on float arrays alike
        "halving": lambda t: 0.5 ** (t // 10),
        "inverse": lambda t: 1 / (1 + t),
        "constant": lambda t: 0.99,
    }
    _inner = st.sampled_from(list(_INNER))
    _lam = st.sampled_from(list(_LAMBDAS.values()))
    _not_callable = ((3.0, T), (None, T))
    SPECS |= {
        "multistep_decay": (
            {
                "base_lr": _rate(),
                "milestones": Arg(
                    st.lists(st.integers(0, 300), max_size=5, unique=True).map(sorted),
                    (([5, 3], V), ([-1], V), ([2.5], V), (5, T), ("ab", T)),
                ),
                "gamma": _positive(1e-3, 1.5),
            },
            None,
            lambda kw, t: kw["base_lr"] * kw["gamma"] ** sum(m <= t for m in kw["milestones"]),
        ),
        "piecewise_decay": (
            {
                "boundaries": Arg(
                    st.lists(st.integers(0, 300), max_size=5, unique=True).map(sorted),
                    (([5, 3], V), ([-1], V), (5, T)),
                ),
                "values": Arg(
                    st.lists(st.floats(0.0, 2.0), min_size=6, max_size=6),
                    (([-0.1] * 6, V), ([NAN] * 6, V), (0.1, T), ([], V)),
                ),
            },
            lambda kw: {**kw, "values": kw["values"][: len(kw["boundaries"]) + 1]},
            lambda kw, t: kw["values"][sum(b <= t for b in kw["boundaries"])],
        ),
        "lambda_schedule": (
            {"base_lr": _rate(), "lr_lambda": Arg(_lam, _not_callable)},
            None,
            lambda kw, t: kw["base_lr"] * kw["lr_lambda"](t),
        ),
        "multiplicative": (
            {"base_lr": _rate(), "lr_lambda": Arg(_lam, _not_callable)},
            None,
            lambda kw, t: kw["base_lr"] * math.prod(kw["lr_lambda"](k) for k in range(1, t + 1)),
        ),
        "linear_warmup": (
            {
                "schedule": Arg(_inner, _not_callable),
                "warmup_steps": _count(0, 50),
                "start_value": _rate(0.5),
            },
            None,
            lambda kw, t: (
                kw["start_value"]
                + (_INNER[kw["schedule"]](0) - kw["start_value"]) * t / kw["warmup_steps"]
                if t < kw["warmup_steps"]
                else _INNER[kw["schedule"]](t - kw["warmup_steps"])
            ),
        ),
        "join": (
            {
                "schedules": Arg(
                    st.lists(_inner, min_size=2, max_size=2),
                    (([], V), ([0.1, 0.2], T), (None, T)),
                ),
                "boundaries": Arg(
                    st.integers(0, 100).map(lambda b: [b]), (([], V), ([-1], V), (3, T))
                ),
            },
            None,
            lambda kw, t: (
                _INNER[kw["schedules"][0]](t)
                if t < kw["boundaries"][0]
                else _INNER[kw["schedules"][1]](t - kw["boundaries"][0])
            ),
        ),
        "chain": (
            {"schedules": Arg(st.lists(_inner, min_size=1, max_size=3), (([], V), (None, T)))},
            None,
            lambda kw, t: math.prod(_INNER[s](t) for s in kw["schedules"]),
        ),
    }
STEPS = st.integers(0, 400) | st.integers(0, 5000) if st is not None else None


def test_properties_cover_every_factory():
    if st is not None:
        assert set(SPECS) == {n for n in S.__all__ if n not in ("SCHEDULES", "Schedule")}


def _draw_kwargs(data: Any, name: str) -> dict:
    args, fix, _ = SPECS[name]
    kw = {arg: data.draw(spec.valid, label=arg) for arg, spec in args.items()}
    return fix(kw) if fix else kw


@pytest.mark.skipif(st is None, reason="needs hypothesis")
@pytest.mark.parametrize("name", sorted(SPECS))
def test_property_valid_arguments_give_the_docstring_rates(name):
    _, _, reference = SPECS[name]
    factory = getattr(S, name)

    @settings(derandomize=True, max_examples=25, deadline=None)
    @given(data=st.data())
    def check(data: Any) -> None:
        kw = _draw_kwargs(data, name)
        sched = factory(**kw)
        for t in data.draw(st.lists(STEPS, min_size=1, max_size=4), label="steps"):
            got = sched(t)
            assert type(got) is float and math.isfinite(got) and got >= 0.0, (kw, t, got)
            expected = reference(kw, t)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (kw, t)
            arr = float(sched(np.asarray(t)))  # the array path agrees (float64)
            assert arr == pytest.approx(got, rel=1e-12, abs=1e-15), (kw, t)

    check()


@pytest.mark.skipif(st is None, reason="needs hypothesis")
@pytest.mark.parametrize("name", sorted(SPECS))
def test_property_an_invalid_argument_is_named(name):
    args, _, _ = SPECS[name]
    factory = getattr(S, name)

    @settings(derandomize=True, max_examples=25, deadline=None)
    @given(data=st.data())
    def check(data: Any) -> None:
        kw = _draw_kwargs(data, name)
        arg = data.draw(st.sampled_from(sorted(args)), label="argument")
        value, error = data.draw(st.sampled_from(args[arg].invalid), label="invalid")
        kw[arg] = value
        with pytest.raises((ValueError, TypeError)) as info:
            factory(**kw)
        assert type(info.value) is error, (arg, value, info.value)
        message = str(info.value)
        assert message.startswith(f"{name}: "), message
        assert re.search(rf"\b{arg}\b", message), (arg, message)

    check()


def test_registry_lists_plain_factories():
    assert set(S.SCHEDULES) >= {"cosine_annealing", "one_cycle", "piecewise_decay", "noam"}
    assert "join" not in S.SCHEDULES and "lambda_schedule" not in S.SCHEDULES
    for factory in S.SCHEDULES.values():
        assert factory.__doc__ and "$$" in factory.__doc__ or "$" in factory.__doc__


def test_import_pulls_in_no_heavy_library():
    code = (
        "import sys, uniopt.schedules, uniopt.lr_scheduler, uniopt.plot\n"
        "bad = [m for m in ('torch', 'jax', 'cupy', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
