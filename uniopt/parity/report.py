"""``python -m uniopt parity``: the table of deviations, and its exit status."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from uniopt.flavors import FLAVORS
from uniopt.parity import cases as registry
from uniopt.parity import frameworks
from uniopt.parity.arrays import BACKENDS
from uniopt.parity.problem import make_problem
from uniopt.parity.runner import (
    RUNNERS,
    TOLERANCE,
    deviation,
    run_optax,
    run_reference,
    run_torch,
)

PEERS = {"torch": ("torch.optim", run_torch), "jax": ("optax", run_optax)}


@dataclass
class Row:
    case: str
    backend: str
    face: str
    ref_abs: float
    ref_rel: float
    peer: str
    peer_rel: float | None
    ok: bool


def compare(args: argparse.Namespace) -> list[Row]:
    problem = make_problem(args.steps)
    tolerance = TOLERANCE[args.dtype]
    rows = []
    for case in registry.select(args.optimizers):
        expected = run_reference(case, problem)
        peer_results = {}
        for backend in args.backends:
            if backend in PEERS and backend not in peer_results:
                name, run = PEERS[backend]
                peer_results[backend] = (name, run(case, problem, args.dtype))
            for face in args.faces:
                result = RUNNERS[face](case, backend, problem, args.dtype)
                ref_abs, ref_rel = deviation(result, expected)
                peer, peer_result = peer_results.get(backend, ("-", None))
                peer_rel = None if peer_result is None else deviation(result, peer_result)[1]
                ok = ref_rel <= tolerance and (peer_rel is None or peer_rel <= tolerance)
                rows.append(
                    Row(
                        case.id,
                        backend,
                        face,
                        ref_abs,
                        ref_rel,
                        peer if peer_rel is not None else "-",
                        peer_rel,
                        ok,
                    )
                )
    return rows


def render(rows: list[Row], dtype: str, steps: int) -> str:
    header = (
        f"{'case':<28} {'backend':<17} {'face':<10} {'abs vs ref':>11} "
        f"{'rel vs ref':>11} {'peer':<11} {'rel vs peer':>11}  ok"
    )
    lines = [
        f"uniopt parity: {steps} steps, {dtype}, tolerance {TOLERANCE[dtype]:g} "
        "(relative = max|diff| / max|reference|; reference = float64 NumPy oracle)",
        header,
        "-" * len(header),
    ]
    for r in rows:
        peer_rel = "-" if r.peer_rel is None else f"{r.peer_rel:.2e}"
        lines.append(
            f"{r.case:<28} {r.backend:<17} {r.face:<10} {r.ref_abs:>11.2e} {r.ref_rel:>11.2e} "
            f"{r.peer:<11} {peer_rel:>11}  {'yes' if r.ok else 'NO'}"
        )
    failed = sum(not r.ok for r in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)


@dataclass
class FlavorRow:
    flavor: str
    oracle: str
    backend: str
    ratio: float  #: deviation divided by its tolerance

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0


def compare_flavors(args: argparse.Namespace) -> tuple[list[FlavorRow], list[str]]:
    """Rows for the frameworks' own optimizers: recordings and live Keras."""
    rows, notes = [], []
    recorded = frameworks.manifest()
    for flavor in args.flavors:
        if flavor == "keras":
            if not frameworks.keras_available():
                notes.append("keras: Keras 3 with the jax backend is not installed")
                continue
            for i, case in enumerate(frameworks.KERAS_CASES):
                label = f"keras.optimizers.{case[0]} #{i}"
                rows.append(FlavorRow(flavor, label, "numpy", frameworks.run_keras(i, args.steps)))
            continue
        if flavor in ("torch", "optax"):
            notes.append(f"{flavor}: compared live in the table above (peer column)")
            continue
        if not recorded:
            notes.append(
                f"{flavor}: recordings not found (they live in a source checkout's tests/recorded)"
            )
            continue
        for stem in sorted(frameworks.RECIPES):
            if stem.startswith(flavor + "__"):
                for backend in args.backends:
                    rows.append(FlavorRow(flavor, stem, backend, frameworks.replay(stem, backend)))
        skipped = [s for s in frameworks.NOT_REPRODUCED if s.startswith(flavor + "__")]
        notes += [f"{s}: not reproduced: {frameworks.NOT_REPRODUCED[s]}" for s in skipped]
    return rows, notes


def render_flavors(rows: list[FlavorRow], notes: list[str]) -> str:
    header = f"{'flavor':<10} {'framework oracle':<58} {'backend':<17} {'dev/tol':>8}  ok"
    lines = [
        "",
        "flavors: each framework's own optimizer (recorded trajectories: Paddle, "
        "MindSpore; live: Keras) against uniopt's flavor; dev/tol = deviation / tolerance",
        header,
        "-" * len(header),
    ]
    for r in rows:
        lines.append(
            f"{r.flavor:<10} {r.oracle:<58} {r.backend:<17} {r.ratio:>8.3f}  "
            f"{'yes' if r.ok else 'NO'}"
        )
    lines += [f"note: {n}" for n in notes]
    failed = sum(not r.ok for r in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "parity",
        help="compare every optimizer on every installed backend with the float64 "
        "NumPy reference and with torch.optim / optax",
    )
    p.add_argument(
        "--optimizers",
        nargs="*",
        default=None,
        metavar="NAME",
        help=f"optimizers to run (default: all of {sorted(registry.CLASSES)})",
    )
    p.add_argument(
        "--backends",
        nargs="*",
        default=None,
        metavar="NAME",
        help=f"backends (default: every installed one of {list(BACKENDS)})",
    )
    p.add_argument("--faces", nargs="*", default=list(RUNNERS), choices=list(RUNNERS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--dtype", choices=list(TOLERANCE), default="float64")
    p.add_argument(
        "--flavors",
        nargs="*",
        default=list(FLAVORS),
        metavar="NAME",
        help=f"flavors to check against their framework (default: all of {FLAVORS}; "
        "none: --flavors with no name)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.backends is None:
        args.backends = [name for name, b in BACKENDS.items() if b.available()]
    missing = [b for b in args.backends if b not in BACKENDS or not BACKENDS[b].available()]
    if missing:
        print(f"uniopt parity: backends not available here: {missing}")
        return 2
    if args.steps < 1:
        print("uniopt parity: --steps must be >= 1")
        return 2
    try:
        rows = compare(args)
    except ValueError as error:
        print(f"uniopt parity: {error}")
        return 2
    print(render(rows, args.dtype, args.steps))
    unknown = sorted(set(args.flavors) - set(FLAVORS))
    if unknown:
        print(f"uniopt parity: unknown flavors {unknown}; known: {list(FLAVORS)}")
        return 2
    flavor_rows, notes = compare_flavors(args)
    if flavor_rows or notes:
        print(render_flavors(flavor_rows, notes))
    return 0 if all(r.ok for r in rows) and all(r.ok for r in flavor_rows) else 1
