"""The plot-schedule command: argument parsing, a PNG when matplotlib is there, a clear
message and exit code 2 when it is not."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import uniopt.plot as plot
from uniopt.__main__ import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_parse_value():
    assert plot.parse_value("3") == 3 and isinstance(plot.parse_value("3"), int)
    assert plot.parse_value("0.5") == 0.5
    assert plot.parse_value("1e-4") == 1e-4
    assert plot.parse_value("-2") == -2
    assert plot.parse_value("2,4,6") == [2, 4, 6]
    assert plot.parse_value("0.2,0.4") == [0.2, 0.4]
    assert plot.parse_value("True") is True and plot.parse_value("false") is False
    assert plot.parse_value("none") is None
    assert plot.parse_value("exp_range") == "exp_range"


def test_parse_options():
    tokens = ["--T-max", "100", "--eta_min=0.001", "--cycle", "--gamma", "-0.5", "--mode", "x"]
    assert plot.parse_options(tokens) == {
        "T_max": 100,
        "eta_min": 0.001,
        "cycle": True,
        "gamma": -0.5,
        "mode": "x",
    }
    with pytest.raises(ValueError, match="--ARG VALUE"):
        plot.parse_options(["stray"])


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "lr.png"
    argv = ["plot-schedule", "cosine_annealing", "--base-lr", "0.1", "--T-max", "50"]
    assert main([*argv, "--steps", "120", "-o", str(out)]) == 0
    assert _png(out)
    assert "wrote" in capsys.readouterr().out
    # options before NAME, lists, booleans and a warmup
    out2 = tmp_path / "pw.png"
    argv = ["plot-schedule", "--steps", "30", "-o", str(out2), "piecewise_decay"]
    assert main([*argv, "--boundaries", "2,4,6,8", "--values", "0.2,0.4,0.6,0.8,1.0"]) == 0
    assert _png(out2)
    out3 = tmp_path / "poly.png"
    argv = ["plot-schedule", "polynomial_decay", "--base-lr", "0.1", "--decay-steps", "20"]
    argv += ["--cycle", "true", "--warmup", "5", f"--output={out3}", "--steps", "60"]
    assert main(argv) == 0
    assert _png(out3)


def test_register_on_a_host_parser(tmp_path):
    pytest.importorskip("matplotlib")
    parser = argparse.ArgumentParser(prog="uniopt")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("other")
    plot.register(sub)
    out = tmp_path / "x.png"
    args = parser.parse_args(
        ["plot-schedule", "one_cycle", "--max-lr", "1.0", "--total-steps", "80", "-o", str(out)]
    )
    assert args.func(args) == 0 and _png(out)


def test_missing_matplotlib_message_and_exit_code(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "lr.png"
    argv = ["plot-schedule", "exponential_decay", "--base-lr", "0.1", "--gamma", "0.9"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "-o", str(out)])
    assert exc.value.code == 2
    assert 'pip install "uniopt[plot]"' in capsys.readouterr().err
    assert not out.exists()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plot-schedule", "no_such_schedule"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["plot-schedule", "cosine_annealing", "--base-lr", "0.1", "--T-max", "0"])
    assert exc.value.code == 2
    assert "T_max" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["plot-schedule", "cosine_annealing", "--base-lr", "0.1", "--nope", "1"])
    assert exc.value.code == 2


def test_standalone_in_a_subprocess(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "lr.png"
    argv = ["plot-schedule", "cyclic", "--base-lr", "0.01", "--max-lr", "0.1"]
    argv += ["--step-size-up", "10", "--mode", "triangular2", "--steps", "100", "-o", str(out)]
    code = f"from uniopt.__main__ import main; raise SystemExit(main({argv!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert _png(out)


def test_python_m_uniopt_when_the_main_module_registers_it(tmp_path):
    pytest.importorskip("matplotlib")
    probe = subprocess.run(
        [sys.executable, "-m", "uniopt", "plot-schedule", "--help"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip("uniopt/__main__.py does not register plot-schedule (yet)")
    out = tmp_path / "lr.png"
    argv = ["plot-schedule", "noam", "--base-lr", "1.0", "--d-model", "512"]
    argv += ["--warmup-steps", "40", "--steps", "200", "-o", str(out)]
    subprocess.run([sys.executable, "-m", "uniopt", *argv], check=True, capture_output=True)
    assert _png(out)
