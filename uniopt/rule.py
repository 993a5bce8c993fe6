"""What an algorithm is to the engine: static options, state slots, per-step scalars
and a pure update over flat arrays.

A rule is a frozen dataclass whose fields are its *static* options (booleans and
modes that change the shape of the computation, hashed into compile caches).
Numeric hyperparameters (lr, betas, eps, ...) live in the param group and reach
``update`` through ``scalars`` as Python floats on eager paths or 0-d arrays of the
parameter dtype under ``jax.jit``/``torch.compile``, never as numpy scalars (which
would promote float32 to float64).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, ClassVar

import array_api_compat

from uniopt.engine.layout import Block


class Scalars:
    """The per-step scalars as attributes: ``s.lr``, ``s.beta1`` ... (a plain object,
    which torch.compile and jax.jit trace through)."""

    def __init__(self, values: Mapping[str, Any]):
        for name, value in values.items():
            setattr(self, name, value)


def select(condition: Any, if_true: float, if_false: float, like: Any) -> Any:
    """``if_true if condition else if_false`` for a Python bool, or for a traced 0-d
    boolean array (then the result is a 0-d array of ``like``'s dtype)."""
    if isinstance(condition, bool):
        return if_true if condition else if_false
    xp = array_api_compat.array_namespace(like)
    as_array = partial(xp.asarray, dtype=like.dtype, device=array_api_compat.device(like))
    return xp.where(condition, as_array(if_true), as_array(if_false))


@dataclass(frozen=True)
class Rule:
    """Base of every update rule.

    Subclasses define ``hyperparameters`` (argument name -> validator),
    ``slots`` (state arrays and their initial value), ``scalars`` and ``update``.
    """

    #: numeric hyperparameters and their validators ``f(owner, name, value) -> value``
    hyperparameters: ClassVar[Mapping[str, Callable[[str, str, Any], Any]]]
    #: the rule reduces over whole tensors (trust ratios): blocks never split a tensor
    needs_tensor_reductions: ClassVar[bool] = False
    #: the hyperparameter that per-parameter decay switches (apply_decay_param_fun) zero
    decay_key: ClassVar[str] = "weight_decay"
    #: flavor -> the options (and defaults) that reproduce that framework
    flavors: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    @classmethod
    def static_options(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_group(cls, group: Mapping[str, Any]) -> Rule:
        return cls(**{name: group[name] for name in cls.static_options()})

    @classmethod
    def check(cls, owner: str, hp: Mapping[str, Any]) -> None:
        """Checks across hyperparameters (each one alone is checked by its validator)."""

    def reads_params(self, hp: Mapping[str, Any]) -> bool:
        """Whether ``update`` reads the parameters (else a functional ``update`` may be
        called without them, as optax allows)."""
        return hp.get("weight_decay", 0.0) != 0.0

    def slots(self) -> dict[str, float]:
        """State arrays this configuration keeps, with their initial value."""
        return {}

    def scalars(self, hp: Mapping[str, Any], step: Any) -> dict[str, Any]:
        """Per-step scalars from the group's hyperparameters (``hp["lr"]`` already
        resolved for this step) and ``step``, the 1-based count of this update
        (a Python int, or a 0-d float array under tracing)."""
        raise NotImplementedError

    def float32_lr(self, scalars: dict[str, Any]) -> dict[str, Any]:
        """The scalars as torch forms them when its ``lr`` is a float32 tensor (with
        ``flavor="torch"``): the products of the learning rate rounded to float32 where
        torch computes them on that tensor. Rules whose scalars use ``lr`` only as given
        need nothing."""
        return scalars

    def update(
        self, xp: Any, p: Any, g: Any, state: Mapping[str, Any], s: Scalars, block: Block
    ) -> tuple[Any, dict[str, Any]]:
        """Return ``(delta, new_state)`` for one block: the new parameter is ``p + delta``.

        ``block`` describes which tensors the flat arrays hold, for per-tensor
        reductions (``block.tensor_sums``); elementwise rules ignore it."""
        raise NotImplementedError
