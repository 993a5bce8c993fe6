"""``flavor="keras"`` against live Keras 3 optimizers (jax backend), float32, 100 steps."""

from __future__ import annotations

import pytest

from uniopt.parity import frameworks

if not frameworks.keras_available():  # pragma: no cover
    pytest.skip("Keras 3 with the jax backend is not available", allow_module_level=True)


@pytest.mark.parametrize(
    "index",
    range(len(frameworks.KERAS_CASES)),
    ids=[f"{c[0]}-{i}" for i, c in enumerate(frameworks.KERAS_CASES)],
)
def test_keras_flavor_matches_keras(index):
    worst = frameworks.run_keras(index)
    assert worst <= 1.0, f"deviation {worst:.2f} x the float32 tolerance"
