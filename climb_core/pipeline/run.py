"""The stages in order, and the workspace's state as one machine-readable summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from climb_core.catalogue import stages as records
from climb_core.catalogue.liveness import shown_status
from climb_core.catalogue.stages import StageOutcome, all_stage_records
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline.registry import PIPELINE, READS, STAGE_NAMES, stage_function

def planned_stages(config: ClimbConfig) -> list[str]:
    """The stages run-all performs. A pre-clustered corpus skips embedding and k-means, and so the map."""
    if config.ingest.cluster_field:
        return [s for s in PIPELINE if s not in ("embed", "map")]
    return list(PIPELINE)


def run_stage(ws: Workspace, stage: str, config: ClimbConfig | None = None, *, force: bool = False,
              progress: bool = True) -> StageOutcome:
    config = config or ws.load_config()
    outcome = stage_function(stage)(ws, config, force=force, progress=progress)
    if outcome.skipped:
        # Up to date by its own fingerprint, so built on the upstream outputs there are now.
        records.record_upstream(ws, stage, READS[stage])
    return outcome


def _reads(config: ClimbConfig) -> dict[str, list[str]]:
    """READS without the stages this workspace's pipeline does not run (a pre-clustered corpus has no
    embed): a record such a stage left from before is no input of anything now."""
    skipped = set(PIPELINE) - set(planned_stages(config))
    return {s: [u for u in ups if u not in skipped] for s, ups in READS.items() if s not in skipped}


def stale_stages(ws: Workspace, config: ClimbConfig | None = None) -> dict[str, str]:
    """{stage: why} for finished stages whose inputs changed since they ran (catalogue.stages.stale_stages)."""
    return records.stale_stages(ws, _reads(config or ws.load_config()))


def require_current(ws: Workspace, *stages: str, config: ClimbConfig | None = None) -> None:
    """Refuse (StageError naming the stage, the change and `climb run-all`) when the outputs that
    `stages` stand on are stale: a search, study or export on them would use clusters of documents
    that are no longer the corpus."""
    records.require_current(ws, list(stages), _reads(config or ws.load_config()), fix=f"climb run-all {ws.root}")


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
            "SELECT search_id, name, strategy, status, message, updated_at, pid, pid_started FROM searches "
            "ORDER BY created_at").fetchall()
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
                {"search_id": s[0], "name": s[1], "strategy": s[2], "status": shown_status(s[3], s[6], s[7]),
                 "message": s[4],
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


def stale_message(ws: Workspace, stage: str, reason: str, only: bool = False) -> str:
    """What a stale stage's row says: why, and the command that brings it up to date. Token files
    (`only` stale stage) are rewritten by the next search; behind other stale stages, run-all first."""
    if stage == "tokens" and only:
        return f"{reason}; searches re-run it (or run `climb tokens {ws.root}`)"
    return f"{reason}; run `climb run-all {ws.root}`"


def workspace_status(ws: Workspace) -> dict[str, Any]:
    """Everything `climb status --json` prints: stages done and pending, counts, clusters."""
    config = ws.load_config()
    recs = all_stage_records(ws)
    stale = records.stale_stages(ws, _reads(config), recs)
    stages = []
    for stage in [*planned_stages(config), *(s for s in STAGE_NAMES if s not in PIPELINE)]:
        rec = recs.get(stage)
        stages.append({
            "stage": stage,
            "status": "stale" if stage in stale else rec.shown_status if rec else "pending",
            "stale_reason": stale.get(stage),
            "finished_at": rec.finished_at.isoformat(timespec="seconds") if rec and rec.finished_at else None,
            "rows_in": rec.rows_in if rec else None,
            "rows_out": rec.rows_out if rec else None,
            "message": stale_message(ws, stage, stale[stage], len(stale) == 1) if stage in stale else rec.message if rec else None,
        })
    return {
        "workspace": str(ws.root),
        "schema_version": ws.schema_version(),
        "stages": stages,
        **_counts(ws),
        "active_clusters": active_cluster_summary(ws),
    }
