"""One OS lock per work dir of a species and one per release: two builds never write the same files.

`fcntl.flock` locks belong to the open file: the kernel releases them when the process dies, even by
SIGKILL, so a killed build never leaves a lock behind. The holder writes its pid into the lock file so a
refused second build can say who holds it. Locks are taken without waiting: a second build refuses at once.
Readers (the shard stage reading another species' render parts) take shared locks, writers exclusive ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from core.errors import UserError


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "another process"


@contextlib.contextmanager
def hold(path: Path, what: str, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or shared) lock on `path` for the block; refuse in one line if it is taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{what} is in use by {_holder(path)} (lock {path}); wait for that build to finish"
            ) from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class LockSet:
    """The locks one command holds, so that nested steps (build -> shard) do not lock what is already held."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._held: dict[Path, bool] = {}  # path -> shared

    def __enter__(self) -> LockSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def take(self, path: Path, what: str, shared: bool = False) -> None:
        path = Path(path).resolve()
        if path in self._held and (shared or not self._held[path]):
            return
        if path in self._held:  # shared held, exclusive wanted: not needed by any command here
            raise AssertionError(f"lock upgrade of {path} is not supported")
        self._stack.enter_context(hold(path, what, shared))
        self._held[path] = shared
