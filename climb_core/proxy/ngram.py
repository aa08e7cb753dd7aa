"""A count-based proxy: interpolated Kneser-Ney n-gram LM over token ids, all in numpy.

Seconds to train on a mixture and score a target, so a whole search runs on a laptop CPU. It ranks
mixtures by how well their text predicts the target's text, which is what a small GPT proxy does
too, only with less generalisation.

Every n-gram is hashed into one int64 key (rolling polynomial hash, so key(context + w) is computed
from key(context) and w); counts come from np.unique and lookups from np.searchsorted, never from a
Python loop over tokens. Order k < n uses Kneser-Ney continuation counts (how many distinct tokens
precede the k-gram) and order 1 interpolates with the uniform distribution, so every conditional
distribution sums to exactly 1 over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (golden ratio): keys spread over 2^64
_EMPTY = np.uint64(0x243F6A8885A308D3)  # key of the empty context


def _extend(keys: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """key(context + token) from key(context); wraps mod 2^64 on purpose."""
    with np.errstate(over="ignore"):
        return (keys * _MULT) ^ (tokens.astype(np.uint64) + np.uint64(1)) * np.uint64(0xBF58476D1CE4E5B9)


def _keys_by_order(tokens: np.ndarray, order: int) -> list[np.ndarray]:
    """keys[k][i] = key of the k tokens ending at position i (valid for i >= k - 1); keys[0] = empty."""
    n = len(tokens)
    keys = [np.full(n + 1, _EMPTY, dtype=np.uint64)]  # index i + 1 <-> the context ending at token i
    for k in range(1, order + 1):
        prev = keys[k - 1]
        cur = np.full(n + 1, _EMPTY, dtype=np.uint64)
        cur[1:] = _extend(prev[:-1], tokens)  # k-gram ending at i = (k-1)-gram ending at i-1, then token i
        keys.append(cur)
    return keys


@dataclass
class _Level:
    """Counts of one order: the n-grams and, per context, the sum of counts and the number of types."""
    gram_keys: np.ndarray     # sorted uint64
    gram_counts: np.ndarray   # float64
    ctx_keys: np.ndarray      # sorted uint64
    ctx_total: np.ndarray     # float64: sum of gram counts over the context's continuations
    ctx_types: np.ndarray     # float64: number of distinct continuations


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[key] for each query key, 0 where absent."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query))
    pos = np.searchsorted(sorted_keys, query)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == query, values[pos], 0.0)


def _level(gram_keys: np.ndarray, ctx_keys: np.ndarray, counts: np.ndarray) -> _Level:
    uctx, inv = np.unique(ctx_keys, return_inverse=True)
    return _Level(gram_keys, counts.astype(np.float64), uctx,
                  np.bincount(inv, weights=counts, minlength=len(uctx)).astype(np.float64),
                  np.bincount(inv, minlength=len(uctx)).astype(np.float64))


class KneserNeyLM:
    """Interpolated Kneser-Ney of order `order` over ids 0..vocab_size-1, with one absolute discount."""

    def __init__(self, order: int, vocab_size: int, discount: float = 0.75):
        if order < 1:
            raise ValueError("ngram order must be >= 1")
        if not 0.0 < discount < 1.0:
            raise ValueError("ngram discount must be in (0, 1)")
        self.order = order
        self.vocab_size = vocab_size
        self.discount = discount
        self.levels: list[_Level] = []
        self.n_tokens = 0

    def fit(self, arrays: list[np.ndarray]) -> "KneserNeyLM":
        """Count every n-gram inside each array (n-grams never span two arrays)."""
        n = self.order
        # Per order k, over all arrays: each k-gram's key and its context's key, and (k >= 2) the key of
        # its (k-1)-token suffix and that suffix's context, for the continuation counts below.
        grams: list[list[np.ndarray]] = [[] for _ in range(n + 1)]
        ctxs: list[list[np.ndarray]] = [[] for _ in range(n + 1)]
        sufs: list[list[np.ndarray]] = [[] for _ in range(n + 1)]
        suf_ctxs: list[list[np.ndarray]] = [[] for _ in range(n + 1)]
        for arr in arrays:
            arr = np.asarray(arr, dtype=np.int64)
            if len(arr) == 0:
                continue
            self.n_tokens += len(arr)
            keys = _keys_by_order(arr, n)
            for k in range(1, n + 1):
                # keys[k][i + 1] is the k-gram ending at token i; it exists for i >= k - 1.
                grams[k].append(keys[k][k:])
                ctxs[k].append(keys[k - 1][k - 1:-1])
                if k >= 2:
                    sufs[k].append(keys[k - 1][k:])
                    suf_ctxs[k].append(keys[k - 2][k - 1:-1])
        if self.n_tokens == 0:
            raise ValueError("no training tokens for the n-gram proxy")

        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

        self.levels = [None] * (n + 1)  # type: ignore[list-item]
        # Highest order: raw counts.
        top_grams = cat(grams[n])
        keys, first, counts = np.unique(top_grams, return_index=True, return_counts=True)
        self.levels[n] = _level(keys, cat(ctxs[n])[first], counts)
        # Lower orders: continuation counts N1+(. w), one per distinct (k+1)-gram ending in the k-gram.
        for k in range(n - 1, 0, -1):
            _, first_up = np.unique(cat(grams[k + 1]), return_index=True)
            suffix = cat(sufs[k + 1])[first_up]
            suffix_ctx = cat(suf_ctxs[k + 1])[first_up]
            keys, first, counts = np.unique(suffix, return_index=True, return_counts=True)
            self.levels[k] = _level(keys, suffix_ctx[first], counts)
        return self

    def _prob(self, ctx_keys: list[np.ndarray], gram_keys: list[np.ndarray], top: np.ndarray) -> np.ndarray:
        """P(w | context) for each query; order k is used only where k <= top (the available context + 1)."""
        d = self.discount
        p = np.full(len(top), 1.0 / self.vocab_size)
        for k in range(1, self.order + 1):
            lv = self.levels[k]
            use = top >= k
            if not use.any():
                break
            total = _lookup(lv.ctx_keys, lv.ctx_total, ctx_keys[k])
            types = _lookup(lv.ctx_keys, lv.ctx_types, ctx_keys[k])
            count = _lookup(lv.gram_keys, lv.gram_counts, gram_keys[k])
            seen = use & (total > 0)
            safe = np.where(seen, total, 1.0)
            interp = (np.maximum(count - d, 0.0) + d * types * p) / safe
            # An unseen context leaves the lower-order estimate unchanged (full back-off).
            p = np.where(seen, interp, p)
        return p

    def logprobs(self, tokens: np.ndarray) -> np.ndarray:
        """Natural-log p(token_i | tokens before i) for i = 1 .. len-1."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(tokens) < 2:
            return np.zeros(0)
        keys = _keys_by_order(tokens, self.order)
        idx = np.arange(1, len(tokens))  # target positions
        ctx_keys = [None] + [keys[k - 1][idx] for k in range(1, self.order + 1)]   # (k-1) tokens ending at i-1
        gram_keys = [None] + [keys[k][idx + 1] for k in range(1, self.order + 1)]  # k tokens ending at i
        top = np.minimum(idx + 1, self.order)
        return np.log(self._prob(ctx_keys, gram_keys, top))  # type: ignore[arg-type]

    def next_distribution(self, context: np.ndarray) -> np.ndarray:
        """P(w | context) for every w in the vocabulary (for checks and sampling)."""
        context = np.asarray(context, dtype=np.int64)[-(self.order - 1):] if self.order > 1 else np.zeros(0, np.int64)
        w = np.arange(self.vocab_size)
        ctx_keys: list[np.ndarray | None] = [None]
        gram_keys: list[np.ndarray | None] = [None]
        for k in range(1, self.order + 1):
            key = np.array([_EMPTY], dtype=np.uint64)
            for t in context[len(context) - (k - 1):] if 1 < k <= len(context) + 1 else []:
                key = _extend(key, np.array([t]))
            ctx = np.full(self.vocab_size, key[0], dtype=np.uint64)
            ctx_keys.append(ctx)
            gram_keys.append(_extend(ctx, w))
        top = np.full(self.vocab_size, min(len(context) + 1, self.order))
        return self._prob(ctx_keys, gram_keys, top)  # type: ignore[arg-type]
