"""The refine stage: reset the refined clusters to the k-means ones, then prune and Ward-merge them.

Its prunes and merges go through the edit API (edits.py) as edits of source `refine`, so each can be
undone like a curator's own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError, StageOutcome
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline.edits import is_vector, merge_clusters, prune_with_reasons
from climb_core.pipeline.registry import READS, UPSTREAM

REFINED_TABLES = ["clusters", "doc_clusters", "cluster_edges", "edits", "edit_cluster_before",
                  "edit_doc_moves", "representatives"]


def _reset(ws: Workspace) -> None:
    """One active cluster per base cluster, each document in its k-means cluster, an empty edit log."""
    with ws.connect() as con:
        con.begin()
        for table in REFINED_TABLES:
            con.execute(f"DELETE FROM {table}")
        con.execute("INSERT INTO doc_clusters SELECT doc_idx, base_cluster FROM assignments")
        con.execute("""
            INSERT INTO clusters BY NAME
            SELECT b.base_cluster AS cluster_id, 'auto' AS label_source, 'active' AS state,
                   coalesce(s.n, 0) AS size_docs, coalesce(s.tokens, 0) AS size_tokens, s.quality AS mean_quality,
                   b.centroid
            FROM base_clusters b LEFT JOIN (
                SELECT a.base_cluster, count(*) AS n, coalesce(sum(ds.n_tokens_est), 0) AS tokens, avg(ds.quality) AS quality
                FROM assignments a LEFT JOIN doc_stats ds USING (doc_idx) GROUP BY a.base_cluster) s USING (base_cluster)
            ORDER BY b.base_cluster""")
        # A pre-clustered corpus (e.g. ClimbLab) names its clusters: start from those names, kept
        # like a curator's labels so describe does not overwrite them.
        has_names = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() AND table_name = 'preset_cluster_names'").fetchone()[0]
        if has_names:
            con.execute("""UPDATE clusters SET label = n.name, label_source = 'user'
                           FROM preset_cluster_names n WHERE clusters.cluster_id = n.base_cluster""")
        con.commit()


def prune_reasons(clusters: pd.DataFrame, config: ClimbConfig) -> dict[int, str]:
    """Which clusters the prune rules drop, and why (the rule and the numbers)."""
    cfg = config.prune
    reasons: dict[int, str] = {}
    for cid, size, quality in zip(clusters["cluster_id"], clusters["size_docs"], clusters["mean_quality"]):
        why = []
        if size < cfg.min_size:
            why.append(f"size {int(size)} < min_size {cfg.min_size}")
        if quality is not None and not np.isnan(quality) and quality < cfg.min_quality:
            why.append(f"mean quality {quality:.3f} < min_quality {cfg.min_quality}")
        if why:
            reasons[int(cid)] = "; ".join(why)
    return reasons


def ward_groups(cluster_ids: list[int], centroids: np.ndarray, config: ClimbConfig) -> list[list[int]]:
    """Groups of >= 2 clusters to merge: Ward tree on centroids, cut by distance or into target groups."""
    from scipy.cluster.hierarchy import fcluster, linkage

    cfg = config.merge
    if len(cluster_ids) < 2:
        return []
    if cfg.distance_threshold > 0:
        labels = fcluster(linkage(centroids, method="ward"), t=cfg.distance_threshold, criterion="distance")
    elif 0 < cfg.target_clusters < len(cluster_ids):
        labels = fcluster(linkage(centroids, method="ward"), t=cfg.target_clusters, criterion="maxclust")
    else:
        return []
    groups: dict[int, list[int]] = {}
    for cid, lab in zip(cluster_ids, labels):
        groups.setdefault(int(lab), []).append(int(cid))
    return sorted((sorted(g) for g in groups.values() if len(g) >= 2), key=lambda g: g[0])


def run_refine(ws: Workspace, config: ClimbConfig, *, force: bool = False, progress: bool = True) -> StageOutcome:
    """Reset the refined clusters to the k-means ones, then prune and Ward-merge them as edits."""
    from tqdm import tqdm

    cfg = {"prune": config.section_dict("prune"), "merge": config.section_dict("merge")}
    fp = stages.fingerprint(ws, "refine", cfg, upstream=UPSTREAM["refine"])
    if not force and stages.is_current(ws, "refine", fp):
        return StageOutcome("refine", skipped=True)
    n_docs = ws.scalar("SELECT count(*) FROM assignments")
    if not n_docs:
        raise StageError(f"no k-means assignments in {ws.root}; run `climb cluster {ws.root}` first")
    with stages.run_stage(ws, "refine", cfg, fp, upstream=READS["refine"]) as run:
        _reset(ws)
        # Labels and keywords of the old clusters are gone: describe must run again.
        stages.invalidate(ws, "describe")
        base = ws.query_df("SELECT cluster_id, size_docs, mean_quality FROM clusters ORDER BY cluster_id")
        reasons = prune_reasons(base, config)
        if reasons:
            prune_with_reasons(ws, reasons, "refine")
        kept = ws.query_df("SELECT cluster_id, centroid FROM clusters WHERE state = 'active' ORDER BY cluster_id")
        with_centroid = kept[kept["centroid"].map(is_vector)]
        groups = []
        if len(with_centroid) == len(kept) and len(kept) >= 2:
            x = np.stack([np.asarray(v, dtype=np.float64) for v in kept["centroid"]])
            groups = ward_groups(kept["cluster_id"].tolist(), x, config)
        for group in tqdm(groups, desc="merge", disable=not progress):
            merge_clusters(ws, group, source="refine", config=config, describe=False)
        n_active = int(ws.scalar("SELECT count(*) FROM clusters WHERE state = 'active'"))
        run.rows_in = int(n_docs)
        run.rows_out = n_active
        run.message = (f"{len(base)} base -> {len(reasons)} pruned -> {n_active} active clusters "
                       f"({len(groups)} merges of {sum(len(g) for g in groups)} clusters)")
        if len(with_centroid) < len(kept):
            run.message += "; not merged: some clusters have no centroid (pre-clustered corpus)"
    return StageOutcome("refine", skipped=False, rows_in=run.rows_in, rows_out=run.rows_out, message=run.message)
