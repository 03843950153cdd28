"""The two file primitives every writer shares: an atomic write and an exclusive, non-blocking lock.

- :func:`atomic_write` (and :func:`atomic_write_text`): a temp file in the target's directory, then
  ``os.replace``. A reader, or a crash at any moment, sees the old file or the complete new one, never a
  half-written one; concurrent writers of the same path leave one complete file.
- :func:`lock_file`: an ``flock`` held for as long as the returned file stays open. The kernel drops it
  when the process ends, however it ends (SIGKILL, out of memory), so a stale file never blocks the next
  holder. Across nodes this needs a file system whose ``flock`` is cluster-wide: NFS (Linux maps it to
  NFS locks) or Lustre mounted with ``-o flock`` (with ``localflock`` it only guards within a node).

This module imports nothing of the project: the method library and the orchestration both use it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

#: What the lock file says when its holder has not written its name yet.
UNNAMED_HOLDER = "a process that has not written its name yet"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], *, durable: bool = True) -> Path:
    """Write a file atomically: ``write`` fills a temp file beside ``path``, which then replaces it.

    Args:
        path: the file to write (its directory is created).
        write: fills the open binary temp file (``torch.save(state, f)``, ``np.savez(f, ...)``).
        durable: fsync the temp file before the rename, so the new content survives a power cut
            (checkpoints); a cache that can be recomputed may skip it.

    Returns:
        ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""

    def write(handle: IO[bytes]) -> None:
        handle.write(text.encode())

    return atomic_write(path, write, durable=durable)


class LockHeldError(RuntimeError):
    """Another live process holds the lock.

    Attributes:
        path: the lock file.
        holder: what the holder wrote into it (:data:`UNNAMED_HOLDER` when nothing yet).
    """

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path = path
        self.holder = holder


def lock_file(path: str | Path, holder: str) -> IO[str]:
    """Take the exclusive lock of ``path`` for as long as the returned file stays open, or fail at once.

    Args:
        path: the lock file (it and its directory are created).
        holder: who takes the lock (host, pid, job), written into the file for whoever finds it taken.

    Returns:
        The open lock file; closing it releases the lock.

    Raises:
        LockHeldError: another process holds the lock; the file was not changed.
    """
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = os.fdopen(os.open(lock, os.O_RDWR | os.O_CREAT, 0o644), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        found = handle.read().strip() or UNNAMED_HOLDER
        handle.close()
        raise LockHeldError(lock, found) from None
    handle.truncate(0)
    handle.write(f"{holder}\n")
    handle.flush()
    return handle
