"""The ``plot-schedule`` command: draw a pure schedule's learning rate against the step.

    python -m uniopt plot-schedule cosine_annealing --base-lr 0.1 --T-max 100 \\
        --steps 300 -o lr.png

``NAME`` is a factory of :mod:`uniopt.schedules` (see ``SCHEDULES``); every other
``--ARG VALUE`` pair (or ``--ARG=VALUE``) is one of its keyword arguments, with dashes
read as underscores. Values are parsed as numbers, comma lists (``2,4,6``), booleans
(``true``/``false``), ``none``, or else kept as strings. ``--warmup N`` and
``--warmup-start V`` put :func:`uniopt.schedules.linear_warmup` in front.
matplotlib is imported only when the command runs (``pip install "uniopt[plot]"``).

:func:`register` adds the subcommand to an ``argparse`` subparsers object (the handler
is stored as ``func``: ``args.func(args)`` returns 0, or raises ``SystemExit(2)`` on a
usage error or when matplotlib is missing); :func:`main` runs it standalone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

COMMAND = "plot-schedule"
MISSING_MATPLOTLIB = (
    'plot-schedule needs matplotlib, which is not installed: pip install "uniopt[plot]"'
)


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"2,4,6"`` -> [2, 4, 6], ``"true"`` -> True,
    ``"none"`` -> None; anything else stays a string."""
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part.strip()]
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(tokens: Sequence[str]) -> dict[str, Any]:
    """``["--T-max", "100", "--cycle=true"]`` -> ``{"T_max": 100, "cycle": True}``.

    A flag with no value (followed by another ``--flag`` or nothing) means ``True``.
    """
    options: dict[str, Any] = {}
    tokens = list(tokens)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-") or token in ("-", "--"):
            raise ValueError(f"expected --ARG VALUE, got {token!r}")
        key, eq, value = token.lstrip("-").partition("=")
        if not eq:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is None or (nxt.startswith("--") and not _is_number(nxt)):
                value = "true"
            else:
                value = nxt
                i += 1
        options[key.replace("-", "_")] = parse_value(value)
        i += 1
    return options


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from uniopt.schedules import SCHEDULES

    parser.add_argument("name", choices=sorted(SCHEDULES), metavar="NAME", help="schedule")
    parser.add_argument("--steps", type=int, default=100, help="number of steps (default 100)")
    parser.add_argument("-o", "--output", default="lr.png", help="output image (default lr.png)")
    parser.add_argument(
        "params",
        nargs=argparse.REMAINDER,
        metavar="--ARG VALUE",
        help="keyword arguments of the schedule, e.g. --base-lr 0.1 --T-max 100",
    )
    parser.set_defaults(func=run)
    return parser


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plot-schedule`` subcommand to an argparse ``subparsers`` object."""
    parser = subparsers.add_parser(
        COMMAND,
        help="plot a learning-rate schedule to an image",
        description="Plot a schedule of uniopt.schedules (learning rate against step) and "
        "save it as an image. Every --ARG VALUE after NAME is a keyword argument of the "
        "schedule (dashes read as underscores; numbers, lists like 2,4,6, true/false).",
        epilog="example: plot-schedule cosine_annealing --base-lr 0.1 --T-max 100 "
        "--steps 300 -o lr.png   (also --warmup N [--warmup-start V])",
    )
    return _build_parser(parser)


def _fail(message: str) -> None:
    print(f"uniopt {COMMAND}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(args: argparse.Namespace) -> int:
    """Handle a parsed ``plot-schedule`` command line."""
    from uniopt import schedules

    try:
        options = parse_options(args.params)
    except ValueError as exc:
        _fail(str(exc))
    steps = options.pop("steps", args.steps)
    output = options.pop("output", options.pop("o", args.output))
    warmup = options.pop("warmup", 0)
    warmup_start = options.pop("warmup_start", 0.0)
    if not isinstance(steps, int) or steps < 1:
        _fail(f"--steps must be a positive integer, got {steps!r}")
    try:
        schedule = schedules.SCHEDULES[args.name](**options)
        if warmup:
            schedule = schedules.linear_warmup(schedule, warmup, warmup_start)
        lrs = [schedule(t) for t in range(steps)]
    except (TypeError, ValueError) as exc:
        _fail(f"{args.name}: {exc}")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(MISSING_MATPLOTLIB, file=sys.stderr)
        raise SystemExit(2) from None

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(steps), lrs)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    title = f"{args.name}({shown})"
    if warmup:
        title = f"linear_warmup({title}, warmup_steps={warmup}, start_value={warmup_start})"
    ax.set_title(title, fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(output))
    plt.close(fig)
    print(f"wrote {output}")
    return 0
