"""A uniopt optimizer over torch parameters is a torch.optim.Optimizer (issue 16):
torch's schedulers drive it as they drive torch's own, its state_dict is torch's
layout (torch.save / torch.load(weights_only=True), loadable by the torch.optim twin
and back), and torch's hooks are called. Oracle: the same run with torch.optim."""

from __future__ import annotations

import io

import numpy as np
import pytest

import uniopt
from uniopt.parity.cases import CASES

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler
from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))


def _train(model, opt, scheduler=None, steps=12, plateau=False):
    torch.manual_seed(1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    lrs = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        if scheduler is not None:
            scheduler.step(loss.item()) if plateau else scheduler.step()
    return lrs, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_optimizer_is_a_torch_optimizer(case):
    opt = case.build(list(_model().parameters()))
    assert isinstance(opt, torch.optim.Optimizer)
    assert type(opt).__name__ == uniopt.parity.cases.CLASSES[case.algorithm]
    assert isinstance(opt, getattr(uniopt, uniopt.parity.cases.CLASSES[case.algorithm]))
    assert opt.defaults and opt.param_groups[0]["params"]


def test_numpy_optimizers_stay_free_of_torch():
    opt = uniopt.AdamW([np.ones(2)])
    assert not isinstance(opt, torch.optim.Optimizer)
    assert type(opt) is uniopt.AdamW


SCHEDULERS = {
    "StepLR": lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.3),
    "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=5, eta_min=1e-3),
    "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3),
    "LambdaLR": lambda o: lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + t)),
    "LinearLR": lambda o: lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=4),
    "ConstantLR": lambda o: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=3),
    "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o, total_iters=8, power=2.0),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=12),
    "CyclicLR": lambda o: lr_scheduler.CyclicLR(o, 0.001, 0.05, step_size_up=3),
    "SequentialLR": lambda o: lr_scheduler.SequentialLR(
        o,
        [lr_scheduler.LinearLR(o, 0.1, total_iters=3), lr_scheduler.ExponentialLR(o, 0.8)],
        milestones=[3],
    ),
    "ChainedScheduler": lambda o: lr_scheduler.ChainedScheduler(
        [lr_scheduler.ConstantLR(o, 0.5, total_iters=4), lr_scheduler.ExponentialLR(o, 0.9)]
    ),
    "ReduceLROnPlateau": lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=0),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize(
    "algorithm, kwargs",
    [("AdamW", {"lr": 0.01}), ("SGD", {"lr": 0.01, "momentum": 0.9})],
)
def test_torch_schedulers_drive_uniopt_as_torch_optim(name, algorithm, kwargs):
    runs = []
    for make in (getattr(uniopt, algorithm), getattr(torch.optim, algorithm)):
        model = _model()
        opt = make(model.parameters(), **kwargs)
        scheduler = SCHEDULERS[name](opt)
        runs.append(_train(model, opt, scheduler, plateau=name == "ReduceLROnPlateau"))
        if name in ("OneCycleLR", "CyclicLR"):  # momentum cycled too
            key = "betas" if algorithm == "AdamW" else "momentum"
            runs[-1] = (*runs[-1], opt.param_groups[0][key])
    (lrs_u, params_u, *rest_u), (lrs_t, params_t, *rest_t) = runs
    assert lrs_u == lrs_t
    assert rest_u == rest_t
    for a, b in zip(params_u, params_t):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_uniopt_schedulers_still_drive_it():
    model = _model()
    opt = uniopt.AdamW(model.parameters(), lr=0.01)
    scheduler = uniopt.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(4):
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0025)


def _roundtrip(sd):
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    "algorithm, kwargs",
    [
        ("AdamW", {"lr": 0.01, "amsgrad": True}),
        ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
        ("SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
        ("Adagrad", {"lr": 0.05}),
        ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ],
)
def test_state_dict_is_torch_layout_and_moves_both_ways(algorithm, kwargs):
    model = _model()
    opt = getattr(uniopt, algorithm)(model.parameters(), **kwargs)
    _train(model, opt, steps=4)
    sd = _roundtrip(opt.state_dict())
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    assert sd["param_groups"][0]["params"] == [0, 1, 2, 3]
    assert all(isinstance(v, torch.Tensor) for e in sd["state"].values() for v in e.values())
    # into torch.optim, which continues exactly as uniopt does
    twin = _model()
    twin.load_state_dict(model.state_dict())
    torch_opt = getattr(torch.optim, algorithm)(twin.parameters(), **kwargs)
    torch_opt.load_state_dict(sd)
    _, after_torch = _train(twin, torch_opt, steps=4)
    _, after_uniopt = _train(model, opt, steps=4)
    for a, b in zip(after_uniopt, after_torch):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and back: torch.optim's own state_dict loads into uniopt
    other = _model()
    other.load_state_dict(twin.state_dict())
    back = getattr(uniopt, algorithm)(other.parameters(), **kwargs)
    back.load_state_dict(_roundtrip(torch_opt.state_dict()))
    _, p1 = _train(other, back, steps=3)
    _, p2 = _train(twin, torch_opt, steps=3)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_uniopt_entries_travel_in_the_torch_layout():
    model = _model()
    opt = uniopt.LAMB(model.named_parameters(), lr=0.01, flavor="paddle")  # no torch twin
    _train(model, opt, steps=3)
    sd = _roundtrip(opt.state_dict())
    assert sd["uniopt"]["flavor"] == "paddle" and sd["uniopt"]["step_count"] == 3
    assert sd["param_groups"][0]["param_names"][0] == "0.weight"
    fresh = uniopt.LAMB(_model().named_parameters(), lr=0.01, flavor="paddle")
    fresh.load_state_dict(sd)
    assert fresh.portable_state_dict()["step_count"] == 3
    for name, entry in opt.portable_state_dict()["state"].items():
        for k, v in entry.items():
            w = fresh.portable_state_dict()["state"][name][k]
            assert np.array_equal(v, w) if isinstance(v, np.ndarray) else v == w
    # the portable form loads too, and uniopt.save keeps writing it
    fresh.load_state_dict(opt.portable_state_dict())


def test_state_holds_live_views():
    model = _model()
    opt = uniopt.Adam(model.parameters(), lr=0.01)
    assert len(opt.state) == 0
    _train(model, opt, steps=2)
    p = next(iter(model.parameters()))
    entry = opt.state[p]
    assert set(entry) == {"step", "exp_avg", "exp_avg_sq"} and float(entry["step"]) == 2
    assert entry["exp_avg"].shape == p.shape
    entry["exp_avg"].zero_()  # a view: the optimizer's own state changes
    assert not opt.state[p]["exp_avg"].any()
    assert len(opt.state) == 4 and p in opt.state


def test_hooks_are_called_as_torch_calls_them():
    model = _model()
    opt = uniopt.SGD(model.parameters(), lr=0.1)
    calls = []
    handles = [
        opt.register_step_pre_hook(lambda o, a, k: calls.append("pre")),
        opt.register_step_post_hook(lambda o, a, k: calls.append("post")),
        opt.register_state_dict_pre_hook(lambda o: calls.append("sd-pre")),
        opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd-post")),
        opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load-pre")),
        opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post")),
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global-pre")),
    ]
    try:
        _train(model, opt, steps=1)
        opt.load_state_dict(opt.state_dict())
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["global-pre", "pre", "post", "sd-pre", "sd-post", "load-pre", "load-post"]


def test_step_takes_a_closure_positionally_and_zero_grad_keeps_zeros():
    model = _model()
    opt = uniopt.SGD(model.parameters(), lr=0.1)

    def closure():
        opt.zero_grad(set_to_none=False)
        loss = model(torch.ones(2, 4)).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_lookahead_state_dict_is_torch_layout_and_resumes_exactly():
    runs = []
    for resume in (False, True):
        model = _model()
        opt = uniopt.LookAhead(uniopt.AdamW(model.parameters(), lr=0.01), k=2)
        _train(model, opt, steps=3)
        if resume:
            sd = _roundtrip(opt.state_dict())
            assert sorted(sd["uniopt"]["lookahead"]["slow"]) == ["0", "1", "2", "3"]
            again = _model()
            again.load_state_dict(model.state_dict())
            opt = uniopt.LookAhead(uniopt.AdamW(again.parameters(), lr=0.01), k=2)
            opt.load_state_dict(sd)
            model = again
        runs.append(_train(model, opt, steps=3)[1])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
