"""The core imports no framework; the command line runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

BLOCK_FRAMEWORKS = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "jax", "jaxlib", "cupy", "optax"):
                raise ImportError(f"{name} is blocked for this test")
    sys.meta_path.insert(0, Block())
    """
)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


def test_import_uniopt_works_without_any_framework():
    code = BLOCK_FRAMEWORKS + textwrap.dedent(
        """
        import numpy as np, uniopt
        x = np.ones(3)
        opt = uniopt.AdamW([x], lr=0.1)
        opt.step([np.ones(3)])
        tx = uniopt.sgd(lr=0.1)
        s = tx.init([x])
        u, s = tx.update([np.ones(3)], s)
        frameworks = [m for m in ("torch", "jax", "cupy", "optax") if m in sys.modules]
        print("ok", frameworks)
        """
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok []"


def test_core_modules_import_no_framework_at_all():
    code = BLOCK_FRAMEWORKS + textwrap.dedent(
        """
        import pkgutil, importlib, uniopt
        for m in pkgutil.walk_packages(uniopt.__path__, "uniopt."):
            if not m.name.startswith("uniopt.backends."):
                importlib.import_module(m.name)
        print("ok")
        """
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr


def test_parity_command_prints_the_table_and_exit_codes():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "uniopt",
            "parity",
            "--optimizers",
            "sgd",
            "adamw",
            "--backends",
            "numpy",
            "torch",
            "--steps",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "adamw-amsgrad" in out.stdout and "torch.optim" in out.stdout
    assert out.stdout.strip().splitlines()[-1].endswith(" passed, 0 failed")
    bad = subprocess.run(
        [sys.executable, "-m", "uniopt", "parity", "--optimizers", "nope"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "unknown optimizers" in bad.stdout


def test_ci_runs_the_readme_test_command():
    with open("README.md") as f:
        readme = f.read()
    with open(".ci/run") as f:
        ci = f.read()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "the README gives exactly two commands"
    assert commands[0].endswith("python -m uniopt parity")
    assert commands[1].endswith("python -m pytest")
    assert commands[1] in ci


def readme_examples() -> list[str]:
    with open("README.md") as f:
        text = f.read()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_readme_examples_run():
    import importlib.util

    from uniopt.parity.arrays import BACKENDS

    examples = readme_examples()
    assert len(examples) == 4
    for code in examples:
        if "import cupy" in code and not BACKENDS["cupy"].available():
            continue
        if "import torch" in code and importlib.util.find_spec("torch") is None:
            continue
        exec(compile(code, "README.md", "exec"), {})


def test_flavor_table_in_the_docs_is_current():
    from uniopt.flavors import table

    with open("docs/flavors.md") as f:
        assert table() in f.read(), "regenerate docs/flavors.md from uniopt.flavors.table()"
