"""Keywords, labels and representatives on real demo documents."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from climb_core.pipeline import edits, refine
from climb_core.pipeline.describe import ctfidf_keywords, describe_clusters, run_describe
from tests.helpers import (assert_invariants, build_base_workspace, build_refined_workspace, copy_ws,
                           refine_config)

LEGAL_WORDS = {"court", "tribunal", "appeal", "appellant", "applicant", "respondent", "judge", "federal",
               "proceedings", "magistrate", "honour", "fca", "application", "minister", "act"}
SCIENCE_WORDS = {"learning", "neural", "model", "models", "networks", "network", "training", "data",
                 "task", "tasks", "performance", "method", "deep", "propose", "approach"}


@pytest.fixture
def ws(tmp_path_factory, tmp_path):
    return copy_ws(build_refined_workspace(tmp_path_factory), tmp_path / "ws")


@pytest.fixture
def base_described(tmp_path_factory, tmp_path):
    """The 12 k-means clusters, unmerged, described."""
    ws = copy_ws(build_base_workspace(tmp_path_factory), tmp_path / "base")
    config = refine_config(**{"prune.min_size": 0, "merge.target_clusters": 0})
    refine.run_refine(ws, config, progress=False)
    run_describe(ws, config, progress=False)
    return ws


def _cluster_with_most(ws, domain: str) -> int:
    return int(ws.scalar("""
        SELECT dc.cluster_id FROM doc_clusters dc JOIN documents d USING (doc_idx)
        WHERE json_extract_string(d.meta_json, '$.domain') = ? GROUP BY ALL ORDER BY count(*) DESC LIMIT 1""", [domain]))


def test_keywords_name_the_topic_of_known_clusters(base_described):
    ws = base_described
    legal = _cluster_with_most(ws, "legal")
    science = _cluster_with_most(ws, "science_abstracts")
    kw = {int(c): list(k) for c, k in ws.query_df("SELECT cluster_id, keywords FROM clusters").itertuples(index=False)}
    assert len(kw[legal]) == 10
    assert len(set(kw[legal]) & LEGAL_WORDS) >= 2, kw[legal]
    assert len(set(kw[science]) & SCIENCE_WORDS) >= 2, kw[science]
    # c-TF-IDF keeps a topic's words to its own clusters: no legal word heads the science cluster.
    assert not set(kw[science][:3]) & LEGAL_WORDS


def test_labels_come_from_keywords_and_stop_words_are_gone(base_described):
    ws = base_described
    rows = ws.query_df("SELECT label, auto_label, label_source, keywords FROM clusters WHERE state = 'active'")
    assert len(rows) == 12
    for label, auto, source, keywords in rows.itertuples(index=False):
        assert auto == " / ".join(list(keywords)[:3]) and label == auto and source == "auto"
        assert not {"the", "and", "of", "to"} & set(keywords)
        assert all(w.isalpha() for w in keywords)


def test_representatives_are_the_nearest_documents(base_described):
    from climb_core.pipeline.describe import load_embeddings_or_none

    ws = base_described
    emb = load_embeddings_or_none(ws)
    reps = ws.query_df("SELECT cluster_id, rank, doc_idx, distance FROM representatives ORDER BY cluster_id, rank")
    assert reps.groupby("cluster_id").size().eq(5).all() and reps["cluster_id"].nunique() == 12
    cents = ws.query_df("SELECT cluster_id, centroid FROM clusters").set_index("cluster_id")["centroid"]
    members = ws.query_df("SELECT cluster_id, doc_idx FROM doc_clusters")
    for cid, group in members.groupby("cluster_id"):
        c = np.asarray(cents[cid], dtype=np.float32)
        e = emb[group["doc_idx"].to_numpy()]
        cos = (e @ c) / (np.linalg.norm(e, axis=1) * np.linalg.norm(c))
        expect = group["doc_idx"].to_numpy()[np.argsort(-cos, kind="stable")[:5]]
        got = reps.loc[reps["cluster_id"] == cid].sort_values("rank")
        assert got["doc_idx"].tolist() == expect.tolist()
        assert np.allclose(got["distance"], 1 - np.sort(cos)[::-1][:5], atol=1e-5)


def test_without_embeddings_representatives_follow_kmeans_distance(base_described):
    ws = base_described
    shutil.rmtree(ws.embeddings_dir)
    ws.embeddings_dir.mkdir()
    cid = _cluster_with_most(ws, "legal")
    describe_clusters(ws, refine_config(), [cid])
    got = ws.query_df("SELECT doc_idx FROM representatives WHERE cluster_id = ? ORDER BY rank", [cid])["doc_idx"]
    expect = ws.query_df("""SELECT a.doc_idx FROM assignments a JOIN doc_clusters dc USING (doc_idx)
                            WHERE dc.cluster_id = ? ORDER BY a.distance, a.doc_idx LIMIT 5""", [cid])["doc_idx"]
    assert got.tolist() == expect.tolist()


def test_edit_describes_new_cluster_and_stage_reruns(ws):
    config = refine_config()
    assert run_describe(ws, config, progress=False).skipped
    a, b = edits.active_clusters(ws)["cluster_id"].astype(int).tolist()[:2]
    new_id = edits.merge_clusters(ws, [a, b], config=config)
    row = ws.query_df("SELECT label, keywords FROM clusters WHERE cluster_id = ?", [new_id]).iloc[0]
    assert row["label"] and len(row["keywords"]) == 10
    # The merged cluster's keywords come from its members' documents.
    members_kw = set(ws.scalar("SELECT flatten(list(keywords)) FROM clusters WHERE cluster_id IN (?, ?)", [a, b]))
    assert set(row["keywords"][:5]) & members_kw
    assert ws.scalar("SELECT count(*) FROM representatives WHERE cluster_id = ?", [new_id]) == 5
    out = run_describe(ws, config, progress=False)
    assert not out.skipped, "an edit makes the describe stage stale"
    assert run_describe(ws, config, progress=False).skipped
    edits.undo(ws)
    assert not run_describe(ws, config, progress=False).skipped, "so does an undo"
    assert_invariants(ws)


def test_ctfidf_prefers_class_specific_terms():
    from scipy import sparse

    words = np.array(["common", "court", "neural"], dtype=object)
    counts = sparse.csr_matrix(np.array([[10, 5, 0], [10, 0, 5]], dtype=float))
    assert ctfidf_keywords(counts, words, 2) == [["court", "common"], ["neural", "common"]]


@pytest.mark.parametrize("max_docs, rows", [(2000, 7), (5, 3)])
def test_streamed_counts_equal_the_per_class_counts(ws, max_docs, rows):
    """The describe stage's one-pass term counts (small batches, in doc_idx order) are the same
    class-by-term matrix as vectorising each class's joined sample, with a sample that takes every
    document and with one that takes 5 per class."""
    from climb_core.pipeline import describe

    with ws.connect() as con:
        class_ids = describe._doc_holding_ids(con)
        joined, words_j = describe._class_counts(
            lambda chunk: describe.read_class_texts(con, chunk, max_docs), class_ids)
    streamed, words_s = describe._streamed_counts(
        describe.stream_class_texts(ws, class_ids, max_docs, rows=rows), len(class_ids))
    assert joined.shape[1] > 100 and sorted(words_j) == sorted(words_s)
    order = np.argsort(words_s.astype(str))
    ref = np.argsort(words_j.astype(str))
    np.testing.assert_array_equal(streamed.tocsr()[:, order].toarray(), joined[:, ref].toarray())
    assert describe.ctfidf_keywords(streamed, words_s, 8) == describe.ctfidf_keywords(joined, words_j, 8)
