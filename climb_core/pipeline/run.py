"""The stages in order, and the workspace's state as one machine-readable summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from climb_core.catalogue.stages import StageOutcome, all_stage_records
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline.registry import PIPELINE, STAGE_NAMES, stage_function

def planned_stages(config: ClimbConfig) -> list[str]:
    """The stages run-all performs. A pre-clustered corpus skips embedding and k-means, and so the map."""
    if config.ingest.cluster_field:
        return [s for s in PIPELINE if s not in ("embed", "map")]
    return list(PIPELINE)


def run_stage(ws: Workspace, stage: str, config: ClimbConfig | None = None, *, force: bool = False,
              progress: bool = True) -> StageOutcome:
    config = config or ws.load_config()
    return stage_function(stage)(ws, config, force=force, progress=progress)


def run_all(ws: Workspace, config: ClimbConfig | None = None, *, force: bool = False, progress: bool = True,
            on_stage: Callable[[StageOutcome], None] | None = None) -> list[StageOutcome]:
    """Run every stage in order; finished stages with unchanged inputs are skipped."""
    config = config or ws.load_config()
    outcomes = []
    for stage in planned_stages(config):
        outcome = run_stage(ws, stage, config, force=force, progress=progress)
        outcomes.append(outcome)
        if on_stage:
            on_stage(outcome)
    return outcomes


def _counts(ws: Workspace) -> dict[str, Any]:
    with ws.connect() as con:
        def one(sql: str) -> Any:
            return con.execute(sql).fetchone()[0]

        rejected = dict(con.execute("SELECT reason, count(*) FROM rejected GROUP BY reason ORDER BY 2 DESC").fetchall())
        states = dict(con.execute("SELECT state, count(*) FROM clusters GROUP BY state").fetchall())
        searches = con.execute(
            "SELECT search_id, name, strategy, status, message, updated_at FROM searches ORDER BY created_at").fetchall()
        return {
            "documents": one("SELECT count(*) FROM documents"),
            "chars": one("SELECT coalesce(sum(n_chars), 0) FROM doc_stats"),
            "tokens_est": one("SELECT coalesce(sum(n_tokens_est), 0) FROM doc_stats"),
            "rejected": {"total": sum(rejected.values()), "by_reason": rejected},
            "base_clusters": one("SELECT count(*) FROM base_clusters"),
            "clusters": {"active": states.get("active", 0), "pruned": states.get("pruned", 0),
                         "merged": states.get("merged", 0), "split": states.get("split", 0)},
            "edits": one("SELECT count(*) FROM edits WHERE NOT undone"),
            "map_points": one("SELECT count(*) FROM map_coords"),
            "searches": [
                {"search_id": s[0], "name": s[1], "strategy": s[2], "status": s[3], "message": s[4],
                 "updated_at": None if s[5] is None else s[5].isoformat(timespec="seconds")}
                for s in searches],
        }


def active_cluster_summary(ws: Workspace) -> list[dict[str, Any]]:
    with ws.connect() as con:
        rows = con.execute(
            "SELECT cluster_id, label, size_docs, size_tokens, mean_quality FROM clusters "
            "WHERE state = 'active' ORDER BY size_docs DESC").fetchall()
    return [{"cluster_id": r[0], "label": r[1], "size_docs": r[2], "size_tokens": r[3],
             "mean_quality": None if r[4] is None else round(float(r[4]), 4)} for r in rows]


def workspace_status(ws: Workspace) -> dict[str, Any]:
    """Everything `climb status --json` prints: stages done and pending, counts, clusters."""
    config = ws.load_config()
    records = all_stage_records(ws)
    stages = []
    for stage in [*planned_stages(config), *(s for s in STAGE_NAMES if s not in PIPELINE)]:
        rec = records.get(stage)
        stages.append({
            "stage": stage,
            "status": rec.shown_status if rec else "pending",
            "finished_at": rec.finished_at.isoformat(timespec="seconds") if rec and rec.finished_at else None,
            "rows_in": rec.rows_in if rec else None,
            "rows_out": rec.rows_out if rec else None,
            "message": rec.message if rec else None,
        })
    return {
        "workspace": str(ws.root),
        "schema_version": ws.schema_version(),
        "stages": stages,
        **_counts(ws),
        "active_clusters": active_cluster_summary(ws),
    }
