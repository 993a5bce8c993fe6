"""Reductions accumulate in at least float32 (design principle 6; issue 15, defect 3).

Norms, sums of squares and finiteness checks over float16/bfloat16 arrays used to be
taken in that dtype and overflowed (a float16 sum of 4096 squares of 5.0 is inf):
``DynamicLossScale`` skipped every step, ``ClipGradByGlobalNorm`` zeroed the
gradients, LAMB and LARS gave NaN on one tensor of 70k elements. Each test here runs
every backend that has the dtype (array_api_strict has no float16: it runs the float32
cases, where sums of squares of finite values can overflow as well), through the
stateful face (NumPy and torch replaying recorded plans, torch ``compile=True``) and
the functional face (``jax.jit``), against torch itself (``clip_grad_norm_``,
GradScaler's kernels) or a float64 NumPy oracle. Float32 and float64 reductions are
the plain expressions they always were, bit for bit.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest
from conftest import require

import uniopt
from uniopt import norms
from uniopt.blocks import tensor_norms
from uniopt.engine.layout import Layout
from uniopt.engine.plan import Plan
from uniopt.gradients import grad_scale
from uniopt.parity import reference
from uniopt.parity.arrays import BACKENDS

torch = pytest.importorskip("torch")

#: (backend, dtype) pairs with a half-precision dtype (NumPy's bfloat16 is storage only)
HALF = [
    ("numpy", "float16"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("jax", "float16"),
    ("jax", "bfloat16"),
]
EVERY = ["numpy", "torch", "jax", "array_api_strict"]
#: machine epsilon (one ulp at 1.0) per dtype
EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}
#: float32 sums of 70k squares stay float32 sums (as before): torch's CPU kernels add
#: them up in another order (in double), a few ulps of the norm apart (measured: 11)
SUM_ULPS = {"float32": 32.0}


def representable(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` and back to float64 (so every backend gets the same
    values whatever its conversion path)."""
    if dtype == "bfloat16":
        return torch.tensor(a, dtype=torch.float32).to(torch.bfloat16).double().numpy()
    return a.astype(dtype).astype(np.float64)


def array(backend: str, a: np.ndarray, dtype: str):
    """``a`` (values representable in ``dtype``) as a ``dtype`` array of ``backend``."""
    require(backend)
    a = representable(np.asarray(a, dtype=np.float64), dtype)
    if backend == "torch":
        return torch.tensor(a).to(getattr(torch, dtype))
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(a.astype(np.float32)).astype(getattr(jnp, dtype))
    return BACKENDS[backend].to_array(a, dtype)


def host(x) -> np.ndarray:
    return BACKENDS["numpy"].to_numpy(x)


def torch_array(a: np.ndarray, dtype: str):
    return torch.tensor(representable(np.asarray(a, dtype=np.float64), dtype)).to(
        getattr(torch, dtype)
    )


def ulp(x: np.ndarray, dtype: str) -> np.ndarray:
    """The spacing of ``dtype`` numbers at ``|x|`` (normal numbers; at least float16's
    smallest normal's)."""
    size = np.maximum(np.abs(x), np.finfo(np.float16).tiny)
    return EPS[dtype] * 2.0 ** np.floor(np.log2(size))


def within_ulps(got: np.ndarray, expected: np.ndarray, dtype: str, ulps: float) -> None:
    """Elementwise ``|got - expected| <= ulps`` units in the last place of ``expected``."""
    worst = np.max(np.abs(got - expected) / ulp(expected, dtype))
    assert worst <= ulps, f"off by {worst:.2f} ulps of {dtype}"


# ---- DynamicLossScale --------------------------------------------------------------


@pytest.mark.parametrize("backend,dtype", HALF + [(b, "float32") for b in EVERY])
def test_dynamic_loss_scale_steps_on_finite_gradients_as_grad_scaler(backend, dtype):
    """Finite gradients whose sum of squares overflows their dtype (4096 x 5.0 in
    float16: 102400 > 65504; 1e19 in float32) are finite: the step is taken and the
    scale follows torch's GradScaler kernels step for step (backoff on a real inf)."""
    value = 1e19 if dtype == "float32" else 5.0
    scale = uniopt.DynamicLossScale(init_scale=1024.0, growth_interval=2)
    params = [array(backend, np.zeros(4096), dtype)]
    opt = uniopt.SGD(params, lr=1.0, loss_scale=scale)
    ref_scale = torch.tensor([1024.0])
    tracker = torch.zeros(1, dtype=torch.int32)
    expected = torch_array(np.zeros(4096), dtype)
    for bad in (False, False, False, True, False, False, False):
        g = np.full(4096, value)
        if bad:
            g[7] = np.inf
        ref_grad, found_inf = torch_array(g, dtype), torch.zeros(1)
        inv_scale = torch.reciprocal(ref_scale)
        torch._amp_foreach_non_finite_check_and_unscale_([ref_grad], found_inf, inv_scale)
        torch._amp_update_scale_(ref_scale, tracker, found_inf, 2.0, 0.5, 2)
        if not found_inf.item():
            expected -= ref_grad  # SGD with lr=1 on the unscaled gradient
        opt.step([array(backend, g, dtype)])
        assert opt.last_step_skipped == bool(found_inf.item())
        assert scale.scale == ref_scale.item()
        np.testing.assert_array_equal(host(opt.params[0]), host(expected))
    assert scale.scale == 2048.0 and opt._step_count == 6


def test_dynamic_loss_scale_grows_only_while_float32_holds_it():
    """GradScaler keeps its scale as a float32 tensor and grows it only while finite."""
    scale = uniopt.DynamicLossScale(init_scale=2.0**127, growth_interval=1)
    scale.update(True)
    assert scale.scale == 2.0**127
    scale.update(False)
    scale.update(True)
    assert scale.scale == 2.0**127


# ---- ClipGradByGlobalNorm / ClipGradByNorm / clip_grad against torch --------------


def _gradients(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    if kind == "issue":  # the case: 4096 gradients of 5.0
        return [np.full(4096, 5.0)]
    return [rng.standard_normal(s) * 3 for s in ((300, 40), (70000,), (17,))]


@pytest.mark.parametrize("kind", ["issue", "random"])
@pytest.mark.parametrize("backend,dtype", HALF + [(b, "float32") for b in EVERY])
def test_clip_by_global_norm_gives_torch_clip_grad_norm(backend, dtype, kind):
    """``ClipGradByGlobalNorm(1.0)`` on half-precision gradients gives what torch's
    ``clip_grad_norm_(max_norm=1.0)`` gives (the norm in float32, the coefficient
    rounded to the gradients' dtype), to an ulp of the dtype: not zeros."""
    rng = np.random.default_rng(3)
    grads = [representable(g, dtype) for g in _gradients(kind, rng)]
    params = [array(backend, np.zeros(g.shape), dtype) for g in grads]
    opt = uniopt.SGD(params, lr=1.0, grad_clip=uniopt.ClipGradByGlobalNorm(1.0))
    opt.step([array(backend, g, dtype) for g in grads])
    got = [-host(p) for p in opt.params]  # SGD from 0 with lr=1: minus the clipped gradient
    ref = [torch.nn.Parameter(torch_array(np.zeros(g.shape), dtype)) for g in grads]
    for p, g in zip(ref, grads):
        p.grad = torch_array(g, dtype)
    torch.nn.utils.clip_grad_norm_(ref, 1.0)
    for a, b in zip(got, ref):
        within_ulps(a, host(b.grad), dtype, SUM_ULPS.get(dtype, 1.0))
    total = math.sqrt(sum(float(np.sum(a * a)) for a in got))
    assert abs(total - 1.0) < 8 * EPS[dtype]


@pytest.mark.parametrize("compile", [False, True])
@pytest.mark.parametrize("backend,dtype", HALF)
def test_clip_by_norm_per_tensor_gives_torch_clip_grad_norm(backend, dtype, compile):
    """``ClipGradByNorm(1.0)`` per tensor: the norm of 70k float16 values (264) is taken
    in float32, the factor applied in the gradients' dtype, as torch's
    ``clip_grad_norm_`` on that one tensor; also in a compiled torch step."""
    if compile and backend != "torch":
        pytest.skip("compile=True is torch's")
    rng = np.random.default_rng(4)
    grads = [representable(rng.standard_normal(s), dtype) for s in ((70000,), (30, 40))]
    params = [array(backend, np.zeros(g.shape), dtype) for g in grads]
    opt = uniopt.SGD(params, lr=1.0, grad_clip=uniopt.ClipGradByNorm(1.0), compile=compile)
    opt.step([array(backend, g, dtype) for g in grads])
    for p, g in zip(opt.params, grads):
        ref = torch.nn.Parameter(torch_array(np.zeros(g.shape), dtype))
        ref.grad = torch_array(g, dtype)
        torch.nn.utils.clip_grad_norm_([ref], 1.0)
        # inductor keeps float16 intermediates (the norm, the factor) in float32
        within_ulps(-host(p), host(ref.grad), dtype, 2.0 if compile else 1.0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("backend,dtype", HALF + [(b, "float32") for b in EVERY])
def test_clip_grad_per_group_gives_torch_clip_grad_norm(backend, dtype, norm_type):
    """OneFlow's ``clip_grad`` (group keys ``clip_grad_max_norm``/``_norm_type``): the
    norms in float32 (a float16 1-norm of 70k values of ~1 overflows), the coefficient
    in the gradients' dtype, as ``torch.nn.utils.clip_grad_norm_``."""
    rng = np.random.default_rng(5)
    grads = [representable(rng.standard_normal(s) * 2, dtype) for s in ((70000,), (9, 4))]
    params = [array(backend, np.zeros(g.shape), dtype) for g in grads]
    group = {"params": params, "clip_grad_max_norm": 0.5, "clip_grad_norm_type": norm_type}
    opt = uniopt.SGD([group], lr=0.1)
    clipped = opt.clip_grad({str(i): array(backend, g, dtype) for i, g in enumerate(grads)})
    ref = [torch.nn.Parameter(torch_array(np.zeros(g.shape), dtype)) for g in grads]
    for p, g in zip(ref, grads):
        p.grad = torch_array(g, dtype)
    torch.nn.utils.clip_grad_norm_(ref, 0.5, norm_type=norm_type)
    for i, p in enumerate(ref):
        within_ulps(host(clipped[str(i)]), host(p.grad), dtype, SUM_ULPS.get(dtype, 1.0))


def test_clip_grad_in_place_on_half_torch_gradients():
    """Without ``grads`` the torch ``.grad`` arrays are clipped in place, in float16."""
    rng = np.random.default_rng(6)
    g = representable(rng.standard_normal(70000), "float16")
    p = torch.nn.Parameter(torch.zeros(70000, dtype=torch.float16))
    p.grad = torch_array(g, "float16")
    uniopt.SGD([{"params": [p], "clip_grad_max_norm": 1.0}], lr=0.1).clip_grad()
    ref = torch.nn.Parameter(torch.zeros(70000, dtype=torch.float16))
    ref.grad = torch_array(g, "float16")
    torch.nn.utils.clip_grad_norm_([ref], 1.0)
    assert p.grad.dtype == torch.float16
    within_ulps(host(p.grad), host(ref.grad), "float16", 1.0)


# ---- LAMB and LARS on one 70k-element half-precision tensor -------------------------

N = 70000
ALGORITHMS = {
    "lamb": (uniopt.LAMB, uniopt.lamb, dict(lr=0.1, weight_decay=0.01, eps=1e-6)),
    "lars_momentum": (
        uniopt.LarsMomentum,
        uniopt.lars_momentum,
        dict(lr=1.0, momentum=0.9, lars_coeff=0.1, lars_weight_decay=0.0005),
    ),
}
#: each state slot as the float64 oracle names it
SLOTS = {"lamb": {"exp_avg": "m", "exp_avg_sq": "v"}, "lars_momentum": {"velocity": "v"}}


def _problem(dtype: str, steps: int = 3) -> tuple[np.ndarray, list[np.ndarray]]:
    """Parameters of norm ~53 and gradients of magnitude 0.5..2 (norm ~350): the sums
    of squares of the gradients (LARS) and of Adam's direction (LAMB, ~1 a value) are
    past float16's 65504, Adam's second moment stays a normal float16 number, and the
    trust ratio (~0.15) is far from 1."""
    rng = np.random.default_rng(7)
    p = representable(0.2 * rng.standard_normal(N), dtype)
    grads = [
        representable(rng.choice([-1.0, 1.0], N) * rng.uniform(0.5, 2.0, N), dtype)
        for _ in range(steps)
    ]
    return p, grads


def _oracle_step(algorithm, p, g, state, t):
    """One float64 step of the oracle from the low-precision values now held."""
    options, names = ALGORITHMS[algorithm][2], SLOTS[algorithm]
    state = {names[k]: v.astype(np.float64) for k, v in state.items()}
    new_p = reference.ORACLES[algorithm](p, g, state, t, **options)
    return new_p, {k: state[name] for k, name in names.items()}


def _check_step(dtype, before, new_p, new_state):
    """The step from the values held before matches the float64 oracle to the dtype's
    rounding: the parameters within 8 eps of their size plus the mean update's (a
    moment that cancels to ~0 still carries its terms' rounding; measured worst: 4.9),
    each state slot within 4 eps of its size plus its mean size (measured: 1.7)."""
    algorithm, p, g, state, t = before
    want_p, want_state = _oracle_step(algorithm, p, g, state, t)
    assert np.all(np.isfinite(new_p))
    eps = EPS[dtype]
    size = np.abs(want_p) + np.mean(np.abs(want_p - p))
    assert np.max(np.abs(new_p - want_p) / (eps * size)) <= 8.0
    for k, v in want_state.items():
        assert np.all(np.isfinite(new_state[k]))
        size = np.abs(v) + np.mean(np.abs(v))
        assert np.max(np.abs(new_state[k] - v) / (eps * size)) <= 4.0
    moved = np.linalg.norm(want_p - p) / np.linalg.norm(p)  # a visible step: ratios matter
    assert moved > 0.02


def _state_of(opt) -> dict[str, np.ndarray]:
    (segment,) = opt._segments[0]
    return {k: host(v) for k, v in segment.state.items()}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend,dtype", HALF)
def test_lamb_and_lars_on_one_70k_half_tensor_match_the_float64_oracle(
    backend, dtype, algorithm, monkeypatch
):
    """State in the parameters' dtype (no multi_precision): every step is finite and is
    the oracle's step from the values held, to the dtype's rounding. NumPy and torch
    replay a recorded plan over several blocks (the row sums add up across them)."""
    cls, _, options = ALGORITHMS[algorithm]
    p0, grads = _problem(dtype)
    params = [array(backend, p0, dtype)]
    from uniopt._adapter import adapter_for

    monkeypatch.setattr(adapter_for(params[0]), "chunk_elements", 1 << 14)
    opt = cls(params, **options)
    p, state = p0, {}
    for t, g in enumerate(grads, start=1):
        opt.step([array(backend, g, dtype)])
        new_p, new_state = host(opt.params[0]), _state_of(opt)
        _check_step(dtype, (algorithm, p, g, state, t), new_p, new_state)
        p, state = new_p, new_state
    (segment,) = opt._segments[0]
    plans = [v for k, v in segment._compiled.items() if k[0] == "plan"]
    if backend in ("numpy", "torch") and dtype == "float16":  # replayed in passes
        assert plans and all(plan is not None and plan.reduces for plan in plans)


#: betas that float16 and bfloat16 hold exactly: a compiled step takes its scalars as
#: 0-d tensors of the parameters' dtype, where 0.999 is 0.99902 (float16) or 1.0
#: (bfloat16) and ``1 - beta2`` is off by 2.3% or 0, whatever the reductions do
EXACT_BETAS = (0.875, 0.9921875)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_lamb_and_lars_half_compiled_torch_step(dtype, algorithm, monkeypatch):
    """The same under ``compile=True``: the sums kernel accumulates in float32."""
    cls, _, options = ALGORITHMS[algorithm]
    if algorithm == "lamb":
        options = {**options, "betas": EXACT_BETAS}
        monkeypatch.setitem(ALGORITHMS, "lamb", (cls, None, options))  # the oracle's too
    p0, grads = _problem(dtype, steps=2)
    param = torch.nn.Parameter(torch_array(p0, dtype))
    opt = cls([param], compile=True, **options)
    p, state = p0, {}
    for t, g in enumerate(grads, start=1):
        param.grad = torch_array(g, dtype)
        opt.step()
        new_p, new_state = host(param), _state_of(opt)
        _check_step(dtype, (algorithm, p, g, state, t), new_p, new_state)
        p, state = new_p, new_state
    (segment,) = opt._segments[0]
    assert segment.compile and any(k[0] == "in_place" for k in segment._compiled)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend,dtype", HALF)
def test_lamb_and_lars_half_functional_face(backend, dtype, algorithm):
    """The functional face (``jax.jit`` on JAX, eager elsewhere) on one 70k tensor."""
    _, factory, options = ALGORITHMS[algorithm]
    tx = factory(**options)
    p0, grads = _problem(dtype)
    params = [array(backend, p0, dtype)]
    update = tx.update
    if backend == "jax":
        import jax

        update = jax.jit(tx.update)
    state = tx.init(params)
    p, held = p0, {}
    for t, g in enumerate(grads, start=1):
        updates, state = update([array(backend, g, dtype)], state, params)
        params = uniopt.apply_updates(params, updates)
        assert params[0].dtype == array(backend, p0[:1], dtype).dtype
        slots = _flat_slots(state)
        new_p = host(params[0])
        _check_step(dtype, (algorithm, p, g, held, t), new_p, slots)
        p, held = new_p, slots


def _flat_slots(state) -> dict[str, np.ndarray]:
    if state.slots:
        (slots,) = state.slots
    else:
        (slots,) = state.placed.values()
    return {k: host(v).reshape(-1) for k, v in slots.items()}


# ---- float32 and float64 keep their bits -------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", EVERY)
def test_float32_and_float64_reductions_are_the_plain_expressions(backend, dtype):
    """In float32 and float64 nothing is widened: per-tensor norms are
    ``sqrt(tensor_sums(x * x))`` with per-stretch ``sum(axis=1)``, the global-norm
    clip factor and loss scale are the very float64 host arithmetic of before (per-tensor
    ``float(sum(g * g))`` added in order), and ``clip_grad`` multiplies by the same
    coefficient: bit for bit."""
    rng = np.random.default_rng(8)
    shapes = [(40, 30), (30,), (7, 5, 3), (30,), (300,)]
    values = [rng.standard_normal(s) * 3 for s in shapes]
    arrays = [array(backend, v, dtype) for v in values]
    xp = array_api_compat.array_namespace(arrays[0])
    # per-tensor norms, as the rules take them
    layout = Layout.of([str(i) for i in range(len(shapes))], shapes)
    (block,) = layout.blocks(0, len(shapes), None, whole_tensors=True)
    flat = xp.concat([xp.reshape(a, (-1,)) for a in arrays])
    plain = [
        xp.sum(xp.reshape((flat * flat)[a:b], (k, n)), axis=1) for a, b, _, k, n in block.stretches
    ]
    expected = xp.sqrt(xp.concat(plain))
    got = tensor_norms(xp, flat, block)
    assert got.dtype == flat.dtype
    np.testing.assert_array_equal(host(got), host(expected))
    # the global-norm factor and dynamic loss scale of a step
    params = [array(backend, np.zeros(s), dtype) for s in shapes]
    loss = uniopt.DynamicLossScale(init_scale=4.0)
    opt = uniopt.SGD(params, lr=0.1, loss_scale=loss, grad_clip=uniopt.ClipGradByGlobalNorm(0.5))
    (segment,) = opt._segments[0]
    total = sum(float(xp.sum(g * g)) for g in arrays)
    old = (1.0 / 4.0) * (0.5 / max(math.sqrt(total) * (1.0 / 4.0), 0.5))
    assert grad_scale(loss, opt.grad_clip, [(segment, arrays)]) == old
    # OneFlow's clip_grad
    group = {"params": params, "clip_grad_max_norm": 0.5}
    clipped = uniopt.SGD([group], lr=0.1).clip_grad(arrays)
    found = [float(xp.linalg.vector_norm(g, ord=2.0)) for g in arrays]
    coef = 0.5 / (sum(x**2.0 for x in found) ** 0.5 + 1e-6)
    for i, g in enumerate(arrays):
        np.testing.assert_array_equal(host(clipped[str(i)]), host(g * coef))


def test_half_reductions_in_the_recorded_plan_accumulate_in_float32():
    """A recorded plan's per-tensor sums of float16 values are float32 sums (the
    widened squares' row sums), and its norms come back as float16."""
    opt = uniopt.LAMB([np.zeros(2, dtype=np.float16)], lr=0.1, weight_decay=0.01)
    group = opt.param_groups[0]
    rule = opt.rule.from_group(group)
    scalars = rule.scalars({k: group[k] for k in opt.rule.hyperparameters}, 1)
    dtypes = dict.fromkeys(["p", "g", *rule.slots()], np.float16)
    xp = array_api_compat.numpy
    plan = Plan.trace(xp, rule, dtypes, {k: float(v) for k, v in scalars.items()})
    formed = [(kind, dtype) for stage in plan.passes for _, kind, _, _, dtype in stage.before]
    assert {dtype for kind, dtype in formed if kind == "reduce"} == {np.dtype(np.float32)}
    assert ("astype", np.dtype(np.float16)) in formed  # the norms, back in float16


@pytest.mark.parametrize("backend,dtype", HALF)
def test_tensor_sums_of_half_values_are_float32_sums(backend, dtype):
    """``Block.tensor_sums`` of float16/bfloat16 values (a rule may sum them itself)
    returns float32 sums, with no float16 overflow (70000 ones), and so do the
    replay's row sums (``ReplayOps.row_sums`` into float32 per-tensor sums)."""
    x = array(backend, np.ones(70000 + 30), dtype)
    xp = array_api_compat.array_namespace(x)
    (block,) = Layout.of(["a", "b"], [(70000,), (30,)]).blocks(0, 2, None, True)
    sums = block.tensor_sums(xp, x)
    assert norms.dtype_name(sums.dtype) == "float32"
    np.testing.assert_array_equal(host(sums), [70000.0, 30.0])
    if backend in ("numpy", "torch") and dtype == "float16":
        from uniopt._adapter import adapter_for

        ops = adapter_for(x).replay
        rows = xp.reshape(x[:70000], (2, 35000))
        like = ops.empty(2, np.float32, x)
        np.testing.assert_array_equal(host(ops.row_sums(rows, like)), [35000.0, 35000.0])


def test_round_to_half_precision():
    """The clip coefficient is rounded as the dtype would hold it (nearest even)."""
    values = np.random.default_rng(9).uniform(-3, 3, 2000).tolist() + [1 / 320, 0.1, 1.0]
    for x in values:
        assert norms.round_to(x, "float16") == float(np.float16(x))
        as_bf16 = torch.tensor(x, dtype=torch.float32).to(torch.bfloat16).item()
        assert norms.round_to(x, torch.bfloat16) == as_bf16
    assert norms.round_to(0.3, "float32") == 0.3
