"""A study: every strategy on one workspace, target and budget, compared where it matters.

A search's own scores come from small proxies; a study asks whether its final mixture is better
for a larger model. It runs each strategy (CLIMB once per predictor, RegMix, random over
`study.seeds` search seeds; uniform and natural once, being fixed mixtures), re-trains every final
mixture as the final model (`study.final_kind`, `final_token_multiple` x the proxy's tokens,
`final_seeds` training seeds), and writes a report: Markdown, JSON and an HTML page of plots.

Resumable at every level: search ids are derived from the study id, each search resumes itself, and
each final training is one row in `study_finals`, skipped once done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
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
    proxy-level best-so-far curves, the predictors' quality per round, and the final weights."""
    row = _study_row(ws, study_id)
    config = config_from_dict(json.loads(row["config_json"]))
    finals = ws.query_df("SELECT * FROM study_finals WHERE study_id = ? AND status = 'done'", [study_id])
    strategies: dict[str, dict[str, Any]] = {}
    labels = cluster_ids = None
    for arm in arms(config):
        sid = f"{study_id}-{arm.key}"
        if not ws.scalar("SELECT count(*) FROM searches WHERE search_id = ?", [sid]):
            continue
        rep = search_report(ws, sid)
        labels, cluster_ids = rep["cluster_labels"], rep["cluster_ids"]
        st = strategies.setdefault(arm.label, {"label": arm.label, "strategy": arm.strategy, "searches": []})
        f = finals[finals["search_id"] == sid]["score"].tolist() if len(finals) else []
        st["searches"].append({
            "search_id": sid, "seed": arm.seed, "status": rep["status"],
            "proxy_best": None if not rep["best_run"] else rep["best_run"]["score"],
            "final": rep["final"], "final_weights": rep["final_weights"],
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
                        "n_layer": fc.proxy.n_layer, "n_embd": fc.proxy.n_embd},
        "cluster_ids": jsonable(cluster_ids), "cluster_labels": jsonable(labels), "strategies": strategies,
        "comparisons": comparisons, "verdict": verdict_text(comparisons), "report_dir": row["report_dir"],
    }


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
             "", f"**Verdict:** {rep['verdict']}", "",
             "| strategy | final model score (mean) | spread (sd) | spread over | searches | best proxy run (mean) |",
             "|---|---|---|---|---|---|"]
    for st in sorted(rep["strategies"].values(), key=lambda s: -(s.get("final_mean") or -math.inf)):
        pb = [s["proxy_best"] for s in st["searches"] if s["proxy_best"] is not None]
        lines.append(f"| {st['label']} | {_fmt(st.get('final_mean'))} | {_fmt(st.get('final_sd'))} | "
                     f"{st.get('final_sd_over')} | {len(st['searches'])} | {_fmt(float(np.mean(pb)) if pb else None)} |")
    labels = rep.get("cluster_labels") or []
    ids = rep.get("cluster_ids") or []
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
    names = [f"{c}: {str(lab)[:24]}" for c, lab in zip(rep.get("cluster_ids") or [], rep.get("cluster_labels") or [])]
    f3 = go.Figure()
    for st in rep["strategies"].values():
        if st.get("mean_weights") and len(st["mean_weights"]) == len(names):
            f3.add_bar(x=names, y=st["mean_weights"], name=st["label"])
    f3.update_layout(title="Final weights per strategy (mean over seeds)", barmode="group", yaxis_tickformat=".0%")
    figs.append(f3)
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


__all__ = ["Arm", "arms", "create_study", "list_studies", "report_figures", "report_markdown", "run_study",
           "study_report", "write_report"]
