"""Train a proxy LM on a mixture of clusters: a GPT (nanoGPT's loop) or the n-gram, one interface.

The mixture is weights over the clusters' token memmaps. The GPT samples random windows, choosing
the cluster of each window with probability w_i (nanoGPT's `get_batch` with one more draw); the
n-gram takes a contiguous budget of round(w_i * tokens) from each cluster. Either way the data
records how many times each cluster's tokens were repeated (`epochs`): a small cluster given a large
weight is seen many times over, which the paper caps with its 15x-prior rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from climb_core.config import ProxyConfig
from climb_core.proxy.ngram import KneserNeyLM


class ProxyError(RuntimeError):
    """A proxy cannot be trained on the given mixture (no data, bad weights, bad settings)."""


# A cluster's scaled-down pool is made of pieces this long, spread evenly over the whole cluster, so
# the pool holds a sample of all its documents rather than one stretch of them.
POOL_PIECE_TOKENS = 256


def scaled_pool(tokens: np.ndarray, fraction: float, piece: int = POOL_PIECE_TOKENS) -> np.ndarray:
    """`fraction` of a cluster's tokens (at least one piece): evenly spaced pieces, read into memory.

    Why: a proxy trained on P tokens for a final model of F tokens sees a cluster repeated F/P times
    less often than the final model will. Drawing from a pool of P/F of the cluster makes a share that
    the final model repeats k times repeat k times in the proxy too."""
    n = len(tokens)
    if fraction >= 1.0 or n <= piece:
        return tokens
    n_pieces = -(-n // piece)
    keep = max(1, int(round(n_pieces * fraction)))
    starts = np.unique(np.linspace(0, n_pieces - 1, keep).round().astype(np.int64)) * piece
    return np.concatenate([np.asarray(tokens[s:s + piece]) for s in starts])


class MixtureData:
    """The training files of the clusters in a mixture and their weights; draws and counts tokens.

    `pool_fraction` < 1 trains on that fraction of each cluster (`scaled_pool`), and `epochs`
    counts repeats of that pool: the repetition the final model will see."""

    def __init__(self, cluster_ids: Sequence[int], paths: Sequence[str | Path], weights: Sequence[float],
                 dtype: str, vocab_size: int, pool_fraction: float = 1.0):
        if not (len(cluster_ids) == len(paths) == len(weights)):
            raise ProxyError("cluster_ids, paths and weights must have the same length")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ProxyError(f"mixture weights must be finite, non-negative and not all zero: {list(weights)}")
        self.vocab_size = vocab_size
        self.cluster_ids = [int(c) for c in cluster_ids]
        if not 0.0 < pool_fraction <= 1.0:
            raise ProxyError(f"pool_fraction must be in (0, 1], got {pool_fraction}")
        self.pool_fraction = float(pool_fraction)
        self.tokens = [scaled_pool(np.memmap(p, dtype=dtype, mode="r"), self.pool_fraction)
                       if Path(p).stat().st_size else np.zeros(0, dtype) for p in paths]
        sizes = np.array([len(t) for t in self.tokens])
        empty = (sizes == 0) & (w > 0)
        if empty.all():
            raise ProxyError("every cluster with weight > 0 has no training tokens")
        w = np.where(sizes == 0, 0.0, w)  # a cluster with no tokens cannot be drawn from
        self.weights = w / w.sum()
        self.drawn = np.zeros(len(self.tokens), dtype=np.int64)

    @classmethod
    def from_token_files(cls, files, cluster_ids: Sequence[int], weights: Sequence[float], vocab_size: int,
                         pool_fraction: float = 1.0) -> "MixtureData":
        """From `tokens.cluster_token_files` output, picking `cluster_ids` in the order of `weights`."""
        by_id = {f.cluster_id: f for f in files}
        missing = [c for c in cluster_ids if c not in by_id]
        if missing:
            raise ProxyError(f"clusters {missing} have no token files (not active?); run `climb tokens` again")
        chosen = [by_id[c] for c in cluster_ids]
        return cls(cluster_ids, [f.train_path for f in chosen], weights, chosen[0].dtype, vocab_size, pool_fraction)

    @property
    def epochs(self) -> dict[int, float]:
        sizes = [max(len(t), 1) for t in self.tokens]
        return {c: float(d / n) for c, d, n in zip(self.cluster_ids, self.drawn, sizes) if d > 0}

    def _take(self, i: int, start: int, n: int) -> np.ndarray:
        """n tokens of cluster i from `start`, wrapping around its end (a repeat of the cluster)."""
        data = self.tokens[i]
        self.drawn[i] += n
        if start + n <= len(data):
            return np.asarray(data[start:start + n], dtype=np.int64)
        return np.asarray(data[(start + np.arange(n)) % len(data)], dtype=np.int64)

    def sample_windows(self, rng: np.random.Generator, batch_size: int, block_size: int) -> np.ndarray:
        """(batch_size, block_size + 1) token windows, each from a cluster drawn by weight."""
        which = rng.choice(len(self.tokens), size=batch_size, p=self.weights)
        out = np.empty((batch_size, block_size + 1), dtype=np.int64)
        for row, i in enumerate(which):
            n = len(self.tokens[i])
            start = int(rng.integers(0, max(n - block_size - 1, 0) + 1))
            out[row] = self._take(int(i), start, block_size + 1)
        return out

    def chunks(self, rng: np.random.Generator, total_tokens: int, chunk: int) -> list[np.ndarray]:
        """round(w_i * total_tokens) tokens of each cluster, as `chunk`-token runs from random offsets.

        Many short runs sample a cluster's documents the way the GPT's random windows do; one long
        run would see only the few documents after its offset, so two seeds of the same mixture
        could see different halves of a mixed cluster and score far apart."""
        out = []
        for i, w in enumerate(self.weights):
            n = int(round(w * total_tokens))
            if n <= 0:
                continue
            size = len(self.tokens[i])
            # The cluster cut into chunk-sized pieces (from a random phase), taken in a random order
            # without replacement, one full pass before any piece repeats: a share of one epoch sees
            # every token once, as a contiguous run would.
            per_pass = max(1, -(-size // chunk))
            phase = int(rng.integers(0, size))
            got = 0
            while got < n:
                for piece in rng.permutation(per_pass):
                    m = min(chunk, n - got, size - int(piece) * chunk) if int(piece) * chunk < size else 0
                    if m <= 0:
                        continue
                    out.append(self._take(i, (phase + int(piece) * chunk) % size, m))
                    got += m
                    if got >= n:
                        break
        return out

    def contiguous(self, rng: np.random.Generator, total_tokens: int) -> list[np.ndarray]:
        """round(w_i * total_tokens) consecutive tokens of each cluster, from a random offset."""
        out = []
        for i, w in enumerate(self.weights):
            n = int(round(w * total_tokens))
            if n <= 0:
                continue
            out.append(self._take(i, int(rng.integers(0, len(self.tokens[i]))), n))
        return out


@dataclass
class TrainedProxy:
    """A trained proxy behind one interface, whichever its kind."""
    kind: str
    score_fn: Callable[[list[np.ndarray]], list[np.ndarray]]
    loss_curve: list[float] = field(default_factory=list)
    epochs: dict[int, float] = field(default_factory=dict)
    tokens_seen: int = 0
    n_params: int = 0
    train_s: float = 0.0

    def sequence_logprobs(self, sequences: list[np.ndarray]) -> list[np.ndarray]:
        """Per sequence: natural-log p(token_i | tokens before i) for i = 1 .. len-1."""
        return self.score_fn(sequences)


def train_proxy(cfg: ProxyConfig, data: MixtureData, seed: int) -> TrainedProxy:
    if cfg.kind == "ngram":
        return _train_ngram(cfg, data, seed)
    if cfg.kind == "gpt":
        return train_gpt(cfg, data, seed)
    raise ProxyError(f"proxy.kind = {cfg.kind!r}; expected ngram or gpt")


# --------------------------------------------------------------------------- n-gram

def _train_ngram(cfg: ProxyConfig, data: MixtureData, seed: int) -> TrainedProxy:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    arrays = data.chunks(rng, cfg.tokens, cfg.ngram_chunk) if cfg.ngram_chunk > 0 else data.contiguous(rng, cfg.tokens)
    lm = KneserNeyLM(cfg.ngram_order, data.vocab_size, cfg.ngram_discount).fit(arrays)
    # No training curve: counting has no steps. The curve stays empty.
    return TrainedProxy("ngram", lambda seqs: [lm.logprobs(s) for s in seqs], [], data.epochs,
                        int(sum(len(a) for a in arrays)), 0, time.perf_counter() - t0)


# --------------------------------------------------------------------------- GPT

def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def gpt_runtime(cfg: ProxyConfig):
    """The device a GPT proxy trains on (torch threads set for CPU) and its autocast context (bf16 on CUDA)."""
    import torch

    device = _device(cfg.device)
    if device == "cpu" and cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    use_bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device == "cuda")
    return device, torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16)


def lr_schedule(cfg: ProxyConfig) -> tuple[int, Callable[[int], float]]:
    """Optimiser steps for cfg.tokens, and the learning rate at each: linear warm-up, cosine down to 10%."""
    steps = max(1, cfg.tokens // (cfg.batch_size * cfg.block_size))
    warmup = int(cfg.warmup_frac * steps)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.learning_rate * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    return steps, lr_at


def train_gpt(cfg: ProxyConfig, data: MixtureData, seed: int) -> TrainedProxy:
    import torch

    from climb_core.proxy.model import GPT, GPTConfig

    t0 = time.perf_counter()
    device, autocast = gpt_runtime(cfg)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    # Round the vocabulary up to a multiple of 64: faster matmuls, and unused rows cost nothing.
    vocab = 64 * math.ceil(data.vocab_size / 64)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=cfg.block_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd)).to(device)
    opt = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (0.9, 0.95))
    steps, lr_at = lr_schedule(cfg)

    # At most ~100 points: the curve is stored with every run.
    every = math.ceil(steps / 100)
    curve: list[float] = []
    acc = 0.0
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        batch = torch.from_numpy(data.sample_windows(rng, cfg.batch_size, cfg.block_size)).to(device)
        with autocast:
            _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc += loss.item()
        if (step + 1) % every == 0 or step == steps - 1:
            curve.append(acc / (every if (step + 1) % every == 0 else (step + 1) % every))
            acc = 0.0
    model.eval()
    tokens_seen = steps * cfg.batch_size * cfg.block_size

    def score(seqs: list[np.ndarray]) -> list[np.ndarray]:
        return gpt_logprobs(model, seqs, cfg.block_size, device, autocast)

    return TrainedProxy("gpt", score, curve, data.epochs, tokens_seen, model.num_params(),
                        time.perf_counter() - t0)


def gpt_logprobs(model, seqs: list[np.ndarray], block_size: int, device: str, autocast,
                  batch_windows: int = 64) -> list[np.ndarray]:
    """Log-probs of every token after the first, in windows of at most block_size inputs.

    A sequence longer than the context is cut into consecutive windows; the last window is aligned
    to the sequence's end so the final tokens (where a multiple-choice continuation sits) get the
    longest context the model has.
    """
    import torch

    out = [np.zeros(max(len(s) - 1, 0), dtype=np.float64) for s in seqs]
    # (sequence, window start, first target index kept within the window)
    windows: list[tuple[int, int, int]] = []
    for si, s in enumerate(seqs):
        n_targets = len(s) - 1
        start = 0
        while start < n_targets:
            if start + block_size >= n_targets:
                begin = max(0, n_targets - block_size)
                windows.append((si, begin, start - begin))
                break
            windows.append((si, start, 0))
            start += block_size
    windows.sort(key=lambda w: min(block_size, len(seqs[w[0]]) - 1 - w[1]))
    with torch.inference_mode():
        for lo in range(0, len(windows), batch_windows):
            chunk = windows[lo:lo + batch_windows]
            lens = [min(block_size, len(seqs[si]) - 1 - b) for si, b, _ in chunk]
            T = max(lens)
            x = np.zeros((len(chunk), T), dtype=np.int64)
            y = np.zeros((len(chunk), T), dtype=np.int64)
            for r, ((si, b, _), n) in enumerate(zip(chunk, lens)):
                x[r, :n] = seqs[si][b:b + n]
                y[r, :n] = seqs[si][b + 1:b + 1 + n]
            xt = torch.from_numpy(x).to(device)
            yt = torch.from_numpy(y).to(device)
            with autocast:
                logits, _ = model(xt)
            logits = logits.float()
            # log p(y) = logit_y - logsumexp(logits): no (B, T, V) log-softmax tensor is materialised.
            lp = (logits.gather(-1, yt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)).cpu().numpy()
            for r, ((si, b, keep), n) in enumerate(zip(chunk, lens)):
                out[si][b + keep:b + n] = lp[r, keep:n]
    return out
