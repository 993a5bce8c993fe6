"""AdamW step time under FSDP2 on 2 gloo processes (CPU, loopback): uniopt against
torch.optim.AdamW (foreach) on the same ``fully_shard``-ed model, as a ratio.

    python benchmarks/fsdp_step.py [--width 1024] [--layers 8] [--repeat 20]

Each process holds half of every parameter (float32 DTensor shards) and its gradient
from one backward pass; only ``opt.step()`` is timed, both optimizers interleaved round
by round so machine noise hits them alike. Printed: the median ms per step over the
processes' slowest (rank-max) times, and uniopt / torch.optim. Timings never gate
tests.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time


def worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import uniopt

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)

    def model():
        torch.manual_seed(0)
        layers = [torch.nn.Linear(args.width, args.width) for _ in range(args.layers)]
        m = torch.nn.Sequential(*layers)
        for layer in m:
            fully_shard(layer, mesh=mesh)
        fully_shard(m, mesh=mesh)
        m(torch.randn(4, args.width)).square().mean().backward()
        return m

    models = {"uniopt": model(), "torch.optim": model()}
    opts = {
        "uniopt": uniopt.AdamW(models["uniopt"].parameters(), **hp),
        "torch.optim": torch.optim.AdamW(models["torch.optim"].parameters(), foreach=True, **hp),
    }
    times = {k: [] for k in opts}
    for round_ in range(args.repeat + 3):
        for name, opt in opts.items():
            dist.barrier()
            start = time.perf_counter()
            opt.step()
            elapsed = torch.tensor([time.perf_counter() - start])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            if round_ >= 3:  # warm-up: state allocation, first-call dispatch
                times[name].append(float(elapsed) * 1e3)
    if rank == 0:
        n = sum(p.numel() for p in models["uniopt"].parameters())
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"FSDP2 AdamW step, {world} gloo processes, {args.layers} x Linear({args.width}) "
            f"float32 ({n / 1e6:.1f}M params, half per process), median of {args.repeat}:"
        )
        for k, v in med.items():
            print(f"  {k:12s} {v:8.2f} ms")
        print(f"  ratio uniopt / torch.optim (foreach) = {med['uniopt'] / med['torch.optim']:.2f}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, args), nprocs=2, join=True)


if __name__ == "__main__":
    main()
