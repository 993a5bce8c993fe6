"""Complex parameters on every optimizer, backend and face (issue 15, part 2).

Oracles: torch.optim and optax themselves on the same complex problem, every registry
case that has a torch or optax twin; and the float64 NumPy oracles of
:mod:`uniopt.parity.reference` run on the real pairs ``(re, im)`` of each parameter,
which is the meaning torch.optim gives a complex parameter (``view_as_real``).
Tolerances: complex64 1e-5 relative, complex128 1e-12, as the real parity suite.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import require

import uniopt
from uniopt.parity import reference
from uniopt.parity.arrays import BACKENDS
from uniopt.parity.cases import CASES, TORCH_CLASSES, Case
from uniopt.parity.problem import gradient

STEPS = 6
#: a 2-d, a 1-d and a one-element tensor (fewer tensors: faster jax compilations)
SHAPES = ((4, 3), (7,), (1,))
TOLERANCE = {"complex64": 1e-5, "complex128": 1e-12}
DTYPES = list(TOLERANCE)
BACKEND_NAMES = ["numpy", "torch", "jax", "array_api_strict"]
FACES = ["stateful", "functional"]
BY_ID = {c.id: c for c in CASES}


def _problem(seed: int = 1):
    rng = np.random.default_rng(seed)

    def draw(scale: float) -> tuple[np.ndarray, ...]:
        return tuple(scale * (rng.standard_normal(s) + 1j * rng.standard_normal(s)) for s in SHAPES)

    init, center = draw(1.0), draw(0.5)
    curvature = tuple(np.abs(rng.standard_normal(s)) + 0.5 + 0j for s in SHAPES)
    noise = tuple(draw(0.1) for _ in range(STEPS))
    return init, curvature, center, noise


INIT, CURVATURE, CENTER, NOISE = _problem()


def host(x) -> np.ndarray:
    """Any backend's complex array as complex128 NumPy (keeping the imaginary part)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy().astype(np.complex128)
    try:
        return np.asarray(x).astype(np.complex128)
    except TypeError:
        return np.from_dlpack(x).astype(np.complex128)


def arrays(backend: str, dtype: str):
    def to(x):
        return BACKENDS[backend].to_array(np.asarray(x), dtype)

    return (
        [to(x) for x in INIT],
        [to(x) for x in CURVATURE],
        [to(x) for x in CENTER],
        [[to(x) for x in n] for n in NOISE],
    )


def with_options(case: Case, **extra) -> Case:
    """The case with ``extra`` options (for LookAhead: its inner optimizer's)."""
    options = dict(case.options)
    if case.algorithm == "lookahead":
        options["inner_options"] = {**options["inner_options"], **extra}
    else:
        options.update(extra)
    return Case(case.algorithm, options, label=case.label)


@functools.cache
def run(case_id: str, backend: str, face: str, dtype: str, mode: str = "real_pairs"):
    """The case on the complex problem: final parameters as complex128 NumPy."""
    case = BY_ID[case_id]
    if mode != "real_pairs":  # the default: the case as the registry has it
        case = with_options(case, complex_mode=mode)
    params, a, c, noise = arrays(backend, dtype)
    if face == "stateful" and backend == "torch":
        import torch

        params = [torch.nn.Parameter(p) for p in params]
        opt = case.build(params)
        for n in noise:
            for p, aa, cc, e in zip(params, a, c, n):
                p.grad = gradient(p.detach(), aa, cc, e)
            opt.step()
        return [host(p) for p in params]
    if face == "stateful":
        opt = case.build(params)
        for n in noise:
            opt.step([gradient(p, aa, cc, e) for p, aa, cc, e in zip(opt.params, a, c, n)])
        return [host(p) for p in opt.params]
    tx = case.build_transform()
    flat = face == "flat"

    def step(params, state, n):
        if flat:
            tensors = params.unflatten()
            grads = [gradient(p, aa, cc, e) for p, aa, cc, e in zip(tensors, a, c, n)]
            grads = uniopt.flatten(grads)
        else:
            grads = [gradient(p, aa, cc, e) for p, aa, cc, e in zip(params, a, c, n)]
        updates, state = tx.update(grads, state, params)
        return uniopt.apply_updates(params, updates), state

    if backend == "jax":
        import jax

        step = jax.jit(step)
    if flat:
        params = uniopt.flatten(params)
    state = tx.init(params)
    for n in noise:
        params, state = step(params, state, n)
    return [host(p) for p in (params.unflatten() if flat else params)]


@functools.cache
def oracle(case_id: str):
    """The float64 NumPy oracle of the case on real pairs: torch's view_as_real."""
    case = BY_ID[case_id]
    pairs = [np.stack([x.real, x.imag], -1) for x in INIT]
    a = [np.stack([x.real, x.real], -1) for x in CURVATURE]
    c = [np.stack([x.real, x.imag], -1) for x in CENTER]
    states: list[dict] = [{} for _ in pairs]
    for t, noise in enumerate(NOISE, start=1):
        pairs = [
            reference.ORACLES[case.algorithm](
                p, gradient(p, aa, cc, np.stack([e.real, e.imag], -1)), s, t, **case.options
            )
            for p, aa, cc, e, s in zip(pairs, a, c, noise, states)
        ]
    return [p[..., 0] + 1j * p[..., 1] for p in pairs]


@functools.cache
def torch_run(case_id: str, dtype: str):
    import torch

    case = BY_ID[case_id]
    params, a, c, noise = arrays("torch", dtype)
    params = [torch.nn.Parameter(p) for p in params]
    opt = getattr(torch.optim, TORCH_CLASSES[case.algorithm])(params, **case.torch)
    for n in noise:
        for p, aa, cc, e in zip(params, a, c, n):
            p.grad = gradient(p.detach(), aa, cc, e)
        opt.step()
    return [host(p) for p in params]


@functools.cache
def optax_run(case_id: str, dtype: str):
    import jax
    import optax

    factory, kwargs = BY_ID[case_id].optax
    tx = getattr(optax, factory)(**kwargs)
    params, a, c, noise = arrays("jax", dtype)

    @jax.jit
    def step(params, state, n):
        grads = [gradient(p, aa, cc, e) for p, aa, cc, e in zip(params, a, c, n)]
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for n in noise:
        params, state = step(params, state, n)
    return [host(p) for p in params]


def deviation(result, expected) -> float:
    """Max-abs deviation over max |expected| (complex magnitudes)."""
    diff = max(float(np.max(np.abs(r - e))) for r, e in zip(result, expected))
    return diff / max(float(np.max(np.abs(e))) for e in expected)


def check_all(case_id: str, dtype: str, expected, mode: str = "real_pairs", who: str = "") -> None:
    bad = {}
    for backend in BACKEND_NAMES:
        if not BACKENDS[backend].available():
            continue
        for face in FACES:
            rel = deviation(run(case_id, backend, face, dtype, mode), expected)
            if not rel <= TOLERANCE[dtype]:
                bad[f"{backend}/{face}"] = f"{rel:.3e}"
    assert not bad, f"deviation from {who} above {TOLERANCE[dtype]}: {bad}"


TORCH_CASES = [c.id for c in CASES if c.torch is not None]
OPTAX_CASES = [c.id for c in CASES if c.optax is not None]
OTHER_CASES = [c.id for c in CASES if c.torch is None]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", TORCH_CASES)
def test_real_pairs_match_torch_optim(case_id, dtype):
    """Before: uniopt.Adam on complex64 was 0.3 from torch.optim.Adam after 3 steps,
    AMSGrad raised on torch and diverged to 1e114 on NumPy/JAX."""
    require("torch")
    check_all(case_id, dtype, torch_run(case_id, dtype), who="torch.optim")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", TORCH_CASES + OTHER_CASES)
def test_real_pairs_match_the_float64_oracle_on_pairs(case_id, dtype):
    check_all(case_id, dtype, oracle(case_id), who="the float64 oracle on real pairs")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", OPTAX_CASES)
def test_conjugate_mode_matches_optax(case_id, dtype):
    require("jax")
    check_all(case_id, dtype, optax_run(case_id, dtype), "conjugate", who="optax")


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize(
    "case_id",
    ["sgd-momentum", "adamw-amsgrad", "adagrad-default", "rmsprop-centered-momentum"]
    + ["lamb-default", "lars_momentum-coeff", "lookahead-adamw-first-step"],
)
def test_flat_parameters(case_id, backend):
    require(backend)
    for dtype in DTYPES:
        rel = deviation(run(case_id, backend, "flat", dtype), oracle(case_id))
        assert rel <= TOLERANCE[dtype], f"{dtype}: {rel:.3e}"


OPTAX_FLAVORED = [
    ("adam", {"learning_rate": 0.05}, {"lr": 0.05}),
    ("adamw", {"learning_rate": 0.05}, {"lr": 0.05}),
    ("amsgrad", {"learning_rate": 0.05}, {"lr": 0.05, "amsgrad": True}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.9}),
    ("adagrad", {"learning_rate": 0.05}, {"lr": 0.05}),
    ("rmsprop", {"learning_rate": 0.01, "centered": True}, {"lr": 0.01, "centered": True}),
    ("lamb", {"learning_rate": 0.05, "weight_decay": 0.01}, {"lr": 0.05, "weight_decay": 0.01}),
    ("lars", {"learning_rate": 0.5}, {"lr": 0.5}),
]
UNIOPT_OF = {"amsgrad": "adam", "lars": "lars_momentum"}


@pytest.mark.parametrize(
    "name,optax_kwargs,kwargs", OPTAX_FLAVORED, ids=[x[0] for x in OPTAX_FLAVORED]
)
def test_optax_flavor_on_complex_is_optax(name, optax_kwargs, kwargs):
    """``flavor="optax"`` alone (conjugate second moments) continues as optax does,
    jitted, with optax's state dtypes (complex, as the parameters)."""
    require("jax")
    dtype = "complex64"
    import jax
    import optax

    tx = getattr(optax, name)(**optax_kwargs)
    ours = getattr(uniopt, UNIOPT_OF.get(name, name))(**kwargs, flavor="optax")
    params, a, c, noise = arrays("jax", dtype)
    out = []
    for t in (tx, ours):

        @jax.jit
        def step(params, state, n, t=t):
            grads = [gradient(p, aa, cc, e) for p, aa, cc, e in zip(params, a, c, n)]
            updates, state = t.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        p, state = params, t.init(params)
        for n in noise:
            p, state = step(p, state, n)
        out.append([host(x) for x in p])
        leaves = [x for x in jax.tree.leaves(state) if getattr(x, "ndim", 0) > 0]
        assert {str(x.dtype) for x in leaves} == {dtype}
    assert deviation(out[1], out[0]) <= TOLERANCE[dtype]


def test_torch_state_is_torch_state():
    """The state is kept complex, as torch.optim keeps it (viewed as real in the step),
    with the same values; Adagrad's accumulator starts at ``complex(v, v)``."""
    torch = pytest.importorskip("torch")
    for name, kwargs in [
        ("Adam", {"lr": 0.1, "amsgrad": True}),
        ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.3}),
        ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.9}),
        ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ]:
        theirs = [torch.nn.Parameter(torch.tensor(x, dtype=torch.complex128)) for x in INIT]
        ours = [torch.nn.Parameter(torch.tensor(x, dtype=torch.complex128)) for x in INIT]
        t_opt = getattr(torch.optim, name)(theirs, **kwargs)
        u_opt = getattr(uniopt, name)(ours, **kwargs)
        for n in NOISE[:3]:
            for ps in (theirs, ours):
                for p, a, c, e in zip(ps, CURVATURE, CENTER, n):
                    p.grad = gradient(p.detach(), torch.tensor(a), torch.tensor(c), torch.tensor(e))
            t_opt.step()
            u_opt.step()
        portable = getattr(u_opt, "portable_state_dict", u_opt.state_dict)
        saved = portable()["state"]
        for i, p in enumerate(theirs):
            for key, value in t_opt.state[p].items():
                if key == "step":
                    continue
                mine = saved[str(i)][key]
                assert mine.dtype == np.complex128, (name, key)
                np.testing.assert_allclose(mine, value.numpy(), rtol=1e-13, atol=1e-15)


def test_mixed_real_and_complex_parameters_and_param_groups():
    torch = pytest.importorskip("torch")
    values = [INIT[0], INIT[1].real.copy(), INIT[2]]

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.02, "weight_decay": 0.1}]

    theirs = [torch.nn.Parameter(torch.tensor(x)) for x in values]
    ours = [torch.nn.Parameter(torch.tensor(x)) for x in values]
    t_opt = torch.optim.AdamW(groups(theirs), lr=0.05)
    u_opt = uniopt.AdamW(groups(ours), lr=0.05)
    for n in NOISE:
        for ps in (theirs, ours):
            for p, a, c, e in zip(ps, CURVATURE, CENTER, n):
                a, c, e = (x.real if not p.is_complex() else x for x in (a, c, e))
                p.grad = gradient(p.detach(), torch.tensor(a), torch.tensor(c), torch.tensor(e))
        t_opt.step()
        u_opt.step()
    for p, q in zip(theirs, ours):
        assert p.dtype == q.dtype
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-12)


def test_port_to_and_from_torch_keeps_complex_state():
    torch = pytest.importorskip("torch")

    def params():
        return {f"p{i}": torch.nn.Parameter(torch.tensor(x)) for i, x in enumerate(INIT)}

    def step(opt, ps, n):
        for p, a, c, e in zip(ps.values(), CURVATURE, CENTER, n):
            p.grad = gradient(p.detach(), torch.tensor(a), torch.tensor(c), torch.tensor(e))
        opt.step()

    ref_params = params()
    ref = torch.optim.Adam(list(ref_params.values()), lr=0.05, amsgrad=True)
    for n in NOISE:
        step(ref, ref_params, n)
    # torch -> uniopt after 3 steps, uniopt -> torch after 6
    theirs = params()
    t_opt = torch.optim.Adam(list(theirs.values()), lr=0.05, amsgrad=True)
    for n in NOISE[:3]:
        step(t_opt, theirs, n)
    u_opt = uniopt.port.from_torch(t_opt, list(theirs))
    for n in NOISE[3:6]:
        step(u_opt, theirs, n)
    back = uniopt.port.to_torch(u_opt)
    assert back.state[theirs["p0"]]["exp_avg"].dtype == torch.complex128
    for n in NOISE[6:]:
        step(back, theirs, n)
    for name, p in ref_params.items():
        np.testing.assert_allclose(
            theirs[name].detach().numpy(), p.detach().numpy(), rtol=1e-13, atol=1e-15
        )


def test_port_to_and_from_optax_keeps_complex_state():
    require("jax")
    import jax.numpy as jnp
    import optax

    names = [f"p{i}" for i in range(len(INIT))]

    def grads(ps, n):
        return {k: gradient(ps[k], a, c, e) for k, a, c, e in zip(names, CURVATURE, CENTER, n)}

    def optax_steps(tx, state, ps, noise):
        for n in noise:
            updates, state = tx.update(grads(ps, n), state, ps)
            ps = optax.apply_updates(ps, updates)
        return state, ps

    start = {k: jnp.asarray(x) for k, x in zip(names, INIT)}
    tx = optax.adamw(learning_rate=0.05, weight_decay=0.1)
    _, expected = optax_steps(tx, tx.init(start), start, NOISE)
    state, ps = optax_steps(tx, tx.init(start), start, NOISE[:3])
    opt = uniopt.port.from_optax(
        state,
        {k: np.array(v) for k, v in ps.items()},
        "adamw",
        learning_rate=0.05,
        weight_decay=0.1,
    )
    assert opt.state_dict()["state"]["p0"]["exp_avg_sq"].dtype == np.complex128
    for n in NOISE[3:6]:
        opt.step(grads(opt.params, n))
    tx2, state = uniopt.port.to_optax(opt, {k: jnp.asarray(v) for k, v in opt.params.items()})
    _, got = optax_steps(tx2, state, {k: jnp.asarray(v) for k, v in opt.params.items()}, NOISE[6:])
    for k in names:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(expected[k]), rtol=1e-12)
    # real pairs have no optax twin
    real_pairs = uniopt.AdamW({k: np.array(v) for k, v in zip(names, INIT)}, lr=0.05)
    real_pairs.step(grads(real_pairs.params, NOISE[0]))
    with pytest.raises(ValueError, match="complex_mode='real_pairs'"):
        uniopt.port.to_optax(real_pairs, {k: jnp.asarray(x) for k, x in zip(names, INIT)})


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_and_load_round_trip_complex_state(tmp_path, dtype):
    """complex128 state could not be saved at all (safetensors has no complex128)."""

    def build(values):
        return uniopt.Adagrad(
            {f"p{i}": v for i, v in enumerate(values)}, lr=0.1, initial_accumulator_value=0.2
        )

    opt = build([x.astype(dtype) for x in INIT])
    a, c = ([x.astype(dtype) for x in xs] for xs in (CURVATURE, CENTER))
    for n in NOISE[:3]:
        ps = opt.params.values()
        opt.step([gradient(*x, e.astype(dtype)) for *x, e in zip(ps, a, c, n)])
    path = tmp_path / "state.safetensors"
    uniopt.save(opt, path)
    again = build([p.copy() for p in opt.params.values()])
    uniopt.load(path, into=again)
    saved, loaded = opt.state_dict()["state"], again.state_dict()["state"]
    for name, entry in saved.items():
        assert loaded[name]["sum"].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(loaded[name]["sum"], entry["sum"])


@pytest.mark.parametrize("flavor", ["keras", "paddle", "mindspore", "oneflow"])
@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adagrad", "RMSprop", "LAMB"])
def test_flavors_without_complex_support_refuse_at_construction(name, flavor):
    cls = getattr(uniopt, name)
    if flavor not in cls.rule.flavors:
        pytest.skip(f"{name} has no {flavor} flavor")
    x = np.ones(3, dtype=np.complex64)
    before = x.copy()
    with pytest.raises(TypeError, match=rf"flavor='{flavor}' takes no complex parameters.*'w'"):
        cls({"w": x}, flavor=flavor)
    with pytest.raises(TypeError, match=rf"flavor='{flavor}' takes no complex parameters"):
        getattr(uniopt, name.lower())(flavor=flavor).init({"w": x})
    np.testing.assert_array_equal(x, before)
    cls({"w": np.ones(3, dtype=np.float32)}, flavor=flavor)  # real parameters: as before


def test_complex_mode_none_refuses_and_sgd_keras_takes_complex():
    with pytest.raises(TypeError, match="complex_mode=None takes no complex"):
        uniopt.Adam([np.ones(2, np.complex128)], complex_mode=None)
    with pytest.raises(ValueError, match="invalid complex_mode='pairs'"):
        uniopt.Adam([np.ones(2, np.complex128)], complex_mode="pairs")
    for flavor in ("paddle", "mindspore", "oneflow"):
        with pytest.raises(TypeError, match=flavor):
            uniopt.SGD([np.ones(2, np.complex128)], flavor=flavor)
    # Keras's SGD is linear in the gradient: on complex variables it is the real pairs'
    x = np.array([1 + 2j, -1j])
    opt = uniopt.SGD([x], lr=0.1, momentum=0.9, flavor="keras")
    opt.step([np.array([1j, 2 + 0j])])
    np.testing.assert_allclose(x, [1 + 1.9j, -0.2 - 1j])
    assert opt.state_dict()["state"]["0"]["momentum_buffer"].dtype == np.complex128
