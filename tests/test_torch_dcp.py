"""torch.distributed.checkpoint (DCP) with uniopt optimizers (issue 16).

``get_optimizer_state_dict`` / ``set_optimizer_state_dict`` (parameters keyed by fully
qualified names) and ``dcp.save`` / ``dcp.load`` resume a uniopt optimizer exactly:
train N steps, save, train M more; versus a fresh model and optimizer that load the
checkpoint and train M: bitwise equal parameters and state, uniopt's own entries
(step counts, loss scale, LookAhead, custom state) included, although DCP keeps only
"state" and "param_groups" and steps a fresh optimizer once (zero gradients, lr 0)
to build the state it loads into. The oracle is the uninterrupted run; the
torch.optim twin is the oracle where state moves between uniopt and torch.optim.

One spawn of 2 gloo processes (this file run as a script) checks FSDP2: the state
(``opt.state``, ``state_dict()``) is DTensors laid out like the parameters, DCP saves
and reloads it exactly, reshards it into one process, and torch.optim.AdamW under the
same FSDP2 setup agrees with uniopt.AdamW and exchanges checkpoints with it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import torch.distributed.checkpoint as dcp  # noqa: E402
from torch.distributed.checkpoint.api import CheckpointException  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

import uniopt  # noqa: E402
import uniopt.distributed  # noqa: E402

N, M = 3, 3  #: steps before the checkpoint, and after it
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
INPUT = torch.from_numpy(np.random.default_rng(7).standard_normal((9, 6)).astype(np.float32))


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(  # 5 and 3 rows: uneven shards over 2 processes
        torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    )


def train(model, opt, steps: int) -> None:
    for _ in range(steps):
        scale = getattr(getattr(opt, "loss_scale", None), "scale", 1.0)
        loss = (model(INPUT) ** 2).mean() * scale
        loss.backward()
        opt.step()
        opt.zero_grad()


def host(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.full_tensor() if hasattr(x, "full_tensor") else x
        return x.detach().numpy().copy()
    return np.asarray(x)


def differences(a, b, where: str = "") -> list[str]:
    """Where two (portable) state dicts differ: arrays bitwise (values and dtype),
    schedules by their rates, everything else by ``==``."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(a, key=str)} != {sorted(b, key=str)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        same = (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
        return [] if same else [f"{where}: arrays differ"]
    if callable(a) and callable(b):  # learning-rate schedules: the same rate every step
        a, b = [a(t) for t in range(N + M + 1)], [b(t) for t in range(N + M + 1)]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def resume(make_opt, tmp_path: Path, options: StateDictOptions | None = None):
    """``(uninterrupted, resumed)``: (parameters, portable state) after N + M steps, the
    second through a DCP checkpoint taken after N steps into a fresh model (other
    initial values) and optimizer."""
    model = make_model()
    opt = make_opt(model)
    train(model, opt, N)
    dcp.save(
        {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, opt, options=options),
        },
        checkpoint_id=tmp_path / "ckpt",
    )
    train(model, opt, M)
    fresh = make_model(seed=1)
    again = make_opt(fresh)
    before = [p.detach().clone() for p in fresh.parameters()]
    sd = {
        "model": get_model_state_dict(fresh),
        "optim": get_optimizer_state_dict(fresh, again, options=options),  # steps it once
    }
    for p, q in zip(before, fresh.parameters()):  # with zero gradients and lr 0
        assert torch.equal(p, q)
    dcp.load(sd, checkpoint_id=tmp_path / "ckpt")
    set_model_state_dict(fresh, sd["model"])
    set_optimizer_state_dict(fresh, again, sd["optim"], options=options)
    train(fresh, again, M)
    return (
        ([host(p) for p in model.parameters()], opt.portable_state_dict()),
        ([host(p) for p in fresh.parameters()], again.portable_state_dict()),
    )


def assert_same_run(runs) -> None:
    (params_a, state_a), (params_b, state_b) = runs
    for a, b in zip(params_a, params_b):
        assert np.array_equal(a, b), "parameters differ"
    assert differences(state_a, state_b) == []


# ---- one process ---------------------------------------------------------------------


class Momentum(uniopt.Optimizer):
    """A custom optimizer (MindSpore style) whose state is a ``clone_state`` list."""

    def __init__(self, params, learning_rate, momentum=0.9):
        super().__init__(params, learning_rate=learning_rate)
        self.moments = self.clone_state("moments", init="zeros")
        self.momentum = momentum

    def construct(self, gradients):
        lr = self.get_lr()
        for i, (param, grad) in enumerate(zip(self.parameters, gradients)):
            self.moments[i] = self.momentum * self.moments[i] + grad
            self.assign(i, param - lr * self.moments[i])


OPTIMIZERS = {
    "adamw-torch": lambda m: uniopt.AdamW(
        m.parameters(), lr=0.01, weight_decay=0.1, flavor="torch"
    ),
    "sgd-momentum-torch": lambda m: uniopt.SGD(
        m.parameters(), lr=0.05, momentum=0.9, nesterov=True, flavor="torch"
    ),
    # uniopt's own entries: no torch twin, flavor, dynamic loss scale, lr by step
    "lamb-paddle-loss-scale-schedule": lambda m: uniopt.LAMB(
        m.named_parameters(),
        lr=[0.01 * 0.8**i for i in range(N + M)],
        flavor="paddle",
        loss_scale=uniopt.DynamicLossScale(init_scale=8.0, growth_interval=2),
    ),
    "lookahead-adam": lambda m: uniopt.LookAhead(uniopt.Adam(m.parameters(), lr=0.02), k=2),
    "custom-clone-state": lambda m: Momentum(m.named_parameters(), learning_rate=0.05),
    "adam-amsgrad-groups": lambda m: uniopt.Adam(
        [{"params": m[0].parameters(), "lr": 0.02}, {"params": m[2].parameters()}],
        lr=0.01,
        amsgrad=True,
    ),
}


@pytest.mark.parametrize("case", sorted(OPTIMIZERS))
def test_dcp_save_load_resumes_exactly(case, tmp_path):
    """N steps, dcp.save, M steps == fresh model and optimizer, dcp.load, M steps:
    bitwise, the whole portable state included (step count, per-parameter steps, loss
    scale, LookAhead's count and slow weights, custom state)."""
    runs = resume(OPTIMIZERS[case], tmp_path)
    assert_same_run(runs)
    assert runs[1][1].get("step_count", runs[1][1].get("inner", {}).get("step_count")) == N + M


def test_get_optimizer_state_dict_keys_by_name_and_keeps_uniopt_entries():
    """DCP's dict keys the state by fully qualified names and keeps only "state" and
    "param_groups": uniopt's entries are in the param group."""
    model = make_model()
    opt = OPTIMIZERS["lamb-paddle-loss-scale-schedule"](model)
    train(model, opt, N)
    sd = get_optimizer_state_dict(model, opt)
    assert set(sd) == {"state", "param_groups"}  # DCP keeps these two only
    assert sorted(sd["state"]) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    (group,) = sd["param_groups"]
    assert group["params"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    ours = group["uniopt"]
    assert (ours["algorithm"], ours["flavor"], ours["step_count"]) == ("lamb", "paddle", N)
    assert ours["steps"] == [N] * 4 and ours["loss_scale"] == opt.loss_scale.state_dict()


def test_exact_step_counts_beyond_float32():
    """torch keeps per-parameter steps as float32 (exact to 2**24): the exact counts
    travel in the param groups, so a resume at step 2**24 + 1 stays exact."""
    big = 2**24 + 1

    def make(m):
        opt = uniopt.AdamW(m.parameters(), lr=0.01)
        train(m, opt, 1)
        sd = opt.portable_state_dict()
        sd["step_count"] = big
        for entry in sd["state"].values():
            entry["step"] = big
        opt.load_state_dict(sd)
        return opt

    model = make_model()
    opt = make(model)
    sd = get_optimizer_state_dict(model, opt)
    assert float(sd["state"]["0.weight"]["step"]) != big  # float32 rounds it
    fresh = make_model()
    again = uniopt.AdamW(fresh.parameters(), lr=0.01)
    set_optimizer_state_dict(fresh, again, sd)
    loaded = again.portable_state_dict()
    assert loaded["step_count"] == big
    assert {e["step"] for e in loaded["state"].values()} == {big}
    assert differences(loaded, opt.portable_state_dict()) == []


@pytest.mark.parametrize("algorithm", ["AdamW", "SGD"])
def test_state_moves_between_uniopt_and_torch_optim_through_dcp(algorithm):
    """A DCP state dict (keyed by names) of torch.optim loads into uniopt and one of
    uniopt into torch.optim; each then continues as the other does (oracle:
    torch.optim, 1e-6)."""
    kwargs = {"AdamW": dict(lr=0.01, weight_decay=0.1), "SGD": dict(lr=0.05, momentum=0.9)}
    kwargs = kwargs[algorithm]
    for source, target in ((torch.optim, uniopt), (uniopt, torch.optim)):
        model = make_model()
        opt = getattr(source, algorithm)(model.parameters(), **kwargs)
        train(model, opt, N)
        sd = get_optimizer_state_dict(model, opt)
        twin = make_model()
        twin.load_state_dict(model.state_dict())
        other = getattr(target, algorithm)(twin.parameters(), **kwargs)
        set_optimizer_state_dict(twin, other, sd)
        train(model, opt, M)
        train(twin, other, M)
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_flattened_optimizer_state_dict(tmp_path):
    """``flatten_optimizer_state_dict=True`` keeps only the keys torch.optim's own
    optimizers have: an algorithm with a torch.optim twin resumes with the same
    parameters; one without is refused clearly, the optimizer unchanged."""
    flat = StateDictOptions(flatten_optimizer_state_dict=True)
    (params_a, _), (params_b, _) = resume(OPTIMIZERS["adamw-torch"], tmp_path, flat)
    for a, b in zip(params_a, params_b):
        assert np.array_equal(a, b)
    model = make_model()
    opt = uniopt.LAMB(model.parameters(), lr=0.01)
    train(model, opt, 1)
    sd = get_optimizer_state_dict(model, opt, options=flat)
    before = opt.portable_state_dict()
    with pytest.raises(ValueError, match="flatten_optimizer_state_dict.*'lamb'"):
        set_optimizer_state_dict(model, opt, sd, options=flat)
    assert differences(before, opt.portable_state_dict()) == []


def test_name_keyed_state_errors_change_nothing():
    model = make_model()
    opt = uniopt.AdamW(model.parameters(), lr=0.01)
    train(model, opt, 2)
    sd = get_optimizer_state_dict(model, opt)
    before = opt.portable_state_dict()
    bad = {**sd, "state": {**sd["state"], "9.weight": sd["state"]["0.weight"]}}
    with pytest.raises(ValueError, match="unknown parameter id '9.weight'"):
        opt.load_state_dict(bad)
    group = {**sd["param_groups"][0], "params": ["0.weight"] * 4}
    with pytest.raises(ValueError, match="listed twice"):
        opt.load_state_dict({**sd, "param_groups": [group]})
    entry = {**sd["state"]["2.bias"], "exp_avg": torch.zeros(7)}
    with pytest.raises(ValueError, match="'3'.*exp_avg"):  # named as the optimizer names it
        opt.load_state_dict({**sd, "state": {**sd["state"], "2.bias": entry}})
    assert differences(before, opt.portable_state_dict()) == []


# ---- FSDP2 on 2 gloo processes ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fsdp2(tmp_path_factory) -> Path:
    if not dist.is_gloo_available():
        pytest.skip("gloo is not available")
    directory = tmp_path_factory.mktemp("dcp_fsdp2")
    args = [sys.executable, __file__, str(directory), str(free_port())]
    done = subprocess.run(args, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-4000:]
    reports = [json.loads((directory / f"report-{r}.json").read_text()) for r in range(2)]
    for rank, items in enumerate(reports):
        for name, item in items.items():
            assert "error" not in item, f"rank {rank}, {name}: {item['error']}"
    return directory


def report(directory: Path, name: str) -> dict:
    return json.loads((directory / "report-0.json").read_text())[name]


FSDP2_CASES = ("adamw-torch", "sgd-momentum-torch", "lookahead-adam")


@pytest.mark.parametrize("case", FSDP2_CASES)
def test_fsdp2_state_is_sharded_and_dcp_resumes_exactly(fsdp2, case):
    """On FSDP2 ``opt.state`` and ``get_optimizer_state_dict`` hold DTensors laid out
    like the parameters (LookAhead's slow weights too); dcp.save after N steps, load
    into a fresh sharded model and optimizer, M steps: bitwise the uninterrupted run,
    parameters and gathered state; ``full_state_dict=True`` (whole tensors) too."""
    item = report(fsdp2, f"resume/{case}")
    assert item["dtensors"] > 0 and item["sharded_state"] == item["dtensors"]
    assert item["params"] == 0.0 and item["state"] == [], item
    assert item["whole"] and item["full_params"] == 0.0 and item["full_state"] == [], item
    assert item["step_count"] == N + M
    expected = {"adamw-torch": ["exp_avg", "exp_avg_sq", "step"]}
    expected |= {"sgd-momentum-torch": ["momentum_buffer"]}
    expected |= {"lookahead-adam": ["exp_avg", "exp_avg_sq", "slow", "step"]}
    assert item["keys"] == expected[case]


def test_fsdp2_torch_optim_agrees_and_exchanges_checkpoints(fsdp2):
    """torch.optim.AdamW and uniopt.AdamW (flavor torch) under the same FSDP2 setup
    agree over N + M steps; each resumes from the other's DCP checkpoint and continues
    as the other (1e-6, float32)."""
    item = report(fsdp2, "torch-optim")
    assert item["same_run"] <= 1e-6, item
    assert item["uniopt_to_torch"] <= 1e-6 and item["torch_to_uniopt"] <= 1e-6, item


def test_fsdp2_load_takes_state_laid_out_otherwise(fsdp2):
    """A sharded parameter's state given as a DTensor with other placements, or as a
    whole plain tensor, loads exactly; a DTensor of another global shape is refused
    naming the parameter and the slot, the optimizer unchanged."""
    item = report(fsdp2, "other-layouts")
    assert item["replicated"] == [] and item["whole"] == [], item
    assert "'exp_avg' of parameter '1'" in item["refused"], item
    assert "global shape [7]" in item["refused"] and item["unchanged"] == [], item


def test_two_process_checkpoint_resumes_in_one_process(fsdp2, tmp_path):
    """The 2-process sharded checkpoint loads (resharded by DCP) into the unsharded
    model's uniopt.AdamW in this process, and the next M steps follow the 2-process
    run (1e-6, float32)."""
    model = make_model(seed=1)
    opt = OPTIMIZERS["adamw-torch"](model)
    sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(sd, checkpoint_id=fsdp2 / "adamw-torch")
    set_model_state_dict(model, sd["model"])
    set_optimizer_state_dict(model, opt, sd["optim"])
    assert opt.portable_state_dict()["step_count"] == N
    train(model, opt, M)
    expected = np.load(fsdp2 / "adamw-torch-after.npz")
    for name, p in model.named_parameters():
        np.testing.assert_allclose(host(p), expected[name], rtol=1e-6, atol=1e-7)


def _fsdp2_model(mesh, seed: int = 0):
    from torch.distributed.fsdp import fully_shard

    model = make_model(seed)
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _gathered(opt) -> dict:
    return uniopt.distributed.full_state_dict(opt)


def _deviation(expected, got) -> float:
    """The largest ``max|got - expected| / max|expected|`` over the tensors (0.0: equal)."""
    worst = 0.0
    for e, g in zip(expected, got):
        e, g = host(e).astype(np.float64), host(g).astype(np.float64)
        worst = max(worst, float(np.max(np.abs(g - e))) / max(float(np.max(np.abs(e))), 1e-30))
    return worst


def _fsdp2_resume(mesh, directory: Path, rank: int, case: str) -> dict:
    from torch.distributed.tensor import DTensor

    make = OPTIMIZERS[case]
    model = _fsdp2_model(mesh)
    opt = make(model)
    train(model, opt, N)
    dtensors = sharded = 0
    sd = get_optimizer_state_dict(model, opt)
    views = [(opt.state[p], p) for p in model.parameters()]
    views += [(sd["state"][name], p) for name, p in model.named_parameters()]
    for entry, p in views:
        for key, value in entry.items():
            if key != "step":
                dtensors += 1
                sharded += (
                    isinstance(value, DTensor)
                    and value.placements == p.placements
                    and value.shape == p.shape
                    and value.to_local().shape == p.to_local().shape
                )
    path = directory / case
    dcp.save({"model": get_model_state_dict(model), "optim": sd}, checkpoint_id=path)
    full = StateDictOptions(full_state_dict=True)
    whole = get_optimizer_state_dict(model, opt, options=full)  # gathered, plain tensors
    train(model, opt, M)
    expected = ([host(p) for p in model.parameters()], _gathered(opt))
    if rank == 0:
        np.savez(
            directory / f"{case}-after.npz",
            **dict(zip(dict(model.named_parameters()), expected[0])),
        )
    out = {"dtensors": dtensors, "sharded_state": int(sharded)}
    out["keys"] = sorted({k for entry in sd["state"].values() for k in entry})
    params = dict(model.named_parameters())
    out["whole"] = all(  # full_state_dict=True: DCP gathered our DTensors to whole tensors
        type(v) is torch.Tensor and v.shape == params[name].shape
        for name, entry in whole["state"].items()
        for k, v in entry.items()
        if k != "step"
    )
    # DCP: a fresh sharded model and optimizer (stepped once by DCP), then the checkpoint
    fresh = _fsdp2_model(mesh, seed=1)
    again = make(fresh)
    sd = {"model": get_model_state_dict(fresh), "optim": get_optimizer_state_dict(fresh, again)}
    dcp.load(sd, checkpoint_id=path)
    set_model_state_dict(fresh, sd["model"])
    set_optimizer_state_dict(fresh, again, sd["optim"])
    train(fresh, again, M)
    out["params"] = _deviation(expected[0], list(fresh.parameters()))
    out["state"] = differences(expected[1], _gathered(again))
    portable = again.portable_state_dict()
    out["step_count"] = portable.get("inner", portable)["step_count"]
    # full_state_dict=True: whole tensors on every process, cut back on load
    fresh = _fsdp2_model(mesh, seed=2)
    again = make(fresh)
    set_model_state_dict(fresh, dcp_model(path, fresh))
    set_optimizer_state_dict(fresh, again, whole, options=full)
    train(fresh, again, M)
    out["full_params"] = _deviation(expected[0], list(fresh.parameters()))
    out["full_state"] = differences(expected[1], _gathered(again))
    return out


def dcp_model(path: Path, model) -> dict:
    sd = {"model": get_model_state_dict(model)}
    dcp.load(sd, checkpoint_id=path)
    return sd["model"]


def _fsdp2_torch_optim(mesh, directory: Path, rank: int) -> dict:
    kwargs = dict(lr=0.01, weight_decay=0.1)
    runs = {}
    for name, make in (
        ("uniopt", lambda m: uniopt.AdamW(m.parameters(), flavor="torch", **kwargs)),
        ("torch", lambda m: torch.optim.AdamW(m.parameters(), **kwargs)),
    ):
        model = _fsdp2_model(mesh)
        opt = make(model)
        train(model, opt, N)
        path = directory / f"exchange-{name}"
        dcp.save(
            {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)},
            checkpoint_id=path,
        )
        train(model, opt, M)
        runs[name] = (path, [host(p) for p in model.parameters()], make)
    out = {"same_run": _deviation(runs["torch"][1], runs["uniopt"][1])}
    for source, target in (("uniopt", "torch"), ("torch", "uniopt")):
        model = _fsdp2_model(mesh, seed=1)
        opt = runs[target][2](model)
        sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
        # the two optimizers' param groups hold different keys: each loads those it has
        partial = dcp.DefaultLoadPlanner(allow_partial_load=True)
        dcp.load(sd, checkpoint_id=runs[source][0], planner=partial)
        set_model_state_dict(model, sd["model"])
        set_optimizer_state_dict(model, opt, sd["optim"])
        train(model, opt, M)
        out[f"{source}_to_{target}"] = _deviation(runs[source][1], list(model.parameters()))
    return out


def _fsdp2_other_layouts(mesh, directory: Path, rank: int) -> dict:
    """``load_state_dict`` takes a sharded parameter's state laid out otherwise: a
    DTensor with other placements (redistributed), a whole plain tensor (cut as the
    parameter is cut); a DTensor of another global shape is refused, naming it."""
    from torch.distributed.tensor import DTensor, Replicate, distribute_tensor

    model = _fsdp2_model(mesh)
    make = OPTIMIZERS["adamw-torch"]
    opt = make(model)
    train(model, opt, N)
    expected = _gathered(opt)
    sd = get_optimizer_state_dict(model, opt)
    out = {}
    for label, convert in (
        ("replicated", lambda v: v.redistribute(v.device_mesh, [Replicate()])),
        ("whole", lambda v: v.full_tensor()),
    ):
        changed = {
            "param_groups": sd["param_groups"],
            "state": {
                name: {k: convert(v) if isinstance(v, DTensor) else v for k, v in entry.items()}
                for name, entry in sd["state"].items()
            },
        }
        fresh = _fsdp2_model(mesh, seed=1)
        again = make(fresh)
        set_optimizer_state_dict(fresh, again, changed)
        out[label] = differences(expected, _gathered(again))
    bad = {
        **sd["state"]["0.bias"],
        "exp_avg": distribute_tensor(torch.zeros(7), mesh, [Replicate()]),
    }
    try:
        opt.load_state_dict({**sd, "state": {**sd["state"], "0.bias": bad}})
        out["refused"] = "not refused"
    except ValueError as error:
        out["refused"] = str(error)
    out["unchanged"] = differences(expected, _gathered(opt))
    return out


def worker(rank: int, world: int, port: int, directory: str) -> None:
    """One process of the 2-process run: every check, in the same order everywhere (they
    are collective); a report per process. A failing check is recorded, not raised."""
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    directory = Path(directory)
    items = {}
    checks = [(f"resume/{c}", _fsdp2_resume, c) for c in FSDP2_CASES]
    checks += [("torch-optim", _fsdp2_torch_optim), ("other-layouts", _fsdp2_other_layouts)]
    for name, fn, *args in checks:
        try:
            items[name] = fn(mesh, directory, rank, *args)
        except (Exception, CheckpointException) as error:  # the latter is no Exception
            items[name] = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"}
    (directory / f"report-{rank}.json").write_text(json.dumps(items, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(2, int(sys.argv[2]), sys.argv[1]), nprocs=2, join=True)
