"""PyTorch DTensor adapter (FSDP2 ``fully_shard``, ``distribute_tensor``): the engine
runs on each process's **local shard**, so optimizer state is allocated shard by shard
(sharded exactly like the parameter) and nothing is gathered.

* ``data(p)`` is the local shard (``p._local_tensor``, detached); writes go into it in
  place, as ``torch.optim`` does through DTensor's in-place ops;
* ``sharding(p)`` is ``(device_mesh, placements)``: parameters with different meshes or
  placements never share a segment;
* ``shard_all_reduce(params)`` sums per-tensor partial sums over the process groups of
  the mesh dimensions that shard the tensors (``Shard`` placements); replicated
  dimensions need no communication. Per-tensor norms (LAMB, LARS, clip-by-norm) and
  the global norm of ``ClipGradByGlobalNorm`` use it;
* a gradient whose placements hold pending reductions (``Partial``) is redistributed
  to the parameter's placements (the reduction torch.optim would do implicitly); any
  other difference is an error, never a silent gather.

Checkpoints gather and slice through :meth:`full_from_local` and
:meth:`local_from_full` (see :mod:`uniopt.distributed`). In torch.optim's layout
(``opt.state``, ``opt.state_dict()``, what ``torch.distributed.checkpoint`` saves and
reshards) a DTensor parameter's state tensors are DTensors laid out like it
(:meth:`sharded`), and ``load_state_dict`` takes back any DTensor of the parameter's
global shape on its mesh (:meth:`local_like`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor
from uniopt.backends.torch import TorchAdapter


def _local(x: Any) -> Any:
    return x._local_tensor if isinstance(x, DTensor) else x


class DTensorAdapter(TorchAdapter):
    name = "dtensor"

    def namespace(self, x: Any) -> Any:
        return super().namespace(_local(x))

    def device(self, x: Any) -> str:
        return str(_local(x).device)

    def data(self, p: Any) -> Any:
        return _local(p).detach()

    def flat(self, x: Any) -> Any:
        return _local(x).detach().reshape(-1)

    def flat_view(self, x: Any) -> Any:
        return _local(x).detach().view(-1)

    def contiguous(self, x: Any) -> bool:
        return _local(x).is_contiguous()

    def to_numpy(self, x: Any) -> np.ndarray:
        return super().to_numpy(_local(x))

    def sharding(self, x: Any) -> Any:
        if not isinstance(x, DTensor):
            return None
        return (x.device_mesh, tuple(x.placements))

    def whole_rows(self, x: Any) -> bool:
        return not any(p.is_shard() and p.dim % max(x.ndim, 1) != 0 for p in x.placements)

    def shard_all_reduce(self, params: list[Any]) -> Callable[[Any], Any] | None:
        mesh, placements = self.sharding(params[0])
        if any(p.is_partial() for p in placements):
            raise ValueError(
                f"parameters with Partial placements {placements} hold no definite values; "
                "redistribute them to Shard/Replicate first"
            )
        groups = [mesh.get_group(d) for d, p in enumerate(placements) if p.is_shard()]
        if not groups:
            return None

        def all_reduce(x: Any, op: str = "sum") -> Any:
            out = x.clone()
            for group in groups:
                dist.all_reduce(out, op=_OPS[op], group=group)
            return out

        return all_reduce

    def get_grad(self, p: Any) -> Any:
        g = p.grad
        if (
            isinstance(g, DTensor)
            and g.device_mesh == p.device_mesh
            and tuple(g.placements) != tuple(p.placements)
            and any(x.is_partial() for x in g.placements)
        ):
            g = g.redistribute(p.device_mesh, p.placements)
        return g

    def bind(self, params: list[Any], previous: Any = None) -> Any:
        return None  # FSDP2 owns the shards' storage: they are written where they are

    def shared_flat(self, arrays: list[Any]) -> Any:
        return None

    def point_grads(self, params: list[Any], grads: list[Any], flat: Any) -> None:
        return None

    # ---- torch.optim's layout (DCP): state tensors laid out like their parameter -----

    def sharded(self, local: Any, p: Any) -> Any:
        """``local`` (shaped like ``p``'s local shard) as a DTensor laid out like ``p``,
        over ``local``'s own memory (no copy, no communication); ``local`` itself when
        ``p`` is whole on every process (a plain tensor)."""
        if not isinstance(p, DTensor):
            return local
        return DTensor.from_local(
            local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
        )

    def local_like(self, x: Any, p: Any, where: str) -> Any:
        """The piece of the state tensor ``x`` that belongs with parameter ``p`` on this
        process: a DTensor ``x`` laid out like ``p`` gives its local shard (laid out
        otherwise on the same mesh, it is redistributed first, collectively); for a
        plain ``p``, its whole value. A plain ``x`` of ``p``'s global shape is cut as
        ``p`` is cut (no communication); any other plain ``x`` is taken as this
        process's shard already. ValueError (naming ``where``) when ``x`` cannot be
        ``p``'s: another global shape, another mesh."""
        if isinstance(x, DTensor):
            if tuple(x.shape) != tuple(p.shape):
                raise ValueError(
                    f"{where} has global shape {list(x.shape)}, the parameter {list(p.shape)}"
                )
            if not isinstance(p, DTensor):
                return x.full_tensor()
            if x.device_mesh != p.device_mesh:
                raise ValueError(
                    f"{where} lies on {x.device_mesh}, the parameter on {p.device_mesh}"
                )
            if tuple(x.placements) != tuple(p.placements):
                x = x.redistribute(p.device_mesh, p.placements)
            return x.to_local()
        if isinstance(p, DTensor) and tuple(x.shape) == tuple(p.shape) != tuple(
            p._local_tensor.shape
        ):
            return distribute_tensor(
                x.detach(), p.device_mesh, p.placements, src_data_rank=None
            ).to_local()
        return x

    # ---- checkpoints (collective: every process calls them in the same order) -----

    def full_from_local(self, local: np.ndarray, p: Any) -> np.ndarray:
        """The whole tensor of which ``local`` (host array, shaped like ``p``'s local
        shard) is this process's shard, laid out like the DTensor ``p``."""
        mesh, placements = self.sharding(p)
        if not any(x.is_shard() for x in placements):
            return local  # replicated: whole already
        like = _local(p)
        t = self.from_numpy(local, torch.empty(0, dtype=_torch_dtype(local), device=like.device))
        whole = DTensor.from_local(
            t, mesh, placements, run_check=False, shape=p.shape, stride=p.stride()
        )
        return super().to_numpy(whole.full_tensor())

    def local_from_full(self, full: np.ndarray, p: Any) -> np.ndarray:
        """This process's shard of the whole host array ``full`` (shaped like ``p``),
        cut as ``p`` is cut; no communication."""
        mesh, placements = self.sharding(p)
        if not any(x.is_shard() for x in placements):
            return full
        t = self.from_numpy(full, torch.empty(0, dtype=_torch_dtype(full)))
        return super().to_numpy(
            distribute_tensor(t, mesh, placements, src_data_rank=None).to_local()
        )

    def process_rank(self) -> int:
        return dist.get_rank() if dist.is_initialized() else 0

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


def _torch_dtype(a: np.ndarray) -> Any:
    return getattr(torch, a.dtype.name)


ADAPTER = DTensorAdapter()
