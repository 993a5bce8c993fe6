"""Options every optimizer takes (Paddle grad_clip / apply_decay_param_fun / lr_ratio,
MindSpore loss_scale / beta-gamma rule / grad_centralization, OneFlow clip_grad),
checked against NumPy loops written from the documented formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import to_backend, to_numpy

import uniopt
from uniopt.parity import reference
from uniopt.parity.problem import NAMES, make_problem

PROBLEM = make_problem(30)


def oracle(algorithm, options, transform=None, decayed=None, ratios=None, decay_key="weight_decay"):
    """The float64 oracle of ``algorithm`` with per-step gradient ``transform(grads)``
    and per-parameter decay flags / lr ratios."""
    fn = reference.ORACLES[algorithm]
    params = [x.copy() for x in PROBLEM.init]
    states = [{} for _ in params]
    for t, noise in enumerate(PROBLEM.noise, start=1):
        grads = [
            a * (p - c) + n for p, a, c, n in zip(params, PROBLEM.curvature, PROBLEM.center, noise)
        ]
        if transform is not None:
            grads = transform(grads)
        new = []
        for i, (p, g, s) in enumerate(zip(params, grads, states)):
            opts = dict(options)
            if decayed is not None and not decayed[i]:
                opts[decay_key] = 0.0
            if ratios is not None:
                opts["lr"] = opts["lr"] * ratios[i]
            new.append(fn(p, g, s, t, **opts))
        params = new
    return params


def run(backend, cls, options, grad_multiplier=1.0, groups=None, names=NAMES):
    params = {n: to_backend(backend, x) for n, x in zip(names, PROBLEM.init)}
    opt = cls(params if groups is None else groups(params), **options)
    for noise in PROBLEM.noise:
        current = {n: p for n, p in zip(names, _leaves(opt.params))}
        opt.step(
            {
                n: grad_multiplier * (current[n] - to_backend(backend, c)) * to_backend(backend, a)
                + grad_multiplier * to_backend(backend, e)
                for n, a, c, e in zip(names, PROBLEM.curvature, PROBLEM.center, noise)
            }
        )
    return [to_numpy(x) for x in _leaves(opt.params)]


def _leaves(params):
    """The parameters in NAMES order, from a mapping or a list of group dicts."""
    if not isinstance(params, dict):
        params = {n: x for group in params for n, x in group["params"].items()}
    return [params[n] for n in NAMES]


def close(result, expected, rtol=1e-12):
    scale = max(np.max(np.abs(e)) for e in expected)
    diff = max(np.max(np.abs(r - e)) for r, e in zip(result, expected))
    assert diff <= rtol * scale, f"relative deviation {diff / scale:.3e}"


def global_clip(c):
    def f(grads):
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        return [g * c / max(norm, c) for g in grads]

    return f


def norm_clip(c):
    return lambda grads: [g * c / max(np.linalg.norm(g), c) for g in grads]


@pytest.mark.parametrize(
    "algorithm,cls,options",
    [
        ("adamw", uniopt.AdamW, dict(lr=0.05, weight_decay=0.1)),
        ("sgd", uniopt.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
        ("lamb", uniopt.LAMB, dict(lr=0.05, weight_decay=0.01)),
    ],
)
def test_grad_clip_strategies(backend, algorithm, cls, options):
    strategies = [
        (uniopt.ClipGradByGlobalNorm(0.5), global_clip(0.5)),
        (uniopt.ClipGradByNorm(0.1), norm_clip(0.1)),
        (uniopt.ClipGradByValue(0.05), lambda gs: [np.clip(g, -0.05, 0.05) for g in gs]),
        (uniopt.ClipGradByValue(0.05, min=-0.01), lambda gs: [np.clip(g, -0.01, 0.05) for g in gs]),
    ]
    for clip, transform in strategies:
        close(
            run(backend, cls, {**options, "grad_clip": clip}), oracle(algorithm, options, transform)
        )


def test_fixed_loss_scale_divides_gradients(backend):
    options = dict(lr=0.05, weight_decay=0.1)
    got = run(backend, uniopt.Adam, {**options, "loss_scale": 128}, grad_multiplier=128.0)
    close(got, oracle("adam", options))
    # clipping sees the unscaled gradients
    got = run(
        backend,
        uniopt.SGD,
        dict(lr=0.05, loss_scale=64.0, grad_clip=uniopt.ClipGradByGlobalNorm(0.5)),
        grad_multiplier=64.0,
    )
    close(got, oracle("sgd", dict(lr=0.05), global_clip(0.5)))


def test_per_parameter_decay_and_lr_ratio(backend):
    options = dict(lr=0.05, weight_decay=0.1)
    decayed = ["bn" not in n for n in NAMES]
    ratios = [0.5 if "bias" in n or "beta" in n else 1.0 for n in NAMES]
    got = run(
        backend,
        uniopt.AdamW,
        {
            **options,
            "apply_decay_param_fun": lambda name: "bn" not in name,
            "lr_ratio": lambda p: 0.5 if p.shape in ((7,), (33,)) else 1.0,
        },
    )
    close(got, oracle("adamw", options, decayed=decayed, ratios=ratios))
    lars = dict(lr=0.5, momentum=0.9, lars_weight_decay=0.01)
    got = run(
        backend, uniopt.LarsMomentum, {**lars, "apply_decay_param_fun": lambda n: "bn" not in n}
    )
    close(got, oracle("lars_momentum", lars, decayed=decayed, decay_key="lars_weight_decay"))


def test_mindspore_skips_decay_on_beta_gamma_without_groups(backend):
    options = dict(lr=0.05, weight_decay=0.1)
    skip = [not ("beta" in n or "gamma" in n) for n in NAMES]
    got = run(backend, uniopt.Adam, {**options, "decay_skips_beta_gamma": True})
    close(got, oracle("adam", options, decayed=skip))

    # with groups the rule is off: every parameter of a group gets its weight_decay
    def groups(ps):
        return [
            {"params": {n: ps[n] for n in NAMES[:3]}},
            {"params": {n: ps[n] for n in NAMES[3:]}},
        ]

    got = run(backend, uniopt.Adam, {**options, "decay_skips_beta_gamma": True}, groups=groups)
    close(got, oracle("adam", options))


def test_grad_centralization_group_key(backend):
    def centralize(grads):
        return [
            g - g.reshape(g.shape[0], -1).mean(axis=1).reshape((-1,) + (1,) * (g.ndim - 1))
            if g.ndim > 1
            else g
            for g in grads
        ]

    groups = lambda ps: [{"params": ps, "grad_centralization": True}]  # noqa: E731
    got = run(backend, uniopt.SGD, dict(lr=0.05, momentum=0.9), groups=groups)
    close(got, oracle("sgd", dict(lr=0.05, momentum=0.9), centralize))


def test_dynamic_loss_scale_skips_non_finite_steps_bitwise(backend):
    params = {"w": to_backend(backend, np.ones((2, 3))), "b": to_backend(backend, np.ones(3))}
    scale = uniopt.DynamicLossScale(init_scale=1024.0, growth_interval=2)
    opt = uniopt.Adam(params, lr=0.1, loss_scale=scale)
    good = {
        "w": to_backend(backend, np.full((2, 3), 512.0)),
        "b": to_backend(backend, np.full(3, 512.0)),
    }
    opt.step(good)
    before = ([to_numpy(x).copy() for x in opt.params.values()], opt.portable_state_dict())
    bad = {**good, "b": to_backend(backend, np.array([1.0, np.inf, 1.0]))}
    opt.step(bad)
    assert opt.last_step_skipped and scale.scale == 512.0
    for a, b in zip(opt.params.values(), before[0]):
        assert np.array_equal(to_numpy(a), b)
    after = opt.portable_state_dict()
    assert after["step_count"] == before[1]["step_count"]
    for name, entry in before[1]["state"].items():
        for k, v in entry.items():
            assert np.array_equal(np.asarray(after["state"][name][k]), np.asarray(v))
    opt.step(good)
    opt.step(good)
    assert not opt.last_step_skipped and scale.scale == 1024.0  # grew after 2 good steps


def test_clip_grad_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch")
    for norm_type in (2.0, 1.0, float("inf")):
        ps = [torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64)) for _ in range(3)]
        ref = [p.detach().clone().requires_grad_(True) for p in ps]
        for p, q in zip(ps, ref):
            p.grad = torch.randn_like(p) * 3
            q.grad = p.grad.clone()
        opt = uniopt.SGD(
            [{"params": ps, "clip_grad_max_norm": 0.5, "clip_grad_norm_type": norm_type}], lr=0.1
        )
        opt.clip_grad()
        torch.nn.utils.clip_grad_norm_(ref, 0.5, norm_type=norm_type)
        for p, q in zip(ps, ref):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-14)
    grads = {"0": np.full(3, 10.0)}
    opt = uniopt.SGD([{"params": [np.zeros(3)], "clip_grad_max_norm": 1.0}])
    clipped = opt.clip_grad(grads)
    np.testing.assert_allclose(np.linalg.norm(clipped["0"]), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(grads["0"], np.full(3, 10.0))


def test_option_errors():
    x = [np.zeros(2)]
    with pytest.raises(TypeError, match="loss_scale must be a float"):
        uniopt.SGD(x, loss_scale="big")
    with pytest.raises(ValueError, match="invalid loss_scale=0.0"):
        uniopt.SGD(x, loss_scale=0.0)
    with pytest.raises(TypeError, match="grad_clip must be"):
        uniopt.SGD(x, grad_clip=1.0)
    with pytest.raises(ValueError, match="invalid clip_norm=-1"):
        uniopt.ClipGradByGlobalNorm(-1)
    with pytest.raises(ValueError, match="invalid min=1.0"):
        uniopt.ClipGradByValue(0.5, min=1.0)
    with pytest.raises(TypeError, match="grad_centralization must be a bool"):
        uniopt.SGD([{"params": x, "grad_centralization": "yes"}])
    with pytest.raises(TypeError, match="lr_ratio must be callable"):
        uniopt.AdamW(x, lr_ratio=0.5)
    with pytest.raises(TypeError, match="belong to the stateful face"):
        uniopt.adamw(grad_clip=uniopt.ClipGradByNorm(1.0))


def test_lazy_mode_updates_only_rows_with_gradients(backend):
    rng = np.random.default_rng(5)
    table = rng.standard_normal((6, 4))
    grads = []
    for t in range(6):
        g = rng.standard_normal((6, 4))
        g[[t % 6, (t + 3) % 6]] = 0.0  # two rows without gradient each step
        grads.append(g)
    opt = uniopt.AdamW(
        {"emb": to_backend(backend, table)}, lr=0.1, weight_decay=0.1, lazy_mode=True
    )
    expected, state = table.copy(), [{} for _ in range(6)]
    for t, g in enumerate(grads, start=1):
        opt.step({"emb": to_backend(backend, g)})
        for r in range(6):  # the oracle: each row an AdamW that skips its zero-gradient steps
            if np.any(g[r] != 0):  # bias correction uses the tensor's step, like Paddle's kernel
                expected[r] = reference.adamw(
                    expected[r], g[r], state[r], t, lr=0.1, weight_decay=0.1
                )
    close([to_numpy(opt.params["emb"])], [expected])


@pytest.mark.parametrize("backend_name", ["torch", "jax"])
@pytest.mark.parametrize("low", ["float16", "bfloat16"])
def test_multi_precision_keeps_a_float32_master(backend_name, low):
    from conftest import require

    require(backend_name)
    rng = np.random.default_rng(6)
    init = rng.standard_normal((4, 8))
    grads = [rng.standard_normal((4, 8)) for _ in range(20)]
    if backend_name == "torch":
        import torch

        dtype = getattr(torch, low)
        p = torch.nn.Parameter(torch.tensor(init, dtype=dtype))
        params = [p]
    else:
        import jax.numpy as jnp

        dtype = getattr(jnp, low)
        params = [jnp.asarray(init, dtype=dtype)]
    opt = uniopt.AdamW(params, lr=0.01, weight_decay=0.1, multi_precision=True)
    master = np.asarray(to_numpy(params[0]), dtype=np.float64)
    state: dict = {}
    for t, g in enumerate(grads, start=1):
        low_g = g.astype(np.float32)
        if backend_name == "torch":
            params[0].grad = torch.tensor(low_g).to(dtype)
            opt.step()
        else:
            opt.step([jnp.asarray(low_g).astype(dtype)])
        g_seen = np.asarray(  # the gradient as the low-precision parameter's dtype holds it
            to_numpy(torch.tensor(low_g).to(dtype))
            if backend_name == "torch"
            else to_numpy(jnp.asarray(low_g).astype(dtype)),
            dtype=np.float64,
        )
        master = reference.adamw(master, g_seen, state, t, lr=0.01, weight_decay=0.1)
    (segment,) = opt._segments[0]
    got_master = to_numpy(segment.state["master"]).reshape(4, 8)
    assert segment.state["exp_avg"].dtype == segment.state["master"].dtype  # float32 state
    np.testing.assert_allclose(got_master, master, rtol=1e-5, atol=1e-6)
    # the low-precision parameter is exactly the rounded master
    current = opt.params[0]
    rounded = (
        torch.tensor(got_master.astype(np.float32)).to(dtype)
        if backend_name == "torch"
        else jnp.asarray(got_master.astype(np.float32)).astype(dtype)
    )
    assert np.array_equal(to_numpy(current), to_numpy(rounded))
