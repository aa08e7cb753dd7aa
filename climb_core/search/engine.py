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

from climb_core.config import ClimbConfig, config_from_dict
from climb_core.mixtures import natural_mixture, sample_mixtures, uniform_mixture
from climb_core.predictor import evaluate
from climb_core.workspace import Workspace, transaction

STRATEGIES = ("climb", "regmix", "random", "uniform", "natural")


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
        from climb_core.tokens import token_prior

        ids, prior = token_prior(ws)
        return [int(i) for i in ids], np.asarray(prior, dtype=np.float64)
    return estimated_prior(ws)


def new_search_id() -> str:
    return f"{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def create_search(ws: Workspace, config: ClimbConfig, *, name: str | None = None, search_id: str | None = None) -> str:
    """Record a new search: a snapshot of the active clusters, their labels and prior, and the config.

    `search_id` lets a caller (the dashboard) name the search before a worker process creates it."""
    strategy = config.search.strategy
    if strategy not in STRATEGIES:
        raise SearchError(f"unknown search.strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if config.search.budget < 1:
        raise SearchError("search.budget must be at least 1 proxy run")
    ids, prior = cluster_prior(ws)
    if not ids:
        raise SearchError(f"{ws.root} has no active clusters; run `climb refine {ws.root}` first")
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
                   cluster_labels, prior, created_at, updated_at, message)
               VALUES (?, ?, ?, 'created', ?, ?, ?, ?, ?, ?, ?, 'created')""",
            [search_id, name, strategy, json.dumps(config.to_dict()), json.dumps(target), ids,
             [str(labels.get(i, "")) for i in ids], [float(p) for p in prior], now, now])
    return search_id


# --------------------------------------------------------------------------- plan

def round_sizes(strategy: str, budget: int, rounds: int, split: list[int]) -> list[int]:
    """Runs per round. CLIMB splits the budget by `round_split` (largest remainder, at least one each);
    when round_split's length differs from `rounds`, halving weights (…4:2:1) are used instead."""
    if strategy in ("uniform", "natural"):
        return [1]
    if strategy in ("regmix", "random"):
        return [budget]
    rounds = max(1, min(rounds, budget))
    weights = [float(s) for s in split[:rounds]] if len(split) == rounds else [2.0 ** (rounds - 1 - i) for i in range(rounds)]
    raw = [budget * w / sum(weights) for w in weights]
    sizes = [max(1, int(math.floor(r))) for r in raw]
    order = sorted(range(rounds), key=lambda i: (-(raw[i] - math.floor(raw[i])), i))
    i = 0
    while sum(sizes) < budget:
        sizes[order[i % rounds]] += 1
        i += 1
    while sum(sizes) > budget:  # the max(1, .) floor can overshoot on tiny budgets
        j = max(range(rounds), key=lambda k: (sizes[k], k))
        sizes[j] -= 1
    return sizes


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


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
    return ws.query_df(
        """SELECT s.search_id, s.name, s.strategy, s.status, s.message, s.created_at, s.updated_at,
                  count(r.run_id) AS n_runs, count(*) FILTER (WHERE r.status = 'done') AS n_done,
                  count(*) FILTER (WHERE r.status = 'failed') AS n_failed, max(r.score) AS best_score,
                  s.final_predicted, s.best_run_id
           FROM searches s LEFT JOIN proxy_runs r USING (search_id)
           GROUP BY ALL ORDER BY s.created_at""")


def _done_runs(ws: Workspace, search_id: str, before_round: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    sql = "SELECT run_id, weights, score FROM proxy_runs WHERE search_id = ? AND status = 'done'"
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


def _pid_alive(pid) -> bool:
    if pid is None or (isinstance(pid, float) and math.isnan(pid)) or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


# --------------------------------------------------------------------------- proposals

class _Context:
    """What the rounds need: the config, the clusters and prior of the snapshot."""

    def __init__(self, ws: Workspace, row: dict[str, Any]):
        self.ws = ws
        self.search_id = row["search_id"]
        self.config = config_from_dict(json.loads(row["config_json"]))
        self.strategy = row["strategy"]
        self.cluster_ids = [int(i) for i in row["cluster_ids"]]
        self.prior = np.asarray(row["prior"], dtype=np.float64)
        s = self.config.search
        self.sizes = round_sizes(self.strategy, s.budget, s.rounds, list(s.round_split))
        self.seed = s.seed


def _propose(ctx: _Context, rnd: int, n: int) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    """Candidates for one round: weights, predicted scores (later CLIMB rounds) and a predictor report."""
    mix, s = ctx.config.mixture, ctx.config.search
    c = len(ctx.cluster_ids)
    if ctx.strategy == "uniform":
        return uniform_mixture(c)[None, :], None, None
    if ctx.strategy == "natural":
        return natural_mixture(ctx.prior)[None, :], None, None
    if rnd == 1:
        return sample_mixtures(ctx.prior, n, mix, _rng(ctx.seed, rnd, 0)), None, None
    X, y, _ = _done_runs(ctx.ws, ctx.search_id, before_round=rnd)
    if len(y) == 0:
        # Nothing finished to learn from (every earlier run failed): explore like round 1.
        return sample_mixtures(ctx.prior, n, mix, _rng(ctx.seed, rnd, 0)), None, None
    model, report = evaluate(X, y, ctx.config.predictor)
    rng = _rng(ctx.seed, rnd, 1)
    pool = sample_mixtures(ctx.prior, max(s.n_pool_samples, n), mix, rng)
    pred = model.predict(pool)
    # Stable sort: ties (common with a young tree model) resolve the same way on every resume.
    top = np.argsort(-pred, kind="stable")[: max(n * n, s.pool_min)]
    pick = rng.choice(top, size=min(n, len(top)), replace=False)
    return pool[pick], pred[pick], vars(report)


def _write_proposals(ctx: _Context, rnd: int, weights: np.ndarray, predicted: np.ndarray | None, report: dict | None) -> None:
    now = _now()
    n = len(weights)
    df = pd.DataFrame({
        "search_id": ctx.search_id,
        "run_id": [f"{ctx.search_id}-r{rnd}-{i:03d}" for i in range(n)],
        "round": rnd, "idx": np.arange(n, dtype=np.int32),
        "weights": [list(map(float, w)) for w in weights],
        "seed": [_run_seed(ctx.seed, rnd, i) for i in range(n)],
        "tokens": int(ctx.config.proxy.tokens),
        "predicted": [None if predicted is None else float(p) for p in (predicted if predicted is not None else [None] * n)],
        "status": "proposed", "proposed_at": now,
    })
    with ws_tx(ctx.ws) as con:
        # Re-checked inside the transaction: a proposal written by an earlier attempt wins.
        if con.execute("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND round = ?", [ctx.search_id, rnd]).fetchall()[0][0]:
            return
        con.register("props", df)
        con.execute("""INSERT INTO proxy_runs (search_id, run_id, round, idx, weights, seed, tokens, predicted, status, proposed_at)
                       SELECT search_id, run_id, round, idx, weights, seed, tokens, predicted, status, proposed_at FROM props""")
        if report is not None:
            _insert_report(con, ctx.search_id, rnd, report)


def _insert_report(con, search_id: str, rnd: int, report: dict) -> None:
    con.execute("DELETE FROM predictor_reports WHERE search_id = ? AND round = ?", [search_id, rnd])
    con.execute("INSERT INTO predictor_reports VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [search_id, rnd, report["n_train"], report["spearman"], report["r2"], report["method"],
                 report["importance"], _now()])


@contextlib.contextmanager
def ws_tx(ws: Workspace):
    """A short-lived connection wrapped in one transaction (all or nothing, even under kill -9)."""
    with ws.connect() as con, transaction(con):
        yield con


# --------------------------------------------------------------------------- training

def _record(ws: Workspace, search_id: str, job, result, message: str) -> str:
    """Write one finished run (done or failed) and the search's message; returns the search's status
    (read in the same transaction, so a cancel request is seen between runs)."""
    now = _now()
    ok = not isinstance(result, BaseException) and result is not None and math.isfinite(float(getattr(result, "score", float("nan"))))
    with ws_tx(ws) as con:
        if ok:
            con.execute(
                """UPDATE proxy_runs SET status = 'done', score = ?, scores_json = ?, loss_curve = ?, epochs_json = ?,
                       tokens = coalesce(nullif(?, 0), tokens), wall_s = ?, host = ?, finished_at = ?, error = NULL
                   WHERE search_id = ? AND run_id = ?""",
                [float(result.score), json.dumps(result.scores), [float(x) for x in result.loss_curve],
                 json.dumps({str(k): float(v) for k, v in result.epochs.items()}), int(result.tokens or 0),
                 float(result.wall_s), result.host or socket.gethostname(), now, search_id, job.run_id])
        else:
            err = result if isinstance(result, BaseException) else ValueError(f"non-finite score: {getattr(result, 'score', None)!r}")
            con.execute("UPDATE proxy_runs SET status = 'failed', error = ?, finished_at = ? WHERE search_id = ? AND run_id = ?",
                        [f"{type(err).__name__}: {err}"[:4000], now, search_id, job.run_id])
        con.execute("UPDATE searches SET message = ?, updated_at = ? WHERE search_id = ?", [message, now, search_id])
        return con.execute("SELECT status FROM searches WHERE search_id = ?", [search_id]).fetchall()[0][0]


def _final(ctx: _Context) -> tuple[list[float] | None, float | None, str | None]:
    """The search's answer: the predictor's argmax (climb), mean of top-k (regmix), else the best run."""
    X, y, run_ids = _done_runs(ctx.ws, ctx.search_id)
    if len(y) == 0:
        return None, None, None
    best = int(np.argmax(y))
    best_run = run_ids[best]
    if ctx.strategy in ("uniform", "natural", "random"):
        return list(map(float, X[best])), None, best_run
    s = ctx.config.search
    model, report = evaluate(X, y, ctx.config.predictor)
    final_round = len(ctx.sizes) + 1
    with ws_tx(ctx.ws) as con:
        _insert_report(con, ctx.search_id, final_round, vars(report))
    fresh = sample_mixtures(ctx.prior, s.n_pool_samples, ctx.config.mixture, _rng(ctx.seed, final_round, 1))
    if ctx.strategy == "regmix":
        pred = model.predict(fresh)
        top = np.argsort(-pred, kind="stable")[: s.regmix_top_k]
        w = fresh[top].mean(axis=0)
        w = w / w.sum()
        return list(map(float, w)), float(model.predict(w[None, :])[0]), best_run
    cand = np.vstack([fresh, X])
    pred = model.predict(cand)
    # A tree model is flat in places: many candidates can share the top prediction. Their centroid
    # (it stays on the simplex and within the caps) is chosen rather than whichever came first.
    tied = cand[pred >= pred.max() - 1e-12]
    w = tied.mean(axis=0)
    w = w / w.sum()
    return list(map(float, w)), float(model.predict(w[None, :])[0]), best_run


def _make_job(ctx: _Context, row) -> Any:
    from climb_core.proxy.types import ProxyJob

    return ProxyJob(workspace=str(ctx.ws.root), search_id=ctx.search_id, run_id=row.run_id, round=int(row.round),
                    cluster_ids=list(ctx.cluster_ids), weights=[float(x) for x in row.weights], seed=int(row.seed),
                    proxy=ctx.config.proxy, targets=list(ctx.config.target.specs))


def _default_objective():
    from climb_core.proxy.job import run_proxy_job

    return run_proxy_job


def run_search(ws: Workspace, search_id: str, *, objective: Callable | None = None, progress: bool = True) -> SearchSummary:
    """Run (or resume) a search until its budget is spent, it is cancelled, or it fails.

    `objective` maps a ProxyJob to a ProxyResult; it must be a picklable top-level function for the
    process and Ray executors. Default: the real proxy training `climb_core.proxy.job.run_proxy_job`.
    On a resume, runs left 'running' by a killed process and runs that failed are trained again;
    'done' runs never are. A search that is running in another live process is refused."""
    from tqdm import tqdm

    from climb_core.executors import make_executor

    row = _load(ws, search_id)
    if row["status"] == "done":
        return summarize(ws, search_id)
    if row["status"] in ("running", "cancelling") and _pid_alive(row["pid"]):
        raise SearchError(f"search {search_id} is already running in process {int(row['pid'])}; "
                          f"cancel it with `climb cancel` or wait for it")
    fn = objective or _default_objective()
    ctx = _Context(ws, row)
    t0 = time.monotonic()
    with ws_tx(ws) as con:
        # Runs a killed process left 'running' (and runs that failed) are trained again.
        con.execute("UPDATE proxy_runs SET status = 'proposed' WHERE search_id = ? AND status IN ('running', 'failed')", [search_id])
        con.execute("UPDATE searches SET status = 'running', pid = ?, updated_at = ?, message = 'starting' WHERE search_id = ?",
                    [os.getpid(), _now(), search_id])
    budget = sum(ctx.sizes)
    n_done0 = int(ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND status = 'done'", [search_id]))
    bar = tqdm(total=budget, initial=min(n_done0, budget), desc=f"search {search_id}", unit="proxy", disable=not progress)
    executor = make_executor(ctx.config.search)
    cancelled = False
    try:
        for rnd, n in enumerate(ctx.sizes, start=1):
            existing = ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND round = ?", [search_id, rnd])
            if not existing:
                _set(ws, search_id, message=f"round {rnd}/{len(ctx.sizes)}: proposing {n} mixtures")
                weights, predicted, report = _propose(ctx, rnd, n)
                _write_proposals(ctx, rnd, weights, predicted, report)
            runs = search_runs(ws, search_id)
            runs = runs[runs["round"] == rnd]
            pending = [r for r in runs.itertuples(index=False) if r.status != "done"]
            n_round = len(runs)
            done_round = n_round - len(pending)
            if not pending:
                continue
            jobs = [_make_job(ctx, r) for r in pending]

            def on_start(job):
                with ws.connect() as con:
                    con.execute("UPDATE proxy_runs SET status = 'running' WHERE search_id = ? AND run_id = ?", [search_id, job.run_id])

            # A cancel stops new runs from starting; runs in flight finish and are recorded.
            gen = executor.submit_all(fn, jobs, on_start=on_start, should_stop=lambda: cancelled)
            try:
                for job, result in gen:
                    done_round += 1
                    msg = f"round {rnd}/{len(ctx.sizes)}: {done_round}/{n_round} runs done"
                    status = _record(ws, search_id, job, result, msg)
                    bar.update(1)
                    cancelled = cancelled or status in ("cancelling", "cancelled")
            finally:
                gen.close()
            if cancelled:
                break
        if cancelled:
            with ws_tx(ws) as con:
                con.execute("UPDATE proxy_runs SET status = 'proposed' WHERE search_id = ? AND status = 'running'", [search_id])
                con.execute("UPDATE searches SET status = 'cancelled', message = 'cancelled; run it again to resume', "
                            "updated_at = ? WHERE search_id = ?", [_now(), search_id])
        else:
            weights, predicted, best_run = _final(ctx)
            n_failed = int(ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND status = 'failed'", [search_id]))
            status = "done" if weights is not None else "failed"
            msg = f"done: {budget - n_failed}/{budget} runs finished" if weights is not None else "failed: no proxy run finished"
            _set(ws, search_id, status=status, message=msg, final_weights=weights, final_predicted=predicted, best_run_id=best_run)
    except BaseException as err:
        status = "cancelled" if isinstance(err, KeyboardInterrupt) else "failed"
        try:
            with ws_tx(ws) as con:
                con.execute("UPDATE proxy_runs SET status = 'proposed' WHERE search_id = ? AND status = 'running'", [search_id])
                con.execute("UPDATE searches SET status = ?, message = ?, updated_at = ? WHERE search_id = ?",
                            [status, f"{type(err).__name__}: {err}"[:2000], _now(), search_id])
        except Exception:  # noqa: BLE001 - the original error matters more than the bookkeeping one
            pass
        raise
    finally:
        bar.close()
        executor.close()
    summary = summarize(ws, search_id)
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
        search_id=search_id, strategy=row["strategy"], status=row["status"], n_runs=len(runs), n_done=len(done),
        n_failed=int((runs["status"] == "failed").sum()),
        best_run_id=None if best is None else best["run_id"], best_score=None if best is None else float(best["score"]),
        final_weights=None if fw is None or (isinstance(fw, float)) else [float(x) for x in fw],
        final_predicted=None if fp is None or pd.isna(fp) else float(fp),
        cluster_ids=[int(i) for i in row["cluster_ids"]])


def cancel_search(ws: Workspace, search_id: str) -> str:
    """Ask a running search to stop after the run in progress; it can be resumed later. Returns the new status."""
    row = _load(ws, search_id)
    if row["status"] in ("done", "failed", "cancelled"):
        return row["status"]
    new = "cancelling" if row["status"] in ("running", "cancelling") and _pid_alive(row["pid"]) else "cancelled"
    _set(ws, search_id, status=new, message="cancel requested" if new == "cancelling" else "cancelled; run it again to resume")
    return new


# --------------------------------------------------------------------------- report

def _clean(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (dt.datetime, pd.Timestamp)):
        return None if pd.isna(v) else v.isoformat()
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.ndarray):
        return [_clean(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
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
            "weights": _clean(r["weights"]), "seed": int(r["seed"]), "tokens": _clean(r["tokens"]),
            "predicted": _clean(r["predicted"]), "score": _clean(r["score"]),
            "scores": json.loads(r["scores_json"]) if isinstance(r["scores_json"], str) else None,
            "epochs": json.loads(r["epochs_json"]) if isinstance(r["epochs_json"], str) else None,
            "loss_curve": _clean(r["loss_curve"]), "wall_s": _clean(r["wall_s"]), "host": r["host"],
            "proposed_at": _clean(r["proposed_at"]), "finished_at": _clean(r["finished_at"]), "error": r["error"],
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
    return {
        "search_id": search_id, "name": row["name"], "strategy": row["strategy"], "status": row["status"],
        "message": row["message"], "created_at": _clean(row["created_at"]), "updated_at": _clean(row["updated_at"]),
        "pid": _clean(row["pid"]), "config": cfg, "target": json.loads(row["target_json"] or "[]"),
        "cluster_ids": _clean(row["cluster_ids"]), "cluster_labels": _clean(row["cluster_labels"]),
        "prior": _clean(row["prior"]),
        "round_sizes": round_sizes(row["strategy"], c.search.budget, c.search.rounds, list(c.search.round_split)),
        "runs": run_list,
        "predictor_reports": [{k: _clean(v) for k, v in rep.items()} for rep in reports.to_dict("records")],
        "best_so_far": best_so_far,
        "best_run": best_run,
        "final_weights": _clean(row["final_weights"]),
        "final_predicted": _clean(row["final_predicted"]),
    }
