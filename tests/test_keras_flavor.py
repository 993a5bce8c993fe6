"""``flavor="keras"`` against live Keras 3 optimizers (jax backend), float32, 100 steps."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import to_numpy

import uniopt
from uniopt.parity.problem import make_problem

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "jax"
keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":  # pragma: no cover - another test chose a backend
    pytest.skip("keras was imported with another backend", allow_module_level=True)

PROBLEM = make_problem(100)
CASES = [
    ("SGD", dict(learning_rate=0.05, momentum=0.9), uniopt.SGD, dict(lr=0.05, momentum=0.9)),
    (
        "SGD",
        dict(learning_rate=0.05, momentum=0.9, nesterov=True),
        uniopt.SGD,
        dict(lr=0.05, momentum=0.9, nesterov=True),
    ),
    ("Adam", dict(learning_rate=0.05), uniopt.Adam, dict(lr=0.05)),
    (
        "Adam",
        dict(learning_rate=0.05, epsilon=1e-3, amsgrad=True, weight_decay=0.1),
        uniopt.Adam,
        dict(lr=0.05, eps=1e-3, amsgrad=True, weight_decay=0.1),
    ),
    (
        "AdamW",
        dict(learning_rate=0.05, weight_decay=0.1),
        uniopt.AdamW,
        dict(lr=0.05, weight_decay=0.1),
    ),
    ("RMSprop", dict(learning_rate=0.01), uniopt.RMSprop, dict(lr=0.01)),
    (
        "RMSprop",
        dict(learning_rate=0.01, momentum=0.5, centered=True, epsilon=1e-3),
        uniopt.RMSprop,
        dict(lr=0.01, momentum=0.5, centered=True, eps=1e-3),
    ),
    ("Adagrad", dict(learning_rate=0.05), uniopt.Adagrad, dict(lr=0.05)),
    ("Lamb", dict(learning_rate=0.05), uniopt.LAMB, dict(lr=0.05)),
]


def run_keras(name, kwargs):
    variables = [keras.Variable(x.astype(np.float32)) for x in PROBLEM.init]
    opt = getattr(keras.optimizers, name)(**kwargs)
    opt.build(variables)
    for noise in PROBLEM.noise:
        grads = [
            (a * (np.asarray(v.numpy(), np.float64) - c) + n).astype(np.float32)
            for v, a, c, n in zip(variables, PROBLEM.curvature, PROBLEM.center, noise)
        ]
        opt.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in grads], variables))
    return [np.asarray(v.numpy(), np.float64) for v in variables]


def run_uniopt(cls, kwargs):
    params = [x.astype(np.float32) for x in PROBLEM.init]
    opt = cls(params, flavor="keras", **kwargs)
    for noise in PROBLEM.noise:
        opt.step(
            [
                (a * (p.astype(np.float64) - c) + n).astype(np.float32)
                for p, a, c, n in zip(opt.params, PROBLEM.curvature, PROBLEM.center, noise)
            ]
        )
    return [to_numpy(p) for p in opt.params]


@pytest.mark.parametrize(
    "name,keras_kwargs,cls,kwargs", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_keras_flavor_matches_keras(name, keras_kwargs, cls, kwargs):
    want, got = run_keras(name, keras_kwargs), run_uniopt(cls, kwargs)
    scale = max(np.max(np.abs(w)) for w in want)
    diff = max(np.max(np.abs(g - w)) for g, w in zip(got, want))
    assert diff <= 1e-5 * scale, f"relative deviation from keras {diff / scale:.3e}"
