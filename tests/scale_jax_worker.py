"""Sharded jax runs of every registry optimizer, on 8 host devices in float64.

Run by ``tests/test_scale_jax.py`` in a subprocess (the rest of the suite keeps one
device); also runnable alone: ``python tests/scale_jax_worker.py``. For every case of
``uniopt.parity.cases.CASES``, on both faces, parameters sharded over a (4, 2) mesh
(split on one axis, on both, over both at once, and replicated) take jitted, donating
steps, and the worker checks that

* every state array is sharded like its parameter (and nothing is laid end to end);
* the compiled step holds no all-gather, all-to-all, reduce-scatter or
  collective-permute, and an all-reduce only where the rule takes per-tensor norms;
* the parameters equal the unsharded single-device run and the float64 NumPy oracle
  (1e-12);
* the same update inside a ``shard_map`` gives the same numbers;
* the state saved in the portable format loads onto another sharding and onto one
  device, and the next step matches.

Then the bad input: parameters of one group on different meshes or devices get
segments of their own, never gathered. Prints one line per check; exits 1 on any
failure. Arguments, if any, name the algorithms to run (all by default).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_ENABLE_X64", "1")

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import uniopt  # noqa: E402
from uniopt._adapter import adapter_for  # noqa: E402
from uniopt.parity.cases import CASES, CLASSES, Case  # noqa: E402
from uniopt.parity.problem import gradient, make_problem  # noqa: E402
from uniopt.parity.runner import deviation, run_reference  # noqa: E402

STEPS = 5  #: steps before the state is saved; one more after it is loaded
TOLERANCE = 1e-12
#: parameter name -> (shape, sharding over the ("d", "m") = (4, 2) mesh, another one)
LEAVES = {
    "dense.kernel": ((8, 4), P("d", "m"), P("m", "d")),
    "dense.bias": ((4,), P("m"), P()),
    "conv.kernel": ((2, 3, 4), P(None, None, "d"), P(None, None, "m")),
    "norm.scale": ((6,), P(), P("m")),
    "embed": ((16, 3), P(("d", "m"), None), P("d", None)),
}
NAMES = list(LEAVES)
SPECS = {n: spec for n, (_, spec, _) in LEAVES.items()}
OTHER_SPECS = {n: other for n, (_, _, other) in LEAVES.items()}
SHAPES = [shape for shape, _, _ in LEAVES.values()]
PROBLEM = make_problem(STEPS + 1, shapes=SHAPES)
JAX_ADAPTER = adapter_for(jnp.zeros(()))
COLLECTIVES = ("all-gather", "all-to-all", "reduce-scatter", "collective-permute")


def as_dict(arrays) -> dict[str, np.ndarray]:
    return dict(zip(NAMES, arrays))


def place(values: dict, mesh, specs: dict) -> dict:
    """Host arrays onto ``mesh`` with ``specs``; ``mesh=None``: onto device 0."""
    return {
        n: jax.device_put(
            jnp.asarray(v), jax.devices()[0] if mesh is None else NamedSharding(mesh, specs[n])
        )
        for n, v in values.items()
    }


class Data:
    """The parity problem's arrays, placed one way."""

    def __init__(self, mesh, specs):
        def put(arrays):
            return place(as_dict(arrays), mesh, specs)

        self.init = put(PROBLEM.init)
        self.curvature, self.center = put(PROBLEM.curvature), put(PROBLEM.center)
        self.noise = [put(n) for n in PROBLEM.noise]

    def grads(self, params: dict, noise: dict) -> dict:
        return {n: gradient(params[n], self.curvature[n], self.center[n], noise[n]) for n in params}


_SINGLE: list = []


def single_device() -> Data:
    """The problem on device 0 (made once)."""
    if not _SINGLE:
        _SINGLE.append(Data(None, SPECS))
    return _SINGLE[0]


def fresh(tree: dict) -> dict:
    """Copies, placed alike (jitted steps donate their inputs)."""
    return {n: jnp.array(x, copy=True) for n, x in tree.items()}


def host(tree) -> dict[str, np.ndarray]:
    return {n: np.asarray(x) for n, x in tree.items()}


def off(got: dict, want) -> float:
    """Relative deviation of ``got`` (name -> array) from ``want`` (list or dict)."""
    want = [want[n] for n in NAMES] if isinstance(want, dict) else list(want)
    return deviation([np.asarray(got[n], np.float64) for n in NAMES], want)[1]


_ORACLES: dict = {}


def ORACLE(case: Case, steps: int = STEPS) -> list[np.ndarray]:  # noqa: N802 - a constant table
    """The float64 NumPy oracle's parameters after ``steps`` steps (computed once)."""
    key = (case.id, steps)
    if key not in _ORACLES:
        _ORACLES[key] = run_reference(case, make_problem(steps, shapes=SHAPES))
    return _ORACLES[key]


def needs_norms(case: Case) -> bool:
    """The case's rule takes per-tensor norms (its compiled step may all-reduce)."""
    name = case.options["inner"] if case.algorithm == "lookahead" else case.algorithm
    return getattr(uniopt, CLASSES[name]).rule.needs_tensor_reductions


def collective_problems(text: str, all_reduce_allowed: bool) -> list[str]:
    found = [c for c in COLLECTIVES if c in text]
    if "all-reduce" in text and not all_reduce_allowed:
        found.append("all-reduce")
    return [f"compiled step has {', '.join(found)}"] if found else []


def param_name(path) -> str | None:
    """The parameter a state leaf belongs to: a dict key on its path that names one."""
    keys = [getattr(k, "key", None) for k in path]
    return next((k for k in keys if k in LEAVES), None)


def sharding_problems(state, params: dict) -> list[str]:
    """Every state array of one or more dimensions is under a parameter's name and
    sharded like that parameter; 0-d arrays (step counts) are replicated."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        where = jax.tree_util.keystr(path)
        if leaf.ndim == 0:
            if not leaf.sharding.is_fully_replicated:
                out.append(f"{where} is not replicated")
            continue
        name = param_name(path)
        if name is None:
            out.append(f"{where} belongs to no parameter (laid end to end?)")
        elif not leaf.sharding.is_equivalent_to(params[name].sharding, leaf.ndim):
            out.append(f"{where} is {leaf.sharding.spec}, its parameter {SPECS[name]}")
    return out


def functional_step(tx):
    def step(params, state, data_arrays, noise):
        curvature, center = data_arrays
        grads = {n: gradient(params[n], curvature[n], center[n], noise[n]) for n in params}
        updates, state = tx.update(grads, state, params)
        return uniopt.apply_updates(params, updates), state

    return step


_JITTED: dict = {}


def run_functional(tx, data: Data, steps: range, params=None, state=None):
    """The user's jitted, donating step of ``tx`` (one jit per transform, compiled once
    per placement); returns params, state and the compiled step's text."""
    step = _JITTED.setdefault(tx, jax.jit(functional_step(tx), donate_argnums=(0, 1)))
    params = fresh(data.init) if params is None else params
    state = tx.init(params) if state is None else state
    arrays = (data.curvature, data.center)
    text = step.lower(params, state, arrays, data.noise[steps[0]]).compile().as_text()
    for t in steps:
        params, state = step(params, state, arrays, data.noise[t])
    return params, state, text


def check_numbers(params: dict, case: Case, unsharded: dict, label: str = "") -> list[str]:
    out = []
    for what, want in (("the unsharded run", unsharded), ("the float64 oracle", ORACLE(case))):
        if (rel := off(params, want)) > TOLERANCE:
            out.append(f"{label}differs from {what} by {rel:.2e}")
    return out


def unsharded_run(case: Case) -> dict:
    """The case's functional run on one device (shared by both faces' checks)."""
    if case.id not in _UNSHARDED:
        params, _, _ = run_functional(case.build_transform(), single_device(), range(STEPS))
        _UNSHARDED[case.id] = host(params)
    return _UNSHARDED[case.id]


_UNSHARDED: dict = {}


def check_functional(case: Case, mesh, sharded: Data, full: bool, tmp: Path) -> list[str]:
    tx = case.build_transform()
    params, state, text = run_functional(tx, sharded, range(STEPS))
    problems = collective_problems(text, needs_norms(case))
    problems += sharding_problems(state, params)
    problems += check_numbers(params, case, unsharded_run(case))
    if not full:
        return problems
    problems += check_shard_map(tx, mesh, sharded, case)
    # the sharded state in the portable format, loaded three ways, then one more step
    path = tmp / f"{case.id}.safetensors"
    uniopt.save({"opt_state": uniopt.transform_state_dict(state, params)}, path)
    saved = uniopt.load(path)["opt_state"]
    for label, data, target_mesh, specs in targets(mesh, sharded, same=True):
        start = place(host(params), target_mesh, specs)
        loaded = uniopt.load_transform_state(saved, tx, start)
        if target_mesh is not None:
            problems += [f"loaded onto {label}: {p}" for p in sharding_problems(loaded, start)]
        got, _, _ = run_functional(tx, data, range(STEPS, STEPS + 1), start, loaded)
        problems += next_step_problems(got, case, label)
    return problems


def targets(mesh, sharded: Data, same: bool) -> list[tuple]:
    """Where a saved state is loaded: (label, data, mesh, specs)."""
    out = [("the same sharding", sharded, mesh, SPECS)] if same else []
    other = _OTHER.setdefault(mesh, Data(mesh, OTHER_SPECS))
    return [
        *out,
        ("another sharding", other, mesh, OTHER_SPECS),
        ("one device", single_device(), None, None),
    ]


_OTHER: dict = {}


def next_step_problems(params: dict, case: Case, label: str) -> list[str]:
    """The step after loading, against the oracle run one step further."""
    rel = off(params, ORACLE(case, STEPS + 1))
    return [f"next step after loading onto {label} differs by {rel:.2e}"] if rel > TOLERANCE else []


def check_shard_map(tx, mesh, data: Data, case: Case) -> list[str]:
    """The update inside the user's ``shard_map`` step: each device updates its shards
    (per-tensor norms are summed over the mesh axes a tensor is split along)."""

    def spec_of(path, leaf):
        name = param_name(path)
        return SPECS[name] if name is not None and leaf.ndim else P()

    params = fresh(data.init)
    state = tx.init(params)
    state_specs = jax.tree_util.tree_map_with_path(spec_of, state)
    arrays = (data.curvature, data.center)
    step = jax.jit(
        jax.shard_map(
            functional_step(tx),
            mesh=mesh,
            in_specs=(SPECS, state_specs, (SPECS, SPECS), SPECS),
            out_specs=(SPECS, state_specs),
        ),
        donate_argnums=(0, 1),
    )
    for t in range(STEPS):
        params, state = step(params, state, arrays, data.noise[t])
    return check_numbers(params, case, unsharded_run(case), "inside shard_map: ")


class CompiledTexts:
    """Records the compiled HLO of every function the jax adapter jits (the stateful
    face's segment steps), on its first call."""

    def __init__(self):
        self.texts: list[str] = []
        self._compile = JAX_ADAPTER.compile

    def __enter__(self):
        def recording(fn, donate_argnums=()):
            jitted = self._compile(fn, donate_argnums)
            seen = []

            def call(*args):
                if not seen:
                    seen.append(True)
                    self.texts.append(jitted.lower(*args).compile().as_text())
                return jitted(*args)

            return call

        JAX_ADAPTER.compile = recording
        return self

    def __exit__(self, *exc):
        del JAX_ADAPTER.compile  # back to the class's method


def run_stateful(opt, data: Data, steps: range):
    for t in steps:
        opt.step(data.grads(opt.params, data.noise[t]))
    return opt


def segments_of(opt) -> list:
    inner = getattr(opt, "inner", opt)
    return [s for group in inner._segments for s in group]


def check_stateful(case: Case, mesh, sharded: Data, full: bool, tmp: Path) -> list[str]:
    problems = []
    with CompiledTexts() as compiled:
        opt = run_stateful(case.build(fresh(sharded.init)), sharded, range(STEPS))
    for text in compiled.texts:
        problems += collective_problems(text, needs_norms(case))
    params = opt.params
    for segment in segments_of(opt):
        if len(segment.names) != 1 or not segment.shaped:
            problems.append(f"segment {segment.names} is not one sharded parameter")
            continue
        name = segment.names[0]
        for slot, array in segment.state.items():
            if not array.sharding.is_equivalent_to(params[name].sharding, array.ndim):
                problems.append(f"state {name}/{slot} is {array.sharding.spec}, not {SPECS[name]}")
    for slows in getattr(opt, "_slow", None) or []:
        for segment, slow in zip(segments_of(opt), slows):
            name = segment.names[0]
            if not slow.sharding.is_equivalent_to(params[name].sharding, slow.ndim):
                problems.append(f"slow weights of {name} are {slow.sharding.spec}")
    problems += check_numbers(params, case, unsharded_run(case))
    if not full:
        return problems
    path = tmp / f"stateful-{case.id}.safetensors"
    uniopt.save(opt, path)
    for label, data, target_mesh, specs in targets(mesh, sharded, same=False):
        loaded = case.build(place(host(params), target_mesh, specs))
        loaded.load_state_dict(uniopt.load(path))
        run_stateful(loaded, data, range(STEPS, STEPS + 1))
        problems += next_step_problems(loaded.params, case, label)
    return problems


def check_global_norm_clipping(sharded: Data) -> list[str]:
    """Global-norm clipping chained in front (functional) and as grad_clip (stateful)."""
    problems = []
    tx = optax.chain(optax.clip_by_global_norm(0.5), uniopt.adamw(lr=0.05, weight_decay=0.1))
    params, state, text = run_functional(tx, sharded, range(STEPS))
    single = single_device()
    flat, _, _ = run_functional(tx, single, range(STEPS))
    problems += collective_problems(text, all_reduce_allowed=True)
    problems += sharding_problems(state, params)
    if (rel := off(params, host(flat))) > TOLERANCE:
        problems.append(f"optax.chain(clip_by_global_norm, adamw) differs by {rel:.2e}")

    def build(p):
        return uniopt.AdamW(p, lr=0.05, grad_clip=uniopt.ClipGradByGlobalNorm(0.5))

    opt = run_stateful(build(fresh(sharded.init)), sharded, range(STEPS))
    ref = run_stateful(build(fresh(single.init)), single, range(STEPS))
    if (rel := off(opt.params, host(ref.params))) > TOLERANCE:
        problems.append(f"grad_clip=ClipGradByGlobalNorm differs by {rel:.2e}")
    return problems


def check_mixed_placements() -> list[str]:
    """One group over two meshes and two single devices: a segment per placement (the
    leaves on the first leaf's device together), each state array where its parameter
    is, nothing moved, the one-device numbers."""
    devices = jax.devices()
    mesh_a = jax.sharding.Mesh(np.array(devices[:4]), ("d",))
    mesh_b = jax.sharding.Mesh(np.array(devices[4:]), ("d",))
    where = {
        "a0": jax.sharding.SingleDeviceSharding(devices[0]),
        "a1": jax.sharding.SingleDeviceSharding(devices[0]),
        "b": NamedSharding(mesh_a, P("d")),
        "c": NamedSharding(mesh_b, P("d")),
        "e": jax.sharding.SingleDeviceSharding(devices[6]),
    }
    shapes = {"a0": (3,), "a1": (2, 2), "b": (8, 2), "c": (4,), "e": (5,)}
    rng = np.random.default_rng(1)
    values = {n: rng.standard_normal(shape) for n, shape in shapes.items()}
    params = {n: jax.device_put(v, where[n]) for n, v in values.items()}
    single = {n: jnp.asarray(v) for n, v in values.items()}
    problems = []

    def grads(p):  # on the host, placed like the parameters (eager jax compiles per op)
        return {n: jax.device_put(2.0 * np.asarray(x) + 0.5, x.sharding) for n, x in p.items()}

    def misplaced(label: str, name: str, array) -> list[str]:
        if array.sharding.is_equivalent_to(where[name], array.ndim):
            return []
        return [f"{label} '{name}' is on {array.sharding}, its parameter on {where[name]}"]

    opt, ref = uniopt.LAMB(dict(params), lr=0.05), uniopt.LAMB(dict(single), lr=0.05)
    for _ in range(3):
        opt.step(grads(opt.params))
        ref.step(grads(ref.params))
    segments = sorted(tuple(s.names) for s in segments_of(opt))
    if segments != [("a0", "a1"), ("b",), ("c",), ("e",)]:
        problems.append(f"stateful segments {segments}")
    for s in segments_of(opt):
        if s.shaped:
            problems += [p for a in s.state.values() for p in misplaced("state of", s.names[0], a)]
    tx = uniopt.sgd(lr=0.05, momentum=0.9)  # few ops: eager jax compiles each one
    p, state = dict(params), tx.init(params)
    q, ref_state = dict(single), tx.init(single)
    if sorted(state.placed) != ["b", "c", "e"] or len(state.slots) != 1:
        problems.append(f"functional: own state for {sorted(state.placed)}, expected b, c, e")
    for _ in range(3):  # eagerly: one jit cannot take arrays on different devices
        updates, state = tx.update(grads(p), state, p)
        p = uniopt.apply_updates(p, updates)
        updates, ref_state = tx.update(grads(q), ref_state, q)
        q = uniopt.apply_updates(q, updates)
    for name, slots in state.placed.items():
        problems += [x for a in slots.values() for x in misplaced("functional state of", name, a)]
    for label, got, want in (("stateful", opt.params, ref.params), ("functional", p, q)):
        for n in values:
            if np.max(np.abs(np.asarray(got[n]) - np.asarray(want[n]))) > TOLERANCE:
                problems.append(f"{label}: '{n}' differs from the one-device run")
            problems += misplaced(label, n, got[n])
    return problems


def report(label: str, check, *args) -> bool:
    start = time.perf_counter()
    try:
        problems = check(*args)
    except Exception:  # noqa: BLE001 - reported, and the run fails
        problems = ["raised:\n" + traceback.format_exc()]
    took = time.perf_counter() - start
    print(f"{'ok  ' if not problems else 'FAIL'} {label} ({took:.1f}s)", flush=True)
    for p in problems:
        print(f"     - {p}", flush=True)
    return not problems


def main(algorithms: list[str]) -> int:
    if jax.device_count() < 8 or not jax.config.jax_enable_x64:
        print("needs 8 devices and float64: set XLA_FLAGS and JAX_ENABLE_X64 before jax loads")
        return 2
    # the functional face on a mesh where jax may reshard silently (Auto axes): a gather
    # would show in the compiled step; the stateful face on an Explicit one
    auto = jax.make_mesh((4, 2), ("d", "m"), axis_types=(AxisType.Auto,) * 2)
    explicit = jax.make_mesh((4, 2), ("d", "m"), axis_types=(AxisType.Explicit,) * 2)
    on_auto, on_explicit = Data(auto, SPECS), Data(explicit, SPECS)
    cases = [c for c in CASES if not algorithms or c.algorithm in algorithms]
    #: shard_map and state files are checked on the first case of each algorithm
    full = {next(c.id for c in cases if c.algorithm == a) for a in {c.algorithm for c in cases}}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            extra = " + shard_map, state files" if case.id in full else ""
            for face, check, mesh, data in (
                ("functional", check_functional, auto, on_auto),
                ("stateful  ", check_stateful, explicit, on_explicit),
            ):
                label = f"{face} {case.id}{extra}"
                ok &= report(label, check, case, mesh, data, case.id in full, Path(tmp))
    ok &= report(
        "global-norm clipping (optax.chain, grad_clip)", check_global_norm_clipping, on_auto
    )
    ok &= report("one group on two meshes and two devices", check_mixed_placements)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
