"""Scaling out on JAX: every registry optimizer with parameters sharded over 8 host
devices, both faces. The checks run in one subprocess (``scale_jax_worker.py``) so that
the rest of the suite keeps one device; see its docstring for what is checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

from uniopt.parity.cases import CASES

WORKER = Path(__file__).with_name("scale_jax_worker.py")


def test_sharded_jax_runs_of_every_optimizer():
    require("jax")
    pytest.importorskip("optax")
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_ENABLE_X64": "1",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, str(WORKER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    lines = output.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert done.returncode == 0, f"{len(failed)} sharded checks failed:\n{output}"
    passed = [line for line in lines if line.startswith("ok")]
    assert len(passed) == 2 * len(CASES) + 2, output  # both faces of every case, and two more
