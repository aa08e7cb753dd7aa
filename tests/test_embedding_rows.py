"""EmbeddingRows: on-demand row lookups across embedding shards equal the fully loaded matrix."""

from __future__ import annotations

import numpy as np
import pytest

from climb_core.pipeline.embedding_rows import EmbeddingRows


def test_rows_across_shards_equal_the_concatenated_matrix(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(n, 8)).astype(np.float16) for n in (5, 1, 7)]
    paths = []
    for i, b in enumerate(blocks):
        paths.append(tmp_path / f"shard-{i:05d}.npy")
        np.save(paths[-1], b)
    whole = np.concatenate(blocks).astype(np.float32)
    rows = EmbeddingRows(paths)
    assert rows.shape == (13, 8) and len(rows) == 13
    idx = np.array([12, 0, 5, 5, 6, 4, 11])            # unsorted, repeated, crossing every shard boundary
    np.testing.assert_array_equal(rows[idx], whole[idx])
    np.testing.assert_array_equal(rows[3], whole[3])
    np.testing.assert_array_equal(rows[2:9], whole[2:9])
    np.testing.assert_array_equal(np.asarray(rows), whole)
    assert rows[np.array([], dtype=np.int64)].shape == (0, 8)
    with pytest.raises(IndexError, match="out of range"):
        rows[np.array([13])]
    with pytest.raises(IndexError):
        rows[np.array([-1])]


def test_shards_of_different_widths_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float16))
    np.save(tmp_path / "b.npy", np.zeros((2, 5), np.float16))
    with pytest.raises(ValueError, match="width"):
        EmbeddingRows([tmp_path / "a.npy", tmp_path / "b.npy"])
