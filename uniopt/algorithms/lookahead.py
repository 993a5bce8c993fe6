r"""LookAhead: k steps forward with any optimizer, one step back towards slow weights.

Every :math:`k` steps of the inner ("fast") optimizer (Paddle's
``paddle.incubate.LookAhead``, seed 002):

.. math::

    \phi_t &\leftarrow \phi_{t-1} + \alpha\,(\theta_{t} - \phi_{t-1})
        && \text{(slow weights)} \\
    \theta_t &\leftarrow \phi_t && \text{(fast weights restart from them)}

The slow weights start as the parameters when LookAhead is built
(``slow_init="params"``, the paper and optax), or as the parameters after the first
inner step (``slow_init="first_step"``, Paddle's kernel).

Reference: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step
back" (NeurIPS 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from uniopt import _tree, flavors
from uniopt import validation as v
from uniopt.flavors import Default
from uniopt.optimizer import TORCH_ADAPTERS, Optimizer
from uniopt.rule import Rule, Scalars
from uniopt.transform import Transform, apply_updates, step_counter

SLOW_INITS = ("params", "first_step")
#: flavor -> where the slow weights start: optax's ``lookahead`` and the paper take
#: the parameters as given; Paddle's kernel the parameters after the first inner step
FLAVORS = {"optax": {"slow_init": "params"}, "paddle": {"slow_init": "first_step"}}


@dataclass(frozen=True)
class LookAheadSync(Rule):
    """The synchronisation step as a rule over flat blocks (``g`` is unused)."""

    hyperparameters = {}

    def update(self, xp, p, g, state, s: Scalars, block):
        slow = state["slow"] + s.alpha * (p - state["slow"])
        return slow - p, {"slow": slow}


def _options(owner: str, alpha: Any, k: Any, slow_init: Any, flavor: Any) -> tuple[float, int, str]:
    """The checked options, ``slow_init`` from the flavor unless given."""
    hp = flavors.resolve(owner, "LookAhead", FLAVORS, {"slow_init": slow_init}, flavor)
    return _check(owner, alpha, k, hp["slow_init"])


def _check(owner: str, alpha: Any, k: Any, slow_init: Any) -> tuple[float, int, str]:
    alpha = v.real(owner, "alpha", alpha)
    if not 0.0 <= alpha <= 1.0:
        v.fail(owner, "alpha", alpha, "it must be in [0, 1]")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        v.fail(owner, "k", k, "it must be a positive int")
    if slow_init not in SLOW_INITS:
        v.fail(owner, "slow_init", slow_init, f"it must be one of {SLOW_INITS}")
    return alpha, k, slow_init


class LookAhead:
    r"""LookAhead over any uniopt optimizer (the stateful face).

    Args:
        inner_optimizer: the optimizer that updates the fast weights.
        alpha: slow-weights step size :math:`\alpha` in [0, 1].
        k: synchronise every ``k`` inner steps.
        slow_init: ``"params"`` (paper, optax) or ``"first_step"`` (Paddle).
        flavor: ``"optax"`` or ``"paddle"``: that framework's ``slow_init``.

    It behaves as an optimizer: ``step``, ``minimize``, ``zero_grad``/``clear_grad``,
    ``param_groups``, ``params``, learning-rate accessors (those of the inner
    optimizer), and ``state_dict``/``load_state_dict`` with the slow weights.
    """

    algorithm = "lookahead"

    def __init__(
        self,
        inner_optimizer: Optimizer,
        alpha: float = 0.5,
        k: int = 5,
        slow_init: str = Default("params"),
        *,
        flavor: str | None = None,
    ):
        if not isinstance(inner_optimizer, Optimizer):
            raise TypeError(
                f"LookAhead: inner_optimizer must be a uniopt optimizer, got "
                f"{type(inner_optimizer).__name__}"
            )
        self.alpha, self.k, self.slow_init = _options("LookAhead", alpha, k, slow_init, flavor)
        self.flavor = flavor
        if any(s.adapter.name in TORCH_ADAPTERS for g in inner_optimizer._segments for s in g):
            from uniopt.backends.torch_optim import adopt

            adopt(self)  # a torch.optim.Optimizer, as its inner optimizer is
        self.inner = inner_optimizer
        self._count = 0
        self._slow: list[list[Any]] | None = None
        if self.slow_init == "params":
            self._slow = self._snapshot()

    def _snapshot(self) -> list[list[Any]]:
        """A flat copy of every segment's parameters."""
        return [
            [s.packed([s.adapter.data(p) for p in s.params]) for s in segments]
            for segments in self.inner._segments
        ]

    def step(self, grads: Any = None, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; every ``k``-th also moves the slow weights and resets the fast.
        A step the inner optimizer does not take (no gradient at all, or skipped by
        dynamic loss scaling) is not counted."""
        taken = self.inner._step_count
        loss = self.inner.step(grads, closure)
        if self.inner._step_count == taken:
            return loss
        self._count += 1
        if self._slow is None:
            self._slow = self._snapshot()
        if self._count % self.k == 0:
            self._sync()
        return loss

    def _sync(self) -> None:
        sync = LookAheadSync()
        with self.inner._context("no_grad"):
            for group, segments, slows in zip(
                self.inner.param_groups, self.inner._segments, self._slow
            ):
                for i, segment in enumerate(segments):
                    fast = [segment.adapter.data(p) for p in segment.params]
                    state = {"slow": slows[i]}
                    master = segment.state.get("master")  # multi_precision: sync it too
                    if master is not None:
                        state["master"] = master
                        if slows[i].dtype != master.dtype:
                            state["slow"] = segment.xp.astype(slows[i], master.dtype)
                    new = segment.run(sync, 0, len(fast), fast, {"alpha": self.alpha}, state)
                    slows[i] = new["slow"]
                    if master is not None:
                        segment.state["master"] = new["master"]
                    for position, p in zip(segment.positions, segment.params):
                        group["params"][position] = p

    def minimize(
        self,
        loss: Any,
        startup_program: Any = None,
        parameters: Any = None,
        no_grad_set: Any = None,
    ) -> tuple[list, list[tuple[Any, Any]]]:
        """``loss.backward()`` then ``step()`` (torch), as Paddle's LookAhead.minimize
        (``parameters`` / ``no_grad_set`` as in :meth:`uniopt.Optimizer.minimize`)."""
        grads, pairs = self.inner._backward(loss, parameters, no_grad_set)
        self.step(grads)
        return [], pairs

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none)

    clear_grad = zero_grad

    def __getattr__(self, name: str) -> Any:
        # param_groups, params, get_lr, set_lr, current_step_lr ... are the inner's
        if name in ("inner", "_slow", "_count"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state plus the slow weights, keyed by parameter name."""
        slow = {}
        if self._slow is not None:
            for segments, slows in zip(self.inner._segments, self._slow):
                for segment, flat in zip(segments, slows):
                    host = segment.adapter.to_numpy(flat)
                    for span in segment.layout.spans:
                        slow[span.name] = host.reshape(-1)[span.offset : span.stop].reshape(
                            span.shape
                        )
        return {
            "format": "uniopt.optimizer",
            "version": 1,
            "algorithm": self.algorithm,
            "alpha": self.alpha,
            "k": self.k,
            "slow_init": self.slow_init,
            "count": self._count,
            "slow": slow,
            "inner": self.inner.portable_state_dict(),
        }

    portable_state_dict = state_dict  # the same, name-keyed, on every backend

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a ``state_dict()``; on any mismatch raise and change nothing."""
        owner = "LookAhead.load_state_dict"
        sd = state_dict
        if not isinstance(sd, Mapping) or sd.get("algorithm") != self.algorithm:
            raise ValueError(f"{owner}: not a LookAhead state")
        alpha, k, slow_init = _check(owner, sd.get("alpha"), sd.get("k"), sd.get("slow_init"))
        count = sd.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{owner}: invalid count={count!r}")
        slow = self._slow_from(owner, sd.get("slow"), required=count > 0 or slow_init == "params")
        self.inner.load_state_dict(sd.get("inner"))
        self.alpha, self.k, self.slow_init, self._count, self._slow = (
            alpha,
            k,
            slow_init,
            count,
            slow,
        )

    def _slow_from(self, owner: str, saved: Any, required: bool) -> list[list[Any]] | None:
        if not saved and not required:
            return None
        if not isinstance(saved, Mapping):
            raise ValueError(f"{owner}: slow weights missing")
        problems, out = [], []
        for segments in self.inner._segments:
            flats = []
            for segment in segments:
                like = segment.adapter.data(segment.params[0])
                dtype = segment.adapter.dtype_name(like)
                host = np.empty(segment.layout.size, dtype=segment.adapter.to_numpy(like).dtype)
                for span in segment.layout.spans:
                    value = saved.get(span.name)
                    if (
                        not isinstance(value, np.ndarray)
                        or tuple(value.shape) != span.shape
                        or value.dtype.name != dtype
                    ):
                        problems.append(
                            f"'{span.name}': slow weights missing or not {dtype}{list(span.shape)}"
                        )
                        continue
                    host[span.offset : span.stop] = value.reshape(-1)
                flats.append(host)
            out.append(flats)
        if problems:
            raise ValueError(f"{owner}: " + "; ".join(problems))
        return [
            [
                s.adapter.from_numpy(h.reshape(s.state_shape), s.adapter.data(s.params[0]))
                for s, h in zip(segs, flats)
            ]
            for segs, flats in zip(self.inner._segments, out)
        ]


class LookAheadState(NamedTuple):
    inner: Any  #: the inner transform's state
    slow: Any  #: slow weights, shaped like the parameters
    count: Any  #: completed steps, a 0-d int32 array


def lookahead(
    inner: Transform,
    alpha: float = 0.5,
    k: int = 5,
    slow_init: str = Default("params"),
    *,
    flavor: str | None = None,
) -> Transform:
    """LookAhead over any uniopt (or optax) transform: the functional face.

    ``update`` needs ``params``. Synchronisation is selected with ``where`` on the step
    count, so the update traces once under ``jax.jit`` / ``torch.compile``. On a sync
    step the slow weights become ``params + updates``, exactly the parameters that
    ``apply_updates`` gives (as torch's fast and slow weights are equal after a sync);
    under ``jax.jit`` XLA computes that sum once and no parameter or slow-weight buffer
    is copied (before: 200% of the parameters' bytes extra on a CPU, now 100%).
    """
    alpha, k, slow_init = _options("uniopt.lookahead", alpha, k, slow_init, flavor)

    def init(params: Any) -> LookAheadState:
        _, leaves, rebuild = _tree.flatten(params)
        count = step_counter(leaves)
        slow = rebuild([array_api_compat.array_namespace(x).asarray(x, copy=True) for x in leaves])
        return LookAheadState(inner.init(params), slow, count)

    def update(grads: Any, state: LookAheadState, params: Any = None, **extra: Any):
        if params is None:
            raise ValueError("uniopt.lookahead: update() needs params")
        updates, inner_state = inner.update(grads, state.inner, params)
        fast = apply_updates(params, updates)
        count = state.count + 1
        _, p_leaves, _ = _tree.flatten(params)
        _, fast_leaves, _ = _tree.flatten(fast)
        _, slow_leaves, rebuild_slow = _tree.flatten(state.slow)
        names, _, rebuild = _tree.flatten(updates)
        new_slow, new_updates = [], []
        for p, f, s in zip(p_leaves, fast_leaves, slow_leaves):
            xp = array_api_compat.array_namespace(f)
            if slow_init == "first_step":
                s = xp.where(count == 1, f, s)
            moved = s + alpha * (f - s)
            sync = count % k == 0
            update = xp.where(sync, moved, f) - p
            new_slow.append(xp.where(sync, p + update, s))
            new_updates.append(update)
        return rebuild(new_updates), LookAheadState(inner_state, rebuild_slow(new_slow), count)

    return Transform(init, update)
