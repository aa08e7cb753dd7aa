"""A study: every strategy on one workspace, target and budget, compared where it matters.

A search's own scores come from small proxies; a study asks whether its final mixture is better
for a larger model. It runs each strategy (CLIMB once per predictor, RegMix, random over
`study.seeds` search seeds; uniform and natural once, being fixed mixtures), re-trains every final
mixture as the final model (`study.final_kind`, `final_token_multiple` x the proxy's tokens,
`final_seeds` training seeds), and writes a report: Markdown, JSON and an HTML page of plots.
The searches take their repetition cap at the final model's tokens (`with_final_scale`), and the
report's transfer section says whether the strategies' order on the proxies held on the final model.

Resumable at every level: search ids are derived from the study id, each search resumes itself, and
each final training is one row in `study_finals`, skipped once done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from climb_core.catalogue.liveness import process_start, shown_status
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig, config_from_dict, with_overrides
from climb_core.search.create import create_search
from climb_core.search.engine import run_search
from climb_core.search.records import SearchError, ws_tx
from climb_core.search.report import jsonable, search_report

FIXED = ("uniform", "natural")
FINAL_SEED_BASE = 500_000  # far from the seeds searches draw for their proxies


@dataclasses.dataclass
class Arm:
    label: str       # climb:auto, regmix, ...
    strategy: str
    predictor: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.label.replace(':', '-')}-s{self.seed}"


def arms(config: ClimbConfig) -> list[Arm]:
    st = config.study
    out = []
    for strategy in st.strategies:
        if strategy == "climb":
            for pred in st.predictors:
                out += [Arm(f"climb:{pred}", "climb", pred, s) for s in range(st.seeds)]
        elif strategy in FIXED:
            out.append(Arm(strategy, strategy, config.search.predictor, 0))
        else:
            out += [Arm(strategy, strategy, config.search.predictor, s) for s in range(st.seeds)]
    return out


def _now() -> dt.datetime:
    return dt.datetime.now()


def create_study(ws: Workspace, config: ClimbConfig, name: str | None = None, study_id: str | None = None) -> str:
    from climb_core.config import validate
    from climb_core.proxy.targets import validate_targets

    if not config.target.specs:
        raise SearchError("a study needs a target: pass --target (e.g. arc_easy or text:PATH)")
    # Checked before the study row exists, so a bad key or target leaves nothing behind.
    validate(config)
    validate_targets(ws, config.target.specs)
    config = with_final_scale(config)
    _check_final_scale(ws, config)
    study_id = study_id or f"study-{_now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    if ws.scalar("SELECT count(*) FROM studies WHERE study_id = ?", [study_id]):
        raise SearchError(f"a study {study_id!r} already exists; continue it with --resume {study_id}")
    now = _now()
    with ws.connect() as con:
        con.execute("INSERT INTO studies (study_id, name, status, config_json, target_json, created_at, updated_at, "
                    "message, report_dir) VALUES (?, ?, 'created', ?, ?, ?, ?, 'created', ?)",
                    [study_id, name or config.study.name or study_id, json.dumps(config.to_dict()),
                     json.dumps([dict(vars(s)) for s in config.target.specs]), now, now,
                     str(ws.root / "studies" / study_id)])
    return study_id


def with_final_scale(config: ClimbConfig) -> ClimbConfig:
    """The config a study's searches run with: the repetition cap taken at the final model's tokens
    (mixture.final_tokens = study.final_token_multiple x proxy.tokens) unless mixture.final_tokens was
    set by hand, so each search caps repetition where its final mixture will actually be trained."""
    if config.mixture.final_tokens > 0:
        return config
    return with_overrides(config, {"mixture.final_tokens": _final_config(config).proxy.tokens})


def _check_final_scale(ws: Workspace, config: ClimbConfig) -> None:
    """Refuse, before the study row exists, a final scale the clusters cannot fill within the cap;
    otherwise every search of the study would be refused one by one."""
    from climb_core.search.constraints import ConstraintError, constraints_for
    from climb_core.search.create import cluster_prior, cluster_train_tokens

    if config.mixture.max_epochs <= 0:
        return
    ids, prior = cluster_prior(ws)
    if not ids:
        return  # create_search says how to get clusters
    tokens = cluster_train_tokens(ws, ids)
    if tokens is None:
        raise SearchError(f"a study caps repetition at its final model's {config.mixture.final_tokens:,} tokens, "
                          f"which needs the clusters' token counts: run `climb tokens {ws.root}` first "
                          "(or turn the cap off with mixture.max_epochs = 0)")
    try:
        constraints_for(config.mixture, prior, ids, tokens, export_tokens=config.export.tokens)
    except ConstraintError as err:
        raise SearchError(f"the study's final model trains on {config.mixture.final_tokens:,} tokens, where the "
                          f"mixture constraints cannot be met: {err}, or lower study.final_token_multiple") from err


def _study_row(ws: Workspace, study_id: str) -> dict[str, Any]:
    df = ws.query_df("SELECT * FROM studies WHERE study_id = ?", [study_id])
    if df.empty:
        raise SearchError(f"no study {study_id!r} in {ws.root}")
    return df.iloc[0].to_dict()


def _set(ws: Workspace, study_id: str, **cols) -> None:
    cols["updated_at"] = _now()
    with ws.connect() as con:
        con.execute(f"UPDATE studies SET {', '.join(f'{k} = ?' for k in cols)} WHERE study_id = ?",
                    [*cols.values(), study_id])


def _final_config(config: ClimbConfig) -> ClimbConfig:
    st = config.study
    return with_overrides(config, {"proxy.kind": st.final_kind,
                                   "proxy.tokens": int(round(config.proxy.tokens * st.final_token_multiple))})


def _train_final(ws: Workspace, study_id: str, arm: Arm, search_id: str, weights, cluster_ids, config: ClimbConfig,
                 final_seed: int, objective: Callable) -> None:
    from climb_core.proxy.types import ProxyJob

    fc = _final_config(config)
    job = ProxyJob(workspace=str(ws.root), search_id=search_id, run_id=f"{search_id}-final-{final_seed}", round=0,
                   cluster_ids=list(cluster_ids), weights=[float(w) for w in weights],
                   seed=FINAL_SEED_BASE + final_seed, proxy=fc.proxy, targets=list(config.target.specs))
    row = [study_id, search_id, arm.label, arm.strategy, arm.seed, final_seed]
    try:
        r = objective(job)
        vals = ["done", float(r.score), json.dumps(r.scores), int(r.tokens or 0), float(r.wall_s), None]
    except Exception as err:  # noqa: BLE001 - recorded; the study goes on with the other finals
        vals = ["failed", None, None, None, None, f"{type(err).__name__}: {err}"[:2000]]
    with ws_tx(ws) as con:
        con.execute("DELETE FROM study_finals WHERE study_id = ? AND search_id = ? AND final_seed = ?",
                    [study_id, search_id, final_seed])
        con.execute("INSERT INTO study_finals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [*row, *vals, _now()])


def run_study(ws: Workspace, study_id: str, *, objective: Callable | None = None, final_objective: Callable | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a study to the end and write its report; returns the report."""
    from tqdm import tqdm

    from climb_core.proxy.job import run_proxy_job

    row = _study_row(ws, study_id)
    config = config_from_dict(json.loads(row["config_json"]))
    final_fn = final_objective or objective or run_proxy_job
    plan = arms(config)
    # Claimed by this process, so a killed study reads `interrupted` (catalogue.liveness.shown_status).
    _set(ws, study_id, status="running", message=f"{len(plan)} searches", pid=os.getpid(), pid_started=process_start())
    try:
        for i, arm in enumerate(tqdm(plan, desc=f"study {study_id}", unit="search", disable=not progress), start=1):
            sid = f"{study_id}-{arm.key}"
            if not ws.scalar("SELECT count(*) FROM searches WHERE search_id = ?", [sid]):
                cfg = with_overrides(config, {"search.strategy": arm.strategy, "search.seed": arm.seed,
                                              "search.predictor": arm.predictor})
                create_search(ws, cfg, name=f"{row['name']}: {arm.label} seed {arm.seed}", search_id=sid)
            _set(ws, study_id, message=f"search {i}/{len(plan)}: {arm.label} seed {arm.seed}")
            s = run_search(ws, sid, objective=objective, progress=False)
            if s.status != "done" or not s.final_weights:
                continue
            done = set(ws.query_df("SELECT final_seed FROM study_finals WHERE study_id = ? AND search_id = ? "
                                   "AND status = 'done'", [study_id, sid])["final_seed"])
            for fs in range(config.study.final_seeds):
                if fs not in done:
                    _set(ws, study_id, message=f"search {i}/{len(plan)}: {arm.label} seed {arm.seed}, final model {fs + 1}")
                    _train_final(ws, study_id, arm, sid, s.final_weights, s.cluster_ids, config, fs, final_fn)
    except BaseException as err:
        _set(ws, study_id, status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
             message=f"{type(err).__name__}: {err}; run it again to resume"[:2000])
        raise
    report = study_report(ws, study_id)
    write_report(report, Path(row["report_dir"]))
    _set(ws, study_id, status="done", message=f"report in {row['report_dir']}")
    return study_report(ws, study_id)


def list_studies(ws: Workspace):
    df = ws.query_df("SELECT study_id, name, status, message, created_at, updated_at, report_dir, pid, pid_started "
                     "FROM studies ORDER BY created_at DESC")
    df["status"] = pd.Series([shown_status(r.status, r.pid, r.pid_started) for r in df.itertuples()],
                             index=df.index, dtype=object)
    return df.drop(columns=["pid", "pid_started"])


def _mean_sd(v: list[float]) -> tuple[float | None, float | None]:
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def study_report(ws: Workspace, study_id: str) -> dict[str, Any]:
    """Everything the study found, JSON-ready: per strategy the final model's mean and spread, the
    proxy-level best-so-far curves, the predictors' quality per round, the final weights and their
    epochs per cluster at the final scale, and the transfer from proxy scores to final scores."""
    row = _study_row(ws, study_id)
    config = config_from_dict(json.loads(row["config_json"]))
    finals = ws.query_df("SELECT * FROM study_finals WHERE study_id = ? AND status = 'done'", [study_id])
    strategies: dict[str, dict[str, Any]] = {}
    labels = cluster_ids = scale = None
    for arm in arms(config):
        sid = f"{study_id}-{arm.key}"
        if not ws.scalar("SELECT count(*) FROM searches WHERE search_id = ?", [sid]):
            continue
        rep = search_report(ws, sid)
        labels, cluster_ids, scale = rep["cluster_labels"], rep["cluster_ids"], rep["final_scale"]
        st = strategies.setdefault(arm.label, {"label": arm.label, "strategy": arm.strategy, "searches": []})
        f = finals[finals["search_id"] == sid]["score"].tolist() if len(finals) else []
        st["searches"].append({
            "search_id": sid, "seed": arm.seed, "status": rep["status"],
            "proxy_best": None if not rep["best_run"] else rep["best_run"]["score"],
            "final": rep["final"], "final_weights": rep["final_weights"],
            "final_epochs": rep["final_scale"]["epochs"], **_proxy_score(rep),
            "scale_spearman": (rep.get("scaling") or {}).get("spearman"),
            "final_scores": [float(x) for x in f], "final_mean": _mean_sd(f)[0],
            "best_so_far": [b["best"] for b in rep["best_so_far"]],
            "predictors": [{"round": r["round"], "predictor": r.get("predictor"), "spearman": r.get("spearman"),
                            "r2": r.get("r2"), "n_train": r.get("n_train")} for r in rep["predictor_reports"]],
        })
    for st in strategies.values():
        if st["strategy"] in FIXED:   # one mixture: its spread is over the final model's seeds
            st["final_mean"], st["final_sd"] = _mean_sd(st["searches"][0]["final_scores"])
            st["final_sd_over"] = "final-model seeds"
            st["spread_n"] = len(st["searches"][0]["final_scores"])
        else:
            st["final_mean"], st["final_sd"] = _mean_sd([s["final_mean"] for s in st["searches"]
                                                         if s["final_mean"] is not None])
            st["final_sd_over"] = "search seeds"
            st["spread_n"] = sum(s["final_mean"] is not None for s in st["searches"])
        st["n_final"] = sum(len(s["final_scores"]) for s in st["searches"])
        ws_ = [np.asarray(s["final_weights"]) for s in st["searches"] if s["final_weights"]]
        st["mean_weights"] = np.mean(ws_, axis=0).tolist() if ws_ else None
        eps = [s["final_epochs"] for s in st["searches"] if s["final_epochs"] and None not in s["final_epochs"]]
        st["mean_epochs"] = np.mean(eps, axis=0).tolist() if eps else None
        curves = [s["best_so_far"] for s in st["searches"] if s["best_so_far"]]
        n = min((len(c) for c in curves), default=0)
        st["best_so_far_mean"] = np.mean([c[:n] for c in curves], axis=0).tolist() if n else []
    fc = _final_config(config)
    comparisons = compare_finals(strategies)
    return {
        "study_id": study_id, "name": row["name"], "status": shown_status(row["status"], row.get("pid"), row.get("pid_started")),
        "message": row["message"],
        "target": json.loads(row["target_json"] or "[]"), "budget": config.search.budget,
        "proxy": {"kind": config.proxy.kind, "tokens": config.proxy.tokens},
        "final_model": {"kind": fc.proxy.kind, "tokens": fc.proxy.tokens, "seeds": config.study.final_seeds,
                        "n_layer": fc.proxy.n_layer, "n_embd": fc.proxy.n_embd,
                        "searches_final_tokens": config.mixture.final_tokens,
                        "max_epochs": config.mixture.max_epochs},
        "final_scale": None if scale is None else {k: scale[k] for k in ("tokens", "source", "max_epochs", "cluster_tokens")},
        "cluster_ids": jsonable(cluster_ids), "cluster_labels": jsonable(labels), "strategies": strategies,
        "comparisons": comparisons, "verdict": verdict_text(comparisons), "transfer": transfer(strategies),
        "scaling": scaling_summary(strategies), "report_dir": row["report_dir"],
    }


def scaling_summary(strategies: dict[str, dict]) -> dict[str, Any] | None:
    """Scaling mode's rank check over the study: per search, the Spearman of the retrained mixtures'
    scores at the two scales (RegMix's rank invariance); None when no search ran in scaling mode."""
    rows = [{"label": st["label"], "seed": s["seed"], "spearman": s["scale_spearman"]}
            for st in strategies.values() for s in st["searches"] if s.get("scale_spearman") is not None]
    if not rows:
        return None
    v = [r["spearman"] for r in rows]
    return {"searches": rows, "mean": float(np.mean(v)), "min": float(np.min(v))}


def _proxy_score(rep: dict[str, Any]) -> dict[str, Any]:
    """A search's own score of its final mixture on the proxies: the verification runs' mean where
    the final was verified, else the best run's score (the final of random and RegMix is that run)."""
    verified = (rep.get("final") or {}).get("verified")
    if verified is not None:
        where = "verified at the larger scale" if rep.get("scaling") else "verified"
        return {"proxy_score": float(verified), "proxy_score_from": where}
    if rep.get("best_run"):
        return {"proxy_score": float(rep["best_run"]["score"]), "proxy_score_from": "best run"}
    return {"proxy_score": None, "proxy_score_from": None}


TRANSFER_RULE = ("The ranking flips when the strategy with the best mean proxy score is not the one with the best "
                 "mean final-model score, or when two strategies swap order and the final-scale gap is larger than "
                 "both their final-scale spreads (each measured over at least two seeds).")


def _spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho, or None with fewer than 3 pairs or a constant side (no ranking to compare)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = spearmanr(x, y)[0]
    return float(rho) if math.isfinite(rho) else None


def transfer(strategies: dict[str, dict]) -> dict[str, Any]:
    """Does a strategy's standing on the proxies hold on the final model? Per search its proxy score
    of the final mixture against the final model's mean; per strategy the means of both; Spearman's
    rho over searches and over strategies; the flips of TRANSFER_RULE and a warning naming them."""
    rows, per = [], []
    for st in strategies.values():
        pairs = []
        for s in st["searches"]:
            rows.append({"label": st["label"], "strategy": st["strategy"], "search_id": s["search_id"],
                         "seed": s["seed"], "proxy_score": s.get("proxy_score"),
                         "proxy_score_from": s.get("proxy_score_from"), "final_mean": s.get("final_mean")})
            if s.get("proxy_score") is not None and s.get("final_mean") is not None:
                pairs.append((s["proxy_score"], s["final_mean"]))
        if pairs and st.get("final_mean") is not None:
            per.append({"label": st["label"], "proxy_mean": float(np.mean([p[0] for p in pairs])),
                        "final_mean": float(st["final_mean"]), "final_sd": st.get("final_sd"),
                        "spread_n": st.get("spread_n") or 0, "n": len(pairs)})
    both = [r for r in rows if r["proxy_score"] is not None and r["final_mean"] is not None]
    flips: list[dict[str, Any]] = []
    if len(per) >= 2:
        top_proxy = max(per, key=lambda p: p["proxy_mean"])
        top_final = max(per, key=lambda p: p["final_mean"])
        if top_proxy["label"] != top_final["label"]:
            flips.append({"kind": "best", "proxy_best": top_proxy["label"], "final_best": top_final["label"]})
        for a in per:
            for b in per:
                if a["proxy_mean"] <= b["proxy_mean"] or a["final_mean"] >= b["final_mean"]:
                    continue  # a leads on the proxies and trails on the final model, or no swap
                if a["spread_n"] < 2 or b["spread_n"] < 2:
                    continue
                gap = b["final_mean"] - a["final_mean"]
                if gap > max(a["final_sd"] or 0.0, b["final_sd"] or 0.0):
                    flips.append({"kind": "pair", "proxy_ahead": a["label"], "final_ahead": b["label"], "gap": gap,
                                  "spreads": [a["final_sd"], b["final_sd"]]})
    return {"rows": rows, "strategies": per,
            "spearman_searches": _spearman([r["proxy_score"] for r in both], [r["final_mean"] for r in both]),
            "n_searches": len(both),
            "spearman_strategies": _spearman([p["proxy_mean"] for p in per], [p["final_mean"] for p in per]),
            "n_strategies": len(per), "flips": flips, "warning": transfer_warning(flips), "rule": TRANSFER_RULE}


def transfer_warning(flips: list[dict[str, Any]]) -> str | None:
    if not flips:
        return None
    parts = []
    for f in flips:
        if f["kind"] == "best":
            parts.append(f"{f['proxy_best']} is best on the proxies but {f['final_best']} is best on the final model")
        else:
            parts.append(f"{f['proxy_ahead']} leads {f['final_ahead']} on the proxies but trails it on the final model "
                         f"by {f['gap']:.4f}, more than both spreads")
    return ("the ranking of strategies does not hold at the final scale: " + "; ".join(parts)
            + ". Judge the mixtures by the final model's scores, not the proxies'.")


def compare_finals(strategies: dict[str, dict]) -> list[dict[str, Any]]:
    """The best CLIMB arm's final against each baseline: the gap, the spread it is judged against and
    the word for it. A spread needs two values on both sides (two search seeds, or two final-model
    seeds for a fixed mixture); with fewer there is no spread to judge by, so no verdict is drawn."""
    climb = [s for k, s in strategies.items() if k.startswith("climb") and s.get("final_mean") is not None]
    if not climb:
        return []
    best = max(climb, key=lambda s: s["final_mean"])
    rows = []
    for other in ("natural", "uniform", "regmix", "random"):
        o = strategies.get(other)
        if not o or o.get("final_mean") is None:
            continue
        gap = best["final_mean"] - o["final_mean"]
        measured = (best.get("spread_n") or 0) >= 2 and (o.get("spread_n") or 0) >= 2
        spread = max(best.get("final_sd") or 0.0, o.get("final_sd") or 0.0) if measured else None
        if spread is None:
            word = "has no seed spread to be judged against"
        else:
            word = "beats" if gap > spread else ("trails" if gap < -spread else "is within the seed spread of")
        rows.append({"label": best["label"], "other": other, "gap": gap, "spread": spread, "word": word})
    return rows


def verdict_text(comparisons: list[dict[str, Any]]) -> str:
    if not comparisons:
        return "no CLIMB final was trained"
    parts = []
    for c in comparisons:
        if c["spread"] is None:
            parts.append(f"{c['label']} vs {c['other']}: {c['gap']:+.4f}, one seed only, no verdict "
                         "(run at least 2 seeds)")
        else:
            parts.append(f"{c['label']} {c['word']} {c['other']} ({c['gap']:+.4f}; spread {c['spread']:.4f})")
    return "; ".join(parts)


def _fmt(v, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def report_markdown(rep: dict[str, Any]) -> str:
    lines = [f"# Study {rep['name']} ({rep['study_id']})", "",
             f"Target: {', '.join(t.get('name') or t.get('path', '') for t in rep['target'])}; budget {rep['budget']} "
             f"proxy runs per search ({rep['proxy']['kind']}, {rep['proxy']['tokens']:,} tokens). Final model: "
             f"{rep['final_model']['kind']} on {rep['final_model']['tokens']:,} tokens, {rep['final_model']['seeds']} seeds.",
             "", f"**Verdict:** {rep['verdict']}", ""]
    tr = rep.get("transfer") or {}
    if tr.get("warning"):
        lines += [f"**Warning:** {tr['warning']}", ""]
    lines += [
             "| strategy | final model score (mean) | spread (sd) | spread over | searches | best proxy run (mean) |",
             "|---|---|---|---|---|---|"]
    for st in sorted(rep["strategies"].values(), key=lambda s: -(s.get("final_mean") or -math.inf)):
        pb = [s["proxy_best"] for s in st["searches"] if s["proxy_best"] is not None]
        lines.append(f"| {st['label']} | {_fmt(st.get('final_mean'))} | {_fmt(st.get('final_sd'))} | "
                     f"{st.get('final_sd_over')} | {len(st['searches'])} | {_fmt(float(np.mean(pb)) if pb else None)} |")
    lines += transfer_markdown(tr)
    lines += scaling_markdown(rep.get("scaling"))
    labels = rep.get("cluster_labels") or []
    ids = rep.get("cluster_ids") or []
    lines += epochs_markdown(rep)
    lines += ["", "## Final weights (mean over seeds; top 6 clusters)", ""]
    for st in rep["strategies"].values():
        w = st.get("mean_weights")
        if not w:
            continue
        top = sorted(zip(w, ids, labels), reverse=True)[:6]
        lines.append(f"- **{st['label']}**: " + ", ".join(f"#{c} {str(lab)[:40]} {x:.1%}" for x, c, lab in top))
    lines += ["", "## Predictor quality per round (CLIMB; cross-validated Spearman)", ""]
    for st in rep["strategies"].values():
        if st["strategy"] != "climb":
            continue
        for s in st["searches"]:
            cells = [f"r{p['round']} {p['predictor']} {_fmt(p['spearman'], 2)}" for p in s["predictors"]]
            lines.append(f"- {st['label']} seed {s['seed']}: " + "; ".join(cells))
    lines += ["", "Plots: study.html (best-so-far curves, final scores, weights). Data: study.json.", ""]
    return "\n".join(lines)


def transfer_markdown(tr: dict[str, Any]) -> list[str]:
    if not tr or not tr.get("strategies"):
        return []
    lines = ["", "## Transfer: proxy scale vs final scale", "",
             "Each search's final mixture as scored on the proxies (its verification runs' mean, or its best run's "
             "score when it was not verified) against the final model's mean score. Spearman's rho over "
             f"searches: {_fmt(tr.get('spearman_searches'), 2)} ({tr.get('n_searches', 0)} searches); over the "
             f"strategies' means: {_fmt(tr.get('spearman_strategies'), 2)} ({tr.get('n_strategies', 0)} strategies; "
             "– below 3).", "",
             "| strategy | proxy score (mean) | final model score (mean) | final spread (sd) | searches |",
             "|---|---|---|---|---|"]
    for p in sorted(tr["strategies"], key=lambda p: -p["proxy_mean"]):
        lines.append(f"| {p['label']} | {_fmt(p['proxy_mean'])} | {_fmt(p['final_mean'])} | {_fmt(p.get('final_sd'))} "
                     f"| {p['n']} |")
    lines += ["", f"{tr.get('rule', TRANSFER_RULE)} "
              + (f"**Flips:** {tr['warning']}" if tr.get("warning") else "No flips.")]
    return lines


def scaling_markdown(sc: dict[str, Any] | None) -> list[str]:
    if not sc:
        return []
    cells = ", ".join(f"{r['label']} seed {r['seed']} {r['spearman']:.2f}" for r in sc["searches"])
    return ["", "## Scaling mode: does the proxy's ranking hold at the larger scale?", "",
            f"Spearman of the retrained mixtures' scores at the two scales, per search: {cells} "
            f"(mean {sc['mean']:.2f}, lowest {sc['min']:.2f})."]


def epochs_markdown(rep: dict[str, Any]) -> list[str]:
    """Per strategy, the clusters its mean final mixture repeats (past 1 epoch) at the final scale."""
    scale = rep.get("final_scale") or {}
    if not scale.get("cluster_tokens"):
        return []
    ids = rep.get("cluster_ids") or []
    lines = ["", f"## Epochs per cluster at the final scale ({scale['tokens']:,} tokens)", "",
             f"Epochs = weight x {scale['tokens']:,} / the cluster's training tokens (cap: "
             f"{_fmt(scale.get('max_epochs'), 1)}; the final scale is {scale.get('source')}).", ""]
    for st in rep["strategies"].values():
        ep = st.get("mean_epochs")
        if not ep:
            continue
        over = [f"#{c} {e:.2f}" for c, e in zip(ids, ep) if e is not None and e > 1]
        lines.append(f"- **{st['label']}**: max {max(e for e in ep if e is not None):.2f} epochs; "
                     + (f"past 1 epoch: {', '.join(over)}" if over else "no cluster past 1 epoch"))
    return lines


def report_figures(rep: dict[str, Any]) -> list:
    """Plotly figures of a study (the dashboard's Study page and study.html draw the same)."""
    import plotly.graph_objects as go

    figs = []
    f1 = go.Figure()
    for st in rep["strategies"].values():
        if st["best_so_far_mean"]:
            f1.add_scatter(y=st["best_so_far_mean"], x=list(range(1, len(st["best_so_far_mean"]) + 1)),
                           mode="lines", name=st["label"])
    f1.update_layout(title="Best proxy score so far (mean over search seeds)", xaxis_title="proxy runs",
                     yaxis_title="score")
    figs.append(f1)
    f2 = go.Figure()
    for st in rep["strategies"].values():
        pts = [(s["seed"], x) for s in st["searches"] for x in s["final_scores"]]
        if pts:
            f2.add_box(y=[p[1] for p in pts], name=st["label"], boxpoints="all")
    f2.update_layout(title="Final model score per strategy (every search seed x final seed)", yaxis_title="score")
    figs.append(f2)
    # Plotly reads text as HTML: a cluster label (corpus text) is escaped before it becomes a tick.
    names = [html.escape(f"{c}: {str(lab)[:24]}") for c, lab in zip(rep.get("cluster_ids") or [],
                                                                     rep.get("cluster_labels") or [])]
    f3 = go.Figure()
    for st in rep["strategies"].values():
        if st.get("mean_weights") and len(st["mean_weights"]) == len(names):
            f3.add_bar(x=names, y=st["mean_weights"], name=st["label"])
    f3.update_layout(title="Final weights per strategy (mean over seeds)", barmode="group", yaxis_tickformat=".0%")
    figs.append(f3)
    f4 = go.Figure()
    for st in rep["strategies"].values():
        pts = [r for r in (rep.get("transfer") or {}).get("rows", [])
               if r["label"] == st["label"] and r["proxy_score"] is not None and r["final_mean"] is not None]
        if pts:
            f4.add_scatter(x=[r["proxy_score"] for r in pts], y=[r["final_mean"] for r in pts], mode="markers",
                           name=st["label"], marker=dict(size=10),
                           hovertext=[f"{r['search_id']} ({r['proxy_score_from']})" for r in pts])
    f4.update_layout(title="Transfer: each search's final mixture, proxy score vs final model score",
                     xaxis_title="proxy score", yaxis_title="final model score (mean over final seeds)")
    figs.append(f4)
    return figs


def write_report(rep: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(rep, indent=2, default=str))
    (out / "study.md").write_text(report_markdown(rep))
    figs = report_figures(rep)
    # One page, plotly.js inlined once: it opens offline.
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    (out / "study.html").write_text("<html><head><meta charset='utf-8'><title>study</title></head><body>"
                                    + "".join(parts) + "</body></html>")
    return out


__all__ = ["Arm", "TRANSFER_RULE", "arms", "create_study", "list_studies", "report_figures", "report_markdown",
           "run_study", "study_report", "transfer", "transfer_warning", "with_final_scale", "write_report"]
