"""The registry: every optimizer, its option sets, its framework twins and its
expected errors. The parity command and the generic tests both run over it.
Adding an algorithm means adding its lines here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import uniopt


@dataclass(frozen=True)
class Case:
    """One algorithm with one option set."""

    algorithm: str  #: functional name, e.g. "adamw"; the class is uniopt.<CLASS>
    options: dict[str, Any]
    torch: dict[str, Any] | None = None  #: torch.optim kwargs, None where torch has no twin
    optax: tuple[str, dict[str, Any]] | None = None  #: (optax factory, kwargs)
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.algorithm}-{self.label}" if self.label else self.algorithm

    def build(self, params: Any) -> Any:
        """The stateful optimizer of this case over ``params``."""
        if self.algorithm == "lookahead":
            options = dict(self.options)
            inner = getattr(uniopt, CLASSES[options.pop("inner")])
            return uniopt.LookAhead(inner(params, **options.pop("inner_options")), **options)
        return getattr(uniopt, CLASSES[self.algorithm])(params, **self.options)

    def build_transform(self) -> Any:
        """The functional transform of this case."""
        if self.algorithm == "lookahead":
            options = dict(self.options)
            inner = getattr(uniopt, options.pop("inner"))(**options.pop("inner_options"))
            return uniopt.lookahead(inner, **options)
        return getattr(uniopt, self.algorithm)(**self.options)


@dataclass(frozen=True)
class ErrorCase:
    """Arguments that must be refused at construction, with the message to expect."""

    algorithm: str
    options: dict[str, Any]
    error: type[Exception]
    match: str
    label: str = field(default="")


CLASSES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "lamb": "LAMB",
    "lars_momentum": "LarsMomentum",
    "nadam": "NAdam",
    "nadamw": "NAdamW",
    "radam": "RAdam",
    "adamax": "Adamax",
    "adamaxw": "AdamaxW",
    "adabelief": "AdaBelief",
    "yogi": "Yogi",
    "adan": "Adan",
    "optimistic_adam": "OptimisticAdam",
    "lookahead": "LookAhead",
}
TORCH_CLASSES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "nadam": "NAdam",
    "nadamw": "NAdam",  # torch.optim.NAdam(decoupled_weight_decay=True)
    "radam": "RAdam",
    "adamax": "Adamax",
    "rmsprop": "RMSprop",
}


def _adam_family(name: str, wd: float) -> list[Case]:
    lr, betas, eps = 0.05, (0.9, 0.999), 1e-8
    base = dict(lr=lr, betas=betas, eps=eps, weight_decay=wd)
    optax_base = dict(learning_rate=lr, b1=0.9, b2=0.999, eps=eps)
    optax_twin = (
        ("adamw", {**optax_base, "weight_decay": wd})
        if name == "adamw"
        else (("adam", optax_base) if wd == 0 else None)
    )
    return [
        Case(name, base, torch=base, optax=optax_twin, label="default"),
        Case(
            name,
            {**base, "weight_decay": 0.1},
            torch={**base, "weight_decay": 0.1},
            optax=("adamw", {**optax_base, "weight_decay": 0.1}) if name == "adamw" else None,
            label="decay",
        ),
        Case(name, {**base, "amsgrad": True}, torch={**base, "amsgrad": True}, label="amsgrad"),
        Case(
            name,
            {**base, "maximize": True, "betas": (0.8, 0.99)},
            torch={**base, "maximize": True, "betas": (0.8, 0.99)},
            label="maximize",
        ),
        Case(name, {**base, "do_bias_correction": False, "eps": 1e-6}, label="no-bias-correction"),
    ]


CASES: list[Case] = [
    Case(
        "sgd",
        dict(lr=0.05),
        torch=dict(lr=0.05),
        optax=("sgd", dict(learning_rate=0.05)),
        label="plain",
    ),
    Case(
        "sgd",
        dict(lr=0.05, momentum=0.9),
        torch=dict(lr=0.05, momentum=0.9),
        optax=("sgd", dict(learning_rate=0.05, momentum=0.9)),
        label="momentum",
    ),
    Case(
        "sgd",
        dict(lr=0.05, momentum=0.9, nesterov=True),
        torch=dict(lr=0.05, momentum=0.9, nesterov=True),
        optax=("sgd", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
        label="nesterov",
    ),
    Case(
        "sgd",
        dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.05),
        torch=dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.05),
        label="dampening-decay",
    ),
    Case(
        "sgd",
        dict(lr=0.005, momentum=0.5, maximize=True),
        torch=dict(lr=0.005, momentum=0.5, maximize=True),
        label="maximize",
    ),
    Case(
        "sgd",
        dict(lr=0.05, momentum=0.9, lr_in_momentum=True, nesterov=True),
        label="lr-in-momentum",
    ),
    *_adam_family("adam", 0.0),
    *_adam_family("adamw", 1e-2),
    Case(
        "adam",
        dict(lr=0.05, eps=1e-3, eps_hat=True, weight_decay=0.1, decoupled_weight_decay=True),
        label="eps-hat-decoupled",
    ),
    Case("adamw", dict(lr=0.05, eps=1e-3, eps_hat=True), label="eps-hat"),
    Case("adagrad", dict(lr=0.05), torch=dict(lr=0.05), label="default"),
    Case(
        "adagrad",
        dict(lr=0.05, lr_decay=0.01, weight_decay=0.05, eps=1e-3),
        torch=dict(lr=0.05, lr_decay=0.01, weight_decay=0.05, eps=1e-3),
        label="decay",
    ),
    Case(
        "adagrad",
        dict(lr=0.05, maximize=True, initial_accumulator_value=0.5),
        torch=dict(lr=0.05, maximize=True, initial_accumulator_value=0.5),
        label="maximize",
    ),
    Case(
        "adagrad",
        dict(lr=0.05, initial_accumulator_value=0.1, eps=1e-7, eps_inside_sqrt=True),
        optax=("adagrad", dict(learning_rate=0.05, initial_accumulator_value=0.1, eps=1e-7)),
        label="eps-inside",
    ),
    Case("rmsprop", dict(lr=0.01), torch=dict(lr=0.01), label="default"),
    Case(
        "rmsprop",
        dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.01),
        torch=dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.01),
        label="centered-momentum",
    ),
    Case(
        "rmsprop",
        dict(lr=0.01, maximize=True, eps=1e-3),
        torch=dict(lr=0.01, maximize=True, eps=1e-3),
        label="maximize",
    ),
    Case(
        "rmsprop",
        dict(lr=0.01, alpha=0.9, eps=1e-6, eps_inside_sqrt=True, momentum=0.8),
        optax=("rmsprop", dict(learning_rate=0.01, decay=0.9, eps=1e-6, momentum=0.8)),
        label="eps-inside",
    ),
    Case(
        "rmsprop",
        dict(lr=0.01, alpha=0.9, eps=1e-6, eps_inside_sqrt=True, centered=True),
        optax=("rmsprop", dict(learning_rate=0.01, decay=0.9, eps=1e-6, centered=True)),
        label="eps-inside-centered",
    ),
    Case(
        "rmsprop",
        dict(
            lr=0.01,
            alpha=0.95,
            eps=1e-6,
            eps_inside_sqrt=True,
            momentum=0.9,
            lr_in_momentum=True,
            centered=True,
        ),
        label="lr-in-momentum",
    ),
    Case(
        "lamb",
        dict(lr=0.05, weight_decay=0.01, eps=1e-6),
        optax=("lamb", dict(learning_rate=0.05, eps=1e-6, weight_decay=0.01)),
        label="default",
    ),
    Case("lamb", dict(lr=0.05, weight_decay=0.01, adam_w_mode=False), label="l2"),
    Case("lamb", dict(lr=0.05, weight_decay=0.05, decay_in_trust_ratio=False), label="keras"),
    Case("lamb", dict(lr=0.05, do_bias_correction=False, maximize=True), label="no-bias"),
    Case("lars_momentum", dict(lr=0.5, momentum=0.9), label="default"),
    Case(
        "lars_momentum",
        dict(lr=0.5, momentum=0.9, lars_coeff=0.01, lars_weight_decay=0.01, epsilon=1e-3),
        label="coeff",
    ),
    Case(
        "lars_momentum",
        dict(lr=0.5, momentum=0.9, lars_weight_decay=0.01, lars_coeff=0.01, decayed_grad_norm=True),
        optax=(
            "lars",
            dict(learning_rate=0.5, weight_decay=0.01, trust_coefficient=0.01, momentum=0.9),
        ),
        label="optax",
    ),
    Case(
        "lookahead",
        dict(inner="sgd", inner_options=dict(lr=0.05, momentum=0.9), alpha=0.2, k=5),
        label="sgd",
    ),
    Case(
        "lookahead",
        dict(
            inner="adamw",
            inner_options=dict(lr=0.05, amsgrad=True),
            alpha=0.5,
            k=3,
            slow_init="first_step",
        ),
        label="adamw-first-step",
    ),
    Case("nadam", dict(lr=0.05), torch=dict(lr=0.05), label="default"),
    Case(
        "nadam",
        dict(lr=0.05, weight_decay=0.1, momentum_decay=6e-3, decoupled_weight_decay=True),
        torch=dict(lr=0.05, weight_decay=0.1, momentum_decay=6e-3, decoupled_weight_decay=True),
        label="decoupled",
    ),
    Case(
        "nadam",
        dict(lr=0.05, momentum_decay=None, corrected_moments=True),
        optax=("nadam", dict(learning_rate=0.05)),
        label="optax",
    ),
    Case(
        "nadamw",
        dict(lr=0.05, weight_decay=0.1, momentum_decay=None, corrected_moments=True),
        optax=("nadamw", dict(learning_rate=0.05, weight_decay=0.1)),
        label="optax",
    ),
    Case(
        "nadamw",
        dict(lr=0.05, weight_decay=0.1, betas=(0.8, 0.99), maximize=True),
        torch=dict(
            lr=0.05, weight_decay=0.1, betas=(0.8, 0.99), maximize=True, decoupled_weight_decay=True
        ),
        label="torch-maximize",
    ),
    Case("radam", dict(lr=0.05), torch=dict(lr=0.05), label="default"),
    Case(
        "radam",
        dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, eps=1e-3, maximize=True),
        torch=dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, eps=1e-3, maximize=True),
        label="decoupled-maximize",
    ),
    Case(
        "radam",
        dict(lr=0.05, eps=1e-3, eps_hat=False, corrected_moments=True, nesterov=True),
        optax=("radam", dict(learning_rate=0.05, eps=1e-3, nesterov=True)),
        label="optax-nesterov",
    ),
    Case("adamax", dict(lr=0.05), torch=dict(lr=0.05), label="default"),
    Case(
        "adamax",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, maximize=True),
        torch=dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, maximize=True),
        label="decay-maximize",
    ),
    Case(
        "adamax",
        dict(lr=0.05, corrected_moments=True),
        optax=("adamax", dict(learning_rate=0.05)),
        label="optax",
    ),
    Case(
        "adamaxw",
        dict(lr=0.05, weight_decay=0.1, corrected_moments=True),
        optax=("adamaxw", dict(learning_rate=0.05, weight_decay=0.1)),
        label="optax",
    ),
    Case("adamaxw", dict(lr=0.05, eps=1e-3, eps_outside_max=True), label="keras-eps"),
    Case(
        "adabelief",
        dict(lr=0.05),
        optax=("adabelief", dict(learning_rate=0.05)),
        label="default",
    ),
    Case(
        "adabelief",
        dict(lr=0.05, betas=(0.8, 0.99), eps=1e-8, eps_root=1e-10, nesterov=True),
        optax=(
            "adabelief",
            dict(learning_rate=0.05, b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-10, nesterov=True),
        ),
        label="nesterov",
    ),
    Case("adabelief", dict(lr=0.05, weight_decay=0.1, maximize=True), label="decay-maximize"),
    Case("yogi", dict(lr=0.05), optax=("yogi", dict(learning_rate=0.05)), label="default"),
    Case(
        "yogi",
        dict(
            lr=0.05,
            betas=(0.8, 0.99),
            eps=1e-4,
            eps_root=1e-8,
            initial_accumulator_value=0.1,
            weight_decay=0.05,
            maximize=True,
        ),
        label="options",
    ),
    Case("adan", dict(lr=0.05), optax=("adan", dict(learning_rate=0.05)), label="default"),
    Case(
        "adan",
        dict(lr=0.05, betas=(0.9, 0.9, 0.999), eps=1e-6, eps_root=0.0, weight_decay=0.1),
        optax=(
            "adan",
            dict(
                learning_rate=0.05,
                b1=0.9,
                b2=0.9,
                b3=0.999,
                eps=1e-6,
                eps_root=0.0,
                weight_decay=0.1,
            ),
        ),
        label="decay",
    ),
    Case(
        "optimistic_adam",
        dict(lr=0.05),
        optax=("optimistic_adam_v2", dict(learning_rate=0.05)),
        label="default",
    ),
    Case(
        "optimistic_adam",
        dict(lr=0.05, alpha=0.5, beta=2.0, betas=(0.8, 0.99), nesterov=False, eps_root=1e-8),
        optax=(
            "optimistic_adam_v2",
            dict(
                learning_rate=0.05,
                alpha=0.5,
                beta=2.0,
                b1=0.8,
                b2=0.99,
                nesterov=False,
                eps_root=1e-8,
            ),
        ),
        label="options",
    ),
]

ERRORS: list[ErrorCase] = [
    *[
        ErrorCase(name, opts, ValueError, match)
        for name in CLASSES
        if name != "lookahead"
        for opts, match in (
            ({"lr": -0.1}, "invalid lr=-0.1"),
            ({"lr": float("nan")}, "invalid lr=nan"),
        )
    ],
    *[
        ErrorCase(name, opts, ValueError, match)
        for name in ("adam", "adamw", "lamb")
        for opts, match in (
            ({"betas": (1.0, 0.999)}, "invalid betas"),
            ({"betas": (0.9, -0.1)}, "invalid betas"),
            ({"betas": (0.9,)}, "invalid betas"),
            ({"eps": -1e-8}, "invalid eps=-1e-08"),
        )
    ],
    *[
        ErrorCase(name, {"weight_decay": -1.0}, ValueError, "invalid weight_decay=-1.0")
        for name in CLASSES
        if name not in ("lars_momentum", "lookahead")
    ],
    ErrorCase("sgd", {"nesterov": True}, ValueError, "invalid nesterov"),
    ErrorCase(
        "sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "invalid nesterov"
    ),
    ErrorCase("sgd", {"momentum": -0.5}, ValueError, "invalid momentum=-0.5"),
    ErrorCase("adam", {"amsgrad": "yes"}, TypeError, "amsgrad must be a bool"),
    ErrorCase("sgd", {"lr": "fast"}, TypeError, "lr must be"),
    ErrorCase("lamb", {"amsgrad": True}, ValueError, "LAMB does not support AMSGrad"),
    ErrorCase("rmsprop", {"alpha": 1.0}, ValueError, "invalid alpha=1.0"),
    ErrorCase("adagrad", {"lr_decay": -0.1}, ValueError, "invalid lr_decay=-0.1"),
    ErrorCase("lars_momentum", {"lars_coeff": -1.0}, ValueError, "invalid lars_coeff=-1.0"),
    ErrorCase("adamw", {"flavor": "caffe"}, ValueError, "unknown flavor='caffe'"),
    ErrorCase("lars_momentum", {"flavor": "torch"}, ValueError, "torch has no LarsMomentum"),
    *[
        ErrorCase(name, opts, ValueError, match)
        for name in ("nadam", "nadamw")
        for opts, match in (
            ({"betas": (1.0, 0.0)}, "invalid betas"),
            ({"eps": -1e-8}, "invalid eps=-1e-08"),
            ({"momentum_decay": -0.2}, "invalid momentum_decay=-0.2"),
            ({"eps_root": -1.0}, "invalid eps_root=-1.0"),
            ({"mu_product": "float16"}, "invalid mu_product='float16'"),
            ({"flavor": "paddle"}, "paddle has no NAdam"),
        )
    ],
    ErrorCase("nadam", {"momentum_decay": "fast"}, TypeError, "momentum_decay must be"),
    ErrorCase("radam", {"betas": (0.9, 1.0)}, ValueError, "invalid betas"),
    ErrorCase("radam", {"eps": -1.0}, ValueError, "invalid eps=-1.0"),
    ErrorCase("radam", {"threshold": float("inf")}, ValueError, "invalid threshold=inf"),
    ErrorCase("radam", {"nesterov": 1}, TypeError, "nesterov must be a bool"),
    ErrorCase("radam", {"flavor": "keras"}, ValueError, "keras has no RAdam"),
    *[
        ErrorCase(name, opts, ValueError, match)
        for name in ("adamax", "adamaxw")
        for opts, match in (
            ({"betas": (0.0, 1.0)}, "invalid betas"),
            ({"eps": -1e-8}, "invalid eps=-1e-08"),
        )
    ],
    ErrorCase("adamax", {"eps_outside_max": "yes"}, TypeError, "eps_outside_max must be a bool"),
    ErrorCase("adamaxw", {"flavor": "torch"}, ValueError, "torch has no AdamaxW"),
    *[
        ErrorCase(name, opts, ValueError, match)
        for name in ("adabelief", "yogi", "optimistic_adam")
        for opts, match in (
            ({"betas": (0.9, 1.0)}, "invalid betas"),
            ({"eps": -1e-8}, "invalid eps=-1e-08"),
            ({"eps_root": -1.0}, "invalid eps_root=-1.0"),
            ({"flavor": "torch"}, "torch has no"),
        )
    ],
    ErrorCase("yogi", {"initial_accumulator_value": -1.0}, ValueError, "invalid initial_acc"),
    ErrorCase("adan", {"betas": (0.9, 0.9)}, ValueError, r"invalid betas=\(0.9, 0.9\): it must"),
    ErrorCase("adan", {"betas": (0.9, 0.9, 1.0)}, ValueError, "each beta must be in"),
    ErrorCase("adan", {"eps_root": -1.0}, ValueError, "invalid eps_root=-1.0"),
    ErrorCase("optimistic_adam", {"alpha": "x"}, TypeError, "alpha must be a real number"),
    ErrorCase("optimistic_adam", {"beta": float("nan")}, ValueError, "invalid beta=nan"),
]


def select(algorithms: list[str] | None = None) -> list[Case]:
    """The registry's cases, or those of the named algorithms."""
    if not algorithms:
        return list(CASES)
    unknown = sorted(set(algorithms) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown optimizers {unknown}; known: {sorted(CLASSES)}")
    return [c for c in CASES if c.algorithm in algorithms]
