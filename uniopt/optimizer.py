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
import math
import operator
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from uniopt import _tree, flavors, validation
from uniopt import loss_scale as loss_scales
from uniopt import lr as lr_forms
from uniopt import params as params_forms
from uniopt import state as state_forms
from uniopt._adapter import Adapter, adapter_for, is_array
from uniopt.custom import CustomOptimizerHelpers
from uniopt.engine.segment import Segment
from uniopt.gradients import (
    GRAD_CLIPS,
    ClipGradByGlobalNorm,
    ClipGradByNorm,
    ClipGradByValue,
    Lazy,
    Preprocessed,
)
from uniopt.rule import Rule


def _selector(items: Any, default: bool) -> Callable[[str, Any], bool]:
    """Membership test over parameters given as objects or names (None: ``default``)."""
    if items is None:
        return lambda name, p: default
    items = list(items)
    ids = {id(x) for x in items}
    names = {x for x in items if isinstance(x, str)} | {
        getattr(x, "name", None) for x in items if isinstance(getattr(x, "name", None), str)
    }
    return lambda name, p: id(p) in ids or name in names


def _shard_sum_of_squares(segment: Segment, grads: list[Any]) -> float:
    """The squared norm of a segment's gradients when they are local shards of tensors
    split across processes (DTensor): local sums, summed over the processes that hold
    the other shards (every process gets the same total)."""
    xp, adapter = segment.xp, segment.adapter
    local = [adapter.flat(g) for g in grads if g is not None]
    if not local:
        return 0.0
    sums = xp.stack([xp.sum(x * x) for x in local])
    reduce = segment.layout.all_reduce
    return float(xp.sum(sums if reduce is None else reduce(sums)))


def _shard_norm(g: Any, norm_type: float) -> float:
    """The ``norm_type``-norm of a gradient split across processes (DTensor), from its
    local shard: partial sums of ``|g|^p`` (or the maximum) over the shards."""
    adapter = adapter_for(g)
    local = adapter.flat(g)
    xp = adapter.namespace(local)
    reduce = adapter.shard_all_reduce([g]) or (lambda x, op="sum": x)
    magnitudes = xp.abs(local)
    if norm_type == math.inf:
        padded = xp.concat([magnitudes, xp.zeros((1,), dtype=local.dtype, device=local.device)])
        return float(reduce(xp.reshape(xp.max(padded), (1,)), "max")[0])
    total = reduce(xp.reshape(xp.sum(magnitudes**norm_type), (1,)), "sum")
    return float(total[0]) ** (1.0 / norm_type)


@dataclass(frozen=True)
class CustomRule(Rule):
    """The hyperparameters of an optimizer written with ``construct`` (see uniopt.custom)."""

    hyperparameters = {"lr": validation.non_negative, "weight_decay": validation.non_negative}


class Optimizer(CustomOptimizerHelpers):
    """Base of every stateful optimizer; subclasses set ``rule`` and a typed ``__init__``,
    or write ``construct(gradients)`` with the helpers of :mod:`uniopt.custom`.

    Every optimizer also takes these keyword options:

    * ``grad_clip``: :class:`uniopt.ClipGradByGlobalNorm`, :class:`uniopt.ClipGradByNorm`
      or :class:`uniopt.ClipGradByValue` (Paddle's), applied before weight decay;
    * ``loss_scale``: gradients are divided by it (a float > 0, MindSpore's), or a
      :class:`uniopt.DynamicLossScale`, which skips steps with non-finite gradients;
    * ``apply_decay_param_fun``: ``f(name) -> bool``, only parameters for which it is
      true are decayed (Paddle);
    * ``lr_ratio``: ``f(param) -> float``, a per-parameter multiplier of the learning
      rate (Paddle; on every backend and device here);
    * ``decay_skips_beta_gamma``: without param groups, do not decay parameters whose
      names contain "beta" or "gamma" (MindSpore's rule; default with its flavor);
    * ``lazy_mode``: only rows (first-axis slices) whose gradient is not all zero update
      their parameters and state (Paddle's Adam/AdamW option, here for every optimizer);
    * ``multi_precision``: float16/bfloat16 parameters keep a float32 master copy and
      float32 state; the low-precision parameters are the rounded master;
    * ``compile``: on torch, run each step's update as one ``torch.compile``-d kernel
      over the flat parameter segment (the first step pays the compilation, seconds).
      Rules with per-tensor sums (LAMB, LARS, ``ClipGradByNorm``) are compiled only for
      runs of up to 8 tensors, as two kernels (the sums, then the update given them:
      no parameter-sized intermediate); longer runs take the eager replay in passes,
      which compiles nothing and is faster there.

    Param groups take the group keys of the references: the hyperparameters,
    ``grad_centralization`` (MindSpore), ``clip_grad_max_norm`` and
    ``clip_grad_norm_type`` (OneFlow, used by :meth:`clip_grad`).
    """

    #: the name state files and the registry know it by, e.g. "adamw"
    algorithm: ClassVar[str] = "custom"
    rule: ClassVar[type[Rule]] = CustomRule

    def __init__(
        self,
        params: Any,
        flavor: str | None = None,
        *,
        grad_clip: Any = None,
        loss_scale: Any = 1.0,
        apply_decay_param_fun: Callable[[str], bool] | None = None,
        lr_ratio: Callable[[Any], float] | None = None,
        decay_skips_beta_gamma: bool | None = None,
        lazy_mode: bool = False,
        multi_precision: bool = False,
        compile: bool = False,
        **defaults: Any,
    ):
        owner = type(self).__name__
        self.flavor = flavor
        if "learning_rate" in defaults:  # MindSpore's and Paddle's name
            defaults["lr"] = defaults.pop("learning_rate")
        if self.rule is CustomRule:
            defaults.setdefault("weight_decay", 0.0)
        self.defaults = self._validated(defaults, flavor=flavor)
        self._custom_state: dict[str, list[Any]] = {}
        if grad_clip is not None and not isinstance(grad_clip, GRAD_CLIPS):
            raise TypeError(
                f"{owner}: grad_clip must be ClipGradByGlobalNorm, ClipGradByNorm or "
                f"ClipGradByValue, got {type(grad_clip).__name__}"
            )
        for name, fn in (("apply_decay_param_fun", apply_decay_param_fun), ("lr_ratio", lr_ratio)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{owner}: {name} must be callable, got {type(fn).__name__}")
        self.grad_clip = grad_clip
        self.lazy_mode = validation.flag(owner, "lazy_mode", lazy_mode)
        self.multi_precision = validation.flag(owner, "multi_precision", multi_precision)
        self.compile = validation.flag(owner, "compile", compile)
        self.loss_scale = loss_scales.checked(owner, loss_scale)
        self.apply_decay_param_fun = apply_decay_param_fun
        self.lr_ratio = lr_ratio
        if decay_skips_beta_gamma is None:
            decay_skips_beta_gamma = flavor == "mindspore"
        self.decay_skips_beta_gamma = validation.flag(
            owner, "decay_skips_beta_gamma", decay_skips_beta_gamma
        )
        self.last_step_skipped = False
        self.order_params: list[str] | None = None
        orders = []
        if isinstance(params, (list, tuple)):
            orders = [g for g in params if isinstance(g, Mapping) and "order_params" in g]
            params = [g for g in params if not (isinstance(g, Mapping) and "order_params" in g)]
        self._grouped = params_forms.is_group_list(params)
        self.param_groups: list[dict[str, Any]] = []
        self._segments: list[list[Segment]] = []
        self._ids: set[int] = set()
        #: the gradients the last step was given and validated, when they may come back
        #: (mutable libraries: the same arrays next step need no second check)
        self._seen: _Seen | None = None
        self._step_count = 0
        self._last_lrs: list[Any] | None = None
        groups, self._rebuild = params_forms.as_groups(params)
        for group in groups:
            self.add_param_group(group)
        if not self.param_groups or not any(g["params"] for g in self.param_groups):
            raise ValueError(f"{self._owner}: got an empty parameter list")
        if orders:
            self.order_params = self._order(orders[0]["order_params"])

    def _order(self, order_params: Any) -> list[str]:
        """MindSpore's ``order_params`` (parameters, or their names): the update order;
        each must be in some group."""
        by_id = {id(p): n for g in self.param_groups for n, p in zip(g["param_names"], g["params"])}
        items = list(order_params)
        if all(isinstance(x, str) for x in items):
            names = items
            missing = [n for n in names if n not in by_id.values()]
        else:
            names = [by_id.get(id(p), "?") for p in items]
            missing = [f"#{i}" for i, p in enumerate(items) if id(p) not in by_id]
        if missing:
            raise ValueError(
                f"{self._owner}: order_params {missing} are not in any param group's params"
            )
        return names

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
        group = {**param_group, **self._validated(hp, self._owner, self.flavor)}
        group["params"], group["param_names"] = list(leaves), names
        group["grad_centralization"] = validation.flag(
            self._owner, "grad_centralization", group.get("grad_centralization", False)
        )
        if "clip_grad_max_norm" in group:
            validation.positive(self._owner, "clip_grad_max_norm", group["clip_grad_max_norm"])
            norm_type = group.setdefault("clip_grad_norm_type", 2.0)
            if norm_type != float("inf"):
                validation.positive(self._owner, "clip_grad_norm_type", norm_type)
        segments = self._plan(names, leaves)
        if self.lazy_mode or group["grad_centralization"]:
            for segment in segments:
                for name, p in zip(segment.names, segment.params):
                    if not segment.adapter.whole_rows(p):
                        raise ValueError(
                            f"{self._owner}: lazy_mode and grad_centralization work on whole "
                            f"rows, and parameter '{name}' is sharded along another axis "
                            f"({segment.adapter.sharding(p)})"
                        )
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
            key += (adapter.sharding(p),)  # DTensors: one segment per mesh and placements
            if adapter.multi_device(data):  # sharded jax arrays: a segment each, state like it
                key += (i,)
            buckets.setdefault(key, []).append(i)
            adapters[key] = adapter
        segments = []
        for key, positions in buckets.items():
            segment = Segment(
                [names[i] for i in positions],
                [leaves[i] for i in positions],
                adapters[key],
                positions,
                master=self.multi_precision and key[2] in ("float16", "bfloat16"),
                compile=self.compile,
            )
            segment.profiles = [self._profile(names[i], leaves[i]) for i in positions]
            segments.append(segment)
        return segments

    def _profile(self, name: str, param: Any) -> tuple[bool, float]:
        """``(decayed, lr_ratio)`` of one parameter."""
        if self.apply_decay_param_fun is not None:
            decayed = bool(self.apply_decay_param_fun(name))
        elif self.decay_skips_beta_gamma and not self._grouped:
            decayed = "beta" not in name and "gamma" not in name
        else:
            decayed = True
        ratio = 1.0
        if self.lr_ratio is not None:
            ratio = validation.non_negative(
                self._owner, f"lr_ratio({name!r})", self.lr_ratio(param)
            )
        return decayed, ratio

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
        grad_scale = self._grad_scale(grads_by_segment)
        self.last_step_skipped = grad_scale is None
        if grad_scale is None:  # non-finite gradients under dynamic loss scaling
            return loss
        if hasattr(self, "construct"):
            self._custom_step(self._by_name(grads_by_segment))
            self._last_lrs = [lr_forms.lr_at(g["lr"], self._step_count) for g in self.param_groups]
            self._step_count += 1
            return loss
        lrs = []
        with self._context("no_grad"):
            for group, segments, group_grads in zip(
                self.param_groups, self._segments, grads_by_segment
            ):
                lr = lr_forms.lr_at(group["lr"], self._step_count)
                rule = self._prepared_rule(group, grad_scale != 1.0)
                hp = {**{k: group[k] for k in self.rule.hyperparameters}, "lr": lr}
                scalars_at = partial(self._scalars, rule, hp, grad_scale)
                for segment, segment_grads in zip(segments, group_grads):
                    segment.step(rule, segment_grads, scalars_at)
                    if not segment.adapter.mutable:  # the parameters were replaced
                        for position, p in zip(segment.positions, segment.params):
                            group["params"][position] = p
                lrs.append(lr)
        self._step_count += 1
        self._last_lrs = lrs
        return loss

    def _prepared_rule(self, group: Mapping[str, Any], scaled: bool) -> Rule:
        """The group's rule, with gradient preprocessing fused in front when asked."""
        rule = self.rule.from_group(group)
        clip = self.grad_clip
        norm_clip = clip.clip_norm if isinstance(clip, ClipGradByNorm) else None
        value_clip = clip.bounds if isinstance(clip, ClipGradByValue) else None
        if self.lazy_mode:
            rule = Lazy(rule)
        if not (scaled or norm_clip or value_clip or group["grad_centralization"]):
            return rule
        return Preprocessed(rule, scaled, norm_clip, value_clip, group["grad_centralization"])

    def _scalars(
        self, rule: Rule, hp: Mapping[str, Any], grad_scale: float, step: int, profile: tuple
    ) -> dict[str, Any]:
        decayed, ratio = profile
        hp = {**hp, "lr": hp["lr"] * ratio}
        if not decayed:
            hp[self.rule.decay_key] = 0.0
        scalars = rule.scalars(hp, step)
        if grad_scale != 1.0:
            scalars["grad_scale"] = grad_scale
        return scalars

    def _grad_scale(self, grads_by_segment: list[list[list[Any]]]) -> float | None:
        """The factor every gradient is multiplied by (loss scale, global-norm clip);
        None when dynamic loss scaling finds non-finite gradients."""
        scale = 1.0 / loss_scales.current(self.loss_scale)
        dynamic = isinstance(self.loss_scale, loss_scales.DynamicLossScale)
        if not dynamic and not isinstance(self.grad_clip, ClipGradByGlobalNorm):
            return scale
        total = 0.0
        for segments, group_grads in zip(self._segments, grads_by_segment):
            for segment, grads in zip(segments, group_grads):
                xp = segment.xp
                if segment.adapter.sharding(segment.params[0]) is not None:
                    total += _shard_sum_of_squares(segment, grads)
                    continue
                total += sum(float(xp.sum(g * g)) for g in grads if g is not None)
        if dynamic:
            finite = math.isfinite(total)
            self.loss_scale.update(finite)
            if not finite:
                return None
        if isinstance(self.grad_clip, ClipGradByGlobalNorm):
            scale *= self.grad_clip.factor(math.sqrt(total) * scale)
        return scale

    def _context(self, kind: str) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        adapters = {s.adapter.name: s.adapter for segs in self._segments for s in segs}
        for adapter in adapters.values():
            stack.enter_context(getattr(adapter, kind)())
        return stack

    def _gradients(self, grads: Any) -> list[list[list[Any]]]:
        """Every gradient per group and segment (in segment-table order), validated
        before anything changes; while the same arrays come back they are not matched
        to names or checked again (:class:`_Seen`)."""
        given = self._given(grads)
        seen = self._seen
        if seen is not None and given is not None and seen.holds(*given, len(self._segments)):
            return seen.sorted(given[1])
        found = self._collect(grads)
        self._seen = None
        mutable = all(s.adapter.mutable for segments in self._segments for s in segments)
        if given is not None and mutable:
            names, arrays = given
            if all(found.get(n, found) is g for n, g in zip(names, arrays)):  # by name
                with contextlib.suppress(TypeError):  # arrays that take no weak reference
                    self._seen = _Seen(names, arrays, self._segments)
        return self._by_segment(found)

    def _by_name(self, grads_by_segment: list[list[list[Any]]]) -> dict[str, Any]:
        """The gradients per group and segment by parameter name."""
        return {
            name: g
            for segments, group in zip(self._segments, grads_by_segment)
            for segment, grads in zip(segments, group)
            for name, g in zip(segment.names, grads)
        }

    def _names(self) -> list[str]:
        """Every parameter's name, in parameter order."""
        return [n for g in self.param_groups for n in g["param_names"]]

    def _given(self, grads: Any) -> tuple[list[str], list[Any]] | None:
        """``(names, gradients)`` as two lists, when ``grads`` is a list (in parameter
        order), a mapping by name, or None (the parameters' own ``.grad``); else None."""
        if grads is None:
            segments = [s for group in self._segments for s in group]
            return [n for s in segments for n in s.names], [
                s.adapter.get_grad(p) if s.adapter.grads_on_params else None
                for s in segments
                for p in s.params
            ]
        if isinstance(grads, Mapping):
            return list(grads), list(grads.values())
        return (self._names(), list(grads)) if isinstance(grads, (list, tuple)) else None

    def _collect(self, grads: Any) -> dict[str, Any]:
        """Every gradient by parameter name, validated before anything changes."""
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
        for segments in self._segments:
            for segment in segments:
                for name, p in zip(segment.names, segment.params):
                    if found[name] is not None:
                        self._check_grad(segment, name, p, found[name])
        return found

    def _by_segment(self, found: Mapping[str, Any]) -> list[list[list[Any]]]:
        """The gradients per group and segment, in segment-table order."""
        return [[[found[n] for n in s.names] for s in segments] for segments in self._segments]

    def _match(self, grads: Any) -> dict[str, Any]:
        """Map user gradients to parameter names: by name, else by position."""
        names = self._names()
        if isinstance(grads, Mapping) and set(grads) == set(names):
            return dict(grads)
        if (  # the common case, checked first: a flat list in parameter order
            isinstance(grads, (list, tuple))
            and len(grads) == len(names)
            and _all_arrays_or_none(grads)
        ):
            return dict(zip(names, grads))
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
        if adapter.sharding(g) != adapter.sharding(p):  # DTensors: never redistributed here
            raise ValueError(
                f"{self._owner}: gradient for parameter '{name}' is sharded as "
                f"{adapter.sharding(g)}, expected {adapter.sharding(p)} like the parameter"
            )
        if g.shape == p.shape and g.dtype == p.dtype and adapter.same_device(g, p):
            return
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

    def clip_grad(self, grads: Any = None) -> dict[str, Any] | None:
        """Clip the gradients of every group that has ``clip_grad_max_norm`` (OneFlow):
        the group's gradients are scaled by ``max_norm / (norm + 1e-6)`` when that is
        below 1, ``norm`` being their joint ``clip_grad_norm_type``-norm (as
        ``torch.nn.utils.clip_grad_norm_``). Without ``grads`` the ``.grad`` arrays are
        clipped in place (torch); with them, a dict name -> clipped gradient is returned.
        """
        found = (
            self._match(grads)
            if grads is not None
            else {
                n: adapter_for(p).get_grad(p)
                for g in self.param_groups
                for n, p in zip(g["param_names"], g["params"])
            }
        )
        out = dict(found)
        for group in self.param_groups:
            if "clip_grad_max_norm" not in group:
                continue
            present = [n for n in group["param_names"] if found[n] is not None]
            norm_type = float(group["clip_grad_norm_type"])
            norms = []
            for n in present:
                if adapter_for(found[n]).sharding(found[n]) is not None:
                    norms.append(_shard_norm(found[n], norm_type))
                    continue
                xp = adapter_for(found[n]).namespace(found[n])
                norms.append(float(xp.linalg.vector_norm(found[n], ord=norm_type)))
            if norm_type == math.inf:
                total = max(norms, default=0.0)
            else:
                total = sum(x**norm_type for x in norms) ** (1.0 / norm_type)
            coef = group["clip_grad_max_norm"] / (total + 1e-6)
            if coef >= 1.0:
                continue
            for n in present:
                adapter = adapter_for(found[n])
                if grads is None and adapter.mutable:
                    with adapter.no_grad():
                        adapter.write(adapter.flat_view(found[n]), adapter.flat(found[n]) * coef)
                else:
                    out[n] = found[n] * coef
        return None if grads is None else out

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients held on the parameters (torch); a no-op elsewhere."""
        for group, segments in zip(self.param_groups, self._segments):
            if not set_to_none and all(s.zero_grads() for s in segments):
                continue
            for p in group["params"]:
                adapter_for(p).clear_grad(p, set_to_none)

    def clear_grad(self, set_to_zero: bool = False) -> None:
        """Paddle's name for :meth:`zero_grad` (gradients set to None unless
        ``set_to_zero``)."""
        self.zero_grad(set_to_none=not set_to_zero)

    clear_gradients = clear_grad

    @property
    def support_sparse(self) -> bool:
        """Whether sparse gradient tensors are accepted (OneFlow's property): no; dense
        gradients with ``lazy_mode`` update only the rows that have a gradient."""
        return False

    def minimize(
        self,
        loss: Any,
        startup_program: Any = None,
        parameters: Any = None,
        no_grad_set: Any = None,
    ) -> tuple[list, list[tuple[Any, Any]]]:
        """``loss.backward()`` then ``step()`` (torch), as Paddle's dygraph ``minimize``:
        only ``parameters`` (objects or names; default all) are updated, none of
        ``no_grad_set``. ``startup_program`` (static graphs) is accepted and unused.
        Returns ``([], params_grads)``."""
        grads, pairs = self._backward(loss, parameters, no_grad_set)
        self.step(grads)
        return [], pairs

    def _backward(
        self, loss: Any, parameters: Any, no_grad_set: Any
    ) -> tuple[dict[str, Any], list[tuple[Any, Any]]]:
        """Backpropagate ``loss``; the gradients to apply by name, and the (param, grad)
        pairs, restricted to ``parameters`` and without ``no_grad_set``."""
        adapter_for(loss).backward(loss)
        chosen = _selector(parameters, default=True)
        excluded = _selector(no_grad_set, default=False)
        grads, pairs = {}, []
        for group in self.param_groups:
            for name, p in zip(group["param_names"], group["params"]):
                g = adapter_for(p).get_grad(p)
                keep = g is not None and chosen(name, p) and not excluded(name, p)
                grads[name] = g if keep else None
                if keep:
                    pairs.append((p, g))
        return grads, pairs

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


class _Seen:
    """The gradients a step was given, as arrays of mutable libraries (NumPy, torch,
    CuPy), which a training loop usually hands over again: the same objects under the
    same names with the same shapes and dtypes need no second matching to names or
    check (on 2000 tensors that bookkeeping cost 0.7 ms a step). Only weak references
    to them are kept."""

    def __init__(self, names: list[str], given: list[Any], segments: list[list[Segment]]):
        at = {name: i for i, name in enumerate(names)}
        self.names = names
        #: per group and segment, where each of its gradients is in ``given``
        self.order = [[[at[n] for n in s.names] for s in group] for group in segments]
        #: ``given`` is already the one segment's gradients in its order
        self.in_order = self.order == [[list(range(len(given)))]]
        self.gaps = any(g is None for g in given)
        self.refs = [None if g is None else weakref.ref(g) for g in given]
        arrays = [g for g in given if g is not None]
        self.shapes = list(map(_shape, arrays))
        self.dtypes = list(map(_dtype, arrays))

    def holds(self, names: list[str], given: list[Any], groups: int) -> bool:
        """Whether ``given`` are the very arrays seen under ``names``, unchanged, with
        the same groups. Dtypes are compared by identity: an array's dtype object stays
        the same while its dtype does (a different one only costs a full check)."""
        if groups != len(self.order) or names != self.names:
            return False
        if self.gaps:
            seen = [None if ref is None else ref() for ref in self.refs]
            given = [g for g, s in zip(given, seen) if g is s and g is not None]
            if len(given) != len(self.shapes):
                return False
        elif not all(map(operator.is_, given, [ref() for ref in self.refs])):
            return False
        return all(map(operator.is_, map(_dtype, given), self.dtypes)) and (
            list(map(_shape, given)) == self.shapes
        )

    def sorted(self, given: list[Any]) -> list[list[list[Any]]]:
        """``given`` per group and segment."""
        if self.in_order:
            return [[given]]
        return [[[given[i] for i in s] for s in group] for group in self.order]


_shape = operator.attrgetter("shape")
_dtype = operator.attrgetter("dtype")


def _all_arrays_or_none(values: Sequence[Any]) -> bool:
    """Every value is an array or None: checked once per type (a step's thousands of
    gradients are usually of one or two types)."""
    firsts = {type(x): x for x in values}
    return all(x is None or is_array(x) for x in firsts.values())
