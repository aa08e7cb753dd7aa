"""Command proxies: what the command path costs per run, and a known-answer search run entirely
through command proxies.

    python bench/bench_command.py [--runs 10] [--seeds 3] [--budget 28]

Overhead: the same n-gram proxy (proxy.kind = ngram, 200k tokens, the default targets) trained in
this process by run_proxy_job, and as a command (bench/ngram_command.py {job}); per run, the
command path's wall time minus the same command's wall time when started by hand
(subprocess.run) is the overhead: the spawn in a new session, waiting, reading the result (the
job folder's write, per run, is added). A no-op command (a shell `printf` of result.json) gives the same
overhead with nothing else in it.

Known answer: tests/cmd_objective.py scores a mixture by climb_core.search.synthetic's true
objective (optimum known); CLIMB, RegMix and random at the same budget, the final's true score
(0 is the optimum) averaged over seeds.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import numpy as np  # noqa: E402

from perf import emit  # noqa: E402


def overhead(ws, runs: int) -> None:
    from climb_core.proxy.command import job_dir, run_command_job
    from climb_core.proxy.job import run_proxy_job
    from climb_core.search import create_search
    from climb_core.search.engine import _Context, _load, _make_job, _write_proposals
    from tests.helpers import search_config

    cfg = search_config("random", runs)
    sid = create_search(ws, cfg)
    ctx = _Context(ws, _load(ws, sid))
    w = np.random.default_rng(0).dirichlet(np.ones(len(ctx.cluster_ids)), size=runs)
    _write_proposals(ctx, 1, w, None, None, None)
    rows = list(ws.query_df("SELECT * FROM proxy_runs WHERE search_id = ? ORDER BY idx", [sid]).itertuples(index=False))
    jobs = [_make_job(ctx, r) for r in rows]
    run_proxy_job(jobs[0])  # warm: tokenizer and targets loaded once per process, as in a pool worker
    t_in = []
    for j in jobs:
        t0 = time.perf_counter()
        run_proxy_job(j)
        t_in.append(time.perf_counter() - t0)
    from climb_core.proxy.command import prepare_jobs

    over, own, noop = [], [], []
    for j in jobs:
        j.proxy = type(j.proxy)(**{**j.proxy.__dict__, "kind": "command",
                                   "command": f"{shlex.quote(sys.executable)} {REPO / 'bench' / 'ngram_command.py'} {{job}}"})
    t0 = time.perf_counter()
    prepare_jobs(ws, jobs)
    prep = (time.perf_counter() - t0) / len(jobs)
    import os
    import subprocess

    from climb_core.proxy.command import render

    for j in jobs:
        d = job_dir(j.workspace, j.search_id, j.run_id)
        t0 = time.perf_counter()  # the command alone, started by hand: its own time
        subprocess.run(render(j.proxy.command, d), shell=True, check=True, env=dict(os.environ, CLIMB_JOB_DIR=str(d)))
        life = time.perf_counter() - t0
        (d / "result.json").unlink()
        t0 = time.perf_counter()
        run_command_job(j)
        wall = time.perf_counter() - t0
        over.append(wall - life)
        own.append(life)
    for j in jobs:
        d = job_dir(j.workspace, j.search_id, j.run_id)
        (d / "result.json").unlink()
        j.proxy = type(j.proxy)(**{**j.proxy.__dict__, "command": "printf '{\"score\": 1.0}' > {job}/result.json"})
        t0 = time.perf_counter()
        run_command_job(j)
        noop.append(time.perf_counter() - t0)
    med = lambda xs: float(np.median(xs))  # noqa: E731
    print(f"in process {med(t_in):.3f} s/run; the command by hand {med(own):.3f} s, overhead "
          f"{med(over):.3f} s (max {max(over):.3f}); no-op command {med(noop):.3f} s; job folder {prep:.3f} s/run")
    emit("bench_command.py", "command path overhead per run (wall - command lifetime), n-gram proxy",
         f"{runs} runs, demo corpus 10 clusters", f"{med(over) + prep:.3f} s", "goal 0.5 s",
         f"in-process run {med(t_in):.2f} s, command by hand {med(own):.2f} s, no-op command {med(noop):.3f} s")


def known_answer(ws, seeds: int, budget: int) -> None:
    from climb_core.search import create_search, run_search
    from climb_core.search.synthetic import true_score
    from tests.test_command_proxy import cmd, command_config

    finals: dict[str, list[float]] = {"climb": [], "regmix": [], "random": []}
    for seed in range(seeds):
        for strategy in finals:
            t0 = time.perf_counter()
            s = run_search(ws, create_search(ws, command_config(strategy, budget, cmd(), seed=seed)), progress=False)
            finals[strategy].append(true_score(s.final_weights))
            print(f"{strategy} seed {seed}: final true score {finals[strategy][-1]:.4f} ({time.perf_counter() - t0:.0f} s)")
    mean = {k: float(np.mean(v)) for k, v in finals.items()}
    print("mean final true score (0 = optimum):", {k: round(v, 4) for k, v in mean.items()})
    emit("bench_command.py", "known-answer search through command proxies: final true score (0 = optimum)",
         f"synthetic objective, 10 clusters, budget {budget}, {seeds} seeds",
         f"climb {mean['climb']:.4f}", f"regmix {mean['regmix']:.4f}, random {mean['random']:.4f}",
         f"climb - random {mean['climb'] - mean['random']:+.4f}, climb - regmix {mean['climb'] - mean['regmix']:+.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=28)
    ap.add_argument("--only", choices=["overhead", "known-answer"])
    args = ap.parse_args()
    from climb_core.pipeline.tokens import run_tokens
    from tests.helpers import build_domain_workspace
    from tests.test_tokens import token_config

    with tempfile.TemporaryDirectory() as tmp:
        ws = build_domain_workspace(Path(tmp) / "ws")
        if args.only != "known-answer":
            run_tokens(ws, token_config(), progress=False)
            overhead(ws, args.runs)
        if args.only != "overhead":
            known_answer(ws, args.seeds, args.budget)


if __name__ == "__main__":
    main()
