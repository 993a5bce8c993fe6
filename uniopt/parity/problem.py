"""The fixed, seeded problem every parity run solves.

A separable quadratic with per-step noise, written with array-API calls so every
backend computes its own gradient from its own parameters (errors feed back):

    grad_t(p) = a * (p - c) + n_t
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ((4, 3), (7,), (2, 3, 2), (1,), (33,))
#: names matter to some frameworks (MindSpore skips decay on "beta"/"gamma" names)
NAMES = ("fc.weight", "fc.bias", "conv.weight", "bn.gamma", "bn.beta")


@dataclass(frozen=True)
class Problem:
    init: tuple[np.ndarray, ...]
    curvature: tuple[np.ndarray, ...]
    center: tuple[np.ndarray, ...]
    noise: tuple[tuple[np.ndarray, ...], ...]

    @property
    def steps(self) -> int:
        return len(self.noise)


def make_problem(steps: int, seed: int = 0, shapes=SHAPES) -> Problem:
    rng = np.random.default_rng(seed)

    def draw(scale, offset=0.0):
        return tuple(offset + scale * rng.standard_normal(s) for s in shapes)

    return Problem(
        init=draw(1.0),
        curvature=tuple(np.abs(x) for x in draw(1.0, 0.5)),
        center=draw(0.5),
        noise=tuple(draw(0.1) for _ in range(steps)),
    )


def gradient(p, a, c, n):
    """The problem's gradient; works on any array library's arrays."""
    return a * (p - c) + n
