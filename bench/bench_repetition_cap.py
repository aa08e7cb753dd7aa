"""Repetition cap: what `mixture.max_epochs` costs a search, and how much repetition it prevents.

    python bench/bench_repetition_cap.py WORKSPACE [--epochs 0,2,4,8] [--seeds 0,1] [--final-tokens N]

On a built workspace (e.g. the demo: `climb run-all WS --input data/demo_corpus.jsonl.gz --config
configs/demo.toml`), one search per cap and seed with the workspace's search settings (the demo:
climb, budget 28, n-gram proxies), the cap set as max_epochs at `--final-tokens` (default
export.tokens). Reported per cap, over the seeds: the best trained run's score, the final mixture's
verified score (the mean of its verification runs), and the epochs each cluster would need at the
export size (weight x final tokens / the cluster's training tokens), as the largest over clusters
and the number of clusters past one epoch. 0 = no cap.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from climb_core.catalogue.workspace import Workspace  # noqa: E402
from climb_core.config import with_overrides  # noqa: E402
from climb_core.pipeline.run import run_stage  # noqa: E402
from climb_core.search import create_search, run_search  # noqa: E402
from climb_core.search.create import cluster_train_tokens  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace")
    ap.add_argument("--epochs", default="0,2,4,8")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--final-tokens", type=int, default=0)
    args = ap.parse_args()
    ws = Workspace.open(args.workspace)
    base = ws.load_config()
    run_stage(ws, "tokens", base, progress=False)   # the clusters' token files, as `climb search` makes them first
    final_tokens = args.final_tokens or base.export.tokens
    rows = []
    for cap in [float(x) for x in args.epochs.split(",")]:
        for seed in [int(x) for x in args.seeds.split(",")]:
            cfg = with_overrides(base, {"mixture.max_epochs": cap, "mixture.final_tokens": final_tokens,
                                        "search.seed": seed})
            t0 = time.perf_counter()
            sid = create_search(ws, cfg, name=f"repetition cap {cap:g} seed {seed}")
            s = run_search(ws, sid, progress=False)
            tokens = np.asarray(cluster_train_tokens(ws, s.cluster_ids), dtype=np.float64)
            epochs = np.asarray(s.final_weights) * final_tokens / np.maximum(tokens, 1)
            rows.append({"cap": cap, "seed": seed, "best": s.best_score, "final": s.final.get("verified"),
                         "max_epochs": float(epochs.max()), "repeated": int((epochs > 1).sum()),
                         "wall_s": time.perf_counter() - t0})
            r = rows[-1]
            print(f"cap {cap:g} seed {seed}: best {r['best']:.4f} final {r['final']:.4f} "
                  f"max epochs {r['max_epochs']:.2f} clusters past 1 epoch {r['repeated']} ({r['wall_s']:.0f} s)",
                  flush=True)
    print(f"\nclusters' training tokens: {int(tokens.sum()):,} in {len(tokens)} clusters "
          f"(smallest {int(tokens.min()):,}); final tokens {final_tokens:,}")
    print("| max_epochs | best run (mean) | final verified (mean) | largest epochs (mean, max) | clusters > 1 epoch (mean) |")
    print("|---|---|---|---|---|")
    for cap in sorted({r["cap"] for r in rows}):
        rs = [r for r in rows if r["cap"] == cap]
        print(f"| {cap:g} | {np.mean([r['best'] for r in rs]):.4f} | {np.mean([r['final'] for r in rs]):.4f} | "
              f"{np.mean([r['max_epochs'] for r in rs]):.1f}, {max(r['max_epochs'] for r in rs):.1f} | "
              f"{np.mean([r['repeated'] for r in rs]):.1f} |")


if __name__ == "__main__":
    main()
