"""The torch face: a uniopt optimizer over torch parameters *is* a
``torch.optim.Optimizer``.

``uniopt.AdamW(model.parameters())`` builds a :class:`uniopt.AdamW`; when its
parameters are torch tensors, the core hands it to :func:`adopt`, which gives it the
class ``AdamW`` derived from both the uniopt class and ``torch.optim.Optimizer`` (made
once per uniopt class, here, so the core never imports torch). The uniopt methods
come first in its method order (``step``, ``zero_grad``, ``add_param_group``,
``state_dict`` ...); torch's own hook registration, ``__repr__`` helpers and profiler
wrapping come from ``torch.optim.Optimizer``, and torch calls the hooks when it would
call them for its own optimizers. Nothing here holds update math.

On torch, ``state_dict()`` is torch.optim's layout (integer parameter ids, tensors),
loadable with ``torch.load(weights_only=True)`` and by the ``torch.optim`` twin of the
algorithm. uniopt's own entries travel where torch ignores them and
``torch.distributed.checkpoint`` (DCP) keeps them: in each param group under
``"uniopt"`` (format, algorithm, flavor, step count, loss scale, the group's exact
per-parameter steps, a LookAhead's options) and in the per-parameter entries (a
LookAhead's ``"slow"`` weights, a custom optimizer's ``clone_state`` arrays by prefix);
the top-level key ``"uniopt"`` repeats them by name. A DTensor parameter's state tensors
(in ``opt.state`` and in ``state_dict()``) are DTensors laid out like it, over the
optimizer's own local shards, so DCP saves and reshards them as torch.optim's.

``load_state_dict`` takes that layout with parameters listed by id or by name (DCP's
fully qualified names; matched by position, as torch matches them), one saved by
``torch.optim`` itself, or the portable name-keyed dict of :func:`uniopt.save`.
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer as TorchOptimizer

from uniopt import state as state_forms
from uniopt._adapter import adapter_for
from uniopt.port import _torch as port

_CLASSES: dict[type, type] = {}
_HOOKS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)
#: the per-parameter state key torch.optim uses for each uniopt slot, per algorithm
#: with a twin (identity elsewhere)
_TORCH_SLOT = {
    name: {slot: key for key, slot in spec.slots.items()}
    for name, spec in port.TORCH_OPTIMIZERS.items()
}


def adopt(opt: Any) -> None:
    """Make ``opt`` (a uniopt optimizer over torch parameters) a
    ``torch.optim.Optimizer``: its class becomes the torch twin of its class, with the
    attributes ``torch.optim.Optimizer.__init__`` would have set."""
    opt.__class__ = native_class(type(opt))
    for name in _HOOKS:
        setattr(opt, name, OrderedDict())
    opt._warned_capturable_if_run_uncaptured = True
    TorchOptimizer._patch_step_function(opt)  # step hooks and profiling, as torch's own


def native_class(cls: type) -> type:
    """``cls`` also deriving from ``torch.optim.Optimizer`` (same name and module)."""
    if issubclass(cls, TorchOptimizer):
        return cls
    if cls not in _CLASSES:
        namespace = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "state": property(_state, doc="Per-parameter state, live views (torch)."),
            "state_dict": _state_dict,
            "load_state_dict": _load_state_dict,
            "__getstate__": object.__getstate__,
            "__setstate__": _setstate,
            "__repr__": cls.__repr__,
        }
        _CLASSES[cls] = type(cls.__name__, (cls, TorchOptimizer), namespace)
    return _CLASSES[cls]


def _setstate(self: Any, state: dict[str, Any]) -> None:
    self.__dict__.update(state)


# ---- opt.state: a live view ---------------------------------------------------------


class StateView(Mapping):
    """``opt.state`` on torch: each parameter that has taken a step (or that a custom
    optimizer keeps ``clone_state`` arrays for) to its state under torch.optim's keys,
    as views of the state the step updates (writing into them changes the optimizer's
    state, as with torch.optim); ``step``, where torch.optim's twin keeps one, is a fresh
    0-d tensor: the keys are those of ``state_dict()``'s entries. A DTensor parameter's
    state tensors are DTensors laid out like it, over its local shards."""

    def __init__(self, opt: Any):
        self._entries = {
            id(p): (p, steps, tensors)
            for p, steps, tensors in _live_state(opt).values()
            if steps or tensors
        }
        twin = port.TORCH_OPTIMIZERS.get(opt.algorithm)
        self._steps = twin is None or twin.per_parameter_step

    def __getitem__(self, p: Any) -> dict[str, Any]:
        found = self._entries.get(id(p))
        if found is None:
            return {}
        p, steps, tensors = found
        entry: dict[str, Any] = {}
        if steps and self._steps:
            entry["step"] = torch.tensor(float(steps))
        entry.update((key, _sharded(t, p)) for key, t in tensors.items())
        return entry

    def __contains__(self, p: object) -> bool:
        return id(p) in self._entries

    def __iter__(self) -> Iterator[Any]:
        return (p for p, _, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


def _live_state(opt: Any, slow: Any = None) -> dict[int, tuple[Any, int, dict[str, Any]]]:
    """Every parameter by its torch id (its position over all groups): ``(parameter,
    steps taken, {torch.optim key: view})``, the views of the very state the step
    updates (local shards for DTensors): the rule's slots once the parameter has stepped,
    a LookAhead's slow weights (``slow``: its flat slow weights per group and segment),
    a custom optimizer's ``clone_state`` arrays by prefix."""
    to_torch = _TORCH_SLOT.get(opt.algorithm, {})
    first = list(itertools.accumulate((len(g["params"]) for g in opt.param_groups), initial=0))
    out: dict[int, tuple[Any, int, dict[str, Any]]] = {}
    for gi, segments in enumerate(opt._segments):
        for si, segment in enumerate(segments):
            flats = {to_torch.get(k, k): v for k, v in segment.state.items()}
            spans = zip(segment.layout.spans, segment.params, segment.positions, segment.steps)
            for span, p, position, steps in spans:
                tensors = {
                    key: flat[span.offset : span.stop].view(span.shape)
                    for key, flat in (flats.items() if steps else ())
                }
                if slow is not None:
                    tensors["slow"] = slow[gi][si][span.offset : span.stop].view(span.shape)
                out[first[gi] + position] = (p, steps, tensors)
    for prefix, arrays in opt._custom_state.items():
        for (_, gi, position), array in zip(opt._entries(), arrays):
            out[first[gi] + position][2][prefix] = array
    return out


def _sharded(t: Any, p: Any) -> Any:
    """``t`` (shaped like ``p``'s local shard) laid out like ``p``: a DTensor over ``t``
    for a DTensor ``p``, ``t`` itself otherwise."""
    shard = getattr(adapter_for(p), "sharded", None)
    return t if shard is None else shard(t, p)


def _state(self: Any) -> StateView:
    return StateView(_stepping(self))


def _stepping(opt: Any) -> Any:
    """The optimizer whose parameters and state ``opt`` steps: a LookAhead's inner one."""
    return opt.inner if getattr(opt, "algorithm", None) == "lookahead" else opt


# ---- state_dict in torch.optim's layout ---------------------------------------------


def _state_dict(self: Any) -> dict[str, Any]:
    """torch.optim's layout: ``{"state": {id: {key: tensor}}, "param_groups": [...]}``
    with integer ids in group order, uniopt's own entries in each group's ``"uniopt"``
    and in the per-parameter entries, repeated by name under the top-level ``"uniopt"``.
    Tensors are host copies, except a DTensor parameter's: DTensors over the
    optimizer's own local shards (as torch.optim's state_dict holds its live state)."""
    for hook in self._optimizer_state_dict_pre_hooks.values():
        hook(self)
    portable = self.portable_state_dict()
    if portable.get("algorithm") == "lookahead":  # the inner's, plus the slow weights
        out = torch_layout(portable["inner"])
        ahead = {k: v for k, v in portable.items() if k not in ("inner", "slow")}
        slow = {name: _tensor(a) for name, a in portable["slow"].items()}
        out["uniopt"]["lookahead"] = {**ahead, "slow": slow}
        for group in out["param_groups"]:
            group["uniopt"]["lookahead"] = dict(ahead)
            for i, name in zip(group["params"], group["param_names"]):
                if name in slow:
                    out["state"].setdefault(i, {})["slow"] = slow[name]
        _share_sharded(self.inner, out, self._slow)
    else:
        out = torch_layout(portable)
        _share_sharded(self, out, None)
    for hook in self._optimizer_state_dict_post_hooks.values():
        result = hook(self, out)
        if result is not None:
            out = result
    return out


def _share_sharded(opt: Any, out: dict[str, Any], slow: Any) -> None:
    """In ``out`` (``opt``'s torch layout), every state tensor of a DTensor parameter
    becomes a DTensor laid out like the parameter over the optimizer's own local shard
    (the same object under the top-level ``"uniopt"``): what DCP saves and reshards."""
    params = [p for g in opt.param_groups for p in g["params"]]
    sharded = [i for i, p in enumerate(params) if adapter_for(p).sharding(p) is not None]
    if not sharded:
        return
    live = _live_state(opt, slow)
    names = [n for g in out["param_groups"] for n in g["param_names"]]
    extra = out["uniopt"]
    by_name = {**extra["custom_state"], "slow": extra.get("lookahead", {}).get("slow", {})}
    for i in sharded:
        p, _, tensors = live[i]
        entry = out["state"].get(i, {})
        for key in entry.keys() & tensors.keys():
            entry[key] = _sharded(tensors[key], p)
            if names[i] in by_name.get(key, ()):
                by_name[key][names[i]] = entry[key]


def torch_layout(portable: Mapping[str, Any]) -> dict[str, Any]:
    """A portable uniopt state dict in torch.optim's layout (tensors on the CPU): each
    group's ``"uniopt"`` holds the optimizer's entries and the group's exact step
    counts; a custom optimizer's ``clone_state`` arrays join the per-parameter entries
    under their prefixes; the top-level ``"uniopt"`` repeats all of it by name (the
    same tensors)."""
    to_torch = _TORCH_SLOT.get(portable["algorithm"], {})
    per_step = port.TORCH_OPTIMIZERS.get(portable["algorithm"])
    shared = {
        k: v for k, v in portable.items() if k not in ("state", "param_groups", "custom_state")
    }
    custom = {
        prefix: {name: _tensor(a) for name, a in arrays.items()}
        for prefix, arrays in (portable.get("custom_state") or {}).items()
    }
    groups, state, steps, index = [], {}, {}, 0
    for group in portable["param_groups"]:
        names = list(group["params"])
        out = {k: v for k, v in group.items() if k != "params"}
        out["params"] = list(range(index, index + len(names)))
        out["param_names"] = names
        group_steps = []
        for name in names:
            entry = portable["state"].get(name)
            converted = {}
            if entry is not None:
                converted = {
                    to_torch.get(slot, slot): _tensor(value)
                    for slot, value in entry.items()
                    if slot != "step"
                }
                if per_step is None or per_step.per_parameter_step:
                    converted["step"] = torch.tensor(float(entry["step"]))
                steps[index] = int(entry["step"])
            converted.update((k, arrays[name]) for k, arrays in custom.items() if name in arrays)
            if entry is not None or converted:
                state[index] = converted
            group_steps.append(steps.get(index, 0))
            index += 1
        out["uniopt"] = {**copy.deepcopy(shared), "steps": group_steps}
        groups.append(out)
    extra = {**shared, "custom_state": custom, "steps": steps}
    return {"state": state, "param_groups": groups, "uniopt": extra}


def _tensor(array: np.ndarray) -> Any:
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(array).copy())


def _load_state_dict(self: Any, state_dict: Mapping[str, Any]) -> None:
    """Load torch.optim's layout (this optimizer's, one ``torch.optim`` saved, either as
    ``torch.distributed.checkpoint`` hands it back, keyed by parameter names) or
    uniopt's portable dict; on any mismatch raise and change nothing."""
    for hook in self._optimizer_load_state_dict_pre_hooks.values():
        result = hook(self, state_dict)
        if result is not None:
            state_dict = result
    if isinstance(state_dict, Mapping) and state_dict.get("format") == state_forms.FORMAT:
        portable = state_dict
    elif getattr(self, "algorithm", None) == "lookahead":
        portable = _lookahead_portable(self, state_dict)
    else:
        portable = portable_layout(self, state_dict)
    type(self).__mro__[1].load_state_dict(self, portable)  # the uniopt class's own
    for hook in self._optimizer_load_state_dict_post_hooks.values():
        hook(self)


def _lookahead_portable(opt: Any, sd: Any) -> dict[str, Any]:
    """A LookAhead's torch layout (its inner's, plus its options and slow weights) as its
    portable dict."""
    owner = f"{type(opt).__name__}.load_state_dict"
    top = _extras(sd.get("uniopt")) if isinstance(sd, Mapping) else None
    groups = sd.get("param_groups") if isinstance(sd, Mapping) else None
    ahead = top.get("lookahead") if top is not None else None
    if ahead is None and isinstance(groups, list):
        grouped = (_extras(g.get("uniopt")) for g in groups if isinstance(g, Mapping))
        ahead = next((x.get("lookahead") for x in grouped if x is not None), None)
    if not isinstance(ahead, Mapping) or not isinstance(ahead.get("slow", {}), Mapping):
        raise ValueError(f"{owner}: not a LookAhead state dict")
    inner = dict(sd)
    if top is not None:
        inner["uniopt"] = {k: v for k, v in top.items() if k != "lookahead"}
    portable, aside = _portable(opt.inner, inner, ("slow",))
    params = _by_name(opt.inner)
    slow = {
        name: _host(f"{owner}: slow weights of parameter {name!r}", t, params.get(name))
        for name, t in ahead.get("slow", {}).items()
    }
    slow.update(aside["slow"])
    return {**{k: v for k, v in ahead.items() if k != "slow"}, "slow": slow, "inner": portable}


def portable_layout(opt: Any, sd: Any) -> dict[str, Any]:
    """torch.optim's layout as uniopt's portable dict, the parameters named by their
    position in ``opt`` (as torch matches them), whatever their keys: torch.optim's
    integer ids, or the names ``torch.distributed.checkpoint`` puts in their place."""
    return _portable(opt, sd)[0]


def _portable(opt: Any, sd: Any, kept: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """``portable_layout``, and the per-parameter entries named in ``kept`` set aside
    (by key, then parameter name), as host arrays."""
    owner = f"{type(opt).__name__}.load_state_dict"
    if not isinstance(sd, Mapping):
        raise TypeError(
            f"{owner}: expected a state dict (from state_dict()), got {type(sd).__name__}"
        )
    groups_in, state_in = sd.get("param_groups"), sd.get("state")
    if (
        "format" in sd
        or not isinstance(groups_in, list)
        or not isinstance(state_in, Mapping)
        or not all(isinstance(g, Mapping) and _keys(g.get("params")) for g in groups_in)
    ):
        raise ValueError(
            f"{owner}: not a uniopt optimizer state (format={sd.get('format')!r}) nor in "
            "torch.optim's layout (a 'state' dict and 'param_groups' listing the parameters "
            "by integer id, or by name as torch.distributed.checkpoint does)"
        )
    names = [n for g in opt.param_groups for n in g["param_names"]]
    params = [p for g in opt.param_groups for p in g["params"]]
    ids = [i for g in groups_in for i in g["params"]]
    if len(ids) != len(names):
        raise ValueError(
            f"{owner}: the state has {len(ids)} parameters, the optimizer {len(names)}"
        )
    position = {i: k for k, i in enumerate(ids)}
    if len(position) != len(ids):
        raise ValueError(f"{owner}: malformed state dict: a parameter is listed twice")
    for i, entry in state_in.items():
        if i not in position:
            raise ValueError(f"{owner}: state for unknown parameter id {i!r}")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{owner}: state of parameter {names[position[i]]!r} is not a dict")
    # every tensor as this process's piece of its parameter; uniopt's own entries aside
    aside: dict[str, dict[str, Any]] = {key: {} for key in (*kept, *opt._custom_state)}
    state = {}
    for i, entry in state_in.items():
        k = position[i]
        where = f"{owner}: state {{!r}} of parameter {names[k]!r}"
        local = {
            key: v if key == "step" else _local(where.format(key), v, params[k])
            for key, v in entry.items()
        }
        for key in aside.keys() & local.keys():
            aside[key][names[k]] = port._common.host(local.pop(key))
        state[i] = local
    top = _extras(sd.get("uniopt"))
    grouped = [_extras(g.get("uniopt")) for g in groups_in]
    extra = top if top is not None else next((x for x in grouped if x is not None), None)
    if extra is None:  # saved by torch.optim itself
        if opt.algorithm not in port.TORCH_OPTIMIZERS or opt._custom_state:
            raise ValueError(
                f"{owner}: the state dict carries none of uniopt's entries (torch.optim's "
                "own, or one that lost them: torch.distributed.checkpoint with "
                "flatten_optimizer_state_dict=True keeps only what torch.optim's "
                f"optimizers have), and torch.optim has no twin of {opt.algorithm!r}"
            )
        torch_sd = {
            "state": state,
            "param_groups": [{k: v for k, v in g.items() if k != "uniopt"} for g in groups_in],
        }
        return port.from_torch_state_dict(torch_sd, opt.algorithm, names), aside
    to_uniopt = {v: k for k, v in _TORCH_SLOT.get(extra.get("algorithm"), {}).items()}
    by_id = top.get("steps") if top is not None else None
    recorded: list[Any] = []
    for group, x in zip(groups_in, grouped):
        steps = x.get("steps") if x is not None else None
        if isinstance(steps, list) and len(steps) == len(group["params"]):
            recorded += steps
        else:
            recorded += [
                by_id.get(i) if isinstance(by_id, Mapping) else None for i in group["params"]
            ]
    converted_state = {}
    for i, entry in state.items():
        k = position[i]
        converted = {
            to_uniopt.get(key, key): port._common.host(v)
            for key, v in entry.items()
            if key != "step"
        }
        step = _step(entry.get("step"), recorded[k], bool(converted))
        if step in (None, 0) and not converted:
            continue  # only uniopt's own entries (slow weights, custom state)
        converted["step"] = step
        converted_state[names[k]] = converted
    groups = []
    for group in groups_in:
        out = {k: v for k, v in group.items() if k not in ("params", "param_names", "uniopt")}
        out["params"] = [names[position[i]] for i in group["params"]]
        groups.append(out)
    custom_in = (top.get("custom_state") if top is not None else None) or {}
    if not isinstance(custom_in, Mapping) or not all(
        isinstance(c, Mapping) for c in custom_in.values()
    ):
        raise ValueError(f"{owner}: malformed state dict: 'custom_state' is not a dict of dicts")
    by_name = _by_name(opt)
    custom = {
        prefix: {
            name: _host(
                f"{owner}: custom state {prefix!r} of parameter {name!r}", a, by_name.get(name)
            )
            for name, a in arrays.items()
        }
        for prefix, arrays in custom_in.items()
    }
    for prefix in opt._custom_state:
        if aside[prefix]:
            custom.setdefault(prefix, {}).update(aside.pop(prefix))
    step_count = extra.get("step_count")
    taken = [e["step"] for e in converted_state.values() if _whole(e["step"])]
    if _whole(step_count) and taken:  # torch.optim may have stepped on since
        step_count = max(step_count, *taken)
    ignored = ("steps", "custom_state", "lookahead", "state", "param_groups")
    return {
        **{k: v for k, v in extra.items() if k not in ignored},
        "step_count": step_count,
        "custom_state": custom,
        "param_groups": groups,
        "state": converted_state,
    }, aside


def _extras(x: Any) -> Mapping[str, Any] | None:
    return x if isinstance(x, Mapping) else None


def _by_name(opt: Any) -> dict[str, Any]:
    return {n: p for g in opt.param_groups for n, p in zip(g["param_names"], g["params"])}


def _local(where: str, value: Any, p: Any) -> Any:
    """A state tensor as parameter ``p``'s piece on this process (a DTensor, or a
    plain tensor of ``p``'s global shape, cut as ``p`` is cut: see
    ``DTensorAdapter.local_like``); anything else unchanged."""
    if not isinstance(value, torch.Tensor) or p is None:
        return value
    for x in (value, p):
        convert = getattr(adapter_for(x), "local_like", None)
        if convert is not None:
            return convert(value, p, where)
    return value


def _host(where: str, value: Any, p: Any) -> Any:
    return port._common.host(_local(where, value, p))


def _step(torch_step: Any, recorded: Any, has_state: bool) -> Any:
    """A parameter's step count: torch's own entry where there is one (it is what torch
    code edits), exactly the recorded count where that entry is its rounding (torch
    keeps steps as float32); 1 for state torch.optim began (no count recorded)."""
    if torch_step is None:
        return 1 if recorded == 0 and has_state else recorded
    if (
        _whole(recorded)
        and isinstance(torch_step, torch.Tensor)
        and torch_step.numel() == 1
        and torch_step.dtype.is_floating_point
        and float(torch_step) == float(torch.tensor(float(recorded), dtype=torch_step.dtype))
    ):
        return recorded
    return _number(torch_step)


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _keys(values: Any) -> bool:
    """Whether ``values`` lists parameters as torch.optim (integer ids) or DCP (names)
    do."""
    return isinstance(values, list) and all(
        isinstance(i, (int, str)) and not isinstance(i, bool) for i in values
    )


def _number(x: Any) -> Any:
    """A 0-d tensor holding a whole number as an int (torch keeps steps as float
    tensors); anything else unchanged, for the load to refuse."""
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not x.is_complex():
        value = float(x)
        if value.is_integer():
            return int(value)
    return x
