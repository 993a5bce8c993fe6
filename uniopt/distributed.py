"""Checkpoints of optimizers whose parameters are split across processes (torch FSDP2
``fully_shard`` and DTensor parameters).

A sharded optimizer keeps its state shard by shard: ``opt.state_dict()`` then holds
each process's **local** shards, which only load back into the same sharding. The
portable form is the **gathered** state dict, the very format a single process writes::

    uniopt.distributed.save(opt, "opt.safetensors")        # every rank calls it
    uniopt.distributed.load("opt.safetensors", into=opt)   # every rank, any sharding
    single.load_state_dict(uniopt.load("opt.safetensors")) # or one process, unsharded

**Format (the choice).** One ordinary uniopt state file (see :mod:`uniopt.io`): every
state array has its parameter's global shape, keyed by parameter name. ``save``
all-gathers each sharded state array (one parameter at a time) and rank 0 writes the
file; ``load`` has every process read the file and keep its own slice, cut as its
parameter is cut (``distribute_tensor(..., src_data_rank=None)``: no communication).
So a checkpoint from N processes loads into M processes, into a single process, or
into another framework through :mod:`uniopt.port`, and ``python -m uniopt inspect``
reads it. The cost: rank 0 holds the whole optimizer state in host memory while it
writes, and each process reads the whole file (on a file system all of them see).

Replicated parameters (``Replicate`` placements, plain tensors) are whole on every
process and are saved as they are. Every process must call these functions, in the
same order (they are collective).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from uniopt import io
from uniopt._adapter import adapter_for

__all__ = ["full_state_dict", "load", "load_full_state_dict", "save"]


def _params(opt: Any) -> dict[str, Any]:
    return {n: p for g in opt.param_groups for n, p in zip(g["param_names"], g["params"])}


def _sharded(p: Any) -> Any:
    """The adapter of ``p`` when ``p`` is laid out across processes (a DTensor), else
    None (whole on every process)."""
    adapter = adapter_for(p)
    return adapter if adapter.sharding(p) is not None else None


def _map_arrays(sd: Mapping[str, Any], fn: Callable[[str, str, np.ndarray], Any]) -> dict:
    """``sd`` with every per-parameter array ``a`` of parameter ``name`` replaced by
    ``fn(name, slot, a)``, in the state dict's order (so on every process alike)."""
    out = dict(sd)
    if sd.get("algorithm") == "lookahead" and "inner" in sd:
        out["slow"] = {n: fn(n, "slow", a) for n, a in (sd.get("slow") or {}).items()}
        out["inner"] = _map_arrays(sd["inner"], fn)
        return out
    out["state"] = {
        name: {k: fn(name, k, v) if isinstance(v, np.ndarray) else v for k, v in entry.items()}
        if isinstance(entry, Mapping)
        else entry
        for name, entry in sd.get("state", {}).items()
    }
    custom = sd.get("custom_state")
    if isinstance(custom, Mapping):
        out["custom_state"] = {
            prefix: {n: fn(n, prefix, a) for n, a in arrays.items()}
            for prefix, arrays in custom.items()
        }
    return out


def full_state_dict(opt: Any) -> dict[str, Any]:
    """``opt.state_dict()`` with every sharded state array gathered to its global shape
    (on every process): the same dict a single process running the unsharded model
    would return. Collective."""
    params = _params(opt)

    def gather(name: str, slot: str, local: np.ndarray) -> np.ndarray:
        adapter = _sharded(params[name])
        return local if adapter is None else adapter.full_from_local(local, params[name])

    return _map_arrays(opt.portable_state_dict(), gather)


def load_full_state_dict(opt: Any, state_dict: Mapping[str, Any]) -> None:
    """Load a gathered (or single-process) state dict into ``opt``, whose parameters
    may be sharded in any way: each process keeps its slices. Everything is checked
    first; on any mismatch it raises and ``opt`` is unchanged. No communication."""
    params = _params(opt)
    problems: list[str] = []

    def check(name: str, slot: str, full: np.ndarray) -> np.ndarray:
        p = params.get(name)
        if p is not None and _sharded(p) is not None and tuple(full.shape) != tuple(p.shape):
            problems.append(
                f"{name!r}: state {slot!r} has shape {list(full.shape)}, the parameter's "
                f"global shape is {list(p.shape)}"
            )
        return full

    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict, got {type(state_dict).__name__}")
    _map_arrays(state_dict, check)
    if problems:
        raise io.StateMismatchError(f"{type(opt).__name__}.load_state_dict", problems)

    def cut(name: str, slot: str, full: np.ndarray) -> np.ndarray:
        p = params.get(name)
        adapter = None if p is None else _sharded(p)
        return full if adapter is None else adapter.local_from_full(full, p)

    opt.load_state_dict(_map_arrays(state_dict, cut))


def _process(opt: Any) -> Any:
    """An adapter that knows the process group (None in a single process)."""
    for p in _params(opt).values():
        adapter = adapter_for(p)
        if hasattr(adapter, "process_rank"):
            return adapter
    return None


def save(opt: Any, path: io.PathLike) -> None:
    """Gather ``opt``'s state (see :func:`full_state_dict`) and write it to ``path`` as
    one ordinary uniopt state file, from rank 0; returns when the file is complete on
    every process. Collective."""
    sd = full_state_dict(opt)
    process = _process(opt)
    if process is None or process.process_rank() == 0:
        io.save(sd, path)
    if process is not None:
        process.barrier()


def load(path: io.PathLike, into: Any) -> None:
    """Read a state file written by :func:`save` (or by ``uniopt.save`` in a single
    process) and load it into ``into``, sharded in any way (see
    :func:`load_full_state_dict`)."""
    load_full_state_dict(into, io.load(path))
