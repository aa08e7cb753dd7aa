"""Statistics on tiny texts whose values can be checked by hand; the quality score and the user hook."""

from __future__ import annotations

import gzip
import json
import time

import numpy as np
import pytest

from climb_core.pipeline.quality import RULES, ScorerError, combine_quality, heuristic_quality, load_user_scorer, rule_passes
from climb_core.pipeline.stats import STAT_COLUMNS, batch_stats, document_stats
from tests.helpers import DATA


def _demo_texts(domain: str | None = None) -> list[str]:
    with gzip.open(DATA / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [r["text"] for r in rows if domain is None or r["domain"] == domain]


def test_counts_on_a_short_sentence():
    s = document_stats("The cat and the dog")
    assert s["n_chars"] == 19
    assert s["n_words"] == 5
    assert s["mean_word_len"] == pytest.approx(3.0)
    assert s["n_lines"] == 1
    assert s["stopword_count"] == 3  # the, and, the (case-insensitive)
    assert s["upper_ratio"] == pytest.approx(1 / 19)
    assert s["n_tokens_est"] == 5  # round(19 / 4)
    assert s["non_alpha_word_frac"] == 0.0


def test_symbols_and_letterless_words():
    s = document_stats("# heading ... more")
    assert s["symbol_ratio"] == pytest.approx(2 / 4)  # one '#', one '...', four words
    assert s["non_alpha_word_frac"] == pytest.approx(2 / 4)  # '#' and '...'
    s = document_stats("ab12")
    assert s["digit_ratio"] == pytest.approx(0.5)
    assert document_stats("ABcd")["upper_ratio"] == pytest.approx(0.5)
    assert document_stats("x 42 3.5 é1")["non_alpha_word_frac"] == pytest.approx(2 / 4)  # é is a letter


def test_line_fractions():
    s = document_stats("- first item\n* second item\nplain line\n\n")
    assert s["n_lines"] == 4
    assert s["bullet_line_frac"] == pytest.approx(2 / 3)  # blank lines do not count
    assert document_stats("wait...\nok\nthen…")["ellipsis_line_frac"] == pytest.approx(2 / 3)
    # four non-blank lines, two of them copies of an earlier one
    assert document_stats("a\na\n a \nb")["repeated_line_frac"] == pytest.approx(2 / 4)


def test_duplicate_ngrams():
    # the second "a b c d e" repeats the first 5-gram: 5 of 10 word characters
    assert document_stats("a b c d e a b c d e")["dup_ngram_frac"] == pytest.approx(0.5)
    assert document_stats("a b c d e f g h i j")["dup_ngram_frac"] == 0.0
    assert document_stats("a b c d")["dup_ngram_frac"] == 0.0


def test_empty_text_has_no_division_by_zero():
    s = document_stats("")
    assert s["n_words"] == 0 and s["n_chars"] == 0
    assert all(np.isfinite(float(v)) for v in s.values())


def test_batch_stats_matches_document_stats_and_is_fast():
    texts = _demo_texts()
    start = time.perf_counter()
    frame = batch_stats(texts)
    elapsed = time.perf_counter() - start
    assert list(frame.columns) == STAT_COLUMNS and len(frame) == len(texts)
    assert frame.iloc[7].to_dict() == pytest.approx(document_stats(texts[7]), rel=1e-6)
    # ~0.2 ms a document on a loaded 2-core machine; generous bound so only a real regression fails
    assert elapsed < 10, f"batch_stats took {elapsed:.1f}s for {len(texts)} documents"


def test_clean_prose_scores_higher_than_spam():
    clean = _demo_texts("encyclopedia")[:20]
    spam = [
        "\n".join(f"• BUY NOW #{i} ### $$$ !!! ..." for i in range(40)),
        "\n".join("- click here - click here - click here" for _ in range(30)),
        "#### 1234 5678 #### 9999 0000 ... ... ... ### 42 42 42",
    ]
    q_clean = heuristic_quality(batch_stats(clean))
    q_spam = heuristic_quality(batch_stats(spam))
    assert np.all((q_clean >= 0) & (q_clean <= 1)) and np.all((q_spam >= 0) & (q_spam <= 1))
    assert q_clean.min() > 0.9
    assert q_spam.max() < 0.5
    passes = rule_passes(batch_stats(spam))
    assert passes["repeated lines"].iloc[1] == 0.0  # 30 identical lines
    assert passes["symbol-to-word ratio"].iloc[2] == 0.0


def test_soft_thresholds_fall_off_gradually():
    # Word count passes from 50 words and is 0 at 10: 30 words sit halfway.
    rule = next(r for r in RULES if r.column == "n_words")
    words = " ".join(["the quick brown fox jumps over lazy dogs and cats"] * 3)  # 30 words
    passes = rule_passes(batch_stats([words]))
    assert passes[rule.name].iloc[0] == pytest.approx(0.5)
    q = heuristic_quality(batch_stats([words, words + " " + words + " " + words + " " + words + " " + words]))
    assert q[0] < q[1]


def test_combine_quality():
    h = np.array([1.0, 0.2])
    assert combine_quality(h, None, 0.5).tolist() == [1.0, 0.2]
    assert combine_quality(h, [0.0, 1.0], 0.25) == pytest.approx([0.75, 0.4])


@pytest.fixture
def scorer_module(tmp_path, monkeypatch):
    (tmp_path / "my_scorers.py").write_text(
        "def length(texts):\n    return [min(len(t) / 100, 1.0) for t in texts]\n"
        "def short(texts):\n    return [0.5]\n"
        "def too_big(texts):\n    return [2.0 for _ in texts]\n"
        "def nan(texts):\n    return [float('nan') for _ in texts]\n"
        "def boom(texts):\n    raise RuntimeError('model not loaded')\n"
        "not_callable = 3\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "my_scorers.py"


def test_user_scorer_loads_by_module_and_by_path(scorer_module):
    score = load_user_scorer("my_scorers:length")
    assert score(["x" * 50, "y" * 500]) == [0.5, 1.0]
    by_path = load_user_scorer(f"{scorer_module}:length")
    assert by_path(["x" * 10]) == [0.1]


@pytest.mark.parametrize("spec, texts, message", [
    ("no_such_module_xyz:f", None, "cannot import module 'no_such_module_xyz'"),
    ("my_scorers:missing", None, "has no function 'missing'"),
    ("my_scorers:not_callable", None, "has no function 'not_callable'"),
    ("my_scorers", None, "must look like 'module:function'"),
    ("/nowhere/scorer.py:f", None, "not found"),
    ("my_scorers:short", ["a", "b"], "returned 1 scores for 2 texts"),
    ("my_scorers:too_big", ["a"], "returned 2.0 for text #0"),
    ("my_scorers:nan", ["a"], "outside [0, 1]"),
    ("my_scorers:boom", ["a"], "raised RuntimeError: model not loaded"),
])
def test_bad_user_scorer_gives_a_clear_error(scorer_module, spec, texts, message):
    with pytest.raises(ScorerError, match=None) as info:
        scorer = load_user_scorer(spec)
        scorer(texts)
    assert message in str(info.value)
    assert spec in str(info.value)
