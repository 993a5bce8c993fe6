"""Choosing the I/O adapter for an array, lazily.

An adapter knows where a framework keeps gradients, how to write parameters back,
how to move arrays to and from the host and how to compile a pure function. It
holds no update math. Adapters live in ``uniopt.backends`` (the top-level
``backends/`` folder) and are imported only when an array of that library is seen,
so ``import uniopt`` needs none of torch, jax or cupy.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np


class Adapter:
    """Base adapter: the behaviour of a mutable array library without gradients on arrays.

    Subclasses override what differs for their library. Every method is plain I/O.
    """

    name = "generic"
    #: arrays can be written in place (numpy, torch, cupy); jax and strict cannot rely on it
    mutable = True
    #: gradients live on the parameters (torch ``.grad``)
    grads_on_params = False
    #: an array's memory never moves (NumPy, CuPy): what is found about where an array
    #: lies stays true for as long as the array object lives
    fixed_storage = False
    #: the compiler fuses each tensor's update into one pass (XLA): the functional face
    #: keeps large tensors' state apart rather than end to end (which would copy it)
    fuses_per_tensor = False
    #: how eager elementwise rules replay a recorded in-place plan (a
    #: ``uniopt.engine.plan.ReplayOps``), or None: rules run as written
    replay: Any = None
    #: elements per block on eager paths: a block's temporaries stay cache-sized
    chunk_elements = 1 << 16

    def namespace(self, x: Any) -> Any:
        return array_api_compat.array_namespace(x)

    def is_array(self, x: Any) -> bool:
        return hasattr(x, "__array_namespace__")

    def device(self, x: Any) -> str:
        return str(array_api_compat.device(x))

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).rsplit(".", 1)[-1]

    def same_device(self, a: Any, b: Any) -> bool:
        """Whether two arrays of this library live on the same device."""
        return self.device(a) == self.device(b)

    def multi_device(self, x: Any) -> bool:
        """Whether ``x`` lies on several devices (sharded or replicated over a mesh): it
        then gets a segment of its own, with state shaped and placed like it."""
        return False

    def scalar_device(self, x: Any) -> Any:
        """Where a 0-d array kept beside ``x`` (a step count) lives."""
        return array_api_compat.device(x)

    def data(self, p: Any) -> Any:
        """The array behind a parameter (a Parameter's detached tensor on torch)."""
        return p

    def sharding(self, x: Any) -> Any:
        """How ``x`` is split across processes (a torch DTensor's mesh and placements), or
        None: a segment never mixes two shardings."""
        return None

    def whole_rows(self, x: Any) -> bool:
        """Whether each process holds whole rows (first-axis slices) of ``x`` (row-wise
        options, lazy_mode and grad_centralization, need them)."""
        return True

    def shard_all_reduce(self, params: list[Any]) -> Callable[[Any], Any] | None:
        """For parameters whose ``data`` are local shards of tensors split across
        processes: ``f(x, op="sum")``, the sum (or ``"max"``) over processes that turns
        per-shard sums into whole-tensor sums (None where every process holds whole
        tensors)."""
        return None

    def flat(self, x: Any) -> Any:
        """``x`` as a 1-D array for reading (a view where possible, else a copy)."""
        return self.namespace(x).reshape(x, (-1,))

    def flat_view(self, x: Any) -> Any:
        """A writable 1-D view of the contiguous array ``x`` (mutable backends only)."""
        return self.flat(x)

    def contiguous(self, x: Any) -> bool:
        """Whether ``x`` can be written through a flat view."""
        return True

    def write(self, dst: Any, src: Any) -> None:
        """Copy ``src`` into the 1-D view ``dst`` in place."""
        dst[...] = src

    def get_grad(self, p: Any) -> Any:
        raise TypeError(f"{self.name} arrays carry no gradient: pass grads to step()")

    def clear_grad(self, p: Any, set_to_none: bool) -> None:
        return None

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x).copy()

    def from_numpy(self, a: np.ndarray, like: Any) -> Any:
        xp = self.namespace(like)
        return xp.asarray(a, dtype=like.dtype, device=array_api_compat.device(like), copy=True)

    def as_real(self, x: Any) -> Any:
        """Complex ``x`` as real pairs: shape ``x.shape + (2,)``, ``[..., 0]`` the real and
        ``[..., 1]`` the imaginary parts. A view of ``x``'s memory where the library has
        one (writing it writes ``x``); here, with the standard alone, a new array."""
        xp = self.namespace(x)
        return xp.stack([xp.real(x), xp.imag(x)], axis=-1)

    def from_real(self, r: Any) -> Any:
        """The complex array whose real pairs (last axis) are ``r``: the inverse of
        :meth:`as_real` (here ``re + im * 1j``, exact for finite values)."""
        xp = self.namespace(r)
        dtype = xp.complex128 if r.dtype == xp.float64 else xp.complex64
        return xp.astype(r[..., 0], dtype) + xp.astype(r[..., 1], dtype) * 1j

    def no_grad(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def enable_grad(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def compile(self, fn: Callable, donate_argnums: tuple[int, ...] = ()) -> Callable | None:
        """A compiled version of the pure ``fn``, or None where eager execution is used."""
        return None

    def compile_in_place(self, fn: Callable) -> Callable | None:
        """A compiled version of ``fn``, which writes into its array arguments (None where
        the library cannot compile that)."""
        return None

    def scalar(self, value: Any, like: Any) -> Any:
        """A per-step scalar as a compiled function wants it (a 0-d array of ``like``'s
        dtype, so changing values never recompile)."""
        return value

    def bind(self, params: list[Any], previous: Any = None) -> Any:
        """The one flat buffer whose consecutive slices the parameters are: made so
        where the library can re-point a parameter's storage (torch), found where the
        arrays already are so (NumPy arrays carved from one buffer), else None.
        ``previous`` is the buffer they were bound to before (being re-bound)."""
        return None

    def shares_storage(self, p: Any) -> bool:
        """Whether parameter ``p``'s memory may be seen through another tensor (tied
        weights, a view kept elsewhere), where the library could re-point it (torch):
        such a parameter is updated where it lies, in a segment of its own."""
        return False

    def is_view_of(self, p: Any, flat: Any, offset: int) -> bool:
        """Whether parameter ``p`` still lives at ``flat[offset:]``."""
        return False

    def shared_flat(self, arrays: list[Any]) -> Any:
        """A flat view of the buffer the arrays lie in end to end, in order, or None."""
        return None

    def addresses(self, arrays: list[Any]) -> Any:
        """Where the arrays' data lie, comparable between steps (equal: nothing moved),
        or None where that cannot be told cheaply. Arrays whose memory never moves
        (``fixed_storage``) need no address: ``()``."""
        return () if self.fixed_storage else None

    def gather(self, arrays: list[Any], out: Any) -> Any:
        """The arrays flattened end to end into ``out`` (where the library can)."""
        xp = self.namespace(out)
        return xp.concat([xp.reshape(a, (-1,)) for a in arrays])

    def split(self, flat: Any, sizes: list[int]) -> list[Any]:
        """``flat`` cut into consecutive pieces of ``sizes`` (views where possible)."""
        out, at = [], 0
        for n in sizes:
            out.append(flat[at : at + n])
            at += n
        return out

    def point_grads(self, params: list[Any], grads: list[Any], flat: Any) -> None:
        """Make the parameters' gradients ``grads``, just copied into ``flat``, views of
        ``flat`` (where gradients live on the parameters), so that the next backward pass
        accumulates into ``flat`` directly."""
        return None

    def backward(self, loss: Any) -> None:
        raise TypeError(f"minimize(loss) needs autograd arrays; {self.name} arrays have none")


_MODULES = (
    # (array_api_compat predicate, adapter module); order matters: numpy last among named
    ("is_torch_array", "torch"),
    ("is_jax_array", "jax"),
    ("is_cupy_array", "cupy"),
    ("is_numpy_array", "numpy"),
)
_cache: dict[str, Adapter] = {}
#: the adapter module of each array type seen so far ("" for types that are not arrays):
#: the predicates above look only at the type, so one lookup per type is enough
_module_of_type: dict[type, str] = {}


def _load(module: str) -> Adapter:
    if module not in _cache:
        _cache[module] = importlib.import_module(f"uniopt.backends.{module}").ADAPTER
    return _cache[module]


def _module_for(x: Any) -> str:
    kind = type(x)
    module = _module_of_type.get(kind)
    if module is None:
        module = next((m for p, m in _MODULES if getattr(array_api_compat, p)(x)), "")
        if not module and hasattr(x, "__array_namespace__"):
            module = "generic"
        if module == "torch" and _is_dtensor(x):
            module = "torch_distributed"
        if not isinstance(x, _NOT_ARRAYS):
            _module_of_type[kind] = module
    return module


def _is_dtensor(x: Any) -> bool:
    """A torch DTensor (its module is loaded wherever one exists; torch is not imported)."""
    tensor = sys.modules.get("torch.distributed.tensor")
    return tensor is not None and isinstance(x, tensor.DTensor)


def adapter_for(x: Any) -> Adapter:
    """The adapter for array ``x``; raises TypeError for things that are not arrays."""
    module = _module_for(x)
    if not module:
        raise TypeError(
            f"expected an array (numpy, torch, jax, cupy or array-API), got {type(x)!r}"
        )
    return _load(module)


_NOT_ARRAYS = (list, tuple, dict, str, bytes, int, float, complex, type(None))


def is_array(x: Any) -> bool:
    """True for any array uniopt can optimize (no import of any framework)."""
    module = _module_of_type.get(type(x))  # a type seen before: one lookup
    if module is not None:
        return bool(module)
    if isinstance(x, _NOT_ARRAYS):  # containers first: also keeps torch.compile tracing
        return False
    return bool(_module_for(x))
