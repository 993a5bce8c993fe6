"""The ``inspect`` and ``convert`` commands: look into and convert optimizer state files.

    python -m uniopt inspect ckpt.safetensors
    python -m uniopt convert torch_optim.pt opt.safetensors [--algorithm adamw]
        [--names fc.weight,fc.bias] [--key optimizer] [--step N]
    python -m uniopt convert opt.safetensors torch_optim.pt      # and back

``inspect`` prints what a uniopt state file holds (:func:`uniopt.save`): algorithm,
flavor, step count, param groups with their hyperparameters, and every parameter's
name, shape, dtype, step and state slots. It reads only the file's header, so it is
fast on large checkpoints, and never reads anything but JSON and array sizes.

``convert`` rewrites a ``torch.optim`` ``state_dict`` saved with ``torch.save`` (read
back with ``torch.load(..., weights_only=True)``, which unpickles no code) as a uniopt
file. torch's state dicts do not name their optimizer: give ``--algorithm`` or let it
be inferred from the keys (Adam and AdamW are told apart by torch's
``decoupled_weight_decay`` group key). Parameter names come from ``--names`` (comma
separated, in torch's order), else from the groups' ``param_names``, else positions.
``--key optimizer`` picks the optimizer entry of a checkpoint dict. Given a uniopt file
as input, ``convert`` writes the torch ``state_dict`` instead
(:func:`uniopt.port.to_torch_state_dict`). Either output is written atomically, as
:func:`uniopt.save` writes (:func:`uniopt.io.atomic_write`).

Bad paths (a missing or unreadable input, an output that is a directory or in a missing
directory) and bad inputs (neither a uniopt state file nor a ``torch.save`` file, a
corrupted file, no optimizer state in it) are one-line errors with exit code 2, as
argparse's own; no traceback.

:func:`register` adds both subcommands to an ``argparse`` subparsers object.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from uniopt import io

OPTIMIZER_FORMAT = io.OPTIMIZER_FORMAT


def register(subparsers: Any) -> None:
    """Add the ``inspect`` and ``convert`` subcommands to ``subparsers``."""
    inspect = subparsers.add_parser(
        "inspect",
        help="show what a uniopt state file holds",
        description="Print the contents of a uniopt state file: algorithm, flavor, step, "
        "param groups and every parameter's name, shape, dtype, step and state.",
    )
    inspect.add_argument("file", metavar="FILE", help="a file written by uniopt.save")
    inspect.set_defaults(func=run_inspect)

    convert = subparsers.add_parser(
        "convert",
        help="convert a torch.optim state_dict (torch.save) to a uniopt file, or back",
        description="Rewrite a torch.optim state_dict saved with torch.save as a uniopt "
        "state file (or a uniopt state file as a torch state_dict).",
    )
    convert.add_argument("input", metavar="IN", help="torch.save file, or a uniopt file")
    convert.add_argument("output", metavar="OUT", help="file to write")
    convert.add_argument(
        "--algorithm",
        help="uniopt algorithm of the torch state (sgd, adam, adamw, adagrad, rmsprop); "
        "inferred from the state when omitted",
    )
    convert.add_argument("--names", help="parameter names in torch's order, comma separated")
    convert.add_argument("--key", help="the entry of a checkpoint dict holding the optimizer")
    convert.add_argument("--step", type=int, help="the step count, where torch keeps none (SGD)")
    convert.set_defaults(func=run_convert)


def _fail(command: str, message: str) -> None:
    print(f"uniopt {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# ---- inspect -------------------------------------------------------------------------


def run_inspect(args: argparse.Namespace) -> int:
    """Handle ``inspect FILE``."""
    try:
        print(describe(args.file))
    except (io.StateFileError, OSError) as error:
        _fail("inspect", str(error))
    return 0


def describe(path: str) -> str:
    """A human-readable description of a uniopt state file (header only)."""
    info, content, header = io.read_info(path)
    size = os.path.getsize(path)
    lines = [
        f"{path}: uniopt state file (format {header.metadata.get('uniopt.version')}), "
        f"{info.get('kind', '?')}, {len(header.entries)} arrays, {_size(size)}"
    ]
    parts = {_hashable(p.get("path", [])): p for p in info.get("parts", [])}
    _describe(content, (), parts, lines, "")
    return "\n".join(lines)


def _hashable(path: Any) -> Any:
    """A part's path (JSON: lists for tuples) as the tuple of keys the content has."""
    return tuple(_hashable(k) for k in path) if isinstance(path, list) else path


def _describe(node: Any, path: tuple, parts: Mapping, lines: list[str], indent: str) -> None:
    part = parts.get(path, {})
    where = f" [{'/'.join(map(str, path))}]" if path else ""
    if isinstance(node, Mapping) and node.get("format") == OPTIMIZER_FORMAT:
        _optimizer(node, path, part, lines, indent, where)
        return
    if part.get("kind") == "scheduler" or (part.get("kind") == "object" and part.get("class")):
        lines.append(f"{indent}{part.get('kind')}{where}: {part.get('class')}")
        if isinstance(node, Mapping):
            shown = {k: v for k, v in node.items() if not str(k).startswith("_")}
            lines.append(f"{indent}  {_kv(shown)}")
        return
    if isinstance(node, Mapping) and not path:
        plain = {}
        for k, v in node.items():
            if (*path, k) in parts or (isinstance(v, Mapping) and _has_optimizer(v)):
                _describe(v, (*path, k), parts, lines, indent)
            else:
                plain[k] = v
        if plain:
            lines.append(f"{indent}other entries: {_kv(plain)}")
        return
    lines.append(f"{indent}value{where}: {_short(node)}")


def _has_optimizer(node: Any) -> bool:
    return isinstance(node, Mapping) and node.get("format") == OPTIMIZER_FORMAT


def _optimizer(
    sd: Mapping, path: tuple, part: Mapping, lines: list[str], indent: str, where: str
) -> None:
    cls = part.get("class") or "optimizer state"
    lines.append(
        f"{indent}optimizer{where}: {cls}, algorithm {sd.get('algorithm')}, "
        f"flavor {sd.get('flavor')}, step {sd.get('step_count')}"
    )
    # the file's own data: anything may be malformed, nothing may raise
    table = {
        row[0]: row
        for row in _list(part.get("parameters"))
        if isinstance(row, list) and len(row) >= 3 and isinstance(row[0], str)
    }
    state = sd.get("state") if isinstance(sd.get("state"), Mapping) else {}
    for i, group in enumerate(_list(sd.get("param_groups"))):
        if not isinstance(group, Mapping):
            continue
        names = _list(group.get("params"))
        hp = {k: v for k, v in group.items() if k != "params"}
        lines.append(f"{indent}  group {i} ({len(names)} parameters): {_kv(hp)}")
        rows = [("name", "shape", "dtype", "step", "state")]
        for name in names:
            entry = state.get(name) if isinstance(name, str) else None
            entry = entry if isinstance(entry, Mapping) else None
            slots = {k: v for k, v in (entry or {}).items() if k != "step"}
            shape, dtype = "?", "?"
            if isinstance(name, str) and name in table:
                shape, dtype = str(table[name][1]), str(table[name][2])
            elif slots:
                first = next(iter(slots.values()))
                if isinstance(first, io.TensorEntry):
                    shape, dtype = str(list(first.shape)), first.dtype
            step = str(entry.get("step")) if isinstance(entry, Mapping) else "0"
            rows.append((str(name), shape, dtype, step, ", ".join(map(str, slots)) or "-"))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        for r in rows:
            cells = [r[c].ljust(widths[c]) for c in range(4)]
            lines.append(f"{indent}    " + "  ".join([*cells, r[4]]).rstrip())
    extra = {
        k: v
        for k, v in sd.items()
        if k not in ("format", "version", "algorithm", "flavor", "step_count", "state")
        and not (k == "param_groups" and isinstance(v, list))
    }
    for k, v in extra.items():
        if isinstance(v, Mapping) and v.get("format") == OPTIMIZER_FORMAT:
            _describe(v, (*path, k), {}, lines, indent + "  ")
        else:
            lines.append(f"{indent}  {k}: {_short(v)}")


def _list(x: Any) -> list:
    """``x`` if it is a list, else an empty one (malformed entries are shown elsewhere)."""
    return x if isinstance(x, list) else []


def _short(v: Any, depth: int = 0) -> str:
    if isinstance(v, io.TensorEntry):
        return f"{v.dtype}{list(v.shape)}"
    if isinstance(v, Mapping):
        if depth > 1:
            return "{...}"
        items = list(v.items())
        body = ", ".join(f"{k}: {_short(x, depth + 1)}" for k, x in items[:8])
        return "{" + body + (", ..." if len(items) > 8 else "") + "}"
    if isinstance(v, (list, tuple)):
        body = ", ".join(_short(x, depth + 1) for x in v[:8])
        body += ", ..." if len(v) > 8 else ""
        return f"({body})" if isinstance(v, tuple) else f"[{body}]"
    return repr(v)


def _kv(d: Mapping) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in d.items())


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


# ---- convert -------------------------------------------------------------------------


def run_convert(args: argparse.Namespace) -> int:
    """Handle ``convert IN OUT``. Bad paths (a missing or unreadable input, an output
    that is a directory or cannot be written) and bad inputs are one-line errors with
    exit code 2, as argparse's own."""
    from uniopt import port

    head = _head(args.input)
    _check_output(args.output)
    if _looks_like_safetensors(head):
        return _to_torch(args)
    try:
        import torch
    except ImportError:
        _fail("convert", "reading torch.save files needs torch (pip install torch)")
    try:
        obj = torch.load(args.input, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad input
        lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
        why = next(
            (ln for ln in lines if ln.startswith("WeightsUnpickler")), lines[0] if lines else ""
        )
        if not head.startswith((b"PK\x03\x04", b"\x80")):  # neither zip nor pickle
            _fail(
                "convert",
                f"{args.input} is neither a uniopt state file nor a torch.save file "
                f"(torch.load(weights_only=True) says {type(error).__name__}: {why})",
            )
        _fail(
            "convert",
            f"cannot read {args.input} with torch.load(weights_only=True), which loads "
            f"tensors and plain data only: {why}",
        )
    if args.key is not None:
        obj = _entry(obj, args.key, args.input)
    if not isinstance(obj, Mapping) or "param_groups" not in obj:
        hint = ""
        if isinstance(obj, Mapping):
            found = [k for k, v in obj.items() if isinstance(v, Mapping) and "param_groups" in v]
            hint = f"; pass --key {found[0]}" if found else ""
        _fail("convert", f"{args.input} does not hold a torch.optim state_dict{hint}")
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    try:
        sd = port.from_torch_state_dict(obj, args.algorithm, names, step=args.step)
        io.save(sd, args.output)
    except (ValueError, TypeError) as error:
        _fail("convert", str(error))
    except OSError as error:
        _fail("convert", _cannot_write(args.output, error))
    n = sum(len(g["params"]) for g in sd["param_groups"])
    print(
        f"wrote {args.output}: {sd['algorithm']}, {n} parameters, "
        f"{len(sd['state'])} with state, step {sd['step_count']}"
    )
    return 0


def _optimizer_keys(obj: Any) -> list:
    """The keys of a checkpoint dict that hold uniopt optimizer states."""
    return [k for k, v in obj.items() if _has_optimizer(v)] if isinstance(obj, Mapping) else []


def _entry(obj: Any, key: str, path: str) -> Any:
    """``obj[key]`` of a checkpoint dict read from ``path``, or a clean error."""
    if not isinstance(obj, Mapping) or key not in obj:
        keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else []
        _fail("convert", f"{path} has no entry {key!r} (entries: {keys})")
    return obj[key]


def _head(path: str) -> bytes:
    """The first 9 bytes of the input file, or a clean error if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(9)
    except OSError as error:
        _fail("convert", f"cannot read {path}: {error.strerror or error}")
    return b""  # pragma: no cover - _fail exits


def _check_output(path: str) -> None:
    """Refuse an output path that cannot be a file, before any work is done."""
    if os.path.isdir(path):
        _fail("convert", f"the output {path} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        _fail("convert", f"cannot write {path}: no directory {parent}")


def _cannot_write(path: str, error: OSError) -> str:
    return f"cannot write {path}: {error.strerror or error}"


def _looks_like_safetensors(head: bytes) -> bool:
    """Whether a file starts like a safetensors file (a length, then ``{``): such files go
    to the uniopt reader, whose errors say what is wrong (not uniopt, corrupted, newer);
    anything else is a ``torch.save`` candidate (a zip archive or a pickle)."""
    return len(head) == 9 and head[8:9] == b"{"


def _to_torch(args: argparse.Namespace) -> int:
    from uniopt import port

    try:
        import torch
    except ImportError:
        _fail("convert", "writing torch state_dicts needs torch (pip install torch)")
    try:
        obj = io.load(args.input)
        if args.key is not None:
            obj = _entry(obj, args.key, args.input)
        if not _has_optimizer(obj):
            found = _optimizer_keys(obj)
            hint = f"; pass --key {found[0]}" if found else ""
            _fail("convert", f"{args.input} does not hold a uniopt optimizer state{hint}")
        tsd = port.to_torch_state_dict(obj)
    except (io.StateFileError, ValueError, TypeError, KeyError) as error:
        _fail("convert", str(error))
    try:
        io.atomic_write(args.output, lambda f: torch.save(tsd, f))
    except OSError as error:
        _fail("convert", _cannot_write(args.output, error))
    print(f"wrote {args.output}: torch.optim state_dict ({obj['algorithm']})")
    return 0
