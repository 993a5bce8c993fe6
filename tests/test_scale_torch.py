"""Scaling out on torch: FSDP2 (``fully_shard``), plain DTensor parameters and DDP over
2 and 4 gloo processes on loopback, float64, against single-process uniopt runs and
the NumPy oracles (<= 1e-12); sharded checkpoints 4 processes -> 2 -> 1.

Two spawns in all (4 processes, then 2 that resume the 4-process checkpoints), each
running every check of tests/scale_torch_worker.py and writing a JSON report per
process; the tests below read the reports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import scale_torch_worker as worker  # noqa: E402

import uniopt  # noqa: E402
import uniopt.distributed  # noqa: E402
from uniopt.parity.problem import NAMES  # noqa: E402
from uniopt.parity.runner import deviation  # noqa: E402

HERE = Path(__file__).parent
TOLERANCE = 1e-12
WORLDS = (4, 2)  # 4 first: the 2-process run resumes its checkpoints


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("scale_torch")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    env.pop("SCALE_ONLY", None)
    for world, source in ((4, None), (2, 4)):
        args = [sys.executable, str(HERE / "scale_torch_worker.py"), str(world), str(directory)]
        args += [str(free_port())] + ([str(source)] if source else [])
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=420)
        assert done.returncode == 0, f"{world} processes failed:\n{done.stderr[-4000:]}"
    return directory


def report(directory: Path, world: int) -> list[dict]:
    return [
        json.loads((directory / f"report-{world}-{rank}.json").read_text()) for rank in range(world)
    ]


def check(runs: Path, world: int, name: str) -> dict:
    """The check's result on rank 0, after asserting it succeeded on every rank."""
    items = [r.get(name) for r in report(runs, world)]
    for rank, item in enumerate(items):
        assert item is not None, f"rank {rank} did not run {name}"
        assert "error" not in item, f"rank {rank}: {item['error']}\n{item.get('trace', '')}"
    return items[0]


def ids(world: int) -> list[str]:
    return [c.id for c in worker.cases_for(world)]


@pytest.mark.parametrize(
    "world,case_id", [(w, c) for w in sorted(WORLDS) for c in ids(w)], ids=lambda x: str(x)
)
def test_dtensor_parameters_follow_the_single_process_run(runs, world, case_id):
    """Every registry case on DTensor parameters (uneven column and row shards, empty
    shards, replicated): full parameters equal the single-process run and the float64
    oracle, and the state is local-shard sized (checked in the worker)."""
    item = check(runs, world, f"dtensor/{case_id}")
    assert item["rel"] <= TOLERANCE, item
    if "rel_oracle" in item:
        assert item["rel_oracle"] <= TOLERANCE, item


@pytest.mark.parametrize(
    "world,case_id", [(w, c) for w in sorted(WORLDS) for c in ids(w)], ids=lambda x: str(x)
)
def test_fsdp2_follows_the_single_process_run(runs, world, case_id):
    """FSDP2 ``fully_shard`` model (uneven and empty dim-0 shards), gradients from
    backward: the trajectory equals the unsharded model's with the same optimizer."""
    assert check(runs, world, f"fsdp/{case_id}")["rel"] <= TOLERANCE


@pytest.mark.parametrize("world", WORLDS)
def test_dtensor_and_plain_tensors_in_one_group(runs, world):
    """Mixed in one group, they get separate segments; LAMB norms and the global-norm
    clip stay exact (plain tensors are whole on every process)."""
    assert check(runs, world, "mixed-group")["rel"] <= TOLERANCE


@pytest.mark.parametrize("world", WORLDS)
def test_parameters_on_different_meshes_are_grouped_separately(runs, world):
    """One group over several meshes (a 2-D replicate x shard mesh with 4 processes):
    one segment per (mesh, placements), each reducing on its own mesh; the step only
    all-reduces per-tensor sums, it never gathers or scatters a tensor."""
    item = check(runs, world, "different-meshes")
    assert item["rel"] <= TOLERANCE
    assert item["segments"] == item["expected_segments"]
    assert set(item["comms"]) <= {"c10d.allreduce_"}, item["comms"]


@pytest.mark.parametrize("world", WORLDS)
def test_bad_sharded_input_is_refused_clearly(runs, world):
    """Partial parameters, a gradient laid out unlike its parameter, a plain gradient
    for a DTensor, lazy_mode over column shards: each a clear error naming it."""
    check(runs, world, "refusals")


@pytest.mark.parametrize("world", WORLDS)
def test_group_clip_grad_spans_processes(runs, world):
    """``clip_grad()`` with ``clip_grad_max_norm`` (norm types 2, 3, inf) on DTensor
    gradients equals ``torch.nn.utils.clip_grad_norm_`` on the whole tensors."""
    assert check(runs, world, "group-clip")["rel"] <= TOLERANCE


def test_ddp_matches_torch_optim(runs):
    assert check(runs, 2, "ddp")["rel"] <= TOLERANCE


def test_checkpoint_from_4_processes_resumes_on_2(runs):
    """Saved (gathered) by 4 processes, loaded by 2 with parameters laid out
    differently: the next step equals the 4-process run's."""
    each = check(runs, 2, "checkpoint")["each"]
    assert set(each) == {c.id for c in worker.CHECKPOINT_CASES}
    assert max(each.values()) <= TOLERANCE, each


@pytest.mark.parametrize("case", worker.CHECKPOINT_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("how", ["distributed.load", "load_state_dict"])
def test_checkpoint_from_2_processes_resumes_in_one(runs, case, how):
    """The 2-process checkpoint is an ordinary state file: one process loads it (with
    uniopt.distributed.load, or plain load_state_dict) and takes the same next step."""
    check(runs, 2, "checkpoint")
    saved = np.load(runs / f"{case.id}-2-params.npz")
    params = [torch.nn.Parameter(torch.from_numpy(saved[n].copy())) for n in NAMES]
    opt = case.build(list(zip(NAMES, params)))
    path = runs / f"{case.id}-2.safetensors"
    if how == "distributed.load":
        uniopt.distributed.load(path, into=opt)
    else:
        opt.load_state_dict(uniopt.load(path))
    worker.set_grads(params, int(saved["step"]) + 1)
    opt.step()
    expected = np.load(runs / f"{case.id}-2-next.npz")
    got = [p.detach().numpy() for p in params]
    assert deviation(got, [expected[n] for n in NAMES])[1] <= TOLERANCE


def test_single_process_checkpoint_loads_sharded_state_shape_errors():
    """A state whose arrays do not have the parameters' global shapes is refused before
    anything changes, naming the parameter and both shapes (no process group needed:
    plain tensors are whole)."""
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = uniopt.AdamW([("w", p)], lr=0.1)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    sd = opt.portable_state_dict()
    sd["state"]["w"]["exp_avg"] = np.zeros(2)
    with pytest.raises(ValueError, match="'w'"):
        uniopt.distributed.load_full_state_dict(opt, sd)


def test_docs_fsdp2_recipe_runs_under_torchrun(tmp_path):
    """docs/scaling.md's FSDP2 script, as written, on 2 processes; its checkpoint then
    loads into the unsharded model's optimizer in this process."""
    from test_docs import python_blocks

    text = (HERE.parent / "docs" / "scaling.md").read_text()
    (block,) = [b for b in python_blocks(text) if "torchrun script" in (b["skip"] or "")]
    script = tmp_path / "train.py"
    script.write_text(block["code"])
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    args += ["--master-port", str(free_port()), str(script)]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "loss" in done.stdout
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 33), torch.nn.Tanh(), torch.nn.Linear(33, 4))
    opt = uniopt.LAMB(model.named_parameters(), lr=1e-2)
    opt.load_state_dict(uniopt.load(tmp_path / "opt.safetensors"))
    assert opt.portable_state_dict()["state"]["0.weight"]["exp_avg"].shape == (33, 16)
