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

    @property
    def optimizer(self) -> type[uniopt.Optimizer]:
        return getattr(uniopt, CLASSES[self.algorithm])

    @property
    def transform(self) -> Any:
        return getattr(uniopt, self.algorithm)


@dataclass(frozen=True)
class ErrorCase:
    """Arguments that must be refused at construction, with the message to expect."""

    algorithm: str
    options: dict[str, Any]
    error: type[Exception]
    match: str
    label: str = field(default="")


CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
TORCH_CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


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
    *_adam_family("adam", 0.0),
    *_adam_family("adamw", 1e-2),
]

ERRORS: list[ErrorCase] = [
    *[
        ErrorCase(name, opts, ValueError, match)
        for name in CLASSES
        for opts, match in (
            ({"lr": -0.1}, "invalid lr=-0.1"),
            ({"weight_decay": -1.0}, "invalid weight_decay=-1.0"),
            ({"lr": float("nan")}, "invalid lr=nan"),
        )
    ],
    *[
        ErrorCase(name, opts, ValueError, match)
        for name in ("adam", "adamw")
        for opts, match in (
            ({"betas": (1.0, 0.999)}, "invalid betas"),
            ({"betas": (0.9, -0.1)}, "invalid betas"),
            ({"betas": (0.9,)}, "invalid betas"),
            ({"eps": -1e-8}, "invalid eps=-1e-08"),
        )
    ],
    ErrorCase("sgd", {"nesterov": True}, ValueError, "invalid nesterov"),
    ErrorCase(
        "sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "invalid nesterov"
    ),
    ErrorCase("sgd", {"momentum": -0.5}, ValueError, "invalid momentum=-0.5"),
    ErrorCase("adam", {"amsgrad": "yes"}, TypeError, "amsgrad must be a bool"),
    ErrorCase("sgd", {"lr": "fast"}, TypeError, "lr must be"),
]


def select(algorithms: list[str] | None = None) -> list[Case]:
    """The registry's cases, or those of the named algorithms."""
    if not algorithms:
        return list(CASES)
    unknown = sorted(set(algorithms) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown optimizers {unknown}; known: {sorted(CLASSES)}")
    return [c for c in CASES if c.algorithm in algorithms]
