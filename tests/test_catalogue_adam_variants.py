"""The Adam variants of issue 18 (family A): NAdam / NAdamW, RAdam, Adamax / AdamaxW,
AdaBelief, Yogi, Adan and optimistic Adam.

Oracles: the frameworks themselves (torch.optim; optax jitted on jax; Keras 3 on jax
with ``flavor="keras"``), each case of their own test grids (torch's ``optim_db``
inputs, transcribed below and compared with torch's list where it can be imported;
optax's ``alias_test`` list, read from the installed optax), and the float64 NumPy
oracles of :mod:`uniopt.parity.reference` for options no framework has. uniopt runs
30 steps of a noisy quadratic over two small tensors, both faces (the functional one
jitted on jax), on numpy, torch, jax and array_api_strict: float64 within 1e-12 and
float32 within 1e-5 of the reference in the same dtype, relative to the largest
parameter.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require

import uniopt
from uniopt.parity import frameworks
from uniopt.parity.arrays import BACKENDS
from uniopt.parity.cases import Case
from uniopt.parity.problem import make_problem
from uniopt.parity.runner import (
    deviation,
    run_functional,
    run_reference,
    run_stateful,
    run_torch,
)

STEPS = 30
PROBLEM = make_problem(STEPS, seed=7, shapes=((4, 5), (7,)))
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
FACES = {"stateful": run_stateful, "functional": run_functional}
#: every backend and face in float64; float32 on numpy's stateful and jax's jitted face
EVERYWHERE = (
    *(
        (b, f, "float64")
        for b in ("numpy", "torch", "jax", "array_api_strict")
        for f in ("stateful", "functional")
    ),
    ("numpy", "stateful", "float32"),
    ("jax", "functional", "float32"),
)
#: the cheaper sweep for the further option sets (the registry's cases run everywhere in
#: tests/test_parity.py): numpy's two faces; and jitted jax in float64 where the traced
#: step count takes a path of its own (momentum products, rectification)
SOME = (("numpy", "stateful"), ("numpy", "functional"))
JITTED = (*SOME, ("jax", "functional", "float64"))
#: Keras (float32): numpy, torch's stateful face and jitted jax
KERAS_WHERE = (*SOME, ("torch", "stateful"), ("jax", "functional"))
BOTH = ("float64", "float32")


@dataclass(frozen=True)
class Check:
    """uniopt's ``algorithm(**options)`` against a reference: ``("torch", kwargs)``,
    ``("torch64", kwargs)`` (torch with float64 as its default dtype), ``("optax",
    name, kwargs)``, ``("keras", name, kwargs)`` or ``("oracle",)``."""

    id: str
    algorithm: str
    options: tuple
    reference: tuple
    where: tuple = SOME
    dtypes: tuple = BOTH


def check(id: str, algorithm: str, options: dict, reference: tuple, **kw: Any) -> Check:
    frozen = tuple((r if not isinstance(r, dict) else tuple(sorted(r.items()))) for r in reference)
    return Check(id, algorithm, tuple(sorted(options.items())), frozen, **kw)


@functools.cache
def ours(algorithm: str, options: tuple, backend: str, face: str, dtype: str) -> list:
    require(backend)
    case = Case(algorithm, dict(options))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return FACES[face](case, backend, PROBLEM, dtype)


@contextlib.contextmanager
def torch_default_dtype(dtype: Any):
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@functools.cache
def theirs(algorithm: str, reference: tuple, dtype: str) -> list:
    kind, *args = reference
    if kind == "oracle":
        return run_reference(Case(algorithm, dict(args[0])), PROBLEM)
    if kind in ("torch", "torch64"):
        require("torch")
        import torch

        case = Case(algorithm, {}, torch=dict(args[0]))
        with torch_default_dtype(torch.float64 if kind == "torch64" else torch.float32):
            return run_torch(case, PROBLEM, dtype)
    if kind == "optax":
        return optax_run(args[0], dict(args[1]), dtype)
    return keras_run(args[0], dict(args[1]))


def optax_run(name: str, kwargs: dict, dtype: str) -> list:
    """optax's own ``optax.<name>(**kwargs)`` on the problem, step by step (not jitted:
    no compilation per case; tests/test_parity.py runs the registry's cases jitted)."""
    require("jax")
    import optax

    to = BACKENDS["jax"].to_array
    params = [to(x, dtype) for x in PROBLEM.init]
    a, c = ([to(x, dtype) for x in xs] for xs in (PROBLEM.curvature, PROBLEM.center))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tx = getattr(optax, name)(**kwargs)
    state = tx.init(params)
    for noise in PROBLEM.noise:
        grads = [aa * (p - cc) + to(n, dtype) for p, aa, cc, n in zip(params, a, c, noise)]
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return [BACKENDS["jax"].to_numpy(p) for p in params]


def keras_run(name: str, kwargs: dict) -> list:
    """Keras 3's optimizer on the problem, float32 (gradients formed in float32)."""
    if not frameworks.keras_available():
        pytest.skip("Keras 3 with the jax backend is not available")
    import keras

    f32 = [[x.astype(np.float32) for x in xs] for xs in (PROBLEM.curvature, PROBLEM.center)]
    variables = [keras.Variable(x.astype(np.float32)) for x in PROBLEM.init]
    opt = getattr(keras.optimizers, name)(**kwargs)
    opt.build(variables)
    for noise in PROBLEM.noise:
        grads = [
            a * (np.asarray(v.numpy()) - c) + n.astype(np.float32)
            for v, a, c, n in zip(variables, *f32, noise)
        ]
        opt.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
    return [np.asarray(v.numpy(), np.float64) for v in variables]


def verify(c: Check) -> None:
    bad = {}
    for dtype in c.dtypes:
        want = theirs(c.algorithm, c.reference, dtype)
        for backend, face, *only in c.where:
            if not BACKENDS[backend].available() or (only and dtype not in only):
                continue
            _, rel = deviation(ours(c.algorithm, c.options, backend, face, dtype), want)
            if not rel <= TOLERANCE[dtype]:
                bad[f"{backend}/{face}/{dtype}"] = f"{rel:.2e}"
    assert not bad, f"deviation from {c.reference[0]} {c.reference[1:]}: {bad}"


# ---- the frameworks' own grids --------------------------------------------------------

#: torch.optim's ``optim_db`` inputs on CPU (torch 2.13, common_optimizers.py); the
#: CUDA-only ones (``capturable``, tensor ``lr``) select implementations uniopt ignores
TORCH_GRIDS: dict[str, list[dict[str, Any]]] = {
    "NAdam": [
        {},
        {"lr": 1e-3},
        {"momentum_decay": 6e-3},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "momentum_decay": 6e-3},
        {"weight_decay": 0.1, "momentum_decay": 6e-3, "decoupled_weight_decay": True},
        {"weight_decay": 0.1, "maximize": True},
    ],
    "RAdam": [
        {},
        {"lr": 2e-3},
        {"eps": 1e-6},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"weight_decay": 0.1, "maximize": True},
    ],
    "Adamax": [
        {},
        {"lr": 0.1},
        {"weight_decay": 0.1},
        {"maximize": True},
        {"weight_decay": 0.1, "maximize": True},
    ],
}


def torch_optim_db(name: str) -> list[dict[str, Any]] | None:
    """torch's own list, or None where its test helpers cannot be imported (they need
    ``expecttest``)."""
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("expecttest") is None:
        return None
    try:
        from torch.testing._internal.common_optimizers import optim_db
    except ImportError:
        return None
    (info,) = [i for i in optim_db if i.optim_cls.__name__ == name]
    inputs = info.optim_inputs_func(device="cpu", dtype=torch.float64)
    return [{k: v for k, v in i.kwargs.items() if k != "foreach"} for i in inputs]


@pytest.mark.parametrize("name", sorted(TORCH_GRIDS))
def test_transcribed_grids_are_torchs(name):
    grid = torch_optim_db(name)
    if grid is None:
        pytest.skip("torch.testing._internal.common_optimizers needs expecttest")
    assert grid == TORCH_GRIDS[name]


@functools.cache
def optax_alias_grid() -> dict[str, list[dict[str, Any]]]:
    """optax's ``alias_test`` entries (``_OPTIMIZERS_UNDER_TEST``), read from the
    installed optax without importing its test dependencies."""
    optax = pytest.importorskip("optax")
    path = Path(optax.__file__).parent / "_src" / "alias_test.py"
    if not path.exists():
        pytest.skip("this optax ships no alias_test.py")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == (
            "_OPTIMIZERS_UNDER_TEST"
        ):
            grid: dict[str, list[dict[str, Any]]] = {}
            for entry in ast.literal_eval(node.value):
                grid.setdefault(entry["opt_name"], []).append(entry["opt_kwargs"])
            return grid
    raise AssertionError("optax's alias_test has no _OPTIMIZERS_UNDER_TEST")


#: optax's alias_test entries of this family as run here (the list is checked below)
OPTAX_ALIAS = {
    "nadam": [{"learning_rate": 1e-2}],
    "nadamw": [{"learning_rate": 1e-2}],
    "radam": [{"learning_rate": 5e-3}],
    "adamax": [{"learning_rate": 1e-1}],
    "adamaxw": [{"learning_rate": 1e-1}],
    "adabelief": [{"learning_rate": 1e-2}],
    "yogi": [{"learning_rate": 1e-1}],
    "adan": [{"learning_rate": 1e-1}],
    "optimistic_adam": [{"learning_rate": 2e-3}],
    "optimistic_adam_v2": [{"learning_rate": 2e-3}],
}


def test_optax_alias_entries_are_optaxs():
    grid = optax_alias_grid()
    assert {k: grid.get(k) for k in OPTAX_ALIAS} == OPTAX_ALIAS


def alias_checks(name: str, algorithm: str, everywhere: bool = True) -> list[Check]:
    return [
        check(
            f"optax-alias-{name}-{i}",
            algorithm,
            {"lr": kw["learning_rate"], "flavor": "optax"},
            ("optax", name, kw),
            where=EVERYWHERE if everywhere else SOME,
        )
        for i, kw in enumerate(OPTAX_ALIAS[name])
    ]


def torch_grid_checks(name: str, algorithm: str) -> list[Check]:
    return [
        check(
            f"torch-optim-db-{i}",
            algorithm,
            kw,
            ("torch", kw),
            where=EVERYWHERE if i == 0 else SOME,
        )
        for i, kw in enumerate(TORCH_GRIDS[name])
    ]


# ---- NAdam / NAdamW ---------------------------------------------------------------------

NADAM_CHECKS = [
    *torch_grid_checks("NAdam", "nadam"),
    check(
        "torch-flavor",
        "nadam",
        dict(lr=0.05, momentum_decay=0.02, flavor="torch"),
        ("torch", dict(lr=0.05, momentum_decay=0.02)),
        where=JITTED,
    ),
    # torch with float64 as its default dtype keeps the product of the momenta in float64
    check(
        "torch-float64-product",
        "nadam",
        dict(lr=0.05, weight_decay=0.05, mu_product="exact"),
        ("torch64", dict(lr=0.05, weight_decay=0.05)),
        dtypes=("float64",),
        where=JITTED,
    ),
    check(
        "torch-nadamw",
        "nadamw",
        dict(lr=0.05, weight_decay=0.1, betas=(0.8, 0.99), flavor="torch"),
        ("torch", dict(lr=0.05, weight_decay=0.1, betas=(0.8, 0.99), decoupled_weight_decay=True)),
    ),
    *alias_checks("nadam", "nadam", everywhere=False),
    *alias_checks("nadamw", "nadamw", everywhere=False),
    check(
        "optax-options",
        "nadam",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, eps_root=1e-8, flavor="optax"),
        ("optax", "nadam", dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8)),
    ),
    check(
        "optax-nadamw-decay",
        "nadamw",
        dict(lr=0.05, weight_decay=0.1, eps_root=1e-6, flavor="optax"),
        ("optax", "nadamw", dict(learning_rate=0.05, weight_decay=0.1, eps_root=1e-6)),
    ),
    # torch's arithmetic with optax's constant momentum: the same numbers
    check(
        "torch-form-is-optax",
        "nadam",
        dict(lr=0.05, momentum_decay=None),
        ("optax", "nadam", dict(learning_rate=0.05)),
    ),
    check(
        "keras-flavor",
        "nadam",
        dict(lr=0.05, flavor="keras"),
        ("keras", "Nadam", dict(learning_rate=0.05)),
        where=KERAS_WHERE,
        dtypes=("float32",),
    ),
    check(
        "keras-decay",
        "nadam",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, flavor="keras"),
        (
            "keras",
            "Nadam",
            dict(learning_rate=0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-3, weight_decay=0.1),
        ),
        dtypes=("float32",),
    ),
    check(
        "oracle-maximize-eps-root",
        "nadam",
        dict(lr=0.05, maximize=True, eps_root=1e-4, momentum_decay=0.0),
        ("oracle", dict(lr=0.05, maximize=True, eps_root=1e-4, momentum_decay=0.0)),
    ),
]


@pytest.mark.parametrize("c", NADAM_CHECKS, ids=lambda c: c.id)
def test_nadam(c):
    verify(c)


@pytest.mark.parametrize("mode", ["float32", "exact"])
@pytest.mark.parametrize("beta1,psi", [(0.9, 4e-3), (0.99, 0.5), (0.5, 0.0), (0.0, 4e-3)])
def test_nadam_momentum_products_host_and_traced(mode, beta1, psi):
    """The product of the momenta as torch forms it (float32 running product, or exact),
    on the host (the stateful face) and from a traced step (the closed form and the
    table of the functional face), against a plain running product."""
    from uniopt.algorithms.nadam import momentum_cache, mu_product

    product, want = 1.0, {}
    for t in range(1, 6001):
        mu = momentum_cache(beta1, psi, float(t))
        product = float(np.float32(product) * np.float32(mu)) if mode == "float32" else product * mu
        want[t] = product
    for t in (*range(1, 300), 1000, 4095, 4096, 4097, 6000):
        host = mu_product(beta1, psi, t, mode)
        traced = float(mu_product(beta1, psi, np.asarray(float(t)), mode))
        for got in (host, traced):
            # what reaches the update: 1 - product (exactly what torch forms, or 1e-14)
            assert abs((1 - got) - (1 - want[t])) <= 1e-14 * (1 - want[t]), (t, got, want[t])
        if mode == "float32" and want[t] >= 2.0**-80:  # below, 1 - product is 1 anyway
            assert host == want[t] and traced == want[t]


def test_nadam_port_refusals_and_optax_round_trip():
    import jax.numpy as jnp
    import optax

    params = {"w": jnp.asarray(PROBLEM.init[0]), "b": jnp.asarray(PROBLEM.init[1])}
    opt = uniopt.NAdam({k: np.array(v) for k, v in params.items()}, lr=0.05)
    with pytest.raises(ValueError, match="torch.optim has no twin of uniopt's 'nadam'"):
        uniopt.port.to_torch_state_dict(opt)
    with pytest.raises(ValueError, match="cannot express momentum_decay=0.004"):
        uniopt.port.to_optax(opt)
    tx = optax.nadamw(learning_rate=0.05, weight_decay=0.1, eps_root=1e-8)
    state = tx.init(params)
    grads = {k: 0.5 * v + 0.1 for k, v in params.items()}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    ported = uniopt.port.from_optax(
        state,
        {k: np.array(v) for k, v in params.items()},
        "nadamw",
        learning_rate=0.05,
        weight_decay=0.1,
        eps_root=1e-8,
    )
    assert ported.algorithm == "nadamw" and ported.flavor == "optax"
    tx2, state2 = uniopt.port.to_optax(ported)
    for _ in range(3):
        grads = {k: 0.5 * v + 0.1 for k, v in params.items()}
        updates, state2 = tx2.update(grads, state2, params)
        params = optax.apply_updates(params, updates)
        ported.step({k: 0.5 * np.asarray(v) + 0.1 for k, v in ported.params.items()})
    for k in params:
        np.testing.assert_allclose(np.asarray(ported.params[k]), np.asarray(params[k]), rtol=1e-12)


def test_nadam_errors_name_the_argument_and_change_nothing():
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"^NAdam: invalid momentum_decay=-0\.2: it must be >= 0$"):
        uniopt.NAdam([x], momentum_decay=-0.2)
    with pytest.raises(TypeError, match="NAdamW: complex_mode=None takes no complex"):
        uniopt.NAdamW([x + 0j], complex_mode=None)
    opt = uniopt.NAdam([x], lr=0.1)
    with pytest.raises(ValueError, match="invalid momentum_decay"):
        opt.add_param_group({"params": [np.ones(2)], "momentum_decay": -1.0})
    assert len(opt.param_groups) == 1
    assert uniopt.nadam(momentum_decay=None, lr=0.1).init([x]) is not None
    assert math.isclose(uniopt.NAdamW([x]).param_groups[0]["weight_decay"], 1e-4)


# ---- RAdam ----------------------------------------------------------------------------

RADAM_CHECKS = [
    *torch_grid_checks("RAdam", "radam"),
    check(
        "torch-beta2",
        "radam",
        dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.05, flavor="torch"),
        ("torch", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.05)),
        where=JITTED,
    ),
    *alias_checks("radam", "radam", everywhere=False),
    check(
        "optax-options",
        "radam",
        dict(
            lr=0.05,
            betas=(0.8, 0.99),
            eps=1e-4,
            eps_root=1e-8,
            threshold=6.0,
            nesterov=True,
            flavor="optax",
        ),
        (
            "optax",
            "radam",
            dict(
                learning_rate=0.05,
                b1=0.8,
                b2=0.99,
                eps=1e-4,
                eps_root=1e-8,
                threshold=6.0,
                nesterov=True,
            ),
        ),
        where=JITTED,
    ),
    # torch's arithmetic with optax's eps placement: optax's numbers
    check(
        "eps-after-correction-is-optax",
        "radam",
        dict(lr=0.05, eps=1e-3, eps_hat=False),
        ("optax", "radam", dict(learning_rate=0.05, eps=1e-3)),
    ),
    check(
        "oracle-threshold-nesterov-eps-root",
        "radam",
        dict(
            lr=0.05,
            threshold=4.5,
            nesterov=True,
            eps_root=1e-6,
            decoupled_weight_decay=True,
            weight_decay=0.1,
        ),
        (
            "oracle",
            dict(
                lr=0.05,
                threshold=4.5,
                nesterov=True,
                eps_root=1e-6,
                decoupled_weight_decay=True,
                weight_decay=0.1,
            ),
        ),
    ),
]


@pytest.mark.parametrize("c", RADAM_CHECKS, ids=lambda c: c.id)
def test_radam(c):
    verify(c)


@pytest.mark.parametrize("beta2", [0.999, 0.99, 0.9999, 0.5])
def test_radam_sma_length_traced_is_exact(beta2):
    """rho_t from a traced (0-d array) step, float64 and float32, against the exact
    value (the host form is torch's own arithmetic)."""
    from decimal import Decimal, localcontext

    from uniopt.algorithms.radam import sma_length

    for t in (*range(1, 40), 100, 1000, 10**5):
        with localcontext() as context:
            context.prec = 50
            b = Decimal(beta2)
            exact = float(2 / (1 - b) - 1 - 2 * t * b**t / (1 - b**t))
        for dtype, tol in ((np.float64, 4e-15), (np.float32, 1e-6)):
            got = float(sma_length(beta2, np.asarray(t, dtype=dtype)))
            assert abs(got - exact) <= tol * abs(exact), (t, dtype, got, exact)
        # the host form is torch's arithmetic, with torch's cancellation (2.5e-9 at 0.9999)
        assert abs(sma_length(beta2, t) - exact) <= 1e-8 * abs(exact)


# ---- Adamax / AdamaxW -----------------------------------------------------------------

ADAMAX_CHECKS = [
    *torch_grid_checks("Adamax", "adamax"),
    check(
        "torch-flavor",
        "adamax",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, flavor="torch"),
        ("torch", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3)),
    ),
    *alias_checks("adamax", "adamax", everywhere=False),
    *alias_checks("adamaxw", "adamaxw", everywhere=False),
    check(
        "optax-options",
        "adamaxw",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, flavor="optax"),
        ("optax", "adamaxw", dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-3, weight_decay=0.1)),
    ),
    check(
        "keras-flavor",
        "adamax",
        dict(lr=0.05, flavor="keras"),
        ("keras", "Adamax", dict(learning_rate=0.05)),
        where=KERAS_WHERE,
        dtypes=("float32",),
    ),
    check(
        "keras-decay",
        "adamaxw",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, flavor="keras"),
        (
            "keras",
            "Adamax",
            dict(learning_rate=0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-3, weight_decay=0.1),
        ),
        dtypes=("float32",),
    ),
    check(
        "oracle-keras-eps-l2-maximize",
        "adamax",
        dict(lr=0.05, eps=1e-3, eps_outside_max=True, weight_decay=0.1, maximize=True),
        ("oracle", dict(lr=0.05, eps=1e-3, eps_outside_max=True, weight_decay=0.1, maximize=True)),
    ),
]


@pytest.mark.parametrize("c", ADAMAX_CHECKS, ids=lambda c: c.id)
def test_adamax(c):
    verify(c)


def test_adamax_torch_state_round_trip():
    """torch.optim.Adamax's state (exp_avg, exp_inf, step) into uniopt and back."""
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.tensor(x)) for x in PROBLEM.init]
    theirs = torch.optim.Adamax(params, lr=0.05, weight_decay=0.1)
    for noise in PROBLEM.noise[:3]:
        for p, a, c, n in zip(params, PROBLEM.curvature, PROBLEM.center, noise):
            p.grad = torch.tensor(a) * (p.detach() - torch.tensor(c)) + torch.tensor(n)
        theirs.step()
    ours = uniopt.port.from_torch(theirs)
    assert ours.algorithm == "adamax" and ours.param_groups[0]["weight_decay"] == 0.1
    back = uniopt.port.to_torch_state_dict(ours)
    for i, entry in theirs.state_dict()["state"].items():
        for key in ("exp_avg", "exp_inf", "step"):
            assert torch.equal(back["state"][i][key], entry[key]), key


# ---- AdaBelief, Yogi, Adan, optimistic Adam (optax only) -----------------------------

OPTAX_ONLY_CHECKS = [
    *alias_checks("adabelief", "adabelief"),
    *alias_checks("yogi", "yogi"),
    *alias_checks("adan", "adan"),
    *alias_checks("optimistic_adam_v2", "optimistic_adam"),
    # v1 (deprecated): lr 1, alpha its learning rate, beta its optimism (the lr by default)
    *[
        check(
            f"optax-alias-optimistic_adam-v1-{i}",
            "optimistic_adam",
            {"lr": 1.0, "alpha": kw["learning_rate"], "beta": kw["learning_rate"]},
            ("optax", "optimistic_adam", kw),
        )
        for i, kw in enumerate(OPTAX_ALIAS["optimistic_adam"])
    ],
    check(
        "optimistic-v1-optimism",
        "optimistic_adam",
        dict(lr=1.0, alpha=0.05, beta=0.2, betas=(0.8, 0.99), nesterov=False),
        (
            "optax",
            "optimistic_adam",
            dict(learning_rate=0.05, optimism=0.2, b1=0.8, b2=0.99, nesterov=False),
        ),
        where=JITTED,
    ),
    check(
        "adabelief-options",
        "adabelief",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, eps_root=1e-8, nesterov=True),
        (
            "optax",
            "adabelief",
            dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8, nesterov=True),
        ),
    ),
    check(
        "yogi-options",
        "yogi",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-4),
        ("optax", "yogi", dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-4)),
    ),
    check(
        "adan-options",
        "adan",
        dict(lr=0.05, betas=(0.9, 0.8, 0.95), eps=1e-6, eps_root=1e-10, weight_decay=0.05),
        (
            "optax",
            "adan",
            dict(
                learning_rate=0.05,
                b1=0.9,
                b2=0.8,
                b3=0.95,
                eps=1e-6,
                eps_root=1e-10,
                weight_decay=0.05,
            ),
        ),
        where=JITTED,
    ),
    # options optax's aliases do not take: the float64 oracles
    check(
        "yogi-initial-accumulator-eps-root",
        "yogi",
        dict(lr=0.05, initial_accumulator_value=0.5, eps_root=1e-6, maximize=True),
        ("oracle", dict(lr=0.05, initial_accumulator_value=0.5, eps_root=1e-6, maximize=True)),
    ),
    check(
        "adan-maximize",
        "adan",
        dict(lr=0.05, maximize=True, weight_decay=0.1),
        ("oracle", dict(lr=0.05, maximize=True, weight_decay=0.1)),
    ),
    check(
        "optimistic-decay-maximize",
        "optimistic_adam",
        dict(lr=0.05, weight_decay=0.1, maximize=True, beta=0.5),
        ("oracle", dict(lr=0.05, weight_decay=0.1, maximize=True, beta=0.5)),
    ),
    check(
        "adabelief-decay",
        "adabelief",
        dict(lr=0.05, weight_decay=0.1, nesterov=True),
        ("oracle", dict(lr=0.05, weight_decay=0.1, nesterov=True)),
    ),
]


@pytest.mark.parametrize("c", OPTAX_ONLY_CHECKS, ids=lambda c: c.id)
def test_optax_only(c):
    verify(c)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("adabelief", dict(learning_rate=0.05, eps_root=1e-8)),
        ("yogi", dict(learning_rate=0.05, eps=1e-4)),
        ("radam", dict(learning_rate=0.05, threshold=4.0)),
        ("adamaxw", dict(learning_rate=0.05, weight_decay=0.1)),
        ("nadam", dict(learning_rate=0.05, b1=0.8)),
    ],
)
def test_optax_state_round_trip(name, kwargs):
    """An optax run continued by uniopt (from_optax) and handed back (to_optax), both
    continuing as optax itself does."""
    import jax.numpy as jnp
    import optax

    params = {"w": jnp.asarray(PROBLEM.init[0]), "b": jnp.asarray(PROBLEM.init[1])}
    tx = getattr(optax, name)(**kwargs)
    state = tx.init(params)

    def grads(values: dict) -> dict:
        return {k: 0.5 * jnp.asarray(v) + 0.1 for k, v in values.items()}

    for _ in range(3):
        updates, state = tx.update(grads(params), state, params)
        params = optax.apply_updates(params, updates)
    ours = uniopt.port.from_optax(
        state, {k: np.array(v) for k, v in params.items()}, name, **kwargs
    )
    tx2, state2 = uniopt.port.to_optax(ours)
    back = dict(params)
    for _ in range(3):
        updates, state = tx.update(grads(params), state, params)
        params = optax.apply_updates(params, updates)
        updates, state2 = tx2.update(grads(back), state2, back)
        back = optax.apply_updates(back, updates)
        ours.step({k: 0.5 * np.asarray(v) + 0.1 for k, v in ours.params.items()})
    for k in params:
        np.testing.assert_allclose(np.asarray(ours.params[k]), np.asarray(params[k]), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(back[k]), np.asarray(params[k]), rtol=1e-12)


def test_ports_that_cannot_be_expressed_say_so():
    x = {"w": np.ones(3)}
    for opt in (uniopt.Adan(x), uniopt.OptimisticAdam(x)):
        with pytest.raises(ValueError, match="optax has no twin"):
            uniopt.port.to_optax(opt)
    with pytest.raises(ValueError, match="cannot express eps_hat=True"):
        uniopt.port.to_optax(uniopt.RAdam(x))  # torch's eps placement
    with pytest.raises(ValueError, match="torch.optim has no twin"):
        uniopt.port.to_torch_state_dict(uniopt.Yogi(x))
