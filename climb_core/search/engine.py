"""Mixture search: CLIMB, RegMix, random, uniform and natural over one proxy budget.

One engine runs every strategy. A search is a list of rounds; each round proposes candidates, then
trains them. Resuming is exact because of two rules:
  * a round's proposals are written to `proxy_runs` (status 'proposed') in one transaction before
    any of them trains, and a resumed search reuses them;
  * proposals of later rounds depend only on (seed, round, the finished runs of earlier rounds,
    read in (round, idx) order), and the predictor is deterministic, so they come out the same.
A restarted search therefore trains only the runs that are not 'done' and ends with the same runs
as one that was never interrupted. Connections are opened per write and never held while a proxy
trains.

After the exploration rounds, strategies with a model (climb, regmix) train their final mixture
(`verify_seeds` runs, in the budget) and answer with it only if it scored at least as well as the
best exploration run; otherwise they answer with that run and say so (searches.final_json).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from climb_core.catalogue.liveness import Interrupted, process_start, sigterm_raises
from climb_core.catalogue.workspace import Workspace, transaction
from climb_core.config import ClimbConfig, config_from_dict
from climb_core.proxy.executors import LocalExecutor
from climb_core.search.acquisition import ACQUISITIONS
from climb_core.search.constraints import ConstraintError, constraints_for
from climb_core.search.predictors.select import PREDICTORS, warm_imports
from climb_core.search.sampling import DESIGNS
from climb_core.search.strategies import STRATEGIES, Final, Plan, Strategy, plan


class SearchError(RuntimeError):
    """A search cannot be created or run (no active clusters, unknown strategy, already running)."""


@dataclass
class SearchSummary:
    search_id: str
    strategy: str
    status: str
    n_runs: int
    n_done: int
    n_failed: int
    best_run_id: str | None
    best_score: float | None
    final_weights: list[float] | None
    final_predicted: float | None
    cluster_ids: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    final: dict[str, Any] = field(default_factory=dict)  # how the final was chosen and verified



def _now() -> dt.datetime:
    return dt.datetime.now()


# --------------------------------------------------------------------------- prior and creation

def estimated_prior(ws: Workspace) -> tuple[list[int], np.ndarray]:
    """Token shares of the active clusters from doc_stats.n_tokens_est (no tokenizer needed)."""
    with ws.connect() as con:
        rows = con.execute(
            """SELECT c.cluster_id, coalesce(sum(s.n_tokens_est), 0) AS t
               FROM clusters c LEFT JOIN doc_clusters dc ON dc.cluster_id = c.cluster_id
               LEFT JOIN doc_stats s ON s.doc_idx = dc.doc_idx
               WHERE c.state = 'active' GROUP BY c.cluster_id ORDER BY c.cluster_id""").fetchall()
    ids = [int(r[0]) for r in rows]
    t = np.array([float(r[1]) for r in rows])
    if not ids:
        return ids, t
    # A cluster without estimates still deserves a non-zero share, or the sampler could never pick it.
    t = np.maximum(t, 1.0)
    return ids, t / t.sum()


def cluster_prior(ws: Workspace) -> tuple[list[int], np.ndarray]:
    """The search's prior: real train-token shares when the tokens stage has run, else estimates.

    Tests monkeypatch this function to pin the prior."""
    has_tokens = ws.scalar("SELECT count(*) FROM token_shards") or 0
    if has_tokens:
        from climb_core.pipeline.tokens import token_prior

        ids, prior = token_prior(ws)
        return [int(i) for i in ids], np.asarray(prior, dtype=np.float64)
    return estimated_prior(ws)


def cluster_train_tokens(ws: Workspace, cluster_ids: list[int]) -> list[int] | None:
    """Training tokens per cluster (for the repetition cap), or None before the tokens stage."""
    if not (ws.scalar("SELECT count(*) FROM token_shards") or 0):
        return None
    from climb_core.pipeline.tokens import cluster_token_files

    n = {int(f.cluster_id): int(f.n_train) for f in cluster_token_files(ws)}
    return [n.get(int(c), 0) for c in cluster_ids]


def _check_config(config: ClimbConfig) -> None:
    s = config.search
    if s.strategy not in STRATEGIES:
        raise SearchError(f"unknown search.strategy {s.strategy!r}; use one of {', '.join(STRATEGIES)}")
    if s.predictor not in PREDICTORS:
        raise SearchError(f"unknown search.predictor {s.predictor!r}; use one of {', '.join(PREDICTORS)}")
    if s.acquisition not in ACQUISITIONS:
        raise SearchError(f"unknown search.acquisition {s.acquisition!r}; use one of {', '.join(ACQUISITIONS)}")
    eps = list(config.predictor.gp_eps) + list(config.predictor.gp_final_eps)
    if not config.predictor.gp_eps or not config.predictor.gp_final_eps or min(eps) <= 0:
        raise SearchError(f"predictor.gp_eps and predictor.gp_final_eps need at least one value, each > 0; got "
                          f"{config.predictor.gp_eps} and {config.predictor.gp_final_eps}")
    if s.initial_design not in DESIGNS:
        raise SearchError(f"unknown search.initial_design {s.initial_design!r}; use one of {', '.join(DESIGNS)}")
    if s.budget < 1:
        raise SearchError("search.budget must be at least 1 proxy run")
    if s.rounds < 0 or any(v <= 0 for v in s.round_split):
        raise SearchError(f"search.rounds must be >= 0 (0 = by budget) and search.round_split positive integers; "
                          f"got rounds {s.rounds}, round_split {list(s.round_split)}")


def new_search_id() -> str:
    return f"{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def create_search(ws: Workspace, config: ClimbConfig, *, name: str | None = None, search_id: str | None = None) -> str:
    """Record a new search: a snapshot of the active clusters, their labels and prior, and the config.

    `search_id` lets a caller (the dashboard) name the search before a worker process creates it."""
    _check_config(config)
    strategy = config.search.strategy
    ids, prior = cluster_prior(ws)
    if not ids:
        raise SearchError(f"{ws.root} has no active clusters; run `climb refine {ws.root}` first")
    tokens = cluster_train_tokens(ws, ids)
    try:
        constraints_for(config.mixture, prior, ids, tokens)
    except ConstraintError as err:
        raise SearchError(f"the mixture constraints cannot be met: {err}") from err
    labels = dict(ws.query_df("SELECT cluster_id, coalesce(label, auto_label, '') AS label FROM clusters "
                              "WHERE state = 'active'").itertuples(index=False, name=None))
    now = _now()
    search_id = search_id or new_search_id()
    if ws.scalar("SELECT count(*) FROM searches WHERE search_id = ?", [search_id]):
        raise SearchError(f"a search {search_id!r} already exists; continue it with --resume")
    name = name or config.search.name or f"{strategy} {now:%Y-%m-%d %H:%M}"
    target = [dict(vars(s)) for s in config.target.specs]
    with ws.connect() as con:
        con.execute(
            """INSERT INTO searches (search_id, name, strategy, status, config_json, target_json, cluster_ids,
                   cluster_labels, prior, cluster_tokens, created_at, updated_at, message)
               VALUES (?, ?, ?, 'created', ?, ?, ?, ?, ?, ?, ?, ?, 'created')""",
            [search_id, name, strategy, json.dumps(config.to_dict()), json.dumps(target), ids,
             [str(labels.get(i, "")) for i in ids], [float(p) for p in prior], tokens, now, now])
    return search_id


# --------------------------------------------------------------------------- seeds

def _run_seed(seed: int, rnd: int, idx: int) -> int:
    return int(np.random.SeedSequence([int(seed), rnd, idx, 7]).generate_state(1, dtype=np.uint32)[0])


# --------------------------------------------------------------------------- reads

def _load(ws: Workspace, search_id: str) -> dict[str, Any]:
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
                  count(r.run_id) AS n_runs, count(*) FILTER (WHERE r.status = 'done') AS n_done,
                  count(*) FILTER (WHERE r.status = 'failed') AS n_failed, max(r.score) AS best_score,
                  s.final_predicted, s.best_run_id
           FROM searches s LEFT JOIN proxy_runs r USING (search_id)
           GROUP BY ALL ORDER BY s.created_at""")


def _done_runs(ws: Workspace, search_id: str, before_round: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Finished exploration runs (verification runs are the final's, not evidence for the search)."""
    sql = ("SELECT run_id, weights, score FROM proxy_runs WHERE search_id = ? AND status = 'done' "
           "AND coalesce(purpose, 'explore') = 'explore'")
    params: list = [search_id]
    if before_round is not None:
        sql += " AND round < ?"
        params.append(before_round)
    with ws.connect() as con:
        rows = con.execute(sql + " ORDER BY round, idx", params).fetchall()
    if not rows:
        return np.zeros((0, 0)), np.zeros(0), []
    return np.array([r[1] for r in rows], dtype=np.float64), np.array([r[2] for r in rows], dtype=np.float64), [r[0] for r in rows]


def _status(ws: Workspace, search_id: str) -> str:
    return ws.scalar("SELECT status FROM searches WHERE search_id = ?", [search_id])


def _set(ws: Workspace, search_id: str, **cols) -> None:
    cols["updated_at"] = _now()
    sets = ", ".join(f"{k} = ?" for k in cols)
    with ws.connect() as con:
        con.execute(f"UPDATE searches SET {sets} WHERE search_id = ?", [*cols.values(), search_id])


def _worker_alive(row: dict[str, Any]) -> bool:
    """The search's recorded worker is running (same pid and start time, see climb_core.catalogue.liveness)."""
    from climb_core.catalogue.liveness import alive

    return alive(row.get("pid"), row.get("pid_started"))


# --------------------------------------------------------------------------- proposals

class _Context:
    """What the rounds need: the config, the snapshot's clusters and prior, the strategy and its plan."""

    def __init__(self, ws: Workspace, row: dict[str, Any]):
        self.ws = ws
        self.search_id = row["search_id"]
        self.config = config_from_dict(json.loads(row["config_json"]))
        self.cluster_ids = [int(i) for i in row["cluster_ids"]]
        self.prior = np.asarray(row["prior"], dtype=np.float64)
        tokens = row.get("cluster_tokens")
        tokens = None if tokens is None or isinstance(tokens, float) else [int(t) for t in tokens]
        self.cons = constraints_for(self.config.mixture, self.prior, self.cluster_ids, tokens)
        self.strategy = Strategy(row["strategy"], self.config, self.prior, self.cons)
        self.plan: Plan = plan(row["strategy"], self.config)
        self.sizes = self.plan.explore
        self.seed = self.config.search.seed


def _write_proposals(ctx: _Context, rnd: int, weights: np.ndarray, predicted, predicted_sd, report: dict | None,
                     purpose: str = "explore", final: Final | None = None) -> None:
    """Write a round's proposed runs (and its predictor report) in one transaction; a round that an
    earlier attempt already wrote is left as it was."""
    now = _now()
    n = len(weights)

    def col(values):
        return [None] * n if values is None else [None if v is None else float(v) for v in values]

    df = pd.DataFrame({
        "search_id": ctx.search_id,
        "run_id": [f"{ctx.search_id}-r{rnd}-{i:03d}" for i in range(n)],
        "round": rnd, "idx": np.arange(n, dtype=np.int32),
        "weights": [list(map(float, w)) for w in weights],
        "seed": [_run_seed(ctx.seed, rnd, i) for i in range(n)],
        "tokens": int(ctx.config.proxy.tokens),
        "predicted": col(predicted), "predicted_sd": col(predicted_sd),
        "status": "proposed", "purpose": purpose, "proposed_at": now,
    })
    with ws_tx(ctx.ws) as con:
        # Re-checked inside the transaction: a proposal written by an earlier attempt wins.
        if con.execute("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND round = ?", [ctx.search_id, rnd]).fetchall()[0][0]:
            return
        con.register("props", df)
        con.execute("""INSERT INTO proxy_runs (search_id, run_id, round, idx, weights, seed, tokens, predicted, predicted_sd,
                           status, purpose, proposed_at)
                       SELECT search_id, run_id, round, idx, weights, seed, tokens, predicted, predicted_sd, status,
                           purpose, proposed_at FROM props""")
        if report is not None:
            _insert_report(con, ctx.search_id, rnd, report)
        if final is not None:
            con.execute("UPDATE searches SET final_json = ? WHERE search_id = ?",
                        [json.dumps(_final_record(final, stage="verifying")), ctx.search_id])


def _final_record(final: Final, **more) -> dict[str, Any]:
    return {"weights": [float(x) for x in final.weights], "predicted": final.predicted,
            "predicted_sd": final.predicted_sd, "how": final.how, **final.extra, **more}


def _insert_report(con, search_id: str, rnd: int, report: dict) -> None:
    con.execute("DELETE FROM predictor_reports WHERE search_id = ? AND round = ?", [search_id, rnd])
    con.execute("""INSERT INTO predictor_reports (search_id, round, n_train, spearman, r2, method, importance, created_at,
                       predictor, flat, reason, candidates_json)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [search_id, rnd, report["n_train"], report["spearman"], report["r2"], report["method"],
                 report["importance"], _now(), report.get("predictor"), report.get("flat"), report.get("reason"),
                 json.dumps(report.get("candidates", []))])


@contextlib.contextmanager
def ws_tx(ws: Workspace):
    """A short-lived connection wrapped in one transaction (all or nothing, even under kill -9)."""
    with ws.connect() as con, transaction(con):
        yield con


def _round_proposal(ctx: _Context, rnd: int, n: int, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What `_write_proposals` writes for exploration round `rnd`, from the finished runs (X, y)."""
    r = ctx.strategy.propose(rnd, n, X.reshape(len(y), -1) if len(y) else X, y)
    return {"weights": r.weights, "predicted": r.predicted, "predicted_sd": r.predicted_sd, "report": r.report}


def _verification_proposal(ctx: _Context, X: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    """The final mixture's verification runs, for `_write_proposals`; None: nothing to choose from."""
    if len(y) == 0:
        return None
    final = ctx.strategy.final(X, y, ctx.plan.verify_round)
    n = ctx.plan.verify
    return {"weights": np.repeat(final.weights[None, :], n, axis=0), "predicted": [final.predicted] * n,
            "predicted_sd": [final.predicted_sd] * n, "report": final.report, "purpose": "verify", "final": final}


def _propose_and_prepare(ctx: _Context, executor, fn, rnd: int, n: int, message: str,
                         carry: contextlib.ExitStack) -> _RoundWork | None:
    """Propose round `rnd` unless an earlier attempt did, then ready its runs for the executor.

    The catalogue is held (`Workspace.held`) while reading and while writing, not while the strategy
    computes: a predictor's fit and cross-validation take up to a second, and the dashboard reads
    meanwhile. `carry` (the hold kept since the last round's final write) ends here."""
    ws, search_id = ctx.ws, ctx.search_id
    verify = rnd == ctx.plan.verify_round
    with ws.held():
        carry.close()
        fresh = not ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND round = ?", [search_id, rnd])
        if fresh:
            _set(ws, search_id, message=message)
            X, y, _ = _done_runs(ws, search_id, before_round=rnd)
    proposal = None
    if fresh:
        proposal = _verification_proposal(ctx, X, y) if verify else _round_proposal(ctx, rnd, n, X, y)
    with ws.held():
        if proposal is not None:
            _write_proposals(ctx, rnd, **proposal)
        return _prepare_round(ctx, executor, fn, rnd)


# --------------------------------------------------------------------------- training

def _run_ok(result) -> bool:
    return (not isinstance(result, BaseException) and result is not None
            and math.isfinite(float(getattr(result, "score", float("nan")))))


def _record(ws: Workspace, search_id: str, pairs: list, message: str, next_run_id: str | None = None) -> str:
    """Write finished runs (done or failed) and the search's message in one transaction; returns
    the search's status (read in the same transaction, so a cancel request is seen between runs).
    `next_run_id`, the run a sequential executor starts next, is marked running in it too."""
    now = _now()
    with ws_tx(ws) as con:
        done = [(job, res) for job, res in pairs if _run_ok(res)]
        failed = [(job, res) for job, res in pairs if not _run_ok(res)]
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
            _mark_running(con, search_id, next_run_id)
        return status


class _Recorder:
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
        if not _run_ok(result) or time.monotonic() - self.last >= self.every_s:
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
            self._inflight = self._writer.submit(_record, self.ws, self.search_id, self.pending, self.message,
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


def _mark_running(con, search_id: str, run_id: str) -> None:
    con.execute("UPDATE proxy_runs SET status = 'running' WHERE search_id = ? AND run_id = ?", [search_id, run_id])


def _conclude(ctx: _Context) -> dict[str, Any] | None:
    """The search's answer, from its trained runs: the verified final, or the best exploration run
    when verification scored below it (or there was none)."""
    X, y, run_ids = _done_runs(ctx.ws, ctx.search_id)
    if len(y) == 0:
        return None
    best = int(np.argmax(y))
    best_run = {"run_id": run_ids[best], "score": float(y[best]), "weights": [float(v) for v in X[best]]}
    if ctx.plan.verify == 0:
        return {"weights": best_run["weights"], "predicted": None, "predicted_sd": None, "how": "best trained run",
                "chosen": "best_run", "best_run": best_run, "verified_scores": [], "verified": best_run["score"],
                "note": "", "stage": "done"}
    raw = ctx.ws.scalar("SELECT final_json FROM searches WHERE search_id = ?", [ctx.search_id])
    final = json.loads(raw) if isinstance(raw, str) else {}
    vr = ctx.ws.query_df("SELECT score FROM proxy_runs WHERE search_id = ? AND purpose = 'verify' AND status = 'done' "
                         "ORDER BY idx", [ctx.search_id])
    scores = [float(v) for v in vr["score"]]
    verified = float(np.mean(scores)) if scores else None
    final.update(best_run=best_run, verified_scores=scores, verified=verified, stage="done")
    if not final.get("weights") or verified is None:
        final.update(weights=best_run["weights"], chosen="best_run",
                     note="the final mixture could not be trained; answering with the best trained run")
    elif verified < best_run["score"]:
        final.update(proposed_weights=final["weights"], weights=best_run["weights"], chosen="best_run",
                     note=(f"the proposed final verified at {verified:.4f}, below the best trained run "
                           f"{best_run['run_id']} ({best_run['score']:.4f}); answering with that run"))
    else:
        final.update(chosen="optimum", note=f"verified at {verified:.4f} over {len(scores)} run(s); "
                                             f"best exploration run {best_run['score']:.4f}")
    return final


def _make_job(ctx: _Context, row) -> Any:
    from climb_core.proxy.types import ProxyJob

    return ProxyJob(workspace=str(ctx.ws.root), search_id=ctx.search_id, run_id=row.run_id, round=int(row.round),
                    cluster_ids=list(ctx.cluster_ids), weights=[float(x) for x in row.weights], seed=int(row.seed),
                    proxy=ctx.config.proxy, targets=list(ctx.config.target.specs),
                    lm_eval_include=list(ctx.config.target.lm_eval_include))


def _default_objective():
    from climb_core.proxy.job import run_proxy_job

    return run_proxy_job


@dataclass
class _RoundWork:
    """A round's pending runs, ready for the executor (see `_prepare_round`)."""
    units: list
    unit_fn: Callable
    grouped: bool
    sequential: bool
    n_round: int
    done_round: int


def _prepare_round(ctx: _Context, executor, fn, rnd: int) -> _RoundWork | None:
    """Read a round's pending runs and group them for the executor; None when all are done.

    With the real objective and GPT proxies, the round's runs go out in groups (search.batch_proxies)
    that `climb_core.proxy.batched.run_proxy_group` trains as one stacked model; each group is one
    job to the executor, so a pool trains groups in parallel and a cancel lets the groups in flight
    finish. Every run is still recorded on its own. A sequential round's first run is marked
    running here, in the same catalogue burst as the proposals (see `Workspace.held`)."""
    from climb_core.proxy import batched
    from climb_core.proxy.executors import AutoExecutor

    runs = search_runs(ctx.ws, ctx.search_id)
    runs = runs[runs["round"] == rnd]
    pending = [r for r in runs.itertuples(index=False) if r.status != "done"]
    if not pending:
        return None
    jobs = [_make_job(ctx, r) for r in pending]
    if ctx.config.proxy.kind == "command":
        # The job folders are written here, by the search's process: workers need no catalogue.
        from climb_core.proxy.command import prepare_jobs

        prepare_jobs(ctx.ws, jobs, ctx.config.tokenizer.val_fraction, ctx.config.tokenizer.seed)
    cap = max(1, int(ctx.config.search.batch_proxies))
    if fn is _default_objective() and cap > 1 and len(jobs) > 1 and batched.batchable(ctx.config.proxy):
        # auto runs GPT groups in this process, one after another: no worker to feed but this one.
        parallel = 1 if isinstance(executor, (LocalExecutor, AutoExecutor)) else getattr(executor, "workers", 1)
        units, unit_fn = batched.group_jobs(jobs, cap, parallel), batched.run_proxy_group
    else:
        units, unit_fn = jobs, fn
    grouped = unit_fn is not fn
    sequential = not grouped and (isinstance(executor, LocalExecutor) or
                                  (isinstance(executor, AutoExecutor) and not executor.parallel_for(fn, jobs)))
    if sequential:
        with ctx.ws.connect() as con:
            _mark_running(con, ctx.search_id, units[0].run_id)
    return _RoundWork(units, unit_fn, grouped, sequential, len(runs), len(runs) - len(pending))


def _train_round(ctx: _Context, executor, work: _RoundWork | None, label: str, bar,
                 carry: contextlib.ExitStack | None = None) -> bool:
    """Train a round's pending runs. Returns True if the search was cancelled meanwhile.

    `carry`: the catalogue is held (`Workspace.held`) from the round's last write on, in this stack,
    so that the caller's next burst (the next round's proposals) needs no second open."""
    if work is None:
        return False
    ws, search_id = ctx.ws, ctx.search_id
    units, grouped, sequential = work.units, work.grouped, work.sequential
    done_round, n_round = work.done_round, work.n_round

    def on_start(unit):
        if sequential:
            return  # the first was marked with the proposals, each next one when the previous was recorded
        with ws.connect() as con:
            for job in (unit if grouped else [unit]):
                _mark_running(con, search_id, job.run_id)

    following = {a.run_id: b.run_id for a, b in zip(units, units[1:])} if sequential else {}
    cancelled = False
    recorder = _Recorder(ws, search_id, float(ctx.config.search.record_every_s))
    # A cancel stops new runs from starting; runs in flight finish and are recorded.
    gen = executor.submit_all(work.unit_fn, units, on_start=on_start, should_stop=lambda: cancelled)
    try:
        for unit, outcome in gen:
            if grouped:
                # A whole group's failure (a killed worker) is every one of its runs' failure.
                pairs = list(zip(unit, outcome if isinstance(outcome, list) else [outcome] * len(unit)))
            else:
                pairs = [(unit, outcome)]
            for job, result in pairs:
                done_round += 1
                recorder.add(job, result, f"{label}: {done_round}/{n_round} runs done", following.get(job.run_id))
                bar.update(1)
                cancelled = cancelled or recorder.cancelled
    finally:
        gen.close()
        if carry is not None:
            carry.enter_context(ws.held())
        # Also on an interrupt: every finished run reaches the catalogue before the error goes up.
        recorder.close()
    return cancelled or recorder.cancelled


def run_search(ws: Workspace, search_id: str, *, objective: Callable | None = None, progress: bool = True) -> SearchSummary:
    """Run (or resume) a search until its budget is spent, it is cancelled, or it fails.

    `objective` maps a ProxyJob to a ProxyResult; it must be a picklable top-level function for the
    process and Ray executors. Default: the real proxy training `climb_core.proxy.job.run_proxy_job`.
    On a resume, runs left 'running' by a killed process and runs that failed are trained again;
    'done' runs never are. A search that is running in another live process is refused."""
    from tqdm import tqdm

    from climb_core.proxy.executors import make_executor

    t0 = time.monotonic()
    with ws.held():  # the catalogue work between proxies: one open file, not one per statement
        row = _load(ws, search_id)
        if row["status"] == "done":
            return summarize(ws, search_id)
        if row["status"] in ("running", "cancelling") and _worker_alive(row) and int(row["pid"]) != os.getpid():
            raise SearchError(f"search {search_id} is already running in process {int(row['pid'])}; "
                              f"cancel it with `climb cancel` or wait for it")
        fn = objective or _default_objective()
        try:
            ctx = _Context(ws, row)
        except ConstraintError as err:
            raise SearchError(f"search {search_id}: the mixture constraints cannot be met: {err}") from err
        with ws_tx(ws) as con:
            # Runs a killed process left 'running' (and runs that failed) are trained again.
            con.execute("UPDATE proxy_runs SET status = 'proposed' WHERE search_id = ? AND status IN ('running', 'failed')", [search_id])
            con.execute("UPDATE searches SET status = 'running', pid = ?, pid_started = ?, updated_at = ?, message = 'starting' "
                        "WHERE search_id = ?", [os.getpid(), process_start(), _now(), search_id])
        budget = ctx.plan.total
        n_done0 = int(ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND status = 'done'", [search_id]))
    if ctx.strategy.name in ("climb", "regmix"):
        warm_imports()
    bar = tqdm(total=budget, initial=min(n_done0, budget), desc=f"search {search_id}", unit="proxy", disable=not progress)
    executor = make_executor(ctx.config.search, ctx.config.slurm, ws.root)
    from climb_core.proxy.command import clear_cancel

    clear_cancel(ws.root, search_id)  # a cancel of an earlier attempt does not stop this one
    cancelled = False
    n_rounds = len(ctx.sizes)
    carry = contextlib.ExitStack()  # the catalogue held from one round's last write into the next burst
    try:
        with sigterm_raises():
            for rnd, n in enumerate(ctx.sizes, start=1):
                work = _propose_and_prepare(ctx, executor, fn, rnd, n, f"round {rnd}/{n_rounds}: proposing {n} mixtures",
                                            carry)
                cancelled = _train_round(ctx, executor, work, f"round {rnd}/{n_rounds}", bar, carry)
                if cancelled:
                    break
            if not cancelled and ctx.plan.verify:
                work = _propose_and_prepare(ctx, executor, fn, ctx.plan.verify_round, ctx.plan.verify,
                                            "choosing the final mixture", carry)
                cancelled = _train_round(ctx, executor, work, "verifying the final mixture", bar, carry)
        if cancelled:
            with ws_tx(ws) as con:
                con.execute("UPDATE proxy_runs SET status = 'proposed' WHERE search_id = ? AND status = 'running'", [search_id])
                con.execute("UPDATE searches SET status = 'cancelled', message = 'cancelled; run it again to resume', "
                            "updated_at = ? WHERE search_id = ?", [_now(), search_id])
            summary = summarize(ws, search_id)
        else:
            with ws.held():
                carry.close()
                final = _conclude(ctx)
                n_failed = int(ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND status = 'failed'", [search_id]))
                if final is None:
                    _set(ws, search_id, status="failed", message="failed: no proxy run finished")
                else:
                    msg = f"done: {budget - n_failed}/{budget} runs finished"
                    if final.get("note"):
                        msg += f"; {final['note']}"
                    _set(ws, search_id, status="done", message=msg, final_weights=final["weights"],
                         final_predicted=final.get("predicted") if final.get("chosen") == "optimum" else None,
                         best_run_id=final["best_run"]["run_id"], final_json=json.dumps(final))
                summary = summarize(ws, search_id)
    except BaseException as err:
        status = {KeyboardInterrupt: "cancelled", Interrupted: "interrupted"}.get(type(err), "failed")
        try:
            with ws_tx(ws) as con:
                con.execute("UPDATE proxy_runs SET status = 'proposed' WHERE search_id = ? AND status = 'running'", [search_id])
                con.execute("UPDATE searches SET status = ?, message = ?, updated_at = ? WHERE search_id = ?",
                            [status, f"{type(err).__name__}: {err}; run it again to resume"[:2000], _now(), search_id])
        except Exception:  # noqa: BLE001 - the original error matters more than the bookkeeping one
            pass
        if isinstance(err, Interrupted):
            raise SystemExit(143) from err
        raise
    finally:
        carry.close()
        bar.close()
        executor.close()
    summary.wall_s = time.monotonic() - t0
    return summary


def summarize(ws: Workspace, search_id: str) -> SearchSummary:
    row = _load(ws, search_id)
    runs = search_runs(ws, search_id)
    done = runs[runs["status"] == "done"]
    best = done.loc[done["score"].idxmax()] if len(done) else None
    fw = row["final_weights"]
    fp = row["final_predicted"]
    return SearchSummary(
        search_id=search_id, strategy=row["strategy"], status=shown_status(row), n_runs=len(runs), n_done=len(done),
        n_failed=int((runs["status"] == "failed").sum()),
        best_run_id=None if best is None else best["run_id"], best_score=None if best is None else float(best["score"]),
        final_weights=None if fw is None or (isinstance(fw, float)) else [float(x) for x in fw],
        final_predicted=None if fp is None or pd.isna(fp) else float(fp),
        cluster_ids=[int(i) for i in row["cluster_ids"]], final=_final_json(row))


def _final_json(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("final_json")
    return json.loads(raw) if isinstance(raw, str) and raw else {}


def shown_status(row: dict[str, Any]) -> str:
    """The status to show: a search recorded as running whose process is gone was interrupted."""
    if row["status"] in ("running", "cancelling") and not _worker_alive(row):
        return "interrupted"
    return row["status"]


def cancel_search(ws: Workspace, search_id: str) -> str:
    """Ask a running search to stop after the run in progress; it can be resumed later. Returns the new status."""
    row = _load(ws, search_id)
    if row["status"] in ("done", "failed", "cancelled"):
        return row["status"]
    new = "cancelling" if row["status"] in ("running", "cancelling") and _worker_alive(row) else "cancelled"
    if new == "cancelling":
        from climb_core.proxy.command import request_cancel

        request_cancel(ws.root, search_id)  # command proxies in flight are killed, not waited for
    _set(ws, search_id, status=new, message="cancel requested" if new == "cancelling" else "cancelled; run it again to resume")
    return new


# --------------------------------------------------------------------------- report

def jsonable(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (dt.datetime, pd.Timestamp)):
        return None if pd.isna(v) else v.isoformat()
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if v is pd.NaT:
        return None
    return v


def search_report(ws: Workspace, search_id: str) -> dict[str, Any]:
    """Everything the dashboard and `climb runs --json` show about one search, JSON-ready."""
    row = _load(ws, search_id)
    runs = search_runs(ws, search_id)
    reports = ws.query_df("SELECT * FROM predictor_reports WHERE search_id = ? ORDER BY round", [search_id])
    run_list = []
    for r in runs.to_dict("records"):
        run_list.append({
            "run_id": r["run_id"], "round": int(r["round"]), "idx": int(r["idx"]), "status": r["status"],
            "weights": jsonable(r["weights"]), "seed": int(r["seed"]), "tokens": jsonable(r["tokens"]),
            "predicted": jsonable(r["predicted"]), "predicted_sd": jsonable(r.get("predicted_sd")),
            "purpose": r.get("purpose") or "explore", "score": jsonable(r["score"]),
            "scores": json.loads(r["scores_json"]) if isinstance(r["scores_json"], str) else None,
            "epochs": json.loads(r["epochs_json"]) if isinstance(r["epochs_json"], str) else None,
            "loss_curve": jsonable(r["loss_curve"]), "wall_s": jsonable(r["wall_s"]), "host": r["host"],
            "proposed_at": jsonable(r["proposed_at"]), "finished_at": jsonable(r["finished_at"]), "error": r["error"],
        })
    # Best score so far, in the order runs finished: the search's learning curve.
    finished = sorted((r for r in run_list if r["status"] == "done"), key=lambda r: (r["finished_at"] or "", r["round"], r["idx"]))
    best_so_far, best = [], -math.inf
    for i, r in enumerate(finished, start=1):
        best = max(best, r["score"])
        best_so_far.append({"n": i, "run_id": r["run_id"], "score": r["score"], "best": best})
    best_run = max(finished, key=lambda r: r["score"]) if finished else None
    cfg = json.loads(row["config_json"])
    c = ClimbConfig() if not cfg else config_from_dict(cfg)
    p = plan(row["strategy"], c)
    preds = []
    for rep in reports.to_dict("records"):
        d = {k: jsonable(v) for k, v in rep.items() if k != "candidates_json"}
        d["candidates"] = json.loads(rep["candidates_json"]) if isinstance(rep.get("candidates_json"), str) else []
        preds.append(d)
    return {
        "search_id": search_id, "name": row["name"], "strategy": row["strategy"], "status": shown_status(row),
        "message": row["message"], "created_at": jsonable(row["created_at"]), "updated_at": jsonable(row["updated_at"]),
        "pid": jsonable(row["pid"]), "config": cfg, "target": json.loads(row["target_json"] or "[]"),
        "cluster_ids": jsonable(row["cluster_ids"]), "cluster_labels": jsonable(row["cluster_labels"]),
        "prior": jsonable(row["prior"]),
        "round_sizes": p.explore + ([p.verify] if p.verify else []),
        "verify_round": p.verify_round if p.verify else None,
        "runs": run_list,
        "predictor_reports": preds,
        "best_so_far": best_so_far,
        "best_run": best_run,
        "final_weights": jsonable(row["final_weights"]),
        "final_predicted": jsonable(row["final_predicted"]),
        "final": _final_json(row),
    }
