"""Seed 003's MyMomentum, written once with array-API calls, on every backend; and the
MindSpore base-class accessors and errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_backend, to_numpy

import uniopt
from uniopt.parity.problem import NAMES, make_problem

PROBLEM = make_problem(20)


class MyMomentum(uniopt.Optimizer):
    """The seed's example: ApplyMomentum (accum = momentum * accum + grad;
    param -= lr * accum) after the base class's gradient helpers."""

    def __init__(self, params, learning_rate, momentum=0.9, weight_decay=0.0, loss_scale=1.0):
        super().__init__(
            params, learning_rate=learning_rate, weight_decay=weight_decay, loss_scale=loss_scale
        )
        self.moments = self.clone_state("moments", init="zeros")
        self.momentum = momentum

    def construct(self, gradients):
        params = self.parameters
        lr = self.get_lr()
        gradients = self.flatten_gradients(gradients)
        gradients = self.decay_weight(gradients)
        gradients = self.gradients_centralization(gradients)
        gradients = self.scale_grad(gradients)
        for i, (param, grad) in enumerate(zip(params, gradients)):
            self.moments[i] = self.momentum * self.moments[i] + grad
            self.assign(i, param - lr * self.moments[i])


def oracle(lr, momentum, wd, centralized=(), skip=()):
    params = [x.copy() for x in PROBLEM.init]
    moments = [np.zeros_like(x) for x in params]
    for noise in PROBLEM.noise:
        for i, (a, c, n) in enumerate(zip(PROBLEM.curvature, PROBLEM.center, noise)):
            g = a * (params[i] - c) + n
            if NAMES[i] not in skip:
                g = g + wd * params[i]
            if NAMES[i] in centralized and g.ndim > 1:
                g = g - g.reshape(g.shape[0], -1).mean(axis=1).reshape(-1, *[1] * (g.ndim - 1))
            moments[i] = momentum * moments[i] + g
            params[i] = params[i] - lr * moments[i]
    return params


def train(backend, opt_factory, grad_multiplier=1.0):
    params = {n: to_backend(backend, x) for n, x in zip(NAMES, PROBLEM.init)}
    if backend == "torch":
        import torch

        params = {n: torch.nn.Parameter(p) for n, p in params.items()}
    opt = opt_factory(params)
    for noise in PROBLEM.noise:
        current = dict(zip(NAMES, _ordered(opt.params)))
        grads = {
            n: grad_multiplier
            * (
                to_backend(backend, a) * (current[n] - to_backend(backend, c))
                + to_backend(backend, e)
            )
            for n, a, c, e in zip(NAMES, PROBLEM.curvature, PROBLEM.center, noise)
        }
        if backend == "torch":
            for n, p in params.items():
                p.grad = grads[n].detach()
            opt.step()
        else:
            opt.step(grads)
    return opt, [to_numpy(x) for x in _ordered(opt.params)]


def _ordered(params):
    if not isinstance(params, dict):
        params = {n: x for g in params for n, x in g["params"].items()}
    return [params[n] for n in NAMES]


def test_my_momentum_runs_on_every_backend(backend):
    opt, got = train(
        backend,
        lambda ps: MyMomentum(ps, 0.01, weight_decay=0.1, loss_scale=8.0),
        grad_multiplier=8.0,
    )
    # no groups, default rule: weight decay applies to every parameter
    expected = oracle(0.01, 0.9, 0.1 / 8.0)  # decay_weight runs before scale_grad, as in MindSpore
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # its state travels in state_dict
    saved = opt.portable_state_dict()
    assert set(saved["custom_state"]) == {"moments"}
    assert set(saved["custom_state"]["moments"]) == set(NAMES)


def test_my_momentum_with_groups_and_centralization(backend):
    def groups(ps):
        return [
            {
                "params": {n: ps[n] for n in NAMES[:3]},
                "weight_decay": 0.05,
                "grad_centralization": True,
            },
            {"params": {n: ps[n] for n in NAMES[3:]}},
        ]

    _, got = train(backend, lambda ps: MyMomentum(groups(ps), 0.01))
    expected = oracle(0.01, 0.9, 0.05, centralized=NAMES[:3], skip=NAMES[3:])
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_custom_state_round_trip():
    opt, _ = train("numpy", lambda ps: MyMomentum(ps, 0.01))
    saved = opt.portable_state_dict()
    fresh = MyMomentum(
        {n: np.zeros(s) for n, s in zip(NAMES, [x.shape for x in PROBLEM.init])}, 0.01
    )
    fresh.load_state_dict(saved)
    for a, b in zip(fresh.moments, opt.moments):
        np.testing.assert_array_equal(a, b)
    broken = {**saved, "custom_state": {"moments": {}}}
    with pytest.raises(ValueError, match="custom state 'moments' missing"):
        fresh.load_state_dict(broken)


def test_mindspore_accessors_and_documented_errors():
    conv, dense = [np.zeros((2, 2))], [np.zeros(3)]
    opt = uniopt.SGD(
        [{"params": conv, "lr": 0.05}, {"params": dense, "lr": 0.01}], lr=0.1, weight_decay=0.0
    )
    assert opt.get_lr_parameter(conv[0]) == 0.05
    assert opt.get_lr_parameter([conv[0], dense[0]]) == [0.05, 0.01]
    assert opt.get_weight_decay() == 0.0
    opt = uniopt.SGD([{"params": conv, "weight_decay": 0.1}, {"params": dense}], weight_decay=0.2)
    assert opt.get_weight_decay() == (0.1, 0.2)
    # order_params: the update order; every one must be in some group
    ordered = MyMomentum([{"params": conv}, {"params": dense}, {"order_params": dense + conv}], 0.1)
    assert ordered.order_params == ["1", "0"]
    with pytest.raises(ValueError, match="not in any param group"):
        MyMomentum([{"params": conv}, {"order_params": dense}], 0.1)
    # the documented TypeErrors / ValueErrors
    with pytest.raises(TypeError, match="lr must be a float, int, 0-d or 1-D array"):
        MyMomentum(conv, "0.1")
    with pytest.raises(TypeError, match="expected an array"):
        MyMomentum([object()], 0.1)
    with pytest.raises(TypeError, match="loss_scale must be a float"):
        MyMomentum(conv, 0.1, loss_scale="2")
    with pytest.raises(TypeError, match="weight_decay must be a real number"):
        MyMomentum(conv, 0.1, weight_decay="0.1")
    with pytest.raises(ValueError, match="invalid loss_scale=0.0"):
        MyMomentum(conv, 0.1, loss_scale=0.0)
    with pytest.raises(ValueError, match="invalid weight_decay=-0.1"):
        MyMomentum(conv, 0.1, weight_decay=-0.1)
    with pytest.raises(ValueError, match="must be 0-d or 1-D"):
        MyMomentum(conv, np.zeros((2, 2)))
    # learning_rate as an int, a 0-d array, a 1-D array and an iterator
    for lr, expected in (
        (1, 1.0),
        (np.asarray(0.5), 0.5),
        (np.asarray([0.3, 0.2]), 0.3),
        (iter([0.7, 0.6]), 0.7),
    ):
        assert MyMomentum(conv, lr).get_lr() == expected
    assert uniopt.SGD(conv).support_sparse is False
