"""Bad input gets a clear error and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require, to_backend, to_numpy

import uniopt
from uniopt.parity.cases import CLASSES, ERRORS


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: f"{c.algorithm}-{c.options}")
def test_registry_errors_in_both_faces(case):
    cls = getattr(uniopt, CLASSES[case.algorithm])
    with pytest.raises(case.error, match=case.match):
        cls([np.zeros(2)], **case.options)
    with pytest.raises(case.error, match=case.match):
        getattr(uniopt, case.algorithm)(**case.options)
    # the same check holds for a param group's own hyperparameters
    if "flavor" not in case.options:
        with pytest.raises(case.error, match=case.match):
            cls([{"params": [np.zeros(2)], **case.options}])


def test_messages_name_the_argument_uniformly():
    with pytest.raises(ValueError, match=r"^AdamW: invalid lr=-1\.0: it must be >= 0$"):
        uniopt.AdamW([np.zeros(1)], lr=-1)
    with pytest.raises(ValueError, match=r"^uniopt\.adam: invalid eps=-1\.0: it must be >= 0$"):
        uniopt.adam(eps=-1.0)


def test_parameters_given_twice_or_empty():
    x = np.zeros(3)
    with pytest.raises(ValueError, match="parameter '1' is given more than once"):
        uniopt.SGD([x, x])
    with pytest.raises(ValueError, match="given more than once"):
        uniopt.SGD([{"params": [x]}, {"params": [x]}])
    opt = uniopt.SGD([x])
    with pytest.raises(ValueError, match="given more than once"):
        opt.add_param_group({"params": [x]})
    with pytest.raises(ValueError, match="used twice"):
        uniopt.SGD([("w", np.zeros(1)), ("w", np.zeros(1))])
    with pytest.raises(ValueError, match="empty parameter list"):
        uniopt.SGD([])
    with pytest.raises(ValueError, match="not contiguous"):
        uniopt.SGD([np.zeros((3, 4)).T])
    with pytest.raises(TypeError, match="expected an array"):
        uniopt.SGD([[1.0, 2.0]])


def snapshot(opt):
    params = [to_numpy(p).copy() for g in opt.param_groups for p in g["params"]]
    state = opt.portable_state_dict()
    return params, state


def assert_unchanged(opt, before):
    params, state = snapshot(opt)
    for a, b in zip(params, before[0]):
        assert np.array_equal(a, b)
    assert state["step_count"] == before[1]["step_count"]
    for name, entry in before[1]["state"].items():
        for k, v in entry.items():
            assert np.array_equal(np.asarray(state["state"][name][k]), np.asarray(v))


def stepped_optimizer(backend):
    params = {"w": to_backend(backend, np.ones((2, 3))), "b": to_backend(backend, np.ones(3))}
    if backend == "torch":
        import torch

        params = {k: torch.nn.Parameter(v) for k, v in params.items()}
    opt = uniopt.AdamW(params, lr=0.1, amsgrad=True)
    good = {
        "w": to_backend(backend, np.full((2, 3), 0.5)),
        "b": to_backend(backend, np.full(3, 0.5)),
    }
    opt.step(good)
    return opt, good


def test_bad_gradients_name_the_parameter_and_change_nothing(backend):
    opt, good = stepped_optimizer(backend)
    before = snapshot(opt)
    bad = {
        "shape": (
            {**good, "b": to_backend(backend, np.ones(4))},
            ValueError,
            r"parameter 'b' has shape \(4,\), expected \(3,\)",
        ),
        "dtype": (
            {**good, "w": to_backend(backend, np.ones((2, 3)), "float32")},
            ValueError,
            "parameter 'w' has dtype float32, expected float64",
        ),
        "backend": (
            {**good, "b": np.ones(3) if backend != "numpy" else to_backend("torch", np.ones(3))},
            TypeError,
            "gradient for parameter 'b' is a",
        ),
        "missing": ({"w": good["w"]}, ValueError, r"missing gradients for \['b'\]"),
    }
    for grads, error, match in bad.values():
        with pytest.raises(error, match=match):
            opt.step(grads)
        assert_unchanged(opt, before)
    if backend != "torch":
        with pytest.raises(TypeError, match="step\\(\\) needs gradients"):
            opt.step()
        assert_unchanged(opt, before)


def test_gradients_given_again_are_checked_again_when_changed(backend):
    """A step remembers the gradient arrays it validated (mutable libraries: the same
    objects usually come back): the same arrays pass unchecked, while one reshaped or
    given another dtype in place, one replaced, or a new param group is caught as before."""
    opt, good = stepped_optimizer(backend)
    names = opt.param_groups[0]["param_names"]
    grads = [good[name] for name in names]  # in parameter order: the form a step remembers
    b = names.index("b")
    opt.step(grads)
    opt.step(grads)  # the same arrays: nothing to check again
    before = snapshot(opt)
    if backend == "numpy":
        grads[b].shape = (3, 1)  # the same object, reshaped in place
        with pytest.raises(ValueError, match=r"parameter 'b' has shape \(3, 1\)"):
            opt.step(grads)
        assert_unchanged(opt, before)
        grads[b].shape = (3,)
        grads[b].dtype = np.int64  # the same object, its bytes read as another dtype
        with pytest.raises(ValueError, match="parameter 'b' has dtype int64, expected"):
            opt.step(grads)
        assert_unchanged(opt, before)
        grads[b].dtype = np.float64
    with pytest.raises(ValueError, match=r"parameter 'b' has shape \(4,\)"):
        opt.step([to_backend(backend, np.ones(4)) if i == b else g for i, g in enumerate(grads)])
    assert_unchanged(opt, before)
    opt.add_param_group({"params": {"c": to_backend(backend, np.ones(2))}})
    with pytest.raises(ValueError, match="grads do not mirror the parameters"):
        opt.step(grads)
    assert_unchanged(opt, before)
    opt.step([*grads, to_backend(backend, np.ones(2))])  # and all is well again


def test_gradient_on_another_device_is_refused():
    require("torch")
    import torch

    p = torch.nn.Parameter(torch.ones(3))
    opt = uniopt.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="parameter '0' has device meta, expected cpu"):
        opt.step([torch.ones(3, device="meta")])
    assert np.array_equal(p.detach().numpy(), np.ones(3))


def test_failed_load_state_dict_changes_nothing(backend):
    opt, good = stepped_optimizer(backend)
    before = snapshot(opt)
    saved = opt.portable_state_dict()
    broken = {
        "algorithm": ({**saved, "algorithm": "sgd"}, "is for 'sgd'"),
        "version": ({**saved, "version": 99}, "unsupported state version 99"),
        "format": ({**saved, "format": "torch"}, "not a uniopt optimizer state"),
        "names": (
            {**saved, "param_groups": [{**saved["param_groups"][0], "params": ["w", "x"]}]},
            r"missing \['b'\], unexpected \['x'\]",
        ),
        "shape": (
            {
                **saved,
                "state": {**saved["state"], "b": {**saved["state"]["b"], "exp_avg": np.zeros(5)}},
            },
            r"'b': state 'exp_avg' is float64\[5\]",
        ),
        "dtype": (
            {
                **saved,
                "state": {
                    **saved["state"],
                    "w": {**saved["state"]["w"], "exp_avg_sq": np.zeros((2, 3), np.float32)},
                },
            },
            "expected float64",
        ),
        "slot": (
            {
                **saved,
                "state": {
                    **saved["state"],
                    "w": {k: v for k, v in saved["state"]["w"].items() if k != "max_exp_avg_sq"},
                },
            },
            "missing state 'max_exp_avg_sq'",
        ),
        "hyperparameter": (
            {**saved, "param_groups": [{**saved["param_groups"][0], "lr": -1.0}]},
            "invalid lr=-1.0",
        ),
    }
    for sd, match in broken.values():
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(sd)
        assert_unchanged(opt, before)
    with pytest.raises(TypeError, match="expected a state dict"):
        opt.load_state_dict([1, 2])
    assert_unchanged(opt, before)


def test_lookahead_bad_arguments_and_bad_state_change_nothing():
    inner = uniopt.SGD([np.ones(3)], lr=0.1)
    for kwargs, error, match in (
        ({"alpha": 1.5}, ValueError, r"invalid alpha=1.5: it must be in \[0, 1\]"),
        ({"k": 0}, ValueError, "invalid k=0: it must be a positive int"),
        ({"slow_init": "later"}, ValueError, "invalid slow_init='later'"),
    ):
        with pytest.raises(error, match=match):
            uniopt.LookAhead(inner, **kwargs)
    with pytest.raises(TypeError, match="inner_optimizer must be a uniopt optimizer"):
        uniopt.LookAhead(object())
    with pytest.raises(ValueError, match="invalid alpha=2.0"):
        uniopt.lookahead(uniopt.sgd(lr=0.1), alpha=2.0)
    opt = uniopt.LookAhead(inner, k=2)
    for _ in range(3):
        opt.step([np.ones(3)])
    before = ([to_numpy(p).copy() for p in opt.params], opt.portable_state_dict())
    bad = {**before[1], "slow": {"0": np.zeros(4)}}
    with pytest.raises(ValueError, match="slow weights missing or not float64"):
        opt.load_state_dict(bad)
    assert np.array_equal(to_numpy(opt.params[0]), before[0][0])
    after = opt.portable_state_dict()
    assert after["count"] == before[1]["count"]
    assert np.array_equal(after["slow"]["0"], before[1]["slow"]["0"])


def test_remembered_gradients_by_name_follow_their_names(backend):
    """Gradients given by name: the same arrays in the same order under other names
    are matched again, never taken for the ones remembered (SGD: p - lr * g)."""
    params = {"a": to_backend(backend, np.zeros(3)), "b": to_backend(backend, np.zeros(3))}
    opt = uniopt.SGD(params, lr=1.0)
    one, two = to_backend(backend, np.ones(3)), to_backend(backend, np.full(3, 2.0))
    opt.step({"a": one, "b": two})
    opt.step({"b": one, "a": two})  # same arrays, same order, names swapped
    got = opt.params
    np.testing.assert_array_equal(to_numpy(got["a"]), np.full(3, -3.0))
    np.testing.assert_array_equal(to_numpy(got["b"]), np.full(3, -3.0))
    opt.step({"a": one, "b": two})
    opt.step({"a": one, "b": two})  # remembered
    np.testing.assert_array_equal(to_numpy(opt.params["a"]), np.full(3, -5.0))
    np.testing.assert_array_equal(to_numpy(opt.params["b"]), np.full(3, -7.0))
