"""The trainer-file writers on plain inputs, read back by the trainers' own readers (megatron-core's
IndexedDataset and get_blend_from_list, NeMo's PreTrainingDataModule checks where NeMo is installed)."""

from __future__ import annotations

import filecmp
import json
import warnings

import numpy as np
import pytest

from climb_core.proxy import trainer_files as tf
from climb_core.export.formats import md_escape, push_to_hub, size_category


def _megatron():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("megatron.core.datasets.indexed_dataset")


@pytest.mark.parametrize("vocab", [1000, 70_000])
def test_indexed_writer_is_byte_identical_to_megatron(tmp_path, vocab):
    """The writer used without megatron-core writes the bytes IndexedDatasetBuilder writes, in both dtypes."""
    idx = _megatron()
    rng = np.random.default_rng(vocab)
    docs = [rng.integers(0, vocab, int(rng.integers(0, 40))).tolist() for _ in range(200)]
    ours = tf.write_indexed_dataset(tmp_path / "ours", docs, vocab, use_megatron=False)
    theirs = tf.write_indexed_dataset(tmp_path / "theirs", docs, vocab, use_megatron=True)
    assert ours == theirs and ours["dtype"] == ("uint16" if vocab < 65500 else "int32")
    for ext in ("bin", "idx"):
        assert filecmp.cmp(tmp_path / f"ours.{ext}", tmp_path / f"theirs.{ext}", shallow=False)
    ds = idx.IndexedDataset(str(tmp_path / "ours"))
    kept = [d for d in docs if d]
    assert len(ds) == len(kept) == ours["docs"]
    assert all(np.array_equal(ds[i], np.asarray(d)) for i, d in enumerate(kept))
    assert list(ds.document_indices) == list(range(len(kept) + 1))
    assert int(ds.sequence_lengths.sum()) == ours["tokens"]


def test_token_ids_must_fit_the_dtype(tmp_path):
    with pytest.raises(tf.TrainerFileError, match="does not fit uint16"):
        tf.write_indexed_dataset(tmp_path / "x", [[1, 70_000]], 1000, use_megatron=False)


def test_tokenized_documents_end_with_eod(tmp_path):
    seen = []
    tok = tf.TrainerTokenizer("chars", 300, 299, lambda texts: seen.append(len(texts)) or [[ord(c) for c in t] for t in texts])
    stats = tf.write_tokenized_documents(tmp_path / "c", (t for t in ["ab", "", "c"] * 5), tok, use_megatron=False)
    assert stats == {"docs": 10, "tokens": 25, "dtype": "uint16"}
    raw = np.fromfile(tmp_path / "c.bin", dtype=np.uint16)
    assert raw[:7].tolist() == [97, 98, 299, 99, 299, 97, 98]
    paths = tmp_path / "d.jsonl"
    assert tf.write_documents_jsonl(paths, ["x", ("y", "id-1")]) == 2
    assert [json.loads(x) for x in paths.read_text().splitlines()] == [{"text": "x"}, {"text": "y", "id": "id-1"}]
    assert list(tf.jsonl_texts(paths)) == ["x", "y"]


def test_blends_parse_with_megatron_and_nemo_formats(tmp_path):
    from megatron.core.datasets.utils import get_blend_from_list

    pairs = tf.blend([3, 0, 1], ["/d/a", "/d/b", "/d/c"])
    assert pairs == [(0.75, "/d/a"), (0.25, "/d/c")]
    # --data-path arrives as a whitespace-split list; --data-args-path is the file's text split the same way.
    assert get_blend_from_list(tf.megatron_data_path(pairs).split()) == (["/d/a", "/d/c"], [0.75, 0.25])
    f = tf.write_megatron_data_args(tmp_path / "blend.txt", pairs)
    assert get_blend_from_list(f.read_text().split()) == (["/d/a", "/d/c"], [0.75, 0.25])
    per = tf.megatron_per_split(pairs, ["/d/valid"])
    assert get_blend_from_list(per["train"]) == (["/d/a", "/d/c"], [0.75, 0.25])
    assert get_blend_from_list(per["valid"]) == (["/d/valid"], None) and per["test"] is None
    flat = tf.nemo_paths(pairs)
    assert flat == [0.75, "/d/a", 0.25, "/d/c"] and get_blend_from_list(flat) == (["/d/a", "/d/c"], [0.75, 0.25])
    splits = tf.nemo_paths_per_split(pairs, ["/d/valid"])
    assert set(splits) == {"train", "validation", "test"} and splits["test"] == ["/d/valid"]
    with pytest.raises(tf.TrainerFileError, match="positive weight"):
        tf.blend([0, 0], ["/a", "/b"])


def test_whitespace_in_a_blend_path_is_refused():
    with pytest.raises(tf.TrainerFileError, match="'/my data/c'.*whitespace"):
        tf.megatron_data_path([(1.0, "/my data/c")])
    with pytest.raises(tf.TrainerFileError, match="whitespace"):
        tf.megatron_per_split([(1.0, "/ok")], ["/tab\there"])


def test_unknown_tokenizer_name_says_it_is_not_downloaded(tmp_path):
    with pytest.raises(tf.TrainerFileError, match="local Hugging Face cache.*download"):
        tf.load_trainer_tokenizer("no-such-org/no-such-tokenizer-xyz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(tf.TrainerFileError, match="holds no tokenizer"):
        tf.load_trainer_tokenizer(str(empty))


def test_card_helpers():
    assert md_escape("a|b <script>x</script> **bold** [l](u)\nnext") == (
        r"a\|b &lt;script&gt;x&lt;/script&gt; \*\*bold\*\* \[l\]\(u\) next")
    assert size_category(999) == "n<1K" and size_category(1500) == "1K<n<10K" and size_category(10**13) == "n>1T"


def test_push_to_hub_calls_the_api(tmp_path):
    calls = []

    class Api:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/datasets/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))

    url = push_to_hub(tmp_path, "me/mix", private=True, api=Api())
    assert url.endswith("datasets/me/mix")
    assert calls[0] == ("create_repo", "me/mix", {"repo_type": "dataset", "private": True, "exist_ok": True})
    up = calls[1][1]
    assert up["repo_id"] == "me/mix" and up["repo_type"] == "dataset" and up["folder_path"] == str(tmp_path)
    assert "README.md" in up["allow_patterns"] and "part-*.parquet" in up["allow_patterns"]
    assert not any("clusters" in p or "blend" in p for p in up["allow_patterns"])
