"""An MLP on sklearn's digits with uniopt.AdamW on NumPy, gradients written by hand.

    python examples/mlp_numpy.py [--steps N | --quick] [--json curve.json]

The same run as mlp_torch.py (autograd) and mlp_jax.py (jax.grad): same data, initial
weights and batch order (examples/common.py), float64, so the three loss curves agree to
about 1e-12.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import uniopt  # noqa: E402

WEIGHT_DECAY = common.WEIGHT_DECAY


def forward(params, x):
    hidden = np.tanh(x @ params["w1"] + params["b1"])
    return hidden, hidden @ params["w2"] + params["b2"]


def cross_entropy(logits, y):
    """Mean softmax cross-entropy, and the softmax probabilities."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y].mean(), np.exp(log_probs)


def loss_and_grads(params, x, y):
    """Backpropagation by hand: the loss and d loss / d parameter for each parameter."""
    hidden, logits = forward(params, x)
    loss, probs = cross_entropy(logits, y)
    d_logits = probs.copy()
    d_logits[np.arange(len(y)), y] -= 1.0
    d_logits /= len(y)
    d_hidden = (d_logits @ params["w2"].T) * (1.0 - hidden**2)
    grads = {
        "w1": x.T @ d_hidden,
        "b1": d_hidden.sum(axis=0),
        "w2": hidden.T @ d_logits,
        "b2": d_logits.sum(axis=0),
    }
    return loss, grads


def main() -> None:
    args = common.parse_args("numpy")
    x_train, y_train, x_test, y_test = common.load_data()
    params = common.init_params()
    schedule = common.schedule(args.lr, args.steps)
    report = common.Report("numpy", args)

    opt = uniopt.AdamW(params, lr=schedule, weight_decay=WEIGHT_DECAY)
    batches = common.batches(len(x_train), args.steps, args.batch_size)
    for step, idx in enumerate(batches):
        loss, grads = loss_and_grads(params, x_train[idx], y_train[idx])
        report.loss(step, loss)
        opt.step(grads)  # updates the arrays of `params` in place

    final_loss = cross_entropy(forward(params, x_train)[1], y_train)[0]
    accuracy = int((forward(params, x_test)[1].argmax(axis=1) == y_test).sum()) / len(y_test)
    report.finish(final_loss, accuracy)


if __name__ == "__main__":
    main()
