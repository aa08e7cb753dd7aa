"""The tokens stage on a workspace whose clusters are the demo corpus's true domains."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from climb_core.catalogue.stages import StageError
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig, with_overrides

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo_corpus.jsonl.gz"
DOMAINS = ["encyclopedia", "legal", "literature", "political_speech", "science_abstracts"]


def token_config(**overrides) -> ClimbConfig:
    base = {"tokenizer.vocab_size": 1024, "tokenizer.sample_docs": 300, "tokenizer.val_fraction": 0.1}
    base.update(overrides)
    return with_overrides(ClimbConfig(), base)


def make_domain_workspace(root: Path, per_domain: int = 50) -> Workspace:
    """A workspace with real documents and one active cluster per true domain (cluster_id = domain index).

    Built by SQL so these tests do not depend on the ingest/cluster/refine stages."""
    with gzip.open(DEMO, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    kept, seen = [], dict.fromkeys(DOMAINS, 0)
    for r in records:
        if seen[r["domain"]] < per_domain:
            seen[r["domain"]] += 1
            kept.append(r)
    docs = pd.DataFrame({"doc_idx": np.arange(len(kept)), "doc_id": [r["id"] for r in kept],
                         "text": [r["text"] for r in kept],
                         "cluster_id": [DOMAINS.index(r["domain"]) for r in kept]})
    ws = Workspace.init(root, token_config())
    with ws.connect() as con:
        con.register("docs", docs)
        con.execute("INSERT INTO documents (doc_idx, doc_id, text) SELECT doc_idx, doc_id, text FROM docs")
        con.execute("INSERT INTO doc_clusters SELECT doc_idx, cluster_id FROM docs")
        con.execute("""INSERT INTO clusters (cluster_id, label, state, size_docs)
                       SELECT cluster_id, ?[cluster_id + 1], 'active', count(*) FROM docs GROUP BY cluster_id""",
                    [DOMAINS])
    return ws


@pytest.fixture(scope="module")
def tokens_ws(tmp_path_factory):
    from climb_core.pipeline.tokens import run_tokens

    ws = make_domain_workspace(tmp_path_factory.mktemp("tok") / "ws")
    run_tokens(ws, token_config(), progress=False)
    return ws


def test_tokenizer_round_trips_text(tmp_path):
    from climb_core.pipeline.tokens import EOT, eot_id, train_tokenizer

    with gzip.open(DEMO, "rt", encoding="utf-8") as fh:
        texts = [json.loads(next(fh))["text"] for _ in range(100)]
    tok = train_tokenizer(texts, 512, tmp_path / "tokenizer.json")
    assert tok.get_vocab_size() == 512
    assert tok.token_to_id(EOT) == eot_id(tok)
    for text in [texts[0], texts[57], "Ünïcödé — 東京 🙂\n\ttabs  and  spaces"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    # BPE learned merges: real English compresses well below one token per byte.
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts))
    assert n_tokens < 0.5 * n_bytes


def test_token_files_match_catalogue(tokens_ws):
    from climb_core.pipeline.tokens import cluster_token_files, load_tokenizer, token_prior

    ws = tokens_ws
    files = cluster_token_files(ws)
    assert [f.cluster_id for f in files] == [0, 1, 2, 3, 4]
    assert [f.label for f in files] == DOMAINS
    shards = ws.query_df("SELECT * FROM token_shards")
    assert len(shards) == 10
    eot = load_tokenizer(ws).token_to_id("<|endoftext|>")
    for f in files:
        train = np.fromfile(f.train_path, dtype=f.dtype)
        val = np.fromfile(f.val_path, dtype=f.dtype)
        assert f.dtype == "uint16"
        assert len(train) == f.n_train and len(val) == f.n_val
        row = shards[(shards.cluster_id == f.cluster_id)].set_index("split")
        # One EOT after every document, so the EOT count is the document count.
        assert (train == eot).sum() == row.loc["train", "n_docs"]
        assert (val == eot).sum() == row.loc["val", "n_docs"] >= 1
        assert row.loc["train", "n_docs"] + row.loc["val", "n_docs"] == 50
    sizes = ws.query_df("SELECT cluster_id, size_tokens FROM clusters ORDER BY cluster_id")
    assert sizes.size_tokens.tolist() == [f.n_train + f.n_val for f in files]
    ids, prior = token_prior(ws)
    assert ids == [0, 1, 2, 3, 4] and prior.sum() == pytest.approx(1.0)
    assert prior[2] > prior[0]  # literature chunks are longer than encyclopedia sections


def test_train_and_val_documents_are_disjoint(tokens_ws):
    """Decode the files back to documents: each real document is in exactly one split of its cluster."""
    from climb_core.pipeline.tokens import cluster_token_files, load_tokenizer

    ws = tokens_ws
    tok = load_tokenizer(ws)
    eot = tok.token_to_id("<|endoftext|>")
    texts = ws.query_df("SELECT d.text, c.cluster_id FROM documents d JOIN doc_clusters c USING (doc_idx)")
    for f in cluster_token_files(ws)[:2]:
        split_docs = {}
        for split, path in (("train", f.train_path), ("val", f.val_path)):
            arr = np.fromfile(path, dtype=f.dtype).astype(np.int64)
            pieces = np.split(arr, np.flatnonzero(arr == eot) + 1)
            split_docs[split] = {tok.decode(p[:-1].tolist()) for p in pieces if len(p)}
        assert not split_docs["train"] & split_docs["val"]
        expected = set(texts[texts.cluster_id == f.cluster_id].text)
        assert split_docs["train"] | split_docs["val"] == expected


def test_rerun_skips_and_resume_is_per_cluster(tokens_ws, copy_workspace):
    from climb_core.catalogue import stages
    from climb_core.pipeline.tokens import cluster_token_files, run_tokens

    assert run_tokens(tokens_ws, token_config(), progress=False).skipped
    ws = copy_workspace(tokens_ws)
    before = {f.cluster_id: f.train_path.stat().st_mtime_ns for f in cluster_token_files(ws)}
    # Pretend the run was killed after clusters 0-2: mark it failed and forget clusters 3 and 4.
    rec = stages.stage_record(ws, "tokens")
    with ws.connect() as con:
        con.execute("UPDATE stages SET status = 'failed' WHERE stage = 'tokens'")
        con.execute("DELETE FROM stage_shards WHERE stage = 'tokens' AND shard IN ('cluster-3', 'cluster-4')")
    out = run_tokens(ws, token_config(), progress=False)
    assert not out.skipped and stages.stage_record(ws, "tokens").fingerprint == rec.fingerprint
    after = {f.cluster_id: f.train_path.stat().st_mtime_ns for f in cluster_token_files(ws)}
    assert [c for c in before if before[c] == after[c]] == [0, 1, 2]
    assert ws.table_count("token_shards") == 10


def test_edit_makes_tokens_stale(tokens_ws, copy_workspace):
    from climb_core.pipeline.tokens import cluster_token_files, run_tokens

    ws = copy_workspace(tokens_ws)
    # An edit (as the edit API in edits.py records it): cluster 4 pruned.
    with ws.connect() as con:
        con.execute("UPDATE clusters SET state = 'pruned' WHERE cluster_id = 4")
        con.execute("INSERT INTO edits (edit_id, op, summary) VALUES (1, 'prune', 'prune 4')")
    with pytest.raises(StageError, match="climb tokens"):
        cluster_token_files(ws)
    tok_mtime = (ws.tokens_dir / "tokenizer.json").stat().st_mtime_ns
    assert not run_tokens(ws, token_config(), progress=False).skipped
    assert [f.cluster_id for f in cluster_token_files(ws)] == [0, 1, 2, 3]
    assert ws.table_count("token_shards") == 8
    # Same tokenizer settings: the tokenizer is reused, not retrained.
    assert (ws.tokens_dir / "tokenizer.json").stat().st_mtime_ns == tok_mtime


def test_missing_tokens_is_a_clear_error(tmp_path):
    from climb_core.pipeline.tokens import cluster_token_files

    ws = Workspace.init(tmp_path / "empty")
    with pytest.raises(StageError, match="climb tokens"):
        cluster_token_files(ws)
