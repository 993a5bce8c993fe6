"""An in-place replay of a rule, for eager NumPy, torch and CuPy.

Evaluated as written, a rule allocates a new array for every operation of its
equation. ``Plan.trace`` runs the rule once on symbolic stand-ins and records its
operations; ``Plan.run`` then replays them with the array library's ufuncs writing
into a few reused, block-sized scratch buffers, the final values straight into the
state and parameter arrays. The operations, their order, their operand dtypes and
the Python arithmetic on per-step scalars are exactly the rule's, so the results are
bitwise those of the plain evaluation, which remains the reference: a rule that does
anything the recorder does not know (indexing, a branch on an array's values, a
function outside the elementwise set) is not traced, and runs as written.

Per-tensor sums (``block.tensor_sums``, for trust ratios and norm clipping) and their
broadcast back (``block.expand``) are recorded too. Such a rule replays in passes over
cache-sized blocks (``Plan.run_passes``) instead of running on whole tensors with
tensor-sized temporaries; only the order in which a tensor's sum is added up differs.
Sums of float16 values accumulate in float32 there as in ``block.tensor_sums``.

Per-step scalars are recorded as expressions: a step's values go through the same
Python float operations the rule does. A Python branch on a scalar's value (``if wd
== 0``) is recorded as a guard; a step whose scalars decide it differently is not
replayed (the caller traces again).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from uniopt.engine.layout import Block
from uniopt.norms import is_low_precision
from uniopt.rule import Rule, Scalars


class Untraceable(Exception):
    """The rule did something a plan cannot replay."""


# ---- recording ----------------------------------------------------------------------


class _Recorder:
    def __init__(self, dtypes: Mapping[str, Any], scalars: Mapping[str, Any]):
        self.steps: list[tuple] = []  #: (kind, function, argument refs, dtype)
        self.inputs = {name: ("input", name) for name in dtypes}
        self.dtypes: dict[Any, Any] = {("input", n): np.dtype(d) for n, d in dtypes.items()}
        #: "block" (block-sized arrays) or "tensor" (one value per tensor of the block)
        self.domains: dict[Any, str] = dict.fromkeys(self.dtypes, "block")
        self.scalar_steps: list[tuple[Callable, tuple]] = []  #: scalar ops, in order
        self.scalar_names: list[str] = []
        self.guards: list[tuple[Callable, tuple, Any]] = []
        self.scalars = {}
        for name, value in scalars.items():
            if type(value) is not float:  # numpy scalars, 0-d arrays: promotion differs
                raise Untraceable(f"scalar {name!r} is a {type(value).__name__}")
            self.scalar_names.append(name)
            self.scalars[name] = _Sym(value, self, ("scalar", len(self.scalar_names) - 1))

    # scalar expressions
    def scalar_op(self, fn: Callable, args: tuple) -> _Sym:
        value = fn(*(_value(a) for a in args))
        if type(value) is not float:
            raise Untraceable("a scalar expression that is not a float")
        refs = tuple(a.ref if isinstance(a, _Sym) else ("const", a) for a in args)
        self.scalar_steps.append((fn, refs))
        return _Sym(value, self, ("scalar", len(self.scalar_names) + len(self.scalar_steps) - 1))

    def guard(self, fn: Callable, args: tuple) -> Any:
        result = fn(*(_value(a) for a in args))
        refs = tuple(a.ref if isinstance(a, _Sym) else ("const", a) for a in args)
        self.guards.append((fn, refs, result))
        return result

    # array operations
    def operand(self, x: Any) -> tuple[Any, Any]:
        """``(ref, stand-in)`` of an operand; the stand-in gives numpy's result dtype."""
        if isinstance(x, _Arr):
            return x.ref, np.ones(1, self.dtypes[x.ref])
        if isinstance(x, _Sym):
            return x.ref, _value(x)
        if type(x) in (float, int, bool):
            return ("const", x), x
        raise Untraceable(f"an operand of type {type(x).__name__}")

    def record(self, kind: str, fn: Callable, args: tuple, dtype: Any = None) -> _Arr:
        refs, stand_ins = zip(*(self.operand(a) for a in args))
        found = {self.domains[r] for r in refs if r in self.domains}
        if kind == "reduce":
            domain = "tensor" if found == {"block"} else None
        elif kind == "expand":
            domain = "block" if found == {"tensor"} else None
        else:
            domain = found.pop() if len(found) == 1 else None
        if domain is None:
            raise Untraceable("per-tensor values used elementwise without block.expand")
        if dtype is None:
            with np.errstate(all="ignore"):
                dtype = np.asarray(_call(kind, fn, stand_ins)).dtype
        ref = ("node", len(self.steps))
        self.steps.append((kind, fn, refs, np.dtype(dtype)))
        self.dtypes[ref] = np.dtype(dtype)
        self.domains[ref] = domain
        return _Arr(self, ref)


def _value(x: Any) -> Any:
    """A recorded scalar's value now, as a plain float."""
    return float.__float__(x) if isinstance(x, _Sym) else x


def _call(kind: str, fn: Callable, args: tuple) -> Any:
    """Evaluate one recorded operation eagerly (for result dtypes)."""
    if kind == "where":
        return np.where(*args)
    if kind == "fill":
        return np.full_like(args[0], fn)
    if kind == "reduce":  # as Block.tensor_sums: float16 sums in float32
        wide = np.float32 if is_low_precision(args[0].dtype) else None
        return np.sum(args[0], keepdims=True, dtype=wide)
    if kind == "expand":
        return args[0]
    return fn(*args)


def _binary(ufunc: Any, reflected: bool = False) -> Callable:
    def method(self: _Arr, other: Any) -> Any:
        args = (other, self) if reflected else (self, other)
        return self.recorder.record("ufunc", ufunc, args)

    return method


class _Arr:
    """A block-sized array while the rule is recorded."""

    __array_ufunc__ = None  # numpy operands defer to these methods

    def __init__(self, recorder: _Recorder, ref: Any):
        self.recorder, self.ref = recorder, ref

    @property
    def dtype(self) -> Any:
        return self.recorder.dtypes[self.ref]

    def __getattr__(self, name: str) -> Any:
        raise Untraceable(f"array attribute {name!r}")

    def __bool__(self) -> bool:
        raise Untraceable("a Python branch on array values")

    def __getitem__(self, key: Any) -> Any:
        raise Untraceable("indexing")

    __add__, __radd__ = _binary(np.add), _binary(np.add, True)
    __sub__, __rsub__ = _binary(np.subtract), _binary(np.subtract, True)
    __mul__, __rmul__ = _binary(np.multiply), _binary(np.multiply, True)
    __truediv__, __rtruediv__ = _binary(np.divide), _binary(np.divide, True)
    __lt__, __le__ = _binary(np.less), _binary(np.less_equal)
    __gt__, __ge__ = _binary(np.greater), _binary(np.greater_equal)
    __and__, __or__ = _binary(np.bitwise_and), _binary(np.bitwise_or)

    def __neg__(self) -> _Arr:
        return self.recorder.record("ufunc", np.negative, (self,))

    def __abs__(self) -> _Arr:
        return self.recorder.record("ufunc", np.absolute, (self,))

    def __invert__(self) -> _Arr:
        return self.recorder.record("ufunc", np.invert, (self,))


def _scalar_method(fn: Callable, reflected: bool = False, guard: bool = False) -> Callable:
    def method(self: _Sym, *other: Any) -> Any:
        if other and isinstance(other[0], _Arr):
            return NotImplemented
        if other and type(other[0]) not in (float, int, bool, _Sym):
            return NotImplemented
        args = (other[0], self) if reflected else (self, *other)
        if guard:
            return self.recorder.guard(fn, args)
        return self.recorder.scalar_op(fn, args)

    return method


def _guard(fn: Callable) -> Callable:
    """A comparison or truth test of a scalar: recorded as a guard, answered now."""
    return _scalar_method(fn, guard=True)


class _Sym(float):
    """A per-step scalar while the rule is recorded: its value now, and how it is made."""

    def __new__(cls, value: float, recorder: _Recorder, ref: Any) -> _Sym:
        obj = super().__new__(cls, value)
        obj.recorder, obj.ref = recorder, ref
        return obj

    __add__, __radd__ = _scalar_method(operator.add), _scalar_method(operator.add, True)
    __sub__, __rsub__ = _scalar_method(operator.sub), _scalar_method(operator.sub, True)
    __mul__, __rmul__ = _scalar_method(operator.mul), _scalar_method(operator.mul, True)
    __truediv__ = _scalar_method(operator.truediv)
    __rtruediv__ = _scalar_method(operator.truediv, True)
    __pow__, __rpow__ = _scalar_method(operator.pow), _scalar_method(operator.pow, True)
    __neg__, __abs__ = _scalar_method(operator.neg), _scalar_method(operator.abs)
    __eq__, __ne__ = _guard(operator.eq), _guard(operator.ne)
    __lt__, __le__ = _guard(operator.lt), _guard(operator.le)
    __gt__, __ge__ = _guard(operator.gt), _guard(operator.ge)
    __bool__ = _guard(bool)
    __hash__ = float.__hash__

    def __float__(self) -> float:  # would make this step's value a constant
        raise Untraceable("a scalar converted to a Python float")

    __int__ = __index__ = __round__ = __trunc__ = __floor__ = __ceil__ = __float__


class _Namespace:
    """The array functions a recorded rule may call (elementwise ones only)."""

    def __init__(self, recorder: _Recorder, real: Any):
        self._recorder, self._real = recorder, real

    def __getattr__(self, name: str) -> Any:
        if name in _UNARY:
            return lambda x: self._recorder.record("ufunc", _UNARY[name], (x,))
        if name in _BINARY:
            return lambda a, b: self._recorder.record("ufunc", _BINARY[name], (a, b))
        if name in _DTYPES:  # xp.float32: NumPy's stand-in for any library's dtype
            return np.dtype(name)
        value = getattr(self._real, name, None)
        if isinstance(value, (type, np.dtype)):  # other dtypes NumPy has
            return value
        raise Untraceable(f"xp.{name}")

    def where(self, condition: Any, a: Any, b: Any) -> _Arr:
        return self._recorder.record("where", None, (condition, a, b))

    def ones_like(self, x: _Arr) -> _Arr:
        return self._recorder.record("fill", 1, (x,))

    def zeros_like(self, x: _Arr) -> _Arr:
        return self._recorder.record("fill", 0, (x,))

    def astype(self, x: _Arr, dtype: Any) -> _Arr:
        return self._recorder.record("astype", None, (x,), dtype=dtype)


#: dtype names a recorded rule may take from its namespace (``xp.float32``)
_DTYPES = frozenset(("float16", "float32", "float64", "bool"))

_UNARY = {
    "sqrt": np.sqrt,
    "abs": np.absolute,
    "sign": np.sign,
    "exp": np.exp,
    "log": np.log,
    "square": np.square,
    "negative": np.negative,
}
_BINARY = {
    "maximum": np.maximum,
    "minimum": np.minimum,
    "add": np.add,
    "subtract": np.subtract,
    "multiply": np.multiply,
    "divide": np.divide,
}

# ---- the plan ------------------------------------------------------------------------


class _BlockStandIn:
    """The rule's ``block`` while recording: per-tensor sums and their broadcast back
    are recorded (``"reduce"`` and ``"expand"`` operations); anything else about the
    block's tensors is not replayable."""

    def __init__(self, recorder: _Recorder):
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        raise Untraceable(f"block.{name}")

    def tensor_sums(self, xp: Any, x: Any) -> _Arr:
        return self._recorder.record("reduce", None, (x,))

    def expand(self, xp: Any, per_tensor: Any) -> _Arr:
        return self._recorder.record("expand", None, (per_tensor,))


class _Pass:
    """One sweep over a run's blocks: the per-tensor values to form first, then a
    program per block, ending in per-tensor sums (every pass but the last, which may
    also write state that needs no sum) or in the writes of the results (the last)."""

    def __init__(self, before: list, program: list, reductions: list, final: bool):
        self.before = before  #: (node, kind, fn, refs, dtype): per-tensor values
        self.program = program  #: (kind, fn, args, location), per block
        self.reductions = reductions  #: (node, location): per-tensor sums to add up
        self.final = final
        self._code: dict[Any, Callable] = {}
        self.source = ""  #: the generated Python of :meth:`code`, to read

    def code(self, ops: ReplayOps) -> Callable:
        """The program as one Python function of ``(arrays, buffers, values,
        per_tensor, groups)`` calling ``ops``' operations directly, one line each (an
        interpreter loop over the program costs about a microsecond per operation)."""
        found = self._code.get(ops)
        if found is None:
            found = self._code[ops] = self._generate(ops)
        return found

    def _generate(self, ops: ReplayOps) -> Callable:
        names: dict[str, Any] = {}
        lines = ["def block(arrays, buffers, values, per_tensor, groups):"]
        inputs: dict[str, str] = {}

        def expr(ref: Any) -> str:
            kind, key = ref
            if kind == "input":
                if key not in inputs:
                    inputs[key] = f"a{len(inputs)}"
                    lines.insert(1, f"    {inputs[key]} = arrays[{key!r}]")
                return inputs[key]
            if kind == "slot":
                return f"buffers[{key}]"
            if kind == "scalar":
                return f"values[{key}]"
            if kind == "node":
                return f"per_tensor[{key}]"
            names[f"c{len(names)}"] = key  # a constant
            return f"c{len(names) - 1}"

        for n, (kind, fn, refs, out) in enumerate(self.program):
            if kind == "expand":
                call = partial(_expand, ops)
                args = f"{expr(refs[0])}, groups"
            else:
                call = ops.bind(kind, fn, _scalar_first(refs))
                args = ", ".join(expr(r) for r in refs)
            names[f"f{n}"] = call
            lines.append(f"    f{n}({args}, out={expr(out)})  # {kind} {_name(fn)}")
        lines.append("    return None")  # a body even where a pass computes nothing per block
        self.source = "\n".join(lines)
        exec(compile(self.source, "<uniopt plan>", "exec"), names)  # noqa: S102
        return names["block"]


class Plan:
    """A rule's update as lists of in-place operations over blocks.

    An elementwise rule is one pass, run on each block alone (:meth:`run`). A rule with
    per-tensor sums (trust ratios, norm clipping) is several passes over a run's blocks
    (:meth:`run_passes`): a pass adds up each tensor's partial sums block by block, the
    per-tensor values are formed from them, and a later pass broadcasts them back.
    Before the last pass only state that needs no sum is written (read back later in
    place of computing it again); the last pass recomputes the rest of what it needs
    from the inputs and writes the results. Blocks may split tensors, so sums add up in
    another order than the rule as written (equal to rounding), while every other
    operation is the rule's own.
    """

    def __init__(self, recorder: _Recorder, outputs: dict[str, Any]):
        self.scalar_names = recorder.scalar_names
        self.scalar_steps = recorder.scalar_steps
        self.guards = recorder.guards
        self.dtypes = recorder.dtypes
        self.slots: list[Any] = []
        self.passes = self._schedule(recorder.steps, recorder.domains, outputs)
        self._groups: dict[tuple, list] = {}

    @property
    def reduces(self) -> bool:
        """The plan sums over tensors, so it runs a run's blocks in several passes."""
        return len(self.passes) > 1

    @classmethod
    def trace(
        cls,
        xp: Any,
        rule: Rule,
        dtypes: Mapping[str, Any],
        scalars: Mapping[str, Any],
    ) -> Plan:
        """Record ``p + delta`` and the new state of ``rule`` on a block whose arrays
        (``"p"``, ``"g"`` and the state slots) have ``dtypes``. Raises Untraceable."""
        recorder = _Recorder(dtypes, scalars)
        arrays = {name: _Arr(recorder, ref) for name, ref in recorder.inputs.items()}
        state = {k: v for k, v in arrays.items() if k not in ("p", "g")}
        try:
            delta, new_state = rule.update(
                _Namespace(recorder, xp),
                arrays["p"],
                arrays["g"],
                state,
                Scalars(recorder.scalars),
                _BlockStandIn(recorder),
            )
            new_p = arrays["p"] + delta
        except Untraceable:
            raise
        except Exception as error:  # whatever the stand-ins could not do
            raise Untraceable(repr(error)) from error
        outputs = {k: v for k, v in new_state.items()}
        outputs["p"] = new_p
        for name, value in outputs.items():
            if not isinstance(value, _Arr) or name not in dtypes:
                raise Untraceable(f"output {name!r}")
            if recorder.domains[value.ref] != "block":
                raise Untraceable(f"output {name!r} is per tensor")
        return cls(recorder, {k: v.ref for k, v in outputs.items()})

    def _schedule(self, steps: list[tuple], domains: dict, outputs: dict[str, Any]) -> list:
        """Cut the recorded operations into passes. A per-tensor sum of a value that
        pass ``L`` computes is ready for pass ``L + 1``. A state output that needs no
        sum (Adam's moments in LAMB) is written by the pass that first computes it, and
        later passes read it back instead of computing it again (:meth:`_early`)."""
        level: dict[Any, int] = {}
        for i, (kind, _, refs, _) in enumerate(steps):
            below = max((level[r] for r in refs if r in level), default=0)
            level[("node", i)] = below + 1 if kind == "reduce" else below
        needed = _needed(steps, list(outputs.values()))
        last = max((level.get(r, 0) for r in outputs.values()), default=0)
        early = self._early(steps, level, outputs, last)
        passes = []
        for at in range(last + 1):
            written = {outputs[name]: name for name, a in early.items() if a < at}
            now = _reading_back(steps, written)
            sums = [
                i for i in sorted(needed) if steps[i][0] == "reduce" and level[steps[i][2][0]] == at
            ]
            before = [
                (i, *steps[i])
                for i in sorted(needed)
                if domains[("node", i)] == "tensor"
                and (level[("node", i)] == at if steps[i][0] != "reduce" else i in sums)
            ]
            targets = [steps[i][2][0] for i in sums]
            final = at == last
            if final:
                writes = {k: v for k, v in outputs.items() if early.get(k, at) == at}
            else:
                writes = {k: outputs[k] for k, a in early.items() if a == at}
            block_steps = sorted(
                i
                for i in _needed(now, targets + list(writes.values()), domains)
                if domains[("node", i)] == "block"
            )
            program, location = self._allocate(now, block_steps, writes, targets)
            reductions = [(i, location.get(steps[i][2][0], steps[i][2][0])) for i in sums]
            passes.append(_Pass(before, program, reductions, final))
        return passes

    def _early(
        self, steps: list[tuple], level: Mapping, outputs: Mapping[str, Any], last: int
    ) -> dict[str, int]:
        """State outputs written before the last pass: name -> the pass. An output
        qualifies when its value needs no per-tensor sum, has the array's dtype, and no
        later pass reads the array's old value once the new one is read back (the
        parameters and gradients are never written early)."""
        early = {
            name: level[ref]
            for name, ref in outputs.items()
            if name not in ("p", "g")
            and ref[0] == "node"
            and level[ref] < last
            and steps[ref[1]][3] == self.dtypes[("input", name)]
        }
        changed = True
        while changed:  # reading one value back may leave another's old value needed
            changed = False
            for name, at in list(early.items()):
                written = {outputs[k]: k for k, a in early.items() if a <= at}
                now = _reading_back(steps, written)
                later = [r for k, r in outputs.items() if k not in early or early[k] > at]
                if any(("input", name) in steps[i][2] for i in _needed(now, later)):
                    del early[name]
                    changed = True
        return early

    def _allocate(
        self, steps: list[tuple], chosen: list[int], outputs: dict[str, Any], kept: list
    ) -> tuple[list, dict]:
        """Give each chosen operation an output location.

        The final value of an output goes straight into its array when nothing later
        reads that array's old value. Other values go into an output array whose old
        value is no longer read and which they leave before its final value arrives
        (in place, as a hand-written loop would), else into a scratch slot (shared by
        all passes). Each is freed after its last reader; ``kept`` values live to the
        end of the program (the pass's sums read them)."""
        last_read: dict[Any, int] = {}
        for at, i in enumerate(chosen):
            for ref in steps[i][2]:
                last_read[ref] = at
        end = len(chosen)
        for ref in [*outputs.values(), *kept]:
            last_read[ref] = end
        position = {("node", i): at for at, i in enumerate(chosen)}
        aliasing = ("where", "expand")  # these write their output before reading all operands

        def free_from(ref: Any) -> int:
            """Where an array's value is no longer read and its location may be reused
            (by an operation at that position, which may write over its operand)."""
            at = last_read.get(ref, -1)
            return at + 1 if at >= 0 and steps[chosen[at]][0] in aliasing else at

        direct: dict[Any, str] = {}
        for name, ref in outputs.items():
            at = position.get(ref, -1)
            if (
                at >= 0
                and ref not in direct
                and steps[ref[1]][0] not in aliasing
                and self.dtypes[ref] == self.dtypes[("input", name)]
                and free_from(("input", name)) <= at
            ):
                direct[ref] = name
        finals = set(outputs.values())
        # output arrays that may hold passing values: name -> the value there, or None
        spare: dict[str, Any] = {
            name: None for name, ref in outputs.items() if ref in direct and name != "g"
        }

        def spare_for(ref: Any, at: int) -> str | None:
            for name, held in spare.items():
                final = position[outputs[name]]
                if (
                    held is None
                    and self.dtypes[("input", name)] == steps[ref[1]][3]
                    and free_from(("input", name)) <= at < final
                    and free_from(ref) <= final
                ):
                    return name
            return None

        location: dict[Any, Any] = {}
        free: dict[Any, list[int]] = {}
        for slot, dtype in enumerate(self.slots):
            free.setdefault(dtype, []).append(slot)

        def release(refs: list) -> None:
            for r in refs:
                loc = location[r]
                if loc[0] == "slot":
                    free.setdefault(self.slots[loc[1]], []).append(loc[1])
                elif spare.get(loc[1]) == r:
                    spare[loc[1]] = None

        program = []
        for at, i in enumerate(chosen):
            kind, fn, refs, dtype = steps[i]
            ref = ("node", i)
            read = dict.fromkeys(r for r in refs if r in location)  # each once
            released = [r for r in read if last_read[r] == at]
            if kind not in aliasing:  # elementwise ufuncs may write over an operand
                release(released)
            name = direct.get(ref) or (None if ref in finals else spare_for(ref, at))
            if name is not None:
                location[ref] = ("input", name)
                if ref in direct:
                    spare.pop(name, None)  # holds its final value from now on
                else:
                    spare[name] = ref
            else:
                pool = free.setdefault(dtype, [])
                if not pool:
                    self.slots.append(dtype)
                    pool.append(len(self.slots) - 1)
                location[ref] = ("slot", pool.pop())
            if kind in aliasing:
                release(released)
            args = tuple(location.get(r, r) for r in refs)
            program.append((kind, fn, args, location[ref]))
        copies = []
        for name, ref in outputs.items():
            source = location.get(ref, ref)
            if source != ("input", name):
                copies.append((name, source))
        targets = {name for name, _ in copies}
        if any(source[0] == "input" and source[1] in targets for _, source in copies):
            raise Untraceable("outputs that exchange arrays")
        program += [("copy", name, (source,), ("input", name)) for name, source in copies]
        return program, location

    def scalar_values(self, scalars: Mapping[str, Any]) -> list[Any] | None:
        """This step's scalar table, or None when a scalar or a guard rules the plan out."""
        values = []
        for name in self.scalar_names:
            value = scalars.get(name)
            if type(value) is not float:
                return None
            values.append(value)
        for fn, refs in self.scalar_steps:
            values.append(fn(*(values[r[1]] if r[0] == "scalar" else r[1] for r in refs)))
        for fn, refs, result in self.guards:
            if fn(*(values[r[1]] if r[0] == "scalar" else r[1] for r in refs)) != result:
                return None
        return values

    def run(
        self,
        ops: ReplayOps,
        arrays: Mapping[str, Any],
        values: list[Any],
        scratch: list[Any],
    ) -> None:
        """Replay a one-pass plan on one block: ``arrays`` are its ``"p"``, ``"g"`` and
        state arrays (written in place), ``values`` the step's scalar table, ``scratch``
        one array per slot, at least block-sized; ``ops`` are the library's operations."""
        n = arrays["p"].shape[0]
        self.passes[-1].code(ops)(arrays, [s[:n] for s in scratch], values, {}, ())

    def run_passes(
        self,
        ops: ReplayOps,
        views: Callable[[bool], Iterable[tuple[Block, Mapping[str, Any]]]],
        values: list[Any],
        scratch: list[Any],
        first: int,
        count: int,
    ) -> None:
        """Replay on the run of tensors ``first .. first+count-1``: ``views(final)``
        yields each block and its arrays (as :meth:`run` takes them) once per pass; the
        arrays of the last pass (``final``) are written."""
        like = scratch[0] if scratch else None
        add = ops.bind("ufunc", np.add, False)
        per_tensor: dict[int, Any] = {}
        for stage in self.passes:
            for i, kind, fn, refs, dtype in stage.before:
                out = per_tensor[i] = ops.empty(count, dtype, like)
                if kind == "reduce":  # the sums to add up in this pass
                    ops.fill(out, 0)
                else:
                    args = [_fetch(r, {}, [], values, per_tensor) for r in refs]
                    ops.bind(kind, fn, _scalar_first(refs))(*args, out=out)
            code = stage.code(ops)
            for block, arrays in views(stage.final):
                n = block.stop - block.start
                buffers = [s[:n] for s in scratch]
                groups = self._groups_of(block, first)
                code(arrays, buffers, values, per_tensor, groups)
                for i, source in stage.reductions:
                    x = _fetch(source, arrays, buffers, values, per_tensor)
                    total = per_tensor[i]
                    for a, b, t, k, m in groups:
                        part = total[t : t + k]
                        add(part, ops.row_sums(x[a:b].reshape(k, m), total), out=part)

    def _groups_of(self, block: Block, first: int) -> list[tuple[int, int, int, int, int]]:
        """The block as ``(a, b, t, k, n)``: elements ``[a, b)`` are ``k`` pieces of ``n``
        elements of the run's consecutive tensors ``t .. t+k-1``."""
        key = (block.start, block.stop, first)
        groups = self._groups.get(key)
        if groups is None:
            groups = [(a, b, i - first, k, n) for a, b, i, k, n in block.stretches]
            self._groups[key] = groups
        return groups

    def scratch(self, ops: ReplayOps, size: int, like: Any) -> list[Any]:
        """Scratch arrays for blocks of up to ``size`` elements (on ``like``'s device)."""
        return [ops.empty(size, dtype, like) for dtype in self.slots]


def _needed(steps: list[tuple], targets: list, domains: Mapping | None = None) -> set[int]:
    """The operations the ``targets`` depend on; with ``domains``, those of a block
    program, which finds per-tensor values formed (not what they are formed from)."""
    seen: set[int] = set()
    stack = [r[1] for r in targets if r[0] == "node"]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            if domains is None or domains[("node", i)] == "block":
                stack.extend(r[1] for r in steps[i][2] if r[0] == "node")
    return seen


def _reading_back(steps: list[tuple], written: Mapping[Any, str]) -> list[tuple]:
    """``steps`` where the values in ``written`` (ref -> the input array now holding
    it) are read from those arrays instead of being computed again."""
    if not written:
        return steps
    return [
        (kind, fn, tuple(("input", written[r]) if r in written else r for r in refs), dtype)
        for kind, fn, refs, dtype in steps
    ]


def _fetch(ref: Any, arrays: Mapping, buffers: list, values: list, per_tensor: Mapping) -> Any:
    kind, key = ref
    if kind == "input":
        return arrays[key]
    if kind == "slot":
        return buffers[key]
    if kind == "scalar":
        return values[key]
    if kind == "node":  # a per-tensor value
        return per_tensor[key]
    return key  # a constant


def _scalar_first(refs: tuple) -> bool:
    """The operation's first operand is a Python number (a per-step scalar or a constant)."""
    return refs[0][0] in ("scalar", "const")


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", repr(fn))


def _expand(ops: ReplayOps, per_tensor: Any, groups: Sequence, out: Any) -> None:
    """Each tensor's value over its elements of the block."""
    for a, b, t, k, n in groups:
        ops.copy(out[a:b].reshape(k, n), per_tensor[t : t + k][:, None], False)


class ReplayOps:
    """How a library performs the recorded operations in place (NumPy's, by default;
    an adapter whose library has out= operations provides its own). Each must compute
    exactly what the library's own operator or function does when the rule runs as
    written, so that a replay is bitwise the rule."""

    def numpy_dtype(self, dtype: Any) -> Any:
        """The NumPy dtype that stands for ``dtype`` while recording (None: no replay)."""
        return np.dtype(dtype)

    def bind(self, kind: str, fn: Any, scalar_first: bool) -> Callable:
        """The recorded operation ``kind`` (``"ufunc"`` ``fn``, ``"where"``, ``"fill"``
        with value ``fn``, ``"astype"``, ``"copy"``) as ``f(*operands, out=array)``;
        ``scalar_first``: the first operand is a Python number."""
        if kind == "ufunc":
            return fn
        if kind == "where":
            return _numpy_where
        if kind == "fill":
            return partial(_fill, self, fn)
        return partial(_copy, self, kind == "astype")

    def fill(self, out: Any, value: Any) -> None:
        out.fill(value)

    def copy(self, out: Any, x: Any, cast: bool) -> None:
        np.copyto(out, x, casting="unsafe" if cast else "same_kind")

    def empty(self, size: int, dtype: Any, like: Any) -> Any:
        return np.empty(size, dtype=dtype)

    def row_sums(self, x: Any, like: Any) -> Any:
        """The sum of each row of a 2-d array, accumulated in ``like``'s dtype (the
        recorded sums': float32 for float16 ``x``, else ``x``'s own)."""
        return x.sum(1) if x.dtype == like.dtype else x.sum(1, dtype=like.dtype)


def _numpy_where(condition: Any, a: Any, b: Any, out: Any) -> None:
    np.copyto(out, b)
    np.copyto(out, a, where=condition)


def _fill(ops: ReplayOps, value: Any, like: Any, out: Any) -> None:
    ops.fill(out, value)


def _copy(ops: ReplayOps, cast: bool, x: Any, out: Any) -> None:
    ops.copy(out, x, cast)
