"""PaddlePaddle -> uniopt: a Paddle optimizer ``state_dict()`` as a uniopt optimizer.

Paddle names each accumulator ``{parameter name}_{accumulator}_{n}`` (``fc.weight_moment1_0``,
``fc.weight_beta1_pow_acc_0``, ``fc.weight_velocity_0``; ``n`` counts optimizers made in
the program), adds ``LR_Scheduler`` (``{"last_epoch", "last_lr"}``) when the learning
rate is a scheduler and ``master_weights`` with ``multi_precision``. The state holds no
hyperparameters: give them with Paddle's argument names.

Adam-family optimizers keep running powers ``beta1_pow_acc`` = :math:`\\beta_1^{t+1}` after
:math:`t` steps (they start at :math:`\\beta_1`); uniopt keeps the integer step, so
:math:`t = \\mathrm{round}(\\log(\\text{beta1\\_pow}) / \\log\\beta_1) - 1`, checked against
``beta2_pow_acc``. :data:`PADDLE_OPTIMIZERS` is the whole algorithm-specific part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniopt.io import load_state
from uniopt.port import _common
from uniopt.port._optax import _set


@dataclass(frozen=True)
class PaddleSpec:
    """How one Paddle optimizer maps onto a uniopt algorithm."""

    algorithm: str  #: the uniopt algorithm
    kwargs: Mapping[str, str]  #: Paddle argument -> uniopt hyperparameter
    defaults: Mapping[str, Any]  #: Paddle's defaults for those arguments
    accumulators: Mapping[str, str]  #: Paddle accumulator -> uniopt slot
    #: running-power accumulators -> the Paddle argument they are powers of
    powers: Mapping[str, str] = field(default_factory=dict)


_ADAM_ARGS = {"learning_rate": "lr", "beta1": "betas.0", "beta2": "betas.1", "epsilon": "eps"}
_ADAM_DEFAULTS = {"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
_ADAM_ACC = {"moment1": "exp_avg", "moment2": "exp_avg_sq", "moment2_max": "max_exp_avg_sq"}
_POWERS = {"beta1_pow_acc": "beta1", "beta2_pow_acc": "beta2"}

#: Paddle optimizer (lower-case class name) -> its uniopt twin. One entry each.
PADDLE_OPTIMIZERS: dict[str, PaddleSpec] = {
    "adamw": PaddleSpec(
        "adamw",
        {**_ADAM_ARGS, "weight_decay": "weight_decay", "amsgrad": "amsgrad"},
        {**_ADAM_DEFAULTS, "weight_decay": 0.01, "amsgrad": False},
        _ADAM_ACC,
        _POWERS,
    ),
    "adam": PaddleSpec(
        "adam",
        {**_ADAM_ARGS, "weight_decay": "weight_decay", "amsgrad": "amsgrad"},
        {**_ADAM_DEFAULTS, "weight_decay": 0.0, "amsgrad": False},
        _ADAM_ACC,
        _POWERS,
    ),
    "momentum": PaddleSpec(
        "sgd",
        {
            "learning_rate": "lr",
            "momentum": "momentum",
            "use_nesterov": "nesterov",
            "weight_decay": "weight_decay",
        },
        {"learning_rate": 0.001, "momentum": 0.9, "use_nesterov": False, "weight_decay": 0.0},
        {"velocity": "momentum_buffer"},
    ),
    "larsmomentum": PaddleSpec(
        "lars_momentum",
        {
            "learning_rate": "lr",
            "momentum": "momentum",
            "lars_coeff": "lars_coeff",
            "lars_weight_decay": "lars_weight_decay",
            "epsilon": "epsilon",
        },
        {"lars_coeff": 0.001, "lars_weight_decay": 0.0005, "epsilon": 0.0},
        {"velocity": "velocity"},
    ),
    "rmsprop": PaddleSpec(
        "rmsprop",
        {
            "learning_rate": "lr",
            "rho": "alpha",
            "epsilon": "eps",
            "momentum": "momentum",
            "centered": "centered",
            "weight_decay": "weight_decay",
        },
        {"rho": 0.95, "epsilon": 1e-6, "momentum": 0.0, "centered": False, "weight_decay": 0.0},
        {"mean_square": "square_avg", "mean_grad": "grad_avg", "momentum": "momentum_buffer"},
    ),
    "adagrad": PaddleSpec(
        "adagrad",
        {
            "learning_rate": "lr",
            "epsilon": "eps",
            "initial_accumulator_value": "initial_accumulator_value",
            "weight_decay": "weight_decay",
        },
        {"epsilon": 1e-6, "initial_accumulator_value": 0.0, "weight_decay": 0.0},
        {"moment": "sum"},
    ),
    "lamb": PaddleSpec(
        "lamb",
        {**_ADAM_ARGS, "lamb_weight_decay": "weight_decay", "always_adapt": "always_adapt"},
        {**_ADAM_DEFAULTS, "epsilon": 1e-6, "lamb_weight_decay": 0.01, "always_adapt": False},
        {"moment1": "exp_avg", "moment2": "exp_avg_sq"},
        _POWERS,
    ),
}


#: Paddle optimizer arguments that are uniopt optimizer options of the same name and meaning
OPTIONS = ("grad_clip", "apply_decay_param_fun", "lr_ratio", "lazy_mode")


def _key(optimizer: str) -> str:
    key = optimizer.lower().replace("_", "")
    key = key.removesuffix("optimizer")
    if key not in PADDLE_OPTIMIZERS:
        raise ValueError(
            f"uniopt.port knows no Paddle optimizer {optimizer!r} (known: "
            f"{sorted(PADDLE_OPTIMIZERS)})"
        )
    return key


def _step_from_powers(name: str, powers: Mapping[str, float], betas: Mapping[str, float]) -> int:
    """The step count that running powers ``beta^(t+1)`` stand for (all must agree)."""
    steps = {}
    for acc, value in powers.items():
        beta = betas[acc]
        if not 0.0 < beta < 1.0:
            continue  # beta 0 (or 1) carries no count
        if not 0.0 < value <= beta * (1 + 1e-6):
            raise ValueError(f"'{name}': {acc}={value!r} is not a power of {beta!r}")
        exact = math.log(value) / math.log(beta) - 1.0
        if abs(exact - round(exact)) > 1e-3 * max(1.0, exact):
            raise ValueError(
                f"'{name}': {acc}={value!r} is not a whole power of {beta!r}; were the "
                "betas given the ones the optimizer used?"
            )
        steps[acc] = int(round(exact))
    if len(set(steps.values())) > 1:
        raise ValueError(f"'{name}': the beta powers disagree on the step count: {steps}")
    return next(iter(steps.values()), 0)


def from_paddle(
    state_dict: Mapping[str, Any],
    params: Any,
    optimizer: str,
    *,
    names: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """A uniopt optimizer over ``params`` carrying a Paddle optimizer's ``state_dict()``.

    Args:
        state_dict: ``paddle_optimizer.state_dict()`` (Paddle tensors, or NumPy arrays).
        params: the parameters to optimize, in any form uniopt accepts (a dict name ->
            array is the usual one), holding the values Paddle's parameters had.
        optimizer: the Paddle class: ``"AdamW"``, ``"Adam"``, ``"Momentum"``,
            ``"LarsMomentum"``, ``"RMSProp"``, ``"Adagrad"``, ``"Lamb"``
            (:data:`PADDLE_OPTIMIZERS`).
        names: uniopt parameter name -> Paddle parameter name (``param.name``, e.g.
            ``{"fc.weight": "linear_0.w_0"}``); default: the same names.
        **kwargs: the optimizer's arguments with Paddle's names (``learning_rate``,
            ``beta1``, ``epsilon``, ``weight_decay`` ...; Paddle's defaults otherwise).
            Without ``learning_rate`` the ``LR_Scheduler`` entry's ``last_lr`` is used.
            ``grad_clip`` (uniopt's ``ClipGradBy*``), ``apply_decay_param_fun``,
            ``lr_ratio`` and ``lazy_mode`` are passed on as the uniopt options they are.

    The optimizer is built with ``flavor="paddle"`` where the algorithm has that preset.
    State is matched by name; every key that matches no parameter is an error.
    """
    spec = PADDLE_OPTIMIZERS[_key(optimizer)]
    options = {k: kwargs.pop(k) for k in OPTIONS if k in kwargs}
    unknown = sorted(set(kwargs) - set(spec.kwargs))
    if unknown:
        raise TypeError(
            f"from_paddle: {optimizer} arguments {unknown} have no uniopt equivalent here "
            f"(known: {sorted(spec.kwargs)})"
        )
    scheduler = state_dict.get("LR_Scheduler")
    given = dict(kwargs)
    if "learning_rate" not in given and isinstance(scheduler, Mapping):
        given["learning_rate"] = scheduler.get("last_lr")
    args = {k: given.get(k, spec.defaults.get(k)) for k in spec.kwargs}
    args = {k: v for k, v in args.items() if v is not None}
    cls = _common.optimizer_class(spec.algorithm)
    flavor = _common.flavor_of(cls, "paddle")
    hp: dict[str, Any] = {}
    for k, v in args.items():
        _set(hp, spec.kwargs[k], _common.number(v))
    if None in hp.get("betas", ()):
        defaults = _common.defaults(cls, flavor)["betas"]
        hp["betas"] = tuple(d if b is None else b for b, d in zip(hp["betas"], defaults))
    opt = _common.build_flat(cls, params, {**hp, **options}, flavor)
    uniopt_names = [n for g in opt.param_groups for n in g["param_names"]]
    dtypes = {
        n: np.dtype(_dtype_of(p))
        for g in opt.param_groups
        for n, p in zip(g["param_names"], g["params"])
    }
    paddle_names = {n: (names or {}).get(n, n) for n in uniopt_names}
    by_paddle = {v: k for k, v in paddle_names.items()}

    known = sorted({*spec.accumulators, *spec.powers}, key=len, reverse=True)
    pattern = re.compile(rf"^(?P<param>.+)_(?P<acc>{'|'.join(map(re.escape, known))})_\d+$")
    found: dict[str, dict[str, Any]] = {}
    problems = []
    for key, value in state_dict.items():
        if key == "LR_Scheduler":
            continue
        if key == "master_weights":
            problems.append(
                "master_weights (multi_precision): uniopt keeps no master copies in this conversion"
            )
            continue
        match = pattern.match(key)
        if match is None or match["param"] not in by_paddle:
            problems.append(f"{key!r} matches no parameter and no {optimizer} accumulator")
            continue
        found.setdefault(by_paddle[match["param"]], {})[match["acc"]] = value
    state: dict[str, dict[str, Any]] = {}
    for name, accumulators in found.items():
        try:
            state[name] = _entry(name, accumulators, spec, args, dtypes[name])
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("from_paddle: " + "; ".join(problems))
    expected = opt.rule.from_group(opt.param_groups[0]).slots()
    for name, entry in state.items():
        for slot in [k for k in entry if k != "step" and k not in expected]:
            if np.any(entry[slot]):  # Paddle may keep an unused accumulator (zeros)
                raise ValueError(
                    f"from_paddle: '{name}' has a non-zero {slot!r}, which uniopt's "
                    f"{spec.algorithm} with these arguments does not keep"
                )
            del entry[slot]
    state = {n: e for n, e in state.items() if e["step"] > 0}
    count = max((e["step"] for e in state.values()), default=0)
    group = {k: v for k, v in opt.param_groups[0].items() if k not in ("params", "param_names")}
    sd = _common.state_dict(
        spec.algorithm,
        [{**group, "params": uniopt_names}],
        state,
        count,
        opt.flavor,
    )
    load_state(opt, sd)
    return opt


def _dtype_of(p: Any) -> Any:
    from uniopt._adapter import adapter_for

    adapter = adapter_for(p)
    name = adapter.dtype_name(adapter.data(p))
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return name


def _entry(
    name: str,
    accumulators: Mapping[str, Any],
    spec: PaddleSpec,
    args: Mapping[str, Any],
    dtype: np.dtype,
) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    powers = {}
    for acc, value in accumulators.items():
        array = _common.host(value)
        if acc in spec.powers:
            powers[acc] = float(np.asarray(array, dtype=np.float64).reshape(-1)[0])
            continue
        if dtype.name == "bfloat16" and array.dtype == np.uint16:
            array = array.view(dtype)  # Paddle shows bfloat16 as uint16
        entry[spec.accumulators[acc]] = np.array(array, dtype=dtype, copy=True)
    if spec.powers:
        missing = sorted(set(spec.powers) - set(powers))
        if missing:
            raise ValueError(f"'{name}': missing {missing}")
        betas = {acc: float(args[beta]) for acc, beta in spec.powers.items()}
        entry["step"] = _step_from_powers(name, powers, betas)
    else:
        entry["step"] = 1 if entry else 0
    return entry
