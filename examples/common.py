"""What the three MLP examples share: the data, the initial weights, the order of the
mini-batches, the learning-rate schedule and the report.

The task: scikit-learn's 8x8 handwritten digits (1797 images shipped inside the
package, nothing is downloaded), a 64-32-10 MLP with tanh and softmax cross-entropy,
trained with ``uniopt.AdamW`` and a cosine schedule. Everything is float64 and drawn
here, once, with NumPy, so the NumPy, PyTorch and JAX versions start from the same
weights, see the same batches in the same order, and print the same loss curve.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import numpy as np

from uniopt import schedules

STEPS = 300
QUICK_STEPS = 40
BATCH_SIZE = 64
HIDDEN = 32
LR = 1e-2
WEIGHT_DECAY = 1e-4
TEST_SIZE = 297
SEED = 0


def parse_args(framework: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"Train a small MLP on sklearn's digits with uniopt.AdamW on {framework}."
    )
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps ({STEPS})")
    parser.add_argument(
        "--quick", action="store_true", help=f"a short run for CI ({QUICK_STEPS} steps)"
    )
    parser.add_argument("--lr", type=float, default=LR, help=f"peak learning rate ({LR})")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--every", type=int, default=20, help="print the loss every N steps")
    parser.add_argument("--json", metavar="PATH", help="also write the loss curve as JSON")
    args = parser.parse_args()
    if args.quick:
        args.steps = min(args.steps, QUICK_STEPS)
    if args.steps < 1 or args.batch_size < 1 or args.every < 1:
        parser.error("--steps, --batch-size and --every must be positive")
    return args


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: pixels scaled to [0, 1], float64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("these examples need scikit-learn for its digits data: pip install scikit-learn")
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return x[train], y[train], x[test], y[test]


def init_params() -> dict[str, np.ndarray]:
    """The MLP's initial weights: ``x @ w1 + b1 -> tanh -> @ w2 + b2`` (float64)."""
    rng = np.random.default_rng(SEED + 1)
    return {
        "w1": rng.normal(0.0, 64**-0.5, (64, HIDDEN)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(0.0, HIDDEN**-0.5, (HIDDEN, 10)),
        "b2": np.zeros(10),
    }


def batches(n: int, steps: int, batch_size: int) -> Iterator[np.ndarray]:
    """Indices of each step's mini-batch: a fresh permutation every epoch."""
    rng = np.random.default_rng(SEED + 2)
    per_epoch = max(n // batch_size, 1)
    order = rng.permutation(n)
    for step in range(steps):
        if step and step % per_epoch == 0:
            order = rng.permutation(n)
        start = (step % per_epoch) * batch_size
        yield order[start : start + batch_size]


def schedule(lr: float, steps: int):
    """Cosine decay from ``lr`` to ``lr / 10`` over the run (a pure uniopt schedule)."""
    return schedules.cosine_decay(lr, decay_steps=steps, alpha=0.1)


class Report:
    """Prints the loss curve and the result, and writes them as JSON on request."""

    def __init__(self, framework: str, args: argparse.Namespace):
        self.framework, self.args, self.losses = framework, args, []
        print(
            f"uniopt AdamW on {framework}: MLP 64-{HIDDEN}-10 on sklearn digits, "
            f"{args.steps} steps, batch {args.batch_size}, float64"
        )

    def loss(self, step: int, value: float) -> None:
        self.losses.append(float(value))
        if step % self.args.every == 0:
            print(f"step {step:5d}  loss {value:.17g}")

    def finish(self, final_loss: float, accuracy: float) -> None:
        print(f"final loss {final_loss:.17g}")
        print(f"test accuracy {accuracy:.4f}")
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump(
                    {
                        "framework": self.framework,
                        "steps": self.args.steps,
                        "losses": self.losses,
                        "final_loss": float(final_loss),
                        "accuracy": float(accuracy),
                    },
                    f,
                )
