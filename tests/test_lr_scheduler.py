"""Stateful schedulers: torch's lr sequences (300 steps, two groups, state_dict round trip
in the middle), closed forms for the OneFlow/Paddle-only ones, agreement with the pure
schedules, the optimizer contract and argument checks; load_state_dict held to the
constructor's rules (bad values, unknown and missing keys refused, the scheduler left
exactly as it was), with a hypothesis property over junk states."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import pytest

from uniopt import lr_scheduler as U
from uniopt import schedules as S

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - the property test skips without it
    st = None

LRS = [0.1, 0.01]
STEPS = 300
SAVE_AT = 150


class FakeOpt:
    """The optimizer contract: ``param_groups``, dicts with a float ``"lr"``."""

    def __init__(self, lrs=LRS, **extra):
        self.param_groups = [{"lr": lr, **copy.deepcopy(extra)} for lr in lrs]


def _plain(obj) -> bool:
    """Only plain Python data: numbers, strings, None, and lists/tuples/dicts of them."""
    if obj is None or isinstance(obj, bool | int | float | str):
        return True
    if isinstance(obj, list | tuple):
        return all(_plain(x) for x in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    return False


def _record(opt, key="lr"):
    return [g.get(key, 0.0) if key != "betas" else g["betas"][0] for g in opt.param_groups]


def run_ours(make, metrics=None, extra=None, key="lr"):
    """Our sequence with a save/restore at SAVE_AT into a fresh optimizer + scheduler."""
    extra = extra or {}
    opt = FakeOpt(**extra)
    sched = make(opt, U)
    out = [_record(opt, key)]
    for t in range(SAVE_AT):
        sched.step(metrics[t]) if metrics is not None else sched.step()
        out.append(_record(opt, key))
    state = sched.state_dict()
    assert _plain(state), state
    state = pickle.loads(pickle.dumps(state))
    groups = copy.deepcopy(opt.param_groups)  # what optimizer.state_dict() would carry
    opt2 = FakeOpt(**extra)
    sched2 = make(opt2, U)
    opt2.param_groups = groups  # optimizer.load_state_dict(...)
    sched2.load_state_dict(state)
    for t in range(SAVE_AT, STEPS):
        sched2.step(metrics[t]) if metrics is not None else sched2.step()
        out.append(_record(opt2, key))
    assert sched2.get_last_lr() == _record(opt2)
    return np.array(out)


def run_torch(make, metrics=None, momentum=None, key="lr"):
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler as T

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in LRS]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, LRS, strict=True)]
    if key == "betas":
        opt = torch.optim.Adam(groups, lr=LRS[0])
    else:
        opt = torch.optim.SGD(groups, lr=LRS[0], momentum=momentum or 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt, T)
        out = [_record(opt, key)]
        for t in range(STEPS):
            opt.step()
            sched.step(metrics[t]) if metrics is not None else sched.step()
            out.append(_record(opt, key))
    return np.array(out)


def _poly(opt, M):
    if M is U:
        return M.PolynomialLR(opt, steps=200, end_learning_rate=0.0, power=2.0)
    return M.PolynomialLR(opt, total_iters=200, power=2.0)


class Halving:
    """A callable object (its __dict__ is saved by state_dict, like torch)."""

    def __init__(self, every):
        self.every = every

    def __call__(self, step):
        return 0.5 ** (step // self.every)


TORCH_CASES = {
    "StepLR": lambda o, M: M.StepLR(o, step_size=30, gamma=0.5),
    "MultiStepLR": lambda o, M: M.MultiStepLR(o, milestones=[30, 80, 200], gamma=0.3),
    "ExponentialLR": lambda o, M: M.ExponentialLR(o, gamma=0.98),
    "CosineAnnealingLR": lambda o, M: M.CosineAnnealingLR(o, T_max=70, eta_min=0.001),
    "CosineAnnealingLR-eta0": lambda o, M: M.CosineAnnealingLR(o, T_max=70),
    "LambdaLR": lambda o, M: M.LambdaLR(o, [lambda s: 0.97**s, Halving(40)]),
    "MultiplicativeLR": lambda o, M: M.MultiplicativeLR(o, lambda s: 0.99 if s % 3 else 0.95),
    "ConstantLR": lambda o, M: M.ConstantLR(o, factor=0.3, total_iters=40),
    "LinearLR": lambda o, M: M.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=50),
    "PolynomialLR": _poly,
    "OneCycleLR": lambda o, M: M.OneCycleLR(o, max_lr=[1.0, 0.1], total_steps=STEPS + 1),
    "OneCycleLR-three-linear": lambda o, M: M.OneCycleLR(
        o,
        max_lr=[1.0, 0.1],
        total_steps=STEPS + 1,
        pct_start=0.25,
        anneal_strategy="linear",
        three_phase=True,
    ),
    "CyclicLR": lambda o, M: M.CyclicLR(
        o, base_lr=[0.01, 0.001], max_lr=[0.1, 0.01], step_size_up=20, step_size_down=30
    ),
    "CyclicLR-triangular2": lambda o, M: M.CyclicLR(
        o, base_lr=[0.01, 0.001], max_lr=[0.1, 0.01], step_size_up=20, mode="triangular2"
    ),
    "CyclicLR-exp_range": lambda o, M: M.CyclicLR(
        o,
        base_lr=[0.01, 0.001],
        max_lr=[0.1, 0.01],
        step_size_up=15,
        step_size_down=25,
        mode="exp_range",
        gamma=0.995,
    ),
    "CosineAnnealingWarmRestarts": lambda o, M: M.CosineAnnealingWarmRestarts(
        o, T_0=10, T_mult=2, eta_min=0.001
    ),
    "CosineAnnealingWarmRestarts-1": lambda o, M: M.CosineAnnealingWarmRestarts(o, T_0=17),
    "SequentialLR": lambda o, M: M.SequentialLR(
        o,
        [M.LinearLR(o, start_factor=0.1, total_iters=10), M.ExponentialLR(o, gamma=0.99)],
        milestones=[10],
    ),
    "SequentialLR-3": lambda o, M: M.SequentialLR(
        o,
        [
            M.ConstantLR(o, factor=0.5, total_iters=30),
            M.CosineAnnealingLR(o, T_max=100, eta_min=0.001),
            M.StepLR(o, step_size=25, gamma=0.5),
        ],
        milestones=[20, 120],
    ),
    "ChainedScheduler": lambda o, M: M.ChainedScheduler(
        [M.ConstantLR(o, factor=0.1, total_iters=20), M.ExponentialLR(o, gamma=0.99)]
    ),
    "ChainedScheduler-3": lambda o, M: M.ChainedScheduler(
        [
            M.LinearLR(o, start_factor=0.2, total_iters=30),
            M.StepLR(o, step_size=40, gamma=0.5),
            M.MultiStepLR(o, milestones=[100, 250], gamma=0.3),
        ]
    ),
}


@pytest.mark.parametrize("name", TORCH_CASES)
def test_matches_torch_with_state_dict_round_trip(name):
    make = TORCH_CASES[name]
    momentum = name.startswith(("OneCycleLR", "CyclicLR"))
    expected = run_torch(make, momentum=0.9 if momentum else None)
    got = run_ours(make, extra={"momentum": 0.9} if momentum else None)
    assert got.shape == (STEPS + 1, 2)
    assert len(np.unique(got[:, 0])) > 1  # the schedule actually moves
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    if momentum:  # momentum cycles inversely to the rate, as torch does
        expected = run_torch(make, momentum=0.9, key="momentum")
        got = run_ours(make, extra={"momentum": 0.9}, key="momentum")
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["OneCycleLR", "CyclicLR"])
def test_beta1_cycling_matches_torch_adam(name):
    make = TORCH_CASES[name]
    expected = run_torch(make, key="betas")
    got = run_ours(make, extra={"betas": (0.9, 0.999)}, key="betas")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def _plateau_metrics():
    rng = np.random.default_rng(0)
    return [
        float(v)
        for v in np.concatenate(
            [
                np.linspace(1.0, 0.5, 40),
                0.5 + 0.01 * rng.standard_normal(60),
                np.linspace(0.5, 0.2, 50),
                np.full(60, 0.2),
                0.2 + 0.05 * rng.standard_normal(90),
            ]
        )
    ]


PLATEAU_CASES = {
    "min-rel": dict(patience=5, cooldown=3, threshold=0.01, min_lr=[1e-4, 1e-6]),
    "max-abs": dict(mode="max", threshold_mode="abs", patience=2, factor=0.5, min_lr=1e-5),
    "min-abs-eps": dict(threshold_mode="abs", threshold=0.02, patience=0, factor=0.7, eps=1e-3),
}


@pytest.mark.parametrize("name", PLATEAU_CASES)
def test_reduce_lr_on_plateau_matches_torch(name):
    kwargs = PLATEAU_CASES[name]
    metrics = _plateau_metrics()
    if kwargs.get("mode") == "max":
        metrics = [-m for m in metrics]

    def make(opt, M):
        return M.ReduceLROnPlateau(opt, **kwargs)

    expected = run_torch(make, metrics=metrics)
    got = run_ours(make, metrics=metrics)
    assert len(np.unique(got[:, 0])) >= 3
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_one_cycle_raises_past_total_steps_like_torch():
    sched = U.OneCycleLR(FakeOpt(), max_lr=1.0, total_steps=10, cycle_momentum=False)
    for _ in range(10):
        sched.step()
    assert sched.last_step == 10
    with pytest.raises(ValueError, match="total steps is 10"):
        sched.step()
    assert sched.last_step == 10  # a failed step leaves the state alone


# --- OneFlow / Paddle schedulers against their documented formulas -------------------------
def _sequence(sched, n):
    out = [sched.get_last_lr()]
    for _ in range(n - 1):
        sched.step()
        out.append(sched.get_last_lr())
    return np.array(out)


def _t(n):
    return np.arange(n, dtype=np.float64)[:, None]


def test_cosine_decay_lr_formula():
    n, steps, alpha = 80, 50, 0.1
    got = _sequence(U.CosineDecayLR(FakeOpt(), decay_steps=steps, alpha=alpha), n)
    t = _t(n)
    cos_decay = 0.5 * (1 + np.cos(np.pi * t / steps))
    factor = np.where(t < steps, (1 - alpha) * cos_decay + alpha, alpha)
    np.testing.assert_allclose(got, factor * np.array(LRS), rtol=1e-12)


@pytest.mark.parametrize("cycle", [False, True])
def test_polynomial_lr_formula(cycle):
    n, steps, end, power = 100, 30, 1e-4, 2.0
    sched = U.PolynomialLR(FakeOpt(), steps=steps, end_learning_rate=end, power=power, cycle=cycle)
    got = _sequence(sched, n)
    t = _t(n)
    if cycle:  # OneFlow/Paddle: decay_steps * ceil(t / decay_steps), multiplier 1 at t = 0
        decay = steps * np.where(t == 0, 1.0, np.ceil(t / steps))
        cur = t
    else:
        decay, cur = steps, np.minimum(t, steps)
    expected = (np.array(LRS) - end) * (1 - cur / decay) ** power + end
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_piecewise_decay_paddle_example():
    sched = U.PiecewiseDecay(FakeOpt(), boundaries=[2, 4, 6, 8], values=[0.2, 0.4, 0.6, 0.8, 1.0])
    got = _sequence(sched, 12)[:, 0]
    assert got.tolist() == [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0]


def test_noam_inverse_time_natural_exp_formulas():
    n = 60
    t = _t(n)
    got = _sequence(U.NoamDecay(FakeOpt(), d_model=256, warmup_steps=20), n)
    a = np.where(t == 0, 1.0, np.maximum(t, 1) ** -0.5)
    expected = np.array(LRS) * 256**-0.5 * np.minimum(a, 20**-1.5 * t)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    got = _sequence(U.InverseTimeDecay(FakeOpt(), gamma=0.3), n)
    np.testing.assert_allclose(got, np.array(LRS) / (1 + 0.3 * t), rtol=1e-12)
    got = _sequence(U.NaturalExpDecay(FakeOpt(), gamma=0.05), n)
    np.testing.assert_allclose(got, np.array(LRS) * np.exp(-0.05 * t), rtol=1e-12)


def test_warmup_lr_oneflow_examples():
    # OneFlow's WarmupLR docstring, examples 1 and 2 (base lr 0.001)
    sched = U.WarmupLR(
        FakeOpt([0.001]), warmup_factor=0.5, warmup_iters=5, warmup_method="constant"
    )
    np.testing.assert_allclose(_sequence(sched, 8)[:, 0], [5e-4] * 5 + [1e-3] * 3, rtol=1e-12)
    sched = U.WarmupLR(FakeOpt([0.001]), warmup_factor=0.5, warmup_iters=5)
    expected = [5e-4, 6e-4, 7e-4, 8e-4, 9e-4, 1e-3, 1e-3, 1e-3]
    np.testing.assert_allclose(_sequence(sched, 8)[:, 0], expected, rtol=1e-12)


def _cos_decay(base, t, steps, alpha):
    t = np.minimum(t, steps)
    return base * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * t / steps)) + alpha)


@pytest.mark.parametrize("prefix", [False, True])
def test_warmup_lr_wrapping_a_scheduler(prefix):
    opt = FakeOpt()
    inner = U.CosineDecayLR(opt, decay_steps=40, alpha=0.1)
    sched = U.WarmupLR(inner, warmup_factor=0.2, warmup_iters=10, warmup_prefix=prefix)
    got = _sequence(sched, 80)
    t, base = _t(80), np.array(LRS)
    if prefix:  # ramp to the base rate, then the schedule from its own step 0
        warm = base * (0.2 + 0.8 * t / 10)
        after = _cos_decay(base, t - 10, 40, 0.1)
    else:  # ramp to the schedule's value at step 10, which then continues at step t
        end = _cos_decay(1.0, 10, 40, 0.1)
        warm = base * (0.2 + (end - 0.2) * t / 10)
        after = _cos_decay(base, t, 40, 0.1)
    np.testing.assert_allclose(got, np.where(t < 10, warm, after), rtol=1e-12)
    # OneFlow docstring example 3's values after the warmup (0.000689, 0.000410)
    flow = U.WarmupLR(U.CosineDecayLR(FakeOpt([0.001]), 5, alpha=0.1), 0.5, warmup_iters=2)
    np.testing.assert_allclose(_sequence(flow, 4)[2:, 0], [6.8906e-4, 4.1094e-4], rtol=1e-4)


def test_sequential_lr_without_interval_rescaling_shares_the_step():
    opt = FakeOpt()
    sched = U.SequentialLR(
        opt,
        [U.ConstantLR(opt, factor=0.5, total_iters=100), U.ExponentialLR(opt, gamma=0.9)],
        milestones=[10],
        interval_rescaling=False,
    )
    got = _sequence(sched, 30)
    t = _t(30)
    expected = np.array(LRS) * np.where(t < 10, 0.5, 0.9**t)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


# --- pure and stateful forms agree ----------------------------------------------------------
PURE_PAIRS = [
    (lambda o: U.StepLR(o, 7, 0.5), lambda b: S.step_decay(b, 7, 0.5)),
    (lambda o: U.MultiStepLR(o, [3, 9], 0.2), lambda b: S.multistep_decay(b, [3, 9], 0.2)),
    (lambda o: U.ExponentialLR(o, 0.9), lambda b: S.exponential_decay(b, 0.9)),
    (lambda o: U.CosineAnnealingLR(o, 12, 0.001), lambda b: S.cosine_annealing(b, 12, 0.001)),
    (lambda o: U.CosineDecayLR(o, 12, 0.1), lambda b: S.cosine_decay(b, 12, 0.1)),
    (
        lambda o: U.PolynomialLR(o, 9, 1e-3, 2, True),
        lambda b: S.polynomial_decay(b, 9, 1e-3, 2, True),
    ),
    (lambda o: U.ConstantLR(o, 0.5, 4), lambda b: S.constant(b, 0.5, 4)),
    (lambda o: U.LinearLR(o, 0.1, 1.0, 9), lambda b: S.linear(b, 0.1, 1.0, 9)),
    (lambda o: U.LambdaLR(o, math.sqrt), lambda b: S.lambda_schedule(b, math.sqrt)),
    (lambda o: U.MultiplicativeLR(o, lambda k: 0.9), lambda b: S.multiplicative(b, lambda k: 0.9)),
    (lambda o: U.PiecewiseDecay(o, [3], [0.5, 0.2]), lambda b: S.piecewise_decay([3], [0.5, 0.2])),
    (lambda o: U.NoamDecay(o, 64, 5), lambda b: S.noam(b, 64, 5)),
    (lambda o: U.InverseTimeDecay(o, 0.5), lambda b: S.inverse_time_decay(b, 0.5)),
    (lambda o: U.NaturalExpDecay(o, 0.5), lambda b: S.natural_exp_decay(b, 0.5)),
    (lambda o: U.CosineAnnealingWarmRestarts(o, 3, 2), lambda b: S.cosine_warm_restarts(b, 3, 2)),
    (
        lambda o: U.OneCycleLR(o, 1.0, 40, cycle_momentum=False),
        lambda b: S.one_cycle(1.0, 40),
    ),
    (
        lambda o: U.CyclicLR(o, 0.01, 0.1, 4, cycle_momentum=False),
        lambda b: S.cyclic(0.01, 0.1, 4),
    ),
    (
        lambda o: U.WarmupLR(U.ExponentialLR(o, 0.9), 0.1, 5, warmup_prefix=True),
        lambda b: S.linear_warmup(S.exponential_decay(b, 0.9), 5, 0.1 * b),
    ),
    (
        lambda o: U.SequentialLR(o, [U.ConstantLR(o, 0.1, 9), U.ExponentialLR(o, 0.9)], [4]),
        lambda b: S.join([S.constant(b, 0.1, 9), S.exponential_decay(b, 0.9)], [4]),
    ),
    (
        lambda o: U.ChainedScheduler([U.ConstantLR(o, 0.1, 9), U.ExponentialLR(o, 0.9)]),
        lambda b: S.chain([S.constant(b, 0.1, 9), S.exponential_decay(1.0, 0.9)]),
    ),
]


@pytest.mark.parametrize("index", range(len(PURE_PAIRS)))
def test_stateful_equals_pure(index):
    make_sched, make_pure = PURE_PAIRS[index]
    opt = FakeOpt([0.1])
    sched = make_sched(opt)
    pure = make_pure(0.1)
    got = _sequence(sched, 30)[:, 0]
    np.testing.assert_allclose(got, [pure(t) for t in range(30)], rtol=1e-14)
    # get_lr(base_lr, step) is the closed form for one group
    for step in (0, 5, 17):
        assert sched.get_lr(sched.base_lrs[0], step) == pytest.approx(pure(step), rel=1e-14)
    # state_dict is plain data and a fresh scheduler continues identically from it
    state = sched.state_dict()
    assert _plain(state), state
    fresh = make_sched(FakeOpt([0.1]))
    fresh.load_state_dict(pickle.loads(pickle.dumps(state)))
    for _ in range(5):
        sched.step()
        fresh.step()
        assert fresh.get_last_lr() == sched.get_last_lr()


# --- the optimizer contract -------------------------------------------------------------------
def test_construction_sets_initial_lr_and_performs_the_initial_step():
    opt = FakeOpt()
    sched = U.StepLR(opt, step_size=2, gamma=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == LRS
    assert sched.last_step == 0 and sched.last_epoch == 0
    assert sched.get_last_lr() == LRS == [g["lr"] for g in opt.param_groups]
    sched.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.005]
    # a second scheduler keeps the original initial_lr (setdefault, like torch)
    other = U.ExponentialLR(opt, gamma=0.5)
    assert other.base_lrs == LRS and other.get_last_lr() == LRS


def test_resuming_with_last_step():
    with pytest.raises(KeyError, match="initial_lr"):
        U.StepLR(FakeOpt(), step_size=2, last_step=5)
    opt = FakeOpt()
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]
    sched = U.ExponentialLR(opt, gamma=0.5, last_step=2)
    assert sched.last_step == 3
    assert sched.get_last_lr() == pytest.approx([lr * 0.125 for lr in LRS], rel=1e-15)


def test_verbose_prints(capsys):
    sched = U.ExponentialLR(FakeOpt(), gamma=0.5, verbose=True)
    sched.step()
    out = capsys.readouterr().out
    assert "param_groups[1]" in out and "Last step 1" in out


def test_lambda_state_dict_saves_callable_objects_only():
    opt = FakeOpt()
    halving = Halving(10)
    sched = U.LambdaLR(opt, [lambda s: 1.0, halving])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None, {"every": 10}]
    halving.every = 3
    sched.load_state_dict(state)
    assert halving.every == 10


def test_cycle_momentum_needs_momentum_or_betas():
    with pytest.raises(ValueError, match="momentum"):
        U.OneCycleLR(FakeOpt(), max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match="momentum"):
        U.CyclicLR(FakeOpt(), base_lr=0.01, max_lr=0.1)
    U.OneCycleLR(FakeOpt(), max_lr=1.0, total_steps=10, cycle_momentum=False)


def test_warm_restarts_exposes_t_cur_and_t_i():
    sched = U.CosineAnnealingWarmRestarts(FakeOpt(), T_0=3, T_mult=2)
    seen = []
    for _ in range(12):
        seen.append((sched.T_cur, sched.T_i))
        sched.step()
    assert seen[:4] == [(0, 3), (1, 3), (2, 3), (0, 6)] and seen[9] == (0, 12)


# --- argument checks ----------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
V, T = ValueError, TypeError


#: (make, error, message fragment): every constructor argument out of range or of the wrong
#: type; each message names the scheduler and the argument as the constructor calls it
BAD = [
    (lambda: U.CosineAnnealingLR(FakeOpt(), T_max=0), V, "CosineAnnealingLR: invalid T_max=0"),
    (lambda: U.CosineAnnealingLR(FakeOpt(), T_max=2.5), V, "invalid T_max=2.5"),
    (lambda: U.CosineAnnealingLR(FakeOpt(), 10, eta_min=NAN), V, "invalid eta_min=nan"),
    (lambda: U.CosineAnnealingLR(FakeOpt(), 10, eta_min=-1e-3), V, "invalid eta_min=-0.001"),
    (lambda: U.CosineAnnealingLR(FakeOpt(), "10"), T, "T_max must be an integer"),
    (lambda: U.ExponentialLR(FakeOpt(), gamma=0.0), V, "ExponentialLR: invalid gamma=0.0"),
    (lambda: U.StepLR(FakeOpt(), step_size=0), V, "StepLR: invalid step_size=0"),
    (lambda: U.StepLR(FakeOpt(), step_size=INF), V, "StepLR: invalid step_size=inf"),
    (lambda: U.StepLR(FakeOpt(), step_size=3, gamma=-1), V, "StepLR: invalid gamma=-1"),
    (lambda: U.StepLR(FakeOpt(), 3, last_step=-2), V, "StepLR: invalid last_step=-2"),
    (lambda: U.StepLR(FakeOpt(), 3, last_step="x"), T, "StepLR: last_step must be an integer"),
    (lambda: U.StepLR(FakeOpt(), 3, verbose="yes"), T, "StepLR: verbose must be a bool"),
    (lambda: U.MultiStepLR(FakeOpt(), milestones=[5, 3]), V, "MultiStepLR: invalid milestones"),
    (lambda: U.ConstantLR(FakeOpt(), factor=2.0), V, "ConstantLR: invalid factor=2.0"),
    (lambda: U.ConstantLR(FakeOpt(), total_iters=-1), V, "ConstantLR: invalid total_iters=-1"),
    (lambda: U.LinearLR(FakeOpt(), start_factor=-1), V, "LinearLR: invalid start_factor=-1"),
    (lambda: U.LinearLR(FakeOpt(), total_iters=0), V, "LinearLR: invalid total_iters=0"),
    (lambda: U.PolynomialLR(FakeOpt(), steps=0), V, "PolynomialLR: invalid steps=0"),
    (lambda: U.PolynomialLR(FakeOpt(), 5, end_learning_rate=-1), V, "invalid end_learning_rate=-1"),
    (lambda: U.PolynomialLR(FakeOpt(), 5, power=-1), V, "PolynomialLR: invalid power=-1"),
    (lambda: U.PolynomialLR(FakeOpt(), 5, cycle=1), T, "PolynomialLR: cycle must be a bool"),
    (lambda: U.CosineDecayLR(FakeOpt(), decay_steps=0), V, "CosineDecayLR: invalid decay_steps=0"),
    (lambda: U.CosineDecayLR(FakeOpt(), 10, alpha=1.5), V, "CosineDecayLR: invalid alpha=1.5"),
    (lambda: U.PiecewiseDecay(FakeOpt(), [1, 2], [0.1]), V, "PiecewiseDecay: invalid values"),
    (lambda: U.PiecewiseDecay(FakeOpt(), [1], [0.1, -1]), V, "invalid values[1]=-1"),
    (lambda: U.NoamDecay(FakeOpt(), 0, 10), V, "NoamDecay: invalid d_model=0"),
    (lambda: U.InverseTimeDecay(FakeOpt(), 0), V, "InverseTimeDecay: invalid gamma=0"),
    (lambda: U.NaturalExpDecay(FakeOpt(), NAN), V, "NaturalExpDecay: invalid gamma=nan"),
    (lambda: U.LambdaLR(FakeOpt(), [lambda s: 1.0]), V, "LambdaLR: invalid lr_lambda=["),
    (lambda: U.LambdaLR(FakeOpt(), 3), T, "LambdaLR: lr_lambda[0] must be callable"),
    (lambda: U.MultiplicativeLR(FakeOpt(), None), T, "MultiplicativeLR: lr_lambda[0] must be"),
    (lambda: U.CosineAnnealingWarmRestarts(FakeOpt(), 5, T_mult=0), V, "invalid T_mult=0"),
    (lambda: U.CosineAnnealingWarmRestarts(FakeOpt(), 0), V, "invalid T_0=0"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), factor=1.0), V, "ReduceLROnPlateau: invalid factor"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), factor=2.0), V, "invalid factor=2.0"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), factor=-0.1), V, "invalid factor=-0.1"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), min_lr=[0.0]), V, "invalid min_lr=[0.0]"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), min_lr=-1), V, "invalid min_lr=-1"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), mode="up"), V, "ReduceLROnPlateau: invalid mode='up'"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), threshold_mode="x"), V, "invalid threshold_mode"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), threshold=-1), V, "invalid threshold=-1"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), patience=1.5), V, "invalid patience=1.5"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), cooldown=-1), V, "invalid cooldown=-1"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), eps=NAN), V, "invalid eps=nan"),
    (lambda: U.ReduceLROnPlateau(FakeOpt(), verbose=1), T, "verbose must be a bool"),
    (lambda: U.CyclicLR(FakeOpt(), 0.01, 0.1, mode="saw"), V, "CyclicLR: invalid mode='saw'"),
    (lambda: U.CyclicLR(FakeOpt(), [0.01], 0.1), V, "CyclicLR: invalid base_lr=[0.01]"),
    (lambda: U.CyclicLR(FakeOpt(), 0.1, 0.01), V, "CyclicLR: invalid max_lr=0.01: it must be >="),
    (lambda: U.CyclicLR(FakeOpt(), -0.1, 0.01), V, "CyclicLR: invalid base_lr=-0.1"),
    (lambda: U.CyclicLR(FakeOpt(), 0.01, 0.1, gamma=2.0), V, "CyclicLR: invalid gamma=2.0"),
    (lambda: U.CyclicLR(FakeOpt(), 0.01, 0.1, step_size_up=0), V, "invalid step_size_up=0"),
    (
        lambda: U.CyclicLR(FakeOpt(), 0.01, 0.1, base_momentum=0.95, max_momentum=0.9),
        V,
        "CyclicLR: invalid max_momentum[0]=0.9: it must be >= base_momentum[0]=0.95",
    ),
    (lambda: U.CyclicLR(FakeOpt(), 0.01, 0.1, cycle_momentum=0), T, "cycle_momentum must be"),
    (lambda: U.OneCycleLR(FakeOpt(), 1.0), V, "total_steps"),
    (lambda: U.OneCycleLR(FakeOpt(), 1.0, 10, anneal_strategy="x"), V, "anneal_strategy='x'"),
    (lambda: U.OneCycleLR(FakeOpt(), -1.0, 10), V, "OneCycleLR: invalid max_lr=-1.0"),
    (lambda: U.OneCycleLR(FakeOpt(), [1.0], 10), V, "OneCycleLR: invalid max_lr=[1.0]"),
    (lambda: U.OneCycleLR(FakeOpt(), 1.0, 0), V, "OneCycleLR: invalid total_steps=0"),
    (lambda: U.OneCycleLR(FakeOpt(), 1.0, epochs=0, steps_per_epoch=5), V, "invalid epochs=0"),
    (lambda: U.OneCycleLR(FakeOpt(), 1.0, 10, pct_start=-0.1), V, "invalid pct_start=-0.1"),
    (lambda: U.OneCycleLR(FakeOpt(), 1.0, 10, div_factor=0), V, "invalid div_factor=0"),
    (lambda: U.OneCycleLR(FakeOpt(), 1.0, 10, three_phase=None), T, "three_phase must be"),
    (
        lambda: U.OneCycleLR(FakeOpt(), 1.0, 10, base_momentum=0.99),
        V,
        "OneCycleLR: invalid max_momentum=0.95: it must be >= base_momentum=0.99",
    ),
    (lambda: U.WarmupLR(FakeOpt(), warmup_method="cosine"), V, "WarmupLR: invalid warmup_method"),
    (lambda: U.WarmupLR(FakeOpt(), warmup_iters=0), V, "WarmupLR: invalid warmup_iters=0"),
    (lambda: U.WarmupLR(FakeOpt(), warmup_factor=-1), V, "WarmupLR: invalid warmup_factor=-1"),
    (
        lambda: U.WarmupLR(FakeOpt(), warmup_factor=2, warmup_method="constant"),
        V,
        "WarmupLR: invalid warmup_factor=2",
    ),
    (lambda: U.WarmupLR(FakeOpt(), warmup_prefix="no"), T, "WarmupLR: warmup_prefix must be"),
    (lambda: U.StepLR(object(), step_size=3), T, "param_groups"),
]


@pytest.mark.parametrize(
    "make, error, fragment", BAD, ids=[f"{i}-{b[2][:30]}" for i, b in enumerate(BAD)]
)
def test_bad_arguments(make, error, fragment):
    with pytest.raises(error) as info:
        make()
    assert fragment in str(info.value)


def test_a_refused_construction_leaves_the_optimizer_alone():
    opt = FakeOpt(momentum=0.9)
    before = copy.deepcopy(opt.param_groups)
    for make in (
        lambda: U.OneCycleLR(opt, max_lr=1.0, total_steps=10, div_factor=0),
        lambda: U.CyclicLR(opt, 0.1, 0.01),
        lambda: U.SequentialLR(opt, [U.ConstantLR(FakeOpt())], milestones=[]),
        lambda: U.StepLR(opt, 3, verbose="yes"),
    ):
        with pytest.raises((ValueError, TypeError)):
            make()
        assert opt.param_groups == before


def test_schedulers_refuse_negative_steps_in_get_lr():
    sched = U.NoamDecay(FakeOpt(), d_model=64, warmup_steps=10)
    with pytest.raises(ValueError, match=r"^noam: invalid step=-3"):
        sched.get_lr(0.1, -3)
    with pytest.raises(ValueError, match="NoamDecay.get_lr: invalid base_lr=-0.1"):
        sched.get_lr(-0.1, 3)


# --- load_state_dict checks with the constructor's rules (issue 15 B) ---------------------------
def _step(sched, metric=1.0):
    sched.step(metric) if isinstance(sched, U.ReduceLROnPlateau) else sched.step()


def _stepped(make, steps=4):
    opt = FakeOpt(momentum=0.9)
    sched = make(opt)
    for _ in range(steps):
        _step(sched)
    return opt, sched


def _snapshot(sched):
    """Everything a load could change: each attribute's identity, the plain-data state
    (deep-copied), and the callables' saved attributes (in the state)."""
    return dict(vars(sched)), copy.deepcopy(sched.state_dict())


def _assert_unchanged(sched, snap):
    attrs, state = snap
    assert vars(sched).keys() == attrs.keys()
    for key, obj in attrs.items():
        assert vars(sched)[key] is obj, key  # not rebound (a reset cache would show here)
    now = sched.state_dict()
    assert now.keys() == state.keys()
    for key in state:  # bitwise: nan-safe, 0.0 vs -0.0 told apart
        assert pickle.dumps(now[key]) == pickle.dumps(state[key]), key


def _edit(**changes):
    def apply(state):
        for key, value in changes.items():
            if value is _DROP:
                del state[key]
            else:
                state[key] = value
        return state

    return apply


_DROP = object()

LOAD_CASES = {
    "T_max=0": (lambda o: U.CosineAnnealingLR(o, 10), _edit(T_max=0), V, "invalid T_max=0"),
    "eta_min=nan": (lambda o: U.CosineAnnealingLR(o, 10), _edit(eta_min=NAN), V, "eta_min=nan"),
    "last_step='x'": (lambda o: U.StepLR(o, 3), _edit(last_step="x"), T, "last_step must be"),
    "last_step=-7": (lambda o: U.StepLR(o, 3), _edit(last_step=-7), V, "invalid last_step=-7"),
    "last_step=2.5": (lambda o: U.StepLR(o, 3), _edit(last_step=2.5), V, "last_step=2.5"),
    "unknown key": (
        lambda o: U.StepLR(o, 3),
        _edit(last_epoch=3, _step_count=4),  # torch's keys
        V,
        "unknown keys ['_step_count', 'last_epoch']",
    ),
    "missing key": (lambda o: U.StepLR(o, 3), _edit(gamma=_DROP), V, "missing keys ['gamma']"),
    "gamma='0.1'": (lambda o: U.StepLR(o, 3), _edit(gamma="0.1"), T, "gamma must be a real"),
    "base_lrs length": (lambda o: U.StepLR(o, 3), _edit(base_lrs=[0.1]), V, "invalid base_lrs"),
    "base_lrs<0": (lambda o: U.StepLR(o, 3), _edit(base_lrs=[0.1, -1]), V, "base_lrs[1]=-1"),
    "_last_lr=inf": (lambda o: U.StepLR(o, 3), _edit(_last_lr=[INF, 0]), V, "_last_lr[0]=inf"),
    "verbose=1": (lambda o: U.StepLR(o, 3), _edit(verbose=1), T, "verbose must be a bool"),
    "max_decay_steps=0": (
        lambda o: U.PolynomialLR(o, 5),
        _edit(max_decay_steps=0),
        V,
        "PolynomialLR.load_state_dict: invalid max_decay_steps=0",
    ),
    "milestones": (lambda o: U.MultiStepLR(o, [2, 5]), _edit(milestones=[5, 2]), V, "milestones"),
    "values<0": (
        lambda o: U.PiecewiseDecay(o, [2], [0.1, 0.2]),
        _edit(values=[0.1, -0.2]),
        V,
        "invalid values[1]=-0.2",
    ),
    "OneCycle past the end": (
        lambda o: U.OneCycleLR(o, 1.0, 10),
        _edit(last_step=11),
        V,
        "invalid last_step=11: it must be <= total_steps=10",
    ),
    "OneCycle base>max momentum": (
        lambda o: U.OneCycleLR(o, 1.0, 10),
        _edit(base_momentums=[0.99, 0.99]),
        V,
        "invalid max_momentums=0.95: it must be >= base_momentums=0.99",
    ),
    "OneCycle use_beta1 without betas": (
        lambda o: U.OneCycleLR(o, 1.0, 10),
        _edit(use_beta1=True),
        V,
        "invalid use_beta1=True: every param group must then have 'betas'",
    ),
    "Cyclic max<base": (
        lambda o: U.CyclicLR(o, 0.01, 0.1),
        _edit(max_lrs=[0.001, 0.1]),
        V,
        "CyclicLR.load_state_dict: invalid max_lrs=0.001: it must be >= _cyclic_base_lrs",
    ),
    "Cyclic scale_fn": (lambda o: U.CyclicLR(o, 0.01, 0.1), _edit(scale_fn=3), V, "scale_fn=3"),
    "Lambda lr_lambdas": (
        lambda o: U.LambdaLR(o, [Halving(3), Halving(4)]),
        _edit(lr_lambdas=[{"every": 2}]),
        V,
        "invalid lr_lambdas",
    ),
    "Plateau cooldown_counter": (
        lambda o: U.ReduceLROnPlateau(o, cooldown=2),
        _edit(cooldown_counter=5),
        V,
        "invalid cooldown_counter=5: it must be <= cooldown=2",
    ),
    "Plateau best=nan": (lambda o: U.ReduceLROnPlateau(o), _edit(best=NAN), V, "best=nan"),
    "Plateau factor": (lambda o: U.ReduceLROnPlateau(o), _edit(factor=1.0), V, "factor=1.0"),
    "Plateau mode_worse": (
        lambda o: U.ReduceLROnPlateau(o),
        _edit(mode_worse=-INF),
        V,
        "invalid mode_worse=-inf",
    ),
    "Sequential sub-state": (
        lambda o: U.SequentialLR(o, [U.ConstantLR(o), U.CosineAnnealingLR(o, 10)], [3]),
        lambda state: {
            **state,
            "_schedulers": [state["_schedulers"][0], {**state["_schedulers"][1], "T_max": 0}],
        },
        V,
        "CosineAnnealingLR.load_state_dict: invalid T_max=0",
    ),
    "Sequential milestones": (
        lambda o: U.SequentialLR(o, [U.ConstantLR(o), U.CosineAnnealingLR(o, 10)], [3]),
        _edit(milestones=[3, 5]),
        V,
        "SequentialLR.load_state_dict: invalid milestones=[3, 5]",
    ),
    "Sequential sub-states missing": (
        lambda o: U.SequentialLR(o, [U.ConstantLR(o), U.CosineAnnealingLR(o, 10)], [3]),
        _edit(_schedulers=[]),
        V,
        "invalid _schedulers: it must be a list of 2 scheduler states",
    ),
    "Chained sub-state": (
        lambda o: U.ChainedScheduler([U.ConstantLR(o), U.ExponentialLR(o, 0.9)]),
        lambda state: {
            **state,
            "_schedulers": [state["_schedulers"][0], {**state["_schedulers"][1], "gamma": -1}],
        },
        V,
        "ExponentialLR.load_state_dict: invalid gamma=-1",
    ),
    "Warmup method": (
        lambda o: U.WarmupLR(U.ExponentialLR(o, 0.9)),
        _edit(warmup_method="cosine"),
        V,
        "WarmupLR.load_state_dict: invalid warmup_method='cosine'",
    ),
    "not a dict": (lambda o: U.StepLR(o, 3), lambda state: [1, 2], T, "expected a state dict"),
}


@pytest.mark.parametrize("case", LOAD_CASES)
def test_load_state_dict_refuses_a_bad_state_and_changes_nothing(case):
    make, edit, error, fragment = LOAD_CASES[case]
    opt, sched = _stepped(make)
    groups = copy.deepcopy(opt.param_groups)
    snap = _snapshot(sched)
    subs = [_snapshot(s) for s in getattr(sched, "_schedulers", [])]
    bad = edit(sched.state_dict())
    with pytest.raises(error) as info:
        sched.load_state_dict(bad)
    assert fragment in str(info.value), str(info.value)
    _assert_unchanged(sched, snap)
    for sub, sub_snap in zip(getattr(sched, "_schedulers", []), subs, strict=True):
        _assert_unchanged(sub, sub_snap)
    assert opt.param_groups == groups
    # and it goes on exactly as a twin that was never asked to load
    _, twin = _stepped(make)
    for _ in range(3):
        _step(sched)
        _step(twin)
        assert sched.get_last_lr() == twin.get_last_lr()


SCHEDULERS = {
    "StepLR": lambda o: U.StepLR(o, 3, 0.5),
    "MultiStepLR": lambda o: U.MultiStepLR(o, [2, 6], 0.5),
    "ConstantLR": lambda o: U.ConstantLR(o, 0.5, 3),
    "LinearLR": lambda o: U.LinearLR(o, 0.2, 1.0, 5),
    "PolynomialLR": lambda o: U.PolynomialLR(o, 6, 1e-3, 2.0, True),
    "CosineAnnealingLR": lambda o: U.CosineAnnealingLR(o, 10, 1e-3),
    "CosineAnnealingWarmRestarts": lambda o: U.CosineAnnealingWarmRestarts(o, 3, 2),
    "PiecewiseDecay": lambda o: U.PiecewiseDecay(o, [2, 4], [0.3, 0.2, 0.1]),
    "NoamDecay": lambda o: U.NoamDecay(o, 64, 4),
    "OneCycleLR": lambda o: U.OneCycleLR(o, [1.0, 0.1], 20),
    "CyclicLR": lambda o: U.CyclicLR(o, 0.01, 0.1, 3, mode="exp_range", gamma=0.9),
    "WarmupLR": lambda o: U.WarmupLR(U.ExponentialLR(o, 0.9), 0.1, 3),
    "SequentialLR": lambda o: U.SequentialLR(o, [U.ConstantLR(o), U.StepLR(o, 2)], [3]),
    "ReduceLROnPlateau": lambda o: U.ReduceLROnPlateau(o, patience=1, cooldown=2),
}
JUNK = [-7, -1, 0, 1, 3, 2.5, 1e300, "x", None, NAN, INF, -INF, True, [], [0.5], [1, 2], {}]


@pytest.mark.skipif(st is None, reason="needs hypothesis")
def test_property_any_load_is_refused_unchanged_or_runs_cleanly():
    """Replace one entry of a saved state by junk: the load is refused (ValueError or
    TypeError) and nothing changed, or it is accepted and the scheduler then steps with
    finite rates >= 0 (nothing fails later, nothing silently wrong)."""

    @settings(derandomize=True, max_examples=150, deadline=None)
    @given(data=st.data())
    def check(data):
        name = data.draw(st.sampled_from(sorted(SCHEDULERS)), label="scheduler")
        steps = data.draw(st.integers(0, 5), label="steps")
        opt, sched = _stepped(SCHEDULERS[name], steps=steps)
        state = sched.state_dict()
        key = data.draw(st.sampled_from(sorted(state)), label="key")
        junk = data.draw(st.sampled_from(JUNK), label="junk")
        state[key] = junk
        snap, groups = _snapshot(sched), copy.deepcopy(opt.param_groups)
        try:
            sched.load_state_dict(state)
        except (ValueError, TypeError):
            _assert_unchanged(sched, snap)
            assert opt.param_groups == groups
            return
        for _ in range(3):
            if isinstance(sched, U.OneCycleLR) and sched.last_step >= sched.total_steps:
                with pytest.raises(ValueError, match="total steps"):
                    sched.step()
                return
            _step(sched)
            lrs = sched.get_last_lr()
            assert all(math.isfinite(lr) and lr >= 0 for lr in lrs), (key, junk, lrs)

    check()


def test_a_good_state_still_loads_and_normalizes():
    opt, sched = _stepped(lambda o: U.CosineAnnealingLR(o, 10, 0.001))
    state = sched.state_dict()
    fresh = U.CosineAnnealingLR(FakeOpt(), 20)
    fresh.load_state_dict({**state, "T_max": 10.0})  # an integral float, as the ctor takes
    assert fresh.T_max == 10 and type(fresh.T_max) is int
    assert fresh.state_dict() == state


def test_composites_check_their_schedulers():
    opt, other = FakeOpt(), FakeOpt()
    a, b = U.ConstantLR(opt), U.ExponentialLR(opt, 0.9)
    with pytest.raises(ValueError, match="milestone"):
        U.SequentialLR(opt, [a, b], milestones=[])
    with pytest.raises(ValueError, match="same optimizer"):
        U.SequentialLR(other, [a, b], milestones=[3])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        U.ChainedScheduler([a, U.ReduceLROnPlateau(opt)])
    with pytest.raises(ValueError, match="non-empty"):
        U.ChainedScheduler([], optimizer=opt)
    with pytest.raises(TypeError, match=r"SequentialLR: schedulers\[1\] must be an LRScheduler"):
        U.SequentialLR(opt, [a, object()], milestones=[3])
    with pytest.raises(ValueError, match=r"SequentialLR: invalid interval_rescaling=\[True, F"):
        U.SequentialLR(opt, [a, b], milestones=[3], interval_rescaling=[True, False])
    with pytest.raises(TypeError, match="SequentialLR: interval_rescaling must be a bool"):
        U.SequentialLR(opt, [a, b], milestones=[3], interval_rescaling="yes")
    with pytest.raises(ValueError, match=r"SequentialLR: invalid milestones\[0\]=-1"):
        U.SequentialLR(opt, [a, b], milestones=[-1])
    with pytest.raises(TypeError, match="ChainedScheduler: verbose must be a bool"):
        U.ChainedScheduler([a, b], verbose=1)
