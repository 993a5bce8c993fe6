"""The functional face refuses bad input by name and changes nothing (DESIGN.md
principle 7): gradients that do not mirror the parameters or the state
(``tx.update``), corrupted portable state (``uniopt.load_transform_state``); and
``uniopt.apply_updates`` keeps 0-d parameters arrays. The gradient checks read
structure, shapes, dtypes and types only, so under ``jax.jit`` they run once, while
tracing."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from conftest import require, to_backend, to_numpy

import uniopt
from uniopt._adapter import adapter_for, is_array

BACKENDS = ("numpy", "torch", "jax", "array_api_strict")
ERRORS = (ValueError, TypeError)


def arrays(backend: str, dtype: str = "float64", seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "w": to_backend(backend, rng.standard_normal((2, 3)), dtype),
        "b": to_backend(backend, rng.standard_normal(3), dtype),
    }


def host_bytes(tree) -> list:
    """Every array of a pytree of tuples, dicts and arrays, as host bytes."""
    if isinstance(tree, dict):
        return [b for k in sorted(tree) for b in host_bytes(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [b for v in tree for b in host_bytes(v)]
    x = adapter_for(tree).to_numpy(tree)
    return [(x.dtype.str, x.shape, x.tobytes())]


def stepped(backend: str, tx=None):
    """``(tx, params, state after one update)`` for float64 ``{"w": (2, 3), "b": (3,)}``."""
    tx = tx or uniopt.adam(0.1)
    params = arrays(backend)
    state = tx.init(params)
    _, state = tx.update(arrays(backend, seed=1), state, params)
    return tx, params, state


def other_backend(backend: str, x):
    """``x`` as an array of another library (torch for NumPy, NumPy for the others)."""
    if backend == "numpy":
        require("torch")
        return to_backend("torch", to_numpy(x))
    return to_numpy(x)


# ---- A: gradients are checked against the parameters and the state ------------------


def bad_gradients(backend: str, kind: str, good: dict):
    """Bad gradients of one kind, the error's type and a pattern of its message."""
    grads = dict(good)
    if kind == "shape":
        grads["w"] = to_backend(backend, np.ones((3, 2)))
        return (
            grads,
            ValueError,
            r"gradient for parameter 'w' has shape \(3, 2\), expected \(2, 3\)",
        )
    if kind == "size":
        grads["b"] = to_backend(backend, np.ones(4))
        return grads, ValueError, r"gradient for parameter 'b' has shape \(4,\), expected \(3,\)"
    if kind == "dtype":
        grads["w"] = to_backend(backend, np.ones((2, 3)), "float32")
        return grads, ValueError, "gradient for parameter 'w' has dtype float32, expected float64"
    if kind == "backend":
        grads["w"] = other_backend(backend, good["w"])
        return grads, TypeError, "gradient for parameter 'w' is a .*, expected a .*array like"
    if kind == "string":
        grads["w"] = "g"
        return grads, TypeError, "gradient for parameter 'w' is a str"
    if kind == "float":
        grads["b"] = 1.0
        return grads, TypeError, "gradient for parameter 'b' is a float"
    if kind == "none":  # refused, as before, now by name
        grads["b"] = None
        return grads, TypeError, "gradient for parameter 'b' is None"
    if kind == "renamed":
        grads["x"] = grads.pop("b")
        return grads, ValueError, r"missing gradients for \['b'\].*unknown parameters \['x'\]"
    if kind == "fewer":
        del grads["b"]
        return grads, ValueError, r"missing gradients for \['b'\]\): 1 gradients for 2 parameters"
    if kind == "more":
        grads["c"] = grads["b"]
        return grads, ValueError, r"unknown parameters \['c'\]\): 3 gradients for 2 parameters"
    if kind == "nested":
        grads["b"] = [grads["b"], grads["b"]]
        return grads, ValueError, "3 gradients for 2 parameters"
    raise AssertionError(kind)


KINDS = (
    "shape",
    "size",
    "dtype",
    "backend",
    "string",
    "float",
    "none",
    "renamed",
    "fewer",
    "more",
    "nested",
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_bad_gradients_are_refused_by_name(backend, kind, name):
    """The defects the fuzz tests found: each is an error naming the parameter (or the
    count), raised before anything is computed; the state and parameters unchanged."""
    require(backend)
    tx, params, state = stepped(backend, getattr(uniopt, name)(0.1))
    grads, error, message = bad_gradients(backend, kind, arrays(backend, seed=2))
    before = host_bytes((params, state))
    with pytest.raises(error, match=f"^uniopt.{name}: .*{message}"):
        tx.update(grads, state, params)
    assert host_bytes((params, state)) == before


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["dtype", "backend", "string", "none", "size", "more"])
def test_bad_gradients_without_params_are_refused_by_the_state(backend, kind):
    """Without ``params`` the state tells backend, dtype and size per segment: a
    gradient that cannot fit it is an error naming it (as names and shapes, the state
    does not keep: a (3, 2) gradient for a (2, 3) parameter fits it)."""
    require(backend)
    tx, _, state = stepped(backend)
    grads, _, _ = bad_gradients(backend, kind, arrays(backend, seed=2))
    before = host_bytes(state)
    with pytest.raises(ERRORS) as error:
        tx.update(grads, state)
    assert re.search(r"'[wbc]'", str(error.value)), str(error.value)
    assert host_bytes(state) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_of_other_parameters_is_refused(backend):
    require(backend)
    tx, params, _ = stepped(backend)
    other = tx.init({"w": to_backend(backend, np.zeros(5)), "b": to_backend(backend, np.zeros(3))})
    with pytest.raises(ValueError, match=r"the state does not fit the gradients: .*'b', 'w'"):
        tx.update(arrays(backend, seed=2), other, params)
    with pytest.raises(TypeError, match="state must be the TransformState"):
        tx.update(arrays(backend, seed=2), {"count": 0}, params)


def test_a_gradient_on_another_torch_device_is_refused():
    require("torch")
    import torch

    tx, params, state = stepped("torch")
    grads = {"w": torch.ones((2, 3), dtype=torch.float64, device="meta"), "b": params["b"]}
    with pytest.raises(
        ValueError, match="gradient for parameter 'w' has device meta, expected cpu"
    ):
        tx.update(grads, state, params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flat_gradients_are_checked_per_segment(backend):
    """The flat form: each segment's array is checked (backend, dtype, size, the
    state's slots), naming the segment's parameters."""
    require(backend)
    tx = uniopt.adam(0.1)
    flat = uniopt.flatten(arrays(backend))
    state = tx.init(flat)
    good = uniopt.flatten(arrays(backend, seed=1))
    (segment,) = good.arrays
    cases = [
        (to_backend(backend, np.ones(8)), ValueError, r"float64\[8\], expected float64\[9\]"),
        (to_backend(backend, np.ones(9), "float32"), ValueError, "float32"),
        (  # without params, the state's slots tell the backend
            other_backend(backend, segment),
            TypeError,
            r"(expected a .*array like the parameters|is [\w-]+ float64\[9\], expected)",
        ),
        ("g", TypeError, "is a str"),
    ]
    for bad, error, message in cases:
        for p in (flat, None):
            with pytest.raises(error, match=rf"parameters \['b', 'w'\]\)? .*{message}"):
                tx.update(good.like([bad]), state, p)
    updates, state = tx.update(good, state, flat)  # the good ones still step
    assert isinstance(updates, uniopt.Flat)
    other = tx.init(uniopt.flatten(arrays(backend, "float32")))
    with pytest.raises(ValueError, match=r"the state does not fit the gradients: its 'exp_avg'"):
        tx.update(good, other)


def test_under_jit_the_checks_run_while_tracing_and_compile_once():
    """Under ``jax.jit`` bad gradients are refused while tracing (an error naming the
    parameter, as eagerly), and good ones trace once over many steps: the checks read
    no values (a value would be a tracer: no host sync) and add no recompilation."""
    require("jax")
    import jax

    tx = uniopt.adamw(0.1, weight_decay=0.01)
    traces = []

    @jax.jit
    def step(grads, state, params):
        traces.append(1)
        updates, state = tx.update(grads, state, params)
        return uniopt.apply_updates(params, updates), state

    for params in (arrays("jax"), uniopt.flatten(arrays("jax"))):
        traces.clear()
        state = tx.init(params)
        for _ in range(4):
            grads = jax.tree_util.tree_map(lambda x: 0.5 * x + 0.1, params)
            with jax.transfer_guard("disallow"):  # no value goes to the host or back
                params, state = step(grads, state, params)
        assert len(traces) == 1
    params = arrays("jax")
    state = tx.init(params)
    for kind in ("shape", "dtype", "renamed", "more"):
        grads, error, message = bad_gradients("jax", kind, arrays("jax", seed=2))
        with pytest.raises(error, match=message):
            jax.jit(tx.update)(grads, state, params)


def test_a_valid_jax_step_is_unchanged_by_the_checks():
    """A placed (large) JAX parameter keeps its own state: checked by name and shape."""
    require("jax")
    import jax.numpy as jnp

    tx = uniopt.adam(0.1)
    params = {"big": jnp.ones((300, 250)), "small": jnp.ones(7)}
    state = tx.init(params)
    assert set(state.placed) == {"big"}
    grads = {"big": jnp.full((300, 250), 0.5), "small": jnp.full(7, 0.5)}
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(np.asarray(updates["big"]), -0.1, rtol=1e-6)
    with pytest.raises(ValueError, match="the state keeps parameters \\['big'\\]"):
        tx.update({"small": grads["small"]}, state)
    bad = {**grads, "big": jnp.ones((250, 300))}
    with pytest.raises(ValueError, match=r"'exp_avg' for parameter 'big' is jax float\w+\[300"):
        tx.update(bad, state)


# ---- B: load_transform_state refuses corrupted portable state by name ---------------


def saved_state(backend: str):
    tx, params, state = stepped(backend, uniopt.adam(0.1, amsgrad=True))
    return tx, params, uniopt.transform_state_dict(state, params)


def corrupt(saved: dict, kind: str) -> str:
    """Corrupt ``saved`` one way; a pattern of the error message."""
    entry = saved["state"]["w"]
    counts = {
        "count -5": -5,
        "count '3'": "3",
        "count 1.5": 1.5,
        "count 2**53": 2**53,
        "count 2**31": 2**31,
        "count True": True,
        "count None": None,
    }
    if kind in counts:
        saved["count"] = counts[kind]
        return "count must be"
    if kind == "count missing":
        del saved["count"]
        return "count is missing"
    if kind == "complex64 slot":
        entry["exp_avg"] = entry["exp_avg"].astype(np.complex64)
        return r"'w': state 'exp_avg' is complex64\[2, 3\], expected float64\[2, 3\]"
    if kind == "float32 slot":
        entry["exp_avg"] = entry["exp_avg"].astype(np.float32)
        return r"'w': state 'exp_avg' is float32\[2, 3\], expected float64\[2, 3\]"
    if kind == "list slot":
        entry["exp_avg"] = entry["exp_avg"].tolist()
        return "'w': state 'exp_avg' is a list, not a NumPy array"
    if kind == "slot shape":
        entry["exp_avg"] = entry["exp_avg"].reshape(3, 2)
        return r"'w': state 'exp_avg' is float64\[3, 2\]"
    if kind == "slot missing":
        del entry["exp_avg"]
        return "'w': missing state 'exp_avg'"
    if kind == "slot extra":
        entry["bogus"] = entry["exp_avg"]
        return r"'w': unexpected state \['bogus'\]"
    if kind == "entry int":
        saved["state"]["w"] = 3
        return "'w': state entry is a int, not a dict"
    if kind == "state list":
        saved["state"] = [saved["state"]]
        return "'state' is a list"
    if kind == "unknown key":
        saved["version"] = 1
        return r"unknown keys \['version'\]"
    if kind == "unknown parameter":
        saved["state"]["x"] = saved["state"].pop("w")
        return r"missing \['w'\], unexpected \['x'\]"
    raise AssertionError(kind)


CORRUPTIONS = (
    "count -5",
    "count '3'",
    "count 1.5",
    "count 2**53",
    "count 2**31",
    "count True",
    "count None",
    "count missing",
    "complex64 slot",
    "float32 slot",
    "list slot",
    "slot shape",
    "slot missing",
    "slot extra",
    "entry int",
    "state list",
    "unknown key",
    "unknown parameter",
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupted_portable_state_is_refused_by_key(backend, kind):
    """Each corruption is a ValueError naming the key, parameter or slot (never a state
    cast, truncated or renumbered, nor a TypeError, KeyError or OverflowError), and the
    saved dict is left as it was."""
    require(backend)
    tx, params, saved = saved_state(backend)
    message = corrupt(saved, kind)
    kept = repr(saved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: nothing is cast
        with pytest.raises(ValueError, match=f"^load_state: state: .*{message}"):
            uniopt.load_transform_state(saved, tx, params)
    assert repr(saved) == kept


@pytest.mark.parametrize("backend", BACKENDS)
def test_good_portable_state_still_loads(backend):
    """The round trip, and the counts at the edges: 0, the counter's largest (int32),
    a NumPy integer and a 0-d integer array."""
    require(backend)
    tx, params, saved = saved_state(backend)
    state = tx.init(params)
    for count in (0, 1, 2**31 - 1, np.int64(7), np.array(5)):
        loaded = uniopt.load_transform_state({**saved, "count": count}, tx, params)
        assert int(to_numpy(loaded.count)) == int(count)
        assert loaded.count.dtype == state.count.dtype and loaded.count.shape == ()
    again = uniopt.transform_state_dict(loaded, params)
    for name, slots in saved["state"].items():
        for k, v in slots.items():
            np.testing.assert_array_equal(again["state"][name][k], v)


def test_nested_state_arrays_are_checked_too():
    """Arrays of other transforms in a chain (optax's) are NumPy arrays of their dtype
    and shape, as ``transform_state_dict`` gives them, or an error naming where."""
    require("jax")
    optax = pytest.importorskip("optax")
    params = arrays("jax")
    tx = optax.chain(optax.scale_by_adam(), uniopt.sgd(0.1, momentum=0.9))
    state = tx.init(params)
    saved = uniopt.transform_state_dict(state, params)
    uniopt.load_transform_state(saved, tx, params)
    for value, message in (  # optax's step count, saved[0][0]: an int32 0-d array
        ([1], r"state\[0\]\[0\] is a list"),
        (np.int64(1), r"state\[0\]\[0\] is int64\[\], expected int32\[\]"),
        (np.zeros(1, np.int32), r"state\[0\]\[0\] is int32\[1\], expected int32\[\]"),
    ):
        corrupted = ((value, *saved[0][1:]), saved[1])
        with pytest.raises(ValueError, match=f"^load_state: {message}"):
            uniopt.load_transform_state(corrupted, tx, params)


# ---- C: apply_updates keeps 0-d parameters arrays -----------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_dim_parameters_stay_arrays(backend):
    """NumPy makes ``np.array(1.0) + np.array(0.5)`` a scalar; ``apply_updates`` keeps
    it an array, so the next update takes it and the portable state keys it by its
    name ("w", not "w.")."""
    require(backend)
    tx = uniopt.adam(0.1)
    params = {"w": to_backend(backend, np.array(1.0)), "v": to_backend(backend, np.ones(2))}
    state = tx.init(params)
    for _ in range(3):
        grads = {k: to_backend(backend, np.full(tuple(v.shape), 0.5)) for k, v in params.items()}
        updates, state = tx.update(grads, state, params)
        params = uniopt.apply_updates(params, updates)
        assert is_array(params["w"]) and tuple(params["w"].shape) == ()
        assert adapter_for(params["w"]) is adapter_for(params["v"])
    assert set(uniopt.transform_state_dict(state, params)["state"]) == {"w", "v"}
    bare = uniopt.apply_updates(to_backend(backend, np.array(1.0)), to_backend(backend, 0.5))
    assert is_array(bare) and float(to_numpy(bare)) == 1.5
