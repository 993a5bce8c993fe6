"""Adapter for any other array-API library (proven with ``array_api_strict``).

Nothing is assumed beyond the standard: arrays are treated as immutable and the
engine builds new arrays instead of writing in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uniopt._adapter import Adapter


class GenericAdapter(Adapter):
    name = "array-api"
    mutable = False

    def to_numpy(self, x: Any) -> np.ndarray:
        try:
            return np.from_dlpack(x).copy()
        except (TypeError, RuntimeError, BufferError, AttributeError):
            return np.asarray(x).copy()

    def write(self, dst: Any, src: Any) -> None:
        raise TypeError("array-API arrays are not written in place")


ADAPTER = GenericAdapter()
