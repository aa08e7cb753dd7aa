"""Connections to catalogue files: one in-memory DuckDB instance per process, each file ATTACHed to it
while some block of this process uses it and DETACHed (lock released) when the last one ends.

Why: starting a DuckDB database instance costs ~12 ms even for an empty file (its buffer manager,
thread pool, catalog), and closing one ~3 ms. ATTACH and DETACH of the same file on a live instance
cost ~1 ms and ~0.4 ms. A search opens the catalogue ~50 times, a dashboard page several times per
rerun. The file lock is the same: while a file is attached no other process can open it, and after
the DETACH (which checkpoints) any process can.

Rules the callers rely on:
- `connection(path)` yields a cursor whose default catalog is the file (unqualified table names
  resolve there); it closes with the block. Threads each get their own cursor.
- `hold(path)` keeps the file attached across a burst of `connection` blocks (no DETACH between).
- Read-only access (`read_only_connection`) uses a separate instance opened read-only, because a
  predicate a user wrote must not be able to write. It waits while this process has the file
  attached read-write (another thread's short block), and refuses when the calling thread itself
  holds it, which could never end. Likewise an ATTACH waits while a read-only instance of the file is
  open in this process: two instances writing and reading one file would corrupt it.
- Another process holding the file: every open retries with jittered back-off until `timeout_s`.
- A forked child forgets the parent's instance (its threads did not survive the fork).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator

import duckdb


class CatalogueBusy(RuntimeError):
    """The calling thread itself holds the file attached and asked for something that must wait for it."""


def is_lock_error(err: Exception) -> bool:
    text = str(err).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


_lock = threading.Lock()
_instance: duckdb.DuckDBPyConnection | None = None
_instance_pid: int | None = None
_attached: dict[str, tuple[str, int]] = {}   # path -> (catalog alias, users in this process)
_readers: dict[str, int] = {}                # path -> read-only instances open in this process
_mine = threading.local()                    # per thread: path -> attaches this thread holds
_aliases = 0


_inherited: list = []  # a forked child keeps the parent's instance referenced: its destructor would crash


def _forget_after_fork() -> None:
    global _instance, _instance_pid, _lock
    if _instance is not None:
        _inherited.append(_instance)
    _instance, _instance_pid = None, None
    _attached.clear()
    _readers.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def attached() -> dict[str, int]:
    """Catalogue files attached in this process, with how many blocks use each (for tests)."""
    with _lock:
        return {path: users for path, (_, users) in _attached.items()}


def _base() -> duckdb.DuckDBPyConnection:
    global _instance, _instance_pid
    if _instance is None or _instance_pid != os.getpid():
        _instance, _instance_pid = duckdb.connect(":memory:"), os.getpid()
    return _instance


def _quote_path(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _mine_add(path: str, n: int) -> None:
    held = getattr(_mine, "held", None)
    if held is None:
        held = _mine.held = {}
    held[path] = held.get(path, 0) + n
    if held[path] <= 0:
        del held[path]


def _waits(timeout_s: float) -> Iterator[float]:
    """Yields the deadline before each try and sleeps (jittered, growing back-off) after it."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        yield deadline
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 1.5, 0.5)


def _acquire(path: str, timeout_s: float) -> str:
    """Attach `path` (or count one more user of it) and return its catalog alias."""
    global _aliases
    for deadline in _waits(timeout_s):
        with _lock:
            if path in _attached:
                alias, users = _attached[path]
                _attached[path] = (alias, users + 1)
                _mine_add(path, 1)
                return alias
            if not _readers.get(path):
                _aliases += 1
                alias = f"climb_catalogue_{_aliases}"
                try:
                    _base().execute(f'ATTACH {_quote_path(path)} AS "{alias}"')
                except (duckdb.IOException, duckdb.ConnectionException) as err:
                    if not is_lock_error(err) or time.monotonic() > deadline:
                        raise
                else:
                    _attached[path] = (alias, 1)
                    _mine_add(path, 1)
                    return alias
            elif time.monotonic() > deadline:
                raise CatalogueBusy(f"{path}: a read-only connection of this process kept the file for {timeout_s:.0f} s")
    raise AssertionError("unreachable")  # _waits never ends


def _release(path: str) -> None:
    with _lock:
        _mine_add(path, -1)
        alias, users = _attached[path]
        if users > 1:
            _attached[path] = (alias, users - 1)
            return
        base = _base()
        try:
            base.execute("USE memory")
            base.execute(f'DETACH "{alias}"')
        except duckdb.Error:
            # Still attached: kept with no users, so the next block reuses it and its end detaches.
            _attached[path] = (alias, 0)
            raise
        del _attached[path]


@contextlib.contextmanager
def hold(path: str, timeout_s: float = 60.0) -> Iterator[None]:
    """Keep `path` attached for the block (blocks nest, across threads too)."""
    _acquire(path, timeout_s)
    try:
        yield
    finally:
        _release(path)


@contextlib.contextmanager
def connection(path: str, timeout_s: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on `path` for the block, its default catalog the file."""
    alias = _acquire(path, timeout_s)
    try:
        with _lock:
            cur = _base().cursor()
        try:
            cur.execute(f'USE "{alias}"')
            yield cur
        finally:
            cur.close()
    finally:
        _release(path)


@contextlib.contextmanager
def read_only_connection(path: str, timeout_s: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to `path` on its own read-only instance (see the module's docstring)."""
    if getattr(_mine, "held", {}).get(path):
        raise CatalogueBusy(f"{path}: a read-only connection cannot be opened while this thread holds the "
                            "catalogue (Workspace.held or an open connection)")
    con = None
    for deadline in _waits(timeout_s):
        with _lock:
            if path not in _attached:
                try:
                    con = duckdb.connect(path, read_only=True)
                except (duckdb.IOException, duckdb.ConnectionException) as err:
                    if not is_lock_error(err) or time.monotonic() > deadline:
                        raise
                else:
                    _readers[path] = _readers.get(path, 0) + 1
        if con is not None:
            break
        if time.monotonic() > deadline:
            raise CatalogueBusy(f"{path}: this process kept the catalogue attached for {timeout_s:.0f} s")
    try:
        yield con
    finally:
        with _lock:
            con.close()
            _readers[path] -= 1
            if not _readers[path]:
                del _readers[path]
