"""NumPy adapter: in-place writes into the caller's arrays, gradients passed to step()."""

from __future__ import annotations

from typing import Any

import numpy as np

from uniopt._adapter import Adapter
from uniopt.engine.plan import ReplayOps


class NumpyAdapter(Adapter):
    name = "numpy"
    fixed_storage = True
    replay = ReplayOps()
    chunk_elements = 1 << 15

    def device(self, x: Any) -> str:
        return "cpu"

    def same_device(self, a: Any, b: Any) -> bool:
        return True

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

    def as_real(self, x: Any) -> Any:
        """A view (a copy of a non-contiguous ``x``, for reading)."""
        x = x if x.flags.c_contiguous else x.copy()
        return x.reshape(-1).view(x.real.dtype).reshape(*x.shape, 2)

    def from_real(self, r: Any) -> Any:
        r = r if r.flags.c_contiguous else r.copy()
        return r.view(_COMPLEX[r.dtype.name]).reshape(r.shape[:-1])

    def bind(self, params: list[Any], previous: Any = None) -> Any:
        return self.shared_flat(params)

    def is_view_of(self, p: Any, flat: Any, offset: int) -> bool:
        return _address(p) == _address(flat) + offset * flat.itemsize and p.flags.c_contiguous

    def shared_flat(self, arrays: list[Any]) -> Any:
        """Arrays sliced in order out of one buffer (e.g. ``np.split`` of a flat array)
        are used in place of a copy."""
        root = _root(arrays[0])
        dtype, start = arrays[0].dtype, _address(arrays[0])
        at = start
        for a in arrays:
            if (
                _root(a) is not root
                or a.dtype != dtype
                or not a.flags.c_contiguous
                or not a.flags.writeable
                or _address(a) != at
            ):
                return None
            at += a.nbytes
        offset = start - _address(root)
        return np.ndarray((sum(a.size for a in arrays),), dtype, buffer=root, offset=offset)


#: the complex dtype of real pairs of each real dtype
_COMPLEX = {"float32": "complex64", "float64": "complex128"}


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _root(a: np.ndarray) -> np.ndarray:
    """The outermost array of ``a``'s memory (following views to their base)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


ADAPTER = NumpyAdapter()
