"""AdamW step time: uniopt against its peers, as ratios measured in one run.

    python benchmarks/adamw_step.py [--set a|b|c|small] [--repeat 15]

Sets (float32): a = ResNet-50 shapes (161 tensors, 25.6M params), b = 2000 x 512,
c = one 33.5M tensor, small = 200 x 512 (a quick look). Modes are interleaved round
by round so machine noise hits them alike; the table gives the median ms per step,
the spread (p90 - p10) and the ratio to the first peer of the same backend. Timings
never gate tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import uniopt

HP = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)


def resnet50_shapes() -> list[tuple[int, ...]]:
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    stages = [(64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3)]
    cin = 64
    for width, out, blocks in stages:
        for b in range(blocks):
            shapes += [
                (width, cin, 1, 1),
                (width,),
                (width,),
                (width, width, 3, 3),
                (width,),
                (width,),
                (out, width, 1, 1),
                (out,),
                (out,),
            ]
            if b == 0:
                shapes += [(out, cin, 1, 1), (out,), (out,)]
            cin = out
    return shapes + [(1000, 2048), (1000,)]


SETS = {
    "a": resnet50_shapes,
    "b": lambda: [(512,)] * 2000,
    "c": lambda: [(1 << 25,)],
    "small": lambda: [(512,)] * 200,
}


def numpy_modes(shapes):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    opt = uniopt.AdamW([p.copy() for p in params], **HP)

    # hand-written in-place numpy AdamW over one flat, chunked buffer
    flat_p = np.concatenate([p.ravel() for p in params])
    flat_g = np.concatenate([g.ravel() for g in grads])
    m, v, tmp = np.zeros_like(flat_p), np.zeros_like(flat_p), np.empty(1 << 16, np.float32)
    state = {"t": 0}

    def hand():
        state["t"] += 1
        t, (b1, b2) = state["t"], HP["betas"]
        step, bc2 = HP["lr"] / (1 - b1**t), (1 - b2**t) ** 0.5
        for a in range(0, flat_p.size, 1 << 16):
            sl, w = slice(a, a + (1 << 16)), tmp[: min(1 << 16, flat_p.size - a)]
            p, g = flat_p[sl], flat_g[sl]
            p *= 1 - HP["lr"] * HP["weight_decay"]
            m[sl] *= b1
            m[sl] += (1 - b1) * g
            np.multiply(g, g, out=w)
            v[sl] *= b2
            w *= 1 - b2
            v[sl] += w
            np.sqrt(v[sl], out=w)
            w /= bc2
            w += HP["eps"]
            np.divide(m[sl], w, out=w)
            w *= step
            p -= w

    return {"numpy: hand-written flat chunked": hand, "numpy: uniopt": lambda: opt.step(grads)}


def torch_modes(shapes):
    import torch

    torch.manual_seed(0)
    modes = {}
    for label, kwargs in (("fused", {"fused": True}), ("foreach", {"foreach": True})):
        ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape)
        opt = torch.optim.AdamW(ps, **HP, **kwargs)
        modes[f"torch: torch.optim {label}"] = opt.step
    for label, kwargs in (("uniopt", {}), ("uniopt compile=True", {"compile": True})):
        ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape)
        ours = uniopt.AdamW(ps, **HP, **kwargs)
        if kwargs:
            start = time.perf_counter()
            ours.step()
            print(f"  torch {label}: first step (compile) {time.perf_counter() - start:.2f} s")
        modes[f"torch: {label}"] = ours.step
    return modes


def jax_modes(shapes):
    import jax
    import jax.numpy as jnp
    import optax

    grads = [jnp.full(s, 0.1, jnp.float32) for s in shapes]
    modes = {}
    for label, tx in (
        ("optax", optax.adamw(HP["lr"], 0.9, 0.999, 1e-8, HP["weight_decay"])),
        ("uniopt functional", uniopt.adamw(**HP)),
    ):
        params = [jnp.ones(s, jnp.float32) for s in shapes]  # donated: one set per mode
        holder = {"p": params, "s": tx.init(params)}

        def step(p, s, tx=tx):
            u, s = tx.update(grads, s, p)
            return optax.apply_updates(p, u), s

        fn = jax.jit(step, donate_argnums=(0, 1))
        compile_start = time.perf_counter()
        holder["p"], holder["s"] = fn(holder["p"], holder["s"])
        jax.block_until_ready(holder["p"])
        print(f"  jax {label}: first step (compile) {time.perf_counter() - compile_start:.2f} s")

        def run(fn=fn, holder=holder):
            holder["p"], holder["s"] = fn(holder["p"], holder["s"])
            jax.block_until_ready(holder["p"])

        modes[f"jax: {label} (jit)"] = run
    return modes


def measure(modes, repeat):
    for fn in modes.values():
        fn()  # warm-up
    times = {name: [] for name in modes}
    for _ in range(repeat):
        for name, fn in modes.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", choices=list(SETS), default="small")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    shapes = SETS[args.set]()
    n = sum(int(np.prod(s)) for s in shapes)
    print(f"AdamW float32, set {args.set}: {len(shapes)} tensors, {n / 1e6:.1f}M params")
    modes = numpy_modes(shapes)
    for build in (torch_modes, jax_modes):
        try:
            modes.update(build(shapes))
        except ImportError as error:
            print(f"  skipped: {error}")
    times = measure(modes, args.repeat)
    print(f"{'mode':<36} {'median ms':>10} {'spread':>8} {'ratio':>7}")
    baseline = {}
    for name, t in times.items():
        backend = name.split(":")[0]
        median = statistics.median(t)
        baseline.setdefault(backend, median)
        q = statistics.quantiles(t, n=10)
        print(f"{name:<36} {median:>10.2f} {q[-1] - q[0]:>8.2f} {median / baseline[backend]:>7.2f}")


if __name__ == "__main__":
    main()
