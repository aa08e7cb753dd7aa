"""The `climb` command's plumbing that needs no model: init, config, status, clear errors."""

from __future__ import annotations

import json

from climb_core import cli
from climb_core.workspace import Workspace


def test_init_writes_config_with_flags(tmp_path, capsys, demo_corpus):
    ws_dir = tmp_path / "ws"
    assert cli.main(["init", str(ws_dir), "--input", str(demo_corpus), "--k", "9", "--set", "merge.target_clusters=4"]) == 0
    cfg = Workspace.open(ws_dir).load_config()
    assert cfg.cluster.k == 9 and cfg.merge.target_clusters == 4
    assert cfg.ingest.paths == [str(demo_corpus.resolve())]


def test_status_json_on_empty_workspace(tmp_path, capsys):
    ws_dir = tmp_path / "ws"
    cli.main(["init", str(ws_dir)])
    capsys.readouterr()
    assert cli.main(["status", str(ws_dir), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["documents"] == 0
    assert [s["status"] for s in st["stages"]] == ["pending"] * len(st["stages"])


def test_not_a_workspace_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 2
    assert "not a CLIMB workspace" in capsys.readouterr().err


def test_ingest_without_input_says_what_to_do(tmp_path, capsys):
    cli.main(["init", str(tmp_path / "ws")])
    assert cli.main(["ingest", str(tmp_path / "ws")]) == 2
    assert "--input" in capsys.readouterr().err


def test_target_shorthands_resolve_to_bundled_sets():
    spec = cli.parse_target("piqa,metric=acc_norm,weight=2")
    assert spec.kind == "mc" and spec.path.endswith("data/eval/piqa.jsonl")
    assert spec.metric == "acc_norm" and spec.weight == 2.0
    text = cli.parse_target("text:cluster:3")
    assert text.kind == "text" and text.path == "cluster:3" and text.metric == "neg_bpb"


def test_config_reference_command(capsys):
    assert cli.main(["config", "--reference"]) == 0
    assert "## [search]" in capsys.readouterr().out
