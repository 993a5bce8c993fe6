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
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from uniopt import flavors, validation
from uniopt import loss_scale as loss_scales
from uniopt import lr as lr_forms
from uniopt import params as params_forms
from uniopt import state as state_forms
from uniopt._adapter import Adapter, adapter_for, is_array
from uniopt.custom import CustomOptimizerHelpers
from uniopt.engine import pairs as complex_params
from uniopt.engine.segment import Segment
from uniopt.gradients import (
    GRAD_CLIPS,
    ClipGradByNorm,
    ClipGradByValue,
    Lazy,
    Preprocessed,
    clip_group,
    grad_scale,
)
from uniopt.intake import GradientIntake
from uniopt.rule import Rule

#: adapters whose parameters make an optimizer a ``torch.optim.Optimizer``
TORCH_ADAPTERS = ("torch", "dtensor")


@dataclass(frozen=True)
class CustomRule(Rule):
    """The hyperparameters of an optimizer written with ``construct`` (see uniopt.custom)."""

    hyperparameters = {"lr": validation.non_negative, "weight_decay": validation.non_negative}


class Optimizer(GradientIntake, CustomOptimizerHelpers):
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
        if self.rule is CustomRule:  # a custom optimizer's own hyperparameters
            defaults.setdefault("weight_decay", 0.0)
        else:
            validation.known_arguments(owner, defaults, self._argument_names())
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
        self._seen = None
        self._step_count = 0
        self._last_lrs: list[Any] | None = None
        groups, self._rebuild = params_forms.as_groups(params)
        for group in groups:
            self.add_param_group(group)
        if not self.param_groups or not any(g["params"] for g in self.param_groups):
            raise ValueError(f"{self._owner}: got an empty parameter list")
        if orders:
            self.order_params = self._order(orders[0]["order_params"])
        if any(s.adapter.name in TORCH_ADAPTERS for g in self._segments for s in g):
            from uniopt.backends.torch_optim import adopt  # torch is imported already

            adopt(self)  # a torch.optim.Optimizer from here on (principle 8)

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

    @classmethod
    def _argument_names(cls) -> list[str]:
        """The keyword arguments the algorithm takes besides the common options: those
        its ``__init__`` names (a rule's internal fields are not arguments)."""
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [
            name
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind in kinds and name not in ("self", "params", "flavor")
        ]

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
        group = {k: v for k, v in param_group.items() if k not in validation.TORCH_SWITCHES}
        group.update(self._validated(hp, self._owner, self.flavor))
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
        # complex_mode=None (Keras, Paddle, MindSpore, OneFlow flavors): refused here
        complex_params.refuse(
            self._owner, self.rule.from_group(group), self.flavor, zip(names, leaves)
        )
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
            shared = adapter.shares_storage(p)  # before ``data``, one more view, is made
            data = adapter.data(p)
            kind = adapter.dtype_name(data)
            if not kind.startswith(("float", "bfloat", "complex")):
                raise TypeError(
                    f"{self._owner}: parameter '{name}' has dtype {kind}; only floating-point "
                    "and complex parameters can be optimized"
                )
            if adapter.mutable and not adapter.contiguous(data):
                raise ValueError(
                    f"{self._owner}: parameter '{name}' is not contiguous (or not writable); "
                    "uniopt writes parameters through flat views"
                )
            key = (adapter.name, adapter.device(data), adapter.dtype_name(data))
            key += (adapter.sharding(p),)  # DTensors: one segment per mesh and placements
            # a segment each: sharded jax arrays (state placed like them), and tensors tied
            # to others or viewed elsewhere (updated where they lie, never re-pointed)
            if adapter.multi_device(data) or shared:
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
        if closure is None and callable(grads) and not is_array(grads):
            grads, closure = None, grads  # torch's step(closure), positionally
        loss = None
        if closure is not None:
            with self._context("enable_grad"):
                loss = closure()
        # everything is validated before the first write: gradients, parameters, every
        # group's learning rate; a step without any gradient changes nothing (torch)
        grads_by_segment = self._gradients(grads)
        if not any(g is not None for gs in grads_by_segment for seg in gs for g in seg):
            return loss
        for segments in self._segments:
            for segment in segments:
                segment.check_params(self._owner)
        lrs = self._step_lrs()
        grad_scale = self._grad_scale(grads_by_segment)
        self.last_step_skipped = grad_scale is None
        if grad_scale is None:  # non-finite gradients under dynamic loss scaling
            return loss
        if hasattr(self, "construct"):
            self._custom_step(self._by_name(grads_by_segment))
            self._last_lrs = lrs
            self._step_count += 1
            return loss
        with self._context("no_grad"):
            for group, segments, group_grads, lr in zip(
                self.param_groups, self._segments, grads_by_segment, lrs
            ):
                rule = self._prepared_rule(group, grad_scale != 1.0)
                hp = {**{k: group[k] for k in self.rule.hyperparameters}, "lr": lr}
                scalars_at = partial(self._scalars, rule, hp, grad_scale)
                for segment, segment_grads in zip(segments, group_grads):
                    segment.step(rule, segment_grads, scalars_at)
                    if not segment.adapter.mutable:  # the parameters were replaced
                        for position, p in zip(segment.positions, segment.params):
                            group["params"][position] = p
        self._step_count += 1
        self._last_lrs = lrs
        return loss

    def _step_lrs(self) -> list[Any]:
        """Every group's learning rate for this step, checked before anything is written:
        a schedule that raises or gives a negative or non-finite value is an error naming
        the group and the step."""
        step, out = self._step_count, []
        for i, group in enumerate(self.param_groups):
            where = f"{self._owner}: learning rate of param group {i} at step {step}"
            try:
                lr = lr_forms.lr_at(group["lr"], step)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{where}: {error}") from error
            value = lr if isinstance(lr, numbers.Real) else _concrete(lr)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{where} is {value!r}: it must be finite and >= 0")
            out.append(lr)
        return out

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
        tensor_lr = self.flavor == "torch" and isinstance(hp["lr"], validation.Float32)
        hp = {**hp, "lr": hp["lr"] * ratio}
        if not decayed:
            hp[self.rule.decay_key] = 0.0
        scalars = rule.scalars(hp, step)
        if tensor_lr:
            scalars = rule.float32_lr(scalars)
        if grad_scale != 1.0:
            scalars["grad_scale"] = grad_scale
        return scalars

    def _grad_scale(self, grads_by_segment: list[list[list[Any]]]) -> float | None:
        """The factor every gradient is multiplied by (loss scale, global-norm clip);
        None when dynamic loss scaling finds non-finite gradients (reductions in at least
        float32: :func:`uniopt.gradients.grad_scale`)."""
        by_segment = [
            (segment, grads)
            for segments, group_grads in zip(self._segments, grads_by_segment)
            for segment, grads in zip(segments, group_grads)
        ]
        return grad_scale(self.loss_scale, self.grad_clip, by_segment)

    def _context(self, kind: str) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        adapters = {s.adapter.name: s.adapter for segs in self._segments for s in segs}
        for adapter in adapters.values():
            stack.enter_context(getattr(adapter, kind)())
        return stack

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
            max_norm, norm_type = group["clip_grad_max_norm"], group["clip_grad_norm_type"]
            for n, clipped in clip_group(found, group["param_names"], max_norm, norm_type).items():
                adapter = adapter_for(found[n])
                if grads is None and adapter.mutable:
                    with adapter.no_grad():
                        adapter.write(adapter.flat_view(found[n]), adapter.flat(clipped))
                else:
                    out[n] = clipped
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
        """The state: on NumPy, JAX and CuPy the portable form
        (:meth:`portable_state_dict`); on torch, torch.optim's layout (see
        :mod:`uniopt.backends.torch_optim`)."""
        return state_forms.state_dict(self)

    def portable_state_dict(self) -> dict[str, Any]:
        """State keyed by parameter name, as host numpy arrays and plain numbers: the
        form :func:`uniopt.save` writes and every backend loads."""
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


def _concrete(x: Any) -> float | None:
    """A 0-d (or one-element) array's value as a float, or None where it has none yet
    (traced)."""
    try:
        return float(x)
    except Exception:  # tracers refuse concretization, each library its own way
        return None
