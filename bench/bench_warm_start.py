"""Warm starts on the known-answer benchmark (see known_answer.py and bench_search_quality.py).

Per domain, a copy of the benchmark workspace; per seed:
  1. source   a cold climb search, budget 28, on the clusters as built;
  2. edits    (once per domain, after every seed's source) merge the two clusters holding most of the
              target domain's tokens, and prune the smallest cluster holding little of it (share < 0.5);
              the tokens stage re-runs for the new clusters;
  3. on the edited clusters:
     cold28   a cold climb search, budget 28 (the mark to reach);
     cold14   a cold climb search, budget 14;
     warmN    climb warm-started from the source (its runs carried through the merge and the prune),
              N new runs for each N in --warm-budgets;
     random20 a random search of 20 runs, exported with `runs_csv` and imported back (`import_runs`);
     imp14    climb, budget 14, warm-started from that import, against cold14.
Each final mixture is scored on 3 fresh proxy seeds, as the fraction of the best reference's gain over
natural proportions on the edited clusters. Runs saved by warmN = 1 - N / 28.

    python bench/bench_warm_start.py                                  # 4 domains, 5 seeds
    python bench/bench_warm_start.py --domains reviews,news --seeds 3

Results are cached per (domain, label, seed) in bench/results/warm_start.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from known_answer import REPO, build_workspace, pipeline_config, problem, references, score_mixture

from climb_core.catalogue.workspace import Workspace
from climb_core.config import with_overrides
from climb_core.search import create_search, run_search, search_report

RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "known_answer"
OUT = RESULTS / "warm_start.jsonl"
DEFAULT_DOMAINS = ["science_abstracts", "reviews", "usenet", "news"]


def _done() -> dict[tuple, dict]:
    if not OUT.exists():
        return {}
    return {(r["domain"], r["label"], r["seed"]): r for r in map(json.loads, OUT.read_text().splitlines())}


def _save(done: dict, r: dict) -> None:
    done[(r["domain"], r["label"], r["seed"])] = r
    with OUT.open("a") as fh:
        fh.write(json.dumps(r) + "\n")


def _config(base, p, strategy: str, budget: int, seed: int):
    cfg = with_overrides(base, {"search.strategy": strategy, "search.budget": budget, "search.seed": seed,
                                "search.executor": "local"})
    cfg.target.specs = [p.target]
    return cfg


def _edit(ws: Workspace, p) -> dict:
    """Merge the two clusters with most of the domain's tokens; prune the smallest low-share cluster."""
    from climb_core.pipeline import edits
    from climb_core.pipeline.tokens import run_tokens

    tokens = p.prior * p.domain_share
    order = [p.cluster_ids[i] for i in np.argsort(-tokens, kind="stable")]
    merge = order[:2]
    low = [i for i in np.argsort(p.prior, kind="stable") if p.domain_share[i] < 0.5 and p.cluster_ids[i] not in merge]
    prune = p.cluster_ids[low[0]]
    new = edits.merge_clusters(ws, merge, describe=False)
    edits.prune_clusters(ws, [prune], reason="bench: pruned")
    run_tokens(ws, pipeline_config(), progress=False)
    return {"merged": merge, "into": new, "pruned": prune}


def _run(p, cfg, label: str, seed: int, refs: dict, warm: list[str] | None = None) -> dict:
    sid = create_search(p.ws, cfg, name=f"bench {p.domain} {label} s{seed}", warm_start=warm or [])
    s = run_search(p.ws, sid, progress=False)
    rep = search_report(p.ws, sid)
    score = score_mixture(p, cfg, s.final_weights)
    nat, best = refs["natural"], max(refs.values())
    w = rep.get("warm_start") or {}
    return {"domain": p.domain, "label": label, "seed": seed, "search_id": sid, "score": score,
            "fraction": (score - nat) / (best - nat), "new_runs": s.n_runs, "warm_runs": rep["n_warm"],
            "reused": w.get("reused", 0), "remapped": w.get("remapped", 0), "dropped": w.get("dropped", 0),
            "chosen": s.final.get("chosen"),
            "round1_n_train": next((r["n_train"] for r in rep["predictor_reports"] if r["round"] == 1), None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", default=",".join(DEFAULT_DOMAINS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--warm-budgets", default="7,14", help="new runs of the warm-started searches")
    ap.add_argument("--cache", default=str(CACHE))
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.fresh and OUT.exists():
        OUT.unlink()
    cache = Path(args.cache)
    build_workspace(cache)
    base = pipeline_config()
    done = _done()
    seeds = list(range(args.seeds))
    warm_budgets = [int(b) for b in args.warm_budgets.split(",") if b]
    for domain in args.domains.split(","):
        wdir = RESULTS / "warm_ws" / domain
        if args.fresh and wdir.exists():
            shutil.rmtree(wdir)
        if not (wdir / "climb.duckdb").exists():
            shutil.copytree(cache / "ws", wdir, dirs_exist_ok=True)
        ws = Workspace.open(wdir)
        edited = ws.scalar("SELECT count(*) FROM edits WHERE summary LIKE '%bench: pruned%'")
        if edited and any((domain, "source28", s) not in done for s in seeds):
            raise SystemExit(f"{wdir} was edited before every seed's source search ran: rerun with --fresh")
        p = problem(ws, cache, domain)
        refs = {k: score_mixture(p, base, w) for k, w in references(p, base).items()}
        for seed in seeds:
            if (domain, "source28", seed) not in done:
                _save(done, _run(p, _config(base, p, "climb", 28, seed), "source28", seed, refs))
        if not edited:
            info = _edit(ws, p)
            print(f"{domain}: merged {info['merged']} into #{info['into']}, pruned #{info['pruned']}", flush=True)
        p = problem(ws, cache, domain)  # the edited clusters, their prior and references
        refs = {k: score_mixture(p, base, w) for k, w in references(p, base).items()}
        print(f"## {domain}: references on the edited clusters " + ", ".join(f"{k} {v:.4f}" for k, v in refs.items()),
              flush=True)
        for seed in seeds:
            src = done[(domain, "source28", seed)]["search_id"]
            jobs = [("cold28", "climb", 28, None), ("cold14", "climb", 14, None)]
            jobs += [(f"warm{b}", "climb", b, [src]) for b in warm_budgets]
            for label, strategy, budget, warm in jobs:
                if (domain, label, seed) not in done:
                    _save(done, _run(p, _config(base, p, strategy, budget, seed), label, seed, refs, warm))
            if (domain, "imp14", seed) not in done:
                rnd = _run(p, _config(base, p, "random", 20, 1000 + seed), "random20", seed, refs)
                _save(done, rnd)
                from climb_core.search.imports import import_runs, runs_csv

                with tempfile.TemporaryDirectory() as tmp:
                    f = Path(tmp) / "runs.csv"
                    f.write_text(runs_csv(ws, rnd["search_id"]))
                    imp = import_runs(ws, f, config=_config(base, p, "climb", 14, seed), name=f"import s{seed}")
                _save(done, _run(p, _config(base, p, "climb", 14, seed), "imp14", seed, refs, [imp]))
            print("  " + domain + f" seed {seed}: " + ", ".join(
                f"{lab} {done[(domain, lab, seed)]['fraction']:.3f}" for lab in
                ["source28", "cold28", "cold14", *[f"warm{b}" for b in warm_budgets], "random20", "imp14"]
                if (domain, lab, seed) in done), flush=True)
    summarise([r for k, r in done.items() if k[0] in args.domains.split(",") and k[2] in seeds], warm_budgets)


def summarise(rows: list[dict], warm_budgets: list[int]) -> None:
    labels = ["source28", "cold28", "cold14", *[f"warm{b}" for b in warm_budgets], "random20", "imp14"]
    print("\n| domain | search | new runs | warm runs (reused/remapped/dropped) | mean fraction | worst | seeds |")
    print("|---|---|---|---|---|---|---|")
    for d in sorted({r["domain"] for r in rows}):
        for lab in labels:
            sub = [r for r in rows if r["domain"] == d and r["label"] == lab]
            if not sub:
                continue
            f = np.array([r["fraction"] for r in sub])
            warm = (f"{np.mean([r['warm_runs'] for r in sub]):.1f} ({np.mean([r['reused'] for r in sub]):.1f}/"
                    f"{np.mean([r['remapped'] for r in sub]):.1f}/{np.mean([r['dropped'] for r in sub]):.1f})"
                    if sub[0]["warm_runs"] else "-")
            print(f"| {d} | {lab} | {sub[0]['new_runs']} | {warm} | {f.mean():.3f} | {f.min():.3f} | {len(f)} |")
    print("\nOver all domains and seeds (mean fraction; runs saved against the cold budget-28 search):")
    allm = {lab: float(np.mean([r["fraction"] for r in rows if r["label"] == lab]))
            for lab in labels if any(r["label"] == lab for r in rows)}
    for lab, v in allm.items():
        saved = f", runs saved {1 - int(lab[4:]) / 28:.0%}" if lab.startswith("warm") else ""
        print(f"  {lab}: {v:.3f}{saved}")
    for b in warm_budgets:
        if f"warm{b}" in allm and "cold28" in allm:
            print(f"  warm{b} >= cold28: {allm[f'warm{b}'] >= allm['cold28']} ({allm[f'warm{b}']:.3f} vs {allm['cold28']:.3f})")
    if "imp14" in allm and "cold14" in allm:
        print(f"  imp14 > cold14: {allm['imp14'] > allm['cold14']} ({allm['imp14']:.3f} vs {allm['cold14']:.3f})")


if __name__ == "__main__":
    main()
