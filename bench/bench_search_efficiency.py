"""Search efficiency: how good a mixture CLIMB, RegMix and random search find for the same number of proxies.

Objective (`climb_core.search.synthetic`, known optimum): score(w) = -||w - w*||^2 + N(0, 0.002^2) per run,
where w* is a fixed non-trivial mixture over C = 10 clusters (Dirichlet(1) draw, seed 123). The clusters and
their token prior come from the bundled demo corpus (5 domains, each split in two). Every search
runs through the real engine (`create_search` / `run_search`, local executor, paper settings except
n_pool_samples). Reported per strategy and budget, averaged over seeds:
  best  = noise-free objective of the best trained mixture (what you would get by picking a run)
  final = noise-free objective of the strategy's final mixture (CLIMB: predictor argmax; RegMix:
          mean of its top-k predicted; random: best run)
Higher is better; 0 is the optimum. Usage: python bench/bench_search_efficiency.py [--seeds 5] [--budgets 16,32,64]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from climb_core.config import ClimbConfig  # noqa: E402
from perf import emit  # noqa: E402
from climb_core.catalogue.workspace import Workspace  # noqa: E402
from climb_core.search import create_search, run_search, search_runs  # noqa: E402
from climb_core.search.synthetic import N_CLUSTERS, NOISE, objective, true_score, w_star  # noqa: E402


def build_workspace(root: Path, split: int = 2) -> Workspace:
    ws = Workspace.init(root)
    with gzip.open(ROOT / "data" / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh]
    domains = sorted({r["domain"] for r in recs})
    df = pd.DataFrame({"doc_idx": np.arange(len(recs)), "ntok": [len(r["text"]) // 4 for r in recs],
                       "cluster_id": [domains.index(r["domain"]) * split + i % split for i, r in enumerate(recs)]})
    cl = pd.DataFrame({"cluster_id": np.arange(len(domains) * split)})
    cl["label"] = [f"{domains[c // split]}-{c % split}" for c in cl.cluster_id]
    with ws.connect() as con:
        con.register("df", df)
        con.register("cl", cl)
        con.execute("INSERT INTO doc_stats (doc_idx, n_tokens_est) SELECT doc_idx, ntok FROM df")
        con.execute("INSERT INTO doc_clusters SELECT doc_idx, cluster_id FROM df")
        con.execute("INSERT INTO clusters (cluster_id, label, state) SELECT cluster_id, label, 'active' FROM cl")
    return ws


def one(ws: Workspace, strategy: str, budget: int, seed: int, pool: int) -> dict:
    cfg = ClimbConfig()
    cfg.search.strategy = strategy
    cfg.search.budget = budget
    cfg.search.seed = seed
    cfg.search.n_pool_samples = pool
    cfg.predictor.seed = seed
    sid = create_search(ws, cfg)
    t0 = time.perf_counter()
    s = run_search(ws, sid, objective=objective, progress=False)
    runs = search_runs(ws, sid)
    best = max(true_score(w) for w in runs.loc[runs.status == "done", "weights"])
    return {"strategy": strategy, "budget": budget, "seed": seed, "best": best,
            "final": true_score(s.final_weights), "secs": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budgets", default="16,32,64")
    ap.add_argument("--pool", type=int, default=20_000, help="n_pool_samples (paper: 100000)")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    print(f"objective: -||w - w*||^2 + N(0, {NOISE}^2), C = {N_CLUSTERS} clusters, w* = {np.round(w_star(N_CLUSTERS), 3).tolist()}")
    print(f"seeds: {args.seeds}, budgets: {budgets}, n_pool_samples: {args.pool}, CLIMB rounds 4:2:1")
    rows = []
    # tmpfs when there is one: the catalogue's many small commits otherwise wait on the disk.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        ws = build_workspace(Path(tmp) / "ws")
        for budget in budgets:
            for seed in range(args.seeds):
                for strategy in ("random", "regmix", "climb"):
                    rows.append(one(ws, strategy, budget, seed, args.pool))
    df = pd.DataFrame(rows)
    table = df.groupby(["budget", "strategy"])[["best", "final", "secs"]].mean().unstack("strategy")
    pd.set_option("display.width", 160)
    print("\nmean over seeds (higher is better, 0 = optimum):")
    print(table.round(4).to_string())
    print("\nCLIMB vs random at the same budget (distance to the optimum, smaller is better; ratio < 1 means CLIMB is closer):")
    for budget in budgets:
        sub = df[df.budget == budget].groupby("strategy")[["best", "final"]].mean()
        r_best = sub.loc["climb", "best"] / sub.loc["random", "best"]
        r_final = sub.loc["climb", "final"] / sub.loc["random", "final"]
        g_final = sub.loc["climb", "final"] - sub.loc["random", "final"]
        wins = (df[(df.budget == budget) & (df.strategy == "climb")]["final"].to_numpy()
                > df[(df.budget == budget) & (df.strategy == "random")]["final"].to_numpy()).mean()
        print(f"  budget {budget:3d}: best-run ratio {r_best:.2f}, final ratio {r_final:.2f}, "
              f"final gap {g_final:+.4f}, CLIMB final beats random in {wins:.0%} of seeds")
    ratios = []
    for budget in budgets:
        sub = df[df.budget == budget].groupby("strategy")["final"].mean()
        ratios.append(f"{sub['climb'] / sub['random']:.2f}x at {budget}")
    emit("bench_search_efficiency.py", "search efficiency: final's distance to a known optimum",
         f"{N_CLUSTERS} clusters, synthetic noisy objective, {args.seeds} seeds", "CLIMB", "random search",
         ", ".join(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
