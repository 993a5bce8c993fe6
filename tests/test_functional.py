"""The functional face: jit without recompilation, torch.compile without graph breaks,
optax interoperability, plain-pytree state."""

from __future__ import annotations

import numpy as np
import pytest

import uniopt

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

TRANSFORMS = [
    ("adamw", dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    ("adam", dict(lr=0.05, do_bias_correction=False)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)),
]


def problem(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    device = jax.devices()[0]
    params = {"w": rng.standard_normal((8, 4)), "b": rng.standard_normal(4)}
    params = {k: jax.device_put(jnp.asarray(v, dtype), device) for k, v in params.items()}
    return params, lambda p: jax.tree_util.tree_map(lambda x: 0.5 * x + 0.1, p)


@pytest.mark.parametrize("name,kwargs", TRANSFORMS)
def test_jitted_update_does_not_recompile(name, kwargs):
    tx = getattr(uniopt, name)(**kwargs)
    params, grad = problem()
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(grad(params), state, params)
        return uniopt.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(5):
        params, state = step(params, state)
    assert len(traces) == 1
    assert all(
        leaf.dtype == jnp.float32
        for leaf in jax.tree_util.tree_leaves((params, state))
        if leaf.dtype != jnp.int32
    )


def test_stateful_jax_step_compiles_once():
    params, grad = problem()
    opt = uniopt.AdamW(params, lr=0.1)
    for _ in range(4):
        opt.step(grad(opt.params))
    (segment,) = opt._segments[0]
    (compiled,) = segment._compiled.values()
    assert compiled._cache_size() == 1


def test_state_is_a_plain_pytree_that_jit_can_donate():
    tx = uniopt.adamw(lr=0.1)
    params, grad = problem()
    state = tx.init(params)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    assert all(isinstance(x, jax.Array) for x in leaves)
    assert isinstance(state, tuple) and isinstance(state.slots[0], dict)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(grad(params), state, params)
        return uniopt.apply_updates(params, updates), state

    donating = jax.jit(
        step.__wrapped__ if hasattr(step, "__wrapped__") else step, donate_argnums=(0, 1)
    )
    new_params, new_state = donating(params, state)
    assert jax.tree_util.tree_structure(new_state) == treedef


def test_inside_optax_chain_with_global_norm_clipping():
    params, grad = problem(np.float64)
    ours = optax.chain(optax.clip_by_global_norm(0.5), uniopt.adamw(lr=0.05, weight_decay=0.1))
    theirs = optax.chain(
        optax.clip_by_global_norm(0.5),
        optax.adamw(0.05, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1),
    )

    def run(tx):
        p, state = params, tx.init(params)

        @jax.jit
        def step(p, state):
            updates, state = tx.update(grad(p), state, p)
            return optax.apply_updates(p, updates), state

        for _ in range(30):
            p, state = step(p, state)
        return p

    a, b = run(ours), run(theirs)
    for k in params:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-12)


def test_update_without_params_and_schedule_under_jit():
    params, grad = problem(np.float64)
    tx = uniopt.sgd(lr=lambda count: 0.1 * 0.5**count)
    state = tx.init(params)
    step = jax.jit(lambda g, s: tx.update(g, s))
    p = params
    for t in range(4):
        updates, state = step(grad(p), state)
        expected = {k: -(0.1 * 0.5**t) * v for k, v in grad(p).items()}
        for k in p:
            np.testing.assert_allclose(np.asarray(updates[k]), np.asarray(expected[k]), rtol=1e-13)
        p = uniopt.apply_updates(p, updates)
    with pytest.raises(ValueError, match="needs params"):
        uniopt.adamw(weight_decay=0.1).update(grad(params), uniopt.adamw().init(params))


def test_torch_compile_fullgraph_has_no_graph_break():
    torch = pytest.importorskip("torch")
    tx = uniopt.adamw(lr=0.05, weight_decay=0.1, amsgrad=True)
    rng = np.random.default_rng(0)
    params = [torch.tensor(rng.standard_normal(s)) for s in [(5, 3), (3,)]]

    def step(params, state):
        grads = [0.5 * p + 0.1 for p in params]
        updates, state = tx.update(grads, state, params)
        return uniopt.apply_updates(params, updates), state

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    eager_p, eager_s = params, tx.init(params)
    comp_p, comp_s = params, tx.init(params)
    for _ in range(3):
        eager_p, eager_s = step(eager_p, eager_s)
        comp_p, comp_s = compiled(comp_p, comp_s)
    for a, b in zip(eager_p, comp_p):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_apply_updates_checks_structure():
    with pytest.raises(ValueError, match="2 updates for 1 parameters"):
        uniopt.apply_updates([np.zeros(1)], [np.zeros(1), np.zeros(1)])


def test_large_jax_tensors_keep_their_own_state_and_step_like_flat_ones():
    """On JAX, tensors of a block's size or more keep state shaped like themselves (a
    flat state would cost XLA a copy per step); the numbers are the flat form's."""
    rng = np.random.default_rng(0)
    params = {"big": jnp.asarray(rng.standard_normal((300, 250))), "small": jnp.ones(7)}
    grads = {"big": jnp.asarray(rng.standard_normal((300, 250))), "small": jnp.full(7, 0.5)}
    tx = uniopt.lamb(lr=0.05, weight_decay=0.01)
    state, flat = tx.init(params), uniopt.flatten(params)
    flat_state = tx.init(flat)
    assert set(state.placed) == {"big"} and state.placed["big"]["exp_avg"].shape == (300, 250)
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    for _ in range(3):
        updates, state = step(params, state, grads)
        params = uniopt.apply_updates(params, updates)
        flat_updates, flat_state = step(flat, flat_state, uniopt.flatten(grads))
        flat = uniopt.apply_updates(flat, flat_updates)
    for k, v in flat.unflatten().items():
        np.testing.assert_allclose(np.asarray(params[k]), np.asarray(v), rtol=0, atol=1e-13)


def test_lookahead_slow_weights_are_the_new_parameters_after_a_sync(backend):
    """On a sync step the functional LookAhead's slow weights are exactly the
    parameters ``apply_updates`` gives (torch's fast and slow weights are equal after a
    sync), eagerly on every backend and under ``jax.jit``; both follow the equations
    (float64 loop: SGD momentum, every k-th step slow += alpha (fast - slow), fast = slow)."""
    from conftest import to_backend, to_numpy

    lr, momentum, alpha, k = 0.7, 0.9, 0.2, 2  # the slow weights move far: p + (s - p) != s
    tx = uniopt.lookahead(uniopt.sgd(lr=lr, momentum=momentum), alpha=alpha, k=k)
    start = np.random.default_rng(3).standard_normal(5)

    def grad(p):
        return 0.5 * p + 0.1

    def update(p, s):
        updates, s = tx.update([grad(p[0])], s, p)
        return uniopt.apply_updates(p, updates), s

    if backend == "jax":
        update = jax.jit(update)
    params = [to_backend(backend, start)]
    state = tx.init(params)
    fast, slow, buf = start.copy(), start.copy(), None
    for t in range(1, 7):
        params, state = update(params, state)
        g = grad(fast)
        buf = g if buf is None else momentum * buf + g
        fast = fast - lr * buf
        if t % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow.copy()
            assert np.array_equal(to_numpy(state.slow[0]), to_numpy(params[0]))
        np.testing.assert_allclose(to_numpy(params[0]), fast, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(to_numpy(state.slow[0]), slow, rtol=1e-13, atol=1e-15)
