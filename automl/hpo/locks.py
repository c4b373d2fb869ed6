"""Advisory file locks (``flock``) between the processes of one machine.

The kernel drops a process's locks when it dies, however it dies, so a lock that can be taken
belongs to nobody alive: nothing to clean up, no pid to be reused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from automl.settings import local_file

_slots: dict[str, tuple[int, int]] = {}  # key -> (slot, fd of its lock, held until this process exits)


def store_key(url: str) -> str:
    """What identifies a storage or tracking store: a local file by its resolved path, so processes that
    name one file differently (``journal:automl.journal``, ``/abs/automl.journal``, through a symlink,
    from another folder) share its locks; a server by its URL."""
    file = local_file(url)
    return f"file:{file.resolve()}" if file is not None else url


def lock_path(store: str, *key: str) -> Path:
    """A lock file for the store at URL ``store`` and ``key`` (e.g. a study name) in this machine's temp
    folder."""
    folder = Path(tempfile.gettempdir()) / "automl-locks"
    folder.mkdir(exist_ok=True)
    return folder / (hashlib.sha256("\0".join((store_key(store), *key)).encode()).hexdigest()[:24] + ".lock")


def try_lock(path: Path) -> int | None:
    """The fd holding an exclusive lock on ``path`` (created if missing), or None when another holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on ``path``."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def process_slot(store: str, *key: str) -> int:
    """This process's number among the live processes sharing the store at URL ``store`` and ``key``:
    the smallest one free when it first asked, kept until it exits. A process alone gets 0, so its
    runs stay reproducible."""
    name = "\0".join((store_key(store), *key))
    if name not in _slots:
        slot = 0
        while (fd := try_lock(lock_path(store, *key, str(slot)))) is None:
            slot += 1
        _slots[name] = (slot, fd)
    return _slots[name][0]
