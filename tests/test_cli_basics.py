"""The `climb` command's plumbing that needs no model: init, config, status, clear errors."""

from __future__ import annotations

import json

from climb_core import cli
from climb_core.catalogue.workspace import Workspace


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
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 1
    assert "not a CLIMB workspace" in capsys.readouterr().err


def test_ingest_without_input_says_what_to_do(tmp_path, capsys):
    cli.main(["init", str(tmp_path / "ws")])
    assert cli.main(["ingest", str(tmp_path / "ws")]) == 1
    assert "--input" in capsys.readouterr().err


def test_target_shorthands_resolve_to_bundled_sets():
    spec = cli.parse_target("piqa,metric=acc_norm,weight=2")
    assert spec.kind == "mc" and spec.path.endswith("data/eval/piqa.jsonl")
    assert spec.metric == "acc_norm" and spec.weight == 2.0
    text = cli.parse_target("text:cluster:3")
    assert text.kind == "text" and text.path == "cluster:3" and text.metric == "neg_bpb"
    q = cli.parse_target("text:query:doc_id IN ('a', 'b'),max_items=5")
    assert q.path == "query:doc_id IN ('a', 'b')" and q.max_items == 5


def test_config_reference_command(capsys):
    assert cli.main(["config", "--reference"]) == 0
    assert "## [search]" in capsys.readouterr().out


def test_partial_config_file_layers_on_the_workspace_config(tmp_path, demo_corpus):
    """--config FILE sets only the keys it holds: the workspace's other keys, in the same tables too, stay."""
    ws_dir = tmp_path / "ws"
    cli.main(["init", str(ws_dir), "--input", str(demo_corpus), "--k", "9", "--set", "cluster.niter=7"])
    partial = tmp_path / "partial.toml"
    partial.write_text("[cluster]\nniter = 50\nseed = 3\n[ingest]\ntext_field = \"body\"\n")
    args = cli.build_parser().parse_args(["cluster", str(ws_dir), "--config", str(partial), "--seed", "4"])
    cfg = cli._resolve_config(Workspace.open(ws_dir), args, ["cluster"])
    assert cfg.cluster.niter == 50 and cfg.ingest.text_field == "body"  # from the file
    assert cfg.cluster.k == 9 and cfg.ingest.paths == [str(demo_corpus.resolve())]  # kept from climb.toml
    assert cfg.cluster.seed == 4  # flags go on top of the file


def test_a_stage_saves_its_config_only_once_it_succeeds(tmp_path, capsys):
    from tests.helpers import write_demo_slice

    ws_dir = tmp_path / "ws"
    corpus = write_demo_slice(tmp_path / "c.jsonl", 20)
    cli.main(["init", str(ws_dir), "--input", str(corpus), "--k", "9"])
    before = (ws_dir / "climb.toml").read_bytes()
    missing = tmp_path / "missing.jsonl"
    assert cli.main(["ingest", str(ws_dir), "--input", str(missing), "--set", "cluster.k=5", "--quiet"]) == 1
    assert "input not found" in capsys.readouterr().err
    assert (ws_dir / "climb.toml").read_bytes() == before
    assert cli.main(["run-all", str(ws_dir), "--input", str(missing), "--k", "5", "--quiet"]) == 1
    assert (ws_dir / "climb.toml").read_bytes() == before
    # the same change on a stage that succeeds becomes the workspace's default
    assert cli.main(["ingest", str(ws_dir), "--set", "cluster.k=5", "--batch-size", "8", "--quiet"]) == 0
    cfg = Workspace.open(ws_dir).load_config()
    assert cfg.cluster.k == 5 and cfg.ingest.batch_size == 8 and cfg.ingest.paths == [str(corpus.resolve())]
