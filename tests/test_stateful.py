"""The stateful face: torch behaviour, param groups, input forms, learning rates, state."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require, to_backend, to_numpy

import uniopt
from uniopt.parity.cases import CASES

torch = pytest.importorskip("torch")


def twin_models(seed=0):
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    b.load_state_dict(a.state_dict())
    return a, b


def loss_of(model, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    return (model(x) ** 2).mean()


def assert_same_params(a, b, rtol=1e-13):
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=rtol, atol=1e-15)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_torch_model_training_matches_torch_optim_and_keeps_parameters(name):
    ours, theirs = twin_models()
    params_before = list(ours.parameters())
    kwargs = {"lr": 0.05, "weight_decay": 0.01}
    if name == "SGD":
        kwargs["momentum"] = 0.9
    opt = getattr(uniopt, name)(ours.named_parameters(), **kwargs)
    ref = getattr(torch.optim, name)(theirs.parameters(), **kwargs)
    for step in range(20):
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            loss_of(model, step).backward()
            o.step()
    assert_same_params(ours, theirs)
    assert all(p is q for p, q in zip(ours.parameters(), params_before))
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], params_before))
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in ours.parameters())
    assert ours[0].weight._version > 0  # written in place, as torch.optim does


def test_none_gradients_are_skipped_with_per_tensor_steps_like_torch():
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in [(3,), (2, 2), (4,)]]
    ours = [torch.nn.Parameter(torch.tensor(x)) for x in init]
    theirs = [torch.nn.Parameter(torch.tensor(x)) for x in init]
    opt = uniopt.Adam(ours, lr=0.1, amsgrad=True)
    ref = torch.optim.Adam(theirs, lr=0.1, amsgrad=True)
    for step in range(8):
        for params in (ours, theirs):
            for i, p in enumerate(params):
                # p0 always, p1 on odd steps only, p2 never
                has = i == 0 or (i == 1 and step % 2)
                p.grad = torch.tensor(np.cos(init[i] * (step + 1))) if has else None
        opt.step()
        ref.step()
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-14)
    np.testing.assert_array_equal(ours[2].detach().numpy(), init[2])
    state = opt.portable_state_dict()["state"]
    assert state["0"]["step"] == 8 and state["1"]["step"] == 4 and "2" not in state


def test_param_groups_and_add_param_group_match_torch():
    ours, theirs = twin_models(1)
    groups = lambda m: [  # noqa: E731
        {"params": list(m[0].parameters()), "lr": 0.1, "weight_decay": 0.0},
        {"params": [m[2].weight], "weight_decay": 0.5},
    ]
    opt = uniopt.AdamW(groups(ours), lr=0.01)
    ref = torch.optim.AdamW(groups(theirs), lr=0.01)
    for step in range(6):
        if step == 3:
            opt.add_param_group({"params": [ours[2].bias], "lr": 0.3, "betas": (0.5, 0.9)})
            ref.add_param_group({"params": [theirs[2].bias], "lr": 0.3, "betas": (0.5, 0.9)})
        for model, o in ((ours, opt), (theirs, ref)):
            o.zero_grad()
            loss_of(model, step).backward()
            o.step()
    assert_same_params(ours, theirs)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01, 0.3]
    assert opt.param_groups[1]["weight_decay"] == 0.5 and opt.param_groups[2]["betas"] == (0.5, 0.9)


def test_closure_loss_is_returned_and_computed_with_grad_enabled():
    model, _ = twin_models()
    opt = uniopt.SGD(model.parameters(), lr=0.1)

    def closure():
        opt.zero_grad()
        loss = loss_of(model, 0)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure=closure)
    assert loss.requires_grad
    assert opt.current_step_lr() == 0.1 and all(p.grad is not None for p in model.parameters())


def test_zero_grad_and_minimize():
    model, ref_model = twin_models()
    opt = uniopt.SGD(model.parameters(), lr=0.1)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    loss_of(model, 0).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    ops, params_grads = opt.minimize(loss_of(model, 1))
    loss_of(ref_model, 1).backward()
    ref.step()
    assert ops == [] and len(params_grads) == 4
    assert_same_params(model, ref_model)


def test_learning_rate_accessors_and_forms():
    x = np.zeros(2)
    opt = uniopt.SGD([x], lr=0.5)
    assert opt.get_lr() == 0.5 and opt.current_step_lr() == 0.5
    opt.set_lr(0.25)
    opt.step([np.ones(2)])
    np.testing.assert_allclose(x, [-0.25, -0.25])
    assert opt.current_step_lr() == 0.25
    # MindSpore's dynamic learning rate: the i-th step takes the i-th value
    y = np.zeros(1)
    opt = uniopt.SGD([y], lr=[0.1, 0.2, 0.3])
    seen = []
    for _ in range(4):
        opt.step([np.ones(1)])
        seen.append(opt.current_step_lr())
    assert seen == [0.1, 0.2, 0.3, 0.3]
    np.testing.assert_allclose(y, [-0.9])
    schedule = uniopt.SGD([np.zeros(1)], lr=lambda step: 1.0 / (step + 1))
    with pytest.raises(RuntimeError, match="schedule"):
        schedule.set_lr(0.1)
    groups = uniopt.SGD([{"params": [np.zeros(1)], "lr": 0.1}, {"params": [np.zeros(1)]}], lr=0.2)
    assert groups.get_lr() == [0.1, 0.2]


def test_params_forms_and_structure(backend):
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((2, 3)), rng.standard_normal(3)
    grads = {"layer": {"w": np.ones((2, 3)), "b": np.ones(3)}}
    expected = {"layer.w": w - 0.1, "layer.b": b - 0.1}
    conv = lambda x: to_backend(backend, x)  # noqa: E731
    forms = {
        "tree": {"layer": {"w": conv(w), "b": conv(b)}},
        "pairs": [("layer.w", conv(w)), ("layer.b", conv(b))],
        "mapping": {"layer.w": conv(w), "layer.b": conv(b)},
        "groups": [{"params": {"layer.w": conv(w)}}, {"params": {"layer.b": conv(b)}}],
    }
    for form, params in forms.items():
        opt = uniopt.SGD(params, lr=0.1)
        names = [n for g in opt.param_groups for n in g["param_names"]]
        assert sorted(names) == ["layer.b", "layer.w"], form
        by_name = {"layer.w": conv(np.ones((2, 3))), "layer.b": conv(np.ones(3))}
        opt.step(by_name)
        if form == "tree":
            got = opt.params
            assert set(got) == {"layer"}
            got = {"layer.w": got["layer"]["w"], "layer.b": got["layer"]["b"]}
        elif form == "pairs":
            got = dict(opt.params)
        elif form == "groups":
            got = {**opt.params[0]["params"], **opt.params[1]["params"]}
        else:
            got = opt.params
        for k in expected:
            np.testing.assert_allclose(to_numpy(got[k]), expected[k], rtol=1e-15)
    # gradients in the same nested structure as the params
    opt = uniopt.SGD({"layer": {"w": conv(w), "b": conv(b)}}, lr=0.1)
    opt.step({"layer": {k: conv(v) for k, v in grads["layer"].items()}})
    np.testing.assert_allclose(to_numpy(opt.params["layer"]["w"]), expected["layer.w"])
    # a list of unnamed arrays gets positional names
    opt = uniopt.Adam([conv(w), conv(b)])
    assert opt.param_groups[0]["param_names"] == ["0", "1"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_dict_round_trip_gives_the_same_next_steps(backend, case):
    """Save mid-run, resume in a fresh optimizer: the next steps are bitwise the same;
    and state saved on numpy resumes on this backend."""
    rng = np.random.default_rng(4)
    init = [rng.standard_normal(s) for s in [(3, 2), (4,)]]
    grads = [[rng.standard_normal(x.shape) for x in init] for _ in range(8)]

    def step(opt, g):
        if backend == "torch":
            for p, x in zip(opt.param_groups[0]["params"], g):
                p.grad = to_backend("torch", x)
            opt.step()
        else:
            opt.step([to_backend(backend, x) for x in g])

    def make(values, on=backend):
        params = [to_backend(on, x) for x in values]
        if on == "torch":
            params = [torch.nn.Parameter(p) for p in params]
        return case.build(params)

    opt = make(init)
    for g in grads[:4]:
        step(opt, g)
    saved = opt.portable_state_dict()
    middle = [to_numpy(p) for p in opt.params]
    for g in grads[4:]:
        step(opt, g)
    resumed = make(middle)
    resumed.load_state_dict(saved)
    for g in grads[4:]:
        step(resumed, g)
    for a, b in zip(opt.params, resumed.params):
        assert np.array_equal(to_numpy(a), to_numpy(b))
    if backend != "numpy":
        ref = make([x.copy() for x in init], on="numpy")
        for g in grads[:4]:
            ref.step(g)
        other = make(middle)
        other.load_state_dict(ref.state_dict())
        for g in grads[4:]:
            ref.step(g)
            step(other, g)
        for a, b in zip(ref.params, other.params):
            np.testing.assert_allclose(to_numpy(b), a, rtol=1e-13)


def test_torch_parameters_on_several_devices():
    require("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cpu = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    gpu = torch.nn.Parameter(torch.ones(3, dtype=torch.float64, device="cuda"))
    opt = uniopt.Adam([cpu, gpu], lr=0.1)
    assert len(opt._segments[0]) == 2
    cpu.grad, gpu.grad = torch.ones_like(cpu), torch.ones_like(gpu)
    opt.step()
    np.testing.assert_allclose(cpu.detach().numpy(), gpu.detach().cpu().numpy())


def test_minimize_with_parameters_and_no_grad_set_like_paddle():
    model, _ = twin_models()
    opt = uniopt.SGD(model.named_parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _, pairs = opt.minimize(
        loss_of(model, 0),
        parameters=["0.weight", "0.bias", "2.weight"],
        no_grad_set={model[0].bias},
    )
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == {"0.weight", "2.weight"} and len(pairs) == 2
    lookahead = uniopt.LookAhead(uniopt.SGD(model.parameters(), lr=0.1), k=1, alpha=1.0)
    model.zero_grad()
    _, pairs = lookahead.minimize(loss_of(model, 1), no_grad_set=[model[2].bias])
    assert len(pairs) == 3


def test_hyperparameters_may_be_one_element_tensors_and_mindspore_properties():
    w = torch.nn.Parameter(torch.ones(3))
    f64 = torch.float64
    opt = uniopt.AdamW(
        [w],
        lr=torch.tensor(0.1, dtype=f64),
        betas=(torch.tensor([0.9], dtype=f64), 0.999),
        weight_decay=torch.tensor([0.01]),
    )  # a float32 tensor: its float32 value
    assert opt.defaults["betas"] == (0.9, 0.999)
    assert opt.defaults["weight_decay"] == float(np.float32(0.01))
    assert opt.target == "CPU" and opt.unique is True and opt.broadcast_params(True) is True


def test_dynamic_loss_scale_state_travels():
    scale = uniopt.DynamicLossScale(init_scale=8.0, growth_interval=3)
    opt = uniopt.SGD([np.ones(2)], lr=0.1, loss_scale=scale)
    opt.step([np.array([np.inf, 1.0])])
    opt.step([np.ones(2)])
    saved = opt.portable_state_dict()
    assert saved["loss_scale"] == {"scale": 4.0, "good_steps": 1}
    other = uniopt.SGD([np.ones(2)], lr=0.1, loss_scale=uniopt.DynamicLossScale(init_scale=8.0))
    other.load_state_dict(saved)
    assert other.loss_scale.scale == 4.0 and other.loss_scale.good_steps == 1


def test_a_step_keeps_no_gradient_alive(backend):
    """A step remembers the gradients it validated by weak reference only: a training
    loop's gradients are freed as soon as it drops them."""
    import gc
    import weakref

    params = [to_backend(backend, np.ones((2, 3))), to_backend(backend, np.ones(4))]
    opt = uniopt.AdamW(params, lr=0.1)
    grads = [to_backend(backend, np.full((2, 3), 0.5)), to_backend(backend, np.full(4, 0.5))]
    opt.step(grads)
    opt.step(grads)  # remembered, and taken again
    refs = [weakref.ref(g) for g in grads]
    del grads
    gc.collect()
    assert all(ref() is None for ref in refs)
