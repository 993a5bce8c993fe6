"""Native optimizer state in and out: torch.optim, optax, PaddlePaddle.

Oracles: the frameworks continuing their own runs (torch.optim, optax), recorded
PaddlePaddle runs (``tests/port_fixtures``), and uniopt continuing its own run.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import uniopt
from uniopt.parity.cases import CASES
from uniopt.parity.problem import NAMES, make_problem
from uniopt.port import OPTAX_TRANSFORMS, TORCH_OPTIMIZERS

torch = pytest.importorskip("torch")

PROBLEM = make_problem(8, seed=4)
SHAPES = {n: x.shape for n, x in zip(NAMES, PROBLEM.init)}
TORCH_CASES = [c for c in CASES if c.torch is not None and c.algorithm in TORCH_OPTIMIZERS]
OPTAX_CASES = [c for c in CASES if c.optax is not None and c.optax[0] in OPTAX_TRANSFORMS]


def numpy_grads(values, t):
    return {
        n: PROBLEM.curvature[i] * (np.asarray(values[n]) - PROBLEM.center[i]) + PROBLEM.noise[t][i]
        for i, n in enumerate(NAMES)
    }


def torch_params(values=None):
    values = values or dict(zip(NAMES, PROBLEM.init))
    return {n: torch.nn.Parameter(torch.tensor(np.array(values[n]))) for n in NAMES}


def torch_step(opt, params, t):
    grads = numpy_grads({n: p.detach().numpy() for n, p in params.items()}, t)
    for n, p in params.items():
        p.grad = torch.tensor(grads[n])
    opt.step()


def assert_close(got, want, rtol=1e-12):
    for n in NAMES:
        np.testing.assert_allclose(np.asarray(got[n]), np.asarray(want[n]), rtol=rtol, err_msg=n)


def as_numpy(params):
    return {
        n: p.detach().numpy().copy() if hasattr(p, "detach") else np.asarray(p)
        for n, p in params.items()
    }


# ---- the headline: torch.optim.AdamW -> uniopt on JAX --------------------------------------


def test_torch_adamw_run_continues_in_uniopt_on_jax_like_torch(tmp_path):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
        ).double()

    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(100, 16, 4, generator=gen, dtype=torch.float64)
    ys = torch.randn(100, 16, 2, generator=gen, dtype=torch.float64)

    def torch_loss(m, t):
        return ((m(xs[t]) - ys[t]) ** 2).mean()

    def jax_loss(p, x, y):
        h = jnp.tanh(x @ p["0.weight"].T + p["0.bias"])
        return jnp.mean((h @ p["2.weight"].T + p["2.bias"] - y) ** 2)

    reference, ported = model(), model()
    kwargs = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    ref_opt = torch.optim.AdamW(reference.named_parameters(), **kwargs)
    torch_opt = torch.optim.AdamW(ported.named_parameters(), **kwargs)
    for t in range(50):
        for m, o in ((reference, ref_opt), (ported, torch_opt)):
            o.zero_grad()
            torch_loss(m, t).backward()
            o.step()

    converted = uniopt.port.from_torch(torch_opt)
    assert converted.algorithm == "adamw" and converted.portable_state_dict()["step_count"] == 50
    uniopt.save(converted, tmp_path / "adamw.safetensors")
    params = {n: jnp.asarray(p.detach().numpy()) for n, p in ported.named_parameters()}
    opt = uniopt.AdamW(params)  # hyperparameters come from the file
    assert uniopt.load(tmp_path / "adamw.safetensors", into=opt).complete
    assert opt.param_groups[0]["betas"] == (0.9, 0.99) and opt.param_groups[0]["lr"] == 0.01
    grad = jax.jit(jax.grad(jax_loss))
    for t in range(50, 100):
        ref_opt.zero_grad()
        torch_loss(reference, t).backward()
        ref_opt.step()
        opt.step(grad(opt.params, xs[t].numpy(), ys[t].numpy()))
    for n, p in reference.named_parameters():
        assert isinstance(opt.params[n], jax.Array)
        np.testing.assert_allclose(np.asarray(opt.params[n]), p.detach().numpy(), rtol=1e-12)


# ---- torch.optim in and out, over the registry ----------------------------------------------


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_from_torch_continues_like_torch_optim(case):
    torch_cls = getattr(torch.optim, TORCH_OPTIMIZERS[case.algorithm].torch_class)
    ours, theirs = torch_params(), torch_params()
    torch_opt = torch_cls(list(ours.items()), **case.torch)
    ref = torch_cls(list(theirs.items()), **case.torch)
    for t in range(4):
        torch_step(torch_opt, ours, t)
        torch_step(ref, theirs, t)
    opt = uniopt.port.from_torch(torch_opt)
    assert opt.algorithm == case.algorithm and opt.flavor in ("torch", None)
    assert all(
        p is ours[n]
        for n, p in zip(opt.param_groups[0]["param_names"], opt.param_groups[0]["params"])
    )
    for key, value in case.torch.items():
        assert opt.param_groups[0][key] == value
    for t in range(4, 8):
        grads = numpy_grads(as_numpy(ours), t)
        opt.step({n: torch.tensor(g) for n, g in grads.items()})
        torch_step(ref, theirs, t)
    assert_close(as_numpy(ours), as_numpy(theirs))


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: c.id)
def test_to_torch_continues_like_uniopt(case):
    opt = case.build({n: x.copy() for n, x in zip(NAMES, PROBLEM.init)})
    for t in range(4):
        opt.step(numpy_grads(opt.params, t))
    params = torch_params(opt.params)
    torch_opt = uniopt.port.to_torch(opt, params)
    assert type(torch_opt).__name__ == TORCH_OPTIMIZERS[case.algorithm].torch_class
    assert torch_opt.state_dict()["param_groups"][0]["param_names"] == list(
        opt.param_groups[0]["param_names"]
    )
    for t in range(4, 8):
        opt.step(numpy_grads(opt.params, t))
        torch_step(torch_opt, params, t)
    assert_close(as_numpy(params), opt.params)


def test_param_groups_names_and_extra_keys_travel():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)).double()
    groups = [
        {"params": list(model[0].parameters()), "lr": 0.1},
        {"params": list(model[1].parameters()), "weight_decay": 0.5, "betas": (0.5, 0.9)},
    ]
    torch_opt = torch.optim.Adam(groups, lr=0.01, amsgrad=True)
    sched = torch.optim.lr_scheduler.StepLR(torch_opt, 2)  # adds initial_lr to the groups
    model(torch.ones(2, 3, dtype=torch.float64)).sum().backward()
    torch_opt.step()
    sched.step()
    # torch.optim built from .parameters(): names by identity from named_parameters()
    opt = uniopt.port.from_torch(torch_opt, names=model.named_parameters())
    assert [g["param_names"] for g in opt.param_groups] == [
        ["0.weight", "0.bias"],
        ["1.weight", "1.bias"],
    ]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert opt.param_groups[1]["betas"] == (0.5, 0.9) and opt.param_groups[1]["weight_decay"] == 0.5
    assert opt.param_groups[0]["initial_lr"] == 0.1 and opt.param_groups[0]["amsgrad"] is True
    state = opt.portable_state_dict()["state"]
    np.testing.assert_array_equal(
        state["1.weight"]["max_exp_avg_sq"],
        torch_opt.state[model[1].weight]["max_exp_avg_sq"].numpy(),
    )
    # positional names without torch names; explicit lists must have the right length
    positional = uniopt.port.from_torch(torch.optim.SGD(list(model.parameters()), lr=0.1))
    assert positional.param_groups[0]["param_names"] == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="3 names for 4 parameters"):
        uniopt.port.from_torch(torch_opt, names=["a", "b", "c"])
    # and back: torch's own state_dict shape, loadable by torch
    tsd = uniopt.port.to_torch_state_dict(opt)
    assert [g["params"] for g in tsd["param_groups"]] == [[0, 1], [2, 3]]
    assert tsd["param_groups"][0]["initial_lr"] == 0.1
    fresh = torch.optim.Adam(
        [{"params": list(model[0].parameters())}, {"params": list(model[1].parameters())}]
    )
    fresh.load_state_dict(tsd)
    assert fresh.param_groups[1]["betas"] == (0.5, 0.9)
    torch.testing.assert_close(
        fresh.state[model[0].bias]["exp_avg"], torch_opt.state[model[0].bias]["exp_avg"]
    )


def test_bfloat16_state_crosses_bit_exactly():
    params = {"w": torch.nn.Parameter(torch.randn(5, dtype=torch.bfloat16))}
    torch_opt = torch.optim.AdamW(list(params.items()), lr=0.1)
    params["w"].grad = torch.randn(5, dtype=torch.bfloat16)
    torch_opt.step()
    opt = uniopt.port.from_torch(torch_opt)
    saved = opt.portable_state_dict()["state"]["w"]
    assert saved["exp_avg"].dtype == ml_dtypes.bfloat16
    expected = torch_opt.state[params["w"]]["exp_avg"].view(torch.int16).numpy()
    np.testing.assert_array_equal(saved["exp_avg"].view(np.int16), expected)
    back = uniopt.port.to_torch_state_dict(opt)["state"][0]["exp_avg"]
    assert back.dtype == torch.bfloat16 and torch.equal(
        back, torch_opt.state[params["w"]]["exp_avg"]
    )


def test_infer_algorithm_from_a_torch_state_dict():
    p = [torch.nn.Parameter(torch.ones(2))]
    for cls, kwargs, name in (
        (torch.optim.SGD, {"momentum": 0.9}, "sgd"),
        (torch.optim.Adam, {}, "adam"),
        (torch.optim.AdamW, {}, "adamw"),
        (torch.optim.Adagrad, {}, "adagrad"),
        (torch.optim.RMSprop, {}, "rmsprop"),
    ):
        sd = cls(p, lr=0.1, **kwargs).state_dict()
        assert uniopt.port.infer_algorithm(sd) == name
    old_adamw = torch.optim.AdamW(p, lr=0.1).state_dict()
    del old_adamw["param_groups"][0]["decoupled_weight_decay"]  # torch < 2.6 had no such key
    with pytest.raises(ValueError, match="Adam from AdamW"):
        uniopt.port.infer_algorithm(old_adamw)


def test_unrepresentable_options_are_refused():
    x = {"w": np.ones(3)}
    with pytest.raises(ValueError, match="do_bias_correction=False has no torch.optim.Adam"):
        uniopt.port.to_torch_state_dict(uniopt.Adam(x, do_bias_correction=False))
    with pytest.raises(ValueError, match="learning rate is a schedule"):
        uniopt.port.to_torch_state_dict(uniopt.SGD(x, lr=lambda step: 0.1))
    with pytest.raises(ValueError, match="torch.optim has no twin of uniopt's 'lamb'"):
        uniopt.port.to_torch_state_dict(uniopt.LAMB(x))
    with pytest.raises(TypeError, match="not torch tensors"):
        uniopt.port.to_torch(uniopt.SGD(x, lr=0.1))
    with pytest.raises(ValueError, match="no torch parameter named"):
        uniopt.port.to_torch(uniopt.SGD(x, lr=0.1), {"v": torch.nn.Parameter(torch.ones(3))})


# ---- optax in and out, over the registry ----------------------------------------------------


@pytest.fixture(scope="module")
def optax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return pytest.importorskip("optax")


def optax_run(optax, tx, state, params, steps):
    import jax.numpy as jnp

    for t in steps:
        grads = {n: jnp.asarray(g) for n, g in numpy_grads(params, t).items()}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return state, params


@pytest.mark.parametrize("case", OPTAX_CASES, ids=lambda c: c.id)
def test_from_optax_continues_like_optax(case, optax):
    import jax.numpy as jnp

    name, kwargs = case.optax
    tx = getattr(optax, name)(**kwargs)
    params = {n: jnp.asarray(x) for n, x in zip(NAMES, PROBLEM.init)}
    state, params = optax_run(optax, tx, tx.init(params), params, range(3))
    opt = uniopt.port.from_optax(state, {n: np.array(p) for n, p in params.items()}, name, **kwargs)
    assert opt.algorithm == case.algorithm
    _, params = optax_run(optax, tx, state, params, range(3, 6))
    for t in range(3, 6):
        opt.step(numpy_grads(opt.params, t))
    assert_close(opt.params, params)


@pytest.mark.parametrize("case", OPTAX_CASES, ids=lambda c: c.id)
def test_to_optax_continues_like_uniopt(case, optax):
    import jax.numpy as jnp

    opt = case.build({n: x.copy() for n, x in zip(NAMES, PROBLEM.init)})
    for t in range(3):
        opt.step(numpy_grads(opt.params, t))
    params = {n: jnp.asarray(p) for n, p in opt.params.items()}
    tx, state = uniopt.port.to_optax(opt, params)
    _, params = optax_run(optax, tx, state, params, range(3, 6))
    for t in range(3, 6):
        opt.step(numpy_grads(opt.params, t))
    assert_close(params, opt.params)


def test_optax_injected_hyperparameters_and_schedules(optax):
    import jax.numpy as jnp

    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=0.02, b1=0.8, weight_decay=0.3)
    params = {n: jnp.asarray(x) for n, x in zip(NAMES, PROBLEM.init)}
    state, params = optax_run(optax, tx, tx.init(params), params, range(2))
    opt = uniopt.port.from_optax(state, {n: np.array(p) for n, p in params.items()})
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (0.02, (0.8, 0.999), 0.3)
    assert opt.portable_state_dict()["step_count"] == 2
    # a uniopt schedule travels to optax, with the count
    schedule = uniopt.schedules.cosine_annealing(0.1, 10)
    sgd = uniopt.SGD({n: x.copy() for n, x in zip(NAMES, PROBLEM.init)}, lr=schedule, momentum=0.9)
    for t in range(3):
        sgd.step(numpy_grads(sgd.params, t))
    tx, state = uniopt.port.to_optax(sgd, {n: jnp.asarray(p) for n, p in sgd.params.items()})
    _, params = optax_run(
        optax, tx, state, {n: jnp.asarray(p) for n, p in sgd.params.items()}, range(3, 6)
    )
    for t in range(3, 6):
        sgd.step(numpy_grads(sgd.params, t))
    assert_close(params, sgd.params)


def test_optax_refusals(optax):
    import jax.numpy as jnp

    x = {"w": np.ones(3), "v": np.ones(2)}
    jx = {k: jnp.asarray(v) for k, v in x.items()}
    with pytest.raises(ValueError, match="cannot express amsgrad=True"):
        uniopt.port.to_optax(uniopt.AdamW(x, amsgrad=True), jx)
    uneven = uniopt.Adam(dict(x), lr=0.1)
    uneven.step({"w": np.ones(3), "v": None})
    uneven.step({"w": np.ones(3), "v": np.ones(2)})
    with pytest.raises(ValueError, match="keeps one step count"):
        uniopt.port.to_optax(uneven, jx)
    with pytest.raises(TypeError, match="no uniopt equivalent"):
        uniopt.port.from_optax(
            optax.adam(0.1).init(jx), x, "adam", learning_rate=0.1, eps_root=1e-8
        )
    with pytest.raises(ValueError, match="holds"):
        state = optax.adam(0.1).init({"other": jnp.ones(3)})
        uniopt.port.from_optax(state, x, "adam", learning_rate=0.1)


# ---- PaddlePaddle: recorded real state_dicts ------------------------------------------------

FIXTURE = json.loads((Path(__file__).parent / "port_fixtures" / "paddle_states.json").read_text())
PADDLE_PROBLEM = make_problem(FIXTURE["steps"], seed=FIXTURE["seed"])
#: Paddle's Lamb keeps float32 beta powers, used in its bias correction; uniopt uses the
#: exact integer powers, so its continuation differs by float32 rounding
PADDLE_RTOL = {"lamb": 1e-7}


def paddle_arrays(sd):
    return {
        k: np.asarray(v["values"], np.float64).reshape(v["shape"]) if "values" in v else v
        for k, v in sd.items()
    }


def paddle_params(case, key):
    return {n: np.asarray(case[key][n], np.float64).reshape(SHAPES_PADDLE[n]) for n in NAMES}


SHAPES_PADDLE = {n: x.shape for n, x in zip(NAMES, PADDLE_PROBLEM.init)}


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: c["label"])
def test_from_paddle_continues_the_recorded_paddle_run(case):
    sd = paddle_arrays(case["state_dict"])
    opt = uniopt.port.from_paddle(
        sd, paddle_params(case, "params_split"), case["class"], **case["kwargs"]
    )
    assert opt.algorithm == {"momentum": "sgd"}.get(case["algorithm"], case["algorithm"])
    assert opt.flavor == "paddle"
    powers = any("pow_acc" in k for k in sd)
    assert opt.portable_state_dict()["step_count"] == (FIXTURE["split"] if powers else 1)
    for t in range(FIXTURE["split"], FIXTURE["steps"]):
        now = opt.params
        opt.step(
            {
                n: PADDLE_PROBLEM.curvature[i] * (now[n] - PADDLE_PROBLEM.center[i])
                + PADDLE_PROBLEM.noise[t][i]
                for i, n in enumerate(NAMES)
            }
        )
    rtol = PADDLE_RTOL.get(case["algorithm"], 1e-12)
    assert_close(opt.params, paddle_params(case, "params_end"), rtol=rtol)


def test_from_paddle_names_and_errors():
    case = next(c for c in FIXTURE["cases"] if c["label"] == "adamw")
    sd = paddle_arrays(case["state_dict"])
    # Paddle's generated names (linear_0.w_0) mapped to ours
    generated = {n: f"linear_{i}.w_0" for i, n in enumerate(NAMES)}
    renamed = {}
    for key, value in sd.items():
        for n in sorted(NAMES, key=len, reverse=True):
            if key.startswith(n + "_"):
                key = generated[n] + key[len(n) :]
                break
        renamed[key] = value
    params = paddle_params(case, "params_split")
    opt = uniopt.port.from_paddle(renamed, params, "AdamW", names=generated, **case["kwargs"])
    reference = uniopt.port.from_paddle(sd, params, "AdamW", **case["kwargs"])
    assert str(opt.portable_state_dict()) == str(reference.state_dict())
    with pytest.raises(ValueError, match="matches no parameter"):
        uniopt.port.from_paddle(renamed, params, "AdamW", **case["kwargs"])
    with pytest.raises(ValueError, match="not a whole power"):
        uniopt.port.from_paddle(sd, params, "AdamW", **{**case["kwargs"], "beta1": 0.8})
    with pytest.raises(TypeError, match="lamb_weight_decay"):
        uniopt.port.from_paddle(sd, params, "AdamW", lamb_weight_decay=0.1)

    def decays(name):
        return "bn" not in name

    opt = uniopt.port.from_paddle(
        sd, params, "AdamW", apply_decay_param_fun=decays, **case["kwargs"]
    )
    assert opt.apply_decay_param_fun is decays
    with pytest.raises(ValueError, match="knows no Paddle optimizer 'Adamax'"):
        uniopt.port.from_paddle(sd, params, "Adamax")
    with pytest.raises(ValueError, match="master_weights"):
        uniopt.port.from_paddle({**sd, "master_weights": {}}, params, "AdamW", **case["kwargs"])
