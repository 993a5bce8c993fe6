"""The scheduler base class: optimizer contract, closed-form stepping, state dicts.

The optimizer contract: ``optimizer.param_groups`` is a list of dicts, each with a key
``"lr"`` holding a Python float that the optimizer reads at each ``step()``.

**Checks.** A scheduler checks its arguments in one method, :meth:`_check_hparams`,
run on its own attributes: by the constructor (before anything is written into the
optimizer's groups) and by :meth:`~StateDictMixin.load_state_dict` on a copy holding
the loaded values, so a state is held to exactly the constructor's rules. A load
checks everything (unknown or missing keys, each hyper-parameter, the counters, the
sub-schedulers' states) before it changes anything: a state that fails leaves the
scheduler exactly as it was.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from uniopt.schedules import _checks as check

Schedule = Callable[[Any], Any]


def param_groups(optimizer: Any) -> list[dict]:
    """``optimizer.param_groups``, checked against the contract."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "lr" in g for g in groups):
        raise TypeError(
            f"{type(optimizer).__name__} is not an optimizer: expected `param_groups`, "
            "a list of dicts each with an 'lr' entry"
        )
    return groups


def per_group(name: str, value: Any, n: int) -> list[float]:
    """A number >= 0 repeated for ``n`` groups, or a list/tuple of exactly ``n`` of them."""
    if isinstance(value, list | tuple):
        if len(value) != n:
            check.fail(name, value, f"it must be one number or a list of {n} (one per group)")
        return [check.non_negative(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [check.non_negative(name, value)] * n


def save_callables(fns: Sequence[Any]) -> list[dict | None]:
    """torch's rule: a callable object's ``__dict__`` is saved, a function's is not."""
    saved: list[dict | None] = []
    for fn in fns:
        plain = isinstance(fn, types.FunctionType) or not hasattr(fn, "__dict__")
        saved.append(None if plain else dict(vars(fn)))
    return saved


def check_saved_callables(name: str, saved: Any, n: int) -> list[dict | None]:
    """A saved list of :func:`save_callables` for ``n`` callables: ``None`` or a dict each."""
    if not isinstance(saved, list | tuple) or len(saved) != n:
        check.fail(name, saved, f"it must be a list of {n} entries, each None or a dict")
    for i, state in enumerate(saved):
        if state is not None and not isinstance(state, Mapping):
            check.fail(f"{name}[{i}]", state, "it must be None or a dict")
    return list(saved)


def load_callables(fns: Sequence[Any], saved: Sequence[dict | None] | None) -> None:
    for fn, state in zip(fns, saved or (), strict=False):
        if state is not None:
            fn.__dict__.update(copy.deepcopy(state))


def rates(name: str, value: Any, n: int) -> list[float]:
    """A loaded list of ``n`` learning rates (finite, >= 0)."""
    if not isinstance(value, list | tuple) or len(value) != n:
        check.fail(name, value, f"it must be a list of {n} numbers (one per group)")
    return [check.non_negative(f"{name}[{i}]", v) for i, v in enumerate(value)]


def _nothing() -> None:
    """A commit with nothing to do."""


class StateDictMixin:
    """``state_dict()``: every attribute but the optimizer (and ``_unsaved`` ones),
    deep-copied, so it is plain Python data; ``load_state_dict()`` puts it back, checked.

    A subclass checks its arguments in :meth:`_check_hparams` and its counters in
    :meth:`_check_counters` (both raise naming the attribute, and may normalize it),
    and loads what it saves outside its attributes in :meth:`_prepare_parts`.
    """

    _unsaved: ClassVar[tuple[str, ...]] = ("optimizer",)
    #: argument errors name attributes; these name them as the constructor's arguments
    _arg_names: ClassVar[dict[str, str]] = {}
    #: and these as the keys of the state dict, where a factory names them otherwise
    _state_names: ClassVar[dict[str, str]] = {}

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as a dict of plain Python data (no optimizer, no
        functions; a callable object's ``__dict__`` is saved as torch/OneFlow do)."""
        return copy.deepcopy({k: v for k, v in vars(self).items() if k not in self._unsaved})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the next ``step()`` continues the
        sequence exactly where the saved scheduler left off.

        The state is checked with the constructor's own rules before anything changes:
        unknown or missing keys, an invalid hyper-parameter (``T_max=0``,
        ``eta_min=nan``) or counter (``last_step=-7``, ``last_step='x'``) raise
        ``ValueError`` (``TypeError`` for a wrong type) naming it, and leave the
        scheduler exactly as it was.
        """
        self._prepare_load(state_dict)()

    # -- checks (subclass hooks) ----------------------------------------------------------
    def _check_hparams(self) -> None:
        """Check (and normalize) the hyper-parameters held in the attributes."""

    def _check_counters(self) -> None:
        """Check (and normalize) the loaded counters (``last_step``, rates, ...)."""

    def _prepare_parts(self, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        """Check the entries saved outside the attributes (``_unsaved`` ones that
        :meth:`state_dict` adds); return what loads them, to run once all is checked."""
        return _nothing

    def _after_load(self) -> None:
        """Drop what was derived from the previous state (cached schedules)."""

    def _check_args(self) -> None:
        """The constructor's check of its arguments, named as the constructor names them."""
        with check.owner(type(self).__name__, self._arg_names):
            self._check_hparams()

    # -- loading ----------------------------------------------------------------------------
    def _prepare_load(self, state_dict: Any) -> Callable[[], None]:
        """Check ``state_dict`` completely; return the commit that loads it."""
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{owner}: expected a state dict, got {type(state_dict).__name__}")
        expected = set(self.state_dict())
        unknown = sorted(map(str, set(state_dict) - expected))
        missing = sorted(expected - set(state_dict))
        if unknown or missing:
            problems = [f"unknown keys {unknown}"] if unknown else []
            problems += [f"missing keys {missing}"] if missing else []
            raise ValueError(f"{owner}: not a {type(self).__name__} state: {'; '.join(problems)}")
        attributes = {k: copy.deepcopy(v) for k, v in state_dict.items() if k not in self._unsaved}
        candidate = copy.copy(self)  # shares nothing it writes: attributes are replaced
        vars(candidate).update(attributes)
        candidate._after_load()
        with check.owner(owner, self._state_names):
            candidate._check_hparams()
            candidate._check_counters()
            commit_parts = self._prepare_parts(state_dict)
        checked = {k: vars(candidate)[k] for k in attributes}

        def commit() -> None:
            vars(self).update(checked)
            self._after_load()
            commit_parts()

        return commit


class LRScheduler(StateDictMixin):
    """Base class of the step-driven schedulers (OneFlow ``LRScheduler`` conventions).

    A subclass implements :meth:`_schedule`, returning the pure schedule
    (:mod:`uniopt.schedules`) of one parameter group for a given base rate; this class
    evaluates it at ``last_step`` and writes the result into ``group["lr"]``. Like torch
    and OneFlow:

    * with ``last_step=-1`` each group gets ``initial_lr`` (``setdefault`` from its
      ``lr``); otherwise ``initial_lr`` must already be there (resuming);
    * construction performs the initial ``step()``: afterwards ``last_step == 0`` and
      ``group["lr"]`` is the schedule at step 0;
    * call ``step()`` after ``optimizer.step()``.

    Learning rates are recomputed from the closed form each step (never from the
    current ``group["lr"]``), so a saved/loaded scheduler continues bit-identically.
    Hyper-parameters are read when the per-group schedules are built (construction and
    :meth:`load_state_dict`). ``last_step`` is an integer >= -1 and ``verbose`` a bool;
    a subclass sets its hyper-parameters as attributes before calling this
    constructor, which checks them (:meth:`_check_hparams`) before it writes anything.
    """

    _unsaved: ClassVar[tuple[str, ...]] = ("optimizer", "_schedule_cache")

    def __init__(self, optimizer: Any, last_step: int = -1, verbose: bool = False):
        groups = param_groups(optimizer)
        with check.owner(type(self).__name__):
            last_step = check.integer("last_step", last_step, -1)
            verbose = check.flag("verbose", verbose)
        self.optimizer = optimizer
        self._check_args()
        if last_step != -1:
            for i, group in enumerate(groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        "resuming a scheduler (last_step >= 0)"
                    )
        self._init_groups(groups, last_step)
        if last_step == -1:
            for group in groups:
                group.setdefault("initial_lr", group["lr"])
        self.last_step = last_step
        self.verbose = verbose
        self.base_lrs: list[float] = self._initial_base_lrs()
        self._last_lr: list[float] = []
        self._schedule_cache: dict[Any, Schedule] = {}
        self.step()

    # -- subclass hooks ---------------------------------------------------------------
    def _init_groups(self, groups: list[dict], last_step: int) -> None:
        """Writes into the optimizer's groups at construction, after every check."""

    def _initial_base_lrs(self) -> list[float]:
        return [float(g["initial_lr"]) for g in self.optimizer.param_groups]

    def _schedule(self, base_lr: float, group: int) -> Schedule:
        """The pure schedule of parameter group ``group`` starting from ``base_lr``."""
        raise NotImplementedError

    def _after_step(self) -> None:
        """Side effects beyond ``lr`` (momentum cycling)."""

    def _after_load(self) -> None:
        self._schedule_cache = {}

    def _check_counters(self) -> None:
        n = len(param_groups(self.optimizer))
        self.last_step = check.integer("last_step", self.last_step, 0)
        self.verbose = check.flag("verbose", self.verbose)
        self.base_lrs = rates("base_lrs", self.base_lrs, n)
        self._last_lr = rates("_last_lr", self._last_lr, n)

    # -- evaluation ---------------------------------------------------------------------
    def _group_schedule(self, group: int) -> Schedule:
        key = (group, self.base_lrs[group])
        sched = self._schedule_cache.get(key)
        if sched is None:
            sched = self._schedule_cache[key] = self._schedule(self.base_lrs[group], group)
        return sched

    def _lrs_at(self, step: int) -> list[float]:
        return [float(self._group_schedule(i)(step)) for i in range(len(self.base_lrs))]

    def get_lr(self, base_lr: float, step: int, group: int = 0) -> float:
        """The closed-form learning rate at ``step`` for a group whose base rate is
        ``base_lr`` (hyper-parameters given per group are those of ``group``)."""
        with check.owner(f"{type(self).__name__}.get_lr"):
            base_lr = check.non_negative("base_lr", base_lr)
        return float(self._schedule(base_lr, group)(step))

    def get_last_lr(self) -> list[float]:
        """The learning rates written by the last ``step()``, one per group."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance one step and write the new learning rate into every group."""
        lrs = self._lrs_at(self.last_step + 1)
        self.last_step += 1
        self._set_lrs(lrs)
        self._after_step()

    def _set_lrs(self, lrs: Sequence[float]) -> None:
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, lrs, strict=False)):
            group["lr"] = lr
            if self.verbose:
                print(
                    f"Last step {self.last_step} adjusting learning rate of "
                    f"param_groups[{i}] to {lr:.6e}"
                )
        self._last_lr = list(lrs)

    @property
    def last_epoch(self) -> int:
        """torch's name for :attr:`last_step`."""
        return self.last_step

    @last_epoch.setter
    def last_epoch(self, value: int) -> None:
        with check.owner(type(self).__name__):
            self.last_step = check.integer("last_epoch", value, -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(last_step={self.last_step}, lr={self._last_lr})"


def momentum_mode(optimizer: Any) -> bool:
    """For momentum cycling: ``True`` to write ``betas[0]``, ``False`` for ``momentum``.

    Every group must carry one of the two keys (torch raises the same ValueError)."""
    groups = param_groups(optimizer)
    for i, group in enumerate(groups):
        if "momentum" not in group and "betas" not in group:
            raise ValueError(
                "optimizer must support momentum or beta1 with `cycle_momentum` option "
                f"enabled: param_groups[{i}] has neither 'momentum' nor 'betas'"
            )
    return "betas" in groups[0]


def check_momentum_state(optimizer: Any, cycle_momentum: Any, use_beta1: Any) -> bool:
    """A loaded ``use_beta1``: a bool, naming a key every group has when cycling."""
    cycle_momentum = check.flag("cycle_momentum", cycle_momentum)
    use_beta1 = check.flag("use_beta1", use_beta1)
    key = "betas" if use_beta1 else "momentum"
    if cycle_momentum and not all(key in g for g in param_groups(optimizer)):
        check.fail("use_beta1", use_beta1, f"every param group must then have {key!r}")
    return use_beta1


def set_momentum(group: dict, value: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (value, *tuple(group["betas"])[1:])
    else:
        group["momentum"] = value
