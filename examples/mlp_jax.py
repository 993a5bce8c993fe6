"""An MLP on sklearn's digits with uniopt's functional AdamW under jax.jit, gradients
from jax.grad.

    python examples/mlp_jax.py [--steps N | --quick] [--json curve.json]

The same run as mlp_numpy.py (hand-written gradients) and mlp_torch.py (autograd): same
data, initial weights and batch order (examples/common.py), float64, so the three loss
curves agree to about 1e-12.
"""

from __future__ import annotations

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)  # float64, like the NumPy and torch runs

import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import uniopt  # noqa: E402

WEIGHT_DECAY = common.WEIGHT_DECAY


def logits_fn(params, x):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def loss_fn(params, x, y):
    logits = logits_fn(params, x)
    log_probs = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def main() -> None:
    args = common.parse_args("jax")
    x_train, y_train, x_test, y_test = (jnp.asarray(a) for a in common.load_data())
    params = {name: jnp.asarray(value) for name, value in common.init_params().items()}
    schedule = common.schedule(args.lr, args.steps)
    report = common.Report("jax", args)

    tx = uniopt.adamw(lr=schedule, weight_decay=WEIGHT_DECAY)  # the functional face
    state = tx.init(params)

    @jax.jit
    def train_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return uniopt.apply_updates(params, updates), state, loss

    batches = common.batches(len(x_train), args.steps, args.batch_size)
    for step, idx in enumerate(batches):
        params, state, loss = train_step(params, state, x_train[idx], y_train[idx])
        report.loss(step, float(loss))

    final_loss = float(loss_fn(params, x_train, y_train))
    accuracy = int(jnp.sum(jnp.argmax(logits_fn(params, x_test), axis=1) == y_test)) / len(y_test)
    report.finish(final_loss, accuracy)


if __name__ == "__main__":
    main()
