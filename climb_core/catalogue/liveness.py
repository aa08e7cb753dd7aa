"""Is the process that claimed a stage, search, study or job still the one running? One rule for all.

A pid alone is not enough: a dead worker's pid is reused by the next process the system starts,
which would make a stale search look alive forever. A claim records (pid, the process's start time);
it is alive while a process with that pid exists, is not a zombie, and started when the claim says.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading

import psutil

# Start times are floats from /proc; a claim written by the process itself matches to the tick.
_TOLERANCE_S = 1.0


def process_start(pid: int | None = None) -> float | None:
    """The start time (epoch seconds) of `pid` (default: this process), or None if it is gone."""
    try:
        return psutil.Process(os.getpid() if pid is None else int(pid)).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def alive(pid, started: float | None = None) -> bool:
    """True while `pid` runs and (when `started` is known) is the process that made the claim."""
    if _missing(pid):
        return False
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:   # exited, not yet reaped by its parent
            return False
        if not _missing(started) and abs(proc.create_time() - float(started)) > _TOLERANCE_S:
            return False                            # the pid now belongs to another process
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


# Stored statuses that claim a live worker: a stage, search or study `running`, a search `cancelling`.
CLAIMING = ("running", "cancelling")


def shown_status(status: str, pid, started: float | None = None) -> str:
    """The status every view shows for a claimed record (stage, search, study): one that claims a
    live worker whose process is gone reads `interrupted`; any other status as stored."""
    if status in CLAIMING and not alive(pid, started):
        return "interrupted"
    return status


class Interrupted(BaseException):
    """SIGTERM arrived (the dashboard's "Kill worker", a container stop): stop and record it.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it.
    """


@contextlib.contextmanager
def sigterm_raises():
    """Inside the block, SIGTERM raises Interrupted in the main thread, so the work records where it stopped.

    Without this Python dies on SIGTERM without unwinding, and a stage or search stays `running`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
