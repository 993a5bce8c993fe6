"""Pieces every converter shares: finding the uniopt class of an algorithm, building
a uniopt optimizer from converted groups, and writing the uniopt state dict."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from uniopt import flavors
from uniopt.state import FORMAT, VERSION

#: uniopt param-group options outside the rule, and the value that means "off"
GROUP_OPTIONS = {"grad_centralization": False}
#: optimizer-level options (attributes) and the value that means "off"
OPTIMIZER_OPTIONS = {
    "grad_clip": None,
    "loss_scale": 1.0,
    "apply_decay_param_fun": None,
    "lr_ratio": None,
    "decay_skips_beta_gamma": False,
    "lazy_mode": False,
    "multi_precision": False,
}


def check_plain(opt: Any, who: str) -> None:
    """Refuse an optimizer using options a framework's twin cannot express."""
    used = [
        f"{k}={getattr(opt, k)!r}"
        for k, off in OPTIMIZER_OPTIONS.items()
        if hasattr(opt, k) and getattr(opt, k) != off
    ]
    if used:
        raise ValueError(f"{who}: the optimizer uses {', '.join(used)}, which has no equivalent")


def optimizer_class(algorithm: str) -> type:
    """The uniopt optimizer class whose ``algorithm`` is ``algorithm`` (``"adamw"`` ->
    :class:`uniopt.AdamW`); ValueError listing the known ones otherwise."""
    import uniopt
    from uniopt.optimizer import Optimizer

    known = {}
    for name in uniopt.__all__:
        obj = getattr(uniopt, name, None)
        if isinstance(obj, type) and issubclass(obj, Optimizer) and hasattr(obj, "algorithm"):
            known.setdefault(obj.algorithm, obj)
    if algorithm not in known:
        raise ValueError(f"uniopt has no optimizer {algorithm!r} (yet); known: {sorted(known)}")
    return known[algorithm]


def hyperparameter_names(cls: type) -> list[str]:
    """The hyperparameters a param group of ``cls`` carries (``lr``, ``betas``, ...)."""
    return list(cls.rule.hyperparameters)


def defaults(cls: type, flavor: str | None) -> dict[str, Any]:
    """``cls``'s constructor defaults under ``flavor`` (its preset where it sets one)."""
    preset = cls.rule.flavors.get(flavor, {}) if flavor else {}
    out = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "params", "flavor") or p.default is inspect.Parameter.empty:
            continue
        default = p.default
        if isinstance(default, flavors.Default):
            default = preset.get(name, default.value)
        out[name] = default
    return out


def flavor_of(cls: type, flavor: str | None) -> str | None:
    """``flavor`` if ``cls`` has that preset, else None (the class's own defaults)."""
    return flavor if flavor and flavor in getattr(cls.rule, "flavors", {}) else None


def build(cls: type, groups: list[dict[str, Any]], flavor: str | None) -> Any:
    """``cls(groups, flavor=...)``: each group dict holds ``params``, ``param_names`` and
    its hyperparameters."""
    kwargs = {"flavor": flavor} if flavor else {}
    return cls(groups, **kwargs)


def build_flat(cls: type, params: Any, hp: Mapping[str, Any], flavor: str | None) -> Any:
    """``cls(params, **hp, flavor=...)``: one group, ``opt.params`` in ``params``' structure."""
    kwargs = {"flavor": flavor} if flavor else {}
    return cls(params, **hp, **kwargs)


def state_dict(
    algorithm: str,
    groups: list[dict[str, Any]],
    state: Mapping[str, Mapping[str, Any]],
    step_count: int,
    flavor: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A uniopt optimizer state dict (the format of :func:`uniopt.state.state_dict`)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "algorithm": algorithm,
        "flavor": flavor,
        "step_count": int(step_count),
        "param_groups": groups,
        "state": {k: dict(v) for k, v in state.items()},
        **extra,
    }


def host(x: Any) -> np.ndarray:
    """Any array (NumPy, a uniopt backend's, or an object with ``.numpy()`` such as a
    Paddle tensor) as a host NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    from uniopt._adapter import adapter_for, is_array

    if is_array(x):
        adapter = adapter_for(x)
        return adapter.to_numpy(adapter.data(x))
    if hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return np.asarray(x)


def number(x: Any) -> Any:
    """A 0-d array, tensor or NumPy scalar as a Python number; tuples/lists element-wise;
    anything else unchanged."""
    if isinstance(x, (tuple, list)):
        return type(x)(number(v) for v in x)
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        return float(x)
    if getattr(x, "shape", None) in ((), (1,)) or (
        hasattr(x, "numel") and callable(x.numel) and x.numel() == 1
    ):
        value = host(x).reshape(()).item()
        return value
    return x


def names_by_identity(named: Any) -> dict[int, str]:
    """``id(tensor) -> name`` from a mapping name -> tensor or ``(name, tensor)`` pairs
    (``model.named_parameters()``)."""
    pairs: Iterable[Any] = named.items() if isinstance(named, Mapping) else named
    out = {}
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(
                "names must be a list of names, a dict name -> parameter or (name, "
                f"parameter) pairs such as model.named_parameters(); got an item {item!r}"
            )
        name, tensor = item
        out[id(tensor)] = str(name)
    return out


def moot(option: str, hp: Mapping[str, Any], sd: Mapping[str, Any]) -> bool:
    """Whether a uniopt option the framework's twin lacks changes nothing that twin
    would continue: ``complex_mode`` where no state array is complex, and
    ``corrected_moments`` (optax's order of the same Adam arithmetic) without AMSGrad."""
    if option == "complex_mode":
        state = sd.get("state") or {}
        return not any(
            np.iscomplexobj(v)
            for entry in state.values()
            if isinstance(entry, Mapping)
            for v in entry.values()
            if isinstance(v, np.ndarray)
        )
    if option == "corrected_moments":
        return not hp.get("amsgrad", False)
    return False


def one_count(steps: Iterable[int], what: str) -> int:
    """The single step count shared by all stepped parameters (frameworks that keep one)."""
    distinct = sorted(set(steps))
    if len(distinct) > 1:
        raise ValueError(
            f"{what} keeps one step count, but the parameters have taken {distinct} steps"
        )
    return distinct[0] if distinct else 0
