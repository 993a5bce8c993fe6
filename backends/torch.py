"""PyTorch adapter: gradients from ``.grad``, parameters written in place under no_grad.

Writing through ``param.detach()`` views keeps every ``nn.Parameter`` object (and so
every reference a model holds) and bumps its version counter, as torch.optim does.
"""

from __future__ import annotations

import contextlib
import itertools
import types
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from uniopt._adapter import Adapter
from uniopt.engine.plan import ReplayOps


class TorchReplay(ReplayOps):
    """Recorded plans replayed with torch's out= operations, each computing what the
    operator the rule used computes on tensors (``s - t`` is ``-t + s``; ``s / t`` is
    ``t.reciprocal() * s``, as ``Tensor.__rtruediv__`` does)."""

    DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
    TORCH = {np.dtype(v): k for k, v in DTYPES.items()} | {np.dtype(bool): torch.bool}

    def numpy_dtype(self, dtype: Any) -> Any:
        return np.dtype(self.DTYPES[dtype]) if dtype in self.DTYPES else None

    def bind(self, kind: str, fn: Any, scalar_first: bool) -> Callable:
        if kind == "where":
            return torch.where
        if kind != "ufunc":
            return super().bind(kind, fn, scalar_first)
        if not scalar_first:
            return _OPS[fn]
        return {np.subtract: _scalar_minus, np.divide: _scalar_over}.get(
            fn,
            partial(_swapped, _OPS[fn]),  # add, multiply: commutative
        )

    def fill(self, out: Any, value: Any) -> None:
        out.fill_(value)

    def copy(self, out: Any, x: Any, cast: bool) -> None:
        out.copy_(x)

    def empty(self, size: int, dtype: Any, like: Any) -> Any:
        return torch.empty(size, dtype=self.TORCH[np.dtype(dtype)], device=like.device)


def _shares_storage(p: Any) -> bool:
    """Whether anything but ``p`` itself may see ``p``'s memory: a view of a larger
    storage, or a storage another tensor also holds (``nn.Parameter(q.data)``, a
    ``detach()`` kept by the user). Re-pointing such a parameter at a flat buffer would
    untie it from the others, so it keeps its own storage."""
    storage = p.untyped_storage()
    if p.storage_offset() != 0 or storage.nbytes() != p.numel() * p.element_size():
        return True
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:  # pragma: no cover - every torch uniopt supports has it
        return True
    # held by ``p`` and by the Python ``storage`` object made just above
    return use_count(storage._cdata) > 2


def _scalar_minus(s: float, t: Any, out: Any) -> None:
    torch.neg(t, out=out)
    torch.add(out, s, out=out)


def _scalar_over(s: float, t: Any, out: Any) -> None:
    torch.reciprocal(t, out=out)
    torch.mul(out, s, out=out)


def _swapped(op: Callable, s: float, t: Any, out: Any) -> None:
    op(t, s, out=out)


_COMPILED = itertools.count()  #: numbers the compiled steps' code objects
_OPS = {
    np.add: torch.add,
    np.subtract: torch.sub,
    np.multiply: torch.mul,
    np.divide: torch.div,
    np.negative: torch.neg,
    np.sqrt: torch.sqrt,
    np.absolute: torch.abs,
    np.sign: torch.sign,
    np.exp: torch.exp,
    np.log: torch.log,
    np.square: torch.square,
    np.maximum: torch.maximum,
    np.minimum: torch.minimum,
    np.less: torch.lt,
    np.less_equal: torch.le,
    np.greater: torch.gt,
    np.greater_equal: torch.ge,
    np.bitwise_and: torch.bitwise_and,
    np.bitwise_or: torch.bitwise_or,
    np.invert: torch.bitwise_not,
}


class TorchAdapter(Adapter):
    name = "torch"
    grads_on_params = True
    replay = TorchReplay()
    chunk_elements = 1 << 17  # measured best with replayed plans (2 cores)

    def device(self, x: Any) -> str:
        return str(x.device)

    def same_device(self, a: Any, b: Any) -> bool:
        return a.device == b.device

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).removeprefix("torch.")

    def data(self, p: Any) -> Any:
        return p.detach()

    def flat(self, x: Any) -> Any:
        return x.detach().reshape(-1)

    def flat_view(self, x: Any) -> Any:
        return x.detach().view(-1)

    def contiguous(self, x: Any) -> bool:
        return x.is_contiguous()

    def write(self, dst: Any, src: Any) -> None:
        dst.copy_(src)

    def get_grad(self, p: Any) -> Any:
        return p.grad

    def clear_grad(self, p: Any, set_to_none: bool) -> None:
        if p.grad is None:
            return
        if set_to_none:
            p.grad = None
            return
        if p.grad.grad_fn is not None:
            p.grad.detach_()
        else:
            p.grad.requires_grad_(False)
        p.grad.zero_()

    def to_numpy(self, x: Any) -> np.ndarray:
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            import ml_dtypes

            return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        return x.numpy().copy()

    def from_numpy(self, a: np.ndarray, like: Any) -> Any:
        if a.dtype.name == "bfloat16":
            t = torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
        else:
            # (np.ascontiguousarray makes a 0-d array 1-d: its shape is restored)
            t = torch.from_numpy(np.ascontiguousarray(a).reshape(a.shape).copy())
        return t.to(device=like.device, dtype=like.dtype)

    def as_real(self, x: Any) -> Any:
        """``torch.view_as_real``: a view, as torch.optim's optimizers take."""
        return torch.view_as_real(x.resolve_conj())

    def from_real(self, r: Any) -> Any:
        return torch.view_as_complex(r.contiguous())

    def compile_in_place(self, fn: Any) -> Any:
        """``fn`` compiled on its own: torch caches compilations per code object and caps
        recompilations of one (8), and every segment's step is the same closure's code,
        so each gets a copy of that code object, counted alone."""
        code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{next(_COMPILED)}")
        own = types.FunctionType(
            code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__
        )
        return torch.compile(own, fullgraph=True, dynamic=False)

    def scalar(self, value: Any, like: Any) -> Any:
        # float32 for half-precision parameters: a 0-d tensor does not promote them (the
        # result stays half), and beta2 = 0.999 keeps its value (float16: 0.99902,
        # bfloat16: 1.0), as a Python float does in eager arithmetic
        dtype = torch.float32 if like.dtype in (torch.float16, torch.bfloat16) else like.dtype
        if isinstance(value, torch.Tensor):
            return value.to(device=like.device, dtype=dtype)
        return torch.tensor(value, dtype=dtype, device=like.device)

    def bind(self, params: list[Any], previous: Any = None) -> Any:
        if any(type(p.data) is not torch.Tensor for p in params):  # DTensor, subclasses
            return None
        ours = None if previous is None else previous.untyped_storage().data_ptr()
        if any(  # tied parameters, views kept elsewhere: left where they are
            p.untyped_storage().data_ptr() != ours and _shares_storage(p) for p in params
        ):
            return None
        data = [p.detach() for p in params]
        flat = torch.empty(sum(d.numel() for d in data), dtype=data[0].dtype, device=data[0].device)
        offset = 0
        with torch.no_grad():
            for p, d in zip(params, data):
                n = d.numel()
                flat[offset : offset + n].copy_(d.reshape(-1))
                p.data = flat[offset : offset + n].view(d.shape)
                offset += n
        return flat

    def shares_storage(self, p: Any) -> bool:
        return type(p.data) is torch.Tensor and _shares_storage(p)

    def is_view_of(self, p: Any, flat: Any, offset: int) -> bool:
        return p.data_ptr() == flat.data_ptr() + offset * flat.element_size() and (
            p.is_contiguous()
        )

    def addresses(self, arrays: list[Any]) -> Any:
        """Data pointers, with ``None`` for a tensor that is not contiguous."""
        return tuple(a.data_ptr() if a.is_contiguous() else None for a in arrays)

    def shared_flat(self, arrays: list[Any]) -> Any:
        first = arrays[0]
        storage, at = first.untyped_storage().data_ptr(), first.data_ptr()
        for a in arrays:
            if (
                a.dtype != first.dtype
                or a.device != first.device
                or not a.is_contiguous()
                or a.data_ptr() != at
                or a.untyped_storage().data_ptr() != storage
            ):
                return None
            at += a.numel() * a.element_size()
        n = sum(a.numel() for a in arrays)
        return torch.as_strided(first.detach(), (n,), (1,), first.storage_offset())

    def gather(self, arrays: list[Any], out: Any) -> Any:
        storage = out.untyped_storage().data_ptr()
        if all(a.untyped_storage().data_ptr() != storage for a in arrays):
            return torch.cat([a.reshape(-1) for a in arrays], out=out)
        offset = 0  # some are views of ``out`` already (re-pointed gradients)
        for a in arrays:
            n = a.numel()
            if a.data_ptr() != out[offset:].data_ptr():
                out[offset : offset + n].copy_(a.reshape(-1))
            offset += n
        return out

    def point_grads(self, params: list[Any], grads: list[Any], flat: Any) -> None:
        """Only gradients autograd made (read from ``.grad``, not views of someone
        else's buffer such as DDP's buckets) are re-pointed."""
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            if p.grad is g and g._base is None and type(g) is torch.Tensor:
                p.grad = flat[offset : offset + n].view(g.shape)
            offset += n

    def no_grad(self) -> contextlib.AbstractContextManager:
        return torch.no_grad()

    def enable_grad(self) -> contextlib.AbstractContextManager:
        return torch.enable_grad()

    def backward(self, loss: Any) -> None:
        loss.backward()


ADAPTER = TorchAdapter()
