"""A search's rows in the catalogue: `searches`, `proxy_runs` and `predictor_reports`, read and written,
and the recorder that writes finished runs from a background thread while the next ones train."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import socket
import time
from typing import Any

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace, transaction


class SearchError(RuntimeError):
    """A search cannot be created or run (no active clusters, unknown strategy, already running)."""


def timestamp() -> dt.datetime:
    return dt.datetime.now()


def load_search(ws: Workspace, search_id: str) -> dict[str, Any]:
    df = ws.query_df("SELECT * FROM searches WHERE search_id = ?", [search_id])
    if df.empty:
        raise SearchError(f"no search {search_id!r} in {ws.root}; see `climb runs {ws.root}`")
    return df.iloc[0].to_dict()


def search_runs(ws: Workspace, search_id: str) -> pd.DataFrame:
    """Every proposed and finished proxy run of a search, in (round, idx) order."""
    return ws.query_df("SELECT * FROM proxy_runs WHERE search_id = ? ORDER BY round, idx", [search_id])


def list_searches(ws: Workspace) -> pd.DataFrame:
    df = _list_searches(ws)
    df["status"] = [shown_status(r) for r in df.to_dict("records")]
    return df


def _list_searches(ws: Workspace) -> pd.DataFrame:
    return ws.query_df(
        """SELECT s.search_id, s.name, s.strategy, s.status, s.pid, s.pid_started, s.message, s.created_at, s.updated_at,
                  count(r.run_id) FILTER (WHERE r.purpose IS DISTINCT FROM 'warm') AS n_runs,
                  count(*) FILTER (WHERE r.status = 'done' AND r.purpose IS DISTINCT FROM 'warm') AS n_done,
                  count(*) FILTER (WHERE r.status = 'failed') AS n_failed,
                  max(r.score) FILTER (WHERE r.purpose IS DISTINCT FROM 'warm') AS best_score,
                  count(*) FILTER (WHERE r.purpose = 'warm') AS n_warm,
                  s.final_predicted, s.best_run_id
           FROM searches s LEFT JOIN proxy_runs r USING (search_id)
           GROUP BY ALL ORDER BY s.created_at""")


def finished_rows(ws: Workspace, search_id: str, columns: str, purposes: tuple[str, ...],
                  before_round: int | None = None) -> list[tuple]:
    """`columns` of a search's finished runs of the given purposes (a NULL purpose is 'explore'),
    before `before_round` if given, in (round, idx) order: deterministic, so a resume refits exactly."""
    marks = ", ".join("?" * len(purposes))
    sql = (f"SELECT {columns} FROM proxy_runs WHERE search_id = ? AND status = 'done' "
           f"AND coalesce(purpose, 'explore') IN ({marks})")
    params: list = [search_id, *purposes]
    if before_round is not None:
        sql += " AND round < ?"
        params.append(before_round)
    with ws.connect() as con:
        return con.execute(sql + " ORDER BY round, idx", params).fetchall()


def done_runs(ws: Workspace, search_id: str, before_round: int | None = None,
              purposes: tuple[str, ...] = ("explore",)) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Finished exploration runs (verification runs are the final's, not evidence for the search);
    `purposes` picks others (scaling mode's larger-scale runs)."""
    rows = finished_rows(ws, search_id, "run_id, weights, score", purposes, before_round)
    if not rows:
        return np.zeros((0, 0)), np.zeros(0), []
    return np.array([r[1] for r in rows], dtype=np.float64), np.array([r[2] for r in rows], dtype=np.float64), [r[0] for r in rows]


def _status(ws: Workspace, search_id: str) -> str:
    return ws.scalar("SELECT status FROM searches WHERE search_id = ?", [search_id])


def set_search(ws: Workspace, search_id: str, **cols) -> None:
    cols["updated_at"] = timestamp()
    sets = ", ".join(f"{k} = ?" for k in cols)
    with ws.connect() as con:
        con.execute(f"UPDATE searches SET {sets} WHERE search_id = ?", [*cols.values(), search_id])


def worker_alive(row: dict[str, Any]) -> bool:
    """The search's recorded worker is running (same pid and start time, see climb_core.catalogue.liveness)."""
    from climb_core.catalogue.liveness import alive

    return alive(row.get("pid"), row.get("pid_started"))


def shown_status(row: dict[str, Any]) -> str:
    """The status to show: a search recorded as running whose process is gone was interrupted
    (the rule of every view, climb_core.catalogue.liveness.shown_status)."""
    from climb_core.catalogue.liveness import shown_status as shown

    return shown(row["status"], row.get("pid"), row.get("pid_started"))


@contextlib.contextmanager
def ws_tx(ws: Workspace):
    """A short-lived connection wrapped in one transaction (all or nothing, even under kill -9)."""
    with ws.connect() as con, transaction(con):
        yield con


def release_runs(con, search_id: str, status: str, message: str, *, retry_failed: bool = False,
                 owner: tuple[int, float | None] | None = None) -> None:
    """Hand the runs a stopped worker left 'running' back as 'proposed' (with `retry_failed`, the failed
    ones too), then set the search's status and message; `owner` (pid, process start) claims it."""
    runs = "status IN ('running', 'failed')" if retry_failed else "status = 'running'"
    con.execute(f"UPDATE proxy_runs SET status = 'proposed' WHERE search_id = ? AND {runs}", [search_id])
    cols = {"status": status, "message": message, "updated_at": timestamp()}
    if owner is not None:
        cols["pid"], cols["pid_started"] = owner
    sets = ", ".join(f"{k} = ?" for k in cols)
    con.execute(f"UPDATE searches SET {sets} WHERE search_id = ?", [*cols.values(), search_id])


def insert_report(con, search_id: str, rnd: int, report: dict) -> None:
    con.execute("DELETE FROM predictor_reports WHERE search_id = ? AND round = ?", [search_id, rnd])
    con.execute("""INSERT INTO predictor_reports (search_id, round, n_train, spearman, r2, method, importance, created_at,
                       predictor, flat, reason, candidates_json)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [search_id, rnd, report["n_train"], report["spearman"], report["r2"], report["method"],
                 report["importance"], timestamp(), report.get("predictor"), report.get("flat"), report.get("reason"),
                 json.dumps(report.get("candidates", []))])


def run_ok(result) -> bool:
    return (not isinstance(result, BaseException) and result is not None
            and math.isfinite(float(getattr(result, "score", float("nan")))))


def record_runs(ws: Workspace, search_id: str, pairs: list, message: str, next_run_id: str | None = None) -> str:
    """Write finished runs (done or failed) and the search's message in one transaction; returns
    the search's status (read in the same transaction, so a cancel request is seen between runs).
    `next_run_id`, the run a sequential executor starts next, is marked running in it too."""
    now = timestamp()
    with ws_tx(ws) as con:
        done = [(job, res) for job, res in pairs if run_ok(res)]
        failed = [(job, res) for job, res in pairs if not run_ok(res)]
        if done:
            # One set-based UPDATE over a VALUES list: executemany costs a few ms per row. Bound
            # parameters, not a registered DataFrame: this runs on the recorder's thread, and a
            # pandas scan there once failed in CI ("pandas_scan does not exist").
            rows = [[job.run_id, float(r.score), json.dumps(r.scores), [float(x) for x in r.loss_curve],
                     json.dumps({str(k): float(v) for k, v in r.epochs.items()}), int(r.tokens or 0),
                     float(r.wall_s), r.host or socket.gethostname()] for job, r in done]
            values = ", ".join(["(?, ?::DOUBLE, ?, ?::DOUBLE[], ?, ?::BIGINT, ?::DOUBLE, ?)"] * len(rows))
            con.execute(
                f"""UPDATE proxy_runs SET status = 'done', score = f.score, scores_json = f.scores_json,
                       loss_curve = f.loss_curve, epochs_json = f.epochs_json,
                       tokens = coalesce(nullif(f.tokens, 0), proxy_runs.tokens), wall_s = f.wall_s, host = f.host,
                       finished_at = ?, error = NULL
                   FROM (VALUES {values}) AS f(run_id, score, scores_json, loss_curve, epochs_json, tokens, wall_s, host)
                   WHERE proxy_runs.search_id = ? AND proxy_runs.run_id = f.run_id""",
                [now] + [x for row in rows for x in row] + [search_id])  # in the order the ?s appear
        for job, res in failed:
            err = res if isinstance(res, BaseException) else ValueError(f"non-finite score: {getattr(res, 'score', None)!r}")
            con.execute("UPDATE proxy_runs SET status = 'failed', error = ?, finished_at = ? WHERE search_id = ? AND run_id = ?",
                        [f"{type(err).__name__}: {err}"[:4000], now, search_id, job.run_id])
        con.execute("UPDATE searches SET message = ?, updated_at = ? WHERE search_id = ?", [message, now, search_id])
        status = con.execute("SELECT status FROM searches WHERE search_id = ?", [search_id]).fetchall()[0][0]
        if next_run_id is not None and status == "running":
            mark_running(con, search_id, next_run_id)
        return status


def mark_running(con, search_id: str, run_id: str) -> None:
    con.execute("UPDATE proxy_runs SET status = 'running' WHERE search_id = ? AND run_id = ?", [search_id, run_id])


class Recorder:
    """Collects a round's finished runs and writes them together, at most `every_s` apart
    (search.record_every_s): one catalogue transaction costs 15-35 ms, a tenth of an n-gram proxy.

    The writes go to one background thread, in order and at most one in flight, so a proxy trains
    while the previous ones are written (DuckDB releases the GIL); `close` waits for them. A cancel
    request is seen one write later than it would be inline (with every_s = 0 each write is waited
    for, so a run is on disk before the next starts). A kill -9 loses at most `every_s` of
    finished work (and the write in flight), which a resume trains again with the same seeds."""

    def __init__(self, ws: Workspace, search_id: str, every_s: float):
        from concurrent.futures import ThreadPoolExecutor

        self.ws, self.search_id, self.every_s = ws, search_id, every_s
        self.pending: list = []
        self.message = ""
        self.next_run_id: str | None = None
        self.status = "running"
        self.last = time.monotonic()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="climb-record")
        self._inflight = None

    @property
    def cancelled(self) -> bool:
        """A cancel request was seen in the last finished write."""
        self._collect(wait=False)
        return self.status in ("cancelling", "cancelled")

    def add(self, job, result, message: str, next_run_id: str | None) -> None:
        self.pending.append((job, result))
        self.message, self.next_run_id = message, next_run_id
        if not run_ok(result) or time.monotonic() - self.last >= self.every_s:
            self.flush()

    def _collect(self, wait: bool) -> None:
        """Take the status from the write in flight once it is done (or wait for it); its error, if
        any, is raised here, in the search's thread."""
        fut = self._inflight
        if fut is None or (not wait and not fut.done()):
            return
        self._inflight = None
        self.status = fut.result()

    def flush(self) -> None:
        if self.pending:
            self._collect(wait=True)  # in order: a run's 'done' never overtakes its 'running'
            self._inflight = self._writer.submit(record_runs, self.ws, self.search_id, self.pending, self.message,
                                                 self.next_run_id)
            self.pending = []
            if self.every_s <= 0:
                self._collect(wait=True)  # 'after every run' (0) also means before the next starts
        self.last = time.monotonic()

    def close(self) -> None:
        """Write what is pending and wait for every write: all finished runs are then on disk."""
        try:
            self.flush()
            self._collect(wait=True)
        finally:
            self._writer.shutdown(wait=True)
