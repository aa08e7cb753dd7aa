"""Truthful status: a stage whose inputs changed reads stale and blocks searches, studies and exports;
a killed search reads interrupted in every view; a deleted output file is noticed and redone."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time

import numpy as np
import pytest

from climb_core import cli, queries
from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError, StageRecord
from climb_core.catalogue.workspace import Workspace
from climb_core.pipeline import edits
from climb_core.pipeline.run import require_current, run_all, workspace_status
from tests.helpers import build_domain_workspace, search_config, start_search_worker, write_demo_slice

DOWNSTREAM = ["embed", "cluster", "refine", "describe", "map"]


def _status(ws: Workspace) -> dict[str, dict]:
    return {s["stage"]: s for s in workspace_status(ws)["stages"]}


def test_reingest_makes_every_later_stage_stale_and_search_study_export_refuse(
        built_workspace, copy_workspace, tmp_path, capsys):
    ws = copy_workspace(built_workspace)
    other = write_demo_slice(tmp_path / "other.jsonl", 150, start=400)
    assert cli.main(["ingest", str(ws.root), "--input", str(other), "--quiet"]) == 0
    capsys.readouterr()

    st = _status(ws)
    assert st["ingest"]["status"] == "done"
    for stage in DOWNSTREAM:
        assert st[stage]["status"] == "stale", st[stage]
        assert "ingest ran again" in st[stage]["message"] and "climb run-all" in st[stage]["message"]
    table = queries.stage_status(ws).set_index("stage")
    assert all(table.loc[s, "status"] == "stale" for s in DOWNSTREAM)
    assert cli.main(["status", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "stale" in out and f"climb run-all {ws.root}" in out
    assert cli.main(["status", str(ws.root), "--json"]) == 0
    assert {s["stage"]: s["status"] for s in json.loads(capsys.readouterr().out)["stages"]}["cluster"] == "stale"

    # Nothing is created or re-tokenised: each command stops at the pre-check, naming the stage and the fix.
    tokens_before = stages.stage_record(ws, "tokens")
    for argv in (["search", str(ws.root), "--budget", "4", "--quiet"],
                 ["study", str(ws.root), "--quiet"],
                 ["export", str(ws.root), "--search", "any", "--out", str(tmp_path / "out"), "--quiet"]):
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "stage 'embed' is stale" in err and "ingest ran again" in err and "climb run-all" in err, err
    assert ws.table_count("searches") == 0 and ws.table_count("studies") == 0
    assert stages.stage_record(ws, "tokens") == tokens_before
    assert not (tmp_path / "out").exists()
    with pytest.raises(StageError, match="stage 'embed' is stale"):
        from climb_core.pipeline.tokens import run_tokens

        run_tokens(ws, ws.load_config(), progress=False)

    # The fix the message names brings every stage up to date, on the new corpus.
    run_all(ws, ws.load_config(), progress=False)
    st = _status(ws)
    assert all(st[s]["status"] == "done" for s in ["ingest", *DOWNSTREAM]), st
    assert ws.table_count("doc_clusters") == ws.table_count("documents") == 150
    require_current(ws, "refine")


def test_cluster_edits_do_not_make_anything_stale(built_workspace, copy_workspace):
    ws = copy_workspace(built_workspace)
    active = ws.query_df("SELECT cluster_id FROM clusters WHERE state = 'active' ORDER BY cluster_id")["cluster_id"]
    edits.rename_cluster(ws, int(active[0]), "renamed")
    edits.merge_clusters(ws, [int(active[0]), int(active[1])])
    assert all(s["status"] != "stale" for s in _status(ws).values())
    require_current(ws, "refine")


def _rec(stage: str, fp: str, started: dt.datetime, upstream: dict | None, status: str = "done") -> StageRecord:
    return StageRecord(stage, status, "{}", fp, started, started + dt.timedelta(seconds=1), None, None, None,
                       upstream_json=None if upstream is None else json.dumps(upstream))


READS = {"a": [], "b": ["a"], "c": ["b"], "d": ["a", "c"]}


def test_stale_stages_rules():
    t0 = dt.datetime(2025, 1, 1)
    base = {"a": _rec("a", "A1", t0, {}), "b": _rec("b", "B1", t0 + dt.timedelta(1), {"a": "A1"}),
            "c": _rec("c", "C1", t0 + dt.timedelta(2), {"b": "B1"}),
            "d": _rec("d", "D1", t0 + dt.timedelta(3), {"a": "A1", "c": "C1"})}
    assert stages.stale_stages(None, READS, base) == {}
    # a ran again with other inputs: b directly, c and d through it.
    rerun = {**base, "a": _rec("a", "A2", t0 + dt.timedelta(4), {})}
    stale = stages.stale_stages(None, READS, rerun)
    assert set(stale) == {"b", "c", "d"} and all("a ran again" in r for r in stale.values())
    # a started again and failed: what came after it is stale too.
    failed = {**base, "a": _rec("a", "A2", t0 + dt.timedelta(4), {}, status="failed")}
    assert "a was started again" in stages.stale_stages(None, READS, failed)["b"]
    # A stage never run that nothing ran on (a pre-clustered corpus has no embed) is no reason.
    assert stages.stale_stages(None, {"b": ["x", "a"]}, base) == {}
    # Records from before upstream fingerprints were kept: judged by time.
    legacy = {k: dataclass_replace(v, upstream_json=None) for k, v in base.items()}
    assert stages.stale_stages(None, READS, legacy) == {}
    legacy["a"] = _rec("a", "A1", t0 + dt.timedelta(5), None)
    assert set(stages.stale_stages(None, READS, legacy)) == {"b", "c", "d"}


def dataclass_replace(rec, **kw):
    import dataclasses

    return dataclasses.replace(rec, **kw)


def test_a_killed_search_reads_interrupted_in_status_json_and_home(tmp_path, capsys):
    from climb_core.search import create_search

    ws = build_domain_workspace(tmp_path / "ws")
    with ws.connect() as con:  # sizes, as refine would have set them, for `climb status`'s cluster lines
        con.execute("UPDATE clusters c SET size_docs = (SELECT count(*) FROM doc_clusters d WHERE d.cluster_id = c.cluster_id)")
    sid = create_search(ws, search_config("random", 8, record_every_s=0))
    calls = tmp_path / "calls.txt"
    proc = start_search_worker(ws, sid, calls, 0.5)
    try:
        deadline = time.monotonic() + 120
        while ws.scalar("SELECT status FROM searches WHERE search_id = ?", [sid]) != "running":
            assert proc.poll() is None and time.monotonic() < deadline, "the search worker did not start"
            time.sleep(0.05)
        assert queries.corpus_overview(ws)["latest_search"]["status"] == "running"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert ws.scalar("SELECT status FROM searches WHERE search_id = ?", [sid]) == "running"  # as stored

    assert cli.main(["status", str(ws.root)]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if f"search {sid}" in ln][0]
    assert "interrupted" in line and "running" not in line.split(":")[0] and "--resume" in line
    assert cli.main(["status", str(ws.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["searches"][0]["status"] == "interrupted"
    assert queries.corpus_overview(ws)["latest_search"]["status"] == "interrupted"  # the Home page's read
    assert queries.searches(ws).iloc[0]["status"] == "interrupted"


def test_a_deleted_embedding_shard_is_recomputed_and_run_all_succeeds(built_workspace, copy_workspace, capsys):
    from climb_core.pipeline.embed import load_embeddings

    ws = copy_workspace(built_workspace)
    before = load_embeddings(ws)
    shards = sorted(ws.embeddings_dir.glob("shard-*.npy"))
    shards[-1].unlink()
    assert cli.main(["embed", str(ws.root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "up to date" not in out and "recomputed" in out, out
    assert shards[-1].exists()
    np.testing.assert_allclose(load_embeddings(ws), before, atol=2e-3)
    outcomes = run_all(ws, ws.load_config(), progress=False)
    assert all(o.skipped for o in outcomes), [o.summary() for o in outcomes]
    assert all(s["status"] == "done" for s in _status(ws).values() if s["stage"] != "tokens")


def test_a_deleted_token_file_is_rewritten(built_workspace, copy_workspace):
    from climb_core.pipeline.tokens import cluster_token_files, run_tokens

    ws = copy_workspace(built_workspace)
    run_tokens(ws, ws.load_config(), progress=False)
    files = cluster_token_files(ws)
    files[0].train_path.unlink()
    outcome = run_tokens(ws, ws.load_config(), progress=False)
    assert not outcome.skipped, outcome.summary()
    assert files[0].train_path.exists()
    assert [(f.cluster_id, f.n_train, f.n_val) for f in cluster_token_files(ws)] == \
        [(f.cluster_id, f.n_train, f.n_val) for f in files]
