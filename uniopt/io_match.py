"""Matching saved optimizer state to an optimizer, by parameter name.

:func:`load_state` (behind ``opt.load_state_dict`` of a file's content and
``uniopt.load(path, into=...)``) checks a state dict against an optimizer (algorithm,
parameter names per group, state slots, shapes, dtypes, hyperparameters) and loads it,
strictly (every mismatch refused, all listed in one :class:`StateMismatchError`) or not
(the intersection loaded, the rest reported in a :class:`LoadReport`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from uniopt.io_codec import OPTIMIZER_FORMAT, is_optimizer, is_scheduler
from uniopt.io_safetensors import StateFileError
from uniopt.state import entry_problems

__all__ = ["LoadReport", "StateMismatchError", "load_state", "restore"]


class StateMismatchError(ValueError):
    """A state that does not fit the optimizer; ``problems`` lists every mismatch.
    The optimizer was not changed."""

    __module__ = "uniopt.io"  # where users import it from

    def __init__(self, owner: str, problems: list[str]):
        self.problems = list(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(
            f"{owner}: the state does not match the optimizer "
            f"({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"
            f"\n  - {lines}"
        )


@dataclass
class LoadReport:
    """What :func:`load_state` (or ``load(..., into=opt)``) did."""

    #: parameters whose state was loaded
    loaded: list[str] = field(default_factory=list)
    #: saved state that was left out (``strict=False``), with the reason
    skipped: dict[str, str] = field(default_factory=dict)
    #: parameters of the optimizer the file has nothing for (they start fresh)
    missing: list[str] = field(default_factory=list)
    #: other remarks (param groups matched differently, schedules not restored)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Everything in the state was loaded and every parameter was covered."""
        return not self.skipped and not self.missing


def load_state(opt: Any, state_dict: Mapping[str, Any], *, strict: bool = True) -> LoadReport:
    """Load an optimizer ``state_dict`` into the uniopt optimizer ``opt``, by name.

    State is matched by parameter name, never by position. With ``strict=True`` (the
    default) any difference (algorithm, parameter names, param groups, state slots,
    shapes, dtypes, invalid hyperparameters) raises one :class:`StateMismatchError`
    listing every problem, and ``opt`` is unchanged. With ``strict=False`` the
    intersection is loaded: state of parameters ``opt`` does not have, or whose
    shape/dtype/slots do not fit, is skipped; parameters with no saved state start
    fresh; each group takes the hyperparameters of the saved group its parameters came
    from (or keeps its own). The returned report lists what was skipped. A different
    algorithm is an error in both modes.
    """
    plan = _match(opt, state_dict, strict)
    if plan.problems:
        raise StateMismatchError(f"{type(opt).__name__}.load_state_dict", plan.problems)
    opt.load_state_dict(plan.state_dict)
    return plan.report


def _part(info: Mapping[str, Any], path: list) -> dict[str, Any]:
    """The summary of what a file's ``info`` says was saved at ``path``."""
    merged: dict[str, Any] = {}
    for part in info.get("parts", []):
        if isinstance(part, dict) and part.get("path") == path:
            merged.update(part)
    return merged


def restore(path: Any, obj: Any, info: dict[str, Any], into: Any, strict: bool) -> Any:
    """Load ``obj`` (a file's content; ``info`` its summary) into ``into``: one
    optimizer or scheduler, or a dict of them matched by key against a checkpoint. All
    parts are checked before any changes; if a later part fails, earlier ones are
    restored. Returns the :class:`LoadReport` (or a dict of them)."""
    if isinstance(into, Mapping):
        if not isinstance(obj, Mapping):
            raise StateFileError(path, "the file does not hold a checkpoint dict; pass one object")
        missing = [k for k in into if k not in obj]
        if missing:
            raise StateFileError(
                path, f"the checkpoint has no entries {missing}; it holds {sorted(map(str, obj))}"
            )
        targets = [(k, into[k], obj[k], _part(info, [k])) for k in into]
    else:
        if info.get("kind") == "checkpoint" and isinstance(obj, Mapping):
            raise StateFileError(
                path,
                f"the file holds a checkpoint with entries {sorted(map(str, obj))}: pass "
                "into={key: object, ...}",
            )
        targets = [(None, into, obj, _part(info, []))]
    plans = []
    problems = []
    for key, target, state, part in targets:
        prefix = f"[{key!r}] " if key is not None else ""
        if is_optimizer(target):
            plan = _match(target, state, strict)
            problems += [prefix + p for p in plan.problems]
            plans.append(plan)
        else:
            plans.append(None)
            if not callable(getattr(target, "load_state_dict", None)):
                problems.append(f"{prefix}{type(target).__name__} has no load_state_dict()")
            elif part.get("class") and part["class"] != type(target).__qualname__:
                problems.append(
                    f"{prefix}the file holds a {part['class']} state, not a "
                    f"{type(target).__qualname__} state"
                )
            elif is_scheduler(target) and part.get("kind") == "optimizer":
                problems.append(f"{prefix}the file holds an optimizer state, not a scheduler state")
    if problems:
        raise StateMismatchError(f"uniopt.load({os.fspath(path)!r})", problems)
    done: list[tuple[Any, Any]] = []
    reports = {}
    try:
        for (key, target, state, _), plan in zip(targets, plans):
            snapshot = (
                getattr(target, "portable_state_dict", target.state_dict)()
                if len(targets) > 1
                else None
            )
            if plan is not None:
                target.load_state_dict(plan.state_dict)
                reports[key] = plan.report
            else:
                target.load_state_dict(state)
                reports[key] = None
            done.append((target, snapshot))
    except BaseException:
        for target, snapshot in reversed(done):
            with contextlib.suppress(Exception):
                target.load_state_dict(snapshot)
        raise
    return reports if isinstance(into, Mapping) else reports[None]


@dataclass
class _Plan:
    state_dict: dict[str, Any]
    problems: list[str]
    report: LoadReport


def _match(opt: Any, sd: Any, strict: bool) -> _Plan:
    """Check ``sd`` against ``opt`` by name and build the state dict to load.

    ``problems`` is what must be refused: every mismatch with ``strict``, otherwise only
    what no intersection can fix (another algorithm, invalid hyperparameters)."""
    owner = f"{type(opt).__name__}.load_state_dict"
    if not isinstance(sd, Mapping):
        raise TypeError(f"{owner}: expected a state dict, got {type(sd).__name__}")
    if sd.get("format") != OPTIMIZER_FORMAT:
        raise ValueError(f"{owner}: not a uniopt optimizer state (format={sd.get('format')!r})")
    saved_groups, saved_state = sd.get("param_groups"), sd.get("state")
    if not isinstance(saved_groups, list) or not all(
        isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in saved_groups
    ):
        raise ValueError(f"{owner}: malformed state: 'param_groups' must be a list of groups")
    if not isinstance(saved_state, Mapping):
        raise ValueError(f"{owner}: malformed state: 'state' must be a dict")
    fatal: list[str] = []  # refused in both modes
    mismatches: list[str] = []  # refused with strict, skipped without
    report = LoadReport()
    algorithm = opt.algorithm
    same_algorithm = sd.get("algorithm") == algorithm
    if not same_algorithm:
        fatal.append(f"the state is for {sd.get('algorithm')!r}, the optimizer is {algorithm!r}")
    params = _targets(opt)  # name -> (group index, shape, dtype)
    saved_group_of = {n: j for j, g in enumerate(saved_groups) for n in g["params"]}

    if strict:
        if len(saved_groups) != len(opt.param_groups):
            mismatches.append(
                f"the state has {len(saved_groups)} param groups, the optimizer "
                f"{len(opt.param_groups)}"
            )
        for i, (saved, group) in enumerate(zip(saved_groups, opt.param_groups)):
            missing = [n for n in group["param_names"] if n not in saved["params"]]
            unexpected = [n for n in saved["params"] if n not in group["param_names"]]
            if missing:
                mismatches.append(f"group {i}: the state has no parameters {missing}")
            if unexpected:
                mismatches.append(f"group {i}: the optimizer has no parameters {unexpected}")
        groups = [dict(g) for g in saved_groups]
    else:
        groups = []
        for i, group in enumerate(opt.param_groups):
            origin = {saved_group_of[n] for n in group["param_names"] if n in saved_group_of}
            hp: dict[str, Any] = {}
            if len(origin) == 1:
                hp = {k: v for k, v in saved_groups[origin.pop()].items() if k != "params"}
            elif origin:
                report.notes.append(
                    f"group {i}: its parameters come from saved groups {sorted(origin)}; "
                    "it keeps its own hyperparameters"
                )
            groups.append({**hp, "params": list(group["param_names"])})
        report.missing = [n for n in params if n not in saved_group_of]
        for n in saved_group_of:
            if n not in params:
                report.skipped[n] = "the optimizer has no such parameter"
    for i, group in enumerate(groups):
        if isinstance(group.get("unsaved"), Mapping):
            report.notes.append(
                f"group {i}: saved without {sorted(group['unsaved'])} (functions cannot be "
                "saved); the optimizer keeps its own"
            )

    slots_of = {}
    for i, group in enumerate(opt.param_groups):
        source = groups[i] if i < len(groups) else {}
        hp = {k: source.get(k, group[k]) for k in opt.defaults}
        try:
            hp = type(opt)._validated(hp, owner)
            slots_of[i] = opt.rule.from_group(hp).slots()
        except (TypeError, ValueError, KeyError) as error:
            fatal.append(f"group {i}: {error}")

    state: dict[str, Any] = {}
    for name, entry in saved_state.items():
        if name not in params:
            if strict:
                mismatches.append(f"the optimizer has no parameter {name!r} (the state has)")
            else:
                report.skipped[name] = "the optimizer has no such parameter"
            continue
        i, shape, dtype, master = params[name]
        if i not in slots_of or not same_algorithm:
            continue  # already refused: slot checks would only add noise
        slots = {**slots_of[i], "master": 0.0} if master else slots_of[i]
        wrong = entry_problems(entry, slots, shape, dtype)
        if wrong:
            mismatches += [f"{name!r}: {w}" for w in wrong]
            report.skipped[name] = "; ".join(wrong)
            continue
        state[name] = entry
        report.loaded.append(name)
    if strict:
        report.skipped = {}
    problems = fatal + mismatches if strict else fatal
    return _Plan({**sd, "param_groups": groups, "state": state}, problems, report)


def _targets(opt: Any) -> dict[str, tuple[int, tuple[int, ...], str, bool]]:
    """``name -> (group index, shape, state dtype, master)`` of every parameter. With
    ``multi_precision`` float16/bfloat16 parameters keep float32 state and a float32
    ``master`` copy (as the engine's segments do)."""
    from uniopt._adapter import adapter_for

    multi_precision = bool(getattr(opt, "multi_precision", False))
    out = {}
    for i, group in enumerate(opt.param_groups):
        for name, p in zip(group["param_names"], group["params"]):
            adapter = adapter_for(p)
            data = adapter.data(p)
            dtype = adapter.dtype_name(data)
            master = multi_precision and dtype in ("float16", "bfloat16")
            out[name] = (i, tuple(data.shape), "float32" if master else dtype, master)
    return out
