"""What a search shows: its summary, and the JSON-ready report of every run, round and predictor."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig, config_from_dict
from climb_core.search.final_scale import scale_of_row
from climb_core.search.records import load_search, search_runs, shown_status
from climb_core.search.strategies import plan
from climb_core.search.scaling import rank_transfer
from climb_core.search.warm import warm_info


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
    final: dict[str, Any] = field(default_factory=dict)  # how the final was chosen and verified


def summarize(ws: Workspace, search_id: str) -> SearchSummary:
    row = load_search(ws, search_id)
    runs = search_runs(ws, search_id)
    runs = runs[runs["purpose"].fillna("explore") != "warm"]  # a warm run was trained for another search
    done = runs[runs["status"] == "done"]
    best = done.loc[done["score"].idxmax()] if len(done) else None
    fw = row["final_weights"]
    fp = row["final_predicted"]
    return SearchSummary(
        search_id=search_id, strategy=row["strategy"], status=shown_status(row), n_runs=len(runs), n_done=len(done),
        n_failed=int((runs["status"] == "failed").sum()),
        best_run_id=None if best is None else best["run_id"], best_score=None if best is None else float(best["score"]),
        final_weights=None if fw is None or (isinstance(fw, float)) else [float(x) for x in fw],
        final_predicted=None if fp is None or pd.isna(fp) else float(fp),
        cluster_ids=[int(i) for i in row["cluster_ids"]], final=_final_json(row))


def _final_json(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("final_json")
    return json.loads(raw) if isinstance(raw, str) and raw else {}


def jsonable(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (dt.datetime, pd.Timestamp)):
        return None if pd.isna(v) else v.isoformat()
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if v is pd.NaT:
        return None
    return v


def search_report(ws: Workspace, search_id: str) -> dict[str, Any]:
    """Everything the dashboard and `climb runs --json` show about one search, JSON-ready."""
    row = load_search(ws, search_id)
    runs = search_runs(ws, search_id)
    reports = ws.query_df("SELECT * FROM predictor_reports WHERE search_id = ? ORDER BY round", [search_id])
    run_list = []
    for r in runs.to_dict("records"):
        run_list.append({
            "run_id": r["run_id"], "round": int(r["round"]), "idx": int(r["idx"]), "status": r["status"],
            "weights": jsonable(r["weights"]), "seed": int(r["seed"]), "tokens": jsonable(r["tokens"]),
            "predicted": jsonable(r["predicted"]), "predicted_sd": jsonable(r.get("predicted_sd")),
            "purpose": r.get("purpose") or "explore", "score": jsonable(r["score"]),
            "scores": json.loads(r["scores_json"]) if isinstance(r["scores_json"], str) else None,
            "epochs": json.loads(r["epochs_json"]) if isinstance(r["epochs_json"], str) else None,
            "loss_curve": jsonable(r["loss_curve"]), "wall_s": jsonable(r["wall_s"]), "host": r["host"],
            "proposed_at": jsonable(r["proposed_at"]), "finished_at": jsonable(r["finished_at"]), "error": r["error"],
            "warm": r.get("purpose") == "warm", "source_search": _str_or_none(r.get("source_search")),
            "source_run": _str_or_none(r.get("source_run")), "mapping": _str_or_none(r.get("mapping")),
        })
    # Best score so far, in the order runs finished: the search's learning curve (its own runs only).
    finished = sorted((r for r in run_list if r["status"] == "done" and not r["warm"]), key=lambda r: (r["finished_at"] or "", r["round"], r["idx"]))
    best_so_far, best = [], -math.inf
    for i, r in enumerate(finished, start=1):
        best = max(best, r["score"])
        best_so_far.append({"n": i, "run_id": r["run_id"], "score": r["score"], "best": best})
    best_run = max(finished, key=lambda r: r["score"]) if finished else None
    cfg = json.loads(row["config_json"])
    c = ClimbConfig() if not cfg else config_from_dict(cfg)
    p = plan(row["strategy"], c)
    preds = []
    for rep in reports.to_dict("records"):
        d = {k: jsonable(v) for k, v in rep.items() if k != "candidates_json"}
        d["candidates"] = json.loads(rep["candidates_json"]) if isinstance(rep.get("candidates_json"), str) else []
        preds.append(d)
    return {
        "search_id": search_id, "name": row["name"], "strategy": row["strategy"], "status": shown_status(row),
        "message": row["message"], "created_at": jsonable(row["created_at"]), "updated_at": jsonable(row["updated_at"]),
        "pid": jsonable(row["pid"]), "config": cfg, "target": json.loads(row["target_json"] or "[]"),
        "cluster_ids": jsonable(row["cluster_ids"]), "cluster_labels": jsonable(row["cluster_labels"]),
        "prior": jsonable(row["prior"]),
        "round_sizes": p.explore + ([p.verify] if p.verify else []),
        "verify_round": p.verify_round if p.verify else None,
        "scale_round": p.scale_round,
        "runs": run_list,
        "predictor_reports": preds,
        "best_so_far": best_so_far,
        "best_run": best_run,
        "final_weights": jsonable(row["final_weights"]),
        "final_predicted": jsonable(row["final_predicted"]),
        "final": _final_json(row),
        "final_scale": _final_scale(row, c),
        "warm_start": warm_info(row),
        "scaling": rank_transfer(ws, search_id),
        "n_warm": sum(1 for r in run_list if r["warm"]),
    }


def _final_scale(row: dict[str, Any], config: ClimbConfig) -> dict[str, Any]:
    """The final scale and the final mixture's epochs per cluster there (the per-cluster detail,
    labels included, is `search_final_scale`'s; the report keeps the numbers in cluster_ids order)."""
    scale = scale_of_row(row, config)
    scale.pop("clusters")
    return scale


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None
