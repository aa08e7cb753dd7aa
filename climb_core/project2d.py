"""The map stage: a 2-D UMAP of the embeddings for the dashboard.

Corpora larger than map.max_points are sampled per cluster (every cluster keeps at least one point,
the rest in proportion to size), so small clusters stay visible on the map.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from climb_core import stages
from climb_core.config import ClimbConfig, MapConfig
from climb_core.stages import StageError, StageOutcome
from climb_core.workspace import Workspace

STAGE = "map"
BACKENDS = ("auto", "cuml", "umap")


def projection_method(n: int, cfg: MapConfig) -> str:
    """'pca' when UMAP cannot build its neighbour graph, else the UMAP backend that will run."""
    if n < cfg.n_neighbors + 2:
        return "pca"
    if cfg.backend not in BACKENDS:
        raise StageError(f"map.backend={cfg.backend!r}: use one of {', '.join(BACKENDS)}")
    if cfg.backend != "auto":
        return cfg.backend
    try:
        import cuml  # noqa: F401
        import torch
    except ImportError:
        return "umap"
    return "cuml" if torch.cuda.is_available() else "umap"


def _pca(X: np.ndarray) -> np.ndarray:
    out = np.zeros((X.shape[0], 2), dtype=np.float32)
    if X.shape[0] < 2:
        return out
    centred = X.astype(np.float64) - X.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T
    out[:, :proj.shape[1]] = proj
    return out


def project(X: np.ndarray, cfg: MapConfig) -> np.ndarray:
    """2-D coordinates (n x 2 float32) of the rows of X: UMAP with the cosine metric, fixed seed."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    method = projection_method(X.shape[0], cfg)
    if method == "pca":
        return _pca(X)
    if method == "cuml":
        try:
            from cuml.manifold import UMAP as CuUMAP
        except ImportError as err:
            raise StageError("map.backend=cuml but cuML is not installed; use backend=umap") from err
        reducer = CuUMAP(n_components=2, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist,
                         metric="cosine", random_state=cfg.seed)
        coords = reducer.fit_transform(X)
        coords = coords.get() if hasattr(coords, "get") else np.asarray(coords)
    else:
        import umap

        # A fixed random_state makes umap-learn deterministic (and single-threaded).
        reducer = umap.UMAP(n_components=2, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist,
                            metric="cosine", random_state=cfg.seed, n_jobs=1, low_memory=True)
        coords = reducer.fit_transform(X)
    coords = np.asarray(coords, dtype=np.float32)
    if not np.isfinite(coords).all():
        raise StageError("UMAP returned non-finite coordinates; try a larger map.n_neighbors or backend=umap")
    return coords


def stratified_sample(labels: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices: at most max_points, every cluster kept, the rest shared by size."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    clusters, sizes = np.unique(labels, return_counts=True)
    if len(clusters) >= max_points:
        # More clusters than points: one point from each of the largest clusters.
        keep = set(clusters[np.argsort(-sizes, kind="stable")[:max_points]].tolist())
        quota = np.array([1 if c in keep else 0 for c in clusters])
    else:
        share = (max_points - len(clusters)) * (sizes - 1) / max(1, (sizes - 1).sum())
        quota = 1 + np.floor(share).astype(int)
        # Hand out what flooring left over, largest remainders first.
        spare = max_points - quota.sum()
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        for j in order:
            if spare <= 0:
                break
            if quota[j] < sizes[j]:
                quota[j] += 1
                spare -= 1
        quota = np.minimum(quota, sizes)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    picked = [rng.choice(order[s:s + size], size=q, replace=False)
              for s, size, q in zip(starts, sizes, quota) if q > 0]
    return np.sort(np.concatenate(picked))


def current_clusters(ws: Workspace, n_docs: int) -> np.ndarray | None:
    """Each document's current cluster: the refine stage's if it ran, else k-means', else None."""
    with ws.connect() as con:
        for table, column in (("doc_clusters", "cluster_id"), ("assignments", "base_cluster")):
            df = con.execute(f"SELECT doc_idx, {column} AS c FROM {table} ORDER BY doc_idx").df()
            if len(df) == n_docs:
                return df["c"].to_numpy()
    return None


def run_map(ws: Workspace, config: ClimbConfig, *, force: bool = False, progress: bool = True) -> StageOutcome:
    from climb_core.embed import embeddings_available, iter_embedding_shards

    cfg = config.map
    n_docs = ws.table_count("documents")
    if n_docs == 0:
        raise StageError(f"no documents in {ws.root}; run `climb ingest {ws.root}` first")
    if not embeddings_available(ws):
        raise StageError(f"the map needs embeddings of all {n_docs} documents of {ws.root}; run `climb embed {ws.root}` first")
    cluster_rec = stages.stage_record(ws, "cluster")
    # The sample depends on the clusters, which may come from the cluster stage alone (no refine yet).
    fp = stages.fingerprint(ws, STAGE, config.section_dict("map"),
                            {"n_docs": n_docs, "cluster": cluster_rec.fingerprint if cluster_rec else None})
    if not force and stages.is_current(ws, STAGE, fp):
        return StageOutcome(STAGE, skipped=True)
    with stages.run_stage(ws, STAGE, config.section_dict("map"), fp) as run:
        if n_docs > cfg.max_points:
            labels = current_clusters(ws, n_docs)
            if labels is None:
                labels = np.zeros(n_docs, dtype=np.int64)
            idx = stratified_sample(labels, cfg.max_points, cfg.seed)
        else:
            idx = np.arange(n_docs)
        parts = []
        for start, block in iter_embedding_shards(ws):
            lo, hi = np.searchsorted(idx, [start, start + block.shape[0]])
            parts.append(block[idx[lo:hi] - start])
        X = np.concatenate(parts)
        method = projection_method(len(X), cfg)
        if progress:
            print(f"map: projecting {len(X)} documents with {method}", flush=True)
        coords = project(X, cfg)
        df = pd.DataFrame({"doc_idx": idx.astype(np.int64), "x": coords[:, 0], "y": coords[:, 1]})
        with ws.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM map_coords")
            con.register("coords_df", df)
            con.execute("INSERT INTO map_coords SELECT doc_idx, x, y FROM coords_df")
            con.execute("COMMIT")
        run.rows_in, run.rows_out = n_docs, len(idx)
        run.message = (f"{method.upper()} of {len(idx)} of {n_docs} documents"
                       + (f" (fewer than n_neighbors+2={cfg.n_neighbors + 2} points: PCA instead of UMAP)"
                          if method == "pca" else "")
                       + (" (stratified sample by cluster)" if len(idx) < n_docs else ""))
    return StageOutcome(STAGE, skipped=False, rows_in=n_docs, rows_out=len(idx), message=run.message)
