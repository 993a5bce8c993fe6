"""Regenerate ``docs/parity-output.txt``, the parity table the docs show.

    python docs/tools/gen_parity.py          # about a minute on 2 cores

It runs ``python -m uniopt parity --steps 20 --flavors`` (every optimizer case of the
registry, every installed backend and face; the per-flavor framework checks are left
out to keep it short) and writes its output verbatim below a header naming the command
and the library versions. ``tests/test_docs.py`` checks that the file lists exactly the
registry's cases, so a new case or algorithm needs a rerun. Exit status: the command's.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "parity-output.txt"
COMMAND = ["python", "-m", "uniopt", "parity", "--steps", "20", "--flavors"]


def versions() -> str:
    found = []
    for name in ("numpy", "torch", "jax", "optax", "array-api-strict", "cupy-cuda12x"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def main() -> int:
    done = subprocess.run(
        [sys.executable, *COMMAND[1:]], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stdout + done.stderr)
        return done.returncode
    header = f"# $ {' '.join(COMMAND)}\n# {versions()}\n"
    OUTPUT.write_text(header + done.stdout)
    print(f"wrote {OUTPUT.relative_to(ROOT)} (exit status {done.returncode})")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
