"""Pure schedules: closed forms written independently here in float64 numpy, the same
values from every array library, jax.jit without recompiles, argument checks."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from uniopt import schedules as S

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
BAD_ARGS = [
    (lambda: S.cosine_annealing(0.1, 0), "T_max"),
    (lambda: S.cosine_annealing(0.1, -5), "T_max"),
    (lambda: S.exponential_decay(0.1, 0.0), "gamma"),
    (lambda: S.exponential_decay(0.1, -0.5), "gamma"),
    (lambda: S.step_decay(0.1, 0), "step_size"),
    (lambda: S.step_decay(0.1, 10, gamma=0), "gamma"),
    (lambda: S.multistep_decay(0.1, [10, 5]), "milestones"),
    (lambda: S.multistep_decay(0.1, [5, 5]), "milestones"),
    (lambda: S.multistep_decay(0.1, [-1, 5]), "milestones"),
    (lambda: S.piecewise_decay([2, 4], [0.1, 0.2]), "values"),
    (lambda: S.piecewise_decay([4, 2], [0.1, 0.2, 0.3]), "boundaries"),
    (lambda: S.cyclic(0.01, 0.1, mode="sawtooth"), "mode"),
    (lambda: S.cyclic(0.01, 0.1, step_size_up=0), "step_size_up"),
    (lambda: S.cyclic(0.01, 0.1, mode="exp_range", gamma=0), "gamma"),
    (lambda: S.one_cycle(1.0, 100, anneal_strategy="cosine"), "anneal_strategy"),
    (lambda: S.one_cycle(1.0, 0), "total_steps"),
    (lambda: S.one_cycle(1.0, 100, pct_start=1.5), "pct_start"),
    (lambda: S.one_cycle(1.0, 100, div_factor=0), "div_factor"),
    (lambda: S.polynomial_decay(0.1, 0), "decay_steps"),
    (lambda: S.polynomial_decay(0.1, 10, power=-1), "power"),
    (lambda: S.cosine_decay(0.1, 0), "decay_steps"),
    (lambda: S.cosine_decay(0.1, 10, alpha=2.0), "alpha"),
    (lambda: S.cosine_warm_restarts(0.1, 0), "T_0"),
    (lambda: S.cosine_warm_restarts(0.1, 10, T_mult=0), "T_mult"),
    (lambda: S.cosine_warm_restarts(0.1, 10, T_mult=1.5), "T_mult"),
    (lambda: S.linear(0.1, -0.1), "start_factor"),
    (lambda: S.linear(0.1, total_iters=0), "total_iters"),
    (lambda: S.constant(0.1, factor=1.5), "factor"),
    (lambda: S.noam(1.0, 0, 10), "d_model"),
    (lambda: S.noam(1.0, 512, 0), "warmup_steps"),
    (lambda: S.inverse_time_decay(0.1, 0), "gamma"),
    (lambda: S.natural_exp_decay(0.1, -1), "gamma"),
    (lambda: S.join([S.constant(0.1), S.constant(0.2)], []), "boundaries"),
    (lambda: S.join([S.constant(0.1), S.constant(0.2)], [3, 5]), "boundaries"),
    (lambda: S.join([], []), "schedules"),
    (lambda: S.linear_warmup(S.constant(0.1), -1), "warmup_steps"),
    (lambda: S.exponential_decay(float("nan"), 0.9), "base_lr"),
]


@pytest.mark.parametrize("make, argument", BAD_ARGS, ids=[a for _, a in BAD_ARGS])
def test_bad_arguments_raise_value_error_naming_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="lr_lambda"):
        S.lambda_schedule(0.1, 3.0)
    with pytest.raises(TypeError, match="step_size"):
        S.step_decay(0.1, "10")
    with pytest.raises(TypeError, match="bool"):
        S.constant(0.1)(True)


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
