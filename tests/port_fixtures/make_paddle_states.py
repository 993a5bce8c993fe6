#!/usr/bin/env python
"""Regenerate ``paddle_states.json``: real PaddlePaddle optimizer ``state_dict()``s taken
mid-run, with the run's continuation, the oracle for ``uniopt.port.from_paddle``.

Usage (from the repository root; the same venv as ``tests/recorded/generate.py``)::

    .venv-recorders/bin/python tests/port_fixtures/make_paddle_states.py

Each case: parameters named as in ``uniopt.parity.problem`` (``paddle.create_parameter``
with ``name=...``), float64, CPU dygraph. At step t (1-based) the gradient of parameter
i is ``a_i * (p_i - c_i) + n_t[i]`` computed with NumPy from Paddle's current values.
After ``SPLIT`` steps we record ``opt.state_dict()`` exactly as Paddle returns it (the
real key names, e.g. ``fc.weight_moment1_0``; tensors as nested float lists) and the
parameters; then we run ``STEPS - SPLIT`` more steps and record the parameters again.
Floats are written with ``repr`` precision, so the JSON round-trips bit-exactly.
Versions used: paddlepaddle 3.3.1, numpy 2.4.6 (CPU, Python 3.11).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from uniopt.parity.problem import NAMES, make_problem  # noqa: E402

SPLIT, STEPS = 6, 12


def cases():
    import paddle

    O = paddle.optimizer  # noqa: N806
    lars = paddle.incubate.optimizer.LarsMomentumOptimizer
    return [
        # (label, paddle class, kwargs given to from_paddle, uniopt algorithm, builder)
        (
            "adamw",
            "AdamW",
            {"learning_rate": 0.05, "weight_decay": 0.1},
            "adamw",
            lambda ps: O.AdamW(0.05, weight_decay=0.1, parameters=ps),
        ),
        (
            "adamw-amsgrad",
            "AdamW",
            {"learning_rate": 0.05, "weight_decay": 0.1, "amsgrad": True},
            "adamw",
            lambda ps: O.AdamW(0.05, weight_decay=0.1, amsgrad=True, parameters=ps),
        ),
        (
            "adam-l2",
            "Adam",
            {"learning_rate": 0.05, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.1},
            "adam",
            lambda ps: O.Adam(0.05, beta1=0.8, beta2=0.99, weight_decay=0.1, parameters=ps),
        ),
        (
            "adamw-betas",
            "AdamW",
            {
                "learning_rate": 0.05,
                "beta1": 0.85,
                "beta2": 0.995,
                "epsilon": 1e-6,
                "weight_decay": 0.3,
            },
            "adamw",
            lambda ps: O.AdamW(
                0.05, beta1=0.85, beta2=0.995, epsilon=1e-6, weight_decay=0.3, parameters=ps
            ),
        ),
        (
            "momentum-l2",
            "Momentum",
            {"learning_rate": 0.05, "momentum": 0.7, "weight_decay": 0.3},
            "momentum",
            lambda ps: O.Momentum(0.05, momentum=0.7, weight_decay=0.3, parameters=ps),
        ),
        (
            "rmsprop-momentum",
            "RMSProp",
            {"learning_rate": 0.01, "rho": 0.93, "epsilon": 1e-4, "momentum": 0.3},
            "rmsprop",
            lambda ps: O.RMSProp(0.01, rho=0.93, epsilon=1e-4, momentum=0.3, parameters=ps),
        ),
        (
            "momentum-nesterov",
            "Momentum",
            {"learning_rate": 0.05, "momentum": 0.9, "use_nesterov": True},
            "momentum",
            lambda ps: O.Momentum(0.05, momentum=0.9, use_nesterov=True, parameters=ps),
        ),
        (
            "momentum-scheduler",
            "Momentum",
            {"momentum": 0.9},
            "momentum",
            lambda ps: O.Momentum(O.lr.StepDecay(0.05, step_size=100), momentum=0.9, parameters=ps),
        ),
        (
            "lars",
            "LarsMomentumOptimizer",
            {"learning_rate": 5.0, "momentum": 0.9},
            "lars_momentum",
            lambda ps: lars(5.0, momentum=0.9, parameter_list=ps),
        ),
        (
            "rmsprop-centered",
            "RMSProp",
            {"learning_rate": 0.01, "rho": 0.9, "epsilon": 1e-3, "momentum": 0.5, "centered": True},
            "rmsprop",
            lambda ps: O.RMSProp(
                0.01, rho=0.9, epsilon=1e-3, momentum=0.5, centered=True, parameters=ps
            ),
        ),
        (
            "adagrad",
            "Adagrad",
            {"learning_rate": 0.1, "initial_accumulator_value": 0.1},
            "adagrad",
            lambda ps: O.Adagrad(0.1, initial_accumulator_value=0.1, parameters=ps),
        ),
        ("lamb", "Lamb", {"learning_rate": 0.02}, "lamb", lambda ps: O.Lamb(0.02, parameters=ps)),
    ]


def plain(value):
    if hasattr(value, "numpy"):
        array = np.asarray(value.numpy(), dtype=np.float64)
        return {"shape": list(array.shape), "values": array.reshape(-1).tolist()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def run(label, cls, kwargs, algorithm, build):
    import paddle

    prob = make_problem(STEPS, seed=1)
    with paddle.utils.unique_name.guard():
        params = []
        for name, init in zip(NAMES, prob.init):
            p = paddle.create_parameter(
                shape=list(init.shape),
                dtype="float64",
                name=name,
                default_initializer=paddle.nn.initializer.Constant(0.0),
            )
            p.set_value(init)
            params.append(p)
        opt = build(params)
        record = {"label": label, "class": cls, "kwargs": kwargs, "algorithm": algorithm}
        for t in range(1, STEPS + 1):
            for i, p in enumerate(params):
                g = prob.curvature[i] * (p.numpy() - prob.center[i]) + prob.noise[t - 1][i]
                p.grad = paddle.to_tensor(g)
            opt.step()
            opt.clear_grad()
            if t == SPLIT:
                record["state_dict"] = plain(opt.state_dict())
                record["params_split"] = {n: p.numpy().tolist() for n, p in zip(NAMES, params)}
        record["params_end"] = {n: p.numpy().tolist() for n, p in zip(NAMES, params)}
    return record


def main() -> None:
    import paddle

    paddle.set_device("cpu")
    out = {
        "paddle": paddle.__version__,
        "split": SPLIT,
        "steps": STEPS,
        "seed": 1,
        "cases": [run(*case) for case in cases()],
    }
    path = Path(__file__).with_name("paddle_states.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
