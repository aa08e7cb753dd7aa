"""k-means backends and the cluster stage: fit on a sample, assign every document in batches.

A corpus that arrives pre-clustered (every document has a preset_cluster, e.g. ClimbLab's 20
clusters) skips k-means: its clusters become the base clusters, and their names are kept in
`preset_cluster_names` so labels survive the renumbering.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError, StageOutcome
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline.registry import READS, UPSTREAM

STAGE = "cluster"
BACKENDS = ("auto", "cuml", "faiss", "sklearn")
PRESET_NAMES_DDL = "CREATE TABLE IF NOT EXISTS preset_cluster_names (base_cluster INTEGER, name VARCHAR)"


def choose_k(n: int) -> int:
    """About sqrt(N): at least 2, at most 1000 (the paper's K), never more than N."""
    return int(min(n, max(2, min(1000, round(math.sqrt(max(n, 0)))))))


def _has_cuml_gpu() -> bool:
    try:
        import cuml  # noqa: F401
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def pick_backend(backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise StageError(f"cluster.backend={backend!r}: use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if _has_cuml_gpu():
        return "cuml"
    return "faiss" if _has_faiss() else "sklearn"


def kmeans_fit(X: np.ndarray, k: int, backend: str = "auto", niter: int = 25, seed: int = 0) -> np.ndarray:
    """Centroids (k x d float32) of Lloyd's k-means on the rows of X (L2-normalised embeddings).

    Plain (not spherical) k-means: on unit vectors squared L2 is 2 - 2 cos, so it groups by cosine
    anyway, and the centroids' norms carry how spread a cluster is.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    if not 1 <= k <= n:
        raise StageError(f"k-means needs 1 <= k <= number of points; got k={k} for {n} points")
    backend = pick_backend(backend)
    if backend == "faiss":
        import faiss

        # Use every point given: the caller already sampled (faiss would subsample to 256 per centroid).
        km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=False, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=max(256, -(-n // k)))
        km.train(X)
        return np.asarray(km.centroids, dtype=np.float32).reshape(k, d)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, n_init=1, max_iter=niter, random_state=seed).fit(X)
        return km.cluster_centers_.astype(np.float32)
    if backend == "cuml":
        try:
            from cuml.cluster import KMeans as CuKMeans
        except ImportError as err:
            raise StageError("cluster.backend=cuml but cuML is not installed; "
                             "install requirements-gpu.txt or use backend=faiss") from err
        km = CuKMeans(n_clusters=k, max_iter=niter, random_state=seed, n_init=1).fit(X)
        centers = km.cluster_centers_
        centers = centers.get() if hasattr(centers, "get") else np.asarray(centers)
        return np.asarray(centers, dtype=np.float32)
    raise StageError(f"unknown k-means backend {backend!r}")


def assign(X: np.ndarray, centroids: np.ndarray, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int32) and Euclidean distance to it (float32) for each row, batch by batch."""
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=np.float32)
    index = None
    if _has_faiss():
        import faiss

        index = faiss.IndexFlatL2(centroids.shape[1])
        index.add(centroids)
    c_sq = (centroids.astype(np.float64) ** 2).sum(1) if index is None else None
    for lo in range(0, n, max(1, batch_size)):
        xb = np.ascontiguousarray(X[lo:lo + batch_size], dtype=np.float32)
        if index is not None:
            d2, ids = index.search(xb, 1)
            d2, ids = d2[:, 0], ids[:, 0]
        else:
            scores = c_sq[None, :] - 2.0 * (xb.astype(np.float64) @ centroids.T.astype(np.float64))
            ids = scores.argmin(1)
            d2 = scores[np.arange(len(ids)), ids] + (xb.astype(np.float64) ** 2).sum(1)
        labels[lo:lo + len(xb)] = ids
        # The expanded form |x|^2 - 2x.c + |c|^2 can dip just below zero by rounding.
        dist[lo:lo + len(xb)] = np.sqrt(np.maximum(d2, 0.0))
    return labels, dist


def _sample_rows(ws: Workspace, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` (sorted) of the embeddings, gathered straight into one float32 array: at 1M documents
    the 200k-row fit sample is 0.3 GB, and gathering it in parts then concatenating held it twice."""
    from climb_core.pipeline.embed import embedding_rows

    return embedding_rows(ws)[idx]


def _kmeans_clusters(ws: Workspace, config: ClimbConfig, n_docs: int, progress: bool):
    from climb_core.pipeline.embed import embedding_dim, iter_embedding_shards

    cfg = config.cluster
    rng = np.random.default_rng(cfg.seed)
    n_sample = min(n_docs, max(1, cfg.sample_size))
    idx = np.sort(rng.choice(n_docs, size=n_sample, replace=False)) if n_sample < n_docs else np.arange(n_docs)
    sample = _sample_rows(ws, idx)
    k_wanted = cfg.k if cfg.k > 0 else choose_k(n_docs)
    k = min(k_wanted, n_sample)
    backend = pick_backend(cfg.backend)
    centroids = kmeans_fit(sample, k, backend=backend, niter=cfg.niter, seed=cfg.seed)
    del sample
    k = len(centroids)

    labels = np.empty(n_docs, dtype=np.int32)
    dist = np.empty(n_docs, dtype=np.float32)
    with tqdm(total=n_docs, unit="doc", desc="assign", disable=not progress) as bar:
        for start, block in iter_embedding_shards(ws):
            lab, d = assign(block, centroids, cfg.assign_batch_size)
            labels[start:start + len(lab)] = lab
            dist[start:start + len(lab)] = d
            bar.update(len(lab))

    sizes = np.bincount(labels, minlength=k)
    keep = np.flatnonzero(sizes)
    renumber = np.full(k, -1, dtype=np.int32)
    renumber[keep] = np.arange(len(keep), dtype=np.int32)
    message = (f"k-means ({backend}) k={k} on {n_sample} of {n_docs} documents ({embedding_dim(ws)}-d)"
               + (f"; k lowered from {k_wanted} to the sample size" if k < k_wanted else "")
               + (f"; {k - len(keep)} empty cluster(s) dropped" if len(keep) < k else ""))
    return renumber[labels], dist, centroids[keep], sizes[keep], None, message


def _preset_order(values: list[str]) -> list[str]:
    """Numeric names in numeric order ('2' before '10'), otherwise plain string order."""
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _preset_clusters(ws: Workspace, n_docs: int, progress: bool):
    from climb_core.pipeline.embed import embeddings_available, iter_embedding_shards

    with ws.connect() as con:
        presets = con.execute("SELECT preset_cluster FROM documents ORDER BY doc_idx").fetchnumpy()["preset_cluster"]
    names = _preset_order(sorted(set(presets.tolist())))
    code = {name: i for i, name in enumerate(names)}
    labels = np.fromiter((code[v] for v in presets), dtype=np.int32, count=n_docs)
    sizes = np.bincount(labels, minlength=len(names))
    if not embeddings_available(ws):
        return labels, None, None, sizes, names, f"{len(names)} preset clusters (no embeddings: no centroids)"
    # Centroid = mean embedding of the cluster; distances follow from it, as for k-means.
    sums = None
    for start, block in tqdm(iter_embedding_shards(ws), desc="centroids", disable=not progress):
        if sums is None:
            sums = np.zeros((len(names), block.shape[1]), dtype=np.float64)
        np.add.at(sums, labels[start:start + len(block)], block)
    centroids = (sums / sizes[:, None]).astype(np.float32)
    dist = np.empty(n_docs, dtype=np.float32)
    for start, block in iter_embedding_shards(ws):
        lab = labels[start:start + len(block)]
        dist[start:start + len(block)] = np.linalg.norm(block - centroids[lab], axis=1)
    return labels, dist, centroids, sizes, names, f"{len(names)} preset clusters with mean-embedding centroids"


def _write(ws: Workspace, labels, dist, centroids, sizes, names) -> None:
    assignments = pd.DataFrame({"doc_idx": np.arange(len(labels), dtype=np.int64), "base_cluster": labels,
                                "distance": dist if dist is not None else np.full(len(labels), np.nan, np.float32)})
    base = pd.DataFrame({"base_cluster": np.arange(len(sizes), dtype=np.int32), "size": sizes.astype(np.int64),
                         "centroid": list(centroids) if centroids is not None else [None] * len(sizes)})
    with ws.connect() as con:
        con.execute(PRESET_NAMES_DDL)
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM assignments")
        con.execute("DELETE FROM base_clusters")
        con.execute("DELETE FROM preset_cluster_names")
        con.register("a_df", assignments)
        con.execute("INSERT INTO assignments SELECT doc_idx, base_cluster, "
                    "CASE WHEN isnan(distance) THEN NULL ELSE distance END FROM a_df")
        con.register("b_df", base)
        con.execute("INSERT INTO base_clusters SELECT base_cluster, size, CAST(centroid AS FLOAT[]) FROM b_df")
        if names is not None:
            con.register("n_df", pd.DataFrame({"base_cluster": np.arange(len(names), dtype=np.int32), "name": names}))
            con.execute("INSERT INTO preset_cluster_names SELECT base_cluster, name FROM n_df")
        con.execute("COMMIT")


def preset_cluster_names(ws: Workspace) -> dict[int, str]:
    """base_cluster -> the corpus's own cluster name, for a pre-clustered corpus (else empty)."""
    with ws.connect() as con:
        con.execute(PRESET_NAMES_DDL)
        return dict(con.execute("SELECT base_cluster, name FROM preset_cluster_names").fetchall())


def run_cluster(ws: Workspace, config: ClimbConfig, *, force: bool = False, progress: bool = True) -> StageOutcome:
    from climb_core.pipeline.embed import embeddings_available

    with ws.connect() as con:
        n_docs, n_preset = con.execute("SELECT count(*), count(preset_cluster) FROM documents").fetchone()
    if n_docs == 0:
        raise StageError(f"no documents in {ws.root}; run `climb ingest {ws.root}` first")
    preset = n_preset == n_docs
    has_emb = embeddings_available(ws)
    if not preset and not has_emb:
        detail = f" ({n_preset} of {n_docs} documents have a preset cluster, so k-means is needed)" if n_preset else ""
        raise StageError(f"no embeddings covering the {n_docs} documents of {ws.root}{detail}; "
                         f"run `climb embed {ws.root}` first")
    fp = stages.fingerprint(ws, STAGE, config.section_dict("cluster"),
                            {"n_docs": n_docs, "preset": preset, "embeddings": has_emb},
                            upstream=UPSTREAM[STAGE])
    if not force and stages.is_current(ws, STAGE, fp):
        return StageOutcome(STAGE, skipped=True)
    with stages.run_stage(ws, STAGE, config.section_dict("cluster"), fp, upstream=READS[STAGE]) as run:
        if preset:
            labels, dist, centroids, sizes, names, message = _preset_clusters(ws, n_docs, progress)
        else:
            labels, dist, centroids, sizes, names, message = _kmeans_clusters(ws, config, n_docs, progress)
        _write(ws, labels, dist, centroids, sizes, names)
        run.rows_in, run.rows_out, run.message = n_docs, len(sizes), message
    return StageOutcome(STAGE, skipped=False, rows_in=n_docs, rows_out=len(sizes), message=message)
