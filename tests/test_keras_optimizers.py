"""``uniopt.keras``: uniopt's optimizers as Keras 3 optimizers, against Keras's own
optimizers, torch.optim and the float64 NumPy oracles.

Keras picks its backend once per process (``KERAS_BACKEND``, read when keras is
imported). The jax checks run here, Keras on jax as in tests/test_keras_flavor.py; the
torch and numpy checks run in two worker processes (this file run as a script), started
together by the first test that needs them so that they overlap the jax checks.
Deviations are parity's: max |got - want| over max |want|, all arrays float32.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: a fit of Keras's optimizer and of uniopt's flavor="keras" twin, float32; and
#: ``flavor="torch"`` against torch.optim on the same gradients
FIT_TOLERANCE = 1e-6
#: a registry case against its float64 oracle, float32 (parity's float32 tolerance)
ORACLE_TOLERANCE = 1e-5
ORACLE_STEPS = 20

# ---- shared by this process and the workers ------------------------------------------

rng = np.random.default_rng(0)
X = rng.standard_normal((64, 8)).astype(np.float32)
Y = np.tanh(X @ rng.standard_normal((8, 1))).astype(np.float32)

#: uniopt.keras class and arguments, Keras's twin and its arguments
TWINS = {
    "adamw": ("AdamW", dict(learning_rate=1e-3, weight_decay=0.1), "AdamW", dict(weight_decay=0.1)),
    "sgd-momentum": (
        "SGD",
        dict(learning_rate=0.05, momentum=0.9, nesterov=True),
        "SGD",
        dict(momentum=0.9, nesterov=True),
    ),
    "rmsprop": (
        "RMSprop",
        dict(learning_rate=2e-3, momentum=0.5, centered=True),
        "RMSprop",
        dict(momentum=0.5, centered=True),
    ),
    "adagrad": ("Adagrad", dict(learning_rate=0.05), "Adagrad", {}),
    # without weight decay: Keras's Lamb takes its trust ratio from the weights its base
    # class has already decayed, which LAMB's keras flavor does not (3.6e-6 in 30 steps)
    "lamb": ("LAMB", dict(learning_rate=2e-3), "Lamb", {}),
}
#: Keras's own optimizer arguments, each on AdamW against Keras's AdamW
KERAS_ARGUMENTS = {
    "clipnorm": dict(clipnorm=0.05),
    "global_clipnorm": dict(global_clipnorm=0.05),
    "clipvalue": dict(clipvalue=0.01),
    "use_ema": dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3),
    "gradient_accumulation_steps": dict(gradient_accumulation_steps=2),
    "loss_scale_factor": dict(loss_scale_factor=64.0),
    "schedule": {},  # learning_rate: ExponentialDecay
    "exclude_from_weight_decay": {},  # the biases
}


def model(keras):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
    )


def fit(keras, optimizer, epochs=3, m=None):
    """Fit the model (3 epochs of 4 batches) and return its weights."""
    m = m or model(keras)
    if not m.compiled:
        m.compile(optimizer=optimizer, loss="mse")
    m.fit(X, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return [np.asarray(w, np.float64) for w in m.get_weights()]


def deviation(got, want) -> float:
    from uniopt.parity.runner import deviation as parity_deviation

    return parity_deviation([np.asarray(x, np.float64) for x in got], want)[1]


def twin_pair(keras, uk, name):
    ours, kwargs, theirs, keras_kwargs = TWINS[name]
    a = getattr(uk, ours)(flavor="keras", **kwargs)
    b = getattr(keras.optimizers, theirs)(learning_rate=kwargs["learning_rate"], **keras_kwargs)
    return a, b


def argument_pair(keras, uk, name):
    kwargs = dict(KERAS_ARGUMENTS[name], learning_rate=1e-3)
    if name == "schedule":
        kwargs["learning_rate"] = keras.optimizers.schedules.ExponentialDecay(2e-3, 3, 0.7)
    pair = [
        uk.AdamW(weight_decay=0.1, flavor="keras", **kwargs),
        keras.optimizers.AdamW(weight_decay=0.1, **kwargs),
    ]
    if name == "exclude_from_weight_decay":
        for opt in pair:
            opt.exclude_from_weight_decay(var_names=["bias"])
    return pair


def apply_fixed(keras, optimizer, init, grads):
    """``apply_gradients`` of a fixed gradient sequence; the final values."""
    variables = [keras.Variable(x) for x in init]
    for g in grads:
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(x) for x in g], variables))
    return [np.asarray(v.numpy(), np.float64) for v in variables]


def fixed_problem(steps=30):
    r = np.random.default_rng(1)
    shapes = [(8, 16), (16,), (16, 1), (1,)]
    init = [r.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [
        [(0.3 * r.standard_normal(s)).astype(np.float32) for s in shapes] for _ in range(steps)
    ]
    return init, grads


def oracle_cases():
    """The first registry case of every algorithm (LookAhead aside) without options of
    the stateful face."""
    from uniopt.parity.cases import CASES
    from uniopt.transform import STATEFUL_OPTIONS

    out = {}
    for case in CASES:
        if case.algorithm != "lookahead" and not set(case.options) & set(STATEFUL_OPTIONS):
            out.setdefault(case.algorithm, case)
    return out


def against_oracles(keras, uk) -> dict[str, float | str]:
    """Every registry algorithm's Keras optimizer (``uniopt.keras.<its class>``), run
    by ``apply_gradients`` on the parity problem, against its float64 NumPy oracle."""
    from uniopt.parity.cases import CLASSES
    from uniopt.parity.problem import gradient, make_problem
    from uniopt.parity.runner import run_reference

    problem = make_problem(ORACLE_STEPS)
    out: dict[str, float | str] = {}
    for algorithm, case in oracle_cases().items():
        cls = getattr(uk, CLASSES[algorithm], None)
        if cls is None:
            out[algorithm] = f"uniopt.keras has no {CLASSES[algorithm]}"
            continue
        opt = cls(**case.options)
        variables = [keras.Variable(x.astype(np.float32)) for x in problem.init]
        for noise in problem.noise:
            values = [np.asarray(v.numpy(), np.float64) for v in variables]
            g = [
                gradient(p, a, c, n).astype(np.float32)
                for p, a, c, n in zip(values, problem.curvature, problem.center, noise)
            ]
            opt.apply_gradients(zip(g, variables))
        out[case.id] = deviation([v.numpy() for v in variables], run_reference(case, problem))
    return out


def torch_flavor_against_torch_optim(keras, uk) -> float:
    """``flavor="torch"`` AdamW in Keras and torch.optim.AdamW, the same gradients."""
    import torch

    init, grads = fixed_problem()
    got = apply_fixed(
        keras, uk.AdamW(learning_rate=0.01, weight_decay=0.1, flavor="torch"), init, grads
    )
    params = [torch.nn.Parameter(torch.tensor(x)) for x in init]
    opt = torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)
    for g in grads:
        for p, x in zip(params, g):
            p.grad = torch.tensor(x)
        opt.step()
    return deviation(got, [p.detach().numpy().astype(np.float64) for p in params])


def worker(backend: str) -> dict[str, object]:
    """The checks of one worker process (Keras on ``backend``): name -> deviation."""
    import uniopt  # noqa: F401  (imported first: it must not import keras)

    imports_keras = "keras" in sys.modules  # import uniopt must not import keras
    import keras

    import uniopt.keras as uk

    assert keras.backend.backend() == backend
    out: dict[str, object] = {"import uniopt imports keras": imports_keras}
    if backend == "torch":
        for name in TWINS:
            a, b = twin_pair(keras, uk, name)
            out[f"fit {name}"] = deviation(fit(keras, a), fit(keras, b))
        for name in KERAS_ARGUMENTS:
            a, b = argument_pair(keras, uk, name)
            out[f"argument {name}"] = deviation(fit(keras, a), fit(keras, b))
        out["flavor torch"] = torch_flavor_against_torch_optim(keras, uk)
    else:  # numpy: Keras has no fit() there; apply_gradients and compile()
        init, grads = fixed_problem()
        for name in TWINS:
            a, b = twin_pair(keras, uk, name)
            out[f"apply {name}"] = deviation(
                apply_fixed(keras, a, init, grads), apply_fixed(keras, b, init, grads)
            )
        m = model(keras)
        m.compile(optimizer=uk.AdamW(), loss="mse")
        out["compile"] = type(m.optimizer).__name__
        out["oracles"] = against_oracles(keras, uk)
    return out


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1])))
    sys.exit(0)

# ---- the workers ---------------------------------------------------------------------

_WORKERS: dict[str, subprocess.Popen] = {}
_RESULTS: dict[str, dict] = {}


def _start_workers() -> None:
    for backend in ("torch", "numpy"):
        if backend in _WORKERS or (backend == "torch" and not _importable("torch")):
            continue
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        _WORKERS[backend] = subprocess.Popen(
            [sys.executable, __file__, backend],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def results(backend: str) -> dict:
    _start_workers()
    if backend not in _WORKERS:
        pytest.skip(f"{backend} is not installed")
    if backend not in _RESULTS:
        out, err = _WORKERS[backend].communicate(timeout=300)
        if _WORKERS[backend].returncode != 0:
            pytest.fail(f"the Keras {backend} worker failed:\n{err[-4000:]}")
        _RESULTS[backend] = json.loads(out.strip().splitlines()[-1])
    return _RESULTS[backend]


@pytest.fixture(scope="module", autouse=True)
def workers():
    if not _importable("keras"):
        pytest.skip("keras is not installed")
    _start_workers()  # they run while the jax checks do
    yield
    for process in _WORKERS.values():
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def k():
    """keras on the jax backend, and uniopt.keras."""
    from uniopt.parity import frameworks

    if not frameworks.keras_available():
        pytest.skip("Keras 3 with the jax backend is not available in this process")
    import keras

    import uniopt.keras as uk

    return keras, uk


# ---- jax, in this process ---------------------------------------------------------------


def test_fit_adamw_matches_keras_on_jax(k):
    keras, uk = k
    a, b = twin_pair(keras, uk, "adamw")
    assert isinstance(a, keras.optimizers.Optimizer)
    rel = deviation(fit(keras, a), fit(keras, b))
    assert rel <= FIT_TOLERANCE, f"relative deviation from keras.optimizers.AdamW {rel:.3e}"


def test_lamb_with_keras_arguments_matches_keras_on_jax(k):
    """LAMB's per-tensor trust ratios in the jitted step, through Keras's jax-specific
    clipping, gradient accumulation (lax.cond) and EMA."""
    keras, uk = k
    kwargs = dict(
        learning_rate=5e-3,
        clipnorm=0.05,
        gradient_accumulation_steps=2,
        use_ema=True,
        ema_momentum=0.9,
        ema_overwrite_frequency=2,
    )
    a = uk.LAMB(flavor="keras", **kwargs)
    b = keras.optimizers.Lamb(**kwargs)
    rel = deviation(fit(keras, a, epochs=4), fit(keras, b, epochs=4))
    assert rel <= FIT_TOLERANCE, f"relative deviation from keras.optimizers.Lamb {rel:.3e}"


def test_every_optimizer_traces_in_the_jitted_step(k):
    """Every class's update traces (no float() or item() on a traced value): Keras's
    jax trainer runs ``stateless_apply`` under jax.jit."""
    import jax

    keras, uk = k
    from uniopt.parity.cases import CLASSES

    for algorithm, case in oracle_cases().items():
        opt = getattr(uk, CLASSES[algorithm])(**case.options)
        variables = [keras.Variable(np.ones(s, np.float32)) for s in [(3, 2), (2,)]]
        opt.build(variables)
        grads = [np.full(v.shape, 0.5, np.float32) for v in variables]
        values = [v.value for v in variables]
        jaxpr = jax.make_jaxpr(opt.stateless_apply)([v.value for v in opt.variables], grads, values)
        assert len(jaxpr.out_avals) == len(values) + len(opt.variables), case.id


def test_save_load_and_continue_equals_an_uninterrupted_fit(k, tmp_path):
    keras, uk = k
    path = tmp_path / "model.keras"
    first = model(keras)
    opt = uk.AdamW(learning_rate=3e-3, betas=(0.8, 0.99), flavor="torch")
    fit(keras, opt, epochs=2, m=first)
    first.save(path)
    uninterrupted = fit(keras, None, epochs=2, m=first)
    loaded = keras.models.load_model(path)
    restored = loaded.optimizer
    assert type(restored) is uk.AdamW
    assert restored.flavor == "torch" and restored.get_config()["betas"] == (0.8, 0.99)
    assert int(restored.iterations.numpy()) == 8
    resumed = fit(keras, None, epochs=2, m=loaded)
    rel = deviation(resumed, uninterrupted)
    assert rel <= FIT_TOLERANCE, f"resumed run deviates by {rel:.3e}"


def test_tensorflow_backend_is_refused(k, monkeypatch):
    keras, uk = k
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(RuntimeError, match="'tensorflow' backend is not supported"):
        uk.AdamW()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(weight_decy=0.1),
            TypeError,
            "unexpected keyword argument 'weight_decy'.*weight_decay",
        ),
        (dict(grad_clip=1.0), TypeError, "grad_clip is an option of uniopt's stateful face"),
        (dict(lr=0.1, learning_rate=0.1), TypeError, "learning_rate or lr, not both"),
        (dict(learning_rate=[0.1, 0.01]), TypeError, "learning_rate must be a real number"),
        (dict(learning_rate=-1.0), ValueError, "invalid learning_rate=-1.0"),
        (dict(betas=(0.9, 1.0)), ValueError, "invalid betas"),
        (dict(flavor="caffe"), ValueError, "unknown flavor='caffe'"),
    ],
)
def test_bad_arguments_are_refused(k, kwargs, error, match):
    _, uk = k
    with pytest.raises(error, match=match):
        uk.AdamW(**kwargs)


def test_refusals_of_what_keras_cannot_run(k):
    keras, uk = k
    with pytest.raises(ValueError, match="torch has no LarsMomentum"):
        uk.LarsMomentum(flavor="torch")
    with pytest.raises(NotImplementedError, match="LookAhead wraps another optimizer"):
        uk.LookAhead(uk.AdamW())
    opt = uk.SGD()
    with pytest.raises(TypeError, match="variable 'steps' has dtype int32"):
        opt.build([keras.Variable(np.zeros(3, np.int32), name="steps", trainable=False)])
    assert not opt.built and not opt.variables[2:]


# ---- the torch and numpy workers -------------------------------------------------------

TORCH_CHECKS = [f"fit {n}" for n in TWINS] + [f"argument {n}" for n in KERAS_ARGUMENTS]


@pytest.mark.parametrize("check", TORCH_CHECKS + ["flavor torch"])
def test_torch_backend(check):
    rel = results("torch")[check]
    assert rel <= FIT_TOLERANCE, f"{check}: relative deviation {rel:.3e}"


@pytest.mark.parametrize("check", [f"apply {n}" for n in TWINS])
def test_numpy_backend_matches_keras(check):
    rel = results("numpy")[check]
    assert rel <= FIT_TOLERANCE, f"{check}: relative deviation {rel:.3e}"


def test_numpy_backend_compiles_and_import_uniopt_imports_no_keras():
    found = results("numpy")
    assert found["compile"] == "AdamW"
    assert found["import uniopt imports keras"] is False


def test_every_algorithm_matches_its_float64_oracle():
    """Every registry algorithm as a Keras optimizer (numpy backend, eager)."""
    found = results("numpy")["oracles"]
    bad = {k: v for k, v in found.items() if isinstance(v, str) or v > ORACLE_TOLERANCE}
    assert len(found) >= 10 and not bad, bad
