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
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from climb_core.catalogue.liveness import Interrupted, process_start, sigterm_raises
from climb_core.catalogue.workspace import Workspace
from climb_core.proxy.executors import LocalExecutor
from climb_core.search.constraints import ConstraintError
from climb_core.search.predictors.select import warm_imports
from climb_core.search.proposals import (SearchContext, conclude, round_proposal, scale_proposal,
                                         verification_proposal, write_proposals)
from climb_core.search.records import (Recorder, SearchError, load_search, mark_running, release_runs,
                                       search_runs, set_search, worker_alive, ws_tx)
from climb_core.search.report import SearchSummary, summarize
from climb_core.search.warm import training_runs

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
        row = load_search(ws, search_id)
        if row["status"] == "done":
            return summarize(ws, search_id)
        if row["status"] in ("running", "cancelling") and worker_alive(row) and int(row["pid"]) != os.getpid():
            raise SearchError(f"search {search_id} is already running in process {int(row['pid'])}; "
                              f"cancel it with `climb cancel` or wait for it")
        fn = objective or _default_objective()
        try:
            ctx = SearchContext(ws, row)
        except ConstraintError as err:
            raise SearchError(f"search {search_id}: the mixture constraints cannot be met: {err}") from err
        with ws_tx(ws) as con:
            # Runs a killed process left 'running' (and runs that failed) are trained again.
            release_runs(con, search_id, "running", "starting", retry_failed=True, owner=(os.getpid(), process_start()))
        budget = ctx.plan.total
        n_done0 = int(ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND status = 'done' "
                                "AND coalesce(purpose, 'explore') <> 'warm'", [search_id]))
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
            if not cancelled and ctx.plan.scale:
                work = _propose_and_prepare(ctx, executor, fn, ctx.plan.scale_round, ctx.plan.scale,
                                            f"retraining the {ctx.plan.scale} best mixtures at the larger scale", carry)
                cancelled = _train_round(ctx, executor, work, "larger scale", bar, carry)
            if not cancelled and ctx.plan.verify:
                work = _propose_and_prepare(ctx, executor, fn, ctx.plan.verify_round, ctx.plan.verify,
                                            "choosing the final mixture", carry)
                cancelled = _train_round(ctx, executor, work, "verifying the final mixture", bar, carry)
        if cancelled:
            with ws_tx(ws) as con:
                release_runs(con, search_id, "cancelled", "cancelled; run it again to resume")
            summary = summarize(ws, search_id)
        else:
            with ws.held():
                carry.close()
                final = conclude(ctx)
                n_failed = int(ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND status = 'failed'", [search_id]))
                if final is None:
                    set_search(ws, search_id, status="failed", message="failed: no proxy run finished")
                else:
                    msg = f"{budget - n_failed}/{budget} runs finished"  # shown beside the status, so not "done: ..."
                    if final.get("note"):
                        msg += f"; {final['note']}"
                    set_search(ws, search_id, status="done", message=msg, final_weights=final["weights"],
                         final_predicted=final.get("predicted") if final.get("chosen") == "optimum" else None,
                         best_run_id=final["best_run"]["run_id"], final_json=json.dumps(final))
                summary = summarize(ws, search_id)
    except BaseException as err:
        status = {KeyboardInterrupt: "cancelled", Interrupted: "interrupted"}.get(type(err), "failed")
        try:
            with ws_tx(ws) as con:
                release_runs(con, search_id, status, f"{type(err).__name__}: {err}; run it again to resume"[:2000])
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


def cancel_search(ws: Workspace, search_id: str) -> str:
    """Ask a running search to stop after the run in progress; it can be resumed later. Returns the new status."""
    row = load_search(ws, search_id)
    if row["status"] in ("done", "failed", "cancelled"):
        return row["status"]
    new = "cancelling" if row["status"] in ("running", "cancelling") and worker_alive(row) else "cancelled"
    if new == "cancelling":
        from climb_core.proxy.command import request_cancel

        request_cancel(ws.root, search_id)  # command proxies in flight are killed, not waited for
    set_search(ws, search_id, status=new, message="cancel requested" if new == "cancelling" else "cancelled; run it again to resume")
    return new


def _propose_and_prepare(ctx: SearchContext, executor, fn, rnd: int, n: int, message: str,
                         carry: contextlib.ExitStack) -> _RoundWork | None:
    """Propose round `rnd` unless an earlier attempt did, then ready its runs for the executor.

    The catalogue is held (`Workspace.held`) while reading and while writing, not while the strategy
    computes: a predictor's fit and cross-validation take up to a second, and the dashboard reads
    meanwhile. `carry` (the hold kept since the last round's final write) ends here."""
    ws, search_id = ctx.ws, ctx.search_id
    verify = rnd == ctx.plan.verify_round
    scale = rnd == ctx.plan.scale_round
    with ws.held():
        carry.close()
        fresh = not ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND round = ?", [search_id, rnd])
        if fresh:
            set_search(ws, search_id, message=message)
            X, y = training_runs(ws, search_id, ctx.warm, before_round=rnd)  # warm runs included
    proposal = None
    if fresh:
        if verify:
            proposal = verification_proposal(ctx, X, y)
        elif scale:
            proposal = scale_proposal(ctx, n)
        else:
            proposal = round_proposal(ctx, rnd, n, X, y)
    with ws.held():
        if proposal is not None:
            write_proposals(ctx, rnd, **proposal)
        return _prepare_round(ctx, executor, fn, rnd)


@dataclass
class _RoundWork:
    """A round's pending runs, ready for the executor (see `_prepare_round`)."""
    units: list
    unit_fn: Callable
    grouped: bool
    sequential: bool
    n_round: int
    done_round: int


def _prepare_round(ctx: SearchContext, executor, fn, rnd: int) -> _RoundWork | None:
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
            mark_running(con, ctx.search_id, units[0].run_id)
    return _RoundWork(units, unit_fn, grouped, sequential, len(runs), len(runs) - len(pending))


def _make_job(ctx: SearchContext, row) -> Any:
    import dataclasses

    import pandas as pd

    from climb_core.proxy.types import ProxyJob

    proxy = ctx.config.proxy
    tokens = int(proxy.tokens) if pd.isna(row.tokens) else int(row.tokens)
    if tokens != proxy.tokens:  # a scaling-mode run at the larger scale
        proxy = dataclasses.replace(proxy, tokens=tokens)
    final = ctx.final_tokens
    pool = min(1.0, tokens / final) if proxy.final_repetition and final > 0 else 1.0
    return ProxyJob(workspace=str(ctx.ws.root), search_id=ctx.search_id, run_id=row.run_id, round=int(row.round),
                    cluster_ids=list(ctx.cluster_ids), weights=[float(x) for x in row.weights], seed=int(row.seed),
                    proxy=proxy, targets=list(ctx.config.target.specs),
                    lm_eval_include=list(ctx.config.target.lm_eval_include), pool_fraction=pool)


def _default_objective():
    from climb_core.proxy.job import run_proxy_job

    return run_proxy_job


def _train_round(ctx: SearchContext, executor, work: _RoundWork | None, label: str, bar,
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
                mark_running(con, search_id, job.run_id)

    following = {a.run_id: b.run_id for a, b in zip(units, units[1:])} if sequential else {}
    cancelled = False
    recorder = Recorder(ws, search_id, float(ctx.config.search.record_every_s))
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
