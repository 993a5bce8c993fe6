"""CuPy adapter: NumPy's behaviour on the GPU; host transfers with ``.get()``."""

from __future__ import annotations

from typing import Any

import numpy as np
from uniopt.backends.numpy import NumpyAdapter


class CupyAdapter(NumpyAdapter):
    name = "cupy"
    chunk_elements = 1 << 22
    replay = None  # CuPy's ufuncs would do; untested without a GPU

    def device(self, x: Any) -> str:
        return f"cuda:{x.device.id}"

    def same_device(self, a: Any, b: Any) -> bool:
        return a.device.id == b.device.id

    def write(self, dst: Any, src: Any) -> None:
        dst[...] = src

    def contiguous(self, x: Any) -> bool:
        return bool(x.flags.c_contiguous)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.get()

    def from_numpy(self, a: np.ndarray, like: Any) -> Any:
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.array(a, dtype=like.dtype, copy=True)


ADAPTER = CupyAdapter()
