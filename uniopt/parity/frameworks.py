"""Each framework's own optimizer as an oracle of its flavor: trajectories recorded
from PaddlePaddle and MindSpore (``tests/recorded/``, made by its ``generate.py``), and
live Keras 3 on the jax backend. Used by ``python -m uniopt parity --flavors`` and by
the tests.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

import uniopt
from uniopt import schedules
from uniopt.parity.arrays import BACKENDS
from uniopt.parity.problem import NAMES, make_problem

#: where the recordings live in a source checkout (they are not shipped in the wheel)
RECORDED = Path(__file__).resolve().parents[2] / "tests" / "recorded"
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
#: known, explained exceptions to TOLERANCE
LOOSER = {
    # Paddle's Lamb starts its beta-power accumulators at the float64 betas but multiplies
    # them by the float32-rounded betas; uniopt's "running" powers use the rounded betas
    # throughout, a 1e-8 relative difference in the bias corrections
    "paddle__Lamb__default": 1e-6,
    "paddle__Lamb__wd0": 1e-6,
    "paddle__Lamb__wd0.1_exclude_bn_eps1e-3": 1e-6,
    "paddle__Lamb__wd0_always_adapt": 1e-6,
}


def paddle_piecewise(values):
    return schedules.piecewise_decay([2, 4, 6, 8], values)


def not_bn(name):
    return "bn" not in name


def lookahead(inner, **kwargs):
    return lambda params: uniopt.LookAhead(inner(params), slow_init="first_step", **kwargs)


def opt(cls, **kwargs):
    return lambda params: cls(params, **kwargs)


P, M = "paddle", "mindspore"


def mindspore_piecewise(values):
    """nn.piecewise_constant_lr(milestone=[3, 10, 50, 200], learning_rates=values)."""
    return [v for v, n in zip(values, (3, 7, 40, 150)) for _ in range(n)]


def by_name(params, names):
    return {n: params[n] for n in names}


def mindspore_groups(params):
    # MindSpore centralizes only tensors with shape[1] % 16 == 0: on conv.weight (2, 3, 2)
    # its grad_centralization is a no-op, so the group is given without it here
    return [
        {"params": by_name(params, NAMES[:2]), "lr": 0.01, "weight_decay": 0.1},
        {"params": by_name(params, NAMES[2:3]), "weight_decay": 0.05},
        {"params": by_name(params, NAMES[3:])},
    ]


def paddle_groups(params):
    # a Paddle group's learning_rate is a scale of the optimizer's: 0.5 * 0.05
    return [
        {"params": by_name(params, NAMES[:2]), "lr": 0.5 * 0.05, "weight_decay": 0.1},
        {"params": by_name(params, NAMES[2:])},
    ]


def grouped(cls, groups, **kwargs):
    return lambda params: cls(groups(params), **kwargs)


mindspore_lr_list = mindspore_piecewise([0.05, 0.03, 0.02, 0.01])
RECIPES = {
    # ---- PaddlePaddle (float64 unless noted)
    "paddle__Adam__default": opt(uniopt.Adam, lr=0.05, flavor=P),
    "paddle__Adam__eps1e-3": opt(uniopt.Adam, lr=0.05, eps=1e-3, flavor=P),
    "paddle__Adam__l2_0.1": opt(uniopt.Adam, lr=0.05, weight_decay=0.1, flavor=P),
    "paddle__Adam__l2_0.1_clip_global0.5": opt(
        uniopt.Adam, lr=0.05, weight_decay=0.1, flavor=P, grad_clip=uniopt.ClipGradByGlobalNorm(0.5)
    ),
    "paddle__AdamW__default": opt(uniopt.AdamW, lr=0.05, flavor=P),
    "paddle__AdamW__wd0.1": opt(uniopt.AdamW, lr=0.05, weight_decay=0.1, flavor=P),
    "paddle__AdamW__wd0.1_eps1e-3": opt(
        uniopt.AdamW, lr=0.05, weight_decay=0.1, eps=1e-3, flavor=P
    ),
    "paddle__AdamW__wd0.1_amsgrad": opt(
        uniopt.AdamW, lr=0.05, weight_decay=0.1, amsgrad=True, flavor=P
    ),
    "paddle__AdamW__wd0.1_apply_decay_fun": opt(
        uniopt.AdamW, lr=0.05, weight_decay=0.1, flavor=P, apply_decay_param_fun=not_bn
    ),
    "paddle__AdamW__wd0.1_clip_global0.5": opt(
        uniopt.AdamW,
        lr=0.05,
        weight_decay=0.1,
        flavor=P,
        grad_clip=uniopt.ClipGradByGlobalNorm(0.5),
    ),
    "paddle__AdamW__wd0.1_clip_norm0.1": opt(
        uniopt.AdamW, lr=0.05, weight_decay=0.1, flavor=P, grad_clip=uniopt.ClipGradByNorm(0.1)
    ),
    "paddle__AdamW__wd0.1_clip_value0.05": opt(
        uniopt.AdamW, lr=0.05, weight_decay=0.1, flavor=P, grad_clip=uniopt.ClipGradByValue(0.05)
    ),
    "paddle__AdamW__wd0.1_lazy": opt(
        uniopt.AdamW, lr=0.05, weight_decay=0.1, flavor=P, lazy_mode=True
    ),
    "paddle__AdamW__wd0.1_piecewise": opt(
        uniopt.AdamW,
        lr=paddle_piecewise([0.05, 0.04, 0.03, 0.02, 0.01]),
        weight_decay=0.1,
        flavor=P,
    ),
    "paddle__Momentum__default": opt(uniopt.SGD, lr=0.05, momentum=0.9, flavor=P),
    "paddle__Momentum__l2_0.1": opt(uniopt.SGD, lr=0.05, momentum=0.9, weight_decay=0.1, flavor=P),
    "paddle__Momentum__nesterov": opt(uniopt.SGD, lr=0.05, momentum=0.9, nesterov=True, flavor=P),
    "paddle__Momentum__nesterov_l2_0.1": opt(
        uniopt.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, flavor=P
    ),
    "paddle__Momentum__piecewise": opt(
        uniopt.SGD, lr=paddle_piecewise([0.05, 0.04, 0.03, 0.02, 0.01]), momentum=0.9, flavor=P
    ),
    "paddle__Momentum__groups": grouped(uniopt.SGD, paddle_groups, lr=0.05, momentum=0.9, flavor=P),
    "paddle__LarsMomentum__default": opt(uniopt.LarsMomentum, lr=5.0, momentum=0.9, flavor=P),
    "paddle__LarsMomentum__lr0.5_coeff0.05_wd0.1_exclude_bn_eps0.1": opt(
        uniopt.LarsMomentum,
        lr=0.5,
        momentum=0.9,
        lars_coeff=0.05,
        lars_weight_decay=0.1,
        epsilon=0.1,
        flavor=P,
        apply_decay_param_fun=not_bn,
    ),
    "paddle__RMSProp__default": opt(uniopt.RMSprop, lr=0.01, alpha=0.95, eps=1e-6, flavor=P),
    "paddle__RMSProp__rho0.9_eps1e-3_momentum0.5": opt(
        uniopt.RMSprop, lr=0.01, alpha=0.9, eps=1e-3, momentum=0.5, flavor=P
    ),
    "paddle__RMSProp__centered_rho0.9_eps1e-3_momentum0.5": opt(
        uniopt.RMSprop, lr=0.01, alpha=0.9, eps=1e-3, momentum=0.5, centered=True, flavor=P
    ),
    "paddle__RMSProp__momentum0.5_piecewise": opt(
        uniopt.RMSprop,
        lr=paddle_piecewise([0.01, 0.008, 0.006, 0.004, 0.002]),
        alpha=0.95,
        eps=1e-6,
        momentum=0.5,
        flavor=P,
    ),
    "paddle__Adagrad__default": opt(uniopt.Adagrad, lr=0.1, eps=1e-6, flavor=P),
    "paddle__Adagrad__eps1e-3_init0.1": opt(
        uniopt.Adagrad, lr=0.1, eps=1e-3, initial_accumulator_value=0.1, flavor=P
    ),
    "paddle__Lamb__default": opt(uniopt.LAMB, lr=0.02, weight_decay=0.01, eps=1e-6, flavor=P),
    "paddle__Lamb__wd0.1_exclude_bn_eps1e-3": opt(
        uniopt.LAMB, lr=0.02, weight_decay=0.1, eps=1e-3, flavor=P, apply_decay_param_fun=not_bn
    ),
    "paddle__Lamb__wd0": opt(uniopt.LAMB, lr=0.02, weight_decay=0.0, eps=1e-6, flavor=P),
    "paddle__Lamb__wd0_always_adapt": opt(
        uniopt.LAMB, lr=0.02, weight_decay=0.0, eps=1e-6, always_adapt=True, flavor=P
    ),
    "paddle__LookAhead__sgd0.1_alpha0.2_k5": lookahead(
        opt(uniopt.SGD, lr=0.1, flavor=P), alpha=0.2, k=5
    ),
    "paddle__LookAhead__adam0.05_alpha0.5_k3": lookahead(
        opt(uniopt.Adam, lr=0.05, flavor=P), alpha=0.5, k=3
    ),
    "paddle__SGD__l2_0.1": opt(uniopt.SGD, lr=0.05, weight_decay=0.1, flavor=P),
    "paddle__SGD__piecewise": opt(
        uniopt.SGD, lr=paddle_piecewise([0.1, 0.08, 0.06, 0.04, 0.02]), flavor=P
    ),
    # ---- MindSpore (float32 unless noted)
    "mindspore__Adam__default": opt(uniopt.Adam, lr=0.05, flavor=M),
    "mindspore__Adam__eps1e-3": opt(uniopt.Adam, lr=0.05, eps=1e-3, flavor=M),
    "mindspore__Adam__wd0.1": opt(uniopt.Adam, lr=0.05, weight_decay=0.1, flavor=M),
    "mindspore__Adam__loss_scale128_wd0.1": opt(
        uniopt.Adam, lr=0.05, weight_decay=0.1, loss_scale=128.0, flavor=M
    ),
    "mindspore__Adam__amsgrad": opt(uniopt.Adam, lr=0.05, amsgrad=True, flavor=M),
    "mindspore__Adam__amsgrad_eps1e-3": opt(uniopt.Adam, lr=0.05, amsgrad=True, eps=1e-3, flavor=M),
    "mindspore__AdamWeightDecay__wd0.1": opt(
        uniopt.AdamW, lr=0.05, weight_decay=0.1, flavor=M, eps=1e-6
    ),
    "mindspore__AdamWeightDecay__wd0.1_eps1e-3": opt(
        uniopt.AdamW, lr=0.05, weight_decay=0.1, eps=1e-3, flavor=M
    ),
    "mindspore__Momentum__default": opt(uniopt.SGD, lr=0.02, momentum=0.9, flavor=M),
    "mindspore__Momentum__default_float64params": opt(uniopt.SGD, lr=0.02, momentum=0.9, flavor=M),
    "mindspore__Momentum__wd0.1": opt(
        uniopt.SGD, lr=0.02, momentum=0.9, weight_decay=0.1, flavor=M
    ),
    "mindspore__Momentum__loss_scale128": opt(
        uniopt.SGD, lr=0.02, momentum=0.9, loss_scale=128.0, flavor=M
    ),
    "mindspore__Momentum__loss_scale128_wd0.1": opt(
        uniopt.SGD, lr=0.02, momentum=0.9, weight_decay=0.1, loss_scale=128.0, flavor=M
    ),
    "mindspore__Momentum__lr_list": opt(uniopt.SGD, lr=mindspore_lr_list, momentum=0.9, flavor=M),
    "mindspore__Momentum__lr_polynomial": opt(
        uniopt.SGD,
        lr=schedules.polynomial_decay(0.05, 100, end_lr=0.005, power=2.0),
        momentum=0.9,
        flavor=M,
    ),
    "mindspore__Momentum__groups": grouped(
        uniopt.SGD, mindspore_groups, lr=0.02, momentum=0.9, weight_decay=0.01, flavor=M
    ),
    "mindspore__Momentum__groups_order_params": grouped(
        uniopt.SGD,
        lambda ps: [*mindspore_groups(ps), {"order_params": list(reversed(NAMES))}],
        lr=0.02,
        momentum=0.9,
        weight_decay=0.01,
        flavor=M,
    ),
    "mindspore__RMSProp__momentum0.5_lr_list": opt(
        uniopt.RMSprop, lr=mindspore_piecewise([0.01, 0.006, 0.003, 0.001]), momentum=0.5, flavor=M
    ),
    "mindspore__RMSProp__default": opt(uniopt.RMSprop, lr=0.01, flavor=M),
    "mindspore__RMSProp__centered": opt(uniopt.RMSprop, lr=0.01, centered=True, flavor=M),
    "mindspore__RMSProp__centered_momentum0.5_eps1e-3": opt(
        uniopt.RMSprop, lr=0.01, centered=True, momentum=0.5, eps=1e-3, flavor=M
    ),
    "mindspore__Adagrad__lr0.05": opt(uniopt.Adagrad, lr=0.05, flavor=M),
    "mindspore__Adagrad__lr0.05_wd0.1": opt(uniopt.Adagrad, lr=0.05, weight_decay=0.1, flavor=M),
    "mindspore__SGD__momentum0.9_dampening0.1": opt(
        uniopt.SGD, lr=0.05, momentum=0.9, dampening=0.1, flavor=M
    ),
    "mindspore__SGD__nesterov_wd0.1": opt(
        uniopt.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, flavor=M
    ),
}
NOT_REPRODUCED = {
    "mindspore__Momentum__nesterov": "MindSpore's CPU kernel ignores use_nesterov (a bug: the "
    "recording equals plain momentum); uniopt does not copy it",
    "mindspore__Adam__nesterov": "MindSpore's Nesterov Adam (NAdam-like) has no uniopt option yet",
    "mindspore__RMSProp__momentum0.5_eps1e-3": "MindSpore's non-centered CPU kernel puts eps "
    "inside or outside the root depending on SIMD lane (visible only with a large eps)",
}


def manifest() -> dict[str, dict[str, Any]]:
    """Recording stem -> its manifest entry (empty without a source checkout)."""
    path = RECORDED / "manifest.json"
    if not path.exists():
        return {}
    return {r["file"][: -len(".npz")]: r for r in json.loads(path.read_text())["recordings"]}


def _current(opt: Any) -> list[Any]:
    current = opt.params
    if not isinstance(current, dict):  # param groups
        current = {n: x for group in current for n, x in group["params"].items()}
    return [current[n] for n in NAMES]


def _gradients(problem: Any, values: list[np.ndarray], t: int, dtype: str) -> list[np.ndarray]:
    """As the recorder computed them: in the recording's dtype."""
    dt = np.dtype(dtype)
    out = []
    for v, a, c, n in zip(values, problem.curvature, problem.center, problem.noise[t - 1]):
        if dt == np.float64:
            out.append(a * (v - c) + n)
        else:
            out.append(a.astype(dt) * (v.astype(dt) - c.astype(dt)) + n.astype(dt))
    return out


def replay(stem: str, backend: str) -> float:
    """Run the recipe of recording ``stem`` on ``backend``; return its largest relative
    deviation (over the recorded checkpoints) divided by its tolerance."""
    record = manifest()[stem]
    dtype = record["dtype"]
    tolerance = LOOSER.get(stem, TOLERANCE[record.get("compute_dtype") or dtype])
    problem = make_problem(record["steps"], seed=record["problem"]["seed"])
    data = np.load(RECORDED / record["file"])
    to, host = BACKENDS[backend].to_array, BACKENDS[backend].to_numpy
    multiplier = record.get("grad_multiplier") or 1.0
    params = {n: to(x.astype(dtype), dtype) for n, x in zip(NAMES, problem.init)}
    if backend == "torch":
        import torch

        params = {n: torch.nn.Parameter(p) for n, p in params.items()}
    opt = RECIPES[stem](params)
    worst = 0.0
    for t in range(1, record["steps"] + 1):
        values = [host(p).astype(dtype) for p in _current(opt)]
        grads = [multiplier * g for g in _gradients(problem, values, t, dtype)]
        opt.step({n: to(g, dtype) for n, g in zip(NAMES, grads)})
        if t in record["checkpoints"]:
            got = [host(p) for p in _current(opt)]
            want = [data[f"step{t}__{n}"].astype(np.float64) for n in NAMES]
            scale = max(float(np.max(np.abs(w))) for w in want)
            diff = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
            worst = max(worst, diff / scale / tolerance)
    return worst


KERAS_CASES = [
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
    ("Nadam", dict(learning_rate=0.05), uniopt.NAdam, dict(lr=0.05)),
    (
        "Nadam",
        dict(learning_rate=0.05, beta_1=0.8, epsilon=1e-3, weight_decay=0.1),
        uniopt.NAdam,
        dict(lr=0.05, betas=(0.8, 0.999), eps=1e-3, weight_decay=0.1),
    ),
    ("Adamax", dict(learning_rate=0.05), uniopt.Adamax, dict(lr=0.05)),
    (
        "Adamax",
        dict(learning_rate=0.05, epsilon=1e-3, weight_decay=0.1),
        uniopt.AdamaxW,
        dict(lr=0.05, eps=1e-3, weight_decay=0.1),
    ),
    ("Lamb", dict(learning_rate=0.05), uniopt.LAMB, dict(lr=0.05)),
]


def keras_available() -> bool:
    """Keras 3 importable on the jax backend in this process."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        return False
    return keras.backend.backend() == "jax"


def run_keras(index: int, steps: int = 100) -> float:
    """Keras's optimizer and ``flavor="keras"`` side by side, float32; returns the
    relative deviation divided by the float32 tolerance."""
    import keras

    name, keras_kwargs, cls, kwargs = KERAS_CASES[index]
    problem = make_problem(steps)
    variables = [keras.Variable(x.astype(np.float32)) for x in problem.init]
    theirs = getattr(keras.optimizers, name)(**keras_kwargs)
    theirs.build(variables)
    ours = cls([x.astype(np.float32) for x in problem.init], flavor="keras", **kwargs)

    def grads(values, noise):
        return [
            (a * (np.asarray(v, np.float64) - c) + n).astype(np.float32)
            for v, a, c, n in zip(values, problem.curvature, problem.center, noise)
        ]

    for noise in problem.noise:
        g = grads([v.numpy() for v in variables], noise)
        theirs.apply_gradients(zip([keras.ops.convert_to_tensor(x) for x in g], variables))
        ours.step(grads(ours.params, noise))
    want = [np.asarray(v.numpy(), np.float64) for v in variables]
    got = [np.asarray(p, np.float64) for p in ours.params]
    scale = max(float(np.max(np.abs(w))) for w in want)
    diff = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
    return diff / scale / TOLERANCE["float32"]
