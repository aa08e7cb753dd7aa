"""Rows of the embedding shards by doc_idx, read on demand: memory is the rows asked for, not the corpus.

Refine and describe look up the embeddings of one cluster's documents at a time. Loading every shard
into one array made their memory grow with the corpus (1.5 GB of float32 at a million documents);
this view gathers just the requested rows. Each lookup maps the shards it needs and drops the
mapping before returning, so the pages read do not stay counted in the process's resident memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class EmbeddingRows:
    """`rows[idx]` -> float32 array of the embeddings of doc_idx `idx` (an int, a slice or an int array)."""

    def __init__(self, paths: list[Path]):
        if not paths:
            raise ValueError("no embedding shards")
        self._paths = list(paths)
        sizes, dims = [], set()
        for path in self._paths:
            block = np.load(path, mmap_mode="r")
            sizes.append(block.shape[0])
            dims.add(block.shape[1])
            del block
        if len(dims) != 1:
            raise ValueError(f"embedding shards disagree on their width: {sorted(dims)}")
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.shape = (int(self._starts[-1]), dims.pop())
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            key = np.arange(*key.indices(self.shape[0]))
        scalar = np.ndim(key) == 0
        idx = np.atleast_1d(np.asarray(key, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"doc_idx out of range [0, {self.shape[0]}): {idx.min()}..{idx.max()}")
        out = np.empty((idx.size, self.shape[1]), dtype=np.float32)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        for shard in np.unique(shard_of):
            mask = shard_of == shard
            block = np.load(self._paths[shard], mmap_mode="r")
            out[mask] = block[idx[mask] - self._starts[shard]]
            del block
        return out[0] if scalar else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        # For callers that really want everything (small corpora, tests): the whole matrix.
        whole = self[slice(None)]
        return whole if dtype is None else whole.astype(dtype)
