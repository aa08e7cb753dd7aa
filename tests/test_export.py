"""Exporting a search's mixture: weights.json, Parquet shards that `datasets` loads, a manifest that adds up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from climb_core import cli
from climb_core.export.mixture import ExportError, export_search
from climb_core.search import create_search, run_search
from climb_core.search.synthetic import objective
from tests.helpers import build_domain_workspace, search_config


# A spread mixture over the 10 clusters (the random search's own runs are nearly one-hot, where any
# allocation gets the shares right).
SPREAD = [0.05, 0.15, 0.1, 0.2, 0.05, 0.1, 0.1, 0.05, 0.1, 0.1]
SPREAD_RUN = "hand-spread"


def build_searched(root: Path):
    """The domain workspace with token files (val_fraction 0.1), a finished 4-run random search, and
    one more finished run of that search with the SPREAD weights (export it with which=SPREAD_RUN)."""
    from climb_core.pipeline.tokens import run_tokens
    from tests.test_tokens import token_config

    ws = build_domain_workspace(root)
    run_tokens(ws, token_config(), progress=False)
    sid = create_search(ws, search_config("random", 4))
    run_search(ws, sid, objective=objective, progress=False)
    with ws.connect() as con:
        con.execute("""INSERT INTO proxy_runs (search_id, run_id, round, idx, weights, seed, status, score, scores_json, purpose)
                       VALUES (?, ?, 9, 0, ?, 0, 'done', -1.0, '{"synthetic": -1.0}', 'explore')""", [sid, SPREAD_RUN, SPREAD])
    return ws, sid


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    return build_searched(tmp_path_factory.mktemp("export") / "ws")


def _rows(out: Path):
    return pq.read_table([out / f for f in sorted(p.name for p in out.glob("part-*.parquet"))]).to_pandas()


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
    assert len(m["files"]) > 1
    table = pq.read_table([out / f["file"] for f in m["files"]][0])
    assert table.column_names == ["text", "doc_id", "cluster_id", "cluster_label"]
    assert ws.scalar("SELECT count(*) FROM exports WHERE search_id = ?", [sid]) >= 1


def test_shares_match_weights_in_real_tokens(searched, tmp_path):
    """Each cluster's share of the exported tokens, counted with the workspace tokenizer (a document's
    tokens plus its end-of-text, as the token files the search sampled from), is its searched weight."""
    from climb_core.pipeline.tokens import cluster_token_files, load_tokenizer

    ws, sid = searched
    out = tmp_path / "shares"
    export_search(ws, sid, out, tokens=200_000, which=SPREAD_RUN)
    weights = json.loads((out / "weights.json").read_text())
    assert weights["weights"] == pytest.approx(SPREAD)
    manifest = json.loads((out / "manifest.json").read_text())
    rows = _rows(out)
    tok = load_tokenizer(ws)
    rows["ntok"] = [len(e.ids) + 1 for e in tok.encode_batch(rows["text"].tolist(), add_special_tokens=False)]
    real = rows.groupby("cluster_id")["ntok"].sum()
    for cid, w in zip(weights["cluster_ids"], weights["weights"]):
        share = real.get(cid, 0) / real.sum()
        assert abs(share - w) < 0.005, (cid, share, w)
    # The manifest reports the same counts, shares and the largest gap.
    by_id = {c["cluster_id"]: c for c in manifest["clusters"]}
    assert manifest["tokens"] == int(real.sum())
    for cid, n in real.items():
        assert by_id[cid]["tokens"] == n and abs(by_id[cid]["share"] - n / real.sum()) < 1e-5
        assert abs(by_id[cid]["deviation"] - (by_id[cid]["share"] - by_id[cid]["weight"])) < 1e-5
    assert manifest["max_share_deviation"] == max(abs(c["deviation"]) for c in manifest["clusters"]) < 0.005
    # What a cluster can give is its training tokens as the tokens stage counted them.
    n_train = {f.cluster_id: f.n_train for f in cluster_token_files(ws)}
    for c in manifest["clusters"]:
        assert c["available_tokens"] <= n_train[c["cluster_id"]]


def _held_out_texts(ws) -> set[str]:
    """Every cluster's validation documents, decoded from its val.bin: the text `cluster:ID` targets score."""
    from climb_core.pipeline.tokens import cluster_token_files, eot_id, load_tokenizer

    tok = load_tokenizer(ws)
    eot = eot_id(tok)
    texts = set()
    for f in cluster_token_files(ws):
        val = np.fromfile(f.val_path, dtype=f.dtype).astype(np.int64)
        docs = [d[:-1] for d in np.split(val, np.flatnonzero(val == eot) + 1) if len(d)]
        texts.update(tok.decode_batch([d.tolist() for d in docs], skip_special_tokens=False))
    return texts


def test_held_out_documents_are_not_exported(searched, tmp_path):
    ws, sid = searched
    held = _held_out_texts(ws)
    assert len(held) > 100
    # Far more tokens than the corpus holds: every training document is taken, many times.
    total = int(ws.scalar("SELECT sum(n_tokens) FROM token_shards WHERE split = 'train'"))
    m = export_search(ws, sid, tmp_path / "all", tokens=2 * total, which=SPREAD_RUN)
    texts = set(_rows(tmp_path / "all")["text"])
    assert not texts & held
    assert m["held_out"]["docs"] == int(ws.scalar("SELECT sum(n_docs) FROM token_shards WHERE split = 'val'"))
    assert len(texts) > 500


def test_reexport_replaces_the_folder(searched, tmp_path):
    datasets = pytest.importorskip("datasets")
    ws, sid = searched
    cfg = search_config("random", 4)
    cfg.export.shard_docs = 10   # several shards even for the small export (about 20 documents)
    out = tmp_path / "again"
    big = export_search(ws, sid, out, tokens=200_000, config=cfg)
    small = export_search(ws, sid, out, tokens=20_000, config=cfg)
    assert len(big["files"]) > len(small["files"]) > 1
    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train", cache_dir=str(tmp_path / "cache"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert ds.num_rows == manifest["docs"] == small["docs"]
    assert manifest["export_id"] == small["export_id"]
    # Nothing left beside it: no temporary or set-aside folders.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["again"]


def test_output_folder_is_checked(searched, tmp_path):
    ws, sid = searched
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ExportError, match=f"{a_file}.* is a file"):
        export_search(ws, sid, a_file, tokens=5000)
    for bad in (ws.root, ws.root.parent, ws.root / "tokens", ws.exports_dir):
        with pytest.raises(ExportError, match=str(bad.resolve())):
            export_search(ws, sid, bad, tokens=5000)
    assert (ws.root / "climb.duckdb").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=f"{mine}.*--force"):
        export_search(ws, sid, mine, tokens=5000)
    assert (mine / "notes.txt").read_text() == "keep me"
    m = export_search(ws, sid, mine, tokens=5000, force=True)
    assert not (mine / "notes.txt").exists() and (mine / "manifest.json").exists() and m["docs"] > 0
    # Under the workspace's exports folder is fine (the default place).
    m = export_search(ws, sid, None, tokens=5000)
    assert (ws.exports_dir / m["export_id"] / "manifest.json").exists()


def test_cli_export_replaces_and_refuses(searched, tmp_path, capsys):
    ws, sid = searched
    out = tmp_path / "cli"
    for n in ("20000", "5000"):
        assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", n, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "share" in said and "held-out" in said
    assert json.loads((out / "manifest.json").read_text())["requested_tokens"] == 5000
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", "5000", "--out", str(other)]) == 1
    assert str(other) in capsys.readouterr().err
    assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", "5000", "--out", str(other), "--force",
                     "--formats", "hf"]) == 0
    assert (other / "README.md").exists() and not (other / "megatron-blend.txt").exists()


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
    total = int(ws.scalar("SELECT sum(n_tokens) FROM token_shards WHERE split = 'train'"))
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


def test_export_needs_token_files(tmp_path):
    ws = build_domain_workspace(tmp_path / "ws")
    sid = create_search(ws, search_config("random", 2))
    run_search(ws, sid, objective=objective, progress=False)
    with pytest.raises(ExportError, match="climb tokens"):
        export_search(ws, sid, tmp_path / "out", tokens=1000)


def test_documents_flagged_by_decontam_are_not_exported(tmp_path):
    """`climb decontam --drop` records benchmark-overlapping documents; export leaves them out."""
    import shutil

    from climb_core.catalogue.workspace import Workspace

    src, sid = build_searched(tmp_path / "src")
    root = tmp_path / "ws"
    shutil.copytree(src.root, root)
    ws = Workspace.open(root)
    total = int(ws.scalar("SELECT sum(n_tokens) FROM token_shards WHERE split = 'train'"))
    first = _rows_after(ws, sid, tmp_path / "before", 2 * total)
    victim = first.iloc[0]["text"]
    with ws.connect() as con:
        con.execute("CREATE TABLE decontam_flags (doc_idx BIGINT, eval_name VARCHAR, ngram_hits INTEGER)")
        con.execute("INSERT INTO decontam_flags SELECT doc_idx, 'arc_easy', 3 FROM documents WHERE text = ?", [victim])
    m = export_search(ws, sid, tmp_path / "after", tokens=2 * total, which=SPREAD_RUN)
    assert victim not in set(_rows(tmp_path / "after")["text"])
    assert sum(c["contaminated_excluded"] for c in m["clusters"]) >= 1


def _rows_after(ws, sid, out, tokens):
    export_search(ws, sid, out, tokens=tokens, which=SPREAD_RUN)
    return _rows(out)


def test_cli_warns_once_per_repeated_cluster(searched, tmp_path, capsys):
    ws, sid = searched
    assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", "5000", "--out", str(tmp_path / "small")]) == 0
    assert "warning" not in capsys.readouterr().err   # 5,000 tokens repeat nothing
    total = int(ws.scalar("SELECT sum(n_tokens) FROM token_shards WHERE split = 'train'"))
    out = tmp_path / "big"
    assert cli.main(["export", str(ws.root), "--search", sid, "--dataset-tokens", str(3 * total), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    repeated = [c for c in json.loads((out / "manifest.json").read_text())["clusters"] if c["epochs"] > 1]
    lines = [ln for ln in err.splitlines() if ln.startswith("warning: cluster #")]
    assert repeated and len(lines) == len(repeated)
    for c in repeated:
        assert any(f"#{c['cluster_id']} ({c['label']}) repeated {c['epochs']:.1f}x" in ln for ln in lines)
