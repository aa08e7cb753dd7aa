"""The ingest stage end to end: documents, stats, rejected, dedup, idempotence, resume after a kill."""

from __future__ import annotations

import json
import os

import pytest

from climb_core.catalogue.stages import StageError, finished_shards, stage_record
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline import ingest
from climb_core.pipeline.quality import ScorerError
from tests.helpers import write_demo_slice

DOC_COLS = "doc_idx, doc_id, text, source_file, source_line, text_hash, preset_cluster, meta_json"


def _config(*paths, **ingest_settings) -> ClimbConfig:
    config = ClimbConfig()
    config.ingest.paths = [str(p) for p in paths]
    for key, value in ingest_settings.items():
        setattr(config.ingest, key, value)
    return config


def _tables(ws: Workspace):
    return (ws.query_df(f"SELECT {DOC_COLS} FROM documents ORDER BY doc_idx"),
            ws.query_df("SELECT * FROM doc_stats ORDER BY doc_idx"),
            ws.query_df("SELECT * FROM rejected ORDER BY source_file, source_line, reason"))


@pytest.fixture
def bad_corpus(tmp_path):
    """Demo documents with one bad record of each kind between them."""
    demo = write_demo_slice(tmp_path / "slice.jsonl", 6).read_text(encoding="utf-8").splitlines()
    first = json.loads(demo[0])
    dup = dict(first, id="dup-of-first", text="  " + first["text"].upper().replace(" ", "   \n") + " ")
    lines = [
        demo[0].encode(),                                                # 1 good
        b'{"id": "broken", "text": "no closing quote}',                  # 2 bad json
        demo[1].encode(),                                                # 3 good
        b'{"id": "latin1", "text": "caf\xe9 au lait"}',                  # 4 invalid UTF-8
        json.dumps({"id": "notext", "body": "where is the text"}).encode(),  # 5 missing text
        json.dumps({"id": "blank", "text": " \t\n"}).encode(),           # 6 empty
        demo[2].encode(),                                                # 7 good
        json.dumps({"id": "giant", "text": "word " * 20_000}).encode(),  # 8 > max_chars
        json.dumps(dup).encode(),                                        # 9 duplicate of line 1
        b'"just a string"',                                              # 10 not an object
        demo[3].encode(),                                                # 11 good
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, [json.loads(demo[i]) for i in range(4)]


def test_bad_records_are_rejected_and_good_ones_kept(tmp_path, bad_corpus):
    path, good = bad_corpus
    ws = Workspace.init(tmp_path / "ws")
    out = ingest.run_ingest(ws, _config(path, max_chars=50_000, batch_size=3), progress=False)
    assert not out.skipped and out.rows_out == 4 and out.rows_in == 11
    assert out.message == ("4 documents, 6 rejected (1 bad json, 1 bad utf8, 1 empty, 1 missing text, "
                           "1 not object, 1 too long), 1 duplicate")
    docs, stats, rejected = _tables(ws)
    assert docs["doc_idx"].tolist() == [0, 1, 2, 3]
    assert docs["doc_id"].tolist() == [g["id"] for g in good]
    assert docs["source_line"].tolist() == [1, 3, 7, 11]
    assert docs["text"].tolist() == [g["text"] for g in good]
    assert json.loads(docs["meta_json"][0]) == {"source": good[0]["source"], "domain": good[0]["domain"]}
    got = list(zip(rejected["source_line"], rejected["reason"], rejected["doc_id"].fillna("-")))
    assert got == [(2, "bad_json", "-"), (4, "bad_utf8", "-"), (5, "missing_text", "notext"), (6, "empty", "blank"),
                   (8, "too_long", "giant"), (9, "duplicate", "dup-of-first"), (10, "not_object", "-")]
    assert set(rejected["source_file"]) == {str(path.resolve())}
    assert set(rejected["stage"]) == {"ingest"}
    dup_detail = rejected.loc[rejected["reason"] == "duplicate", "detail"].item()
    assert good[0]["id"] in dup_detail and "line 1" in dup_detail
    assert stats["doc_idx"].tolist() == [0, 1, 2, 3]
    assert stats["n_chars"].tolist() == [len(g["text"]) for g in good]
    assert stats["quality"].between(0, 1).all() and stats["quality_user"].isna().all()
    assert (stats["quality"] == stats["quality_heuristic"]).all()


def test_dedup_off_keeps_copies(tmp_path, bad_corpus):
    path, _ = bad_corpus
    ws = Workspace.init(tmp_path / "ws")
    out = ingest.run_ingest(ws, _config(path, max_chars=50_000, dedup=False), progress=False)
    assert out.rows_out == 5
    assert ws.scalar("SELECT count(*) FROM rejected WHERE reason = 'duplicate'") == 0
    hashes = ws.query_df("SELECT text_hash FROM documents ORDER BY doc_idx")["text_hash"].tolist()
    assert hashes[0] == hashes[3]  # line 9, the copy differs only in case and whitespace


def test_dedup_across_files_keeps_first_in_input_order(tmp_path):
    a = write_demo_slice(tmp_path / "a.jsonl", 30)
    b = write_demo_slice(tmp_path / "b.jsonl", 30, start=20)  # 10 documents overlap with a
    ws = Workspace.init(tmp_path / "ws")
    out = ingest.run_ingest(ws, _config(a, b, batch_size=7), progress=False)
    assert out.rows_out == 50
    docs = ws.query_df("SELECT doc_idx, source_file, source_line FROM documents ORDER BY doc_idx")
    assert (docs["source_file"][:30] == str(a.resolve())).all()
    assert docs["source_line"][30:].tolist() == list(range(11, 31))
    dups = ws.query_df("SELECT source_file, source_line FROM rejected WHERE reason = 'duplicate' ORDER BY source_line")
    assert dups["source_line"].tolist() == list(range(1, 11)) and set(dups["source_file"]) == {str(b.resolve())}


def test_second_run_is_skipped_and_changes_nothing(tmp_path, bad_corpus):
    path, _ = bad_corpus
    ws = Workspace.init(tmp_path / "ws")
    config = _config(path, max_chars=50_000)
    ingest.run_ingest(ws, config, progress=False)
    before, rec = _tables(ws), stage_record(ws, "ingest")
    again = ingest.run_ingest(ws, config, progress=False)
    assert again.skipped
    assert stage_record(ws, "ingest").finished_at == rec.finished_at
    for old, new in zip(before, _tables(ws)):
        assert old.equals(new)
    # force rebuilds from scratch: same rows, nothing doubled
    forced = ingest.run_ingest(ws, config, force=True, progress=False)
    assert not forced.skipped
    for old, new in zip(before, _tables(ws)):
        assert old.equals(new)


def test_changed_input_rebuilds(tmp_path):
    path = write_demo_slice(tmp_path / "c.jsonl", 20)
    ws = Workspace.init(tmp_path / "ws")
    config = _config(path)
    assert ingest.run_ingest(ws, config, progress=False).rows_out == 20
    write_demo_slice(path, 12, start=100)
    os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse-clock filesystems
    out = ingest.run_ingest(ws, config, progress=False)
    assert not out.skipped and out.rows_out == 12
    assert ws.table_count("documents") == 12 and ws.table_count("doc_stats") == 12
    assert ws.scalar("SELECT max(doc_idx) FROM documents") == 11


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, bad_corpus, monkeypatch):
    path, _ = bad_corpus
    corpus = write_demo_slice(tmp_path / "more.jsonl", 40)
    config = _config(path, corpus, max_chars=50_000, batch_size=4)

    clean = Workspace.init(tmp_path / "clean")
    ingest.run_ingest(clean, config, progress=False)
    expected = _tables(clean)

    ws = Workspace.init(tmp_path / "killed")
    real_store = ingest._store_batch
    stored = []

    def store_then_die(ws_, shard, docs, rej, *rest):
        if len(stored) == 5:
            raise KeyboardInterrupt("killed")
        real_store(ws_, shard, docs, rej, *rest)
        stored.append(shard)

    monkeypatch.setattr(ingest, "_store_batch", store_then_die)
    with pytest.raises(KeyboardInterrupt):
        ingest.run_ingest(ws, config, progress=False)
    assert stage_record(ws, "ingest").status == "interrupted"   # Ctrl-C: resumable, not a failure
    assert len(finished_shards(ws, "ingest")) == 5
    assert ws.table_count("documents") == 0

    monkeypatch.setattr(ingest, "_store_batch", real_store)
    computed = []
    real_frames = ingest._batch_frames
    monkeypatch.setattr(ingest, "_batch_frames", lambda batch, *a: computed.append(batch.index) or real_frames(batch, *a))
    out = ingest.run_ingest(ws, config, progress=False)
    assert not out.skipped
    n_batches = 3 + 10  # 11 lines in bad.jsonl and 40 in more.jsonl, 4 to a batch
    assert len(computed) == n_batches - 5  # finished batches were not read again
    for want, got in zip(expected, _tables(ws)):
        assert want.equals(got)
    assert ws.scalar("SELECT count(*) FROM ingest_raw") == 0


def test_no_valid_documents_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "all_bad.jsonl"
    path.write_text('{"body": "x"}\n{"body": "y"}\nnot json\n', encoding="utf-8")
    ws = Workspace.init(tmp_path / "ws")
    with pytest.raises(StageError) as info:
        ingest.run_ingest(ws, _config(path), progress=False)
    msg = str(info.value)
    assert str(path.resolve()) in msg and "2 missing text" in msg and "line 1" in msg and "fields: body" in msg
    assert stage_record(ws, "ingest").status == "failed"


def test_user_scorer_fills_quality_user(tmp_path, monkeypatch):
    (tmp_path / "lenscore.py").write_text("def score(texts):\n    return [min(len(t) / 4000, 1.0) for t in texts]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_demo_slice(tmp_path / "s.jsonl", 10)
    config = _config(path)
    config.quality.scorer = "lenscore:score"
    config.quality.user_weight = 0.25
    ws = Workspace.init(tmp_path / "ws")
    ingest.run_ingest(ws, config, progress=False)
    stats = ws.query_df("SELECT s.*, length(d.text) AS n FROM doc_stats s JOIN documents d USING (doc_idx)")
    assert stats["quality_user"].tolist() == pytest.approx((stats["n"] / 4000).clip(upper=1).tolist(), rel=1e-6)
    want = 0.75 * stats["quality_heuristic"] + 0.25 * stats["quality_user"]
    assert stats["quality"].tolist() == pytest.approx(want.tolist(), rel=1e-5)
    # a changed scorer setting re-runs ingest; a broken one fails before reading anything
    config.quality.scorer = "lenscore:nope"
    with pytest.raises(ScorerError, match="has no function 'nope'"):
        ingest.run_ingest(ws, config, progress=False)


def test_preset_cluster_and_other_formats_through_the_stage(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in write_demo_slice(tmp_path / "s.jsonl", 12).read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "s.parquet")
    ws = Workspace.init(tmp_path / "ws")
    out = ingest.run_ingest(ws, _config(tmp_path / "s.parquet", cluster_field="domain"), progress=False)
    assert out.rows_out == 12
    docs = ws.query_df("SELECT preset_cluster, meta_json FROM documents ORDER BY doc_idx")
    assert docs["preset_cluster"].tolist() == [r["domain"] for r in rows]
    assert "domain" not in json.loads(docs["meta_json"][0])


def test_batches_measured_one_ahead_keep_order_and_where_errors_surface():
    """The next batch is measured on a worker thread while this one is stored: output order is input
    order, a reading error comes after the batch in hand is handed over (so it gets stored), and a
    measuring error comes when its own batch is due, not earlier."""
    import threading

    def reader(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise OSError(f"disk gone at batch {i}")
            yield i

    threads = set()

    def frames(i):
        threads.add(threading.get_ident())
        if i == 3:
            raise ValueError("bad batch 3")
        return i * 10

    assert list(ingest._one_ahead(reader(3), frames)) == [(0, 0), (1, 10), (2, 20)]
    assert threading.get_ident() not in threads   # measured off the storing thread

    got = []
    with pytest.raises(OSError, match="batch 2"):
        for item in ingest._one_ahead(reader(5, fail_at=2), frames):
            got.append(item)
    assert got == [(0, 0), (1, 10)]

    got = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for item in ingest._one_ahead(reader(6), frames):
            got.append(item)
    assert got == [(0, 0), (1, 10), (2, 20)]
