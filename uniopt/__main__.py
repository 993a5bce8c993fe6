"""``python -m uniopt``: ``parity`` (every optimizer against its references),
``plot-schedule`` (draw a learning-rate schedule), ``inspect`` (what a state file holds)
and ``convert`` (torch.optim state_dict <-> uniopt state file)."""

from __future__ import annotations

import argparse
import sys

from uniopt import cli_state, plot
from uniopt.parity import report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uniopt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    report.add_parser(commands)
    plot.register(commands)
    cli_state.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
