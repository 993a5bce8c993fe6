"""optax <-> uniopt: an optax optimizer state as a uniopt optimizer, and back.

optax states hold arrays only; the transform's arguments (learning rate, betas, ...)
are not in them, so they are given as the optax factory's own keyword arguments.
:data:`OPTAX_TRANSFORMS` is everything transform-specific: the factory's arguments
and their uniopt names, which optax state NamedTuple fields hold which uniopt slot
(with a sign where optax accumulates negated, learning-rate-scaled updates), and the
uniopt options the transform implies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from uniopt import _tree
from uniopt.io import load_state
from uniopt.port import _common

COUNT = "@count"  #: a state field holding the step count


@dataclass(frozen=True)
class OptaxSpec:
    """How one optax optimizer maps onto a uniopt algorithm."""

    algorithm: str  #: the uniopt algorithm
    #: optax argument -> uniopt hyperparameter (``"betas.0"``: first element of betas)
    kwargs: Mapping[str, str]
    #: optax state class -> {field: COUNT, or (uniopt slot, factor)}
    states: Mapping[str, Mapping[str, Any]]
    #: optax's defaults for the arguments above (used when not given)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: uniopt options the optax transform implies (set on import, checked on export)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: slot -> the uniopt flag that, when False, keeps lr out of it: exported scaled by lr
    lr_scaled: Mapping[str, str] = field(default_factory=dict)


_ADAM_ARGS = {"learning_rate": "lr", "b1": "betas.0", "b2": "betas.1", "eps": "eps"}
_ADAM_STATE = {"ScaleByAdamState": {"count": COUNT, "mu": ("exp_avg", 1), "nu": ("exp_avg_sq", 1)}}
_ADAM_DEFAULTS = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}

#: optax factory name -> its uniopt twin. Adding a transform is one entry here.
OPTAX_TRANSFORMS: dict[str, OptaxSpec] = {
    "sgd": OptaxSpec(
        "sgd",
        {"learning_rate": "lr", "momentum": "momentum", "nesterov": "nesterov"},
        {"TraceState": {"trace": ("momentum_buffer", 1)}},
        {"momentum": None, "nesterov": False},
    ),
    "adam": OptaxSpec("adam", _ADAM_ARGS, _ADAM_STATE, _ADAM_DEFAULTS),
    "adamw": OptaxSpec(
        "adamw",
        {**_ADAM_ARGS, "weight_decay": "weight_decay"},
        _ADAM_STATE,
        {**_ADAM_DEFAULTS, "weight_decay": 1e-4},
    ),
    "adagrad": OptaxSpec(
        "adagrad",
        {
            "learning_rate": "lr",
            "initial_accumulator_value": "initial_accumulator_value",
            "eps": "eps",
        },
        {"ScaleByRssState": {"sum_of_squares": ("sum", 1)}},
        {"initial_accumulator_value": 0.1, "eps": 1e-7},
    ),
    # optax.rmsprop: scale_by_rms/stddev, then the learning rate, then trace(momentum):
    # its trace holds -(lr inside the buffer), uniopt's lr_in_momentum buffer negated
    "rmsprop": OptaxSpec(
        "rmsprop",
        {
            "learning_rate": "lr",
            "decay": "alpha",
            "eps": "eps",
            "momentum": "momentum",
            "centered": "centered",
        },
        {
            "ScaleByRmsState": {"nu": ("square_avg", 1)},
            "ScaleByRStdDevState": {"mu": ("grad_avg", 1), "nu": ("square_avg", 1)},
            "TraceState": {"trace": ("momentum_buffer", -1)},
        },
        {"decay": 0.9, "eps": 1e-8, "momentum": None, "centered": False},
        {"lr_in_momentum": True},
        {"momentum_buffer": "lr_in_momentum"},
    ),
    "lamb": OptaxSpec(
        "lamb",
        {**_ADAM_ARGS, "weight_decay": "weight_decay"},
        _ADAM_STATE,
        {**_ADAM_DEFAULTS, "eps": 1e-6, "weight_decay": 0.0},
    ),
    # optax.lars: decay, trust ratio, learning rate, then trace: -velocity
    "lars": OptaxSpec(
        "lars_momentum",
        {
            "learning_rate": "lr",
            "weight_decay": "lars_weight_decay",
            "trust_coefficient": "lars_coeff",
            "eps": "epsilon",
            "momentum": "momentum",
        },
        {"TraceState": {"trace": ("velocity", -1)}},
        {"weight_decay": 0.0, "trust_coefficient": 0.001, "eps": 0.0, "momentum": 0.9},
    ),
    # optax.nadam(w): scale_by_adam(nesterov=True), Dozat's constant momentum
    "nadam": OptaxSpec(
        "nadam",
        {**_ADAM_ARGS, "eps_root": "eps_root"},
        _ADAM_STATE,
        {**_ADAM_DEFAULTS, "eps_root": 0.0},
        {"momentum_decay": None},
    ),
    "nadamw": OptaxSpec(
        "nadamw",
        {**_ADAM_ARGS, "eps_root": "eps_root", "weight_decay": "weight_decay"},
        _ADAM_STATE,
        {**_ADAM_DEFAULTS, "eps_root": 0.0, "weight_decay": 1e-4},
        {"momentum_decay": None},
    ),
    "radam": OptaxSpec(
        "radam",
        {**_ADAM_ARGS, "eps_root": "eps_root", "threshold": "threshold", "nesterov": "nesterov"},
        _ADAM_STATE,
        {**_ADAM_DEFAULTS, "eps_root": 0.0, "threshold": 5.0, "nesterov": False},
    ),
    "adamax": OptaxSpec(
        "adamax",
        _ADAM_ARGS,
        {"ScaleByAdamState": {"count": COUNT, "mu": ("exp_avg", 1), "nu": ("exp_inf", 1)}},
        _ADAM_DEFAULTS,
    ),
    "adamaxw": OptaxSpec(
        "adamaxw",
        {**_ADAM_ARGS, "weight_decay": "weight_decay"},
        {"ScaleByAdamState": {"count": COUNT, "mu": ("exp_avg", 1), "nu": ("exp_inf", 1)}},
        {**_ADAM_DEFAULTS, "weight_decay": 1e-4},
    ),
    "adabelief": OptaxSpec(
        "adabelief",
        {**_ADAM_ARGS, "eps_root": "eps_root", "nesterov": "nesterov"},
        {"ScaleByBeliefState": {"count": COUNT, "mu": ("exp_avg", 1), "nu": ("exp_avg_var", 1)}},
        {"b1": 0.9, "b2": 0.999, "eps": 1e-16, "eps_root": 1e-16, "nesterov": False},
    ),
    # optax.yogi passes neither eps_root nor initial_accumulator_value (scale_by_yogi's)
    "yogi": OptaxSpec(
        "yogi",
        _ADAM_ARGS,
        _ADAM_STATE,
        {**_ADAM_DEFAULTS, "eps": 1e-3},
        {"eps_root": 0.0, "initial_accumulator_value": 1e-6},
    ),
    # not here: optax.adan (three betas, which from_optax's pair-filling cannot take) and
    # optax.optimistic_adam(_v2) (its state's is_initial_step flag, which no uniopt slot
    # or count maps onto)
}
_ALGORITHM_TO_OPTAX = {spec.algorithm: name for name, spec in OPTAX_TRANSFORMS.items()}


def _spec(transform: str) -> OptaxSpec:
    if transform not in OPTAX_TRANSFORMS:
        raise ValueError(
            f"uniopt.port knows no optax transform {transform!r} (known: "
            f"{sorted(OPTAX_TRANSFORMS)})"
        )
    return OPTAX_TRANSFORMS[transform]


def _states(opt_state: Any) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """``(named states by class, injected hyperparameters, injected count)`` of an optax
    state: NamedTuples found anywhere in the (chained, masked, injected) state."""
    found: dict[str, Any] = {}
    seen: set[str] = set()
    hyper: dict[str, Any] = {}
    count = None

    def walk(node: Any) -> None:
        nonlocal count
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            name = type(node).__name__
            if name.startswith("Inject") and hasattr(node, "hyperparams"):
                hyper.update({k: _common.number(v) for k, v in node.hyperparams.items()})
                count = int(_common.number(node.count))
                walk(node.inner_state)
                return
            if name in seen:
                found.pop(name, None)  # ambiguous: reported if the transform needs it
                duplicated.add(name)
            else:
                found[name] = node
            seen.add(name)
            for value in node:
                walk(value)
        elif isinstance(node, (tuple, list)):
            for value in node:
                walk(value)

    duplicated: set[str] = set()
    walk(opt_state)
    for name in duplicated:
        found[name] = None
    return found, hyper, count


def _infer(found: Mapping[str, Any], kwargs: Mapping[str, Any]) -> str:
    if "ScaleByRssState" in found:
        return "adagrad"
    if "ScaleByRmsState" in found or "ScaleByRStdDevState" in found:
        return "rmsprop"
    if "ScaleByAdamState" in found:
        return "adamw" if "weight_decay" in kwargs else "adam"
    return "sgd"


def _set(hp: dict[str, Any], target: str, value: Any) -> None:
    name, _, index = target.partition(".")
    if index:
        pair = list(hp.get(name, (None, None)))
        pair[int(index)] = value
        hp[name] = tuple(pair)
    else:
        hp[name] = value


def _get(hp: Mapping[str, Any], target: str) -> Any:
    name, _, index = target.partition(".")
    return hp[name][int(index)] if index else hp[name]


def from_optax(
    opt_state: Any,
    params: Any,
    transform: str | None = None,
    *,
    step: int | None = None,
    **kwargs: Any,
) -> Any:
    """A uniopt optimizer over ``params`` carrying an optax optimizer state.

    Args:
        opt_state: what ``tx.init`` / ``tx.update`` returned for ``tx = optax.<transform>(...)``
            (chains, ``MaskedState`` and ``inject_hyperparams`` states are searched).
        params: the parameters (the pytree the state mirrors; any uniopt backend).
        transform: the optax factory: ``"sgd"``, ``"adam"``, ``"adamw"``, ``"adagrad"``,
            ``"rmsprop"``, ``"lamb"``, ``"lars"`` (:data:`OPTAX_TRANSFORMS`); inferred
            from the state when omitted (lamb and lars must be named).
        step: the step count where the state keeps none (sgd, rmsprop, lars).
        **kwargs: the factory's arguments, with optax's names (``learning_rate``,
            ``b1``, ``weight_decay`` ...); optax's defaults fill the rest, and
            ``inject_hyperparams`` values are read from the state.

    The uniopt optimizer is built with ``flavor="optax"`` where the algorithm has that
    preset, so it continues with optax's numerics.
    """
    found, injected, injected_count = _states(opt_state)
    given = {**injected, **kwargs}
    transform = transform or _infer(found, given)
    spec = _spec(transform)
    unknown = sorted(set(kwargs) - set(spec.kwargs))
    if unknown:
        raise TypeError(
            f"from_optax: optax.{transform} arguments {unknown} have no uniopt equivalent "
            f"here (known: {sorted(spec.kwargs)})"
        )
    if "learning_rate" not in given:
        raise TypeError("from_optax: learning_rate is required (optax states do not hold it)")
    cls = _common.optimizer_class(spec.algorithm)
    flavor = _common.flavor_of(cls, "optax")
    hp = dict(spec.fixed)
    for name, target in spec.kwargs.items():
        value = given.get(name, spec.defaults.get(name))
        if name == "momentum" and value is None:
            value = 0.0
        if name in given or value is not None:
            _set(hp, target, _common.number(value))
    if None in hp.get("betas", ()):
        defaults = _common.defaults(cls, flavor)["betas"]
        hp["betas"] = tuple(d if b is None else b for b, d in zip(hp["betas"], defaults))
    opt = _common.build_flat(cls, params, hp, flavor)
    names = [n for g in opt.param_groups for n in g["param_names"]]

    entries: dict[str, dict[str, Any]] = {}
    count = None
    for class_name, fields in spec.states.items():
        if class_name not in found:
            continue
        node = found[class_name]
        if node is None:
            raise ValueError(
                f"from_optax: the state holds several {class_name}s; convert one transform"
            )
        for field_name, target in fields.items():
            value = getattr(node, field_name)
            if target == COUNT:
                count = int(_common.number(value))
                continue
            slot, factor = target
            tree_names, leaves, _ = _tree.flatten(value)
            if sorted(tree_names) != sorted(names):
                raise ValueError(
                    f"from_optax: {class_name}.{field_name} holds {sorted(tree_names)}, the "
                    f"parameters are {sorted(names)}"
                )
            for name, leaf in zip(tree_names, leaves):
                array = _common.host(leaf)
                entries.setdefault(name, {})[slot] = -array if factor == -1 else array.copy()
    if count is None:
        count = step if step is not None else (injected_count or 0)
    if count == 0 and not entries:
        return opt
    # a state without a count (sgd's trace) still means "stepped": the next step is not
    # the first (for SGD, the first step copies the gradient into the buffer)
    state = {name: {**slots, "step": max(count, 1)} for name, slots in entries.items()}
    group = {k: v for k, v in opt.param_groups[0].items() if k not in ("params", "param_names")}
    sd = _common.state_dict(spec.algorithm, [{**group, "params": names}], state, count, opt.flavor)
    load_state(opt, sd)
    return opt


def to_optax(opt_or_state: Any, params: Any = None) -> tuple[Any, Any]:
    """The optax transform matching a uniopt optimizer, and its state carrying
    ``opt_or_state``'s moments and step count.

    Args:
        opt_or_state: a uniopt optimizer, or its ``state_dict()`` (then ``params`` is
            required).
        params: the pytree of (JAX) parameters the optax state should mirror, named as
            uniopt names them (dict keys joined with dots); default: ``opt.params``.

    Returns:
        ``(tx, opt_state)``: ``tx = optax.<transform>(...)`` with the optimizer's
        hyperparameters, and a state ``tx.update`` continues from.

    Raises:
        ValueError: no optax twin, several param groups with different
            hyperparameters, an option optax cannot express (``amsgrad``, ``maximize``,
            ...), or parameters at different step counts (optax keeps one count).
    """
    import jax.numpy as jnp
    import optax

    if isinstance(opt_or_state, Mapping):
        sd = opt_or_state
        if params is None:
            raise TypeError("to_optax: params are required with a state dict")
    else:
        _common.check_plain(opt_or_state, "to_optax")
        sd = opt_or_state.portable_state_dict()
        params = opt_or_state.params if params is None else params
    algorithm = sd.get("algorithm")
    if algorithm not in _ALGORITHM_TO_OPTAX:
        raise ValueError(f"to_optax: optax has no twin of uniopt's {algorithm!r} in uniopt.port")
    transform = _ALGORITHM_TO_OPTAX[algorithm]
    spec = OPTAX_TRANSFORMS[transform]
    cls = _common.optimizer_class(algorithm)
    groups = sd["param_groups"]
    hp = {k: v for k, v in groups[0].items() if k != "params"}
    for i, g in enumerate(groups[1:], 1):
        if {k: v for k, v in g.items() if k != "params"} != hp:
            raise ValueError(f"to_optax: param group {i} differs from group 0; optax has one")
    if "unsaved" in hp:
        raise ValueError("to_optax: the learning-rate schedule was not saved; re-attach it")
    covered = {t.partition(".")[0] for t in spec.kwargs.values()} | set(spec.fixed)
    optax_defaults = _common.defaults(cls, "optax" if "optax" in cls.rule.flavors else None)
    problems = [
        f"{k}={hp[k]!r}"
        for k in _common.hyperparameter_names(cls)
        if k in hp
        and k not in covered
        and hp[k] != optax_defaults.get(k)
        and not _common.moot(k, hp, sd)
    ]
    scalable = set(spec.lr_scaled.values())
    problems += [
        f"{k}={hp.get(k)!r}"
        for k, v in spec.fixed.items()
        if hp.get(k) != v and not (k in scalable and not callable(hp.get("lr")))
    ]
    problems += [
        f"{k}={hp[k]!r}" for k, off in _common.GROUP_OPTIONS.items() if k in hp and hp[k] != off
    ]
    if problems:
        raise ValueError(f"to_optax: optax.{transform} cannot express {', '.join(problems)}")
    kwargs = {name: _get(hp, target) for name, target in spec.kwargs.items()}
    if "momentum" in kwargs and kwargs["momentum"] == 0 and transform != "lars":
        kwargs["momentum"] = None
    tx = getattr(optax, transform)(**kwargs)
    state = tx.init(params)
    names, _, _ = _tree.flatten(params)
    entries = sd["state"]
    stepped = [n for n in names if n in entries]
    count = _common.one_count((entries[n]["step"] for n in stepped), "optax")
    if (
        count
        and len(stepped) != len(names)
        and any(COUNT in f.values() for f in spec.states.values())
    ):
        missing = [n for n in names if n not in entries]
        raise ValueError(
            f"to_optax: parameters {missing} have not been stepped; optax keeps one count"
        )
    step_count = int(sd.get("step_count", count))

    def fill(node: Any) -> Any:
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            name = type(node).__name__
            fields = spec.states.get(name)
            if fields is not None:
                return node._replace(
                    **{f: _field(getattr(node, f), target) for f, target in fields.items()}
                )
            if name == "ScaleByScheduleState" or (
                name.startswith("Inject") and hasattr(node, "count")
            ):
                node = node._replace(count=jnp.asarray(step_count, dtype=node.count.dtype))
            return type(node)(*[fill(v) for v in node])
        if isinstance(node, tuple):
            return tuple(fill(v) for v in node)
        return node

    def _field(init: Any, target: Any) -> Any:
        if target == COUNT:
            return jnp.asarray(count, dtype=init.dtype)
        slot, factor = target
        tree_names, leaves, rebuild = _tree.flatten(init)
        new = []
        for name, leaf in zip(tree_names, leaves):
            entry = entries.get(name)
            if entry is None:
                new.append(leaf)
                continue
            value = entry[slot] if factor == 1 else -entry[slot]
            flag = spec.lr_scaled.get(slot)
            if flag is not None and not hp.get(flag):
                value = value * hp["lr"]
            new.append(jnp.asarray(value, dtype=leaf.dtype))
        return rebuild(new)

    return tx, fill(state)
