#!/usr/bin/env python
# ruff: noqa: E501  (long literal kwargs/notes strings)
"""Float64 NumPy reconstructions of every recorded trajectory (the evidence for
the numerics report in README.md).

    python tests/recorded/reconstruct.py            # every recording
    python tests/recorded/reconstruct.py paddle__Adam  # recordings whose file starts so

Needs only numpy and ``uniopt.parity.problem`` (any venv of the project).  For each
recording it replays the problem with a small NumPy loop written from what we
believe the framework computes, and prints the maximum relative deviation
``max|recorded - reconstructed| / max|recorded|`` over all checkpoints and
parameters (``params``) and over the optimizer state after the last step
(``state``).  Where a plausible alternative exists (another eps placement, lr
inside/outside a buffer, ...) the alternative is run too and printed under
``alt:``; it must deviate far more than the accepted reconstruction.

Conventions reproduced from the frameworks:

* float32 recordings: the gradient is computed in float32 (as generate.py does)
  and parameters are rounded to float32 after each step; everything else is
  float64, so deviations of ~1e-6 are the float32 noise floor.
* MindSpore keeps learning rate, momentum, betas, eps, weight decay, loss scale
  and the beta powers as float32 tensors; the reconstructions use those float32
  values (``f32()``), which is what makes the float64 recordings agree to ~1e-15.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from uniopt.parity.problem import NAMES, make_problem  # noqa: E402

F64 = np.float64


def f32(x):
    """The float32 value the framework stores, as float64."""
    return F64(np.float32(x))


def norm(x):
    return float(np.sqrt(np.sum(x * x)))


# --------------------------------------------------------------------- harness
class Sim:
    """Replays the problem: ``rule(t, P, G) -> P`` with per-rule state in ``self.state``."""

    def __init__(self, rec):
        self.rec = rec
        shapes = rec["problem"]["shapes"]
        if shapes == "SHAPES":
            self.prob = make_problem(rec["problem"]["steps"], seed=rec["problem"]["seed"])
        else:
            self.prob = make_problem(
                rec["problem"]["steps"],
                seed=rec["problem"]["seed"],
                shapes=tuple(tuple(s) for s in shapes),
            )
        self.dtype = np.dtype(rec["dtype"])
        # MindSpore runs some float64-parameter updates in float32 (compute_dtype)
        self.cdtype = np.dtype(rec.get("compute_dtype", rec["dtype"]))
        self.mult = rec.get("grad_multiplier")

    def store(self, x):
        return np.asarray(x).astype(self.cdtype).astype(F64)

    def grad(self, P, t):
        out = []
        for p, a, c, n in zip(P, self.prob.curvature, self.prob.center, self.prob.noise[t - 1]):
            if self.dtype == np.float64:
                g = a * (p - c) + n
            else:
                d = self.dtype
                g = (a.astype(d) * (p.astype(d) - c.astype(d)) + n.astype(d)).astype(F64)
            if self.mult:
                g = g * self.mult
            out.append(self.store(g))
        return out

    def run(self, rule):
        P = [self.store(x.astype(F64)) for x in self.prob.init]
        snaps = {}
        for t in range(1, self.rec["steps"] + 1):
            G = self.grad(P, t)
            P = [self.store(p) for p in rule(t, P, G)]
            if t in self.rec["checkpoints"]:
                for name, p in zip(NAMES, P):
                    snaps[f"step{t}__{name}"] = p.copy()
        return snaps


def deviation(recorded, reference, keys):
    worst = 0.0
    for k in keys:
        a = np.asarray(recorded[k], F64)
        b = np.asarray(reference[k], F64).reshape(a.shape)
        scale = max(float(np.max(np.abs(a))), 1e-300)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


# ----------------------------------------------------------------- schedules
def piecewise(spec: str):
    """Paddle PiecewiseDecay(boundaries, values): value for epoch e = t-1."""
    m = re.search(r"boundaries=\[([^\]]*)\], values=\[([^\]]*)\]", spec)
    bnds = [int(x) for x in m.group(1).split(",")]
    vals = [float(x) for x in m.group(2).split(",")]

    def lr(t):
        e = t - 1
        for b, v in zip(bnds, vals):
            if e < b:
                return v
        return vals[-1]

    return lr


def const(v):
    return lambda t: v


def paddle_lr(kw):
    lr = kw["learning_rate"]
    return piecewise(lr) if isinstance(lr, str) else const(float(lr))


# ----------------------------------------------------------------- clipping
def clip(kind, G):
    if not kind:
        return G
    val = float(re.search(r"=?([0-9.]+)\)", kind).group(1))
    if "GlobalNorm" in kind:
        gn = np.sqrt(sum(np.sum(g * g) for g in G))
        return [g * (val / max(gn, val)) for g in G]
    if "ByNorm" in kind:
        return [g * (val / max(norm(g), val)) for g in G]
    if "ByValue" in kind:
        return [np.clip(g, -val, val) for g in G]
    raise ValueError(kind)


# ===================================================================== Paddle
def paddle_adam(
    rec,
    eps_form="paddle",
    decoupled=False,
    clip_then_l2=True,
    amsgrad=None,
    decay_all=False,
    decay_lr="raw",
):
    """Paddle Adam / AdamW kernel.

    lr_t = lr*sqrt(1-b2p)/(1-b1p); p -= lr_t * m / (sqrt(v) + eps*sqrt(1-b2p)); the
    beta powers are per-parameter accumulators initialised to beta and multiplied
    by beta after each update.  AdamW first does p *= 1 - lr*coeff (lr = the
    scheduled lr, no bias correction); AMSGrad uses max(v) in the denominator.
    """
    kw = rec["kwargs"]
    lr = paddle_lr(kw)
    sim = Sim(rec)
    # beta1/beta2/epsilon are Scalars of the parameter's dtype (float32 for float32 parameters)
    b1, b2, eps = (float(sim.store(kw[k])) for k in ("beta1", "beta2", "epsilon"))
    l2 = 0.0 if decoupled else (kw.get("weight_decay") or 0.0)
    coeff = f32(kw["weight_decay"]) if decoupled else 0.0  # AdamW coeff: float32 kernel attribute
    ams = kw.get("amsgrad", False) if amsgrad is None else amsgrad
    nodecay = kw.get("apply_decay_param_fun") or ""
    n = len(NAMES)
    S = {"m": [0.0] * n, "v": [0.0] * n, "vmax": [0.0] * n, "b1p": [b1] * n, "b2p": [b2] * n}

    def rule(t, P, G):
        if clip_then_l2:
            G = clip(kw.get("grad_clip"), G)
            G = [g + l2 * p for g, p in zip(G, P)]
        else:
            G = clip(kw.get("grad_clip"), [g + l2 * p for g, p in zip(G, P)])
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            a = lr(t)
            b1p, b2p = S["b1p"][i], S["b2p"][i]
            if decoupled and (decay_all or not ("bn" in NAMES[i] and "'bn' not in" in nodecay)):
                p = p * (1 - (a if decay_lr == "raw" else a * np.sqrt(1 - b2p) / (1 - b1p)) * coeff)
            m = sim.store(b1 * S["m"][i] + (1 - b1) * g)  # state has the parameter's dtype
            v = sim.store(b2 * S["v"][i] + (1 - b2) * g * g)
            S["m"][i], S["v"][i] = m, v
            vv = v
            if ams:
                S["vmax"][i] = vv = np.maximum(S["vmax"][i], v)
            if eps_form == "paddle":
                lr_t = a * np.sqrt(1 - b2p) / (1 - b1p)
                p = p - lr_t * (m / (np.sqrt(vv) + eps * np.sqrt(1 - b2p)))
            else:  # eps-hat
                p = p - a * np.sqrt(1 - b2p) / (1 - b1p) * m / (np.sqrt(vv) + eps)
            S["b1p"][i], S["b2p"][i] = sim.store(b1p * b1), sim.store(b2p * b2)
            out.append(p)
        return out

    snaps = sim.run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__moment1"] = S["m"][i]
        snaps[f"state__{name}__moment2"] = S["v"][i]
        snaps[f"state__{name}__beta1_pow_acc"] = np.array([S["b1p"][i]])
        snaps[f"state__{name}__beta2_pow_acc"] = np.array([S["b2p"][i]])
        if ams:
            snaps[f"state__{name}__moment2_max"] = S["vmax"][i]
    return snaps


def paddle_momentum(rec, lr_inside=False, group_lr_absolute=False):
    """v = mu*v + (g + wd*p); p -= lr*v   (Nesterov: p -= lr*(g + wd*p + mu*v))."""
    kw = rec["kwargs"]
    # mu and regularization_coeff are float32 kernel attributes
    lr0, mu = paddle_lr(kw), f32(kw["momentum"])
    nest = kw["use_nesterov"]
    S = [0.0] * len(NAMES)
    # parameter groups: 'learning_rate' is a scale of the optimizer lr (absolute if group_lr_absolute)
    scale, wds = [1.0] * len(NAMES), [f32(kw.get("weight_decay") or 0.0)] * len(NAMES)
    for grp in rec.get("groups") or []:
        for name in grp["params"]:
            i = NAMES.index(name)
            if "learning_rate" in grp:
                scale[i] = grp["learning_rate"] / (
                    kw["learning_rate"] if group_lr_absolute else 1.0
                )
            if "weight_decay" in grp:
                wds[i] = f32(grp["weight_decay"])

    def rule(t, P, G):
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            wd = wds[i]

            def lr(t, i=i):
                return lr0(t) * scale[i]

            g = g + wd * p
            if lr_inside:  # Keras style, for contrast
                S[i] = mu * S[i] - lr(t) * g
                out.append(p + (mu * S[i] - lr(t) * g if nest else S[i]))
                continue
            S[i] = mu * S[i] + g
            out.append(p - lr(t) * (g + mu * S[i] if nest else S[i]))
        return out

    snaps = Sim(rec).run(rule)
    if not lr_inside:
        for i, name in enumerate(NAMES):
            snaps[f"state__{name}__velocity"] = S[i]
    return snaps


def paddle_sgd(rec):
    kw = rec["kwargs"]
    lr, wd = paddle_lr(kw), kw.get("weight_decay") or 0.0
    snaps = Sim(rec).run(lambda t, P, G: [p - lr(t) * (g + wd * p) for p, g in zip(P, G)])
    return snaps


def paddle_lars(rec, eps_where="denominator", wd_gate=True):
    """local_lr = lr*coeff*||p|| / (||g|| + wd*||p|| + eps) when wd > 0 and both norms > 0, else lr;
    v = mu*v + local_lr*(g + wd*p); p -= v."""
    kw = rec["kwargs"]
    # mu, lars_coeff, lars_weight_decay, epsilon: float32 kernel attributes
    lr, mu, coeff = kw["learning_rate"], f32(kw["momentum"]), f32(kw["lars_coeff"])
    eps = f32(kw["epsilon"])
    excl = kw.get("exclude_from_weight_decay") or []
    S = [0.0] * len(NAMES)

    def rule(t, P, G):
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            wd = 0.0 if any(e in NAMES[i] for e in excl) else f32(kw["lars_weight_decay"])
            pn, gn = norm(p), norm(g)
            # the kernel only rescales when lars_weight_decay > 0: an excluded parameter
            # (wd = 0) is updated with the plain global lr
            adapt = pn > 0 and gn > 0 and (wd > 0 or not wd_gate)
            if eps_where == "denominator":
                local = lr * coeff * pn / (gn + wd * pn + eps) if adapt else lr
                S[i] = mu * S[i] + local * (g + wd * p)
            else:  # docstring: "+ epsilon" inside the velocity term
                local = lr * coeff * pn / (gn + wd * pn) if pn > 0 and gn > 0 else lr
                S[i] = mu * S[i] + local * (g + wd * p + eps)
            out.append(p - S[i])
        return out

    snaps = Sim(rec).run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__velocity"] = S[i]
    return snaps


def paddle_rmsprop(rec, eps_inside=True, lr_inside=True):
    """ms = rho*ms + (1-rho)*g^2 (from 0); [mg likewise]; mom = mu*mom + lr*g/sqrt(ms [- mg^2] + eps); p -= mom."""
    kw = rec["kwargs"]
    # rho (decay), epsilon, momentum: float32 kernel attributes
    lr, rho, eps, mu, cen = (
        paddle_lr(kw),
        f32(kw["rho"]),
        f32(kw["epsilon"]),
        f32(kw["momentum"]),
        kw["centered"],
    )
    n = len(NAMES)
    S = {"ms": [0.0] * n, "mg": [0.0] * n, "mom": [0.0] * n}

    def rule(t, P, G):
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            S["ms"][i] = ms = rho * S["ms"][i] + (1 - rho) * g * g
            var = ms
            if cen:
                S["mg"][i] = mg = rho * S["mg"][i] + (1 - rho) * g
                var = ms - mg * mg
            den = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps
            if lr_inside:
                S["mom"][i] = mu * S["mom"][i] + lr(t) * g / den
                out.append(p - S["mom"][i])
            else:
                S["mom"][i] = mu * S["mom"][i] + g / den
                out.append(p - lr(t) * S["mom"][i])
        return out

    snaps = Sim(rec).run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__mean_square"] = S["ms"][i]
        snaps[f"state__{name}__momentum"] = S["mom"][i]
        snaps[f"state__{name}__mean_grad"] = S["mg"][i] if cen else np.zeros(np.shape(S["ms"][i]))
    return snaps


def paddle_adagrad(rec, eps_inside=False):
    """acc (from initial_accumulator_value) += g^2; p -= lr*g/(sqrt(acc) + eps)."""
    kw = rec["kwargs"]
    lr, eps = kw["learning_rate"], f32(kw["epsilon"])  # epsilon: float32 kernel attribute
    S = [kw["initial_accumulator_value"]] * len(NAMES)

    def rule(t, P, G):
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            S[i] = S[i] + g * g
            den = np.sqrt(S[i] + eps) if eps_inside else np.sqrt(S[i]) + eps
            out.append(p - lr * g / den)
        return out

    snaps = Sim(rec).run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__moment"] = S[i]
    return snaps


def paddle_lamb(rec, ratio_when_no_wd=None):
    """r = m_hat/(sqrt(v_hat)+eps) + wd*p; p -= lr * (||p||/||r||) * r (ratio 1 if a norm is 0)."""
    kw = rec["kwargs"]
    # weight_decay, beta1, beta2, epsilon: float32 kernel attributes
    lr, b1, b2, eps = kw["learning_rate"], f32(kw["beta1"]), f32(kw["beta2"]), f32(kw["epsilon"])
    excl = kw.get("exclude_from_weight_decay_fn") or ""
    n = len(NAMES)
    # the beta-power accumulators start at the Python (float64) betas and are multiplied by the
    # float32 attributes
    S = {"m": [0.0] * n, "v": [0.0] * n, "b1p": [kw["beta1"]] * n, "b2p": [kw["beta2"]] * n}
    adapt_always = kw.get("always_adapt", False) if ratio_when_no_wd is None else ratio_when_no_wd

    def rule(t, P, G):
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            wd = 0.0 if ("'bn' in" in excl and "bn" in NAMES[i]) else f32(kw["lamb_weight_decay"])
            b1p, b2p = S["b1p"][i], S["b2p"][i]
            S["m"][i] = m = b1 * S["m"][i] + (1 - b1) * g
            S["v"][i] = v = b2 * S["v"][i] + (1 - b2) * g * g
            r = (m / (1 - b1p)) / (np.sqrt(v / (1 - b2p)) + eps) + wd * p
            pn, rn = norm(p), norm(r)
            ratio = pn / rn if pn > 0 and rn > 0 else 1.0
            if wd == 0.0 and not adapt_always:
                ratio = 1.0
            out.append(p - lr * ratio * r)
            S["b1p"][i], S["b2p"][i] = b1p * b1, b2p * b2
        return out

    snaps = Sim(rec).run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__moment1"] = S["m"][i]
        snaps[f"state__{name}__moment2"] = S["v"][i]
        snaps[f"state__{name}__beta1_pow_acc"] = np.array([S["b1p"][i]])
        snaps[f"state__{name}__beta2_pow_acc"] = np.array([S["b2p"][i]])
    return snaps


def paddle_lookahead(rec, slow_init="after_first_step"):
    """Inner step; slow := fast after step 1; every k steps fast = slow = alpha*fast + (1-alpha)*slow."""
    kw = rec["kwargs"]
    alpha, k = kw["alpha"], kw["k"]
    inner = kw["inner_optimizer"]
    lr0 = float(re.search(r"learning_rate=([0-9.]+)", inner).group(1))
    n = len(NAMES)
    S = {"slow": [None] * n, "m": [0.0] * n, "v": [0.0] * n, "b1p": [0.9] * n, "b2p": [0.999] * n}
    sim = Sim(rec)
    if slow_init == "init":
        S["slow"] = [sim.store(x.astype(F64)) for x in sim.prob.init]

    def inner_step(i, p, g):
        if "SGD" in inner:
            return p - lr0 * g
        b1, b2, eps = 0.9, 0.999, 1e-8
        b1p, b2p = S["b1p"][i], S["b2p"][i]
        S["m"][i] = m = b1 * S["m"][i] + (1 - b1) * g
        S["v"][i] = v = b2 * S["v"][i] + (1 - b2) * g * g
        p = p - lr0 * np.sqrt(1 - b2p) / (1 - b1p) * (m / (np.sqrt(v) + eps * np.sqrt(1 - b2p)))
        S["b1p"][i], S["b2p"][i] = b1p * b1, b2p * b2
        return p

    def rule(t, P, G):
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            p = inner_step(i, p, g)
            if t == 1 and slow_init == "after_first_step":
                S["slow"][i] = p.copy()
            if t % k == 0:
                p = alpha * p + (1 - alpha) * S["slow"][i]
                S["slow"][i] = p.copy()
            out.append(p)
        return out

    snaps = sim.run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__slow"] = S["slow"][i]
        if "Adam" in inner:
            snaps[f"state__{name}__moment1"] = S["m"][i]
            snaps[f"state__{name}__moment2"] = S["v"][i]
            snaps[f"state__{name}__beta1_pow_acc"] = np.array([S["b1p"][i]])
            snaps[f"state__{name}__beta2_pow_acc"] = np.array([S["b2p"][i]])
    return snaps


# ================================================================== MindSpore
def ms_decay_flags(rec, name_filter=None):
    """Which parameters get weight decay, and with what (float32) coefficient.  Without groups,
    names containing 'beta'/'gamma' are skipped; with groups every parameter of a group with
    weight_decay > 0 is decayed (name_filter=True/False forces the filter on/off)."""
    kw = rec["kwargs"]
    ls = kw.get("loss_scale", 1.0)
    groups = rec.get("groups")
    if groups:
        out = {}
        for g in groups:
            if "params" not in g:
                continue
            wd = g.get("weight_decay", kw["weight_decay"])
            for name in g["params"]:
                out[name] = wd
        filt = bool(name_filter)
    else:
        out = {n: kw.get("weight_decay", 0.0) for n in NAMES}
        filt = name_filter is None or name_filter
    return [
        (out[n] > 0 and not (filt and ("beta" in n or "gamma" in n)), f32(out[n] * ls))
        for n in NAMES
    ]


def ms_group_lr(rec):
    kw = rec["kwargs"]
    groups = rec.get("groups")
    lrs = {}
    if groups:
        for g in groups:
            for name in g.get("params", []):
                lrs[name] = g.get("lr", kw["learning_rate"])
    return [lrs.get(n, kw["learning_rate"]) for n in NAMES]


def ms_lr_fn(rec):
    """Learning rate at (1-based) step t, as the float32 the optimizer uses (get_lr at global_step t-1)."""
    lr = rec["kwargs"]["learning_rate"]
    if isinstance(lr, (int, float)):
        return lambda t, i=0: f32(ms_group_lr(rec)[i])
    if lr.startswith("nn.piecewise_constant_lr"):
        ms_ = [int(x) for x in re.search(r"milestone=\[([^\]]*)\]", lr).group(1).split(",")]
        vs = [float(x) for x in re.search(r"learning_rates=\[([^\]]*)\]", lr).group(1).split(",")]
        table = []
        last = 0
        for m, v in zip(ms_, vs):
            table += [v] * (m - last)
            last = m
        return lambda t, i=0: f32(table[t - 1])
    if lr.startswith("nn.PolynomialDecayLR"):

        def get(name):
            return float(re.search(name + r"=([0-9.]+)", lr).group(1))

        lr0, end, steps, power = (
            get("learning_rate"),
            get("end_learning_rate"),
            get("decay_steps"),
            get("power"),
        )

        def poly(t, i=0):  # float32 arithmetic, as in the graph
            s = np.float32(min(t - 1, steps))
            p = s / np.float32(steps)
            return F64(
                np.float32(lr0 - end) * np.power(np.float32(1.0) - p, np.float32(power))
                + np.float32(end)
            )

        return poly
    raise ValueError(lr)


def ms_pre(rec, name_filter=None):
    """decay_weight -> (grad centralization: a no-op here) -> scale_grad, as in nn.Optimizer."""
    flags = ms_decay_flags(rec, name_filter)
    ls = rec["kwargs"].get("loss_scale", 1.0)
    recip = f32(1.0 / ls)

    def pre(P, G):
        out = []
        for (on, wd), p, g in zip(flags, P, G):
            if on:
                g = g + p * wd
            if ls != 1.0:
                g = g * recip
            out.append(g)
        return out

    return pre


def ms_adam(rec, eps_form="hat", nesterov=None, name_filter=None):
    """MindSpore nn.Adam: beta powers are float32 running products (b1p = fl32(b1p*b1)), updated
    before the kernel; lr_t = lr*sqrt(1-b2p)/(1-b1p); p -= lr_t*m/(sqrt(v)+eps) (eps-hat form).
    Nesterov: p -= lr_t*(b1*m + (1-b1)*g)/(sqrt(v)+eps).  AMSGrad: vhat = max(vhat, v)."""
    kw = rec["kwargs"]
    sim = Sim(rec)
    st = sim.store
    b1, b2, eps = f32(kw["beta1"]), f32(kw["beta2"]), f32(kw["eps"])
    lr = ms_lr_fn(rec)
    pre = ms_pre(rec, name_filter)
    nest = kw["use_nesterov"] if nesterov is None else nesterov
    ams = kw["use_amsgrad"]
    n = len(NAMES)
    S = {
        "m": [0.0] * n,
        "v": [0.0] * n,
        "vhat": [0.0] * n,
        "b1p": np.float32(1),
        "b2p": np.float32(1),
    }

    def rule(t, P, G):
        G = [st(g) for g in pre(P, G)]
        S["b1p"] = np.float32(S["b1p"] * np.float32(kw["beta1"]))
        S["b2p"] = np.float32(S["b2p"] * np.float32(kw["beta2"]))
        b1p, b2p = F64(S["b1p"]), F64(S["b2p"])
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            S["m"][i] = m = st(b1 * S["m"][i] + (1 - b1) * g)
            S["v"][i] = v = st(b2 * S["v"][i] + (1 - b2) * g * g)
            if ams:
                S["vhat"][i] = v = np.maximum(S["vhat"][i], v)
            num = b1 * m + (1 - b1) * g if nest else m
            if eps_form == "hat":
                out.append(p - lr(t) * np.sqrt(1 - b2p) / (1 - b1p) * num / (np.sqrt(v) + eps))
            else:  # torch / Paddle form
                out.append(p - lr(t) / (1 - b1p) * num / (np.sqrt(v) / np.sqrt(1 - b2p) + eps))
        return out

    snaps = sim.run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__moment1"] = S["m"][i]
        snaps[f"state__{name}__moment2"] = S["v"][i]
        if ams:
            snaps[f"state__{name}__vhat"] = S["vhat"][i]
    snaps["state__global__beta1_power"] = F64(S["b1p"])
    snaps["state__global__beta2_power"] = F64(S["b2p"])
    return snaps


def ms_adamweightdecay(rec, bias_correction=False, name_filter=None):
    """p -= lr*(m/(sqrt(v)+eps) + wd*p) (no bias correction; decay skipped for beta/gamma)."""
    kw = rec["kwargs"]
    sim = Sim(rec)
    st = sim.store
    b1, b2, eps, lr = f32(kw["beta1"]), f32(kw["beta2"]), f32(kw["eps"]), f32(kw["learning_rate"])
    flags = ms_decay_flags(rec, name_filter)
    n = len(NAMES)
    S = {"m": [0.0] * n, "v": [0.0] * n}

    def rule(t, P, G):
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            S["m"][i] = m = st(b1 * S["m"][i] + (1 - b1) * g)
            S["v"][i] = v = st(b2 * S["v"][i] + (1 - b2) * g * g)
            if bias_correction:
                m, v = m / (1 - b1**t), v / (1 - b2**t)
            u = m / (np.sqrt(v) + eps)
            if flags[i][0]:
                u = u + flags[i][1] * p
            out.append(p - lr * u)
        return out

    snaps = sim.run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__adam_m"] = S["m"][i]
        snaps[f"state__{name}__adam_v"] = S["v"][i]
    return snaps


def ms_momentum(rec, lr_inside=False, nesterov=False, name_filter=None):
    """ApplyMomentum: v = mu*v + g; p -= lr*v; mu, lr float32.  use_nesterov is IGNORED by the
    CPU kernel (nesterov=True here applies p -= lr*(g + mu*v) as the alternative)."""
    kw = rec["kwargs"]
    sim = Sim(rec)
    st = sim.store
    mu = f32(kw["momentum"])
    lr = ms_lr_fn(rec)
    pre = ms_pre(rec, name_filter)
    S = [0.0] * len(NAMES)

    def rule(t, P, G):
        G = [st(g) for g in pre(P, G)]
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            a = lr(t, i)
            if lr_inside:
                S[i] = st(mu * S[i] + a * g)
                out.append(p - S[i])
                continue
            S[i] = st(mu * S[i] + g)
            out.append(p - (g * a + S[i] * mu * a if nesterov else a * S[i]))
        return out

    snaps = sim.run(rule)
    if not lr_inside:
        for i, name in enumerate(NAMES):
            snaps[f"state__{name}__moments"] = S[i]
    return snaps


def simd_mask(shape, lanes=8):
    """True for elements processed in full SIMD blocks of `lanes` (the first numel//lanes*lanes)."""
    n = int(np.prod(shape))
    return (np.arange(n) < n // lanes * lanes).reshape(shape)


def ms_rmsprop(rec, ms_init=1.0, eps_mode="lanes", lr_inside=True):
    """ms starts at ONE; ms = d*ms + (1-d)*g^2; [mg = d*mg + (1-d)*g];
    mom = mu*mom + lr*g/den; p -= mom, where den is
      non-centered (ApplyRMSProp, x86 CPU): sqrt(ms) + eps for elements in full 8-wide SIMD blocks,
                                             sqrt(ms + eps) for the numel % 8 trailing elements;
      centered (ApplyCenteredRMSProp): sqrt(ms - mg^2 + eps)."""
    kw = rec["kwargs"]
    sim = Sim(rec)
    st = sim.store
    d, mu, eps = f32(kw["decay"]), f32(kw["momentum"]), f32(kw["epsilon"])
    lr = ms_lr_fn(rec)
    cen = kw["centered"]
    pre = ms_pre(rec)
    n = len(NAMES)
    S = {"ms": [ms_init] * n, "mg": [0.0] * n, "mom": [0.0] * n}

    def rule(t, P, G):
        G = [st(g) for g in pre(P, G)]
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            S["ms"][i] = m2 = st(d * S["ms"][i] + (1 - d) * g * g)
            var = m2
            if cen:
                S["mg"][i] = mg = st(d * S["mg"][i] + (1 - d) * g)
                var = m2 - mg * mg
            inside = np.sqrt(var + eps)
            outside = np.sqrt(var) + eps
            if eps_mode == "inside":
                den = inside
            elif eps_mode == "outside":
                den = outside
            else:
                den = inside if cen else np.where(simd_mask(p.shape), outside, inside)
            if lr_inside:
                S["mom"][i] = st(mu * S["mom"][i] + lr(t) * g / den)
                out.append(p - S["mom"][i])
            else:
                S["mom"][i] = st(mu * S["mom"][i] + g / den)
                out.append(p - lr(t) * S["mom"][i])
        return out

    snaps = sim.run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__mean_square"] = S["ms"][i]
        snaps[f"state__{name}__moment"] = S["mom"][i]
        if cen:
            snaps[f"state__{name}__mean_grad"] = S["mg"][i]
    return snaps


def ms_adagrad(rec, eps=0.0, accum0=None):
    """accum starts at `accum` (0.1); accum += g^2; p -= lr*g/sqrt(accum) (no eps)."""
    kw = rec["kwargs"]
    sim = Sim(rec)
    st = sim.store
    lr = f32(kw["learning_rate"])
    pre = ms_pre(rec)
    S = [F64(f32(kw["accum"] if accum0 is None else accum0))] * len(NAMES)

    def rule(t, P, G):
        G = [st(g) for g in pre(P, G)]
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            S[i] = st(S[i] + g * g)
            out.append(p - lr * g / (np.sqrt(S[i]) + eps))
        return out

    snaps = sim.run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__accum"] = S[i]
    return snaps


def ms_sgd(rec, first_step_plain=True):
    """g += wd*p (nn.Optimizer decay: skips beta/gamma); first step: buf = g (no dampening);
    then buf = mu*buf + (1-dampening)*g; p -= lr*(g + mu*buf) if nesterov else lr*buf."""
    kw = rec["kwargs"]
    sim = Sim(rec)
    st = sim.store
    lr, mu, damp = f32(kw["learning_rate"]), f32(kw["momentum"]), f32(kw["dampening"])
    nest = kw["nesterov"]
    pre = ms_pre(rec)
    S = [None] * len(NAMES)

    def rule(t, P, G):
        G = [st(g) for g in pre(P, G)]
        out = []
        for i, (p, g) in enumerate(zip(P, G)):
            if S[i] is None and first_step_plain:
                S[i] = g
            else:
                S[i] = st(mu * (0.0 if S[i] is None else S[i]) + (1 - damp) * g)
            out.append(p - lr * (g + mu * S[i] if nest else S[i]))
        return out

    snaps = sim.run(rule)
    for i, name in enumerate(NAMES):
        snaps[f"state__{name}__accum"] = S[i]
        snaps[f"state__{name}__stat"] = np.zeros(np.shape(S[i]))
    return snaps


# ================================================================ dispatch
def paddle_adamw(rec, **kw):
    return paddle_adam(rec, decoupled=True, **kw)


RECON = {
    ("paddle", "Adam"): (
        paddle_adam,
        {"eps-hat": dict(eps_form="hat"), "L2 added before clipping": dict(clip_then_l2=False)},
    ),
    ("paddle", "AdamW"): (
        paddle_adamw,
        {
            "eps-hat": dict(eps_form="hat"),
            "no amsgrad": dict(amsgrad=False),
            "decay on every param": dict(decay_all=True),
            "decay with bias-corrected lr": dict(decay_lr="corrected"),
        },
    ),
    ("paddle", "Momentum"): (
        paddle_momentum,
        {
            "lr inside buffer": dict(lr_inside=True),
            "group lr absolute": dict(group_lr_absolute=True),
        },
    ),
    ("paddle", "SGD"): (paddle_sgd, {}),
    ("paddle", "LarsMomentum"): (
        paddle_lars,
        {
            "eps added to (g + wd*p)": dict(eps_where="velocity"),
            "LARS scaling also when wd = 0": dict(wd_gate=False),
        },
    ),
    ("paddle", "RMSProp"): (
        paddle_rmsprop,
        {"eps outside sqrt": dict(eps_inside=False), "lr outside buffer": dict(lr_inside=False)},
    ),
    ("paddle", "Adagrad"): (paddle_adagrad, {"eps inside sqrt": dict(eps_inside=True)}),
    ("paddle", "Lamb"): (paddle_lamb, {"trust ratio always": dict(ratio_when_no_wd=True)}),
    ("paddle", "LookAhead"): (paddle_lookahead, {"slow starts at init": dict(slow_init="init")}),
    ("mindspore", "Adam"): (
        ms_adam,
        {
            "torch/Paddle eps form": dict(eps_form="torch"),
            "Nesterov": dict(nesterov=True),
            "no Nesterov": dict(nesterov=False),
            "decay on beta/gamma too": dict(name_filter=False),
        },
    ),
    ("mindspore", "AdamWeightDecay"): (
        ms_adamweightdecay,
        {
            "with bias correction": dict(bias_correction=True),
            "decay on beta/gamma too": dict(name_filter=False),
        },
    ),
    ("mindspore", "Momentum"): (
        ms_momentum,
        {
            "lr inside buffer": dict(lr_inside=True),
            "Nesterov applied": dict(nesterov=True),
            "decay on beta/gamma too": dict(name_filter=False),
            "beta/gamma filter inside groups": dict(name_filter=True),
        },
    ),
    ("mindspore", "RMSProp"): (
        ms_rmsprop,
        {
            "mean_square starts at 0": dict(ms_init=0.0),
            "eps inside sqrt everywhere": dict(eps_mode="inside"),
            "eps outside sqrt everywhere": dict(eps_mode="outside"),
            "lr outside buffer": dict(lr_inside=False),
        },
    ),
    ("mindspore", "Adagrad"): (
        ms_adagrad,
        {"eps 1e-6 added": dict(eps=1e-6), "accumulator starts at 0": dict(accum0=0.0)},
    ),
    ("mindspore", "SGD"): (ms_sgd, {"dampening on first step": dict(first_step_plain=False)}),
}


def lr_check(rec, data):
    """Deviation of the recorded per-step lr from the schedule formula."""
    if "lr" not in data.files:
        return None
    t = np.arange(1, rec["steps"] + 1)
    if rec["framework"] == "paddle":
        ref = np.array([paddle_lr(rec["kwargs"])(int(s)) for s in t])
    else:
        fn = ms_lr_fn(rec)
        ref = np.array([fn(int(s)) for s in t])
    return float(np.max(np.abs(data["lr"] - ref)) / np.max(np.abs(ref)))


def main(argv):
    man = json.loads((HERE / "manifest.json").read_text())
    prefix = argv[0] if argv else ""
    worst = {}
    print(f"{'recording':58s} {'dtype':8s} {'params':>9s} {'state':>9s} {'lr':>9s}  alternatives")
    for rec in man["recordings"]:
        if not rec["file"].startswith(prefix):
            continue
        fn, alts = RECON[(rec["framework"], rec["optimizer"])]
        data = np.load(HERE / rec["file"])
        ref = fn(rec)
        pkeys = [k for k in data.files if k.startswith("step")]
        skeys = [k for k in data.files if k in ref and k.startswith("state")]
        dp = deviation(data, ref, pkeys)
        ds = deviation(data, ref, skeys) if skeys else float("nan")
        dl = lr_check(rec, data)
        alt_txt = []
        for label, extra in alts.items():
            alt = fn(rec, **extra)
            da = deviation(data, alt, pkeys)
            if da != dp:
                alt_txt.append(f"{label}: {da:.1e}")
        print(
            f"{rec['file'][:-4]:58s} {rec['dtype']:8s} {dp:9.1e} {ds:9.1e} "
            f"{'' if dl is None else f'{dl:9.1e}':>9s}  {'; '.join(alt_txt)}"
        )
        tol = 1e-12 if rec.get("compute_dtype", rec["dtype"]) == "float64" else 1e-5
        worst[rec["file"]] = (max(dp, 0 if np.isnan(ds) else ds), tol)
    bad = {k: v for k, (v, tol) in worst.items() if v > tol}
    print(
        f"\n{len(worst)} recordings reconstructed; {len(bad)} above tolerance "
        f"(1e-12 float64, 1e-5 float32){': ' + ', '.join(bad) if bad else ''}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
