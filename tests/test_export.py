"""Exporting a search's mixture: weights.json, Parquet shards that `datasets` loads, a manifest that adds up."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from climb_core.export import ExportError, export_search
from climb_core.search import create_search, run_search
from climb_core.synthetic import objective
from tests.helpers import build_domain_workspace, search_config


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    ws = build_domain_workspace(tmp_path_factory.mktemp("export") / "ws")
    sid = create_search(ws, search_config("random", 4))
    run_search(ws, sid, objective=objective, progress=False)
    return ws, sid


def test_export_final_mixture(searched, tmp_path):
    ws, sid = searched
    cfg = search_config("random", 4)
    cfg.export.shard_docs = 100
    m = export_search(ws, sid, tmp_path / "out", tokens=200_000, config=cfg)
    out = tmp_path / "out"
    weights = json.loads((out / "weights.json").read_text())
    assert weights["search_id"] == sid and weights["strategy"] == "random"
    assert abs(sum(weights["weights"]) - 1) < 1e-9 and len(weights["cluster_labels"]) == 10
    assert json.loads((out / "manifest.json").read_text())["docs"] == m["docs"]
    # Whole documents: within a few documents' worth of the request.
    assert abs(m["tokens"] - 200_000) / 200_000 < 0.02
    assert sum(c["docs"] for c in m["clusters"]) == m["docs"] == sum(f["docs"] for f in m["files"])
    assert sum(c["tokens"] for c in m["clusters"]) == m["tokens"]
    for c in m["clusters"]:
        if c["weight"] > 0.01:
            assert abs(c["tokens"] / m["tokens"] - c["weight"]) < 0.03
    assert len(m["files"]) > 1
    table = pq.read_table([out / f["file"] for f in m["files"]][0])
    assert table.column_names == ["text", "doc_id", "cluster_id", "cluster_label"]
    assert ws.scalar("SELECT count(*) FROM exports WHERE search_id = ?", [sid]) >= 1


def test_datasets_loads_shards(searched, tmp_path):
    datasets = pytest.importorskip("datasets")
    ws, sid = searched
    m = export_search(ws, sid, tmp_path / "ds", tokens=50_000, which="best")
    files = [str(tmp_path / "ds" / f["file"]) for f in m["files"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == m["docs"]
    assert set(ds.column_names) == {"text", "doc_id", "cluster_id", "cluster_label"}


def test_small_cluster_repeats_with_epochs(searched, tmp_path):
    ws, sid = searched
    # Ask for far more tokens than the corpus holds: every cluster must repeat, and say so.
    total = int(ws.scalar("SELECT sum(n_tokens_est) FROM doc_stats"))
    m = export_search(ws, sid, tmp_path / "big", tokens=3 * total, which="best")
    heavy = max(m["clusters"], key=lambda c: c["weight"])
    assert heavy["epochs"] > 1 and heavy["passes"] >= 2
    assert abs(heavy["epochs"] - heavy["tokens"] / heavy["available_tokens"]) < 1e-3
    assert abs(m["tokens"] - 3 * total) / (3 * total) < 0.02


def test_unfinished_search_needs_best(searched):
    ws, _ = searched
    sid = create_search(ws, search_config("random", 2))
    with pytest.raises(ExportError, match="which='best'"):
        export_search(ws, sid, None, tokens=1000)
