"""NumPy adapter: in-place writes into the caller's arrays, gradients passed to step()."""

from __future__ import annotations

from typing import Any

import numpy as np

from uniopt._adapter import Adapter


class NumpyAdapter(Adapter):
    name = "numpy"
    chunk_elements = 1 << 15

    def device(self, x: Any) -> str:
        return "cpu"

    def dtype_name(self, x: Any) -> str:
        return np.dtype(x.dtype).name

    def flat(self, x: Any) -> Any:
        return x.reshape(-1)

    def flat_view(self, x: Any) -> Any:
        return x.reshape(-1)

    def contiguous(self, x: Any) -> bool:
        return bool(x.flags.c_contiguous and x.flags.writeable)

    def write(self, dst: Any, src: Any) -> None:
        np.copyto(dst, src)

    def from_numpy(self, a: np.ndarray, like: Any) -> Any:
        return np.array(a, dtype=like.dtype, copy=True)


ADAPTER = NumpyAdapter()
