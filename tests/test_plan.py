"""The recorded in-place plans of eager NumPy and torch give the numbers of the rule
evaluated as written for every registry case: bit for bit for elementwise rules; for
rules with per-tensor sums (LAMB, LARS, per-tensor clipping) up to the order in which
a tensor's sum is added up. What a plan cannot replay runs as written."""

from __future__ import annotations

import numpy as np
import pytest
from uniopt.backends.numpy import ADAPTER

import uniopt
from uniopt.engine.plan import Plan, ReplayOps, Untraceable
from uniopt.parity.cases import CASES
from uniopt.rule import Scalars

# one tensor larger than a block, so blocks are both whole and partial tensors
# and two tensors of one size after each other (their sums are one row-sum call)
SHAPES = [(3 * ADAPTER.chunk_elements // 2 + 7,), (3, 4), (12,), (5,)]


def run(case, replay, dtype=np.float32, steps=4, between=None):
    saved = ADAPTER.replay
    ADAPTER.replay = ReplayOps() if replay else None
    try:
        rng = np.random.default_rng(0)
        params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        opt = case.build(params)
        for t in range(steps):
            if between is not None:
                between(opt, t)
            opt.step([rng.standard_normal(s).astype(dtype) for s in SHAPES])
        return params, opt
    finally:
        ADAPTER.replay = saved


def plans(opt):
    inner = getattr(opt, "inner", opt)
    return [v for k, v in inner._segments[0][0]._compiled.items() if k[0] == "plan"]


def assert_same_numbers(written, replayed, reduces, dtype, equal=np.array_equal):
    if not reduces:
        for a, b in zip(written, replayed):
            assert equal(a, b)
        return
    # sums added up block by block: the trust ratio may differ in its last bits
    eps = np.finfo(dtype).eps
    for a, b in zip(written, replayed):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=64 * eps, atol=64 * eps)


def reduces(case):
    return case.algorithm in ("lamb", "lars_momentum")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_replayed_plan_is_the_rule_as_written(case, dtype):
    written, _ = run(case, replay=False, dtype=dtype)
    replayed, opt = run(case, replay=True, dtype=dtype)
    assert_same_numbers(written, replayed, reduces(case), dtype)
    assert plans(opt) and all(isinstance(p, Plan) for p in plans(opt))
    assert all(p.reduces == reduces(case) for p in plans(opt))


def test_a_scalar_branch_is_a_guard_and_a_changed_outcome_traces_again():
    # Adam's L2 penalty is skipped while weight_decay == 0.0 (a Python branch)
    case = next(c for c in CASES if c.id == "adam-default")

    def schedule(opt, t):
        opt.param_groups[0]["weight_decay"] = 0.0 if t < 2 else 0.1

    written, _ = run(case, replay=False, between=schedule)
    replayed, opt = run(case, replay=True, between=schedule)
    for a, b in zip(written, replayed):
        np.testing.assert_array_equal(a, b)
    (plan,) = [p for p in plans(opt) if p is not None]
    assert plan.guards  # the current plan was traced with the decay on


def test_numpy_scalar_hyperparameters_run_as_written():
    # a float64 NumPy scalar promotes differently from a Python float: no plan
    case = next(c for c in CASES if c.id == "sgd-momentum")

    def numpy_lr(opt, t):
        opt.param_groups[0]["lr"] = np.float64(0.05)

    written, _ = run(case, replay=False, between=numpy_lr)
    replayed, opt = run(case, replay=True, between=numpy_lr)
    for a, b in zip(written, replayed):
        np.testing.assert_array_equal(a, b)
    assert all(p is None for p in plans(opt))


def test_what_a_plan_cannot_replay_is_refused_when_recorded():
    class Indexing(uniopt.SGD.rule):
        def update(self, xp, p, g, state, s, block):
            return -s.lr * g[::-1], {}

    class Baked(uniopt.SGD.rule):
        def update(self, xp, p, g, state, s, block):
            return -float(s.lr) * g, {}  # would freeze this step's lr

    for rule in (Indexing(), Baked()):
        with pytest.raises(Untraceable):
            Plan.trace(np, rule, {"p": np.float32, "g": np.float32}, {"lr": 0.1})


class _Tricky(uniopt.SGD.rule):
    """Rules whose values must not be written in place too early."""

    def slots(self):
        return {"m": 0.0, "n": 0.0}


class _ReadAfterFinal(_Tricky):
    def update(self, xp, p, g, state, s, block):
        a = s.lr * state["m"]  # still read after m's new value exists
        new_m = a + g
        return -(a * new_m) - p * s.lr, {"m": new_m, "n": state["n"] + a}


class _Selecting(_Tricky):
    def update(self, xp, p, g, state, s, block):
        m = xp.where(g > 0, state["m"] * s.lr, g)  # where: writes before reading all
        n = xp.where(m > p, p, state["n"] - m)
        return xp.where(n > 0, -n, m) * s.lr, {"m": m, "n": n}


class _Swapping(_Tricky):
    def update(self, xp, p, g, state, s, block):
        return -s.lr * g, {"m": state["n"], "n": state["m"]}


@pytest.mark.parametrize("rule", [_ReadAfterFinal(), _Selecting(), _Swapping()])
def test_values_computed_in_place_never_overwrite_what_is_read_later(rule):
    rng = np.random.default_rng(3)
    arrays = {k: rng.standard_normal(9) for k in ("p", "g", "m", "n")}
    scalars = {"lr": 0.3}
    delta, new = rule.update(np, arrays["p"], arrays["g"], dict(arrays), Scalars(scalars), None)
    expected = {"p": arrays["p"] + delta, **new}
    try:
        plan = Plan.trace(np, rule, {k: np.float64 for k in arrays}, scalars)
    except Untraceable:
        assert isinstance(rule, _Swapping)  # outputs that exchange arrays: as written
        return
    ops = ReplayOps()
    plan.run(ops, arrays, plan.scalar_values(scalars), plan.scratch(ops, 9, None))
    for k, v in expected.items():
        np.testing.assert_array_equal(arrays[k], v)


def torch_run(case, replay, dtype, steps=4):
    torch = pytest.importorskip("torch")
    from uniopt.backends.torch import ADAPTER as TORCH

    saved = TORCH.replay
    TORCH.replay = saved if replay else None
    try:
        rng = np.random.default_rng(0)
        shapes = [(3 * TORCH.chunk_elements // 2 + 7,), (3, 4), (12,), (5,)]
        params = [
            torch.nn.Parameter(torch.tensor(rng.standard_normal(s), dtype=dtype)) for s in shapes
        ]
        opt = case.build(params)
        for _ in range(steps):
            for p in params:
                p.grad = torch.tensor(rng.standard_normal(tuple(p.shape)), dtype=dtype)
            opt.step()
        return [p.detach().clone() for p in params], opt
    finally:
        TORCH.replay = saved


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_replay_is_the_rule_as_written(case, dtype):
    torch = pytest.importorskip("torch")
    written, _ = torch_run(case, False, getattr(torch, dtype))
    replayed, opt = torch_run(case, True, getattr(torch, dtype))
    assert_same_numbers(written, replayed, reduces(case), getattr(np, dtype), torch.equal)
    assert plans(opt) and all(isinstance(p, Plan) for p in plans(opt))
    assert all(p.reduces == reduces(case) for p in plans(opt))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_per_tensor_clipping_replays_in_passes(backend):
    # ClipGradByNorm: each gradient's norm, then Adam; the same numbers as written
    case = next(c for c in CASES if c.id == "adam-default")
    clipped = type(case)(case.algorithm, {**case.options, "grad_clip": uniopt.ClipGradByNorm(30.0)})
    if backend == "numpy":
        runner = lambda c, replay: run(c, replay, dtype=np.float64)  # noqa: E731
    else:
        torch = pytest.importorskip("torch")
        runner = lambda c, replay: torch_run(c, replay, torch.float64)  # noqa: E731
    written, _ = runner(clipped, replay=False)
    replayed, opt = runner(clipped, replay=True)
    assert_same_numbers(written, replayed, True, np.float64)
    (plan,) = plans(opt)
    assert plan.reduces and len(plan.passes) == 2
    # the clip changed something: the first tensor's norm is far above 30
    unclipped, _ = runner(case, replay=True)
    assert not np.allclose(np.asarray(unclipped[0]), np.asarray(replayed[0]))


def test_lamb_on_a_large_tensor_allocates_only_cache_sized_scratch():
    import tracemalloc

    case = next(c for c in CASES if c.algorithm == "lamb")
    rng = np.random.default_rng(0)
    n = 64 * ADAPTER.chunk_elements
    params = [rng.standard_normal(n).astype(np.float32)]
    grad = [rng.standard_normal(n).astype(np.float32)]
    opt = case.build(params)
    opt.step(grad)  # state and scratch allocated
    tracemalloc.start()
    try:
        opt.step(grad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * params[0].nbytes  # as written it was about 2x the parameters


class _Normed(_Tricky):
    """A moment written by the first pass (its new value needs no sum), read back by
    the last one: the last pass no longer reads the gradient."""

    def update(self, xp, p, g, state, s, block):
        m = 0.5 * state["m"] + g
        norm = xp.sqrt(block.tensor_sums(xp, m * m))
        return -s.lr * block.expand(xp, norm) * m, {"m": m, "n": state["n"] + g}


class _OldMomentLater(_Tricky):
    """The last pass reads the moment's old value: it is not written early."""

    def update(self, xp, p, g, state, s, block):
        m = 0.5 * state["m"] + g
        norm = xp.sqrt(block.tensor_sums(xp, m * m))
        return -s.lr * block.expand(xp, norm) * state["m"], {"m": m, "n": state["n"] + m}


class _OldMomentInState(_Tricky):
    """Another state output of the last pass reads the moment's old value."""

    def update(self, xp, p, g, state, s, block):
        m = 0.5 * state["m"] + g
        ratio = block.expand(xp, xp.sqrt(block.tensor_sums(xp, m * m)))
        return -s.lr * ratio * m, {"m": m, "n": ratio * state["m"]}


@pytest.mark.parametrize("rule", [_Normed(), _OldMomentLater(), _OldMomentInState()])
def test_state_written_before_the_last_pass_only_where_its_old_value_is_done_with(rule):
    from uniopt.engine.layout import Layout

    rng = np.random.default_rng(4)
    shapes = [(23,), (4, 3), (12,), (5,)]
    layout = Layout.of([str(i) for i in range(len(shapes))], shapes)
    size = layout.size
    arrays = {k: rng.standard_normal(size) for k in ("p", "g", "m", "n")}
    scalars = {"lr": 0.3}
    (whole,) = layout.blocks(0, len(shapes), None, True)
    delta, new = rule.update(np, arrays["p"], arrays["g"], dict(arrays), Scalars(scalars), whole)
    expected = {"p": arrays["p"] + delta, **new}
    plan = Plan.trace(np, rule, {k: np.float64 for k in arrays}, scalars)
    blocks = list(layout.blocks(0, len(shapes), 8, False))  # blocks split tensors

    def views(final):
        for block in blocks:
            yield block, {k: v[block.start : block.stop] for k, v in arrays.items()}

    ops = ReplayOps()
    plan.run_passes(ops, views, plan.scalar_values(scalars), plan.scratch(ops, 8, None), 0, 4)
    for k, v in expected.items():
        np.testing.assert_allclose(arrays[k], v, rtol=1e-14, atol=1e-15)
    first, last = plan.passes
    writes_m = any(out == ("input", "m") for *_, out in first.program)
    assert writes_m == isinstance(rule, _Normed)
    assert ("arrays['g']" in last.source) == (not isinstance(rule, _Normed))
