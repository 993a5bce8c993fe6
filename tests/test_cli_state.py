"""``python -m uniopt inspect FILE`` and ``python -m uniopt convert IN OUT``."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import uniopt
from uniopt import io
from uniopt.__main__ import main

torch = pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkpoint(tmp_path):
    opt = uniopt.AdamW(
        [
            {"params": {"fc.weight": np.ones((3, 2)), "fc.bias": np.zeros(2, np.float32)}},
            {"params": {"emb": np.ones(4)}, "lr": 0.5},
        ],
        lr=0.01,
        flavor="torch",
    )
    opt.step({"fc.weight": np.ones((3, 2)), "fc.bias": np.ones(2, np.float32), "emb": None})
    sched = uniopt.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    path = tmp_path / "ckpt.safetensors"
    uniopt.save({"optimizer": opt, "scheduler": sched, "epoch": 7}, path)
    return path


def test_inspect_shows_algorithm_groups_parameters_and_step(tmp_path, capsys):
    path = checkpoint(tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for expected in (
        "checkpoint",
        "optimizer [optimizer]: AdamW, algorithm adamw, flavor torch, step 1",
        "group 0 (2 parameters): lr=0.01 betas=(0.9, 0.999) eps=1e-08 weight_decay=0.01",
        "group 1 (1 parameters): lr=0.5",
        "scheduler [scheduler]: CosineAnnealingLR",
        "T_max=10",
        "other entries: epoch=7",
    ):
        assert expected in out, (expected, out)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("    ")}
    assert rows["fc.weight"][1:5] == ["[3,", "2]", "float64", "1"]
    assert rows["fc.bias"][1:4] == ["[2]", "float32", "1"]
    assert rows["emb"][1:4] == ["[4]", "float64", "0"]  # not stepped: shape from the file's table
    assert "exp_avg, exp_avg_sq" in " ".join(rows["fc.bias"])


def test_inspect_refuses_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "x.pt"
    torch.save({"a": torch.ones(2)}, bad)
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", str(bad)])
    assert exit_.value.code == 2
    assert "looks like a zip archive (torch.save)" in capsys.readouterr().err


def torch_run(named, steps, opt=None, **kwargs):
    opt = opt or torch.optim.AdamW(list(named.items()), **kwargs)
    for t in steps:
        for i, p in enumerate(named.values()):
            p.grad = torch.cos(p.detach() * (t + 1 + i))
        opt.step()
    return opt


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.nn.Parameter(torch.randn(3, 2, generator=g, dtype=torch.float64)),
        "b": torch.nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64)),
    }


def test_convert_a_torch_save_file_and_continue_in_uniopt(tmp_path, capsys):
    theirs = params()
    ref = torch_run(theirs, range(5), lr=0.05, weight_decay=0.2)
    ours = params()
    torch_opt = torch_run(ours, range(5), lr=0.05, weight_decay=0.2)
    pt = tmp_path / "optim.pt"
    torch.save({"optimizer": torch_opt.state_dict(), "epoch": 5}, pt)
    out = tmp_path / "optim.safetensors"
    with pytest.raises(SystemExit):
        main(["convert", str(pt), str(out)])
    assert "pass --key optimizer" in capsys.readouterr().err
    assert main(["convert", str(pt), str(out), "--key", "optimizer"]) == 0
    assert "adamw, 2 parameters, 2 with state, step 5" in capsys.readouterr().out
    values = {n: p.detach().numpy().copy() for n, p in ours.items()}
    opt = uniopt.AdamW(values)
    uniopt.load(out, into=opt)  # the names came from torch's param_names
    torch_run(theirs, range(5, 10), ref)
    for t in range(5, 10):
        opt.step({n: np.cos(values[n] * (t + 1 + i)) for i, n in enumerate(values)})
    for n in values:
        np.testing.assert_allclose(values[n], theirs[n].detach().numpy(), rtol=1e-12)
    # and back: uniopt file -> torch state_dict, loaded by torch.optim itself
    back = tmp_path / "back.pt"
    assert main(["convert", str(out), str(back)]) == 0
    tsd = torch.load(back, weights_only=True)
    again = params()
    for n, p in again.items():
        p.data.copy_(ours[n].detach())
    torch2 = torch.optim.AdamW(list(again.items()))
    torch2.load_state_dict(tsd)
    assert torch2.param_groups[0]["weight_decay"] == 0.2
    torch.testing.assert_close(
        torch2.state[again["w"]]["exp_avg"], torch_opt.state[ours["w"]]["exp_avg"]
    )


def test_convert_with_algorithm_names_and_step(tmp_path, capsys):
    named = params(1)
    sgd = torch.optim.SGD(list(named.values()), lr=0.1, momentum=0.9)  # no names in torch
    torch_run(named, range(3), sgd)
    pt = tmp_path / "sgd.pt"
    torch.save(sgd.state_dict(), pt)
    out = tmp_path / "sgd.safetensors"
    code = main(
        ["convert", str(pt), str(out), "--algorithm", "sgd", "--names", "w,b", "--step", "3"]
    )
    assert code == 0
    sd = uniopt.load(out)
    assert sd["algorithm"] == "sgd" and sd["step_count"] == 3
    assert sd["param_groups"][0]["params"] == ["w", "b"]
    np.testing.assert_array_equal(
        sd["state"]["b"]["momentum_buffer"], sgd.state[named["b"]]["momentum_buffer"].numpy()
    )
    with pytest.raises(SystemExit):
        main(["convert", str(pt), str(out), "--names", "w"])
    assert "1 names for 2 parameters" in capsys.readouterr().err


def test_convert_never_unpickles_code(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state": Payload(), "param_groups": []}, protocol=2))
    with pytest.raises(SystemExit) as exit_:
        main(["convert", str(evil), str(tmp_path / "out.safetensors")])
    assert exit_.value.code == 2 and "weights_only" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_python_dash_m_uniopt_inspect_runs(tmp_path):
    path = checkpoint(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [sys.executable, "-m", "uniopt", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "algorithm adamw" in out.stdout


# ---- bad paths and bad files: one line, exit code 2, never a traceback -------------------


def error_line(capsys, argv):
    """Run ``main(argv)``, which must fail as argparse does: exit code 2 and one line."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"uniopt {argv[0]}: error: "), err
    return lines[0]


def test_convert_to_a_directory_or_into_a_missing_one_is_a_clean_error(tmp_path, capsys):
    ckpt = checkpoint(tmp_path)
    pt = tmp_path / "opt.pt"
    assert main(["convert", str(ckpt), str(pt), "--key", "optimizer"]) == 0
    capsys.readouterr()
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    for source, extra in ((ckpt, ["--key", "optimizer"]), (pt, [])):  # both directions
        line = error_line(capsys, ["convert", str(source), str(outdir), *extra])
        assert f"{outdir} is a directory" in line
        missing = tmp_path / "nope" / "out"
        assert "no directory" in error_line(capsys, ["convert", str(source), str(missing), *extra])
    assert os.listdir(outdir) == [] and not (tmp_path / "nope").exists()
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(
        [sys.executable, "-m", "uniopt", "convert", str(pt), str(outdir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().startswith("uniopt convert: error: ")


def test_convert_bad_inputs_are_clean_errors(tmp_path, capsys):
    ckpt = checkpoint(tmp_path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a file of any kind")
    data = tmp_path / "data.safetensors"
    uniopt.save([1, 2], data)
    foreign = tmp_path / "weights.safetensors"
    io.write_safetensors(foreign, {"fc.weight": np.ones(2)}, {})
    corrupted = tmp_path / "corrupted.safetensors"
    raw = ckpt.read_bytes()
    corrupted.write_bytes(raw.replace(rb"lr\":0.01", rb"lr\":0.05", 1))
    assert corrupted.read_bytes() != raw
    out = str(tmp_path / "out.pt")
    cases = [
        ([str(tmp_path / "missing.pt")], "cannot read"),
        ([str(tmp_path)], "Is a directory"),
        ([str(junk)], "neither a uniopt state file nor a torch.save file"),
        ([str(data)], "does not hold a uniopt optimizer state"),
        ([str(foreign)], "not a uniopt state file"),
        ([str(corrupted)], "fails its checksum"),
        ([str(ckpt)], "pass --key optimizer"),
        ([str(ckpt), "--key", "nope"], "has no entry 'nope'"),
    ]
    for (source, *extra), expected in cases:
        assert expected in error_line(capsys, ["convert", source, out, *extra])
    assert not os.path.exists(out)


def test_inspect_bad_paths_and_odd_contents_never_show_a_traceback(tmp_path, capsys):
    assert "cannot read" in error_line(capsys, ["inspect", str(tmp_path / "missing")])
    assert "Is a directory" in error_line(capsys, ["inspect", str(tmp_path)])
    # valid files whose content only looks like an optimizer state
    odd = [
        {"format": "uniopt.optimizer", "param_groups": 5, "state": [1]},
        {"format": "uniopt.optimizer", "param_groups": [{"params": 3}, 7, {"params": [[1], "x"]}]},
        {"format": "uniopt.optimizer", "param_groups": [{"params": ["x"]}], "state": {"x": [2]}},
        [1, {"format": "uniopt.optimizer"}],
    ]
    for k, content in enumerate(odd):
        path = tmp_path / f"odd{k}.safetensors"
        uniopt.save(content, path)
        assert uniopt.load(path) == content
        assert main(["inspect", str(path)]) == 0
        assert "uniopt state file" in capsys.readouterr().out
    # optimizers and schedulers under keys that are not strings
    opt = uniopt.SGD({"w": np.ones(2)}, lr=0.1, momentum=0.9)
    opt.step({"w": np.ones(2)})
    sched = uniopt.lr_scheduler.StepLR(opt, step_size=2)
    path = tmp_path / "keys.safetensors"
    uniopt.save({(1, "a"): opt, None: sched, 2.5: [opt]}, path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "optimizer [(1, 'a')]: SGD, algorithm sgd" in out and "scheduler [None]: StepLR" in out
