"""Stage bookkeeping: what each stage ran with, whether it can be skipped, and its finished shards.

A stage's fingerprint chains its own config with the fingerprints of the stages it reads, so changing
an upstream stage (or its input files) makes every downstream stage run again, and re-running a
finished stage with the same config and inputs does nothing.

A finished stage also records the fingerprints its upstream stages had when it ran (`upstream_json`).
When one of them has run again since with other inputs, the stage's outputs describe data that is
gone: `stale_stages` says so for it and everything downstream, without re-running anything.
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

from climb_core.catalogue.liveness import Interrupted, process_start, shown_status, sigterm_raises
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
    upstream_json: str | None = None  # {upstream stage: its fingerprint when this stage ran}

    @property
    def shown_status(self) -> str:
        return shown_stage_status(self.status, self.pid, self.pid_started)


def shown_stage_status(status: str, pid, pid_started) -> str:
    """`running` only while the process that claimed the stage lives; a killed stage reads `interrupted`."""
    return shown_status(status, pid, pid_started)


COLUMNS = ("stage, status, config_json, fingerprint, started_at, finished_at, rows_in, rows_out, message, pid, "
           "pid_started, upstream_json")


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
    fps = upstream_fingerprints(ws, upstream)
    blob = json.dumps({"config": config, "upstream": fps, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def upstream_fingerprints(ws: Workspace, upstream) -> dict[str, str | None]:
    """Each upstream stage's fingerprint if it finished, else None: what a stage's outputs are built on."""
    records = all_stage_records(ws) if upstream else {}
    return {up: (records[up].fingerprint if up in records and records[up].status == "done" else None)
            for up in upstream}


def record_upstream(ws: Workspace, stage: str, upstream) -> None:
    """Record the upstream fingerprints of a finished stage that has none (one finished before they
    were recorded, found up to date by its own fingerprint: its inputs are the current ones)."""
    fps = json.dumps(upstream_fingerprints(ws, upstream), sort_keys=True)
    with ws.connect() as con:
        con.execute("UPDATE stages SET upstream_json = ? WHERE stage = ? AND status = 'done' AND upstream_json IS NULL",
                    [fps, stage])


def stale_stages(ws: Workspace, reads: dict[str, list[str]],
                 records: dict[str, StageRecord] | None = None) -> dict[str, str]:
    """{stage: why it is stale} for every finished stage whose inputs changed after it ran.

    `reads` maps each stage to the stages whose outputs it reads, upstream stages first (the
    pipeline's registry passes it in; this floor does not know the stages). A finished stage is stale
    when one of them has a different fingerprint now than when it ran (it ran again with other
    inputs or settings), has not finished since (running, failed, interrupted, reset), or is itself
    stale. Stages never run, or not finished, are not listed: their own status says so. A record
    from before upstream fingerprints were kept is judged by time: stale if an upstream stage
    finished after it started.
    """
    records = all_stage_records(ws) if records is None else records
    out: dict[str, str] = {}
    for stage, ups in reads.items():
        rec = records.get(stage)
        if rec is None or rec.status != "done":
            continue
        ran_with = json.loads(rec.upstream_json) if rec.upstream_json else None
        for up in ups:
            if up in out:
                out[stage] = out[up]
                break
            reason = _changed(up, records.get(up), rec, ran_with)
            if reason:
                out[stage] = reason
                break
    return out


def _changed(up: str, now: StageRecord | None, rec: StageRecord, ran_with: dict[str, str | None] | None) -> str | None:
    if ran_with is not None:
        if up not in ran_with:
            return None  # not an input when the stage ran (an edge added since): nothing to compare
        current = now.fingerprint if now is not None and now.status == "done" else None
        if ran_with[up] == current:
            return None
    elif now is None or (now.status == "done" and not (
            now.finished_at and rec.started_at and now.finished_at > rec.started_at)):
        return None
    if now is None:
        return f"{up} was reset since this stage ran"
    if now.status != "done":
        return f"{up} was started again since this stage ran and is {now.shown_status}"
    return f"{up} ran again with other inputs since this stage ran"


def require_current(ws: Workspace, stages: list[str], reads: dict[str, list[str]], *, fix: str) -> None:
    """Refuse (StageError) when one of `stages` or a stage upstream of it is stale or did not finish.

    The message names the first such stage in pipeline order, what changed, and `fix` (the command to
    run). Stages never run are not refused here: whatever reads their outputs says they are missing.
    """
    records = all_stage_records(ws)
    stale = stale_stages(ws, reads, records)
    needed: list[str] = []

    def add(stage: str) -> None:
        for up in reads.get(stage, []):
            add(up)
        if stage not in needed:
            needed.append(stage)

    for stage in stages:
        add(stage)
    for stage in needed:
        rec = records.get(stage)
        if stage in stale:
            raise StageError(f"stage '{stage}' is stale in {ws.root}: {stale[stage]}, so its outputs no longer "
                             f"match the corpus; run `{fix}` first")
        if rec is not None and rec.status != "done":
            raise StageError(f"stage '{stage}' is {rec.shown_status} in {ws.root}, so its outputs are incomplete; "
                             f"run `{fix}` first")


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
    con.execute(f"INSERT INTO stages ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        rec.stage, rec.status, rec.config_json, rec.fingerprint, rec.started_at, rec.finished_at,
        rec.rows_in, rec.rows_out, rec.message, rec.pid, rec.pid_started, rec.upstream_json])


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
def run_stage(ws: Workspace, stage: str, config: dict[str, Any], fp: str, *, upstream=(),
              repair: bool = False) -> Iterator[StageRun]:
    """Record a stage's start, then its end (done, failed with the error, or interrupted).

    Refuses to start (StageBusyError) while another live process runs the same stage. If the
    previous attempt with the same fingerprint did not finish, `resumed` is True and the stage's
    finished shards are kept; otherwise they are cleared so a new config starts clean. `repair`
    resumes a finished stage too: one whose recorded shards' files went missing redoes only those.
    SIGTERM and Ctrl-C record the stage as `interrupted`; a kill -9 leaves `running` with a dead
    pid, which reads as `interrupted` (StageRecord.shown_status) and resumes the same way.
    `upstream` names the stages whose outputs it reads; their fingerprints now are recorded with
    it, for `stale_stages`.
    """
    config_json = json.dumps(config, sort_keys=True, default=str)
    upstream_json = json.dumps(upstream_fingerprints(ws, upstream), sort_keys=True)
    started = _now()
    pid = os.getpid()
    claim = StageRecord(stage, "running", config_json, fp, started, None, None, None, None, pid, process_start(),
                        upstream_json)
    prev = _claim(ws, claim)
    unfinished = {"running", "failed", "interrupted"} | ({"done"} if repair else set())
    resumed = prev is not None and prev.status in unfinished and prev.fingerprint == fp
    if not resumed:
        clear_shards(ws, stage)
    run = StageRun(ws, stage, fp, resumed)

    def end(status: str, message: str | None) -> None:
        _upsert(ws, StageRecord(stage, status, config_json, fp, started, _now(), run.rows_in, run.rows_out, message,
                                upstream_json=upstream_json))

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
    # A shard redone (its file had gone missing) replaces its earlier row.
    drop = "DELETE FROM stage_shards WHERE stage = ? AND shard = ?"
    sql = "INSERT INTO stage_shards VALUES (?, ?, ?, ?, ?)"
    if con is not None:
        con.execute(drop, [stage, shard])
        con.execute(sql, params)
        return
    with ws.connect() as c, transaction(c):
        c.execute(drop, [stage, shard])
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
