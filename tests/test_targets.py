"""Targets: lm-eval style multiple choice and bits-per-byte, checked against numbers computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from climb_core.config import TargetSpec
from climb_core.proxy.targets import TargetError, evaluate_targets, load_targets

# A word-level tokenizer and a unigram "proxy" make every log-likelihood a hand calculation.
VOCAB = ["<|endoftext|>", "[UNK]", "the", "cat", "sat", "ran", "on", "mat", "dog"]
P = {"<|endoftext|>": 0.0, "[UNK]": 0.0, "the": 0.2, "cat": 0.1, "sat": 0.05, "ran": 0.3, "on": 0.1,
     "mat": 0.05, "dog": 0.2}


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


class UnigramStub:
    """sequence_logprobs of a model that ignores context: log P[token] for tokens 1..n-1."""
    kind = "stub"

    def __init__(self):
        self.logp = np.log(np.array([max(P[w], 1e-12) for w in VOCAB]))

    def sequence_logprobs(self, seqs):
        return [self.logp[np.asarray(s)[1:]] for s in seqs]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_multiple_choice_matches_hand_computation(tmp_path):
    path = write_jsonl(tmp_path / "toy.jsonl", [
        {"id": "1", "context": "the cat", "choices": ["sat", "ran on the mat"], "label": 0},
        # Empty context (Winogrande style): conditioned on EOT alone, choices without a leading space.
        {"id": "2", "context": "", "choices": ["the dog ran", "the cat sat"], "label": 1},
    ])
    (target,) = load_targets(None, [TargetSpec(kind="mc", path=str(path), metric="acc")], word_tokenizer())
    eot = VOCAB.index("<|endoftext|>")
    assert target.sequences[0].tolist() == [eot, 2, 3, 4]
    assert target.sequences[2].tolist() == [eot, 2, 8, 5]
    assert target.cont_start.tolist() == [3, 3, 1, 1]
    assert target.choice_len.tolist() == [len("sat"), len("ran on the mat"), 11, 11]

    score, scores = evaluate_targets(UnigramStub(), [target])
    ll_1 = [math.log(0.05), math.log(0.3 * 0.1 * 0.2 * 0.05)]     # -3.00, -8.11: "sat" wins
    ll_1_norm = [ll_1[0] / 3, ll_1[1] / 14]                          # -1.00, -0.58: the long choice wins
    ll_2 = [math.log(0.2 * 0.2 * 0.3), math.log(0.2 * 0.1 * 0.05)]  # -4.42, -6.91: the wrong one wins
    assert ll_1_norm[1] > ll_1_norm[0]
    assert scores["toy/acc"] == pytest.approx((1 + 0) / 2)
    assert scores["toy/acc_norm"] == pytest.approx((0 + 0) / 2)
    assert scores["toy/loglik"] == pytest.approx((ll_1[0] / 1 + ll_2[1] / 3) / 2)
    assert score == scores["toy/acc"]


def test_text_target_bits_per_byte_and_weighted_score(tmp_path):
    txt = tmp_path / "held.txt"
    txt.write_text("the cat\n\nthe dog\n", encoding="utf-8")
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"context": "the", "choices": ["cat", "dog"], "label": 1}])
    specs = [TargetSpec(kind="text", path=str(txt), metric="neg_bpb", weight=3.0),
             TargetSpec(kind="mc", path=str(mc), metric="loglik", weight=1.0)]
    targets = load_targets(None, specs, word_tokenizer())
    score, scores = evaluate_targets(UnigramStub(), targets, specs)
    nats = -(math.log(0.2) + math.log(0.1) + math.log(0.2) + math.log(0.2))
    bpb = nats / math.log(2) / len("the cat" + "the dog\n")
    assert scores["held/neg_bpb"] == pytest.approx(-bpb)
    assert scores["mc/loglik"] == pytest.approx(math.log(0.2))
    assert score == pytest.approx((3 * -bpb + math.log(0.2)) / 4)


def test_bundled_paths_resolve_from_anywhere_and_sample_is_fixed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = TargetSpec(kind="mc", path="data/eval/piqa.jsonl", metric="acc_norm", max_items=7)
    a = load_targets(None, [spec], word_tokenizer())[0]
    b = load_targets(None, [spec], word_tokenizer())[0]
    assert a.name == "piqa" and a.n_items == 7
    assert a.labels.tolist() == b.labels.tolist()
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    with pytest.raises(TargetError, match="not found"):
        load_targets(None, [TargetSpec(kind="mc", path="data/eval/nope.jsonl")], word_tokenizer())


def test_malformed_items_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"context": "a", "choices": ["x", "y"], "label": 0}\n{"context": "b", "choices": ["x"], "label": 0}\n')
    with pytest.raises(TargetError, match=r"bad.jsonl:2: 'choices'"):
        load_targets(None, [TargetSpec(kind="mc", path=str(path))], word_tokenizer())
    with pytest.raises(TargetError, match="metric"):
        load_targets(None, [TargetSpec(kind="text", path=str(path), metric="acc")], word_tokenizer())


def test_real_tokenizer_keeps_context_as_prefix_and_query_targets(tmp_path):
    """With the byte-level BPE, contexts tokenise to a prefix of context + continuation, and a
    'query:' target scores exactly the matching documents' bytes."""
    from climb_core.pipeline.tokens import load_tokenizer, run_tokens
    from tests.test_tokens import make_domain_workspace, token_config

    ws = make_domain_workspace(tmp_path / "ws", per_domain=15)
    run_tokens(ws, token_config(**{"tokenizer.sample_docs": 75}), progress=False)
    tok = load_tokenizer(ws)
    (arc,) = load_targets(ws, [TargetSpec(kind="mc", path="data/eval/arc_easy.jsonl", max_items=20)], tok)
    for seq, start, n_chars in zip(arc.sequences, arc.cont_start, arc.choice_len):
        cont_text = tok.decode(seq[start:].tolist())
        assert cont_text.startswith(" ") and len(cont_text) - 1 == n_chars

    spec = TargetSpec(kind="text", path="query:doc_id LIKE 'legal%'", metric="neg_bpb", max_items=4)
    (q,) = load_targets(ws, [spec], tok)
    texts = ws.query_df("SELECT text FROM documents WHERE doc_id LIKE 'legal%' ORDER BY doc_idx").text.tolist()
    assert q.n_items == 4
    decoded = [tok.decode(s[1:].tolist()) for s in q.sequences]
    assert set(decoded) <= set(texts)
    assert q.n_bytes == sum(len(t.encode()) for t in decoded)

    # A predicate can read documents, nothing more: no second statement, no files, no writes.
    n_docs = ws.table_count("documents")
    outside = tmp_path / "leak.csv"
    for bad in ["1=1); DROP TABLE documents; SELECT (1", "1=1) OR (1 IN (SELECT count(*) FROM read_csv('/etc/passwd'))",
                f"1=1); COPY documents TO '{outside}'; SELECT (1"]:
        with pytest.raises(TargetError):
            load_targets(ws, [TargetSpec(kind="text", path=f"query:{bad}", metric="neg_bpb")], tok)
    assert ws.table_count("documents") == n_docs and not outside.exists()
    # A comma inside a predicate is fine.
    (q2,) = load_targets(ws, [TargetSpec(kind="text", path="query:doc_id LIKE 'legal%' OR doc_id IN ('x', 'y')",
                                         metric="neg_bpb")], tok)
    assert q2.n_items >= 1
