"""Benchmark decontamination: 13-gram overlap of corpus documents with MC eval sets, per cluster."""

from __future__ import annotations

import json

import pytest

from climb_core import cli
from climb_core.export.decontam import decontaminate, words
from climb_core.proxy.targets import REPO_ROOT
from tests.helpers import build_domain_workspace

ARC = REPO_ROOT / "data" / "eval" / "arc_easy.jsonl"
LEAK_CLUSTER = 3          # legal-1 in the domain workspace (domains x 2)
NEAR_CLUSTER = 8          # science_abstracts-0


def _arc_item() -> dict:
    """The first ARC-Easy item whose context + correct answer has at least 20 words."""
    for line in ARC.read_text(encoding="utf-8").splitlines():
        it = json.loads(line)
        if len(words(it["context"] + " " + it["choices"][it["label"]])) >= 20:
            return it
    raise AssertionError("no long ARC-Easy item")


def _add_doc(ws, doc_id: str, text: str, cluster_id: int) -> int:
    with ws.connect() as con:
        doc_idx = con.execute("SELECT max(doc_idx) + 1 FROM documents").fetchone()[0]
        con.execute("INSERT INTO documents (doc_idx, doc_id, text) VALUES (?, ?, ?)", [doc_idx, doc_id, text])
        con.execute("INSERT INTO doc_clusters VALUES (?, ?)", [doc_idx, cluster_id])
    return int(doc_idx)


@pytest.fixture(scope="module")
def leaky_ws(tmp_path_factory):
    ws = build_domain_workspace(tmp_path_factory.mktemp("decontam") / "ws")
    it = _arc_item()
    item_words = words(it["context"] + " " + it["choices"][it["label"]])
    leak = _add_doc(ws, "leak", "Study guide, question 4. " + it["context"] + " " + it["choices"][it["label"]]
                    + " Turn the page for the next question.", LEAK_CLUSTER)
    # Only 12 consecutive words of the item, each side broken off by words the item does not have.
    near = _add_doc(ws, "near", "zebra quokka " + " ".join(item_words[:12]) + " xylophone narwhal", NEAR_CLUSTER)
    return ws, leak, near


def test_leaked_item_is_flagged_and_twelve_words_are_not(leaky_ws):
    ws, leak, near = leaky_ws
    rep = decontaminate(ws, ["arc_easy"])
    assert leak in rep.flagged_doc_idx and "leak" in rep.flagged_doc_ids
    assert near not in rep.flagged_doc_idx
    arc = rep.evals[0]
    assert arc.name == "arc_easy" and arc.n_items == 300 and arc.items_touched >= 1 and arc.docs_flagged >= 1
    assert rep.hits[leak]["arc_easy"] >= 8
    assert rep.n_docs == ws.table_count("documents") and not rep.recorded and not rep.dropped


def test_per_cluster_counts(leaky_ws):
    ws, leak, near = leaky_ws
    rep = decontaminate(ws, ["arc_easy", "piqa"])
    sizes = dict(ws.query_df("SELECT cluster_id, count(*) n FROM doc_clusters GROUP BY 1").values.tolist())
    by_id = {c.cluster_id: c for c in rep.clusters}
    assert set(by_id) == set(sizes)
    assert all(by_id[c].n_docs == n for c, n in sizes.items())
    membership = dict(ws.query_df("SELECT doc_idx, cluster_id FROM doc_clusters").values.tolist())
    expected: dict[int, int] = {}
    for d in rep.flagged_doc_idx:
        expected[membership[d]] = expected.get(membership[d], 0) + 1
    assert {c: v.n_flagged for c, v in by_id.items() if v.n_flagged} == expected
    assert by_id[LEAK_CLUSTER].n_flagged >= 1
    assert by_id[LEAK_CLUSTER].share == pytest.approx(by_id[LEAK_CLUSTER].n_flagged / sizes[LEAK_CLUSTER])
    assert rep.clusters[0].share >= rep.clusters[-1].share
    assert [e.name for e in rep.evals] == ["arc_easy", "piqa"]


def test_shorter_n_matches_the_twelve_word_overlap(leaky_ws):
    ws, leak, near = leaky_ws
    rep = decontaminate(ws, ["arc_easy"], n=12)
    assert {leak, near} <= set(rep.flagged_doc_idx)


def test_drop_records_flags_without_deleting(leaky_ws):
    ws, leak, near = leaky_ws
    n_before = ws.table_count("doc_clusters")
    rep = decontaminate(ws, ["arc_easy"], drop=True)
    assert rep.recorded and not rep.dropped
    flags = ws.query_df("SELECT * FROM decontam_flags ORDER BY doc_idx")
    assert leak in flags["doc_idx"].tolist() and set(flags["eval_name"]) == {"arc_easy"}
    assert (flags["ngram_hits"] > 0).all()
    decontaminate(ws, ["arc_easy"], drop=True)          # a re-run replaces, not duplicates
    assert ws.table_count("decontam_flags") == len(flags)
    assert ws.table_count("doc_clusters") == n_before


def test_cli_prints_flagged_cluster(leaky_ws, capsys):
    ws, leak, near = leaky_ws
    assert cli.main(["decontam", str(ws.root), "--target", "arc_easy", "--target", "piqa"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(f"#{LEAK_CLUSTER} "))
    assert "legal-1" in row and int(row.split()[2]) >= 1
    assert "arc_easy" in out and "piqa" in out
    assert cli.main(["decontam", str(ws.root), "--target", "arc_easy", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert leak in rep["flagged_doc_idx"] and rep["evals"][0]["items_touched"] >= 1


def test_cli_rejects_text_targets(leaky_ws, capsys):
    ws, _, _ = leaky_ws
    assert cli.main(["decontam", str(ws.root), "--target", "text:cluster:1"]) == 1
    assert "multiple-choice" in capsys.readouterr().err


def test_ngrams_do_not_straddle_documents_in_a_batch():
    from climb_core.export.decontam import _Hasher

    h = _Hasher(3)
    a, b = words("one two three four"), words("Five, six! seven")
    joined, doc_of = h.batch([a, [], b])
    assert list(doc_of) == [0, 0, 2]
    assert list(joined) == [*h.ngrams(a), *h.ngrams(b)]
    assert len(h.ngrams(a + b)) == 5 and h.ngrams(["x", "y"]).size == 0
    assert list(_Hasher(3).ngrams(a)) == list(h.ngrams(a))     # stable across instances (and runs)
