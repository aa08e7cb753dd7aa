"""Known-answer benchmark of the mixture search on real text.

Workspace: 2,880 labelled documents from ../shared/data/pool (8 domains), built by the real
pipeline (MiniLM, k-means 48 -> 16 clusters, tokens). For each domain the target is held-out text of
that domain, so the answer is known in kind (weight its clusters). Each strategy runs a real search
(engine, catalogue, n-gram proxies) at each budget and seed; its final mixture is then scored on
fresh proxy seeds it never saw, and reported as the fraction of the best reference's gain over
natural proportions (see known_answer.py). Also printed: predictor CV Spearman once 24+ runs are
done, and the search's overhead beyond proxy training.

    python bench/bench_search_quality.py                      # 4 domains, budgets 14 and 28, 5 seeds
    python bench/bench_search_quality.py --domains reviews --budgets 28 --seeds 2
    python bench/bench_search_quality.py --final-multiple 4 --final-set proxy.final_repetition=true
                                           # finals and references scored at 4x the proxy's tokens

Results are cached per (domain, budget, strategy, seed) in bench/results/search_quality.jsonl, so an
interrupted run resumes; --fresh starts over.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from known_answer import REPO, build_workspace, pipeline_config, problem, references, score_mixture

from climb_core.config import with_overrides
from climb_core.search import create_search, run_search, search_report

RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "known_answer"
OUT = RESULTS / "search_quality.jsonl"
DEFAULT_DOMAINS = ["science_abstracts", "reviews", "usenet", "news"]
DEFAULT_STRATEGIES = ["climb", "regmix", "random"]


SETS: list[str] = []  # --set overrides, part of climb's label
TAG: list[str] = []   # --tag: a name for a code variant, part of climb's label (so it is not read from cache)
FINAL: list[str] = []  # --final-multiple and --final-set: part of every strategy's label


def _label(strategy: str, predictor: str, split: str = "") -> str:
    scale = "".join(FINAL)
    if strategy != "climb":
        return strategy + scale
    return (f"climb:{predictor}" + (f"@{split}" if split else "") + "".join(f"[{s}]" for s in SETS)
            + "".join(f"#{t}" for t in TAG) + scale)


def _done_keys() -> dict[tuple, dict]:
    if not OUT.exists():
        return {}
    out = {}
    for line in OUT.read_text().splitlines():
        r = json.loads(line)
        out[(r["domain"], r["budget"], r["label"], r["seed"])] = r
    return out


def run_one(p, base_cfg, strategy: str, predictor: str, budget: int, seed: int, ref_scores: dict,
            split: str = "", extra: dict | None = None, score_cfg=None) -> dict:
    # Proxies one after another: `overhead` is then the search's own cost, not hidden behind the
    # auto executor's parallel proxies (which executor runs them never changes a proposal).
    over = {"search.strategy": strategy, "search.budget": budget, "search.seed": seed, "search.predictor": predictor,
            "search.executor": "local"}
    if strategy == "climb":
        over.update(extra or {})
    if split and strategy == "climb":
        parts = split.split(",")
        over.update({"search.round_split": split, "search.rounds": len(parts)})
    cfg = with_overrides(base_cfg, over)
    cfg.target.specs = [p.target]
    sid = create_search(p.ws, cfg, name=f"bench {p.domain} {_label(strategy, predictor, split)} b{budget} s{seed}")
    t0 = time.perf_counter()
    s = run_search(p.ws, sid, progress=False)
    wall = time.perf_counter() - t0
    rep = search_report(p.ws, sid)
    proxy_s = sum(r["wall_s"] or 0.0 for r in rep["runs"])
    score = score_mixture(p, score_cfg or cfg, s.final_weights)
    nat, best = ref_scores["natural"], max(ref_scores.values())
    reports = [r for r in rep["predictor_reports"] if (r.get("n_train") or 0) >= 24]
    return {
        "domain": p.domain, "budget": budget, "label": _label(strategy, predictor, split), "seed": seed, "search_id": sid,
        "score": score, "fraction": (score - nat) / (best - nat), "wall_s": wall, "proxy_s": proxy_s,
        "overhead": max(0.0, wall - proxy_s) / wall, "chosen": s.final.get("chosen"),
        "cv_spearman_24": reports[-1]["spearman"] if reports else None,
        "predictor_24": reports[-1].get("predictor") if reports else None,
        "predictors": [r.get("predictor") for r in rep["predictor_reports"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", default=",".join(DEFAULT_DOMAINS))
    ap.add_argument("--budgets", default="14,28")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    ap.add_argument("--predictors", default="auto", help="climb is run once per predictor listed")
    ap.add_argument("--splits", default="", help="climb round splits to compare, e.g. '4,2,1;2,1,1;1,1' "
                    "(default: the configured one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for climb searches, appended to their label (an ablation)")
    ap.add_argument("--tag", default="", help="name of a code variant of climb, appended to its label: results of "
                    "a changed search are then run, not read from the cache of the old one")
    ap.add_argument("--cache", default=str(CACHE), help="folder of the built workspace (a copy lets two runs go at once)")
    ap.add_argument("--final-multiple", type=float, default=1.0,
                    help="score finals and references as a model trained on this multiple of the proxy's tokens; "
                         "every search is told that final scale (mixture.final_tokens)")
    ap.add_argument("--final-set", action="append", default=[], metavar="KEY=VALUE",
                    help="with --final-multiple: config for every strategy's search (e.g. proxy.final_repetition=true)")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    if args.final_multiple != 1.0:
        FINAL.append(f"@{args.final_multiple:g}x" + "".join(f"[{s}]" for s in args.final_set))

    SETS.extend(args.set)
    if args.tag:
        TAG.append(args.tag)
    extra = dict(item.split("=", 1) for item in args.set)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.fresh and OUT.exists():
        OUT.unlink()
    cache = Path(args.cache)
    ws = build_workspace(cache)
    base = pipeline_config()
    score_cfg = None
    if args.final_multiple != 1.0:
        final_tokens = int(round(base.proxy.tokens * args.final_multiple))
        score_cfg = with_overrides(base, {"proxy.tokens": final_tokens})
        base = with_overrides(base, {"mixture.final_tokens": final_tokens,
                                     **dict(item.split("=", 1) for item in args.final_set)})
    done = _done_keys()
    budgets = [int(b) for b in args.budgets.split(",")]
    domains = args.domains.split(",")
    runs = []
    splits = [x for x in args.splits.split(";") if x] or [""]
    for strategy in args.strategies.split(","):
        for predictor in (args.predictors.split(",") if strategy == "climb" else ["auto"]):
            for split in (splits if strategy == "climb" else [""]):
                runs.append((strategy, predictor, split))
    n_docs = ws.table_count("documents")
    n_clusters = ws.scalar("SELECT count(*) FROM clusters WHERE state = 'active'")
    print(f"data: {n_docs} documents from {cache / 'corpus.jsonl'}, {n_clusters} active clusters; "
          f"n-gram proxies, {base.proxy.tokens:,} tokens; finals scored on 3 fresh proxy seeds")
    for domain in domains:
        p = problem(ws, cache, domain)
        # At a larger final scale the domain's clusters repeat, so blends of domain and natural join the references.
        refs = references(p, base, blends=(0.25, 0.5, 0.75) if score_cfg is not None else ())
        ref_scores = {k: score_mixture(p, score_cfg or base, w) for k, w in refs.items()}
        if max(ref_scores.values()) - ref_scores["natural"] <= 1e-9:
            print(f"\n## {domain}: no reference beats natural proportions at this scale; no gain to measure, skipped")
            continue
        print(f"\n## {domain}: references " + ", ".join(f"{k} {v:.4f}" for k, v in ref_scores.items()), flush=True)
        for budget in budgets:
            for strategy, predictor, split in runs:
                for seed in range(args.seeds):
                    key = (domain, budget, _label(strategy, predictor, split), seed)
                    if key in done:
                        continue
                    r = run_one(p, base, strategy, predictor, budget, seed, ref_scores, split, extra, score_cfg)
                    done[key] = r
                    with OUT.open("a") as fh:
                        fh.write(json.dumps(r) + "\n")
                    print(f"  {domain} b{budget} {r['label']:<16} seed {seed}: fraction {r['fraction']:.3f} "
                          f"({r['chosen']}), overhead {r['overhead']:.0%}, wall {r['wall_s']:.1f}s", flush=True)
    summarise([r for k, r in done.items() if k[0] in domains and k[1] in budgets])


def summarise(rows: list[dict]) -> None:
    print("\n| domain | budget | strategy | mean fraction | worst | sd | seeds | CV Spearman (24+ runs) | overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["domain"], r["budget"], r["label"]) for r in rows})
    for d, b, lab in keys:
        sub = [r for r in rows if (r["domain"], r["budget"], r["label"]) == (d, b, lab)]
        f = np.array([r["fraction"] for r in sub])
        cv = [r["cv_spearman_24"] for r in sub if r["cv_spearman_24"] is not None]
        ov = np.mean([r["overhead"] for r in sub])
        print(f"| {d} | {b} | {lab} | {f.mean():.3f} | {f.min():.3f} | {f.std():.3f} | {len(f)} | "
              f"{(np.mean(cv) if cv else float('nan')):.2f} | {ov:.0%} |")
    # The claim: per domain and budget, CLIMB's mean beats each baseline's (docs/BENCHMARKS.md).
    print("\nCLIMB vs baselines (mean fraction; ratio to random and RegMix):")
    for d, b in sorted({(r["domain"], r["budget"]) for r in rows}):
        means = {}
        for lab in sorted({r["label"] for r in rows}):
            f = [r["fraction"] for r in rows if (r["domain"], r["budget"], r["label"]) == (d, b, lab)]
            if f:
                means[lab] = float(np.mean(f))
        c = means.get(_label("climb", "auto"), means.get("climb:auto"))
        if c is None:
            continue
        parts = [f"{lab} {v:.3f}" for lab, v in means.items()]
        print(f"  {d} b{b}: " + ", ".join(parts)
              + "".join(f"; climb/{k} {c / means[k]:.2f}x" for k in ("random", "regmix") if means.get(k, 0) > 0))


if __name__ == "__main__":
    main()
