"""Mixtures at the final model's scale: the demo study with the final model at 4x the proxy's tokens.

On the demo workspace (data/demo_corpus.jsonl.gz, configs/demo.toml; target arc_easy + piqa +
hellaswag, loglik), one `climb study` per option: budget 28, 3 search seeds, every strategy, the
final model trained on 4x the proxy's tokens (mixture.final_tokens set to it, so the searches know
the final scale), 2 final-model seeds. The options:

  none    no repetition cap, proxies on whole clusters (what a search did before it knew the final scale)
  cap     the repetition cap (mixture.max_epochs 4 at the final scale)
  pools   proxies draw from pools scaled by proxy/final tokens (proxy.final_repetition), no cap
  both    the cap and the pools
  scaling pools and cap, plus scaling mode (search.scale_runs 4 at 4x)

Every search's final mixtures are then scored by each final model kind (`--final-kinds`): the n-gram
and the GPT. The searches do not depend on the final model's kind, so one study's searches serve both.
Reported per option and final kind: each strategy's final-model mean and spread, CLIMB against
natural, the transfer (Spearman of the proxy-scale score of each final against its final-model score),
and the proxy-seconds the searches spent.

    python bench/bench_final_scale.py                          # every option, n-gram and GPT finals
    python bench/bench_final_scale.py --options cap,pools --final-kinds ngram

Results are cached per (option, study) in bench/results/final_scale.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from climb_core.catalogue.workspace import Workspace  # noqa: E402
from climb_core.config import with_overrides  # noqa: E402

RESULTS = REPO / "bench" / "results"
OUT = RESULTS / "final_scale.jsonl"
FINALS = RESULTS / "final_scale_finals.jsonl"  # one line per (option, search, final kind): its final-model scores
OPTIONS = {
    "none": {"mixture.max_epochs": 0, "proxy.final_repetition": False},
    "cap": {"mixture.max_epochs": 4, "proxy.final_repetition": False},
    "pools": {"mixture.max_epochs": 0, "proxy.final_repetition": True},
    "both": {"mixture.max_epochs": 4, "proxy.final_repetition": True},
    "scaling": {"mixture.max_epochs": 4, "proxy.final_repetition": True, "search.scale_runs": 4},
    "pools+top128": {"mixture.max_epochs": 0, "proxy.final_repetition": True, "search.final_top_k": 128},
}
FINAL_SEED_BASE = 500_000


def demo_workspace(root: Path) -> Path:
    if not (root / "climb.duckdb").exists():
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "climb_core.cli", "run-all", str(root), "--input",
                        str(REPO / "data" / "demo_corpus.jsonl.gz"), "--config", str(REPO / "configs" / "demo.toml"),
                        "-q"], check=True, env=env, cwd=str(REPO))
    # The repetition cap and the pools need each cluster's token count ("up to date" once counted).
    subprocess.run([sys.executable, "-m", "climb_core.cli", "tokens", str(root), "-q"], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=str(REPO))
    return root


def study_config(ws: Workspace, option: str, budget: int, seeds: int, multiple: float):
    base = ws.load_config()
    final_tokens = int(round(base.proxy.tokens * multiple))
    cfg = with_overrides(base, {**OPTIONS[option], "search.budget": budget, "study.seeds": seeds,
                                "study.final_token_multiple": multiple, "study.final_seeds": 1,
                                "study.final_kind": "ngram", "mixture.final_tokens": final_tokens,
                                "search.executor": "local"})
    # The default target: arc_easy, piqa and hellaswag, loglik.
    assert [s.metric for s in cfg.target.specs] == ["loglik"] * 3, cfg.target.specs
    return cfg


def _cached_finals() -> dict[tuple, list[float]]:
    if not FINALS.exists():
        return {}
    return {(r["option"], r["search_id"], r["kind"]): r["scores"] for r in map(json.loads, FINALS.read_text().splitlines())}


def final_scores(ws: Workspace, cfg, weights, cluster_ids, kind: str, seeds: int, option: str, search_id: str) -> list[float]:
    """The mixture trained as the final model (`kind`, study.final_token_multiple x proxy tokens); cached."""
    cached = _cached_finals().get((option, search_id, kind))
    if cached is not None and len(cached) >= seeds:
        return cached[:seeds]
    scores = _train_finals(ws, cfg, weights, cluster_ids, kind, seeds)
    with FINALS.open("a") as fh:
        fh.write(json.dumps({"option": option, "search_id": search_id, "kind": kind, "scores": scores}) + "\n")
    return scores


def _train_finals(ws: Workspace, cfg, weights, cluster_ids, kind: str, seeds: int) -> list[float]:
    from climb_core.proxy.job import run_proxy_job
    from climb_core.proxy.types import ProxyJob

    fc = with_overrides(cfg, {"proxy.kind": kind, "proxy.final_repetition": False,
                              "proxy.tokens": int(round(cfg.proxy.tokens * cfg.study.final_token_multiple))})
    out = []
    for fs in range(seeds):
        job = ProxyJob(workspace=str(ws.root), search_id="bench", run_id=f"final-{fs}", round=0,
                       cluster_ids=list(cluster_ids), weights=[float(w) for w in weights],
                       seed=FINAL_SEED_BASE + fs, proxy=fc.proxy, targets=list(cfg.target.specs))
        out.append(float(run_proxy_job(job).score))
    return out


def run_option(option: str, args, cache: Path) -> dict:
    from climb_core.search import search_report
    from climb_core.search.study import create_study, run_study

    wdir = RESULTS / "final_scale_ws" / option
    if not (wdir / "climb.duckdb").exists():
        shutil.copytree(cache, wdir, dirs_exist_ok=True)
    ws = Workspace.open(wdir)
    cfg = study_config(ws, option, args.budget, args.seeds, args.multiple)
    sid = f"study-final-scale-{option}"
    if not ws.scalar("SELECT count(*) FROM studies WHERE study_id = ?", [sid]):
        create_study(ws, cfg, name=f"final scale: {option}", study_id=sid)
    t0 = time.monotonic()
    rep = run_study(ws, sid, progress=False)
    wall = time.monotonic() - t0
    proxy_s = float(ws.scalar("SELECT coalesce(sum(wall_s), 0) FROM proxy_runs WHERE search_id LIKE ?", [sid + "-%"]))
    arms = []
    for st in rep["strategies"].values():
        for s in st["searches"]:
            if not s["final_weights"]:
                continue
            r = search_report(ws, s["search_id"])
            fin = r["final"] or {}
            proxy_score = fin.get("verified") if fin.get("chosen") == "optimum" else (fin.get("best_run") or {}).get("score")
            tokens = np.asarray(ws.query_df("SELECT cluster_tokens FROM searches WHERE search_id = ?",
                                            [s["search_id"]])["cluster_tokens"].iloc[0], dtype=np.float64)
            epochs = (np.asarray(s["final_weights"]) * cfg.mixture.final_tokens / tokens).tolist() if len(tokens) else []
            arm = {"label": st["label"], "strategy": st["strategy"], "seed": s["seed"], "search_id": s["search_id"],
                   "proxy_score": proxy_score, "weights": s["final_weights"], "epochs": epochs,
                   "scaling": r.get("scaling")}
            # A searched strategy's spread is over its search seeds, a fixed mixture's over final-model seeds.
            n_final = args.final_seeds if st["strategy"] in ("uniform", "natural") else args.searched_final_seeds
            for kind in args.final_kinds.split(","):
                arm[f"final_{kind}"] = final_scores(ws, cfg, s["final_weights"], rep["cluster_ids"], kind,
                                                    n_final, option, s["search_id"])
            arms.append(arm)
    return {"option": option, "budget": args.budget, "seeds": args.seeds, "multiple": args.multiple,
            "final_tokens": cfg.mixture.final_tokens, "proxy_tokens": cfg.proxy.tokens, "wall_s": wall,
            "proxy_s": proxy_s, "arms": arms}


def strategy_table(arms: list[dict], kind: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for label in dict.fromkeys(a["label"] for a in arms):
        sub = [a for a in arms if a["label"] == label]
        if len(sub) == 1:  # a fixed mixture: its spread is over the final model's seeds
            v = sub[0][f"final_{kind}"]
        else:
            v = [float(np.mean(a[f"final_{kind}"])) for a in sub]
        out[label] = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                      "proxy": float(np.mean([a["proxy_score"] for a in sub if a["proxy_score"] is not None])),
                      "max_epochs": float(np.mean([max(a["epochs"]) for a in sub if a["epochs"]] or [0.0]))}
    return out


def summarise(rows: list[dict], kinds: list[str]) -> None:
    from scipy.stats import spearmanr

    for kind in kinds:
        print(f"\n### Final model: {kind} at 4x the proxy's tokens\n")
        print("| option | strategy | final (mean) | sd | proxy-scale score (mean) | largest epochs at the final scale (mean) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            tab = strategy_table(r["arms"], kind)
            for label, t in sorted(tab.items(), key=lambda kv: -kv[1]["mean"]):
                print(f"| {r['option']} | {label} | {t['mean']:.4f} | {t['sd']:.4f} | {t['proxy']:.4f} | {t['max_epochs']:.2f} |")
        print("\n| option | CLIMB - natural | spread | verdict | transfer Spearman (searches) | proxy-seconds | wall s |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            tab = strategy_table(r["arms"], kind)
            c, n = tab.get("climb:auto"), tab.get("natural")
            if not c or not n:
                continue
            gap, spread = c["mean"] - n["mean"], max(c["sd"], n["sd"])
            word = "beats" if gap > spread else ("trails" if gap < -spread else "within spread of")
            pairs = [(a["proxy_score"], float(np.mean(a[f"final_{kind}"]))) for a in r["arms"] if a["proxy_score"] is not None]
            rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic if len(pairs) > 2 else float("nan")
            print(f"| {r['option']} | {gap:+.4f} | {spread:.4f} | CLIMB {word} natural | {rho:.2f} | {r['proxy_s']:.0f} | {r['wall_s']:.0f} |")
    for r in rows:
        sc = [a["scaling"]["spearman"] for a in r["arms"] if a.get("scaling") and a["scaling"].get("spearman") is not None]
        if sc:
            print(f"\n{r['option']}: small- vs large-scale rank correlation of the retrained mixtures, per CLIMB search: "
                  + ", ".join(f"{v:.2f}" for v in sc))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--options", default=",".join(OPTIONS))
    ap.add_argument("--final-kinds", default="ngram,gpt")
    ap.add_argument("--budget", type=int, default=28)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--final-seeds", type=int, default=2, help="final-model seeds of the fixed mixtures (uniform, natural)")
    ap.add_argument("--searched-final-seeds", type=int, default=2, help="final-model seeds per search of the searched strategies")
    ap.add_argument("--multiple", type=float, default=4.0)
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for f in (OUT, FINALS):
            f.unlink(missing_ok=True)
    done = {json.loads(line)["option"]: json.loads(line) for line in OUT.read_text().splitlines()} if OUT.exists() else {}
    cache = demo_workspace(RESULTS / "final_scale_ws" / "_base")
    kinds = args.final_kinds.split(",")
    for option in args.options.split(","):
        if option not in done or any(f"final_{k}" not in done[option]["arms"][0] for k in kinds):
            print(f"## {option}: running the study", flush=True)
            done[option] = run_option(option, args, cache)
            with OUT.open("a") as fh:
                fh.write(json.dumps(done[option]) + "\n")
        summarise([done[option]], kinds)
    summarise([done[o] for o in args.options.split(",") if o in done], kinds)


if __name__ == "__main__":
    main()
