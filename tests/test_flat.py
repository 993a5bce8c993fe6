"""Flat parameters (uniopt.flatten): the same trajectory and the same state as the
unflattened form (the registry runs the "flat" face in test_parity against the float64
oracle), one array per segment at the jit boundary, gradients through ``unflatten``,
and clear errors for what does not fit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_backend, to_numpy

import uniopt
from uniopt.parity.cases import CASES

SHAPES = [(4, 3), (7,), (2, 3, 2)]


def tree(backend, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return {
        "w": to_backend(backend, rng.standard_normal(SHAPES[0]), dtype),
        "b": [to_backend(backend, rng.standard_normal(s), dtype) for s in SHAPES[1:]],
    }


def leaves(x):
    return [x["w"], *x["b"]]


@pytest.mark.parametrize("case_id", ["adamw-amsgrad", "lamb-default", "lars_momentum-coeff"])
def test_flat_and_tree_forms_step_alike_and_share_their_state(backend, case_id):
    case = next(c for c in CASES if c.id == case_id)
    tx = case.build_transform()
    params, grads = tree(backend, 0), tree(backend, 1)
    flat, flat_grads = uniopt.flatten(params), uniopt.flatten(grads)
    state, flat_state = tx.init(params), tx.init(flat)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        params = uniopt.apply_updates(params, updates)
        flat_updates, flat_state = tx.update(flat_grads, flat_state, flat)
        flat = uniopt.apply_updates(flat, flat_updates)
    assert isinstance(flat_updates, uniopt.Flat) and len(flat.arrays) == 1
    for a, b in zip(leaves(params), leaves(flat.unflatten())):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=0, atol=1e-14)
    saved, flat_saved = (
        uniopt.transform_state_dict(state, params),
        uniopt.transform_state_dict(flat_state, flat),
    )
    assert saved["count"] == flat_saved["count"] == 3
    for name, slots in saved["state"].items():
        for slot, value in slots.items():
            np.testing.assert_allclose(value, flat_saved["state"][name][slot], atol=1e-14)
    restored = uniopt.load_transform_state(saved, tx, flat)  # tree checkpoint -> flat run
    _, again = tx.update(flat_grads, restored, flat)
    _, expected = tx.update(flat_grads, flat_state, flat)
    for a, b in zip(again.slots[0].values(), expected.slots[0].values()):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-14)


def test_unflatten_restores_structure_shapes_and_values_per_dtype_segment():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal(4).astype(np.float32)}
    params["c"] = rng.standard_normal(5)
    flat = uniopt.flatten(params)
    assert [x.dtype for x in flat.arrays] == [np.float64, np.float32]  # a and c, then b
    back = flat.unflatten()
    assert set(back) == {"a", "b", "c"}
    for k in params:
        assert back[k].shape == params[k].shape and back[k].dtype == params[k].dtype
        np.testing.assert_array_equal(back[k], params[k])


def test_flat_gradients_need_flat_parameters_of_the_same_table():
    tx = uniopt.adamw(lr=0.1)
    flat = uniopt.flatten(tree("numpy"))
    state = tx.init(flat)
    other = uniopt.flatten({"x": np.zeros(3)})
    with pytest.raises(ValueError, match="same flat parameters"):
        tx.update(other, state, flat)
    with pytest.raises(ValueError, match="same flat parameters"):
        tx.update(uniopt.flatten(tree("numpy")), state, tree("numpy"))
    with pytest.raises(ValueError, match="flat updates"):
        uniopt.apply_updates(flat, tree("numpy"))
    with pytest.raises(ValueError, match="is None"):
        uniopt.flatten({"x": None})


def test_jax_grad_through_unflatten_is_flat_and_the_jitted_step_has_one_output_per_segment():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    params = {f"t{i}": jnp.full((64,), float(i)) for i in range(50)}
    flat = uniopt.flatten(params)

    def loss(f):
        return sum(jnp.sum(t**2) for t in jax.tree_util.tree_leaves(f.unflatten()))

    grads = jax.grad(loss)(flat)
    assert isinstance(grads, uniopt.Flat) and len(grads.arrays) == 1
    np.testing.assert_array_equal(grads.arrays[0], 2 * flat.arrays[0])  # d/dx x^2
    tx = uniopt.lamb(lr=0.1)

    def step(f, s):
        u, s = tx.update(jax.grad(loss)(f), s, f)
        return uniopt.apply_updates(f, u), s

    state = tx.init(flat)
    compiled = jax.jit(step).lower(flat, state).compile()
    outputs = jax.tree_util.tree_leaves(jax.eval_shape(step, flat, state))
    assert len(outputs) == 1 + len(state.slots[0]) + 1  # parameters, slots, count
    new, _ = compiled(flat, state)
    assert isinstance(new, uniopt.Flat)


def test_equal_sized_tensors_lie_together_and_cost_one_reduction_per_size():
    """LAMB's per-tensor norms over 200 tensors of two sizes, alternating in the model:
    the flat layout puts equal sizes together, so the jitted step reduces once per size
    and norm (compiling 200 separate sums took XLA over a minute on 2000 tensors)."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    params = {f"layer{i}": {"w": jnp.ones((8, 8)), "b": jnp.ones(8)} for i in range(100)}
    flat = uniopt.flatten(params)
    spans = flat.table.layouts[0].spans  # the model alternates b (8) and w (64)
    assert [span.size for span in spans] == [8] * 100 + [64] * 100
    tx = uniopt.lamb(lr=0.1)
    grads = flat.like([x * 0.5 for x in flat.arrays])

    def step(f, s):
        u, s = tx.update(grads, s, f)
        return uniopt.apply_updates(f, u), s

    jaxpr = jax.make_jaxpr(step)(flat, tx.init(flat))
    sums = [e for e in jaxpr.eqns if e.primitive.name == "reduce_sum"]
    assert len(sums) == 4  # ||p|| and ||u||, for each of the two sizes
    tree_state = tx.init(params)
    updates, _ = tx.update(flat.like(grads.arrays).unflatten(), tree_state, params)
    flat_updates, _ = jax.jit(lambda f, s: tx.update(grads, s, f))(flat, tx.init(flat))
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(flat_updates.unflatten())):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
