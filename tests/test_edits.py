"""The edit API: each edit and its undo round-trip to the exact prior state; invalid edits raise."""

from __future__ import annotations

import json

import pytest

from climb_core.pipeline import edits
from climb_core.pipeline.edits import ClusterEditError
from tests.helpers import assert_invariants, build_refined_workspace, copy_ws, refine_config, snapshot


@pytest.fixture
def ws(tmp_path_factory, tmp_path):
    return copy_ws(build_refined_workspace(tmp_path_factory), tmp_path / "ws")


def _active(ws) -> list[int]:
    """Active cluster ids, largest first."""
    return edits.active_clusters(ws)["cluster_id"].astype(int).tolist()


def _row(ws, cid: int) -> dict:
    df = ws.query_df("SELECT * EXCLUDE (centroid) FROM clusters WHERE cluster_id = ?", [cid])
    return df.iloc[0].to_dict()


def _round_trip(ws, edit):
    """Apply an edit, check the invariants, undo it, and require the exact prior state back."""
    before = snapshot(ws)
    n_edits = len(edits.list_edits(ws))
    result = edit()
    assert_invariants(ws)
    assert snapshot(ws) != before
    log = edits.list_edits(ws)
    assert len(log) == n_edits + 1 and not log.iloc[-1]["undone"]
    undone = edits.undo(ws)
    assert undone["edit_id"] == log.iloc[-1]["edit_id"]
    assert snapshot(ws) == before
    assert_invariants(ws)
    return result


def test_rename_round_trip(ws):
    cid = _active(ws)[0]
    _round_trip(ws, lambda: edits.rename_cluster(ws, cid, "  Court rulings "))
    edit_id = edits.rename_cluster(ws, cid, "Court rulings")
    row = _row(ws, cid)
    assert row["label"] == "Court rulings" and row["label_source"] == "user"
    assert edits.list_edits(ws).iloc[-1]["edit_id"] == edit_id


def test_prune_and_restore_round_trip(ws):
    a, b = _active(ws)[:2]
    _round_trip(ws, lambda: edits.prune_clusters(ws, [a, b], reason="off-topic"))
    edits.prune_clusters(ws, [a, b], reason="off-topic")
    assert _row(ws, a)["state"] == "pruned" and _row(ws, a)["reason"] == "off-topic"
    assert ws.scalar("SELECT count(*) FROM doc_clusters WHERE cluster_id = ?", [a]) == _row(ws, a)["size_docs"]
    _round_trip(ws, lambda: edits.restore_clusters(ws, [a]))
    edits.restore_clusters(ws, [a])
    assert _row(ws, a)["state"] == "active" and _row(ws, a)["reason"] is None


def test_merge_round_trip(ws):
    a, b, c = _active(ws)[:3]
    new_id = _round_trip(ws, lambda: edits.merge_clusters(ws, [a, b, c]))
    assert new_id == ws.scalar("SELECT max(cluster_id) FROM clusters") + 1, "undo removed the new cluster"
    new_id = edits.merge_clusters(ws, [a, b, c])
    row = _row(ws, new_id)
    sizes = ws.query_df("SELECT size_docs FROM clusters WHERE cluster_id IN (?, ?, ?)", [a, b, c])["size_docs"]
    assert row["state"] == "active" and row["size_docs"] == sizes.sum()
    assert sorted(row["parent_ids"]) == sorted([a, b, c]) and row["label_source"] == "auto"
    assert row["label"] and len(row["keywords"]) > 0, "the new cluster is described at once"
    assert ws.scalar("SELECT count(*) FROM representatives WHERE cluster_id = ?", [new_id]) == 5
    edges = ws.query_df("SELECT parent_id, child_id, op FROM cluster_edges WHERE child_id = ?", [new_id])
    assert sorted(edges["parent_id"]) == sorted([a, b, c]) and set(edges["op"]) == {"merge"}
    assert {_row(ws, m)["merged_into"] for m in (a, b, c)} == {new_id}


def test_split_round_trip(ws):
    cid = _active(ws)[0]
    n = _row(ws, cid)["size_docs"]
    children = _round_trip(ws, lambda: edits.split_cluster(ws, cid, 3, seed=0))
    assert len(children) == 3
    children = edits.split_cluster(ws, cid, 3, seed=0)
    assert _row(ws, cid)["state"] == "split"
    rows = [_row(ws, c) for c in children]
    assert sum(r["size_docs"] for r in rows) == n
    assert all(r["keywords"] is not None and len(r["keywords"]) > 0 and r["label"] for r in rows)
    assert ws.scalar("SELECT count(*) FROM cluster_edges WHERE parent_id = ? AND op = 'split'", [cid]) == 3
    assert ws.scalar("SELECT count(*) FROM clusters WHERE centroid IS NULL AND cluster_id IN (SELECT unnest(?::INTEGER[]))",
                     [children]) == 0


def test_cluster_from_documents_round_trip(ws):
    a, b = _active(ws)[:2]
    docs_a = ws.query_df("SELECT doc_idx FROM doc_clusters WHERE cluster_id = ? ORDER BY doc_idx", [a])["doc_idx"].tolist()
    docs_b = ws.query_df("SELECT doc_idx FROM doc_clusters WHERE cluster_id = ? ORDER BY doc_idx", [b])["doc_idx"].tolist()
    selection = docs_a[:5] + docs_b  # part of a, all of b
    new_id = _round_trip(ws, lambda: edits.cluster_from_documents(ws, selection, label="my selection"))
    new_id = edits.cluster_from_documents(ws, selection, label="my selection")
    row = _row(ws, new_id)
    assert row["size_docs"] == len(selection) and row["label"] == "my selection" and row["label_source"] == "user"
    assert _row(ws, a)["size_docs"] == len(docs_a) - 5 and _row(ws, a)["state"] == "active"
    emptied = _row(ws, b)
    assert emptied["state"] == "merged" and emptied["merged_into"] == new_id
    reps_a = ws.query_df("SELECT doc_idx FROM representatives WHERE cluster_id = ?", [a])["doc_idx"]
    assert not set(reps_a) & set(selection), "the shrunk cluster's representatives are its own documents"


def test_sequence_undone_four_times_returns_to_start(ws):
    start = snapshot(ws)
    a, b, c = _active(ws)[:3]
    edits.rename_cluster(ws, a, "first")
    merged = edits.merge_clusters(ws, [a, b])
    children = edits.split_cluster(ws, merged, 2)
    edits.prune_clusters(ws, [children[0], c])
    assert_invariants(ws)
    ops = [edits.undo(ws)["op"] for _ in range(4)]
    assert ops == ["prune", "split", "merge", "rename"]
    assert snapshot(ws) == start
    assert_invariants(ws)


def test_user_labels_survive_merges(ws):
    a, b, c = _active(ws)[:3]
    edits.rename_cluster(ws, a, "Law")
    edits.rename_cluster(ws, b, "Science")
    merged = edits.merge_clusters(ws, [a, b, c])
    row = _row(ws, merged)
    assert row["label"] == "Law + Science" and row["label_source"] == "user"
    assert row["auto_label"], "the automatic label is still computed beside the user's"
    # An explicit label wins; the describe stage does not overwrite user labels.
    named = edits.merge_clusters(ws, [merged, _active(ws)[-1]], label="Mixed")
    from climb_core.pipeline.describe import run_describe

    run_describe(ws, refine_config(), progress=False)
    assert _row(ws, named)["label"] == "Mixed"


def test_edit_log_records_source_and_args(ws):
    a, b = _active(ws)[:2]
    new_id = edits.merge_clusters(ws, [a, b], source="cli")
    last = edits.list_edits(ws).iloc[-1]
    assert last["op"] == "merge" and last["source"] == "cli"
    assert json.loads(last["args_json"])["cluster_ids"] == [a, b]
    assert f"#{new_id}" in last["summary"]
    moves = ws.scalar("SELECT count(*) FROM edit_doc_moves WHERE edit_id = ?", [int(last["edit_id"])])
    assert moves == _row(ws, new_id)["size_docs"]


def test_undo_skips_undone_edits_and_ends_with_none(ws):
    n = len(edits.list_edits(ws))
    cid = _active(ws)[0]
    edits.rename_cluster(ws, cid, "x")
    edits.undo(ws)
    edits.rename_cluster(ws, cid, "y")
    assert edits.undo(ws)["summary"].endswith("to 'y'")
    # Then the refine stage's own edits, newest first, until nothing is left.
    sources = [edits.undo(ws)["source"] for _ in range(n)]
    assert set(sources) == {"refine"}
    assert edits.undo(ws) is None
    assert ws.scalar("SELECT count(*) FROM clusters WHERE state = 'active'") == 12, "back to the k-means clusters"
    assert_invariants(ws)


@pytest.mark.parametrize("edit, message", [
    (lambda ws, ids: edits.rename_cluster(ws, 9999, "x"), "unknown cluster"),
    (lambda ws, ids: edits.rename_cluster(ws, ids[0], "   "), "empty"),
    (lambda ws, ids: edits.merge_clusters(ws, [ids[0]]), "at least 2"),
    (lambda ws, ids: edits.merge_clusters(ws, [ids[0], ids[0]]), "at least 2"),
    (lambda ws, ids: edits.merge_clusters(ws, [ids[0], 9999]), "unknown cluster"),
    (lambda ws, ids: edits.merge_clusters(ws, [ids[0], ids[1]], label=""), "empty"),
    (lambda ws, ids: edits.split_cluster(ws, ids[0], 1), "k=1"),
    (lambda ws, ids: edits.split_cluster(ws, ids[-1], 10_000), "k=10000"),
    (lambda ws, ids: edits.restore_clusters(ws, [ids[0]]), "is active"),
    (lambda ws, ids: edits.cluster_from_documents(ws, []), "no documents"),
    (lambda ws, ids: edits.cluster_from_documents(ws, [10**9]), "unknown document"),
])
def test_invalid_edits_raise_and_change_nothing(ws, edit, message):
    ids = _active(ws)
    before, n_edits = snapshot(ws), len(edits.list_edits(ws))
    with pytest.raises(ClusterEditError, match=message):
        edit(ws, ids)
    assert snapshot(ws) == before and len(edits.list_edits(ws)) == n_edits


def test_merging_pruned_or_merged_clusters_is_refused(ws):
    a, b, c = _active(ws)[:3]
    edits.prune_clusters(ws, [a])
    with pytest.raises(ClusterEditError, match=f"#{a} is pruned"):
        edits.merge_clusters(ws, [a, b])
    edits.merge_clusters(ws, [b, c])
    with pytest.raises(ClusterEditError, match=f"#{b} is merged"):
        edits.merge_clusters(ws, [b, _active(ws)[0]])
    with pytest.raises(ClusterEditError, match="is pruned"):
        edits.prune_clusters(ws, [a])
