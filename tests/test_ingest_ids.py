"""Document ids are unique after ingest: a repeated id given in the input is rejected with its file and
line; ids derived from file names that collide across folders are qualified with the folder."""

from __future__ import annotations

import json

from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline import ingest
from tests.helpers import demo_rows


def _config(*paths) -> ClimbConfig:
    config = ClimbConfig()
    config.ingest.paths = [str(p) for p in paths]
    return config


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_explicit_duplicate_id_is_rejected_with_file_and_line(tmp_path):
    rows = demo_rows(6)
    a = _write_jsonl(tmp_path / "a.jsonl", rows[:3])
    clash = dict(rows[3], id=rows[1]["id"])  # another text under an id a.jsonl already used (its line 2)
    b = _write_jsonl(tmp_path / "b.jsonl", [rows[4], clash, rows[5]])
    ws = Workspace.init(tmp_path / "ws")
    out = ingest.run_ingest(ws, _config(a, b), progress=False)
    assert out.rows_out == 5 and "1 rejected (1 duplicate id)" in out.message
    docs = ws.query_df("SELECT doc_id FROM documents ORDER BY doc_idx")["doc_id"].tolist()
    assert docs == [rows[i]["id"] for i in (0, 1, 2, 4, 5)]
    rej = ws.query_df("SELECT * FROM rejected WHERE reason = 'duplicate_id'")
    assert len(rej) == 1
    assert rej["source_file"].item() == str(b.resolve()) and rej["source_line"].item() == 2
    assert rej["doc_id"].item() == rows[1]["id"]
    assert f"{a.resolve()} line 2" in rej["detail"].item()


def test_derived_ids_of_same_named_files_in_two_folders_are_qualified(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in demo_rows(7)]
    corpus = tmp_path / "corpus"
    _write_jsonl(corpus / "a" / "data.jsonl", rows[:3])
    _write_jsonl(corpus / "b" / "data.jsonl", rows[3:5])
    _write_jsonl(corpus / "b" / "solo.jsonl", rows[5:7])
    ws = Workspace.init(tmp_path / "ws")
    out = ingest.run_ingest(ws, _config(corpus), progress=False)
    assert out.rows_out == 7 and "0 rejected" in out.message
    assert "5 file-derived ids qualified with their folder" in out.message
    ids = ws.query_df("SELECT doc_id FROM documents ORDER BY doc_idx")["doc_id"].tolist()
    # every id of a file with a collision takes the folder (line 3 too); solo.jsonl keeps the short form
    assert ids == ["a/data.jsonl:1", "a/data.jsonl:2", "a/data.jsonl:3",
                   "b/data.jsonl:1", "b/data.jsonl:2", "solo.jsonl:1", "solo.jsonl:2"]
    assert ws.scalar("SELECT count(*) FROM rejected") == 0


def test_txt_files_of_the_same_name_in_two_input_folders_get_distinct_ids(tmp_path):
    texts = [r["text"] for r in demo_rows(3)]
    for folder, text in (("one", texts[0]), ("two", texts[1])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "doc.txt").write_text(text, encoding="utf-8")
    (tmp_path / "two" / "other.txt").write_text(texts[2], encoding="utf-8")
    ws = Workspace.init(tmp_path / "ws")
    out = ingest.run_ingest(ws, _config(tmp_path / "one", tmp_path / "two"), progress=False)
    assert out.rows_out == 3
    ids = ws.query_df("SELECT doc_id, text FROM documents ORDER BY doc_idx")
    assert ids["doc_id"].tolist() == ["one/doc.txt", "two/doc.txt", "other.txt"]
    assert ids["text"].tolist() == texts[:2] + [texts[2]]


def test_ids_that_cannot_be_kept_as_given_are_rejected_not_rewritten(tmp_path):
    rows = demo_rows(6)
    lines = [json.dumps(dict(rows[0], id="x" * 1001)), json.dumps(dict(rows[1], id="ok-1")),
             json.dumps(dict(rows[2], id="bad-\ud800")), json.dumps(dict(rows[3], id=1)),
             json.dumps(dict(rows[4], id="1")), json.dumps(dict(rows[5], id=True))]
    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ws = Workspace.init(tmp_path / "ws")
    ingest.run_ingest(ws, _config(path), progress=False)
    assert ws.query_df("SELECT doc_id FROM documents ORDER BY doc_idx")["doc_id"].tolist() == ["ok-1", "1"]
    rej = ws.query_df("SELECT source_line, reason, detail FROM rejected ORDER BY source_line")
    assert rej["source_line"].tolist() == [1, 3, 5, 6]
    assert rej["reason"].tolist() == ["bad_id", "bad_id", "duplicate_id", "bad_id"]
    assert "longer than 1000" in rej["detail"][0] and "lone surrogate" in rej["detail"][1]
    assert "1 and \"1\" are the same id" in rej["detail"][2] and "not a bool" in rej["detail"][3]
