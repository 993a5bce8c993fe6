"""``state_dict`` / ``load_state_dict``: portable, name-keyed optimizer state.

The dict holds host numpy arrays and plain Python values only::

    {"format": "uniopt.optimizer", "version": 1, "algorithm": "adamw", "step_count": 7,
     "param_groups": [{"lr": 1e-3, ..., "params": ["fc.weight", "fc.bias"]}],
     "state": {"fc.weight": {"step": 7, "exp_avg": ndarray, "exp_avg_sq": ndarray}, ...}}

A parameter that has not been stepped has no entry. Loading matches by name, checks
everything first and changes nothing unless all of it fits. ``opt`` is a
:class:`uniopt.Optimizer` (typed ``Any``: this module is imported by that one).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT = "uniopt.optimizer"
VERSION = 1
#: the largest step count a state may hold: steps enter float64 arithmetic (beta
#: powers, schedules), exact for integers up to 2**53
MAX_STEP = 2**53
_NOT_HYPERPARAMETERS = ("params", "param_names")


def state_dict(opt: Any) -> dict[str, Any]:
    groups = []
    for group in opt.param_groups:
        saved = {k: v for k, v in group.items() if k not in _NOT_HYPERPARAMETERS}
        saved["params"] = list(group["param_names"])
        groups.append(saved)
    state: dict[str, dict[str, Any]] = {}
    for segment in (s for segments in opt._segments for s in segments):
        host = {k: segment.adapter.to_numpy(v).reshape(-1) for k, v in segment.state.items()}
        for span, steps in zip(segment.layout.spans, segment.steps):
            if steps:
                entry: dict[str, Any] = {"step": steps}
                for slot, flat in host.items():
                    entry[slot] = flat[span.offset : span.stop].reshape(span.shape).copy()
                state[span.name] = entry
    custom = {
        prefix: {name: _host(array) for (name, _, _), array in zip(opt._entries(), arrays)}
        for prefix, arrays in opt._custom_state.items()
    }
    dynamic = getattr(opt.loss_scale, "state_dict", None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "loss_scale": dynamic() if dynamic else None,
        "custom_state": custom,
        "algorithm": opt.algorithm,
        "flavor": opt.flavor,
        "step_count": opt._step_count,
        "param_groups": groups,
        "state": state,
    }


def load_state_dict(opt: Any, sd: Mapping[str, Any]) -> None:
    owner = f"{type(opt).__name__}.load_state_dict"
    _check_header(owner, sd, opt.algorithm)
    saved_groups = sd["param_groups"]
    if len(saved_groups) != len(opt.param_groups):
        raise ValueError(
            f"{owner}: the state has {len(saved_groups)} param groups, "
            f"the optimizer {len(opt.param_groups)}"
        )
    problems: list[str] = []
    new_hp = []
    for i, (saved, group) in enumerate(zip(saved_groups, opt.param_groups)):
        missing = sorted(set(group["param_names"]) - set(saved["params"]))
        unexpected = sorted(set(saved["params"]) - set(group["param_names"]))
        if missing or unexpected:
            problems.append(f"group {i}: missing {missing}, unexpected {unexpected}")
        hp = {k: saved.get(k, group[k]) for k in opt.defaults}
        try:
            new_hp.append(opt._validated(hp, owner))
        except (TypeError, ValueError) as error:
            problems.append(f"group {i}: {error}")
    known = {n for g in opt.param_groups for n in g["param_names"]}
    problems += [f"unknown parameter '{n}'" for n in sorted(set(sd["state"]) - known)]
    if problems:
        raise ValueError(f"{owner}: state does not match the optimizer: " + "; ".join(problems))
    built = [
        [
            _build_segment(owner, segment, _initial(opt, hp, segment), sd["state"], problems)
            for segment in segments
        ]
        for segments, hp in zip(opt._segments, new_hp)
    ]
    custom = _build_custom(opt, sd.get("custom_state", {}), problems)
    if problems:
        raise ValueError(f"{owner}: state does not match the optimizer: " + "; ".join(problems))
    saved_scale = sd.get("loss_scale")
    if saved_scale is not None and hasattr(opt.loss_scale, "load_state_dict"):
        opt.loss_scale.load_state_dict(saved_scale)  # validated there before it changes
    for prefix, arrays in custom.items():
        opt._custom_state[prefix][:] = arrays  # the subclass holds this very list
    for group, hp, segments, new in zip(opt.param_groups, new_hp, opt._segments, built):
        group.update(hp)
        for segment, (slots, steps) in zip(segments, new):
            segment.state, segment.steps = slots, steps
    opt._step_count = int(sd["step_count"])


def _initial(opt: Any, hp: Mapping[str, Any], segment: Any) -> dict[str, Any]:
    """The initial value of each state slot of ``segment`` (complex state in real pairs
    starts at ``complex(v, v)``, as the engine's)."""
    from uniopt.engine import pairs

    rule = opt.rule.from_group(hp)
    return pairs.initial_values(rule, pairs.is_complex(segment.state_dtype), rule.slots())


def _check_header(owner: str, sd: Any, algorithm: str) -> None:
    if not isinstance(sd, Mapping):
        raise TypeError(
            f"{owner}: expected a state dict (from state_dict()), got {type(sd).__name__}"
        )
    if sd.get("format") != FORMAT:
        raise ValueError(f"{owner}: not a uniopt optimizer state (format={sd.get('format')!r})")
    version = sd.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ValueError(
            f"{owner}: unsupported state version {version!r} (this uniopt reads up to {VERSION})"
        )
    if "algorithm" not in sd:
        raise ValueError(f"{owner}: malformed state: 'algorithm' is missing")
    if sd.get("algorithm") != algorithm:
        raise ValueError(f"{owner}: the state is for {sd.get('algorithm')!r}, not {algorithm!r}")
    for key, kind in (("param_groups", list), ("state", Mapping), ("step_count", numbers.Integral)):
        if not isinstance(sd.get(key), kind):
            raise ValueError(
                f"{owner}: malformed state: '{key}' is missing or not a {kind.__name__}"
            )
    problem = step_problem(sd["step_count"], first=0)
    if problem:
        raise ValueError(f"{owner}: malformed state: step_count {problem}")
    for i, group in enumerate(sd["param_groups"]):
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), list):
            raise ValueError(
                f"{owner}: malformed state: param group {i} is not a dict with a 'params' list"
            )


def step_problem(step: Any, first: int = 1) -> str | None:
    """Why ``step`` is not a step count (an int from ``first`` to :data:`MAX_STEP`),
    or None."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        return f"must be an int, got {type(step).__name__}"
    if not first <= step <= MAX_STEP:
        return f"must be in [{first}, 2**53], got {step}"
    return None


def _build_segment(
    owner: str,
    segment: Any,
    slots: Mapping[str, float],
    saved: Mapping[str, Any],
    problems: list[str],
) -> tuple[dict[str, Any], list[int]]:
    """New flat state and step counts for one segment, built on the host then moved.

    With multi_precision the state is float32 and includes the "master" copy; a tensor
    without saved state starts its master from its current value."""
    like_shape = segment.state_shape if segment.shaped else (1,)  # shaped: its placement
    like = segment.xp.zeros(like_shape, dtype=segment.state_dtype, device=segment.device)
    dtype = segment.adapter.dtype_name(like)
    if segment.master:
        current = segment.adapter.to_numpy(segment.flat_params()).astype(dtype).reshape(-1)
        slots = {**slots, "master": current}
    host = {}
    steps = [0] * len(segment.layout.spans)
    for i, span in enumerate(segment.layout.spans):
        entry = saved.get(span.name)
        if entry is None:
            continue
        found = entry_problems(entry, slots, span.shape, dtype)
        problems += [f"'{span.name}': {p}" for p in found]
        if found:
            continue
        steps[i] = int(entry["step"])
        for slot, initial in slots.items():
            if slot not in host:
                host[slot] = np.empty(segment.layout.size, entry[slot].dtype)
                host[slot][...] = initial  # a number, or the master's current values
            host[slot][span.offset : span.stop] = entry[slot].reshape(-1)
    moved = (
        {
            k: segment.adapter.from_numpy(v.reshape(segment.state_shape), like)
            for k, v in host.items()
        }
        if not problems
        else {}
    )
    return moved, steps


def _host(array: Any) -> np.ndarray:
    from uniopt._adapter import adapter_for

    return adapter_for(array).to_numpy(array)


def _build_custom(opt: Any, saved: Mapping[str, Any], problems: list[str]) -> dict[str, list[Any]]:
    """New arrays for the ``clone_state`` lists of a custom optimizer."""
    from uniopt._adapter import adapter_for

    if not isinstance(saved, Mapping):
        problems.append("custom_state must be a dict")
        return {}
    expected, got = set(opt._custom_state), set(saved)
    if expected != got:
        problems.append(f"custom state {sorted(got)} does not match {sorted(expected)}")
        return {}
    out = {}
    for prefix, arrays in opt._custom_state.items():
        new = []
        for (name, _, _), like in zip(opt._entries(), arrays):
            value = saved[prefix].get(name)
            adapter = adapter_for(like)
            dtype = adapter.dtype_name(like)
            if (
                not isinstance(value, np.ndarray)
                or tuple(value.shape) != tuple(like.shape)
                or (value.dtype.name != dtype)
            ):
                problems.append(
                    f"'{name}': custom state '{prefix}' missing or not {dtype}{list(like.shape)}"
                )
                continue
            new.append(adapter.from_numpy(value, like))
        out[prefix] = new
    return out


def entry_problems(
    entry: Any, slots: Mapping[str, Any], shape: tuple[int, ...], dtype: str
) -> list[str]:
    """What keeps one parameter's saved state from fitting: every slot an array of the
    parameter's shape and the state dtype, a positive integer step, nothing else."""
    if not isinstance(entry, Mapping):
        return [f"state entry is a {type(entry).__name__}, not a dict"]
    out = []
    problem = step_problem(entry.get("step"))
    if problem:
        out.append(f"step {problem}")
    for slot in slots:
        value = entry.get(slot)
        if not isinstance(value, np.ndarray):
            out.append(f"missing state {slot!r}")
        elif tuple(value.shape) != tuple(shape) or value.dtype.name != dtype:
            out.append(
                f"state {slot!r} is {value.dtype.name}{list(value.shape)}, "
                f"expected {dtype}{list(shape)}"
            )
    extra = sorted(set(entry) - set(slots) - {"step"}, key=str)
    if extra:
        out.append(f"unexpected state {extra}")
    return out
