"""Is the process that claimed a search or a job still the one running? One rule for both.

A pid alone is not enough: a dead worker's pid is reused by the next process the system starts,
which would make a stale search look alive forever. A claim records (pid, the process's start time);
it is alive while a process with that pid exists, is not a zombie, and started when the claim says.
"""

from __future__ import annotations

import math
import os

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
