"""Optimizer step time and memory: uniopt in every mode against its peers, in one run.

    python benchmarks/step_time.py                      # AdamW on set small (a quick look)
    python benchmarks/step_time.py --sets a b c         # the performance table's sets
    python benchmarks/step_time.py --sets a --algorithms all

Sets (float32): a = ResNet-50's 161 tensors (25.6M parameters), b = 2000 tensors of
512, c = one tensor of 33.5M, small = 200 tensors of 512. Algorithms are the registry's
(``uniopt/parity/cases.py``): one case per algorithm, its torch.optim and optax twins as
the peers. For each set and algorithm the modes are interleaved round by round (so
machine noise hits them alike) after a warm-up step (first-step compile times are
printed separately). The table gives the median ms per step, the spread (p90 - p10),
the ratio to the backend's reference (NumPy: the hand-written AdamW; torch:
torch.optim fused, else foreach; JAX: optax under jit; where an algorithm has no peer
on a backend, that backend's AdamW reference of the same set, marked ``*``), and the
peak memory a step allocates beyond what is resident before it, as a percentage of the
parameters' bytes (Linux: the resident-set high-water mark, reset before each
measured step). Timings never gate tests.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uniopt  # noqa: E402
from uniopt.parity.cases import CASES, TORCH_CLASSES  # noqa: E402

#: the case that stands for each algorithm (its options and its framework twins)
CASE_OF = {
    "adamw": "adamw-default",
    "sgd": "sgd-momentum",
    "adam": "adam-default",
    "adagrad": "adagrad-default",
    "rmsprop": "rmsprop-centered-momentum",
    "lamb": "lamb-default",
    "lars_momentum": "lars_momentum-optax",
    "lookahead": "lookahead-adamw-first-step",
}


def resnet50_shapes() -> list[tuple[int, ...]]:
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    stages = [(64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3)]
    cin = 64
    for width, out, blocks in stages:
        for b in range(blocks):
            shapes += [(width, cin, 1, 1), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            shapes += [(out, width, 1, 1), (out,), (out,)]
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
Step = Callable[[], None]


def case(algorithm: str):
    return next(c for c in CASES if c.id == CASE_OF[algorithm])


# ---- NumPy ---------------------------------------------------------------------------


def numpy_modes(shapes, algorithm: str) -> dict[str, Step]:
    rng = np.random.default_rng(0)
    sizes = [int(np.prod(s)) for s in shapes]
    cuts = np.cumsum(sizes)[:-1]
    flat_p = rng.standard_normal(sum(sizes)).astype(np.float32)
    flat_g = rng.standard_normal(sum(sizes)).astype(np.float32)
    separate_p = [p.reshape(s).copy() for p, s in zip(np.split(flat_p, cuts), shapes)]
    separate_g = [g.reshape(s).copy() for g, s in zip(np.split(flat_g, cuts), shapes)]
    carved_p = [p.reshape(s) for p, s in zip(np.split(flat_p.copy(), cuts), shapes)]
    carved_g = [g.reshape(s) for g, s in zip(np.split(flat_g, cuts), shapes)]
    separate, carved = case(algorithm).build(separate_p), case(algorithm).build(carved_p)
    modes = {}
    if algorithm == "adamw":
        modes["hand-written flat chunked"] = hand_written_adamw(flat_p.copy(), flat_g)
    modes["uniopt"] = lambda: separate.step(separate_g)
    modes["uniopt, arrays of one buffer"] = lambda: carved.step(carved_g)
    return modes


def hand_written_adamw(flat_p: np.ndarray, flat_g: np.ndarray) -> Step:
    """AdamW in place over one flat buffer, in cache-sized chunks (the NumPy floor)."""
    options = case("adamw").options
    lr, (b1, b2), eps, wd = options["lr"], options["betas"], options["eps"], options["weight_decay"]
    chunk = 1 << 16
    m, v, tmp = np.zeros_like(flat_p), np.zeros_like(flat_p), np.empty(chunk, np.float32)
    state = {"t": 0}

    def step() -> None:
        state["t"] += 1
        t = state["t"]
        step_size, bc2 = lr / (1 - b1**t), (1 - b2**t) ** 0.5
        for a in range(0, flat_p.size, chunk):
            sl, w = slice(a, a + chunk), tmp[: min(chunk, flat_p.size - a)]
            p, g, m_, v_ = flat_p[sl], flat_g[sl], m[sl], v[sl]
            p *= 1 - lr * wd
            m_ *= b1
            np.multiply(g, 1 - b1, out=w)
            m_ += w
            np.multiply(g, g, out=w)
            w *= 1 - b2
            v_ *= b2
            v_ += w
            np.sqrt(v_, out=w)
            w /= bc2
            w += eps
            np.divide(m_, w, out=w)
            w *= step_size
            p -= w

    return step


# ---- torch ---------------------------------------------------------------------------


def torch_modes(shapes, algorithm: str, compile: bool) -> dict[str, Step]:
    import torch

    torch.manual_seed(0)
    c = case(algorithm)

    def parameters():
        ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape)
        return ps

    modes = {}
    if c.torch is not None:
        cls = getattr(torch.optim, TORCH_CLASSES[algorithm])
        variants = (("fused", {"fused": True}), ("foreach", {"foreach": True}))
        for label, kwargs in variants:
            try:
                opt = cls(parameters(), **c.torch, **kwargs)
            except (RuntimeError, TypeError, ValueError):
                continue  # no fused kernel for this algorithm here
            modes[f"torch.optim {label}"] = opt.step
    if compile and algorithm == "adamw":
        modes["memory floor: compiled p, m, v += g"] = memory_floor(shapes)
    modes["uniopt"] = c.build(parameters()).step
    if compile and algorithm != "lookahead":
        opt = type(c.build([torch.zeros(1)]))(parameters(), compile=True, **c.options)
        modes["uniopt compile=True"] = timed_first_step(opt.step, "torch uniopt compile=True")
    return modes


def memory_floor(shapes) -> Step:
    """The least an in-place AdamW step can cost here: one compiled kernel over flat
    buffers reading p, g, m, v and writing p, m, v (AdamW's 28 bytes per parameter)
    with next to no arithmetic. A ratio below 1 to it is not possible."""
    import torch

    n = sum(int(np.prod(s)) for s in shapes)
    p, g, m, v = (torch.randn(n) for _ in range(4))

    @torch.compile
    def kernel(p, g, m, v):
        m.add_(g)
        v.add_(g)
        p.add_(g)

    return timed_first_step(lambda: kernel(p, g, m, v), "torch memory floor")


def timed_first_step(step: Step, label: str) -> Step:
    start = time.perf_counter()
    step()
    print(f"  {label}: first step (compile) {time.perf_counter() - start:.2f} s", flush=True)
    return step


# ---- JAX -----------------------------------------------------------------------------


def jax_modes(shapes, algorithm: str) -> dict[str, Step]:
    import jax
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    c = case(algorithm)
    tree = [jnp.full(s, 0.1, jnp.float32) for s in shapes]
    forms = {  # the parameters and gradients as each mode takes them
        "tree": lambda x: x,
        "flat": uniopt.flatten,
        "raveled": lambda x: ravel_pytree(x)[0],
    }
    runs = {}  # label -> (transform, form)
    if c.optax is not None:
        factory, kwargs = c.optax
        runs["optax (jit)"] = (getattr(optax, factory)(**kwargs), "tree")
        if algorithm not in ("lamb", "lars_momentum"):  # elementwise: raveling is exact
            runs["optax on ravel_pytree (jit)"] = (getattr(optax, factory)(**kwargs), "raveled")
    runs["uniopt functional (jit)"] = (c.build_transform(), "tree")
    runs["uniopt functional on uniopt.flatten (jit)"] = (c.build_transform(), "flat")
    modes = {}
    for label, (tx, form) in runs.items():
        grads = forms[form](tree)
        holder = {"p": forms[form]([jnp.ones(s, jnp.float32) for s in shapes])}
        holder["s"] = tx.init(holder["p"])

        def update(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        fn = jax.jit(update, donate_argnums=(0, 1))  # gradients: an argument, as in training

        def step(fn=fn, holder=holder, grads=grads) -> None:
            holder["p"], holder["s"] = fn(holder["p"], holder["s"], grads)
            jax.block_until_ready(holder["p"])

        modes[label] = timed_first_step(step, f"jax {label}")
    return modes


# ---- measuring -----------------------------------------------------------------------


def measure(modes: dict[str, Step], repeat: int) -> dict[str, list[float]]:
    for fn in modes.values():
        fn()  # warm-up
    times = {name: [] for name in modes}
    for _ in range(repeat):
        for name, fn in modes.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def peak_extra_bytes(step: Step) -> int | None:
    """The resident-set peak during one step above the resident set before it (Linux)."""
    try:
        gc.collect()
        _trim()  # free heap pages go back, so reusing them shows as growth
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark
        before = _status("VmRSS")
        step()
        return max(0, _status("VmHWM") - before)
    except OSError:
        return None


def _trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=["small"])
    parser.add_argument(
        "--algorithms", nargs="+", default=["adamw"], help=f"'all' or from {list(CASE_OF)}"
    )
    parser.add_argument("--backends", nargs="+", default=["numpy", "torch", "jax"])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--no-compile", action="store_true", help="skip torch compile=True")
    args = parser.parse_args()
    algorithms = list(CASE_OF) if args.algorithms == ["all"] else args.algorithms
    if "adamw" not in algorithms:  # the reference of algorithms without a peer
        algorithms.insert(0, "adamw")
    builders = {
        "numpy": numpy_modes,
        "torch": lambda s, a: torch_modes(s, a, not args.no_compile),
        "jax": jax_modes,
    }
    print(
        f"{'set':<5} {'algorithm':<13} {'mode':<48} {'median ms':>9} {'spread':>7} "
        f"{'ratio':>7} {'memory':>7}"
    )
    for set_name in args.sets:
        shapes = SETS[set_name]()
        n = sum(int(np.prod(s)) for s in shapes)
        print(f"# set {set_name}: {len(shapes)} tensors, {n / 1e6:.1f}M float32 parameters")
        reference: dict[str, float] = {}
        for algorithm in algorithms:
            modes: dict[str, Step] = {}
            for backend in args.backends:
                try:
                    for name, fn in builders[backend](shapes, algorithm).items():
                        modes[f"{backend}: {name}"] = fn
                except ImportError as error:
                    print(f"  {backend} skipped: {error}")
            times = measure(modes, args.repeat)
            memory = {name: peak_extra_bytes(fn) for name, fn in modes.items()}
            report(set_name, algorithm, times, memory, n * 4, reference)
            modes.clear()
            gc.collect()


def report(set_name, algorithm, times, memory, param_bytes, reference) -> None:
    medians = {name: statistics.median(t) for name, t in times.items()}
    baselines = {}
    for name in medians:  # the first mode of a backend that is not uniopt's
        backend = name.split(":")[0]
        if "uniopt" not in name:
            baselines.setdefault(backend, medians[name])
    if algorithm == "adamw":
        reference.update(baselines)
    for name, t in times.items():
        backend = name.split(":")[0]
        base, mark = baselines.get(backend), ""
        if base is None and backend in reference:
            base, mark = reference[backend], "*"
        ratio = f"{medians[name] / base:.2f}{mark}" if base else "-"
        q = statistics.quantiles(t, n=10) if len(t) > 1 else [t[0], t[0]]
        extra = memory.get(name)
        mem = f"{100 * extra / param_bytes:.0f}%" if extra is not None else "-"
        print(
            f"{set_name:<5} {algorithm:<13} {name:<48} {medians[name]:>9.2f} "
            f"{q[-1] - q[0]:>7.2f} {ratio:>7} {mem:>7}",
            flush=True,
        )


if __name__ == "__main__":
    main()
