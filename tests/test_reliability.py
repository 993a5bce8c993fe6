"""Nothing silently wrong (issue 15): a step with no gradient is a no-op, unknown
keyword arguments are refused, a step is all-or-nothing, step counts are checked on
load, tied and viewed torch parameters stay tied, and the smaller errors are clear.

Each test fails on the code before its fix; "nothing changed" is checked bitwise on
the parameters, the state and the step count."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import require, to_backend, to_numpy

import uniopt
from uniopt.parity.cases import CASES, CLASSES

BACKENDS = ["numpy", "torch", "jax", "array_api_strict"]


def _snapshot(opt) -> tuple:
    """Parameters, state and step count, on the host, for bitwise comparison."""
    params = [to_numpy(p).copy() for g in opt.param_groups for p in g["params"]]
    sd = opt.portable_state_dict()
    state = {
        name: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
        for name, entry in sd["state"].items()
    }
    return params, state, sd["step_count"]


def _assert_same(before: tuple, after: tuple) -> None:
    for a, b in zip(before[0], after[0]):
        assert a.tobytes() == b.tobytes()
    assert before[1].keys() == after[1].keys()
    for name in before[1]:
        for k, v in before[1][name].items():
            w = after[1][name][k]
            assert (v.tobytes() == w.tobytes()) if isinstance(v, np.ndarray) else v == w
    assert before[2] == after[2]


def _two_params(backend: str, dtype: str = "float64"):
    return {
        "w": to_backend(backend, np.linspace(-1, 1, 6).reshape(2, 3), dtype),
        "b": to_backend(backend, np.array([0.5, -0.25]), dtype),
    }


def _grads(backend: str, scale: float = 1.0, dtype: str = "float64"):
    return {
        "w": to_backend(backend, scale * np.arange(6.0).reshape(2, 3), dtype),
        "b": to_backend(backend, scale * np.array([1.0, -2.0]), dtype),
    }


# ---- 1. a step without any gradient -----------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.algorithm != "lookahead"], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_step_with_every_gradient_none_changes_nothing(backend, case):
    require(backend)
    opt = case.build(_two_params(backend))
    opt.step(_grads(backend))
    before = _snapshot(opt)
    opt.step({"w": None, "b": None})
    _assert_same(before, _snapshot(opt))
    opt.step(_grads(backend, 0.5))  # and the next real step still works
    assert opt.portable_state_dict()["step_count"] == 2


def test_torch_step_after_zero_grad_is_a_no_op_like_torch_optim():
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    opt = uniopt.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    opt.zero_grad()
    before = _snapshot(opt)
    opt.step()  # every .grad is None: torch.optim does nothing either
    _assert_same(before, _snapshot(opt))
    look = uniopt.LookAhead(uniopt.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), k=1)
    look.step()
    assert look._count == 0


# ---- 4. unknown keyword arguments ---------------------------------------------------


@pytest.mark.parametrize("functional", sorted(set(CLASSES) - {"lookahead"}))
def test_unknown_keyword_argument_is_a_type_error_with_a_suggestion(functional):
    cls = getattr(uniopt, CLASSES[functional])
    params = [np.ones(3)]
    with pytest.raises(
        TypeError,
        match=rf"^{cls.__name__} got an unexpected keyword argument 'lrr'; did you mean 'lr'\?",
    ):
        cls(params, lrr=0.1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight_decy'"):
        cls(params, weight_decy=0.5)
    factory = getattr(uniopt, functional)
    with pytest.raises(
        TypeError, match=rf"uniopt.{factory.__name__} got an unexpected keyword argument 'lrr'"
    ):
        factory(lrr=0.1)


def test_adamw_typo_is_refused_and_sgd_takes_no_betas():
    with pytest.raises(TypeError, match="'weight_decy'; did you mean 'weight_decay'"):
        uniopt.AdamW([np.ones(2)], weight_decy=0.5)
    with pytest.raises(TypeError, match="SGD got an unexpected keyword argument 'betas'"):
        uniopt.SGD([np.ones(2)], lr=0.1, betas=(0.9, 0.99))


def test_torch_switches_are_accepted_ignored_and_never_saved():
    opt = uniopt.AdamW(
        [np.ones(2)], lr=0.1, foreach=False, fused=None, capturable=False, differentiable=False
    )
    opt.add_param_group({"params": [np.ones(3)], "foreach": True})
    sd = opt.portable_state_dict()
    for group in [*opt.param_groups, *sd["param_groups"]]:
        assert not {"foreach", "fused", "capturable", "differentiable"} & set(group)
    with pytest.raises(TypeError, match="fused must be a bool or None"):
        uniopt.AdamW([np.ones(2)], fused="yes")
    assert uniopt.adamw(foreach=True) is not None


def test_functional_face_names_the_stateful_only_option():
    with pytest.raises(TypeError, match="grad_clip .* belong to the stateful face"):
        uniopt.sgd(0.1, grad_clip=uniopt.ClipGradByValue(1.0))


# ---- 5. all-or-nothing steps --------------------------------------------------------


def _grouped(backend: str, lr_second):
    params = _two_params(backend)
    return uniopt.Adam(
        [{"params": [params["w"]], "lr": 0.1}, {"params": [params["b"]], "lr": lr_second}]
    )


def _raising_at_1(step: int) -> float:
    if step == 1:
        raise RuntimeError("schedule failed")
    return 0.1


@pytest.mark.parametrize(
    "lr_second, error, match",
    [
        ([0.1, float("nan")], ValueError, "param group 1 at step 1: .*learning_rate=nan"),
        (lambda t: 0.1 - 0.2 * t, ValueError, "param group 1 at step 1 is -0.1"),
        (lambda t: float("inf") if t else 0.1, ValueError, "param group 1 at step 1 is inf"),
        (_raising_at_1, RuntimeError, "schedule failed"),
    ],
    ids=["list-ending-in-nan", "negative-schedule", "infinite-schedule", "raising-schedule"],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_second_group_changes_nothing(backend, lr_second, error, match):
    require(backend)
    opt = _grouped(backend, lr_second)
    grads = [_grads(backend)["w"], _grads(backend)["b"]]
    opt.step(grads)
    before = _snapshot(opt)
    with pytest.raises(error, match=match):
        opt.step(grads)
    _assert_same(before, _snapshot(opt))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_integer_and_boolean_parameters_are_refused_at_construction(backend, dtype):
    require(backend)
    xp_params = [to_backend(backend, np.ones(3)), to_backend(backend, np.ones(2), dtype)]
    with pytest.raises(TypeError, match=f"parameter '1' has dtype {dtype}"):
        uniopt.SGD(xp_params, lr=0.1)


def test_a_parameter_whose_shape_or_dtype_changed_is_refused_before_any_write():
    torch = pytest.importorskip("torch")
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = uniopt.Adam([a, b], lr=0.1)
    for p in (a, b):
        p.grad = torch.ones_like(p)
    opt.step()
    before = _snapshot(opt)
    with torch.no_grad():
        b.data = torch.ones(4)  # shape changed
    b.grad = torch.ones(4)
    with pytest.raises(ValueError, match=r"parameter '1' was changed to shape \[4\]"):
        opt.step()
    assert torch.equal(a.detach(), torch.tensor(before[0][0]))
    assert opt.portable_state_dict()["step_count"] == 1
    with torch.no_grad():
        b.data = torch.ones(2, dtype=torch.float64)  # dtype changed: never cast back
    b.grad = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="dtype float64"):
        opt.step()
    assert b.dtype == torch.float64


# ---- 8. step counts on load ---------------------------------------------------------


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd.update(step_count=-5), r"step_count must be in \[0, 2\*\*53\], got -5"),
        (lambda sd: sd.update(step_count=10**30), "step_count must be in"),
        (lambda sd: sd.update(step_count=2.0), "step_count"),
        (lambda sd: sd["state"]["b"].update(step=10**30), "'b': step must be in"),
        (lambda sd: sd["state"]["b"].update(step=-1), "'b': step must be in"),
        (lambda sd: sd["state"]["b"].update(step=True), "'b': step must be an int"),
        (lambda sd: sd["param_groups"][0].pop("params"), "param group 0 is not a dict with"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_step_counts_do_not_load(backend, edit, match):
    require(backend)
    opt = uniopt.AdamW(_two_params(backend), lr=0.1)
    opt.step(_grads(backend))
    sd = opt.portable_state_dict()
    edit(sd)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    _assert_same(before, _snapshot(opt))


def test_a_huge_loaded_step_with_running_beta_powers_neither_hangs_nor_grows_memory():
    from uniopt import blocks

    opt = uniopt.Adam([np.ones(3)], lr=0.1, flavor="paddle")
    opt.step([np.ones(3)])
    sd = opt.portable_state_dict()
    sd["step_count"] = 10**12
    sd["state"]["0"]["step"] = 10**12
    opt.load_state_dict(sd)
    started = time.perf_counter()
    opt.step([np.ones(3)])
    assert time.perf_counter() - started < 5
    assert np.isfinite(opt.params[0]).all()
    assert max(len(r.table) for r in blocks._RUNNING.values()) <= blocks._TABLE_STEPS + 1
    # the running product itself, where it is walked: Paddle's float64 product
    expected = 1.0
    for _ in range(20000):
        expected *= 0.999
    assert blocks.beta_power(0.999, 20000, "running") == expected


# ---- 9. parameters that share storage ----------------------------------------------


def test_tied_parameters_both_move_as_with_torch_optim():
    torch = pytest.importorskip("torch")
    for algorithm, kwargs in (("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.1})):
        results = []
        for make in (getattr(uniopt, algorithm), getattr(torch.optim, algorithm)):
            p1 = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
            p2 = torch.nn.Parameter(p1.data)  # shares p1's storage
            other = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
            opt = make([p1, p2, other], **kwargs)
            for t in range(3):
                for p in (p1, p2, other):
                    p.grad = torch.full_like(p, 0.5 + t)
                opt.step()
            assert p1.data_ptr() == p2.data_ptr()  # still tied
            results.append([p1.detach().clone(), other.detach().clone()])
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_view_taken_before_construction_sees_the_updates():
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    view = model.weight.detach()
    opt = uniopt.SGD(model.parameters(), lr=0.5)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert torch.equal(view, model.weight.detach())


def test_a_failed_from_torch_leaves_the_parameters_where_they_were():
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    torch_opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    torch_opt.step()
    where = [p.data_ptr() for p in model.parameters()]
    with pytest.raises((TypeError, ValueError)):
        uniopt.port.from_torch(torch_opt, names=["only-one"])
    with pytest.raises(TypeError, match="not one string"):
        uniopt.port.from_torch(torch_opt, names="abcd")
    with pytest.raises(TypeError, match=r"\(name, parameter\) pairs"):
        uniopt.port.from_torch(torch_opt, names=[("a", model.weight), "b"])
    assert [p.data_ptr() for p in model.parameters()] == where
    built = uniopt.AdamW(model.parameters())  # building alone re-points nothing either
    assert [p.data_ptr() for p in model.parameters()] == where
    del built


# ---- smaller errors -----------------------------------------------------------------


def test_an_extra_gradient_name_is_named():
    opt = uniopt.SGD({"w": np.ones(2), "b": np.ones(1)}, lr=0.1)
    with pytest.raises(ValueError, match=r"gradients for unknown parameters \['x'\]"):
        opt.step({"w": np.ones(2), "b": np.ones(1), "x": np.ones(3)})


def test_a_param_group_without_params_is_named():
    with pytest.raises(TypeError, match="param group 1 must be a dict with a 'params' key"):
        uniopt.SGD([{"params": [np.ones(2)]}, {"lr": 0.1}], lr=0.1)


@pytest.mark.parametrize("flavor, slow_init", [("paddle", "first_step"), ("optax", "params")])
def test_lookahead_flavor_selects_the_framework_slow_weights_start(flavor, slow_init):
    inner = uniopt.SGD([np.ones(2)], lr=0.1)
    assert uniopt.LookAhead(inner, flavor=flavor).slow_init == slow_init
    explicit = uniopt.LookAhead(
        uniopt.SGD([np.ones(2)], lr=0.1), slow_init="params", flavor="paddle"
    )
    assert explicit.slow_init == "params"  # an explicit option wins over the preset
    with pytest.raises(ValueError, match="torch has no LookAhead"):
        uniopt.LookAhead(uniopt.SGD([np.ones(2)], lr=0.1), flavor="torch")
    with pytest.raises(ValueError, match="keras has no LookAhead"):
        uniopt.lookahead(uniopt.sgd(0.1), flavor="keras")


def test_lookahead_paddle_flavor_follows_the_first_step_start():
    """Paddle's slow weights start after the first inner step: with k=2, alpha=0.5 and
    SGD(lr=1) on gradient 1 from 0: fast -1, -2; slow starts at -1, sync gives -1.5."""
    opt = uniopt.LookAhead(uniopt.SGD([np.zeros(1)], lr=1.0), alpha=0.5, k=2, flavor="paddle")
    opt.step([np.ones(1)])
    opt.step([np.ones(1)])
    assert opt.params[0][0] == -1.5
    plain = uniopt.LookAhead(uniopt.SGD([np.zeros(1)], lr=1.0), alpha=0.5, k=2, flavor="optax")
    plain.step([np.ones(1)])
    plain.step([np.ones(1)])
    assert plain.params[0][0] == -1.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_compiled_half_precision_adamw_keeps_its_betas(dtype):
    """compile=True on float16/bfloat16 parameters: the per-step scalars are float32
    0-d tensors (in bfloat16, beta2 = 0.999 would be 1.0 and the second moment would
    never move); the compiled step follows the eager one."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype)
    results = []
    for compile in (False, True):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 64, dtype=dtype))
        opt = uniopt.AdamW([p], lr=0.01, compile=compile)
        for t in range(5):
            p.grad = torch.linspace(0.5, 1.5, 64, dtype=dtype) * (t + 1)
            opt.step()
        state = opt.portable_state_dict()["state"]["0"]
        results.append((p.detach().double(), torch.from_numpy(state["exp_avg_sq"].astype("f8"))))
    (p_eager, v_eager), (p_compiled, v_compiled) = results
    torch.testing.assert_close(v_compiled, v_eager, rtol=2e-2, atol=1e-4)
    assert (v_compiled > 0).sum() >= 60
    torch.testing.assert_close(p_compiled, p_eager, rtol=0, atol=2e-2)


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_lookahead_sync_reaches_the_float32_master(backend):
    """With multi_precision the sync moves the float32 master too: the next inner step
    continues from the synchronised weights (float32 without a master gives 0.5)."""
    require(backend)
    dtype = "float16"
    p = to_backend(backend, np.ones(1), dtype)
    inner = uniopt.SGD([p], lr=0.5, multi_precision=True)
    opt = uniopt.LookAhead(inner, alpha=0.5, k=1)
    for _ in range(2):
        opt.step([to_backend(backend, np.ones(1), dtype)])
    assert float(to_numpy(opt.params[0]).astype("f8")[0]) == 0.5
    master = opt.inner._segments[0][0].state["master"]
    assert float(to_numpy(master)[0]) == 0.5


@pytest.mark.parametrize("bad", [{"good_steps": 1}, 5, {"scale": 2.0, "good_steps": 0, "x": 1}])
def test_a_malformed_loss_scale_state_is_named(bad):
    opt = uniopt.SGD([np.ones(2)], lr=0.1, loss_scale=uniopt.DynamicLossScale())
    opt.step([np.ones(2)])
    sd = opt.portable_state_dict()
    sd["loss_scale"] = bad
    before = _snapshot(opt)
    with pytest.raises(ValueError, match="keys 'scale' and 'good_steps'"):
        opt.load_state_dict(sd)
    _assert_same(before, _snapshot(opt))


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_norm_clipping_of_complex_gradients_is_torchs(backend):
    """The global norm of complex gradients is that of |g| (torch's clip_grad_norm_)."""
    require(backend)
    g = np.array([3 + 4j, 1 - 2j], dtype=np.complex64)
    opt = uniopt.SGD(
        [to_backend(backend, np.zeros(2, np.complex64), "complex64")],
        lr=1.0,
        grad_clip=uniopt.ClipGradByGlobalNorm(1.0),
    )
    opt.step([to_backend(backend, g, "complex64")])
    expected = -g / np.sqrt(np.sum(np.abs(g) ** 2))  # norm 5.477 > 1: scaled to norm 1
    np.testing.assert_allclose(to_numpy(opt.params[0]), expected, rtol=1e-6)


@pytest.mark.parametrize("algorithm", ["AdamW", "Adagrad"])
def test_a_float32_lr_tensor_is_used_in_float32_with_the_torch_flavor(algorithm):
    """torch forms ``lr / bc1``, ``1 - lr * wd`` (AdamW) and ``clr`` (Adagrad) on its
    float32 lr tensor: with flavor="torch" uniopt takes those float32 values."""
    torch = pytest.importorskip("torch")
    lr = torch.tensor(1e-3)
    kwargs = {"weight_decay": 0.01} if algorithm == "AdamW" else {"lr_decay": 0.01}
    opt = getattr(uniopt, algorithm)([torch.zeros(3)], lr=lr, flavor="torch", **kwargs)
    group = opt.param_groups[0]
    hp = {k: group[k] for k in opt.rule.hyperparameters}
    rule = opt.rule.from_group(group)
    step = 3
    scalars = opt._scalars(rule, hp, 1.0, step, (True, 1.0))
    if algorithm == "AdamW":
        bc1 = 1 - 0.9**step
        assert scalars["step_size"] == (lr / bc1).item()
        kept = (1 - lr * 0.01).item()  # the float32 factor torch multiplies by
        assert 1 - scalars["lr"] * scalars["weight_decay"] == pytest.approx(kept, abs=1e-15)
    else:
        assert scalars["clr"] == (lr / (1 + (step - 1) * 0.01)).item()
    plain = getattr(uniopt, algorithm)([torch.zeros(3)], lr=1e-3, flavor="torch", **kwargs)
    group = plain.param_groups[0]
    hp = {k: group[k] for k in plain.rule.hyperparameters}
    floats = plain._scalars(plain.rule.from_group(group), hp, 1.0, step, (True, 1.0))
    key = "step_size" if algorithm == "AdamW" else "clr"
    assert floats[key] != scalars[key]  # a float lr stays in float64
