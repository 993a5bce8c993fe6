"""Atomic file replacement for state files (used by :func:`uniopt.save` and
``python -m uniopt convert``).

:func:`atomic_write` writes to a temporary file beside the target, named
``.<target name>.<12 hex digits>.tmp``, fsyncs it and renames it over the target with
``os.replace``: a crash leaves either the old file or the new one, never a mix.

* **Stale temporaries.** A process killed during a write (``SIGKILL``, power loss)
  cannot remove its temporary. Every write first removes the temporaries of *its own
  target* (recognised by the name pattern above) that no running write holds: a writer
  holds an exclusive ``flock`` on its temporary until the rename, so an unlocked one was
  abandoned. Where ``flock`` is unavailable (Windows, some network file systems) a
  temporary is removed once it is older than :data:`STALE_AFTER_S`.
* **Symlinks.** A target that is a symbolic link is written *through*: the link's final
  target is replaced atomically and the link itself stays.
* **Mode.** A target that exists keeps its permission bits (the new file takes them
  before the rename); a new file gets the default ``0o666`` less the umask.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from typing import IO

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "STALE_AFTER_S",
    "PathLike",
    "atomic_write",
    "remove_stale_temporaries",
    "temporary_pattern",
]

#: a file path, as the state-file functions take it
PathLike = str | os.PathLike

#: age (seconds) after which a temporary whose lock cannot be tested counts as abandoned
STALE_AFTER_S = 3600.0
_TOKEN_BYTES = 6  # 12 hex digits


def temporary_pattern(target: PathLike) -> re.Pattern[str]:
    """The names of the temporaries :func:`atomic_write` creates for ``target`` (a file
    name or path; only its last component counts)."""
    base = os.path.basename(os.fspath(target))
    return re.compile(re.escape(f".{base}.") + rf"[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.tmp\Z")


def _resolve(path: PathLike) -> str:
    """The file a write to ``path`` replaces: ``path`` made absolute, with symbolic links
    followed (a dangling link resolves to the file it names, which the write creates)."""
    target = os.path.realpath(os.path.abspath(os.fspath(path)))
    if os.path.islink(target):  # realpath stops inside a loop of links
        raise OSError(errno.ELOOP, "too many levels of symbolic links", os.fspath(path))
    return target


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, and rename it over
    ``path``; on any failure the temporary file is removed and ``path`` is untouched.

    A symlinked ``path`` is written through (its final target is replaced); an existing
    target keeps its permission bits; stale temporaries of earlier writes of the same
    target that were killed are removed first (see the module docstring).

    Raises:
        IsADirectoryError: ``path`` is a directory.
        OSError: the directory is missing or not writable, the disk is full, ...
    """
    target = _resolve(path)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, "is a directory", os.fspath(path))
    directory, base = os.path.split(target)
    remove_stale_temporaries(target)
    mode = _mode_of(target)
    fd, tmp = _create_locked(directory, base)
    try:
        try:
            with os.fdopen(os.dup(fd), "wb") as f:
                write(f)
                f.flush()
                if mode is not None:
                    os.chmod(f.fileno() if os.chmod in os.supports_fd else tmp, mode)
                os.fsync(f.fileno())
            if os.name == "nt":  # pragma: no cover - an open file cannot be renamed there
                os.close(fd)
                fd = -1
            os.replace(tmp, target)  # the lock (on fd) is held until the rename is done
        finally:
            if fd >= 0:
                os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _mode_of(target: str) -> int | None:
    """The permission bits of an existing regular file ``target``, else ``None``."""
    try:
        st = os.stat(target)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _create_locked(directory: str, base: str) -> tuple[int, str]:
    """Create a new temporary for ``base`` in ``directory``, exclusively locked (where
    ``flock`` works). A concurrent cleaner can delete the file between its creation and
    the lock; then a fresh one is made."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(_TOKEN_BYTES)}.tmp")
        fd = os.open(tmp, flags, 0o666)
        if fcntl is None:  # pragma: no cover - Windows
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return fd, tmp  # no flock here: cleaners fall back to the file's age
        try:
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by a cleaner before we locked it: take another name


def remove_stale_temporaries(target: PathLike) -> list[str]:
    """Remove the abandoned temporaries of ``target`` (as :func:`atomic_write` names them)
    from its directory; return their paths. Temporaries that a running write holds, and
    anything that is not a regular file, are left alone; errors are ignored."""
    directory, _ = os.path.split(os.path.abspath(os.fspath(target)))
    pattern = temporary_pattern(target)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        if not pattern.match(name):
            continue
        candidate = os.path.join(directory, name)
        if _abandoned(candidate):
            with contextlib.suppress(OSError):
                os.unlink(candidate)
                removed.append(candidate)
    return removed


def _abandoned(path: str) -> bool:
    """Whether the temporary ``path`` belongs to no running write: its lock is free (or,
    where locks cannot be tested, it is older than :data:`STALE_AFTER_S`)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    old = time.time() - st.st_mtime > STALE_AFTER_S
    if fcntl is None:  # pragma: no cover - Windows
        return old
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return old
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a live writer holds it
    except OSError:
        return old  # flock unsupported on this file system
    finally:
        os.close(fd)
    return True


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (POSIX; best effort)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
