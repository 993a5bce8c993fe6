"""The stateful face: torch/OneFlow/Paddle-style optimizers over any backend.

    opt = uniopt.AdamW(params, lr=1e-3)
    loss.backward(); opt.step(); opt.zero_grad()      # torch: gradients from .grad
    opt.step(grads)                                   # numpy / cupy / jax
    opt.params                                        # the parameters, as given

Parameters are planned into segments per (param group, backend, device, dtype) when
a group is added; every step validates all gradients first, so a bad gradient
changes nothing, then runs the algorithm's rule over each segment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar

from uniopt import _tree, flavors
from uniopt import lr as lr_forms
from uniopt import params as params_forms
from uniopt import state as state_forms
from uniopt._adapter import Adapter, adapter_for
from uniopt.engine.segment import Segment
from uniopt.rule import Rule


class Optimizer:
    """Base of every stateful optimizer; subclasses set ``rule`` and a typed ``__init__``."""

    #: the name state files and the registry know it by, e.g. "adamw"
    algorithm: ClassVar[str]
    rule: ClassVar[type[Rule]]

    def __init__(self, params: Any, flavor: str | None = None, **defaults: Any):
        self.flavor = flavor
        self.defaults = self._validated(defaults, flavor=flavor)
        self.param_groups: list[dict[str, Any]] = []
        self._segments: list[list[Segment]] = []
        self._ids: set[int] = set()
        self._step_count = 0
        self._last_lrs: list[Any] | None = None
        groups, self._rebuild = params_forms.as_groups(params)
        for group in groups:
            self.add_param_group(group)
        if not self.param_groups or not any(g["params"] for g in self.param_groups):
            raise ValueError(f"{self._owner}: got an empty parameter list")

    # ---- construction -------------------------------------------------------------

    @property
    def _owner(self) -> str:
        return type(self).__name__

    @classmethod
    def _validated(
        cls, hp: Mapping[str, Any], owner: str | None = None, flavor: str | None = None
    ) -> dict[str, Any]:
        """Hyperparameters with flavor defaults filled in, each checked by its validator."""
        owner = owner or cls.__name__
        out = flavors.resolve(owner, cls.__name__, cls.rule.flavors, hp, flavor)
        hp = out
        for name, check in cls.rule.hyperparameters.items():
            out[name] = (
                lr_forms.learning_rate(owner, name, hp[name])
                if name == "lr"
                else (check(owner, name, hp[name]))
            )
        cls.rule.check(owner, out)
        return out

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group of parameters with its own hyperparameters (others default)."""
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError(f"{self._owner}: a param group must be a dict with a 'params' key")
        first = sum(len(g["params"]) for g in self.param_groups)
        names, leaves, _ = params_forms.named_group(param_group, first)
        taken = {n for g in self.param_groups for n in g["param_names"]}
        seen_ids: set[int] = set()
        for name, p in zip(names, leaves):
            if id(p) in self._ids or id(p) in seen_ids:
                raise ValueError(f"{self._owner}: parameter '{name}' is given more than once")
            if name in taken:
                raise ValueError(f"{self._owner}: parameter name '{name}' is used twice")
            seen_ids.add(id(p))
            taken.add(name)
        hp = {k: param_group.get(k, v) for k, v in self.defaults.items()}
        group = {**param_group, **self._validated(hp, self._owner)}
        group["params"], group["param_names"] = list(leaves), names
        segments = self._plan(names, leaves)
        self.param_groups.append(group)
        self._segments.append(segments)
        self._ids |= seen_ids

    def _plan(self, names: list[str], leaves: list[Any]) -> list[Segment]:
        """Bucket a group's parameters by (backend, device, dtype), keeping order."""
        buckets: dict[tuple, list[int]] = {}
        adapters: dict[tuple, Adapter] = {}
        for i, (name, p) in enumerate(zip(names, leaves)):
            adapter = adapter_for(p)
            data = adapter.data(p)
            if adapter.mutable and not adapter.contiguous(data):
                raise ValueError(
                    f"{self._owner}: parameter '{name}' is not contiguous (or not writable); "
                    "uniopt writes parameters through flat views"
                )
            key = (adapter.name, adapter.device(data), adapter.dtype_name(data))
            buckets.setdefault(key, []).append(i)
            adapters[key] = adapter
        return [
            Segment(
                [names[i] for i in positions],
                [leaves[i] for i in positions],
                adapters[key],
                positions,
            )
            for key, positions in buckets.items()
        ]

    # ---- stepping -----------------------------------------------------------------

    def step(self, grads: Any = None, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step; returns the closure's loss when a closure is given.

        ``grads`` mirrors the parameters (same structure, or a mapping name -> array);
        without it gradients are read from the parameters (torch ``.grad``). A ``None``
        gradient skips its parameter, as torch.optim does.
        """
        loss = None
        if closure is not None:
            with self._context("enable_grad"):
                loss = closure()
        grads_by_segment = self._gradients(grads)
        lrs = []
        with self._context("no_grad"):
            for group, segments, group_grads in zip(
                self.param_groups, self._segments, grads_by_segment
            ):
                lr = lr_forms.lr_at(group["lr"], self._step_count)
                rule = self.rule.from_group(group)
                hp = {**{k: group[k] for k in self.rule.hyperparameters}, "lr": lr}
                for segment, segment_grads in zip(segments, group_grads):
                    segment.step(rule, segment_grads, partial(rule.scalars, hp))
                    for position, p in zip(segment.positions, segment.params):
                        group["params"][position] = p
                lrs.append(lr)
        self._step_count += 1
        self._last_lrs = lrs
        return loss

    def _context(self, kind: str) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        adapters = {s.adapter.name: s.adapter for segs in self._segments for s in segs}
        for adapter in adapters.values():
            stack.enter_context(getattr(adapter, kind)())
        return stack

    def _gradients(self, grads: Any) -> list[list[list[Any]]]:
        """Every gradient, per group and segment, validated before anything changes."""
        if grads is None:
            found = {}
            for group in self.param_groups:
                for name, p in zip(group["param_names"], group["params"]):
                    adapter = adapter_for(p)
                    if not adapter.grads_on_params:
                        raise TypeError(
                            f"{self._owner}: step() needs gradients for {adapter.name} "
                            f"parameters (parameter '{name}'): call step(grads)"
                        )
                    found[name] = adapter.get_grad(p)
        else:
            found = self._match(grads)
        out = []
        for segments in self._segments:
            per_segment = []
            for segment in segments:
                segment_grads = [found[name] for name in segment.names]
                for name, p, g in zip(segment.names, segment.params, segment_grads):
                    if g is not None:
                        self._check_grad(segment, name, p, g)
                per_segment.append(segment_grads)
            out.append(per_segment)
        return out

    def _match(self, grads: Any) -> dict[str, Any]:
        """Map user gradients to parameter names: by name, else by position."""
        names = [n for g in self.param_groups for n in g["param_names"]]
        if isinstance(grads, Mapping) and set(grads) == set(names):
            return dict(grads)
        if params_forms.is_group_list(grads):
            grads = [g["params"] for g in grads]
        if (
            isinstance(grads, (list, tuple))
            and grads
            and all(params_forms._is_pair(x) for x in grads)
        ):
            grads = dict(grads)
        given_names, leaves, _ = _tree.flatten(grads)
        if set(given_names) == set(names):
            return dict(zip(given_names, leaves))
        if len(leaves) == len(names) and not isinstance(grads, Mapping):
            return dict(zip(names, leaves))
        missing = sorted(set(names) - set(given_names))
        raise ValueError(
            f"{self._owner}: grads do not mirror the parameters: expected {len(names)} "
            f"gradients, got {len(leaves)}; missing gradients for {missing[:10]}"
        )

    def _check_grad(self, segment: Segment, name: str, p: Any, g: Any) -> None:
        try:
            adapter = adapter_for(g)
        except TypeError:
            adapter = None
        if adapter is not segment.adapter:
            raise TypeError(
                f"{self._owner}: gradient for parameter '{name}' is a {type(g).__name__}, "
                f"expected a {segment.adapter.name} array like the parameter"
            )
        data = segment.adapter.data(p)
        checks = (
            ("shape", tuple(g.shape), tuple(data.shape)),
            ("dtype", adapter.dtype_name(g), adapter.dtype_name(data)),
            ("device", adapter.device(g), adapter.device(data)),
        )
        for what, got, expected in checks:
            if got != expected:
                raise ValueError(
                    f"{self._owner}: gradient for parameter '{name}' has {what} {got}, "
                    f"expected {expected}"
                )

    # ---- gradients and learning rates ---------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients held on the parameters (torch); a no-op elsewhere."""
        for group in self.param_groups:
            for p in group["params"]:
                adapter_for(p).clear_grad(p, set_to_none)

    def minimize(self, loss: Any) -> tuple[list, list[tuple[Any, Any]]]:
        """``loss.backward()`` then ``step()`` (torch). Returns ``([], params_grads)``
        like Paddle's dygraph ``minimize``."""
        adapter_for(loss).backward(loss)
        pairs = [(p, adapter_for(p).get_grad(p)) for g in self.param_groups for p in g["params"]]
        self.step()
        return [], [(p, g) for p, g in pairs if g is not None]

    def get_lr(self) -> float | list[float]:
        """The learning rate the next step will use: one float, or one per group when
        groups differ."""
        lrs = [float(lr_forms.lr_at(g["lr"], self._step_count)) for g in self.param_groups]
        return lrs[0] if len(set(lrs)) == 1 else lrs

    def current_step_lr(self) -> float:
        """The learning rate the last step used (before any step: the first step's)."""
        if self._last_lrs is None:
            return float(lr_forms.lr_at(self.param_groups[0]["lr"], 0))
        return float(self._last_lrs[0])

    def set_lr(self, value: float) -> None:
        """Set a constant learning rate for every group (not allowed over a schedule)."""
        value = lr_forms.learning_rate(self._owner, "lr", value)
        if callable(value):
            raise TypeError(f"{self._owner}: set_lr() takes a number, got a schedule")
        if any(callable(g["lr"]) for g in self.param_groups):
            raise RuntimeError(
                f"{self._owner}: set_lr() cannot be used while the learning rate is a schedule"
            )
        for group in self.param_groups:
            group["lr"] = value

    # ---- parameters and state -----------------------------------------------------

    @property
    def params(self) -> Any:
        """The current parameters, in the structure they were given."""
        return self._rebuild([list(g["params"]) for g in self.param_groups])

    def state_dict(self) -> dict[str, Any]:
        """State keyed by parameter name, as host numpy arrays and plain numbers."""
        return state_forms.state_dict(self)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a ``state_dict()``; on any mismatch raise and leave everything as it was."""
        state_forms.load_state_dict(self, state_dict)

    def __repr__(self) -> str:
        lines = [f"{self._owner} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k not in ("params", "param_names"):
                    lines.append(f"    {k}: {group[k]}")
        return "\n".join(lines + [")"])
