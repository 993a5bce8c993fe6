"""CuPy adapter: like NumPy, on the GPU; host transfers with ``.get()``."""

from __future__ import annotations

from typing import Any

import numpy as np

from uniopt._adapter import Adapter


class CupyAdapter(Adapter):
    name = "cupy"
    chunk_elements = 1 << 22

    def device(self, x: Any) -> str:
        return f"cuda:{x.device.id}"

    def dtype_name(self, x: Any) -> str:
        return np.dtype(x.dtype).name

    def flat(self, x: Any) -> Any:
        return x.reshape(-1)

    def flat_view(self, x: Any) -> Any:
        return x.reshape(-1)

    def contiguous(self, x: Any) -> bool:
        return bool(x.flags.c_contiguous)

    def write(self, dst: Any, src: Any) -> None:
        dst[...] = src

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.get()

    def from_numpy(self, a: np.ndarray, like: Any) -> Any:
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.array(a, dtype=like.dtype, copy=True)


ADAPTER = CupyAdapter()
