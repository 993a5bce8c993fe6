"""examples/: the MLP trained with uniopt on NumPy (hand-written gradients), PyTorch
(autograd) and JAX (jax.grad) gives the same loss curve and accuracy."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FRAMEWORKS = {"numpy": "numpy", "torch": "torch", "jax": "jax"}
STEPS = 40  # --quick


def _start(framework: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / f"mlp_{framework}.py"), "--json", str(out), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("the examples need scikit-learn (its digits data): pip install scikit-learn")
    available = [f for f, module in FRAMEWORKS.items() if importlib.util.find_spec(module)]
    tmp = tmp_path_factory.mktemp("examples")
    # two at a time: the CI machine has two cores
    results = {}
    for pair in (available[:2], available[2:]):
        procs = {f: _start(f, tmp / f"{f}.json", "--quick", "--every", "10") for f in pair}
        for framework, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"mlp_{framework}.py failed:\n{stdout}\n{stderr}"
            result = json.loads((tmp / f"{framework}.json").read_text())
            result["stdout"] = stdout
            results[framework] = result
    return results


def test_each_example_prints_its_curve_and_accuracy(runs):
    for framework, result in runs.items():
        out = result["stdout"]
        assert f"uniopt AdamW on {framework}" in out
        assert len(re.findall(r"^step +\d+  loss ", out, re.M)) == STEPS // 10
        assert re.search(r"^test accuracy 0\.\d{4}$", out, re.M)
        losses = result["losses"]
        assert len(losses) == STEPS and result["steps"] == STEPS
        assert losses[-1] < 0.6 * losses[0], "the loss did not go down"
        assert result["accuracy"] > 0.6


def test_the_three_frameworks_agree(runs):
    if len(runs) < 3:
        pytest.skip(f"torch and jax are needed to compare; ran {sorted(runs)}")
    reference = np.array(runs["numpy"]["losses"])
    for framework in ("torch", "jax"):
        curve = np.array(runs[framework]["losses"])
        np.testing.assert_allclose(curve, reference, rtol=0, atol=1e-10, err_msg=framework)
        assert abs(runs[framework]["final_loss"] - runs["numpy"]["final_loss"]) < 1e-10
        assert runs[framework]["accuracy"] == runs["numpy"]["accuracy"]


def test_steps_option_and_bad_arguments(tmp_path):
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("the examples need scikit-learn")
    proc = _start("numpy", tmp_path / "c.json", "--steps", "7", "--every", "3")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert len(json.loads((tmp_path / "c.json").read_text())["losses"]) == 7
    assert re.findall(r"^step +(\d+)", stdout, re.M) == ["0", "3", "6"]
    bad = _start("numpy", tmp_path / "d.json", "--steps", "0")
    _, stderr = bad.communicate(timeout=300)
    assert bad.returncode == 2 and "must be positive" in stderr


def test_the_excerpts_in_the_docs_match_the_examples():
    """docs/examples.md quotes the examples: every quoted line is in the file it names."""
    text = (ROOT / "docs" / "examples.md").read_text()
    quoted = re.findall(r"```python\n# from (examples/\S+\.py)\n(.*?)```", text, re.S)
    assert len(quoted) == 3
    for path, excerpt in quoted:
        source = {line.strip() for line in (ROOT / path).read_text().splitlines()}
        for line in excerpt.splitlines():
            assert not line.strip() or line.strip() in source, f"{path} has no line {line!r}"
