"""One SQLite connection per process and file, shared by every cache object that opens that file.

The embedding cache and the LLM call cache are opened by many short-lived objects (one per arm, round and
stage). Each used to open its own connection and keep it, so a long compare or multi-seed run gathered dozens
of file descriptors on the same two files. :func:`acquire` hands out one :class:`SharedConnection` per
resolved path and process instead; the objects share it (and its lock) and :meth:`SharedConnection.release`
closes it when the last user lets go. Whatever is still open is closed at interpreter exit.

Fork safety: SQLite forbids using a connection in a child process that was opened in the parent. After a fork
the child forgets the parent's connections and opens its own on first use. The parent's connection objects
are kept alive in the child but never used or closed there: closing them in the child could make SQLite
believe it is the last user of a WAL database (POSIX locks are not inherited) and checkpoint or delete the
parent's ``-wal`` and ``-shm`` files.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
from pathlib import Path

__all__ = ["SharedConnection", "acquire", "close_all", "open_connections"]

log = logging.getLogger(__name__)


class SharedConnection:
    """A WAL-mode SQLite connection shared by the objects of one process; use it under ``lock``."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.users = 0
        self.db = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.closed = False

    def release(self) -> None:
        """Give back one use; the connection closes when nobody in this process uses it any more."""
        with _state.lock:
            if self.closed or self.pid != os.getpid():
                return
            self.users -= 1
            if self.users > 0:
                return
            if _state.pool.get(self.path) is self:
                del _state.pool[self.path]
        self._close()

    def _close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.db.close()


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pool: dict[Path, SharedConnection] = {}
        self.inherited: list[SharedConnection] = []  # a parent's connections, kept alive but never used


_state = _State()


def acquire(path: str | Path, timeout: float = 30.0) -> SharedConnection:
    """The process's connection to ``path`` (opened, in WAL mode, on first use); call ``release`` when done.

    ``path`` is resolved, so two spellings of one file share a connection. The parent folder must exist.
    """
    key = Path(path).resolve()
    with _state.lock:
        conn = _state.pool.get(key)
        if conn is not None and (conn.closed or conn.pid != os.getpid()):
            if conn.pid != os.getpid():
                _state.inherited.append(conn)
            del _state.pool[key]
            conn = None
        if conn is None:
            conn = SharedConnection(key, timeout)
            _state.pool[key] = conn
        conn.users += 1
        return conn


def open_connections() -> dict[Path, int]:
    """Open connections of this process by file, with their number of users (for tests and diagnostics)."""
    with _state.lock:
        return {p: c.users for p, c in _state.pool.items() if c.pid == os.getpid() and not c.closed}


def close_all() -> None:
    """Close every connection this process opened (registered to run at exit)."""
    with _state.lock:
        conns = [c for c in _state.pool.values() if c.pid == os.getpid()]
        _state.pool.clear()
    for conn in conns:
        try:
            conn._close()
        except sqlite3.Error as exc:  # at exit there is nobody left to tell but the log
            log.debug("closing %s: %s", conn.path, exc)


def _after_fork_in_child() -> None:
    # the lock may have been held by another thread of the parent at fork time: replace it
    _state.lock = threading.Lock()
    _state.inherited.extend(_state.pool.values())
    _state.pool.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_all)
