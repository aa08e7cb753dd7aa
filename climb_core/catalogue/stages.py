"""Stage bookkeeping: what each stage ran with, whether it can be skipped, and its finished shards.

A stage's fingerprint chains its own config with the fingerprints of the stages it reads, so changing
an upstream stage (or its input files) makes every downstream stage run again, and re-running a
finished stage with the same config and inputs does nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from climb_core.catalogue.liveness import Interrupted, alive, process_start, sigterm_raises
from climb_core.catalogue.workspace import Workspace, transaction

class StageError(RuntimeError):
    """A stage cannot run: an upstream stage is missing, or its input is unusable."""


class StageBusyError(StageError):
    """The stage is already running in another live process."""


@dataclass
class StageRecord:
    stage: str
    status: str  # running | done | failed | interrupted (as stored; see `shown_status`)
    config_json: str
    fingerprint: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    rows_in: int | None
    rows_out: int | None
    message: str | None
    pid: int | None = None
    pid_started: float | None = None

    @property
    def shown_status(self) -> str:
        return shown_stage_status(self.status, self.pid, self.pid_started)


def shown_stage_status(status: str, pid, pid_started) -> str:
    """`running` only while the process that claimed the stage lives; a killed stage reads `interrupted`."""
    if status == "running" and not alive(pid, pid_started):
        return "interrupted"
    return status


COLUMNS = "stage, status, config_json, fingerprint, started_at, finished_at, rows_in, rows_out, message, pid, pid_started"


def _now() -> dt.datetime:
    return dt.datetime.now()


def stage_record(ws: Workspace, stage: str) -> StageRecord | None:
    with ws.connect() as con:
        row = con.execute(f"SELECT {COLUMNS} FROM stages WHERE stage = ?", [stage]).fetchone()
    return StageRecord(*row) if row else None


def all_stage_records(ws: Workspace) -> dict[str, StageRecord]:
    with ws.connect() as con:
        rows = con.execute(f"SELECT {COLUMNS} FROM stages").fetchall()
    return {r[0]: StageRecord(*r) for r in rows}


def fingerprint(ws: Workspace, stage: str, config: dict[str, Any], extra: Any = None, *,
                upstream: list[str]) -> str:
    """Hash of this stage's config, the fingerprints of its upstream stages, and any extra input facts."""
    fps = {}
    for up in upstream:
        rec = stage_record(ws, up)
        fps[up] = rec.fingerprint if rec and rec.status == "done" else None
    blob = json.dumps({"config": config, "upstream": fps, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_current(ws: Workspace, stage: str, fp: str) -> bool:
    rec = stage_record(ws, stage)
    return rec is not None and rec.status == "done" and rec.fingerprint == fp


def require_done(ws: Workspace, *stages: str) -> None:
    for stage in stages:
        rec = stage_record(ws, stage)
        if rec is None or rec.status != "done":
            raise StageError(f"stage '{stage}' has not finished in {ws.root}; run `climb {stage} {ws.root}` first")


def _write(con, rec: StageRecord) -> None:
    con.execute("DELETE FROM stages WHERE stage = ?", [rec.stage])
    con.execute(f"INSERT INTO stages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        rec.stage, rec.status, rec.config_json, rec.fingerprint, rec.started_at, rec.finished_at,
        rec.rows_in, rec.rows_out, rec.message, rec.pid, rec.pid_started])


def _upsert(ws: Workspace, rec: StageRecord) -> None:
    with ws.connect() as con:
        _write(con, rec)


def _claim(ws: Workspace, rec: StageRecord) -> StageRecord | None:
    """Record `rec` (status running, this process) unless a live process runs the stage; returns the previous record.

    Check and write share one transaction on the catalogue's single writer, so two processes that
    start the same stage at once cannot both claim it.
    """
    with ws.connect() as con, transaction(con):
        row = con.execute(f"SELECT {COLUMNS} FROM stages WHERE stage = ?", [rec.stage]).fetchone()
        prev = StageRecord(*row) if row else None
        if prev is not None and prev.shown_status == "running" and prev.pid != rec.pid:
            since = prev.started_at.isoformat(sep=" ", timespec="seconds") if prev.started_at else "?"
            raise StageBusyError(
                f"stage '{rec.stage}' is already running in {ws.root} (pid {prev.pid}, since {since}); "
                "wait for it to finish, or stop that process and run the stage again (it resumes)")
        _write(con, rec)
    return prev


@dataclass
class StageRun:
    """Handed to a stage's body: lets it report counts and a message for the stages table."""
    ws: Workspace
    stage: str
    fingerprint: str
    resumed: bool
    rows_in: int | None = None
    rows_out: int | None = None
    message: str | None = None


@contextlib.contextmanager
def run_stage(ws: Workspace, stage: str, config: dict[str, Any], fp: str) -> Iterator[StageRun]:
    """Record a stage's start, then its end (done, failed with the error, or interrupted).

    Refuses to start (StageBusyError) while another live process runs the same stage. If the
    previous attempt with the same fingerprint did not finish, `resumed` is True and the stage's
    finished shards are kept; otherwise they are cleared so a new config starts clean. SIGTERM and
    Ctrl-C record the stage as `interrupted`; a kill -9 leaves `running` with a dead pid, which
    reads as `interrupted` (StageRecord.shown_status) and resumes the same way.
    """
    config_json = json.dumps(config, sort_keys=True, default=str)
    started = _now()
    pid = os.getpid()
    claim = StageRecord(stage, "running", config_json, fp, started, None, None, None, None, pid, process_start())
    prev = _claim(ws, claim)
    resumed = prev is not None and prev.status in {"running", "failed", "interrupted"} and prev.fingerprint == fp
    if not resumed:
        clear_shards(ws, stage)
    run = StageRun(ws, stage, fp, resumed)

    def end(status: str, message: str | None) -> None:
        _upsert(ws, StageRecord(stage, status, config_json, fp, started, _now(), run.rows_in, run.rows_out, message))

    try:
        with sigterm_raises():
            yield run
    except (Interrupted, KeyboardInterrupt) as err:
        end("interrupted", f"{'terminated (SIGTERM)' if isinstance(err, Interrupted) else 'cancelled (Ctrl-C)'}; "
                           "run the stage again to resume")
        raise
    except BaseException as err:
        end("failed", f"{type(err).__name__}: {err}")
        raise
    end("done", run.message)


def invalidate(ws: Workspace, stage: str) -> None:
    """Forget a stage's record (used when its outputs were reset), so it and its dependants re-run."""
    with ws.connect() as con:
        con.execute("DELETE FROM stages WHERE stage = ?", [stage])


def finished_shards(ws: Workspace, stage: str) -> dict[str, tuple[int, str | None]]:
    with ws.connect() as con:
        rows = con.execute("SELECT shard, rows, info FROM stage_shards WHERE stage = ?", [stage]).fetchall()
    return {r[0]: (int(r[1]), r[2]) for r in rows}


def mark_shard(ws: Workspace, stage: str, shard: str, rows: int, info: Any = None, con=None) -> None:
    """Record a finished shard. Pass `con` to make it part of the same transaction as the shard's data."""
    params = [stage, shard, rows, None if info is None else json.dumps(info), _now()]
    sql = "INSERT INTO stage_shards VALUES (?, ?, ?, ?, ?)"
    if con is not None:
        con.execute(sql, params)
        return
    with ws.connect() as c:
        c.execute(sql, params)


def clear_shards(ws: Workspace, stage: str) -> None:
    with ws.connect() as con:
        con.execute("DELETE FROM stage_shards WHERE stage = ?", [stage])


@dataclass
class StageOutcome:
    """What a stage function returns to the CLI and the dashboard."""
    stage: str
    skipped: bool
    rows_in: int | None = None
    rows_out: int | None = None
    message: str = ""

    def summary(self) -> str:
        if self.skipped:
            return f"{self.stage}: up to date, nothing to do"
        counts = ", ".join(f"{k} {v}" for k, v in (("in", self.rows_in), ("out", self.rows_out)) if v is not None)
        return f"{self.stage}: done ({counts}){' - ' + self.message if self.message else ''}"
