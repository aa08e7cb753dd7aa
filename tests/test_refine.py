"""The refine stage on real demo documents: prune rules, Ward merges, lineage, automatic edits undone.

The fixture builds its own workspace (documents, simple stats, MiniLM embeddings, faiss k-means) so
these tests do not depend on the ingest/embed/cluster stages; it is built once per session and each
test works on a copy. The builders live in `tests/helpers.py`, shared with `tests/test_edits.py` and
`tests/test_describe.py`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from climb_core.catalogue.workspace import Workspace
from tests.helpers import K_BASE, assert_invariants, build_base_workspace, copy_ws, refine_config


def _is_list(v) -> bool:
    return isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0


# ----------------------------------------------------------------------------------------- tests
@pytest.fixture
def base_ws(tmp_path_factory, tmp_path) -> Workspace:
    return copy_ws(build_base_workspace(tmp_path_factory), tmp_path / "ws")


def _base_sizes(ws: Workspace) -> pd.DataFrame:
    return ws.query_df("""SELECT a.base_cluster AS cluster_id, count(*) AS n, avg(s.quality) AS q
                          FROM assignments a JOIN doc_stats s USING (doc_idx) GROUP BY ALL ORDER BY cluster_id""")


def test_run_refine_prunes_by_size_and_quality_and_merges_to_target(base_ws):
    from climb_core.pipeline.edits import list_edits
    from climb_core.pipeline.refine import run_refine

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
    config = refine_config(**{"prune.min_size": min_size, "prune.min_quality": 0.3, "merge.target_clusters": 5})

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
    from climb_core.pipeline.edits import cluster_lineage
    from climb_core.pipeline.refine import run_refine

    ws = base_ws
    run_refine(ws, refine_config(**{"merge.target_clusters": 4}), progress=False)
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
    from climb_core.pipeline.refine import run_refine

    ws = base_ws
    run_refine(ws, refine_config(**{"merge.target_clusters": 4}), progress=False)
    rows = ws.query_df("SELECT cluster_id, size_docs, centroid, parent_ids FROM clusters").set_index("cluster_id")
    new = rows[rows["parent_ids"].map(_is_list)]
    for cid, row in new.iterrows():
        members = rows.loc[list(row["parent_ids"])]
        expect = np.average(np.stack(members["centroid"].to_list()), axis=0, weights=members["size_docs"])
        expect /= np.linalg.norm(expect)
        assert np.allclose(np.asarray(row["centroid"]), expect, atol=1e-5)


def test_distance_threshold_cut(base_ws):
    from climb_core.pipeline.refine import run_refine

    ws = base_ws
    run_refine(ws, refine_config(**{"merge.distance_threshold": 100.0}), progress=False)
    assert ws.scalar("SELECT count(*) FROM clusters WHERE state = 'active'") == 1, "a huge threshold merges all"
    run_refine(ws, refine_config(**{"merge.distance_threshold": 1e-6}), force=True, progress=False)
    assert ws.scalar("SELECT count(*) FROM clusters WHERE state = 'merged'") == 0, "a tiny one merges none"
    assert_invariants(ws)


def test_no_prune_no_merge_is_the_kmeans_state(base_ws):
    from climb_core.pipeline.edits import list_edits, undo
    from climb_core.pipeline.refine import run_refine

    ws = base_ws
    out = run_refine(ws, refine_config(**{"prune.min_size": 0, "merge.target_clusters": 0}), progress=False)
    assert out.message.startswith(f"{K_BASE} base -> 0 pruned -> {K_BASE} active clusters")
    assert list_edits(ws).empty
    assert undo(ws) is None
    same = ws.scalar("""SELECT count(*) FROM doc_clusters dc JOIN assignments a USING (doc_idx)
                        WHERE dc.cluster_id = a.base_cluster""")
    assert same == ws.table_count("documents")
    assert_invariants(ws)


def test_rerun_skips_and_force_resets_user_edits(base_ws):
    from climb_core.pipeline.edits import active_clusters, list_edits, rename_cluster
    from climb_core.pipeline.refine import run_refine

    ws = base_ws
    config = refine_config()
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
    from climb_core.pipeline.edits import list_edits, undo
    from climb_core.pipeline.refine import run_refine

    ws = base_ws
    run_refine(ws, refine_config(), progress=False)
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
    from climb_core.catalogue.stages import StageError
    from climb_core.pipeline.refine import run_refine

    ws = Workspace.init(tmp_path / "empty")
    with pytest.raises(StageError, match="climb cluster"):
        run_refine(ws, refine_config(), progress=False)


def test_active_clusters_and_lineage_frames(base_ws):
    from climb_core.pipeline.edits import active_clusters, cluster_lineage
    from climb_core.pipeline.refine import run_refine

    ws = base_ws
    run_refine(ws, refine_config(), progress=False)
    act = active_clusters(ws)
    assert len(act) == 6 and (act["state"] == "active").all() and "centroid" not in act
    assert act["size_docs"].is_monotonic_decreasing
    lin = cluster_lineage(ws)
    assert list(lin.columns) == ["cluster_id", "base_cluster", "n_docs"]
    assert lin["n_docs"].sum() == ws.table_count("documents")
