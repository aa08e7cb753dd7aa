"""k-means backends and the cluster stage on real demo embeddings (5 true domains, labels withheld)."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from climb_core.pipeline import cluster, embed

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError
from climb_core.catalogue.workspace import Workspace
from tests.helpers import demo_rows, documents_workspace, embed_config

N_DOCS = 240
# Measured on these 240 documents with k=5, seed 0: faiss 0.80, sklearn 0.83. The floor sits below.
NMI_FLOOR = 0.65


@pytest.fixture(scope="module")
def rows():
    return demo_rows(N_DOCS)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, rows):
    config = embed_config(**{"cluster.k": 5, "embed.shard_size": 100})
    ws = documents_workspace(tmp_path_factory.mktemp("clu") / "ws", rows, config)
    embed.run_embed(ws, config, progress=False)
    return ws, config


@pytest.fixture
def ws_copy(embedded, tmp_path):
    ws, config = embedded
    shutil.copytree(ws.root, tmp_path / "ws")
    return Workspace.open(tmp_path / "ws"), copy.deepcopy(config)


@pytest.fixture(scope="module")
def X(embedded):
    return embed.load_embeddings(embedded[0])


@pytest.fixture(scope="module")
def domains(rows):
    return np.array([r["domain"] for r in rows])


def test_choose_k():
    assert cluster.choose_k(1) == 1
    assert cluster.choose_k(3) == 2
    assert cluster.choose_k(100) == 10
    assert cluster.choose_k(10_000) == 100
    assert cluster.choose_k(50_000_000) == 1000
    assert all(2 <= cluster.choose_k(n) <= min(n, 1000) for n in range(2, 3000, 7))


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_backends_find_the_domains(X, domains, backend):
    centroids = cluster.kmeans_fit(X, 5, backend=backend, niter=25, seed=0)
    assert centroids.shape == (5, 384) and centroids.dtype == np.float32
    labels, dist = cluster.assign(X, centroids, batch_size=64)
    nmi = normalized_mutual_info_score(domains, labels)
    print(f"\n{backend}: NMI vs true domain {nmi:.3f}")
    assert nmi > NMI_FLOOR
    # Deterministic for a fixed seed.
    np.testing.assert_array_equal(cluster.kmeans_fit(X, 5, backend=backend, seed=0), centroids)


def test_assign_matches_numpy(X):
    centroids = cluster.kmeans_fit(X, 7, backend="faiss", seed=1)
    labels, dist = cluster.assign(X, centroids, batch_size=50)
    d_all = np.linalg.norm(X[:, None, :].astype(np.float64) - centroids[None].astype(np.float64), axis=2)
    np.testing.assert_allclose(dist, d_all.min(1), atol=1e-4)
    # Where two centroids tie to rounding either is right; everywhere else the label must be the argmin.
    gap = np.sort(d_all, 1)[:, 1] - d_all.min(1)
    assert (labels == d_all.argmin(1))[gap > 1e-5].all()
    assert labels.dtype == np.int32 and dist.dtype == np.float32


def test_auto_backend_is_faiss_on_cpu():
    assert cluster.pick_backend("auto") in {"faiss", "cuml"}
    with pytest.raises(StageError):
        cluster.pick_backend("nope")


def test_run_cluster_writes_every_document_once(embedded, domains):
    ws, config = embedded
    outcome = cluster.run_cluster(ws, config, progress=False)
    assert not outcome.skipped
    a = ws.query_df("SELECT * FROM assignments ORDER BY doc_idx")
    b = ws.query_df("SELECT * FROM base_clusters ORDER BY base_cluster")
    assert a["doc_idx"].tolist() == list(range(N_DOCS))
    assert b["base_cluster"].tolist() == list(range(len(b)))  # dense ids
    assert (b["size"] > 0).all() and b["size"].sum() == N_DOCS
    assert a.groupby("base_cluster").size().to_dict() == dict(zip(b["base_cluster"], b["size"]))
    C = np.stack(b["centroid"].to_numpy()).astype(np.float32)
    X = embed.load_embeddings(ws)
    d = np.linalg.norm(X - C[a["base_cluster"].to_numpy()], axis=1)
    np.testing.assert_allclose(a["distance"].to_numpy(), d, atol=1e-4)
    assert normalized_mutual_info_score(domains, a["base_cluster"]) > NMI_FLOOR
    # Same config: nothing to do.
    assert cluster.run_cluster(ws, config, progress=False).skipped


def test_sample_fit_then_batch_assign(ws_copy, monkeypatch):
    ws, config = ws_copy
    config.cluster.sample_size = 100
    config.cluster.assign_batch_size = 30
    config.cluster.k = 0  # auto: round(sqrt(240)) = 15
    fitted, batches = [], []
    real_fit, real_assign = cluster.kmeans_fit, cluster.assign
    monkeypatch.setattr(cluster, "kmeans_fit", lambda X, k, **kw: fitted.append((len(X), k)) or real_fit(X, k, **kw))
    monkeypatch.setattr(cluster, "assign", lambda X, C, bs: batches.append((len(X), bs)) or real_assign(X, C, bs))
    outcome = cluster.run_cluster(ws, config, progress=False)
    assert fitted == [(100, 15)]
    assert batches == [(100, 30), (100, 30), (40, 30)]  # streamed shard by shard
    assert "on 100 of 240" in outcome.message
    assert ws.table_count("assignments") == N_DOCS
    assert ws.scalar("SELECT count(DISTINCT doc_idx) FROM assignments") == N_DOCS


def test_empty_clusters_are_dropped_and_renumbered(ws_copy, monkeypatch):
    ws, config = ws_copy
    real_fit = cluster.kmeans_fit
    # A far-away extra centroid never wins a document.
    monkeypatch.setattr(cluster, "kmeans_fit",
                        lambda X, k, **kw: np.vstack([real_fit(X, k, **kw), np.full((1, X.shape[1]), 50.0, np.float32)]))
    outcome = cluster.run_cluster(ws, config, force=True, progress=False)
    assert "1 empty cluster(s) dropped" in outcome.message
    assert ws.table_count("base_clusters") == 5
    assert ws.scalar("SELECT max(base_cluster) FROM assignments") == 4


def test_preset_clusters_skip_kmeans(rows, tmp_path, monkeypatch):
    """A pre-clustered corpus: its clusters, names kept; mean-embedding centroids when embedded."""
    sub = rows[:120]
    config = embed_config()
    ws = documents_workspace(tmp_path / "ws", sub, config, preset="domain")
    monkeypatch.setattr(cluster, "kmeans_fit", lambda *a, **k: pytest.fail("k-means ran on a preset corpus"))
    # Without embeddings: clusters but no centroids or distances.
    out = cluster.run_cluster(ws, config, progress=False)
    names = cluster.preset_cluster_names(ws)
    assert sorted(names.values()) == sorted({r["domain"] for r in sub}) and list(names) == list(range(len(names)))
    df = ws.query_df("SELECT a.doc_idx, a.base_cluster, a.distance, d.preset_cluster FROM assignments a "
                     "JOIN documents d USING (doc_idx) ORDER BY doc_idx")
    assert (df["base_cluster"].map(names) == df["preset_cluster"]).all()
    assert df["distance"].isna().all()
    assert ws.scalar("SELECT count(*) FROM base_clusters WHERE centroid IS NULL") == len(names)
    assert out.rows_out == len(names)
    # After embedding, the same stage recomputes (its inputs changed) and fills centroids.
    embed.run_embed(ws, config, progress=False)
    assert not cluster.run_cluster(ws, config, progress=False).skipped
    X = embed.load_embeddings(ws)
    b = ws.query_df("SELECT base_cluster, centroid FROM base_clusters ORDER BY base_cluster")
    labels = ws.query_df("SELECT base_cluster FROM assignments ORDER BY doc_idx")["base_cluster"].to_numpy()
    for cid, centroid in zip(b["base_cluster"], b["centroid"]):
        np.testing.assert_allclose(centroid, X[labels == cid].mean(0), atol=1e-5)


def test_numeric_preset_names_sort_numerically():
    assert cluster._preset_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert cluster._preset_order(["b", "a", "10"]) == ["10", "a", "b"]


def test_missing_embeddings_is_a_clear_error(rows, tmp_path):
    config = embed_config()
    ws = documents_workspace(tmp_path / "ws", rows[:10], config)
    with pytest.raises(StageError, match="climb embed"):
        cluster.run_cluster(ws, config, progress=False)
    assert stages.stage_record(ws, "cluster") is None
