"""Adam's numerics against optax and against float64 (issue 15, parts 13 and 14).

13. ``flavor="optax"`` AMSGrad is ``optax.amsgrad``: the running maximum of the
    bias-corrected second moment, with optax's ``bias_correction_mu`` /
    ``bias_correction_nu`` switches.
14. Under ``jax.jit`` the step reaches the bias corrections as a float32 0-d array:
    ``1 - beta2**t`` in float32 was 6.8e-6 from the exact update after one step; it
    is now formed as ``-expm1(t log beta)``. ``flavor="optax"`` keeps optax's own
    arithmetic (and order of operations) and equals ``optax.adam`` under jit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import require

import uniopt

STEPS = 30
TOLERANCE = {"float32": 1e-6, "float64": 1e-12}
SHAPES = ((5, 3), (7,), (1,))


def _problem():
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s) for s in SHAPES]
    center = [rng.standard_normal(s) for s in SHAPES]
    curvature = [np.abs(rng.standard_normal(s)) + 0.5 for s in SHAPES]
    noise = [[0.3 * rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    return init, curvature, center, noise


INIT, CURVATURE, CENTER, NOISE = _problem()


def gradient(p, a, c, n):
    return a * (p - c) + n


def jitted_trajectory(tx, dtype: str) -> list[list[np.ndarray]]:
    """The parameters after every step of ``tx`` (uniopt's or optax's), jitted."""
    import jax
    import jax.numpy as jnp
    import optax

    def as_jax(xs):
        return [jnp.asarray(x, dtype) for x in xs]

    a, c = as_jax(CURVATURE), as_jax(CENTER)

    @jax.jit
    def step(params, state, n):
        grads = [gradient(p, aa, cc, e) for p, aa, cc, e in zip(params, a, c, n)]
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = as_jax(INIT)
    state = tx.init(params)
    out = []
    for n in NOISE:
        params, state = step(params, state, as_jax(n))
        out.append([np.asarray(p) for p in params])
    return out


def numpy_trajectory(dtype: str, **options) -> list[list[np.ndarray]]:
    """The stateful face on NumPy arrays of ``dtype``."""
    opt = uniopt.Adam([x.astype(dtype) for x in INIT], **options)
    a, c = [x.astype(dtype) for x in CURVATURE], [x.astype(dtype) for x in CENTER]
    out = []
    for n in NOISE:
        grads = [gradient(p, aa, cc, e.astype(dtype)) for p, aa, cc, e in zip(opt.params, a, c, n)]
        opt.step(grads)
        out.append([p.copy() for p in opt.params])
    return out


def worst(result, expected) -> float:
    """The largest relative deviation over all steps (max-abs over max |expected|)."""
    return max(
        max(float(np.max(np.abs(r - e))) for r, e in zip(rs, es))
        / max(float(np.max(np.abs(e))) for e in es)
        for rs, es in zip(result, expected)
    )


SWITCHES = [(True, True), (False, True), (True, False), (False, False)]


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("mu,nu", SWITCHES, ids=[f"mu{int(m)}-nu{int(n)}" for m, n in SWITCHES])
def test_optax_flavor_amsgrad_is_optax_amsgrad(mu, nu, dtype):
    """Before: the optax flavor took the maximum of the uncorrected second moment
    (torch's AMSGrad) and parted from optax after step 2 (0.43 after 30 steps)."""
    require("jax")
    import optax

    expected = jitted_trajectory(
        optax.amsgrad(0.1, bias_correction_mu=mu, bias_correction_nu=nu), dtype
    )
    switches = {"bias_correction_mu": mu, "bias_correction_nu": nu}
    options = {"lr": 0.1, "amsgrad": True, **{k: v for k, v in switches.items() if not v}}
    functional = jitted_trajectory(uniopt.adam(**options, flavor="optax"), dtype)
    assert worst(functional, expected) <= TOLERANCE[dtype]
    stateful = numpy_trajectory(dtype, **options, flavor="optax")
    assert worst(stateful, expected) <= TOLERANCE[dtype]
    # the same switches through the explicit option, without the flavor
    explicit = numpy_trajectory(dtype, **options, corrected_moments=True)
    assert worst(explicit, stateful) == 0.0


def test_torch_amsgrad_keeps_the_uncorrected_maximum():
    """The torch form (default) is unchanged: the maximum of the raw second moment."""
    torch = pytest.importorskip("torch")
    theirs = [torch.nn.Parameter(torch.tensor(x)) for x in INIT]
    t_opt = torch.optim.Adam(theirs, lr=0.1, amsgrad=True)
    for n in NOISE:
        for p, a, c, e in zip(theirs, CURVATURE, CENTER, n):
            p.grad = gradient(p.detach(), torch.tensor(a), torch.tensor(c), torch.tensor(e))
        t_opt.step()
    ours = numpy_trajectory("float64", lr=0.1, amsgrad=True)[-1]
    for p, q in zip(theirs, ours):
        np.testing.assert_allclose(q, p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_corrected_moments_and_eps_hat_are_exclusive():
    with pytest.raises(ValueError, match="invalid eps_hat=True"):
        uniopt.Adam([np.ones(2)], eps_hat=True, corrected_moments=True)


# ---- 14: the traced bias correction ------------------------------------------------------


def adam_updates_float64(grads, lr, b1=0.9, b2=0.999, eps=1e-8) -> list[np.ndarray]:
    """Adam's updates from its equation, in float64."""
    m = np.zeros_like(grads[0], dtype=np.float64)
    v = np.zeros_like(m)
    out = []
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        out.append(-lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
    return out


def jitted_updates(tx, p, grads) -> list[np.ndarray]:
    import jax
    import jax.numpy as jnp

    update = jax.jit(tx.update)
    state = tx.init(jnp.asarray(p))
    out = []
    for g in grads:
        u, state = update(jnp.asarray(g), state, jnp.asarray(p))
        out.append(np.asarray(u, dtype=np.float64))
    return out


@pytest.mark.parametrize("lr", [1e-3, 0.1])
def test_jitted_float32_adam_is_accurate(lr):
    """Before: 6.8e-6 from the float64 update after one step (float32 ``1 - 0.999**t``)."""
    require("jax")
    rng = np.random.default_rng(0)
    p = rng.standard_normal(1000).astype(np.float32)
    grads = [(rng.standard_normal(1000) * (1 + 0.1 * t)).astype(np.float32) for t in range(30)]
    expected = adam_updates_float64(grads, lr)
    got = jitted_updates(uniopt.adam(lr=lr), p, grads)
    for t in (1, 30):
        rel = np.max(np.abs(got[t - 1] - expected[t - 1])) / np.max(np.abs(expected[t - 1]))
        assert rel <= 5e-7, f"step {t}: {rel:.2e}"


def test_traced_bias_correction_is_expm1_and_exact_concrete_steps_are_float64():
    """The traced bias correction is ``-expm1(t log beta)`` in the step's dtype;
    Python-int steps (the stateful faces) keep their float64 host arithmetic."""
    from uniopt.blocks import bias_correction

    step = np.asarray(1.0, dtype=np.float32)
    assert float(bias_correction(0.999, step)) == pytest.approx(1e-3, rel=1e-7)
    assert bias_correction(0.999, 7) == 1.0 - 0.999**7
    assert bias_correction(0.0, step) == 1.0


ULP_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", sys.argv[1] == "1")
    import jax.numpy as jnp, numpy as np, optax, uniopt
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(1000).astype(np.float32)
    grads = [(rng.standard_normal(1000) * (1 + 0.1 * t)).astype(np.float32) for t in range(30)]
    def trajectory(tx):
        p = jnp.asarray(p0)
        state = tx.init(p)
        @jax.jit
        def step(p, state, g):
            u, state = tx.update(g, state, p)
            return optax.apply_updates(p, u), state
        out = []
        for g in grads:
            p, state = step(p, state, jnp.asarray(g))
            out.append(np.asarray(p).view(np.int32).astype(np.int64))
        return out
    worst = 0
    for theirs, ours in [
        (optax.adam(1e-3), uniopt.adam(lr=1e-3, flavor="optax")),
        (
            optax.adamw(1e-3, weight_decay=0.1),
            uniopt.adamw(lr=1e-3, weight_decay=0.1, flavor="optax"),
        ),
        (optax.amsgrad(1e-3), uniopt.adam(lr=1e-3, amsgrad=True, flavor="optax")),
    ]:
        for a, b in zip(trajectory(theirs), trajectory(ours)):
            worst = max(worst, int(np.max(np.abs(a - b))))
    print(worst)
    """
)


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "float32-default"])
def test_optax_flavor_equals_optax_under_jit(x64):
    """``flavor="optax"`` is optax's arithmetic, to the last bit or one ulp: its bias
    correction ``1 - beta**count`` in the default float dtype, its order of operations
    (XLA fuses multiply-adds, so the order of the terms of a moving average matters).
    Run in a fresh interpreter: the test session enables x64."""
    require("jax")
    done = subprocess.run(
        [sys.executable, "-c", ULP_SCRIPT, "1" if x64 else "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ulps = int(done.stdout.strip().splitlines()[-1])
    assert ulps <= 1, f"{ulps} ulps from optax"
