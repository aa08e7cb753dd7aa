"""Readers: every format on real demo documents, bad records as `Rejected`, whole-file errors."""

from __future__ import annotations

import csv
import gzip
import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from climb_core.config import IngestConfig
from climb_core.pipeline.corpus import (CorpusError, Record, Rejected, discover_sources, input_facts, iter_batches,
                               iter_records, make_record)
from tests.helpers import DATA


@pytest.fixture(scope="module")
def demo_rows() -> list[dict]:
    with gzip.open(DATA / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(60), fh)]


def _records(path, cfg=None) -> list[Record | Rejected]:
    return list(iter_records(path, cfg or IngestConfig()))


def _same_docs(records, rows):
    docs = [r for r in records if isinstance(r, Record)]
    assert [d.doc_id for d in docs] == [r["id"] for r in rows]
    assert [d.text for d in docs] == [r["text"] for r in rows]
    assert json.loads(docs[0].meta_json) == {"source": rows[0]["source"], "domain": rows[0]["domain"]}


def test_jsonl_gz_streams_in_fixed_batches(demo_rows, tmp_path):
    path = tmp_path / "demo.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in demo_rows)
    src, = discover_sources([path])
    assert src.format == "jsonl"
    cfg = IngestConfig(batch_size=25)
    batches = list(iter_batches(src, cfg))
    assert [b.index for b in batches] == [0, 1, 2]
    assert [len(b.records) for b in batches] == [25, 25, 10]
    assert batches[1].records[0].source_line == 26
    # skipped batches are not decoded and not yielded; the others keep their index and lines
    again = list(iter_batches(src, cfg, skip={0, 2}))
    assert [b.index for b in again] == [1]
    assert [r.doc_id for r in again[0].records] == [r.doc_id for r in batches[1].records]
    _same_docs(_records(path), demo_rows)


def test_jsonl_bad_lines_are_rejected_with_line_numbers(tmp_path):
    good = {"id": "g1", "text": "a good document", "lang": "en"}
    lines = [
        json.dumps(good).encode(),                                  # 1
        b'{"id": "b1", "text": "unterminated',                      # 2 bad json
        b'{"id": "u1", "text": "caf\xff\xfe"}',                     # 3 invalid UTF-8
        json.dumps({"id": "m1", "body": "no text"}).encode(),       # 4 missing text
        json.dumps({"id": "e1", "text": "   \n "}).encode(),        # 5 empty
        json.dumps({"id": "t1", "text": "x" * 500}).encode(),       # 6 too long (max_chars 100)
        b"[1, 2, 3]",                                               # 7 not an object
        b"",                                                        # 8 blank: not a record
        json.dumps({"id": "n1", "text": 42}).encode(),              # 9 not a string
        b'{"id": "s1", "text": "lone \\ud800 surrogate"}',          # 10 unstorable escape
        json.dumps({"text": "no id here"}).encode(),                # 11 good, derived id
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = _records(path, IngestConfig(max_chars=100))
    got = [(r.source_line, r.reason if isinstance(r, Rejected) else "ok", r.doc_id) for r in out]
    assert got == [
        (1, "ok", "g1"), (2, "bad_json", None), (3, "bad_utf8", None), (4, "missing_text", "m1"),
        (5, "empty", "e1"), (6, "too_long", "t1"), (7, "not_object", None), (9, "not_text", "n1"),
        (10, "bad_utf8", "s1"), (11, "ok", "bad.jsonl:11"),
    ]
    by_line = {r.source_line: r for r in out}
    assert "body" in by_line[4].detail and "'text'" in by_line[4].detail
    assert "0xff" in by_line[3].detail
    assert by_line[1].meta_json == '{"lang": "en"}'
    assert all(r.source_file == str(path.resolve()) for r in out)


def test_oversized_line_is_rejected_without_holding_it(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as fh:
        fh.write(b'{"id": "a", "text": "first"}\n')
        fh.write(b'{"id": "big", "text": "' + b"y" * 20_000_000 + b'"}\n')
        fh.write(b'{"id": "c", "text": "last"}\n')
    tracemalloc.start()
    out = _records(path, IngestConfig(max_chars=1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(r.source_line, getattr(r, "reason", "ok")) for r in out] == [(1, "ok"), (2, "too_long"), (3, "ok")]
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB while skipping a 20 MB line"


def test_json_array_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "array.json"
    path.write_text('[{"text": "a"}]')
    with pytest.raises(CorpusError, match="JSON array, not JSON Lines"):
        _records(path)


def test_parquet(demo_rows, tmp_path):
    path = tmp_path / "demo.parquet"
    pq.write_table(pa.Table.from_pylist(demo_rows), path, row_group_size=7)
    out = _records(path, IngestConfig(batch_size=16))
    _same_docs(out, demo_rows)
    assert [r.source_line for r in out] == list(range(1, len(demo_rows) + 1))


def test_parquet_missing_text_column_names_file_column_and_columns(demo_rows, tmp_path):
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": r["id"], "body": r["text"]} for r in demo_rows]), path)
    with pytest.raises(CorpusError) as info:
        _records(path)
    msg = str(info.value)
    assert str(path) in msg and "'text'" in msg and "id, body" in msg


def test_csv_with_quotes_newlines_and_a_ragged_row(demo_rows, tmp_path):
    path = tmp_path / "demo.csv"
    rows = demo_rows[:5]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "domain"])
        w.writerow([rows[0]["id"], 'has "quotes",\ncommas and\na newline', rows[0]["domain"]])
        for r in rows[1:]:
            w.writerow([r["id"], r["text"], r["domain"]])
        w.writerow(["x", "too", "many", "fields"])
    out = _records(path)
    assert out[0].text == 'has "quotes",\ncommas and\na newline' and out[0].source_line == 2
    assert out[1].source_line == 5  # the first record spans lines 2-4
    assert [r.text for r in out[1:5]] == [r["text"] for r in rows[1:]]
    assert json.loads(out[1].meta_json) == {"domain": rows[1]["domain"]}
    assert isinstance(out[5], Rejected) and out[5].reason == "bad_csv"


def test_csv_missing_column_and_bad_bytes(tmp_path):
    path = tmp_path / "wrong.csv"
    path.write_text("id,content\n1,hello\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"wrong\.csv: no text column 'text'; columns are: id, content"):
        _records(path)
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"id,text\n1,fine\n2,caf\xe9\n")
    out = _records(path)
    assert isinstance(out[0], Record)
    assert isinstance(out[1], Rejected) and (out[1].reason, out[1].source_line, out[1].doc_id) == ("bad_utf8", 3, "2")


def test_txt_folder(demo_rows, tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    for i, r in enumerate(demo_rows[:4]):
        (folder / ("sub" if i % 2 else ".") / f"doc{i}.txt").write_text(r["text"], encoding="utf-8")
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "notes.md").write_text("ignored")
    src, = discover_sources([folder])
    assert src.format == "txt"
    out = _records(folder)
    ids = [r.doc_id for r in out]
    assert ids == ["doc0.txt", "doc2.txt", "latin1.txt", "sub/doc1.txt", "sub/doc3.txt"]
    assert out[0].text == demo_rows[0]["text"] and out[3].text == demo_rows[1]["text"]
    assert isinstance(out[2], Rejected) and out[2].reason == "bad_utf8"


def test_hf_dataset_and_dataset_dict(demo_rows, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(demo_rows)
    ds.save_to_disk(str(tmp_path / "hf"))
    out = _records(tmp_path / "hf", IngestConfig(batch_size=16))
    _same_docs(out, demo_rows)
    dd = datasets.DatasetDict({"train": ds.select(range(40)), "test": ds.select(range(40, 60))})
    dd.save_to_disk(str(tmp_path / "hfdict"))
    sources = discover_sources([tmp_path / "hfdict"])
    assert [s.path.name for s in sources] == ["train", "test"]
    assert len(_records(tmp_path / "hfdict")) == 60
    ds.rename_column("text", "body").save_to_disk(str(tmp_path / "hfwrong"))
    with pytest.raises(CorpusError, match="no text column 'text'; columns are: id, body"):
        _records(tmp_path / "hfwrong")


def test_folder_of_mixed_files_and_explicit_format(demo_rows, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demo_rows[:10]))
    pq.write_table(pa.Table.from_pylist(demo_rows[10:20]), folder / "b.parquet")
    (folder / "readme.txt").write_text("not a document: data files take precedence")
    sources = discover_sources([folder])
    assert [(s.path.name, s.format) for s in sources] == [("a.jsonl", "jsonl"), ("b.parquet", "parquet")]
    _same_docs(_records(folder), demo_rows[:20])
    assert [s.format for s in discover_sources([folder], "parquet")] == ["parquet"]
    odd = tmp_path / "corpus.data"
    odd.write_text(json.dumps(demo_rows[0]) + "\n")
    with pytest.raises(CorpusError, match="cannot tell the format"):
        discover_sources([odd])
    assert discover_sources([odd], "jsonl")[0].format == "jsonl"
    with pytest.raises(CorpusError, match="input not found"):
        discover_sources([tmp_path / "nope.jsonl"])
    with pytest.raises(CorpusError, match="unknown ingest.format"):
        discover_sources([folder], "xml")


def test_input_facts_change_with_files(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a.txt").write_text("one")
    before = input_facts(discover_sources([folder]))
    (folder / "b.txt").write_text("two")
    after = input_facts(discover_sources([folder]))
    assert len(before) == 1 and len(after) == 2


def test_ids_meta_and_preset_cluster():
    cfg = IngestConfig(id_field="key", cluster_field="topic")
    rec = make_record({"key": 7, "text": "hello", "topic": 3, "blob": "z" * 5000, "tags": ["a"], "n": None},
                      "/x/file.jsonl", 12, cfg)
    assert (rec.doc_id, rec.preset_cluster) == ("7", "3")
    assert json.loads(rec.meta_json) == {"tags": ["a"]}  # huge and null values dropped, key/text/topic not repeated
    rec = make_record({"text": "hello"}, "/x/file.jsonl", 12, cfg)
    assert rec.doc_id == "file.jsonl:12" and rec.meta_json is None and rec.preset_cluster is None


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not_gzip_inside"])
def test_a_damaged_gzip_keeps_the_lines_before_and_rejects_the_rest(tmp_path, damage):
    lines = "".join(json.dumps({"id": f"d{i}", "text": f"document {i} " * 40}) + "\n" for i in range(400)).encode()
    packed = gzip.compress(lines)
    data = {"truncated": packed[: len(packed) // 2], "corrupt": packed[:300] + b"\0" * 64 + packed[364:],
            "not_gzip_inside": b"\x1f\x8b" + b"not a gzip stream" * 10}[damage]
    path = tmp_path / "part.jsonl.gz"
    path.write_bytes(data)
    out = _records(path)
    kept = [r for r in out if isinstance(r, Record)]
    (broken,) = [r for r in out if isinstance(r, Rejected) and r.reason == "damaged"]
    assert broken is out[-1] and broken.source_file == str(path)
    assert f"the {broken.source_line - 1} line(s) before it were read" in broken.detail
    assert [r.doc_id for r in kept] == [f"d{i}" for i in range(len(kept))]
    if damage == "truncated":
        assert len(kept) > 100 and "truncated" in broken.detail
