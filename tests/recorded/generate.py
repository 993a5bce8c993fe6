#!/usr/bin/env python
# ruff: noqa: E501  (long literal kwargs/notes strings)
"""Regenerate the recorded PaddlePaddle / MindSpore optimizer trajectories.

Usage (from the repository root)::

    python3 -m venv .venv-recorders
    .venv-recorders/bin/pip install paddlepaddle mindspore array-api-compat numpy
    .venv-recorders/bin/python tests/recorded/generate.py --framework all   # or paddle | mindspore

Versions used for the files in this folder (one venv, ``.venv-recorders``, CPU only,
Python 3.11, x86_64): paddlepaddle 3.3.1, mindspore 2.10.0, numpy 2.4.6.  Both
frameworks install side by side with numpy 2.x, so one venv is enough.  The
script only needs numpy from the project (``uniopt.parity.problem``); it puts
the repository root on ``sys.path`` itself.

Every recording solves the problem of ``uniopt.parity.problem.make_problem(200,
seed=0)``: at step t (1-based) the gradient of parameter i is
``a_i * (p_i - c_i) + n_t[i]``, computed with NumPy *from the framework's
current parameter values* and in the framework's dtype (float32 recordings
compute ``a32 * (p32 - c32) + n32`` in float32), then handed to the framework:

* Paddle (dygraph, CPU): parameters made by ``paddle.create_parameter`` with the
  problem's names; each step sets ``param.grad = paddle.to_tensor(g)`` and calls
  ``optimizer.step(); optimizer.clear_grad()`` (and ``scheduler.step()`` after
  it when an LRScheduler is used).
* MindSpore (PyNative, CPU): ``Parameter(Tensor(init), name=...)``; each step
  calls ``opt(grads)`` with the gradients in ``opt.parameters`` order (group
  order when parameter groups are used).  Recordings with a ``grad_multiplier``
  multiply the gradients by it first (loss-scale experiments).  One CPU kernel
  thread (``ms.device_context.cpu.op_tuning.threads_num(1)``): with more, the
  auto-tuned task split makes the RMSProp kernel non-reproducible.
* Each Paddle recording runs under ``paddle.utils.unique_name.guard()`` (dygraph
  parameter names must be unique per name space).

Outputs, next to this file: ``{framework}__{optimizer}__{label}.npz`` with
``step{k}__{param}`` (parameters after step k for k in CHECKPOINTS),
``state__{param}__{slot}`` / ``state__global__{slot}`` (optimizer state after the
last step, framework's own slot names; the full framework names are in the
manifest), ``lr`` (learning rate used at each step, where it varies), and
``manifest.json`` (kwargs, dtype, groups, loss scale, failures...).  Output is
deterministic: the npz files are written with fixed zip timestamps, so two runs
give byte-identical files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from uniopt.parity.problem import NAMES, make_problem  # noqa: E402

STEPS = 200
SEED = 0
CHECKPOINTS = (1, 2, 3, 10, 50, 100, 200)
#: conv.weight with shape[1] == 16: MindSpore only centralizes when shape[1] % 16 == 0
SHAPES_GC16 = ((4, 3), (7,), (2, 16, 2), (1,), (33,))

PIECEWISE_BOUNDARIES = [2, 4, 6, 8]


# --------------------------------------------------------------------------- utils
def problem_for(shapes=None):
    if shapes is None:
        return make_problem(STEPS, seed=SEED)
    return make_problem(STEPS, seed=SEED, shapes=shapes)


def gradients(values, prob, t, dtype):
    """Gradient of every parameter at step t (1-based), in ``dtype``."""
    dt = np.dtype(dtype)
    out = []
    for v, a, c, n in zip(values, prob.curvature, prob.center, prob.noise[t - 1]):
        if dt == np.float64:
            out.append(a * (np.asarray(v, np.float64) - c) + n)
        elif dt == np.float32:
            out.append(a.astype(dt) * (np.asarray(v).astype(dt) - c.astype(dt)) + n.astype(dt))
        else:  # half types: compute in float64 from the stored value, round once
            out.append((a * (np.asarray(v).astype(np.float64) - c) + n).astype(dt))
    return out


def save_npz(path: Path, arrays: dict) -> None:
    """np.savez-compatible, but with fixed timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def first_line(exc: BaseException) -> str:
    lines = [
        ln.strip() for ln in str(exc).splitlines() if ln.strip() and not set(ln.strip()) <= {"-"}
    ]
    # MindSpore puts the useful message after a "Kernel select failed" banner
    for ln in lines:
        if ln.startswith(("Unsupported op", "For ", "The kernel with key", "'lr_ratio'")):
            return f"{type(exc).__name__}: {ln}"
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def spec(framework, optimizer, label, cls, kwargs, build, dtype="float64", **extra):
    d = dict(
        framework=framework,
        optimizer=optimizer,
        label=label,
        cls=cls,
        kwargs=kwargs,
        build=build,
        dtype=dtype,
    )
    d.update(extra)
    return d


# =========================================================================== Paddle
def paddle_specs():
    import paddle

    O = paddle.optimizer

    def pw(values):
        return lambda: O.lr.PiecewiseDecay(boundaries=PIECEWISE_BOUNDARIES, values=list(values))

    S = []

    def add(opt, label, cls, kwargs, make, dtype="float64", sched=None, **extra):
        S.append(spec("paddle", opt, label, cls, kwargs, make, dtype=dtype, sched=sched, **extra))

    adam_defaults = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "lazy_mode": False}
    # ---- Adam
    add(
        "Adam",
        "default",
        "paddle.optimizer.Adam",
        {"learning_rate": 0.05, **adam_defaults},
        lambda ps, lr: O.Adam(lr, parameters=ps),
        lr=0.05,
    )
    add(
        "Adam",
        "eps1e-3",
        "paddle.optimizer.Adam",
        {"learning_rate": 0.05, **adam_defaults, "epsilon": 1e-3},
        lambda ps, lr: O.Adam(lr, epsilon=1e-3, parameters=ps),
        lr=0.05,
    )
    add(
        "Adam",
        "l2_0.1",
        "paddle.optimizer.Adam",
        {"learning_rate": 0.05, **adam_defaults, "weight_decay": 0.1},
        lambda ps, lr: O.Adam(lr, weight_decay=0.1, parameters=ps),
        lr=0.05,
        notes="float weight_decay = L2Decay(0.1): coeff*p added to the gradient before the kernel",
    )
    add(
        "Adam",
        "l2_0.1_clip_global0.5",
        "paddle.optimizer.Adam",
        {
            "learning_rate": 0.05,
            **adam_defaults,
            "weight_decay": 0.1,
            "grad_clip": "paddle.nn.ClipGradByGlobalNorm(clip_norm=0.5)",
        },
        lambda ps, lr: O.Adam(
            lr, weight_decay=0.1, grad_clip=paddle.nn.ClipGradByGlobalNorm(0.5), parameters=ps
        ),
        lr=0.05,
        notes="tests the order of clipping vs L2 regularization",
    )
    # ---- AdamW
    aw = {
        "learning_rate": 0.05,
        **adam_defaults,
        "weight_decay": 0.01,
        "amsgrad": False,
        "multi_precision": False,
    }
    add(
        "AdamW",
        "default",
        "paddle.optimizer.AdamW",
        dict(aw),
        lambda ps, lr: O.AdamW(lr, parameters=ps),
        lr=0.05,
    )
    add(
        "AdamW",
        "wd0.1",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1},
        lambda ps, lr: O.AdamW(lr, weight_decay=0.1, parameters=ps),
        lr=0.05,
    )
    add(
        "AdamW",
        "wd0.1_eps1e-3",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "epsilon": 1e-3},
        lambda ps, lr: O.AdamW(lr, weight_decay=0.1, epsilon=1e-3, parameters=ps),
        lr=0.05,
    )
    add(
        "AdamW",
        "wd0.1_apply_decay_fun",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "apply_decay_param_fun": "lambda name: 'bn' not in name"},
        lambda ps, lr: O.AdamW(
            lr, weight_decay=0.1, apply_decay_param_fun=lambda n: "bn" not in n, parameters=ps
        ),
        lr=0.05,
        notes="Paddle calls apply_decay_param_fun(param.name); bn.gamma/bn.beta get no decay",
    )
    add(
        "AdamW",
        "wd0.1_clip_global0.5",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "grad_clip": "paddle.nn.ClipGradByGlobalNorm(clip_norm=0.5)"},
        lambda ps, lr: O.AdamW(
            lr, weight_decay=0.1, grad_clip=paddle.nn.ClipGradByGlobalNorm(0.5), parameters=ps
        ),
        lr=0.05,
    )
    add(
        "AdamW",
        "wd0.1_clip_norm0.1",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "grad_clip": "paddle.nn.ClipGradByNorm(clip_norm=0.1)"},
        lambda ps, lr: O.AdamW(
            lr, weight_decay=0.1, grad_clip=paddle.nn.ClipGradByNorm(0.1), parameters=ps
        ),
        lr=0.05,
        dtype="float32",
        notes="float32: the clip_by_norm CPU kernel is float32-only (see the float64 failure)",
    )
    add(
        "AdamW",
        "wd0.1_clip_norm0.1_float64",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "grad_clip": "paddle.nn.ClipGradByNorm(clip_norm=0.1)"},
        lambda ps, lr: O.AdamW(
            lr, weight_decay=0.1, grad_clip=paddle.nn.ClipGradByNorm(0.1), parameters=ps
        ),
        lr=0.05,
    )
    add(
        "AdamW",
        "wd0.1_clip_value0.05",
        "paddle.optimizer.AdamW",
        {
            **aw,
            "weight_decay": 0.1,
            "grad_clip": "paddle.nn.ClipGradByValue(max=0.05)  (min=-0.05)",
        },
        lambda ps, lr: O.AdamW(
            lr, weight_decay=0.1, grad_clip=paddle.nn.ClipGradByValue(0.05), parameters=ps
        ),
        lr=0.05,
    )
    add(
        "AdamW",
        "wd0.1_amsgrad",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "amsgrad": True},
        lambda ps, lr: O.AdamW(lr, weight_decay=0.1, amsgrad=True, parameters=ps),
        lr=0.05,
    )
    add(
        "AdamW",
        "wd0.1_lazy",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "lazy_mode": True},
        lambda ps, lr: O.AdamW(lr, weight_decay=0.1, lazy_mode=True, parameters=ps),
        lr=0.05,
        notes="lazy_mode only changes SelectedRows (sparse) gradients; dense here",
    )
    add(
        "AdamW",
        "wd0.1_piecewise",
        "paddle.optimizer.AdamW",
        {
            **aw,
            "weight_decay": 0.1,
            "learning_rate": "PiecewiseDecay(boundaries=[2, 4, 6, 8], values=[0.05, 0.04, 0.03, 0.02, 0.01])",
        },
        lambda ps, lr: O.AdamW(lr, weight_decay=0.1, parameters=ps),
        sched=pw([0.05, 0.04, 0.03, 0.02, 0.01]),
    )
    add(
        "AdamW",
        "wd0.1_lr_ratio",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "lr_ratio": "lambda p: 0.5 if 'bias' in p.name else 1.0"},
        lambda ps, lr: O.AdamW(
            lr, weight_decay=0.1, lr_ratio=lambda p: 0.5 if "bias" in p.name else 1.0, parameters=ps
        ),
        lr=0.05,
    )
    add(
        "AdamW",
        "wd0.1_multi_precision_fp16",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "multi_precision": True},
        lambda ps, lr: O.AdamW(lr, weight_decay=0.1, multi_precision=True, parameters=ps),
        lr=0.05,
        dtype="float16",
    )
    add(
        "AdamW",
        "wd0.1_multi_precision_bf16",
        "paddle.optimizer.AdamW",
        {**aw, "weight_decay": 0.1, "multi_precision": True},
        lambda ps, lr: O.AdamW(lr, weight_decay=0.1, multi_precision=True, parameters=ps),
        lr=0.05,
        dtype="bfloat16",
    )
    # ---- Momentum
    mo = {
        "learning_rate": 0.05,
        "momentum": 0.9,
        "use_nesterov": False,
        "weight_decay": None,
        "rescale_grad": 1.0,
    }
    add(
        "Momentum",
        "default",
        "paddle.optimizer.Momentum",
        dict(mo),
        lambda ps, lr: O.Momentum(lr, momentum=0.9, parameters=ps),
        lr=0.05,
    )
    add(
        "Momentum",
        "nesterov",
        "paddle.optimizer.Momentum",
        {**mo, "use_nesterov": True},
        lambda ps, lr: O.Momentum(lr, momentum=0.9, use_nesterov=True, parameters=ps),
        lr=0.05,
    )
    add(
        "Momentum",
        "l2_0.1",
        "paddle.optimizer.Momentum",
        {**mo, "weight_decay": 0.1},
        lambda ps, lr: O.Momentum(lr, momentum=0.9, weight_decay=0.1, parameters=ps),
        lr=0.05,
        notes="float weight_decay -> regularization_method='l2_decay' inside the momentum kernel",
    )
    add(
        "Momentum",
        "nesterov_l2_0.1",
        "paddle.optimizer.Momentum",
        {**mo, "use_nesterov": True, "weight_decay": 0.1},
        lambda ps, lr: O.Momentum(
            lr, momentum=0.9, use_nesterov=True, weight_decay=0.1, parameters=ps
        ),
        lr=0.05,
    )
    add(
        "Momentum",
        "piecewise",
        "paddle.optimizer.Momentum",
        {
            **mo,
            "learning_rate": "PiecewiseDecay(boundaries=[2, 4, 6, 8], values=[0.05, 0.04, 0.03, 0.02, 0.01])",
        },
        lambda ps, lr: O.Momentum(lr, momentum=0.9, parameters=ps),
        sched=pw([0.05, 0.04, 0.03, 0.02, 0.01]),
        notes="distinguishes lr outside the velocity (p -= lr*v) from lr inside it",
    )

    def pgroups(ps):
        by = {p.name: p for p in ps}
        return [
            {"params": [by["fc.weight"], by["fc.bias"]], "learning_rate": 0.5, "weight_decay": 0.1},
            {"params": [by[n] for n in ("conv.weight", "bn.gamma", "bn.beta")]},
        ]

    add(
        "Momentum",
        "groups",
        "paddle.optimizer.Momentum",
        {**mo, "parameters": "groups (see 'groups')"},
        lambda ps, lr: O.Momentum(lr, momentum=0.9, parameters=pgroups(ps)),
        lr=0.05,
        groups=[
            {"params": ["fc.weight", "fc.bias"], "learning_rate": 0.5, "weight_decay": 0.1},
            {"params": ["conv.weight", "bn.gamma", "bn.beta"]},
        ],
        notes="a group's learning_rate is a SCALE of the optimizer's lr (0.5 * 0.05 here); the group "
        "weight_decay is L2 for that group only",
    )
    # ---- LarsMomentum
    la = {
        "learning_rate": 5.0,
        "momentum": 0.9,
        "lars_coeff": 0.001,
        "lars_weight_decay": 0.0005,
        "epsilon": 0,
        "exclude_from_weight_decay": None,
        "rescale_grad": 1.0,
    }
    add(
        "LarsMomentum",
        "default",
        "paddle.incubate.optimizer.LarsMomentumOptimizer",
        dict(la),
        lambda ps, lr: paddle.incubate.optimizer.LarsMomentumOptimizer(
            5.0, momentum=0.9, parameter_list=ps
        ),
        lr=5.0,
    )
    add(
        "LarsMomentum",
        "lr0.5_coeff0.05_wd0.1_exclude_bn_eps0.1",
        "paddle.incubate.optimizer.LarsMomentumOptimizer",
        {
            **la,
            "learning_rate": 0.5,
            "lars_coeff": 0.05,
            "lars_weight_decay": 0.1,
            "exclude_from_weight_decay": ["bn"],
            "epsilon": 0.1,
        },
        lambda ps, lr: paddle.incubate.optimizer.LarsMomentumOptimizer(
            0.5,
            momentum=0.9,
            lars_coeff=0.05,
            lars_weight_decay=0.1,
            exclude_from_weight_decay=["bn"],
            epsilon=0.1,
            parameter_list=ps,
        ),
        lr=0.5,
        notes="exclude_from_weight_decay matches substrings of param.name; excluded params (wd = 0) get "
        "NO LARS scaling (plain momentum with the global lr), hence the small lr",
    )
    # ---- RMSProp
    rm = {
        "learning_rate": 0.01,
        "rho": 0.95,
        "epsilon": 1e-6,
        "momentum": 0.0,
        "centered": False,
        "weight_decay": None,
    }
    add(
        "RMSProp",
        "default",
        "paddle.optimizer.RMSProp",
        dict(rm),
        lambda ps, lr: O.RMSProp(lr, parameters=ps),
        lr=0.01,
    )
    add(
        "RMSProp",
        "rho0.9_eps1e-3_momentum0.5",
        "paddle.optimizer.RMSProp",
        {**rm, "rho": 0.9, "epsilon": 1e-3, "momentum": 0.5},
        lambda ps, lr: O.RMSProp(lr, rho=0.9, epsilon=1e-3, momentum=0.5, parameters=ps),
        lr=0.01,
    )
    add(
        "RMSProp",
        "centered_rho0.9_eps1e-3_momentum0.5",
        "paddle.optimizer.RMSProp",
        {**rm, "rho": 0.9, "epsilon": 1e-3, "momentum": 0.5, "centered": True},
        lambda ps, lr: O.RMSProp(
            lr, rho=0.9, epsilon=1e-3, momentum=0.5, centered=True, parameters=ps
        ),
        lr=0.01,
    )
    add(
        "RMSProp",
        "momentum0.5_piecewise",
        "paddle.optimizer.RMSProp",
        {
            **rm,
            "momentum": 0.5,
            "learning_rate": "PiecewiseDecay(boundaries=[2, 4, 6, 8], values=[0.01, 0.008, 0.006, 0.004, 0.002])",
        },
        lambda ps, lr: O.RMSProp(lr, momentum=0.5, parameters=ps),
        sched=pw([0.01, 0.008, 0.006, 0.004, 0.002]),
        notes="distinguishes lr inside the momentum buffer from lr outside it",
    )
    # ---- Adagrad
    ad = {
        "learning_rate": 0.1,
        "epsilon": 1e-6,
        "initial_accumulator_value": 0.0,
        "weight_decay": None,
    }
    add(
        "Adagrad",
        "default",
        "paddle.optimizer.Adagrad",
        dict(ad),
        lambda ps, lr: O.Adagrad(lr, parameters=ps),
        lr=0.1,
    )
    add(
        "Adagrad",
        "eps1e-3_init0.1",
        "paddle.optimizer.Adagrad",
        {**ad, "epsilon": 1e-3, "initial_accumulator_value": 0.1},
        lambda ps, lr: O.Adagrad(lr, epsilon=1e-3, initial_accumulator_value=0.1, parameters=ps),
        lr=0.1,
    )
    # ---- Lamb
    lb = {
        "learning_rate": 0.02,
        "lamb_weight_decay": 0.01,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-6,
        "exclude_from_weight_decay_fn": None,
        "always_adapt": False,
    }
    add(
        "Lamb",
        "default",
        "paddle.optimizer.Lamb",
        dict(lb),
        lambda ps, lr: O.Lamb(lr, parameters=ps),
        lr=0.02,
    )
    add(
        "Lamb",
        "wd0.1_exclude_bn_eps1e-3",
        "paddle.optimizer.Lamb",
        {
            **lb,
            "lamb_weight_decay": 0.1,
            "epsilon": 1e-3,
            "exclude_from_weight_decay_fn": "lambda p: 'bn' in p.name",
        },
        lambda ps, lr: O.Lamb(
            lr,
            lamb_weight_decay=0.1,
            epsilon=1e-3,
            exclude_from_weight_decay_fn=lambda p: "bn" in p.name,
            parameters=ps,
        ),
        lr=0.02,
        notes="Paddle calls exclude_from_weight_decay_fn(param) with the Tensor, not its name",
    )
    add(
        "Lamb",
        "wd0",
        "paddle.optimizer.Lamb",
        {**lb, "lamb_weight_decay": 0.0},
        lambda ps, lr: O.Lamb(lr, lamb_weight_decay=0.0, parameters=ps),
        lr=0.02,
    )
    add(
        "Lamb",
        "wd0_always_adapt",
        "paddle.optimizer.Lamb",
        {**lb, "lamb_weight_decay": 0.0, "always_adapt": True},
        lambda ps, lr: O.Lamb(lr, lamb_weight_decay=0.0, always_adapt=True, parameters=ps),
        lr=0.02,
    )
    # ---- LookAhead
    add(
        "LookAhead",
        "sgd0.1_alpha0.2_k5",
        "paddle.incubate.LookAhead",
        {"inner_optimizer": "paddle.optimizer.SGD(learning_rate=0.1)", "alpha": 0.2, "k": 5},
        lambda ps, lr: paddle.incubate.LookAhead(O.SGD(0.1, parameters=ps), alpha=0.2, k=5),
        lr=0.1,
    )
    add(
        "LookAhead",
        "adam0.05_alpha0.5_k3",
        "paddle.incubate.LookAhead",
        {
            "inner_optimizer": "paddle.optimizer.Adam(learning_rate=0.05) (defaults otherwise)",
            "alpha": 0.5,
            "k": 3,
        },
        lambda ps, lr: paddle.incubate.LookAhead(O.Adam(0.05, parameters=ps), alpha=0.5, k=3),
        lr=0.05,
    )
    # ---- SGD
    add(
        "SGD",
        "piecewise",
        "paddle.optimizer.SGD",
        {
            "learning_rate": "PiecewiseDecay(boundaries=[2, 4, 6, 8], values=[0.1, 0.08, 0.06, 0.04, 0.02])",
            "weight_decay": None,
        },
        lambda ps, lr: O.SGD(lr, parameters=ps),
        sched=pw([0.1, 0.08, 0.06, 0.04, 0.02]),
        notes="scheduler.step() is called after every optimizer.step()",
    )
    add(
        "SGD",
        "l2_0.1",
        "paddle.optimizer.SGD",
        {"learning_rate": 0.05, "weight_decay": 0.1},
        lambda ps, lr: O.SGD(lr, weight_decay=0.1, parameters=ps),
        lr=0.05,
    )
    return S


def paddle_state(opt, param_names):
    """Collect accumulators (and master weights, LookAhead slow weights)."""
    import paddle

    arrays, names = {}, {}
    opts = [opt]
    if isinstance(opt, paddle.incubate.LookAhead):
        opts.append(opt.inner_optimizer)
    for o in opts:
        for slot, per in o._accumulators.items():
            for pname, t in per.items():
                key = f"state__{pname}__{slot}"
                arrays[key] = np.asarray(t.numpy())
                names[key] = t.name
        for pname, t in getattr(o, "_master_weights", {}).items():
            key = f"state__{pname}__master_weight"
            arrays[key] = np.asarray(t.numpy())
            names[key] = t.name
    return arrays, names


def run_paddle(sp):
    import paddle

    paddle.set_device("cpu")
    prob = problem_for(sp.get("shapes"))
    dt = sp["dtype"]
    with paddle.utils.unique_name.guard():
        params = []
        for name, init in zip(NAMES, prob.init):
            p = paddle.create_parameter(
                shape=list(init.shape),
                dtype=dt,
                name=name,
                default_initializer=paddle.nn.initializer.Constant(0.0),
            )
            if dt in ("float16", "bfloat16"):
                p.set_value(paddle.to_tensor(init.astype(np.float32)).astype(dt))
            else:
                p.set_value(init.astype(dt))
                assert np.array_equal(p.numpy(), init.astype(dt))
            params.append(p)
        sched = sp["sched"]() if sp.get("sched") else None
        opt = sp["build"](params, sched if sched is not None else sp.get("lr"))
        out, lrs = {}, []
        for t in range(1, STEPS + 1):
            vals = [p.astype("float32").numpy() if dt == "bfloat16" else p.numpy() for p in params]
            gs = gradients(vals, prob, t, np.float32 if dt == "bfloat16" else dt)
            for p, g in zip(params, gs):
                gt = paddle.to_tensor(g)
                p.grad = gt.astype(dt) if dt == "bfloat16" else gt
            if sched is not None:
                lrs.append(float(opt.get_lr()))
            opt.step()
            opt.clear_grad()
            if sched is not None:
                sched.step()
            if t in CHECKPOINTS:
                for name, p in zip(NAMES, params):
                    out[f"step{t}__{name}"] = p.numpy().copy()
        st, stn = paddle_state(opt, NAMES)
        out.update(st)
        if lrs:
            out["lr"] = np.asarray(lrs, np.float64)
    return out, stn


# ======================================================================== MindSpore
def mindspore_specs():
    import mindspore as ms
    from mindspore import nn

    S = []

    def add(opt, label, cls, kwargs, make, dtype="float64", **extra):
        S.append(spec("mindspore", opt, label, cls, kwargs, make, dtype=dtype, **extra))

    adam = {
        "learning_rate": 0.05,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "use_locking": False,
        "use_nesterov": False,
        "weight_decay": 0.0,
        "loss_scale": 1.0,
        "use_amsgrad": False,
    }
    f64_note = "the P.Adam CPU kernel accepts float16/float32 only"
    F64_NOTE = (
        "float32: with float64 Parameters this optimizer runs but computes in float32 "
        "(see mindspore__Momentum__default_float64params)"
    )
    add(
        "Adam",
        "default",
        "mindspore.nn.Adam",
        dict(adam),
        lambda ps: nn.Adam(ps, learning_rate=0.05),
        dtype="float32",
        notes=f64_note,
    )
    add(
        "Adam",
        "eps1e-3",
        "mindspore.nn.Adam",
        {**adam, "eps": 1e-3},
        lambda ps: nn.Adam(ps, learning_rate=0.05, eps=1e-3),
        dtype="float32",
        notes=f64_note,
    )
    add(
        "Adam",
        "wd0.1",
        "mindspore.nn.Adam",
        {**adam, "weight_decay": 0.1},
        lambda ps: nn.Adam(ps, learning_rate=0.05, weight_decay=0.1),
        dtype="float32",
        notes="no groups: decay skipped for names containing 'beta'/'gamma' (bn.gamma, bn.beta)",
    )
    add(
        "Adam",
        "nesterov",
        "mindspore.nn.Adam",
        {**adam, "use_nesterov": True},
        lambda ps: nn.Adam(ps, learning_rate=0.05, use_nesterov=True),
        dtype="float32",
        notes=f64_note,
    )
    add(
        "Adam",
        "amsgrad",
        "mindspore.nn.Adam",
        {**adam, "use_amsgrad": True},
        lambda ps: nn.Adam(ps, learning_rate=0.05, use_amsgrad=True),
        dtype="float64",
        notes="ApplyAdamWithAmsgradV2 accepts float64; beta powers, lr, betas, eps are float32 tensors",
    )
    add(
        "Adam",
        "amsgrad_eps1e-3",
        "mindspore.nn.Adam",
        {**adam, "use_amsgrad": True, "eps": 1e-3},
        lambda ps: nn.Adam(ps, learning_rate=0.05, use_amsgrad=True, eps=1e-3),
        dtype="float64",
    )
    add(
        "Adam",
        "loss_scale128_wd0.1",
        "mindspore.nn.Adam",
        {**adam, "weight_decay": 0.1, "loss_scale": 128.0},
        lambda ps: nn.Adam(ps, learning_rate=0.05, weight_decay=0.1, loss_scale=128.0),
        dtype="float32",
        grad_multiplier=128.0,
        loss_scale=128.0,
    )
    # ---- AdamWeightDecay
    awd = {"learning_rate": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.0}
    add(
        "AdamWeightDecay",
        "wd0.1",
        "mindspore.nn.AdamWeightDecay",
        {**awd, "weight_decay": 0.1},
        lambda ps: nn.AdamWeightDecay(ps, learning_rate=0.05, weight_decay=0.1),
        dtype="float32",
        notes="no groups: decay skipped for names containing 'beta'/'gamma'. " + F64_NOTE,
    )
    add(
        "AdamWeightDecay",
        "wd0.1_eps1e-3",
        "mindspore.nn.AdamWeightDecay",
        {**awd, "weight_decay": 0.1, "eps": 1e-3},
        lambda ps: nn.AdamWeightDecay(ps, learning_rate=0.05, weight_decay=0.1, eps=1e-3),
        dtype="float32",
    )
    # ---- Momentum
    mo = {
        "learning_rate": 0.02,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "loss_scale": 1.0,
        "use_nesterov": False,
    }
    add(
        "Momentum",
        "default",
        "mindspore.nn.Momentum",
        dict(mo),
        lambda ps: nn.Momentum(ps, learning_rate=0.02, momentum=0.9),
        dtype="float32",
        notes=F64_NOTE,
    )
    add(
        "Momentum",
        "default_float64params",
        "mindspore.nn.Momentum",
        dict(mo),
        lambda ps: nn.Momentum(ps, learning_rate=0.02, momentum=0.9),
        dtype="float64",
        compute_dtype="float32",
        notes="float64 Parameters: accepted, but every value written back is float32-representable "
        "(the update runs in float32); gradients are float64 from the float64 parameter values",
    )
    add(
        "Momentum",
        "nesterov",
        "mindspore.nn.Momentum",
        {**mo, "use_nesterov": True},
        lambda ps: nn.Momentum(ps, learning_rate=0.02, momentum=0.9, use_nesterov=True),
        dtype="float32",
        notes="use_nesterov=True is ignored by the CPU kernel: identical to 'default'",
    )
    add(
        "Momentum",
        "wd0.1",
        "mindspore.nn.Momentum",
        {**mo, "weight_decay": 0.1},
        lambda ps: nn.Momentum(ps, learning_rate=0.02, momentum=0.9, weight_decay=0.1),
        dtype="float32",
        notes="no groups: decay skipped for names containing 'beta'/'gamma'",
    )
    add(
        "Momentum",
        "loss_scale128",
        "mindspore.nn.Momentum",
        {**mo, "loss_scale": 128.0},
        lambda ps: nn.Momentum(ps, learning_rate=0.02, momentum=0.9, loss_scale=128.0),
        dtype="float32",
        grad_multiplier=128.0,
        loss_scale=128.0,
    )
    add(
        "Momentum",
        "loss_scale128_wd0.1",
        "mindspore.nn.Momentum",
        {**mo, "loss_scale": 128.0, "weight_decay": 0.1},
        lambda ps: nn.Momentum(
            ps, learning_rate=0.02, momentum=0.9, loss_scale=128.0, weight_decay=0.1
        ),
        dtype="float32",
        grad_multiplier=128.0,
        loss_scale=128.0,
    )

    def groups(ps, order=False, gc_dtype_note=False):
        by = {p.name: p for p in ps}
        g = [
            {"params": [by["fc.weight"], by["fc.bias"]], "lr": 0.01, "weight_decay": 0.1},
            {"params": [by["conv.weight"]], "weight_decay": 0.05, "grad_centralization": True},
            {"params": [by["bn.gamma"], by["bn.beta"]]},
        ]
        if order:
            g.append({"order_params": [by[n] for n in reversed(NAMES)]})
        return g

    group_desc = [
        {"params": ["fc.weight", "fc.bias"], "lr": 0.01, "weight_decay": 0.1},
        {"params": ["conv.weight"], "weight_decay": 0.05, "grad_centralization": True},
        {"params": ["bn.gamma", "bn.beta"]},
    ]
    add(
        "Momentum",
        "groups",
        "mindspore.nn.Momentum",
        {**mo, "weight_decay": 0.01, "params": "groups (see 'groups')"},
        lambda ps: nn.Momentum(groups(ps), learning_rate=0.02, momentum=0.9, weight_decay=0.01),
        groups=group_desc,
        dtype="float32",
        notes="group 3 inherits lr 0.02 and weight_decay 0.01 (applied to bn.gamma/bn.beta: no name filter "
        "with groups). grad_centralization on conv.weight (2,3,2) is a no-op: MindSpore only centralizes "
        "when shape[1] % 16 == 0",
    )
    add(
        "Momentum",
        "groups_order_params",
        "mindspore.nn.Momentum",
        {
            **mo,
            "weight_decay": 0.01,
            "params": "groups + {'order_params': params in reversed NAMES order}",
        },
        lambda ps: nn.Momentum(
            groups(ps, order=True), learning_rate=0.02, momentum=0.9, weight_decay=0.01
        ),
        groups=group_desc + [{"order_params": list(reversed(NAMES))}],
        dtype="float32",
        notes="order_params only changes the order of opt.parameters (gradients are passed in that order)",
    )
    add(
        "Momentum",
        "groups_gc16",
        "mindspore.nn.Momentum",
        {**mo, "weight_decay": 0.01, "params": "groups (see 'groups')"},
        lambda ps: nn.Momentum(groups(ps), learning_rate=0.02, momentum=0.9, weight_decay=0.01),
        groups=group_desc,
        shapes=[list(s) for s in SHAPES_GC16],
        dtype="float32",
        notes="conv.weight (2,16,2) so that centralization actually runs",
    )
    lr_list = nn.piecewise_constant_lr(
        milestone=[3, 10, 50, 200], learning_rates=[0.05, 0.03, 0.02, 0.01]
    )
    add(
        "Momentum",
        "lr_list",
        "mindspore.nn.Momentum",
        {
            **mo,
            "learning_rate": "nn.piecewise_constant_lr(milestone=[3, 10, 50, 200], "
            "learning_rates=[0.05, 0.03, 0.02, 0.01]) (a list of 200 floats)",
        },
        lambda ps: nn.Momentum(ps, learning_rate=list(lr_list), momentum=0.9),
        lr_trace=True,
        dtype="float32",
    )
    add(
        "Momentum",
        "lr_polynomial",
        "mindspore.nn.Momentum",
        {
            **mo,
            "learning_rate": "nn.PolynomialDecayLR(learning_rate=0.05, end_learning_rate=0.005, "
            "decay_steps=100, power=2.0, update_decay_steps=False)",
        },
        lambda ps: nn.Momentum(
            ps, learning_rate=nn.PolynomialDecayLR(0.05, 0.005, 100, 2.0), momentum=0.9
        ),
        lr_trace=True,
        dtype="float32",
    )
    # ---- RMSProp
    rm = {
        "learning_rate": 0.01,
        "decay": 0.9,
        "momentum": 0.0,
        "epsilon": 1e-10,
        "use_locking": False,
        "centered": False,
        "loss_scale": 1.0,
        "weight_decay": 0.0,
    }
    add(
        "RMSProp",
        "default",
        "mindspore.nn.RMSProp",
        dict(rm),
        lambda ps: nn.RMSProp(ps, learning_rate=0.01),
        dtype="float32",
        notes="ApplyRMSProp (non-centered) accepts float16/float32 only",
    )
    add(
        "RMSProp",
        "momentum0.5_eps1e-3",
        "mindspore.nn.RMSProp",
        {**rm, "momentum": 0.5, "epsilon": 1e-3},
        lambda ps: nn.RMSProp(ps, learning_rate=0.01, momentum=0.5, epsilon=1e-3),
        dtype="float32",
        notes="x86 CPU kernel: elements in full 8-lane SIMD blocks use sqrt(ms) + eps, the scalar tail "
        "(numel % 8 trailing elements) uses sqrt(ms + eps); deterministic only with one kernel thread "
        "(recorded with ms.device_context.cpu.op_tuning.threads_num(1))",
    )
    add(
        "RMSProp",
        "centered_momentum0.5_eps1e-3",
        "mindspore.nn.RMSProp",
        {**rm, "momentum": 0.5, "epsilon": 1e-3, "centered": True},
        lambda ps: nn.RMSProp(ps, learning_rate=0.01, momentum=0.5, epsilon=1e-3, centered=True),
        dtype="float32",
        notes=F64_NOTE,
    )
    add(
        "RMSProp",
        "centered",
        "mindspore.nn.RMSProp",
        {**rm, "centered": True},
        lambda ps: nn.RMSProp(ps, learning_rate=0.01, centered=True),
        dtype="float32",
    )
    add(
        "RMSProp",
        "momentum0.5_lr_list",
        "mindspore.nn.RMSProp",
        {
            **rm,
            "momentum": 0.5,
            "learning_rate": "nn.piecewise_constant_lr(milestone=[3, 10, 50, 200], "
            "learning_rates=[0.01, 0.006, 0.003, 0.001])",
        },
        lambda ps: nn.RMSProp(
            ps,
            learning_rate=list(
                nn.piecewise_constant_lr(
                    milestone=[3, 10, 50, 200], learning_rates=[0.01, 0.006, 0.003, 0.001]
                )
            ),
            momentum=0.5,
        ),
        dtype="float32",
        lr_trace=True,
        notes="distinguishes lr inside the momentum buffer from lr outside it",
    )
    # ---- Adagrad
    ag = {
        "accum": 0.1,
        "learning_rate": 0.05,
        "update_slots": True,
        "loss_scale": 1.0,
        "weight_decay": 0.0,
    }
    add(
        "Adagrad",
        "lr0.05",
        "mindspore.nn.Adagrad",
        dict(ag),
        lambda ps: nn.Adagrad(ps, learning_rate=0.05),
        dtype="float32",
        notes=F64_NOTE,
    )
    add(
        "Adagrad",
        "lr0.05_wd0.1",
        "mindspore.nn.Adagrad",
        {**ag, "weight_decay": 0.1},
        lambda ps: nn.Adagrad(ps, learning_rate=0.05, weight_decay=0.1),
        dtype="float32",
    )
    # ---- SGD
    sg = {
        "learning_rate": 0.05,
        "momentum": 0.9,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": False,
        "loss_scale": 1.0,
    }
    add(
        "SGD",
        "momentum0.9_dampening0.1",
        "mindspore.nn.SGD",
        {**sg, "dampening": 0.1},
        lambda ps: nn.SGD(ps, learning_rate=0.05, momentum=0.9, dampening=0.1),
        dtype="float32",
        notes="the SGD CPU kernel accepts float16/float32 only",
    )
    add(
        "SGD",
        "nesterov_wd0.1",
        "mindspore.nn.SGD",
        {**sg, "nesterov": True, "weight_decay": 0.1},
        lambda ps: nn.SGD(ps, learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
        dtype="float32",
    )
    # ---- expected CPU failures (recorded as failures)
    lamb = {"learning_rate": 0.02, "beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.01}
    add(
        "Lamb",
        "wd0.01",
        "mindspore.nn.Lamb",
        lamb,
        lambda ps: nn.Lamb(ps, learning_rate=0.02, weight_decay=0.01),
        dtype="float32",
    )
    add(
        "LARS",
        "momentum",
        "mindspore.nn.LARS",
        {
            "optimizer": "nn.Momentum(learning_rate=0.02, momentum=0.9)",
            "epsilon": 1e-5,
            "coefficient": 0.001,
            "use_clip": False,
        },
        lambda ps: nn.LARS(nn.Momentum(ps, learning_rate=0.02, momentum=0.9)),
        dtype="float32",
    )
    del ms
    return S


def mindspore_state(opt):
    arrays, names = {}, {}
    for _, p in opt.parameters_and_names():
        full = p.name
        if full in NAMES:
            continue
        for pn in NAMES:
            if full.endswith("." + pn):
                key = f"state__{pn}__{full[: -len(pn) - 1]}"
                break
        else:
            key = f"state__global__{full}"
        arrays[key] = np.asarray(p.asnumpy())
        names[key] = full
    return arrays, names


def _ms_lr_probe(schedule):
    import mindspore as ms
    from mindspore import nn

    class LrProbe(nn.Cell):
        def __init__(self, s):
            super().__init__(auto_prefix=False)  # keep the optimizer's parameter names unchanged
            self.s = s

        @ms.jit
        def construct(self, step):
            return self.s(step)

    return LrProbe(schedule)


def run_mindspore(sp):
    from mindspore import Parameter, Tensor

    prob = problem_for(sp.get("shapes"))
    dt = sp["dtype"]
    params = [Parameter(Tensor(init.astype(dt)), name=name) for name, init in zip(NAMES, prob.init)]
    for p, init in zip(params, prob.init):
        assert np.array_equal(p.asnumpy(), init.astype(dt))
    opt = sp["build"](params)
    order = [p.name for p in opt.parameters]
    by = {p.name: p for p in params}
    mult = sp.get("grad_multiplier")
    if sp.get("lr_trace"):
        assert opt.dynamic_lr and not opt.is_group_lr
        lr_probe = _ms_lr_probe(opt.learning_rate)
    out, lrs = {}, []
    for t in range(1, STEPS + 1):
        vals = [by[n].asnumpy() for n in NAMES]
        gs = dict(zip(NAMES, gradients(vals, prob, t, dt)))
        if mult:
            gs = {k: (v * np.asarray(mult, v.dtype)).astype(v.dtype) for k, v in gs.items()}
        if sp.get("lr_trace"):
            # what opt.get_lr() returns, evaluated inside a jit cell: eager (PyNative) evaluation of
            # the schedules fails under numpy 2 in mindspore 2.10.0 ("A module that was compiled
            # using NumPy 1.x cannot be run in NumPy 2...") in Tensor.reshape(()) / ops.Minimum
            lrs.append(float(np.asarray(lr_probe(opt.global_step).asnumpy()).reshape(())))
        opt(tuple(Tensor(gs[n]) for n in order))
        if t in CHECKPOINTS:
            for n in NAMES:
                out[f"step{t}__{n}"] = by[n].asnumpy().copy()
    st, stn = mindspore_state(opt)
    out.update(st)
    if lrs:
        out["lr"] = np.asarray(lrs, np.float64)
    return out, stn


# ============================================================================ driver
def framework_version(fw):
    if fw == "paddle":
        import paddle

        return paddle.__version__
    import mindspore

    return mindspore.__version__


def entry_for(sp, fw_version, state_names=None, error=None):
    e = {
        "file": f"{sp['framework']}__{sp['optimizer']}__{sp['label']}.npz",
        "framework": sp["framework"],
        "framework_version": fw_version,
        "optimizer": sp["optimizer"],
        "label": sp["label"],
        "class": sp["cls"],
        "kwargs": sp["kwargs"],
        "dtype": sp["dtype"],
        "compute_dtype": sp.get("compute_dtype", sp["dtype"]),
        "steps": STEPS,
        "checkpoints": list(CHECKPOINTS),
        "problem": {
            "fn": "uniopt.parity.problem.make_problem",
            "steps": STEPS,
            "seed": SEED,
            "shapes": sp.get("shapes") or "SHAPES",
        },
        "groups": sp.get("groups"),
        "loss_scale": sp.get("loss_scale"),
        "grad_multiplier": sp.get("grad_multiplier"),
        "lr_per_step_recorded": bool(sp.get("sched") or sp.get("lr_trace")),
        "notes": sp.get("notes", ""),
    }
    if state_names is not None:
        e["state_names"] = state_names
    if error is not None:
        e["error"] = error
        del e["file"]
    return e


def generate(fw):
    if fw == "paddle":
        import paddle  # noqa: F401

        specs, runner = paddle_specs(), run_paddle
    else:
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE)
        ms.set_device("CPU")
        # One kernel thread: with several, the CPU kernels split each tensor into tasks whose size
        # is auto-tuned from timings, and kernels whose SIMD body and scalar tail differ (RMSProp)
        # then give run-to-run different results.
        ms.device_context.cpu.op_tuning.threads_num(1)
        specs, runner = mindspore_specs(), run_mindspore
    version = framework_version(fw)
    for old in HERE.glob(f"{fw}__*.npz"):
        old.unlink()
    recordings, failures = [], []
    for sp in specs:
        tag = f"{sp['framework']}__{sp['optimizer']}__{sp['label']}"
        try:
            arrays, state_names = runner(sp)
        except Exception as exc:  # recorded, not fatal
            msg = first_line(exc)
            print(f"FAIL {tag}: {msg}", flush=True)
            if os.environ.get("RECORDERS_DEBUG"):
                traceback.print_exc()
            failures.append(entry_for(sp, version, error=msg))
            continue
        save_npz(HERE / f"{tag}.npz", arrays)
        recordings.append(entry_for(sp, version, state_names))
        print(f"ok   {tag}", flush=True)
    return recordings, failures


def write_manifest(fw, recordings, failures):
    path = HERE / "manifest.json"
    man = {"recordings": [], "failures": []}
    if path.exists():
        man = json.loads(path.read_text())
    man["recordings"] = [r for r in man["recordings"] if r["framework"] != fw] + recordings
    man["failures"] = [r for r in man["failures"] if r["framework"] != fw] + failures
    man["recordings"].sort(key=lambda r: r["file"])
    man["failures"].sort(key=lambda r: (r["framework"], r["optimizer"], r["label"]))
    man["about"] = (
        "Recorded optimizer trajectories (see README.md). Keys in each npz: "
        "step{k}__{param} = parameters after step k; state__{param}__{slot} and "
        "state__global__{slot} = optimizer state after the last step (framework names in "
        "state_names); lr = learning rate used at each step (where recorded)."
    )
    path.write_text(json.dumps(man, indent=1, sort_keys=True) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--framework", choices=["paddle", "mindspore", "all"], default="all")
    args = ap.parse_args(argv)
    if args.framework == "all":
        # one process per framework: keeps their native runtimes apart
        for fw in ("paddle", "mindspore"):
            subprocess.run([sys.executable, __file__, "--framework", fw], check=True)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.framework == "mindspore":
        os.environ.setdefault("GLOG_v", "3")  # MindSpore: 3 = errors only
    else:
        os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle/glog: no INFO/WARNING lines
    # MindSpore writes rank_*/ analysis folders into the working directory
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            recordings, failures = generate(args.framework)
        finally:
            os.chdir(cwd)
    write_manifest(args.framework, recordings, failures)


if __name__ == "__main__":
    main()
