"""The map stage: a 2-D UMAP of the embeddings for the dashboard.

Corpora larger than map.max_points are sampled per cluster (every cluster keeps at least one point,
the rest in proportion to size), so small clusters stay visible on the map.

UMAP is fitted on at most map.fit_sample documents (the same stratified sampling); the others are
placed with the fitted model's `transform`, map.transform_batch rows at a time, streamed from the
memmapped embedding shards. Peak memory then depends on fit_sample and transform_batch, not on the
corpus size. When fit_sample covers every projected document the result is a plain fit_transform.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError, StageOutcome
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig, MapConfig
from climb_core.pipeline.registry import READS, UPSTREAM

log = logging.getLogger(__name__)

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


def _reducer(cfg: MapConfig, method: str):
    if method == "cuml":
        try:
            from cuml.manifold import UMAP as CuUMAP
        except ImportError as err:
            raise StageError("map.backend=cuml but cuML is not installed; use backend=umap") from err
        return CuUMAP(n_components=2, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist,
                      metric="cosine", random_state=cfg.seed)
    import umap

    # A fixed random_state makes umap-learn deterministic (and single-threaded).
    return umap.UMAP(n_components=2, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist,
                     metric="cosine", random_state=cfg.seed, n_jobs=1, low_memory=True)


def _finite(coords) -> np.ndarray:
    coords = coords.get() if hasattr(coords, "get") else coords
    coords = np.asarray(coords, dtype=np.float32)
    if not np.isfinite(coords).all():
        raise StageError("UMAP returned non-finite coordinates; try a larger map.n_neighbors or backend=umap")
    return coords


def project(X: np.ndarray, cfg: MapConfig) -> np.ndarray:
    """2-D coordinates (n x 2 float32) of the rows of X: UMAP with the cosine metric, fixed seed."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    method = projection_method(X.shape[0], cfg)
    if method == "pca":
        return _pca(X)
    return _finite(_reducer(cfg, method).fit_transform(X))


def fit_and_transform(fit_X: np.ndarray, batches, cfg: MapConfig):
    """Fit UMAP on fit_X, then place every array yielded by `batches` with the fitted model.

    Returns (coords of fit_X, iterator of coords per batch); the iterator keeps one batch in memory
    at a time, so callers can stream arbitrarily many rows through it."""
    method = projection_method(fit_X.shape[0], cfg)
    if method == "pca":
        raise StageError(f"map.fit_sample={fit_X.shape[0]} is too small for UMAP; use at least n_neighbors+2")
    reducer = _reducer(cfg, method)
    fit_coords = _finite(reducer.fit_transform(np.ascontiguousarray(fit_X, dtype=np.float32)))

    def placed():
        for batch in batches:
            yield _finite(reducer.transform(np.ascontiguousarray(batch, dtype=np.float32)))

    return fit_coords, placed()


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


def _gather(ws: Workspace, rows: np.ndarray) -> np.ndarray:
    """The embeddings of the sorted doc_idx `rows`, gathered into one array (no parts to concatenate)."""
    from climb_core.pipeline.embed import embedding_rows

    return embedding_rows(ws)[rows]


def _stream_batches(ws: Workspace, idx: np.ndarray, batch_pos: list[np.ndarray]):
    """The embeddings of idx[pos] for each pos in batch_pos (each sorted), one batch in memory at a
    time; a batch may span shards."""
    from climb_core.pipeline.embed import iter_embedding_shards

    shards = iter_embedding_shards(ws)
    start, block = next(shards)
    for pos in batch_pos:
        rows, parts = idx[pos], []
        while len(rows):
            if rows[0] >= start + block.shape[0]:
                start, block = next(shards)
                continue
            hi = np.searchsorted(rows, start + block.shape[0])
            parts.append(np.array(block[rows[:hi] - start], dtype=np.float32))
            rows = rows[hi:]
        yield np.concatenate(parts)


def current_clusters(ws: Workspace, n_docs: int) -> np.ndarray | None:
    """Each document's current cluster: the refine stage's if it ran, else k-means', else None."""
    with ws.connect() as con:
        for table, column in (("doc_clusters", "cluster_id"), ("assignments", "base_cluster")):
            df = con.execute(f"SELECT doc_idx, {column} AS c FROM {table} ORDER BY doc_idx").df()
            if len(df) == n_docs:
                return df["c"].to_numpy()
    return None


def run_map(ws: Workspace, config: ClimbConfig, *, force: bool = False, progress: bool = True) -> StageOutcome:
    from climb_core.pipeline.embed import embeddings_available

    cfg = config.map
    n_docs = ws.table_count("documents")
    if n_docs == 0:
        raise StageError(f"no documents in {ws.root}; run `climb ingest {ws.root}` first")
    if not embeddings_available(ws):
        raise StageError(f"the map needs embeddings of all {n_docs} documents of {ws.root}; run `climb embed {ws.root}` first")
    cluster_rec = stages.stage_record(ws, "cluster")
    # The sample depends on the clusters, which may come from the cluster stage alone (no refine yet).
    fp = stages.fingerprint(ws, STAGE, config.section_dict("map"),
                            {"n_docs": n_docs, "cluster": cluster_rec.fingerprint if cluster_rec else None},
                            upstream=UPSTREAM[STAGE])
    if not force and stages.is_current(ws, STAGE, fp):
        return StageOutcome(STAGE, skipped=True)
    with stages.run_stage(ws, STAGE, config.section_dict("map"), fp, upstream=READS[STAGE]) as run:
        labels = current_clusters(ws, n_docs) if n_docs > min(cfg.max_points, cfg.fit_sample) else None
        if labels is None:
            labels = np.zeros(n_docs, dtype=np.int64)
        idx = stratified_sample(labels, cfg.max_points, cfg.seed) if n_docs > cfg.max_points else np.arange(n_docs)
        fitted = ""
        if len(idx) <= cfg.fit_sample:
            method = projection_method(len(idx), cfg)
            log.info("map: projecting %d documents with %s", len(idx), method)
            coords = project(_gather(ws, idx), cfg)
        else:
            method = projection_method(cfg.fit_sample, cfg)
            # positions (into idx) of the documents UMAP is fitted on; the rest are transformed
            fit_pos = stratified_sample(labels[idx], cfg.fit_sample, cfg.seed)
            log.info("map: fitting %s on %d of %d documents, placing the rest in batches of %d",
                     method, len(fit_pos), len(idx), cfg.transform_batch)
            coords = np.empty((len(idx), 2), dtype=np.float32)
            rest = np.ones(len(idx), dtype=bool)
            rest[fit_pos] = False
            rest_pos = np.flatnonzero(rest)
            batch_pos = np.array_split(rest_pos, max(1, -(-len(rest_pos) // max(1, cfg.transform_batch))))
            fit_coords, placed = fit_and_transform(
                _gather(ws, idx[fit_pos]), _stream_batches(ws, idx, batch_pos), cfg)
            coords[fit_pos] = fit_coords
            from tqdm.auto import tqdm

            for pos, xy in tqdm(zip(batch_pos, placed), total=len(batch_pos), desc="map", unit="batch",
                                disable=not progress):
                coords[pos] = xy
            fitted = f" (fitted on {len(fit_pos)}, the other {len(idx) - len(fit_pos)} placed with transform)"
        df = pd.DataFrame({"doc_idx": idx.astype(np.int64), "x": coords[:, 0], "y": coords[:, 1]})
        with ws.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM map_coords")
            con.register("coords_df", df)
            con.execute("INSERT INTO map_coords SELECT doc_idx, x, y FROM coords_df")
            con.execute("COMMIT")
        run.rows_in, run.rows_out = n_docs, len(idx)
        run.message = (f"{method.upper()} of {len(idx)} of {n_docs} documents{fitted}"
                       + (f" (fewer than n_neighbors+2={cfg.n_neighbors + 2} points: PCA instead of UMAP)"
                          if method == "pca" else "")
                       + (" (stratified sample by cluster)" if len(idx) < n_docs else ""))
    return StageOutcome(STAGE, skipped=False, rows_in=n_docs, rows_out=len(idx), message=run.message)
