"""The whole first half on real data: run-all, idempotence, status, assignments export, CLI."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from climb_core import cli
from climb_core.pipeline.run import planned_stages, run_all, workspace_status


def test_every_stage_finished(built_workspace):
    st = workspace_status(built_workspace)
    done = {s["stage"]: s["status"] for s in st["stages"]}
    for stage in planned_stages(built_workspace.load_config()):
        assert done[stage] == "done", st["stages"]
    assert st["documents"] > 350
    assert st["map_points"] == st["documents"]
    assert 2 <= st["clusters"]["active"] <= 6


def test_every_document_is_in_exactly_one_cluster(built_workspace):
    df = built_workspace.query_df(
        "SELECT d.doc_idx, count(dc.cluster_id) AS n FROM documents d LEFT JOIN doc_clusters dc USING (doc_idx) GROUP BY 1")
    assert (df["n"] == 1).all()
    sizes = built_workspace.query_df(
        "SELECT c.cluster_id, c.size_docs, count(*) AS n FROM clusters c JOIN doc_clusters dc USING (cluster_id) "
        "WHERE c.state = 'active' GROUP BY 1, 2")
    assert (sizes["size_docs"] == sizes["n"]).all()


def test_rerun_is_a_no_op(built_workspace, copy_workspace):
    ws = copy_workspace(built_workspace)
    before = ws.query_df("SELECT stage, finished_at FROM stages ORDER BY stage")
    outcomes = run_all(ws, ws.load_config(), progress=False)
    assert all(o.skipped for o in outcomes), [o.summary() for o in outcomes]
    after = ws.query_df("SELECT stage, finished_at FROM stages ORDER BY stage")
    assert before.equals(after)


def test_status_json_and_assignment_export(built_workspace, copy_workspace, tmp_path, capsys):
    ws = copy_workspace(built_workspace)
    assert cli.main(["status", str(ws.root), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["documents"] == ws.table_count("documents")
    assert len(st["active_clusters"]) == st["clusters"]["active"]

    out = tmp_path / "assign.parquet"
    assert cli.main(["export-assignments", str(ws.root), "--out", str(out)]) == 0
    table = pq.read_table(out).to_pandas()
    assert len(table) == st["documents"]
    assert table["doc_id"].is_unique
    assert {"doc_id", "cluster_id", "cluster_label", "x", "y"} <= set(table.columns)
    assert table["x"].notna().all()
    active = {c["cluster_id"] for c in st["active_clusters"]}
    assert set(table.loc[table["cluster_state"] == "active", "cluster_id"]) <= active


def test_changing_a_setting_reruns_that_stage_and_its_dependants(built_workspace, copy_workspace, capsys):
    ws = copy_workspace(built_workspace)
    assert cli.main(["refine", str(ws.root), "--target-clusters", "3", "--quiet"]) == 0
    assert ws.load_config().merge.target_clusters == 3
    st = workspace_status(ws)
    assert st["clusters"]["active"] <= 3
    outcomes = run_all(ws, ws.load_config(), progress=False)
    ran = {o.stage for o in outcomes if not o.skipped}
    assert ran == {"describe", "map"}, ran


def test_search_runs_and_export_through_the_cli(built_workspace, copy_workspace, tmp_path, capsys):
    """The second half on the built workspace: a 3-round CLIMB search with n-gram proxies, then export."""
    import datasets

    ws = copy_workspace(built_workspace)
    root = str(ws.root)
    assert cli.main(["search", root, "--quiet", "--budget", "7", "--rounds", "3", "--round-split", "4,2,1",
                     "--proxy", "ngram", "--proxy-tokens", "30000", "--set", "search.n_pool_samples=2000",
                     "--target", "arc_easy,max_items=40", "--target", "piqa,max_items=40"]) == 0
    capsys.readouterr()
    assert cli.main(["runs", root, "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["searches"]
    assert report["status"] == "done"
    rounds = {}
    for run in report["runs"]:
        assert run["status"] == "done" and run["score"] is not None
        assert abs(sum(run["weights"]) - 1) < 1e-6
        rounds[run["round"]] = rounds.get(run["round"], 0) + 1
    assert rounds == {1: 3, 2: 2, 3: 1, 4: 1}  # 6 exploration runs split 4:2:1, then the final verified
    # later rounds were proposed by the predictor, so they carry its prediction
    assert all(r["predicted"] is not None for r in report["runs"] if r["round"] > 1)
    assert set(report["runs"][0]["scores"]) >= {"arc_easy/acc", "arc_easy/loglik", "piqa/acc_norm"}

    out = tmp_path / "export"
    assert cli.main(["export", root, "--search", report["search_id"], "--dataset-tokens", "20000", "--out", str(out)]) == 0
    loaded = datasets.load_dataset("parquet", data_files=str(out / "part-*.parquet"))["train"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(loaded) == manifest["docs"] > 0
    assert abs(manifest["tokens"] - 20000) / 20000 < 0.2
