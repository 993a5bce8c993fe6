"""An MLP on sklearn's digits with uniopt.AdamW on PyTorch, gradients from autograd.

    python examples/mlp_torch.py [--steps N | --quick] [--json curve.json]

The same run as mlp_numpy.py (hand-written gradients) and mlp_jax.py (jax.grad): same
data, initial weights and batch order (examples/common.py), float64, so the three loss
curves agree to about 1e-12.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import uniopt  # noqa: E402

WEIGHT_DECAY = common.WEIGHT_DECAY


def build_model() -> torch.nn.Module:
    """64 -> 32 -> 10 with tanh, holding common.init_params() (nn.Linear keeps W.T)."""
    init = common.init_params()
    model = torch.nn.Sequential(
        torch.nn.Linear(64, common.HIDDEN), torch.nn.Tanh(), torch.nn.Linear(common.HIDDEN, 10)
    ).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(init["w1"].T))
        model[0].bias.copy_(torch.from_numpy(init["b1"]))
        model[2].weight.copy_(torch.from_numpy(init["w2"].T))
        model[2].bias.copy_(torch.from_numpy(init["b2"]))
    return model


def main() -> None:
    args = common.parse_args("torch")
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in common.load_data())
    model = build_model()
    schedule = common.schedule(args.lr, args.steps)
    report = common.Report("torch", args)

    opt = uniopt.AdamW(model.named_parameters(), lr=schedule, weight_decay=WEIGHT_DECAY)
    batches = common.batches(len(x_train), args.steps, args.batch_size)
    for step, idx in enumerate(batches):
        idx = torch.from_numpy(idx)
        loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        report.loss(step, loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()  # reads .grad, updates the same nn.Parameters in place

    with torch.no_grad():
        final_loss = torch.nn.functional.cross_entropy(model(x_train), y_train).item()
        accuracy = int((model(x_test).argmax(dim=1) == y_test).sum()) / len(y_test)
    report.finish(final_loss, accuracy)


if __name__ == "__main__":
    main()
