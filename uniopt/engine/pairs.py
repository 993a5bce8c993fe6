r"""Complex parameters: each rule's ``complex_mode``, and real pairs in the engine.

A rule's ``complex_mode`` (a flavor fact, :mod:`uniopt.flavors`) says what a complex
parameter :math:`\theta = a + ib` means to it:

* ``"real_pairs"`` (torch, and no flavor): the real parameter :math:`(a, b)`. Every
  rule is then the real rule, unchanged, on pairs, which is what torch.optim's
  ``view_as_real`` does in each of its optimizers. It is done once, here: a complex
  segment is run as the real segment of twice its length. Its parameters, gradients
  and state slots are seen as real arrays of shape ``shape + (2,)`` (last axis: real,
  imaginary), as views of their memory where the library has them (NumPy, CuPy and
  torch: written in place) or as new arrays rebuilt into complex ones inside the
  compiled step (JAX, other array-API libraries); its segment table is that of the
  tensors of shape ``shape + (2,)``, so per-tensor sums (trust ratios, norms) are the
  complex tensors' :math:`\sum |\theta_i|^2`. The state keeps the parameters' complex
  dtype, as torch.optim's does, and a slot starting at :math:`v` starts at
  :math:`v + iv` (torch's Adagrad: ``complex(v, v)``), every real part at :math:`v`.
* ``"conjugate"`` (optax): the rule runs on the complex arrays themselves; its blocks
  take second moments of :math:`|g|^2 = \operatorname{Re}(\bar g g)` and keep them in
  the parameters' complex dtype with imaginary part 0, as optax's state
  (:func:`uniopt.blocks.abs_sq`); a slot starting at :math:`v` starts at :math:`v + 0i`.
* ``None``: complex parameters are refused, with a TypeError naming the flavor and
  why (:data:`uniopt.flavors.COMPLEX_REFUSALS`), when the optimizer or the transform's
  state is built.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from uniopt.engine.execute import step_whole, update_segment, update_tensors, update_whole
from uniopt.engine.layout import Layout
from uniopt.flavors import COMPLEX_REFUSALS, REAL_PAIRS

if TYPE_CHECKING:
    from uniopt._adapter import Adapter
    from uniopt.engine.segment import Segment
    from uniopt.rule import Rule


def mode(rule: Rule) -> str | None:
    """The ``complex_mode`` of ``rule`` (of the rule a wrapper such as gradient
    preprocessing or ``lazy_mode`` wraps); ``"real_pairs"`` for rules without one."""
    while getattr(rule, "inner", None) is not None:
        rule = rule.inner
    return getattr(rule, "complex_mode", REAL_PAIRS)


def is_complex(x: Any) -> bool:
    """Whether array ``x`` (or a dtype) is complex, by its dtype's name."""
    return "complex" in str(getattr(x, "dtype", x))


def as_pairs(rule: Rule, x: Any) -> bool:
    """Whether arrays like ``x`` run as real pairs under ``rule``."""
    return is_complex(x) and mode(rule) == REAL_PAIRS


def initial_values(rule: Rule, complex_state: bool, slots: Mapping[str, float]) -> dict[str, Any]:
    """Each slot's initial value for state of the parameters' dtype: ``v``, or for
    complex state in real pairs ``complex(v, v)`` (each real part starts at ``v``)."""
    if not (complex_state and mode(rule) == REAL_PAIRS):
        return dict(slots)
    return {k: complex(v, v) for k, v in slots.items()}


def refuse(owner: str, rule: Rule, flavor: str | None, named: Iterable[tuple[str, Any]]) -> None:
    """Raise TypeError when ``rule`` refuses complex parameters (``complex_mode=None``)
    and one of the ``(name, array)`` pairs is complex."""
    if mode(rule) is not None:
        return
    for name, x in named:
        if is_complex(x):
            dtype = str(x.dtype).rsplit(".", 1)[-1]
            reason = COMPLEX_REFUSALS.get(flavor or "")
            who = f"flavor={flavor!r}" if reason else "complex_mode=None"
            raise TypeError(
                f"{owner}: {who} takes no complex parameters, and parameter '{name}' is "
                f"{dtype}" + (f": {reason}" if reason else "") + ". Use complex_mode="
                "'real_pairs' (torch: real and imaginary parts as independent reals) or "
                "'conjugate' (optax: second moments of |g|^2)"
            )


# ---- conversions (inside compiled steps too) ---------------------------------------------


def real_flat(adapter: Adapter, xp: Any, x: Any) -> Any:
    """A flat complex array as its ``2n`` real numbers, each pair ``(re, im)``."""
    return xp.reshape(adapter.as_real(x), (-1,))


def complex_flat(adapter: Adapter, xp: Any, r: Any) -> Any:
    """The inverse of :func:`real_flat`."""
    return adapter.from_real(xp.reshape(r, (-1, 2)))


def _real_state(adapter: Adapter, xp: Any, state: Mapping[str, Any], flat: bool) -> dict:
    if flat:
        return {k: real_flat(adapter, xp, v) for k, v in state.items()}
    return {k: adapter.as_real(v) for k, v in state.items()}


def _complex_state(adapter: Adapter, xp: Any, state: Mapping[str, Any], flat: bool) -> dict:
    if flat:
        return {k: complex_flat(adapter, xp, v) for k, v in state.items()}
    return {k: adapter.from_real(v) for k, v in state.items()}


def pairs_update_tensors(
    adapter: Adapter,
    xp: Any,
    rule: Rule,
    layout: Layout,
    first: int,
    last: int,
    params: Sequence[Any],
    grads: Sequence[Any],
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
) -> tuple[list[Any], dict[str, Any]]:
    """:func:`uniopt.engine.execute.update_tensors` of complex tensors as real pairs:
    complex deltas and the new complex flat state. Traceable."""
    deltas, new = update_tensors(
        xp,
        rule,
        layout.real_pairs(),
        first,
        last,
        [adapter.as_real(p) for p in params],
        [adapter.as_real(g) for g in grads],
        _real_state(adapter, xp, state, True),
        scalars,
    )
    return [adapter.from_real(d) for d in deltas], _complex_state(adapter, xp, new, True)


def pairs_update_whole(
    adapter: Adapter,
    xp: Any,
    rule: Rule,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
    all_reduce: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """:func:`uniopt.engine.execute.update_whole` of one complex tensor as real pairs
    (shape ``p.shape + (2,)``: placements along the tensor's own axes are kept)."""
    delta, new = update_whole(
        xp,
        rule,
        adapter.as_real(p),
        adapter.as_real(g),
        _real_state(adapter, xp, state, False),
        scalars,
        all_reduce,
    )
    return adapter.from_real(delta), _complex_state(adapter, xp, new, False)


def pairs_update_segment(
    adapter: Adapter,
    xp: Any,
    rule: Rule,
    layout: Layout,
    p: Any,
    g: Any,
    state: Mapping[str, Any],
    scalars: Mapping[str, Any],
) -> tuple[Any, dict[str, Any]]:
    """:func:`uniopt.engine.execute.update_segment` of a flat complex segment as real
    pairs."""
    delta, new = update_segment(
        xp,
        rule,
        layout.real_pairs(),
        real_flat(adapter, xp, p),
        real_flat(adapter, xp, g),
        _real_state(adapter, xp, state, True),
        scalars,
    )
    return complex_flat(adapter, xp, delta), _complex_state(adapter, xp, new, True)


# ---- the stateful engine -------------------------------------------------------------------


def run(
    segment: Segment,
    rule: Rule,
    first: int,
    last: int,
    grads: Sequence[Any],
    scalars: Mapping[str, Any],
    state: dict[str, Any],
) -> dict[str, Any]:
    """:meth:`Segment.run` of a complex segment as real pairs: in place through real
    views (NumPy, CuPy, torch), else one compiled pure step converting at its edges."""
    adapter = segment.adapter
    if not adapter.mutable:
        return _run_functional(segment, rule, first, last, grads, scalars, state)
    twin = _twin(segment)
    real_grads = [None if g is None else adapter.as_real(g) for g in grads]
    twin.run(rule, first, last, real_grads, scalars, _state_views(segment, state))
    return state


def _twin(segment: Segment) -> Segment:
    """The real segment whose parameters are views of ``segment``'s complex parameters
    (taken again every step: torch may re-point a parameter's storage). It never binds
    its parameters to a buffer of its own, which would untie them from the complex
    ones, and keeps its own recorded plans (of the real dtype)."""
    adapter = segment.adapter
    params = [adapter.as_real(adapter.data(p)) for p in segment.params]
    twin = segment.__dict__.get("_pairs_twin")
    if twin is None:
        twin = copy.copy(segment)
        layout = segment.layout.real_pairs()
        twin.__dict__.update(
            layout=layout,
            dtype=params[0].dtype,
            state_dtype=params[0].dtype,
            state_shape=(layout.size,),
            master=False,
            compile=False,
            flat=None,
            state={},
            _unbound=False,
            _grads=None,
            _bound_at=None,
            _compiled={},
            _planned={},
            _scratch={},
            _grad_views={},
            _views={},
        )
        segment.__dict__["_pairs_twin"] = twin
    twin.params = params
    return twin


def _state_views(segment: Segment, state: Mapping[str, Any]) -> dict[str, Any]:
    """Flat real views of the complex state arrays, kept while they are the same
    arrays."""
    adapter, xp = segment.adapter, segment.xp
    arrays = tuple(state.values())
    memo = segment.__dict__.get("_pairs_views")
    if memo is not None and len(memo[0]) == len(arrays) and all(map(operator.is_, memo[0], arrays)):
        return dict(zip(state, memo[1]))
    views = tuple(real_flat(adapter, xp, v) for v in arrays)
    segment.__dict__["_pairs_views"] = (arrays, views)
    return dict(zip(state, views))


def _run_functional(
    segment: Segment,
    rule: Rule,
    first: int,
    last: int,
    grads: Sequence[Any],
    scalars: Mapping[str, Any],
    state: dict[str, Any],
) -> dict[str, Any]:
    key = ("pairs", rule, first, last, tuple(scalars))
    fn = segment._compiled.get(key)
    if fn is None:
        fn = segment._compiled[key] = _build(segment, rule, first, last)
    params = [segment.adapter.data(p) for p in segment.params[first:last]]
    new_params, new_state = fn(params, list(grads[first:last]), state, dict(scalars))
    segment.params[first:last] = new_params
    return new_state


def _build(segment: Segment, rule: Rule, first: int, last: int) -> Any:
    """The pure step of tensors ``first .. last-1`` as real pairs, converting complex
    parameters, gradients and state to pairs and back inside it (so that a compiler
    fuses the conversions into the update)."""
    adapter, xp, shaped = segment.adapter, segment.xp, segment.shaped
    layout = segment.layout.real_pairs()

    def step(params, grads, state, scalars):
        real = _real_state(adapter, xp, state, not shaped)
        ps = [adapter.as_real(p) for p in params]
        gs = [adapter.as_real(g) for g in grads]
        if shaped:
            new_p, new_state = step_whole(xp, rule, ps[0], gs[0], real, scalars)
            new_ps = [new_p]
        else:
            deltas, new_state = update_tensors(xp, rule, layout, first, last, ps, gs, real, scalars)
            new_ps = [p + d for p, d in zip(ps, deltas)]
        return (
            [adapter.from_real(p) for p in new_ps],
            _complex_state(adapter, xp, new_state, not shaped),
        )

    return adapter.compile(step, donate_argnums=(2,)) or step
