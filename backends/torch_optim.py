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
algorithm; uniopt's own entries (flavor, step counts, loss scale, names) travel under
the extra key ``"uniopt"``, which torch ignores. ``load_state_dict`` takes that layout,
one saved by ``torch.optim`` itself, or the portable name-keyed dict of
:func:`uniopt.save`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.optim import Optimizer as TorchOptimizer

from uniopt import state as state_forms
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
    """``opt.state`` on torch: each parameter (that has taken a step) to its state,
    as views of the flat state the step updates (writing into them changes the
    optimizer's state, as with torch.optim); ``step`` is a fresh 0-d tensor."""

    def __init__(self, opt: Any):
        self._entries: dict[int, tuple[Any, dict[str, Any]]] = {}
        for segments in opt._segments:
            for segment in segments:
                for span, p, steps in zip(segment.layout.spans, segment.params, segment.steps):
                    if not steps:
                        continue
                    entry: dict[str, Any] = {"step": torch.tensor(float(steps))}
                    for slot, flat in segment.state.items():
                        entry[slot] = flat[span.offset : span.stop].view(span.shape)
                    self._entries[id(p)] = (p, entry)

    def __getitem__(self, p: Any) -> dict[str, Any]:
        found = self._entries.get(id(p))
        return {} if found is None else found[1]

    def __contains__(self, p: object) -> bool:
        return id(p) in self._entries

    def __iter__(self) -> Iterator[Any]:
        return (p for p, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


def _state(self: Any) -> StateView:
    return StateView(self)


# ---- state_dict in torch.optim's layout ---------------------------------------------


def _state_dict(self: Any) -> dict[str, Any]:
    """torch.optim's layout: ``{"state": {id: {key: tensor}}, "param_groups": [...]}``
    with integer ids in group order, plus uniopt's own entries under ``"uniopt"``."""
    for hook in self._optimizer_state_dict_pre_hooks.values():
        hook(self)
    portable = self.portable_state_dict()
    if portable.get("algorithm") == "lookahead":  # the inner's, plus the slow weights
        out = torch_layout(portable["inner"])
        out["uniopt"]["lookahead"] = {
            **{k: v for k, v in portable.items() if k not in ("inner", "slow")},
            "slow": {name: _tensor(a) for name, a in portable["slow"].items()},
        }
    else:
        out = torch_layout(portable)
    for hook in self._optimizer_state_dict_post_hooks.values():
        result = hook(self, out)
        if result is not None:
            out = result
    return out


def torch_layout(portable: Mapping[str, Any]) -> dict[str, Any]:
    """A portable uniopt state dict in torch.optim's layout (tensors on the CPU)."""
    to_torch = _TORCH_SLOT.get(portable["algorithm"], {})
    per_step = port.TORCH_OPTIMIZERS.get(portable["algorithm"])
    groups, state, steps, index = [], {}, {}, 0
    for group in portable["param_groups"]:
        names = list(group["params"])
        out = {k: v for k, v in group.items() if k != "params"}
        out["params"] = list(range(index, index + len(names)))
        out["param_names"] = names
        groups.append(out)
        for name in names:
            entry = portable["state"].get(name)
            if entry is not None:
                converted = {
                    to_torch.get(slot, slot): _tensor(value)
                    for slot, value in entry.items()
                    if slot != "step"
                }
                if per_step is None or per_step.per_parameter_step:
                    converted["step"] = torch.tensor(float(entry["step"]))
                state[index] = converted
                steps[index] = int(entry["step"])
            index += 1
    extra = {k: v for k, v in portable.items() if k not in ("state", "param_groups")}
    extra["custom_state"] = {
        prefix: {name: _tensor(a) for name, a in arrays.items()}
        for prefix, arrays in (portable.get("custom_state") or {}).items()
    }
    extra["steps"] = steps
    return {"state": state, "param_groups": groups, "uniopt": extra}


def _tensor(array: np.ndarray) -> Any:
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(array).copy())


def _load_state_dict(self: Any, state_dict: Mapping[str, Any]) -> None:
    """Load torch.optim's layout (this optimizer's, or one ``torch.optim`` saved) or
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
    """A LookAhead's torch layout (its inner's, plus ``uniopt.lookahead``) as its
    portable dict."""
    extra = sd.get("uniopt") if isinstance(sd, Mapping) else None
    ahead = extra.get("lookahead") if isinstance(extra, Mapping) else None
    if not isinstance(ahead, Mapping) or not isinstance(ahead.get("slow"), Mapping):
        raise ValueError(f"{type(opt).__name__}.load_state_dict: not a LookAhead state dict")
    inner = dict(sd)
    inner["uniopt"] = {k: v for k, v in extra.items() if k != "lookahead"}
    return {
        **{k: v for k, v in ahead.items() if k != "slow"},
        "slow": {name: port._common.host(t) for name, t in ahead["slow"].items()},
        "inner": portable_layout(opt.inner, inner),
    }


def portable_layout(opt: Any, sd: Any) -> dict[str, Any]:
    """torch.optim's layout as uniopt's portable dict, the parameters named by their
    position in ``opt`` (as torch matches them)."""
    owner = f"{type(opt).__name__}.load_state_dict"
    if not isinstance(sd, Mapping):
        raise TypeError(
            f"{owner}: expected a state dict (from state_dict()), got {type(sd).__name__}"
        )
    groups_in, state_in = sd.get("param_groups"), sd.get("state")
    if (
        not isinstance(groups_in, list)
        or not isinstance(state_in, Mapping)
        or not all(isinstance(g, Mapping) and _ids(g.get("params")) for g in groups_in)
        or not _ids(list(state_in))
    ):
        raise ValueError(
            f"{owner}: not a uniopt optimizer state (format={sd.get('format')!r}) nor in "
            "torch.optim's layout (a 'state' dict and 'param_groups' keyed by integer "
            "parameter ids)"
        )
    names = [n for g in opt.param_groups for n in g["param_names"]]
    extra = sd.get("uniopt")
    if not isinstance(extra, Mapping):  # saved by torch.optim itself
        return port.from_torch_state_dict(sd, opt.algorithm, names)
    if not isinstance(sd.get("state"), Mapping):
        raise ValueError(f"{owner}: malformed state dict: 'state' is not a dict")
    ids = [i for g in sd["param_groups"] for i in g.get("params", [])]
    if len(ids) != len(names):
        raise ValueError(
            f"{owner}: the state has {len(ids)} parameters, the optimizer {len(names)}"
        )
    name_of = dict(zip(ids, names))
    to_uniopt = {v: k for k, v in _TORCH_SLOT.get(extra.get("algorithm"), {}).items()}
    steps = extra.get("steps", {})
    state = {}
    for i, entry in sd["state"].items():
        if i not in name_of or not isinstance(entry, Mapping):
            raise ValueError(f"{owner}: state for unknown parameter id {i!r}")
        converted = {
            to_uniopt.get(k, k): port._common.host(v) for k, v in entry.items() if k != "step"
        }
        # torch's own entry wins where there is one (it is what torch code edits)
        converted["step"] = _number(entry["step"]) if "step" in entry else steps.get(i)
        state[name_of[i]] = converted
    groups = []
    for group in sd["param_groups"]:
        out = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        out["params"] = [name_of[i] for i in group.get("params", [])]
        groups.append(out)
    custom = extra.get("custom_state") or {}
    if not isinstance(custom, Mapping) or not all(isinstance(c, Mapping) for c in custom.values()):
        raise ValueError(f"{owner}: malformed state dict: 'custom_state' is not a dict of dicts")
    return {
        **{k: v for k, v in extra.items() if k != "steps"},
        "custom_state": {
            prefix: {name: port._common.host(a) for name, a in arrays.items()}
            for prefix, arrays in custom.items()
        },
        "param_groups": groups,
        "state": state,
    }


def _ids(values: Any) -> bool:
    """Whether ``values`` is a list of integer parameter ids (torch.optim's layout)."""
    return isinstance(values, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in values
    )


def _number(x: Any) -> Any:
    """A 0-d tensor holding a whole number as an int (torch keeps steps as float
    tensors); anything else unchanged, for the load to refuse."""
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not x.is_complex():
        value = float(x)
        if value.is_integer():
            return int(value)
    return x
