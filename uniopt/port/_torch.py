"""torch.optim <-> uniopt: optimizers, their param groups and per-parameter state.

The table :data:`TORCH_OPTIMIZERS` is everything algorithm-specific: which torch.optim
class is the twin of a uniopt algorithm, how its per-parameter state keys map to
uniopt's slots, and whether torch keeps a per-parameter ``step``. Hyperparameters need
no table: uniopt follows torch's names (``lr``, ``betas``, ``momentum``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from uniopt.io import load_state
from uniopt.port import _common

_ADAM = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "max_exp_avg_sq": "max_exp_avg_sq"}


@dataclass(frozen=True)
class TorchSpec:
    """How one torch.optim optimizer maps onto a uniopt algorithm."""

    torch_class: str  #: the class in ``torch.optim``
    slots: Mapping[str, str] = field(default_factory=dict)  #: torch state key -> uniopt slot
    per_parameter_step: bool = True  #: torch keeps ``state[p]["step"]``


#: uniopt algorithm -> its torch.optim twin. Adding an algorithm is one line here.
TORCH_OPTIMIZERS: dict[str, TorchSpec] = {
    "sgd": TorchSpec("SGD", {"momentum_buffer": "momentum_buffer"}, per_parameter_step=False),
    "adam": TorchSpec("Adam", _ADAM),
    "adamw": TorchSpec("AdamW", _ADAM),
    "adagrad": TorchSpec("Adagrad", {"sum": "sum"}),
    "rmsprop": TorchSpec(
        "RMSprop",
        {"square_avg": "square_avg", "momentum_buffer": "momentum_buffer", "grad_avg": "grad_avg"},
    ),
    # torch.optim.NAdam is not here: its per-parameter "mu_product" (a 0-d tensor) has
    # no uniopt slot (uniopt forms it from the step count)
    "radam": TorchSpec("RAdam", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    "adamax": TorchSpec("Adamax", {"exp_avg": "exp_avg", "exp_inf": "exp_inf"}),
}
#: torch group keys that select an implementation, not the numbers
_IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")
_NOT_HYPERPARAMETERS = ("params", "param_names", "lr_at_save", "unsaved")


def _spec(algorithm: str) -> TorchSpec:
    if algorithm not in TORCH_OPTIMIZERS:
        raise ValueError(
            f"torch.optim has no twin of uniopt's {algorithm!r} in uniopt.port "
            f"(known: {sorted(TORCH_OPTIMIZERS)})"
        )
    return TORCH_OPTIMIZERS[algorithm]


def algorithm_of(torch_optimizer: Any) -> str:
    """The uniopt algorithm of a torch.optim optimizer object (by its class)."""
    by_class = {spec.torch_class: name for name, spec in TORCH_OPTIMIZERS.items()}
    for klass in type(torch_optimizer).__mro__:
        if klass.__module__.startswith("torch.optim") and klass.__name__ in by_class:
            return by_class[klass.__name__]
    raise ValueError(
        f"uniopt.port knows no uniopt twin of {type(torch_optimizer).__name__} "
        f"(known: {sorted(s.torch_class for s in TORCH_OPTIMIZERS.values())})"
    )


def infer_algorithm(state_dict: Mapping[str, Any]) -> str:
    """Guess the algorithm of a torch.optim ``state_dict`` (it does not name its class)
    from its param-group keys and state keys; ValueError when ambiguous."""
    groups = state_dict.get("param_groups") or [{}]
    keys = set(groups[0])
    slots = {k for entry in (state_dict.get("state") or {}).values() for k in entry}
    if {"lr_decay", "initial_accumulator_value"} <= keys or "sum" in slots:
        return "adagrad"
    if {"alpha", "centered"} <= keys or "square_avg" in slots:
        return "rmsprop"
    if {"dampening", "nesterov"} <= keys or slots == {"momentum_buffer"}:
        return "sgd"
    if "betas" in keys or "exp_avg" in slots:
        if "decoupled_weight_decay" in keys:
            return "adamw" if groups[0]["decoupled_weight_decay"] else "adam"
        if all(float(g.get("weight_decay", 0)) == 0 for g in groups):
            return "adam"  # Adam and AdamW agree without weight decay
        raise ValueError(
            "cannot tell torch.optim.Adam from AdamW in this state_dict (no "
            "'decoupled_weight_decay' key): give the algorithm"
        )
    raise ValueError(
        "cannot infer the optimizer of this torch state_dict (param group keys "
        f"{sorted(keys)}, state keys {sorted(slots)}): give the algorithm"
    )


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    algorithm: str | None = None,
    names: Sequence[str] | None = None,
    *,
    step: int | None = None,
) -> dict[str, Any]:
    """A torch.optim ``state_dict()`` (tensors, integer parameter ids) as a uniopt
    optimizer state dict (NumPy arrays, keyed by parameter name).

    Args:
        state_dict: what ``torch_optimizer.state_dict()`` returned (or ``torch.load``).
        algorithm: the uniopt algorithm (``"adamw"``); inferred when omitted.
        names: the parameter names in torch's order (all groups); defaults to the
            groups' ``param_names`` (torch >= 2.6 with named parameters), else
            positions ``"0"``, ``"1"``, ...
        step: the optimizer's step count, where torch keeps none (SGD); default: the
            largest per-parameter step.
    """
    if not isinstance(state_dict, Mapping) or not isinstance(state_dict.get("param_groups"), list):
        raise ValueError("not a torch.optim state_dict (no 'param_groups' list)")
    algorithm = algorithm or infer_algorithm(state_dict)
    spec = _spec(algorithm)
    cls = _common.optimizer_class(algorithm)
    known = set(_common.hyperparameter_names(cls))
    groups_in = state_dict["param_groups"]
    ids = [i for g in groups_in for i in g["params"]]
    names = _names(groups_in, names, len(ids))
    name_of = dict(zip(ids, names))

    groups = []
    for g in groups_in:
        hp = {
            k: _common.number(v)
            for k, v in g.items()
            if k not in _NOT_HYPERPARAMETERS and k not in _IMPLEMENTATION
        }
        unknown = sorted(k for k in hp if k not in known and k != "initial_lr")
        for k in unknown:  # torch options uniopt lacks: only defaults are representable
            if hp[k] not in (None, False, 0, 0.0):
                raise ValueError(
                    f"torch.optim.{spec.torch_class} option {k}={hp[k]!r} has no uniopt "
                    f"{cls.__name__} equivalent"
                )
            del hp[k]
        groups.append({**hp, "params": [name_of[i] for i in g["params"]]})

    state: dict[str, dict[str, Any]] = {}
    for index, entry in (state_dict.get("state") or {}).items():
        if index not in name_of:
            raise ValueError(f"torch state for parameter id {index!r}, which no group holds")
        converted: dict[str, Any] = {}
        saved_step = None
        for key, value in entry.items():
            if key == "step":
                saved_step = int(round(float(_common.number(value))))
            elif value is None:
                continue
            elif key in spec.slots:
                converted[spec.slots[key]] = _common.host(value).copy()
            else:
                raise ValueError(
                    f"torch.optim.{spec.torch_class} state key {key!r} (parameter "
                    f"{name_of[index]!r}) has no uniopt slot"
                )
        if spec.per_parameter_step:
            if not saved_step:
                continue
            converted["step"] = saved_step
        elif converted:
            converted["step"] = max(int(step or 1), 1)
        else:
            continue
        state[name_of[index]] = converted
    steps = [e["step"] for e in state.values()]
    count = step if step is not None else max(steps, default=0)
    flavor = _common.flavor_of(cls, "torch")
    return _common.state_dict(algorithm, groups, state, count, flavor)


def _names(groups: list[Mapping[str, Any]], names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        if groups and all(isinstance(g.get("param_names"), list) for g in groups):
            names = [str(x) for g in groups for x in g["param_names"]]
        else:
            names = [str(i) for i in range(n)]
    else:
        if isinstance(names, str):
            raise TypeError("names must be a sequence of parameter names, not one string")
        names = [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} parameters")
    if len(set(names)) != n:
        raise ValueError("parameter names must be unique")
    return names


def from_torch(
    torch_optimizer: Any,
    names: Any = None,
    *,
    algorithm: str | None = None,
    step: int | None = None,
) -> Any:
    """A uniopt optimizer over the *same* torch parameters, carrying the torch.optim
    optimizer's param groups, hyperparameters, per-parameter state and step.

    Args:
        torch_optimizer: a ``torch.optim`` optimizer (SGD, Adam, AdamW, Adagrad,
            RMSprop: :data:`TORCH_OPTIMIZERS`).
        names: parameter names: a list in torch's order, or ``model.named_parameters()``
            / a dict name -> parameter (matched by identity). Default: the groups'
            ``param_names`` when torch has them, else ``"0"``, ``"1"``, ...
        algorithm: override the uniopt algorithm (default: from the class).
        step: the step count where torch keeps none (SGD).

    The result steps the same ``nn.Parameter`` objects; torch's own optimizer should no
    longer be stepped.
    """
    tsd = torch_optimizer.state_dict()
    params = [p for g in torch_optimizer.param_groups for p in g["params"]]
    if isinstance(names, str):
        raise TypeError("names must be a sequence of parameter names, not one string")
    if names is not None and not _is_name_list(names):
        by_id = _common.names_by_identity(names)
        missing = [i for i, p in enumerate(params) if id(p) not in by_id]
        if missing:
            raise ValueError(f"names: no name for the parameters at positions {missing}")
        names = [by_id[id(p)] for p in params]
    sd = from_torch_state_dict(tsd, algorithm or algorithm_of(torch_optimizer), names, step=step)
    cls = _common.optimizer_class(sd["algorithm"])
    groups = []
    for torch_group, group in zip(torch_optimizer.param_groups, sd["param_groups"]):
        hp = {k: v for k, v in group.items() if k != "params"}
        groups.append({**hp, "params": list(torch_group["params"]), "param_names": group["params"]})
    opt = _common.build(cls, groups, sd["flavor"])
    load_state(opt, sd)
    return opt


def _is_name_list(names: Any) -> bool:
    if isinstance(names, (Mapping, str)):
        return False
    if isinstance(names, Sequence):
        return all(isinstance(n, str) for n in names)
    return False


def _torch_group_defaults(torch: Any, torch_cls: type) -> dict[str, Any]:
    """Every key of a default param group of ``torch_cls`` (``decoupled_weight_decay``,
    ``foreach``, ...), so that a loaded group lacks none of them."""
    group = torch_cls([torch.zeros(1)]).param_groups[0]
    return {k: v for k, v in group.items() if k not in ("params", "param_names")}


def to_torch_state_dict(opt_or_state: Any) -> dict[str, Any]:
    """A uniopt optimizer (or its ``state_dict()``) as a torch.optim ``state_dict``:
    integer parameter ids in group order, ``param_names`` in each group, state tensors
    on the CPU. ``torch.optim.<Twin>(params).load_state_dict(...)`` accepts it when
    ``params`` are given in the same order.

    Raises:
        ValueError: the algorithm has no torch twin, an option has no torch equivalent
            (``do_bias_correction=False``, ``eps_hat``, ...), or a learning rate is a
            schedule (attach a torch LRScheduler instead).
    """
    import torch

    sd = opt_or_state if isinstance(opt_or_state, Mapping) else opt_or_state.portable_state_dict()
    algorithm = sd.get("algorithm")
    spec = _spec(algorithm)
    cls = _common.optimizer_class(algorithm)
    torch_cls = getattr(torch.optim, spec.torch_class)
    accepted = _torch_group_defaults(torch, torch_cls)
    uniopt_defaults = _common.defaults(cls, "torch")
    to_torch_slot = {v: k for k, v in spec.slots.items()}
    groups, state, index = [], {}, 0
    for i, group in enumerate(sd["param_groups"]):
        if "unsaved" in group or callable(group.get("lr")):
            raise ValueError(
                f"param group {i}: the learning rate is a schedule, which torch.optim "
                "cannot hold; use a torch LRScheduler"
            )
        out = dict(accepted)
        for k, v in group.items():
            if k in _NOT_HYPERPARAMETERS:
                continue
            if k in accepted:
                out[k] = v
            elif k in uniopt_defaults or k in _common.GROUP_OPTIONS:
                default = uniopt_defaults.get(k, _common.GROUP_OPTIONS.get(k))
                if v != default and not _common.moot(k, group, sd):
                    raise ValueError(
                        f"param group {i}: {k}={v!r} has no torch.optim.{spec.torch_class} "
                        f"equivalent (torch behaves as {k}={default!r})"
                    )
            else:
                out[k] = v  # extra keys (initial_lr) travel as torch allows
        names = list(group["params"])
        out["params"] = list(range(index, index + len(names)))
        out["param_names"] = names
        groups.append(out)
        for name in names:
            entry = sd["state"].get(name)
            if entry is not None:
                converted = {
                    to_torch_slot[slot]: _tensor(torch, value)
                    for slot, value in entry.items()
                    if slot != "step"
                }
                if spec.per_parameter_step:
                    scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else None
                    converted["step"] = torch.tensor(
                        float(entry["step"]), dtype=scalar or torch.float32
                    )
                if converted:
                    state[index] = converted
            index += 1
    return {"state": state, "param_groups": groups}


def _tensor(torch: Any, array: Any) -> Any:
    array = _common.host(array)
    if array.dtype.name == "bfloat16":
        import numpy as np

        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def to_torch(opt: Any, params: Any = None) -> Any:
    """A ``torch.optim`` optimizer with ``opt``'s param groups, hyperparameters and state.

    Args:
        opt: a uniopt optimizer (any backend) whose algorithm has a torch twin.
        params: the torch parameters, by name: a ``torch.nn.Module``, a dict name ->
            parameter, or ``(name, parameter)`` pairs. Default: ``opt``'s own parameters,
            which must then be torch tensors.

    Returns:
        ``torch.optim.<Twin>`` over those parameters (named, so its ``state_dict`` has
        ``param_names``), already holding the state; keep stepping it instead of ``opt``.
    """
    import torch

    _common.check_plain(opt, "to_torch")
    tsd = to_torch_state_dict(opt)
    if params is None:
        by_name = {n: p for g in opt.param_groups for n, p in zip(g["param_names"], g["params"])}
        bad = [n for n, p in by_name.items() if not isinstance(p, torch.Tensor)]
        if bad:
            raise TypeError(
                f"to_torch: parameters {bad[:5]} are not torch tensors; pass params= "
                "(the torch parameters by name)"
            )
    elif isinstance(params, torch.nn.Module):
        by_name = dict(params.named_parameters())
    elif isinstance(params, (Mapping, Iterable)):
        by_name = dict(params)
    else:
        raise TypeError("to_torch: params must be a Module, a dict or (name, tensor) pairs")
    wanted = [n for g in tsd["param_groups"] for n in g["param_names"]]
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise ValueError(f"to_torch: no torch parameter named {missing}")
    torch_cls = getattr(torch.optim, _spec(opt.algorithm).torch_class)
    groups = [
        {
            **{k: v for k, v in g.items() if k not in ("params", "param_names")},
            "params": [(n, by_name[n]) for n in g["param_names"]],
        }
        for g in tsd["param_groups"]
    ]
    torch_opt = torch_cls(groups)
    torch_opt.load_state_dict(tsd)
    return torch_opt
