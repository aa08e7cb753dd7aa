"""Near-duplicate removal (ingest.near_dup): edited copies of real documents are found, originals kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from climb_core.catalogue.stages import StageError
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline import ingest
from climb_core.pipeline.near_dup import find_near_duplicates, shingles
from tests.helpers import demo_rows

N_DOCS = 80
COPIED = [3, 17, 40, 41, 66]   # documents of which an edited copy follows later in the file


def _edited(text: str, rng: np.random.Generator) -> str:
    """A copy as scrapers make them: a header line, a footer, and a few words replaced."""
    words = text.split()
    for i in rng.choice(len(words), size=max(1, len(words) // 100), replace=False):
        words[i] = "EDITED"
    return "Reposted from the archive\n" + " ".join(words) + "\n-- sent from my phone"


def _jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(shingles(a, n)), set(shingles(b, n))
    return len(sa & sb) / len(sa | sb)


@pytest.fixture(scope="module")
def corpus():
    rows = [r for r in demo_rows(1200) if len(r["text"].split()) >= 300][:N_DOCS]
    assert len(rows) == N_DOCS
    rng = np.random.default_rng(0)
    copies = [dict(rows[i], id=f"copy-of-{rows[i]['id']}", text=_edited(rows[i]["text"], rng)) for i in COPIED]
    exact = dict(rows[5], id="exact-copy")
    return rows, copies, exact


def test_edited_copies_are_found_and_point_at_their_original(corpus):
    rows, copies, _ = corpus
    docs = [(r["id"], r["text"]) for r in rows + copies]
    found = list(find_near_duplicates(docs, threshold=0.8))
    assert {d.key for d in found} == {c["id"] for c in copies}
    for d in found:
        assert d.key == f"copy-of-{d.kept_key}"
        true = _jaccard(dict(docs)[d.key], dict(docs)[d.kept_key])
        assert abs(d.jaccard - true) < 0.12 and d.jaccard >= 0.8
    # Distinct real documents are not near-duplicates of each other (no false positive among them).
    assert list(find_near_duplicates([(r["id"], r["text"]) for r in rows], threshold=0.8)) == []
    # Threshold 1 keeps the edited copies: they are near, not exact.
    assert list(find_near_duplicates(docs, threshold=1.0)) == []


def _write(tmp_path, records) -> str:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _ingest(tmp_path, records, **settings) -> Workspace:
    config = ClimbConfig()
    config.ingest.paths = [_write(tmp_path, records)]
    for k, v in settings.items():
        setattr(config.ingest, k, v)
    ws = Workspace.init(tmp_path / f"ws-{len(list(tmp_path.iterdir()))}", config)
    ingest.run_ingest(ws, config, progress=False)
    return ws


def test_ingest_rejects_near_duplicates_naming_the_kept_document_and_line(corpus, tmp_path):
    rows, copies, exact = corpus
    records = rows + copies + [exact]
    ws = _ingest(tmp_path, records, near_dup=True, batch_size=32)   # copies and originals in different batches
    kept = ws.query_df("SELECT doc_id FROM documents ORDER BY doc_idx")["doc_id"].tolist()
    assert kept == [r["id"] for r in rows]
    rej = ws.query_df("SELECT source_line, doc_id, reason, detail FROM rejected ORDER BY source_line")
    near = rej[rej.reason == "near_duplicate"]
    assert near["doc_id"].tolist() == [c["id"] for c in copies]
    for row in near.itertuples():
        original = row.doc_id.removeprefix("copy-of-")
        line = [r["id"] for r in records].index(original) + 1
        assert f"near-duplicate of {original} (" in row.detail and f"line {line})" in row.detail
    # The exact copy is still reported as an exact duplicate, not as a near one.
    assert rej.loc[rej.doc_id == "exact-copy", "reason"].tolist() == ["duplicate"]
    msg = ws.scalar("SELECT message FROM stages WHERE stage = 'ingest'")
    assert f"{len(copies)} near duplicate" in msg

    off = _ingest(tmp_path, records)   # the default keeps near copies
    assert off.table_count("documents") == len(rows) + len(copies)


def test_a_bad_threshold_is_refused_before_reading(tmp_path, corpus):
    with pytest.raises(StageError, match="near_dup_threshold"):
        _ingest(tmp_path, corpus[0][:3], near_dup=True, near_dup_threshold=1.5)
