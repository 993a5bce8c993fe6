"""Learning-rate schedules driving the optimizers (seed 000's PiecewiseDecay example)."""

from __future__ import annotations

import numpy as np
import pytest

import uniopt
from uniopt import schedules


def test_piecewise_decay_current_step_lr_as_in_paddle_example():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    inp = torch.rand(10, 10) * 0.2 - 0.1
    linear = torch.nn.Linear(10, 10)
    lr = schedules.piecewise_decay([2, 4, 6, 8], [0.2, 0.4, 0.6, 0.8, 1.0])
    adam = uniopt.Adam(linear.parameters(), lr=lr)
    assert adam.current_step_lr() == 0.2
    seen = []
    for _ in range(12):
        adam.minimize(linear(inp).mean())
        adam.zero_grad()
        seen.append(adam.current_step_lr())
    assert seen == [0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0]


def test_schedule_in_stateful_and_functional_faces_agree():
    lr = schedules.cosine_annealing(0.1, 10)
    grads = [np.full(3, 0.5)]
    x = np.zeros(3)
    opt = uniopt.SGD([x], lr=lr)
    tx = uniopt.sgd(lr=lr)
    y, state = [np.zeros(3)], tx.init([np.zeros(3)])
    for _ in range(12):
        opt.step(grads)
        updates, state = tx.update(grads, state)
        y = uniopt.apply_updates(y, updates)
    np.testing.assert_allclose(x, y[0], rtol=1e-14)
    expected = -0.5 * sum(lr(t) for t in range(12))
    np.testing.assert_allclose(x, expected, rtol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_scheduler_and_optimizer_saved_mid_run_resume_the_same_sequence(backend):
    from conftest import require, to_backend, to_numpy

    require(backend)
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(5), rng.standard_normal(3)]
    grads = [[rng.standard_normal(5), rng.standard_normal(3)] for _ in range(20)]

    def make(values):
        groups = [
            {"params": [to_backend(backend, values[0])], "lr": 0.1},
            {"params": [to_backend(backend, values[1])], "lr": 0.01},
        ]
        opt = uniopt.AdamW(groups)
        return opt, uniopt.lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=0.001)

    def run(opt, sched, steps, lrs):
        for g in steps:
            opt.step([to_backend(backend, x) for x in g])
            sched.step()
            lrs.append(sched.get_last_lr())

    def params(opt):
        return [to_numpy(g["params"][0]).copy() for g in opt.param_groups]

    opt, sched = make(init)
    straight: list = []
    run(opt, sched, grads, straight)

    first, first_sched = make(init)
    resumed: list = []
    run(first, first_sched, grads[:7], resumed)
    second, second_sched = make(params(first))
    second.load_state_dict(first.state_dict())
    second_sched.load_state_dict(first_sched.state_dict())
    run(second, second_sched, grads[7:], resumed)
    assert resumed == straight
    for a, b in zip(params(second), params(opt)):
        np.testing.assert_array_equal(a, b)


def test_a_list_learning_rate_refuses_steps_it_cannot_index():
    """A list of rates (MindSpore's dynamic learning rate) is looked up by step: a
    negative or fractional step was silently read from the end of the list (issue 15)."""
    from uniopt.lr import learning_rate

    lr = learning_rate("SGD", "lr", [0.3, 0.2, 0.1])
    assert [lr(t) for t in (0, 1, 2, 7)] == [0.3, 0.2, 0.1, 0.1]
    assert lr(np.asarray(1)) == lr(np.int64(1)) == 0.2
    for step in (-1, -3, 2.5, float("inf")):
        with pytest.raises(ValueError, match=r"^SGD: invalid step="):
            lr(step)
    with pytest.raises(TypeError, match="^SGD: step must be an int, not bool"):
        lr(True)


def test_a_scheduler_state_that_fails_to_load_leaves_training_as_it_was():
    """Through an optimizer: a corrupt scheduler state (T_max=0) is refused before it
    changes the scheduler, so the rates of the next steps are those of the run."""
    opt = uniopt.SGD([np.zeros(2)], lr=0.1)
    sched = uniopt.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    twin_opt = uniopt.SGD([np.zeros(2)], lr=0.1)
    twin = uniopt.lr_scheduler.CosineAnnealingLR(twin_opt, T_max=10)
    for _ in range(3):
        opt.step([np.ones(2)])
        sched.step()
        twin_opt.step([np.ones(2)])
        twin.step()
    state = sched.state_dict()
    with pytest.raises(ValueError, match=r"CosineAnnealingLR.load_state_dict: invalid T_max=0"):
        sched.load_state_dict({**state, "T_max": 0})
    for _ in range(3):
        opt.step([np.ones(2)])
        sched.step()
        twin_opt.step([np.ones(2)])
        twin.step()
        assert opt.param_groups[0]["lr"] == twin_opt.param_groups[0]["lr"]
