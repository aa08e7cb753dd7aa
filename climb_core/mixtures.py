"""Candidate mixtures: Dirichlet samples around the token prior (RegMix / CLIMB stage 6).

A sample's concentration is drawn from a log-spaced ladder, so one batch holds both near-prior
mixtures (large scale) and sparse, adventurous ones (small scale). Caps keep any cluster from
taking more than `cap_multiple` times its natural share, which stops the search from proposing
mixtures that would repeat a small cluster dozens of times.
"""

from __future__ import annotations

import numpy as np

from climb_core.config import MixtureConfig

# Rows that agree to this many decimals count as the same mixture.
_DEDUP_DECIMALS = 4


def _normalise(prior) -> np.ndarray:
    p = np.asarray(prior, dtype=np.float64).ravel()
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"prior must be non-negative with a positive sum, got {p!r}")
    return p / p.sum()


def uniform_mixture(n_clusters: int) -> np.ndarray:
    return np.full(n_clusters, 1.0 / n_clusters)


def natural_mixture(prior) -> np.ndarray:
    """The token-proportional mixture: what training on the corpus as it is would see."""
    return _normalise(prior)


def apply_caps(w: np.ndarray, cap: np.ndarray, min_weight: float, max_iter: int = 50) -> np.ndarray:
    """Clip rows at `cap`, hand the excess to uncapped clusters, zero tiny weights; rows sum to 1.

    Capping and zeroing each move the other weights a little, so both are repeated until neither
    changes anything (a handful of passes in practice)."""
    w = np.array(w, dtype=np.float64, copy=True)
    for _ in range(max_iter):
        over = w > cap + 1e-12
        if over.any():
            excess = np.where(over, w - cap, 0.0).sum(axis=1, keepdims=True)
            w = np.minimum(w, cap)
            free = (w < cap - 1e-12)
            # Excess goes to the uncapped clusters in proportion to their weight; a row whose
            # uncapped clusters are all zero spreads it by remaining headroom instead.
            share = np.where(free, w, 0.0)
            room = np.where(free, cap - w, 0.0)
            tot = share.sum(axis=1, keepdims=True)
            use_room = tot <= 0
            share = np.where(use_room, room, share)
            tot = share.sum(axis=1, keepdims=True)
            w = w + excess * np.divide(share, tot, out=np.zeros_like(share), where=tot > 0)
        small = (w > 0) & (w < min_weight)
        if small.any():
            w = np.where(small, 0.0, w)
            w = w / w.sum(axis=1, keepdims=True)
        if not (w > cap + 1e-9).any() and not ((w > 0) & (w < min_weight)).any():
            break
    return w


def _dirichlet_rows(alpha_base: np.ndarray, scales: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Gamma draws with tiny shapes underflow to exactly 0; a row of zeros is redrawn.
    alpha = scales[:, None] * alpha_base[None, :]
    g = rng.standard_gamma(alpha)
    sums = g.sum(axis=1)
    bad = ~(sums > 0)
    while bad.any():
        g[bad] = rng.standard_gamma(alpha[bad])
        sums = g.sum(axis=1)
        bad = ~(sums > 0)
    return g / sums[:, None]


def sample_mixtures(prior, n: int, cfg: MixtureConfig, rng: np.random.Generator) -> np.ndarray:
    """n distinct mixtures (n x C, rows sum to 1) drawn around `prior`.

    prior ** temperature (renormalised) sets the Dirichlet's mean; each row's concentration is one
    of `n_concentrations` log-spaced scales in [min_concentration, max_concentration]. Weights are
    capped at cap_multiple x prior and those below min_weight zeroed. Duplicates (rounded) are
    dropped and replaced, so fewer than n rows come back only when the space is too small."""
    p = _normalise(prior)
    c = p.size
    if n <= 0:
        return np.zeros((0, c))
    if c == 1:
        return np.ones((1, 1))
    tempered = p ** cfg.temperature
    tempered /= tempered.sum()
    ladder = np.logspace(np.log10(cfg.min_concentration), np.log10(cfg.max_concentration),
                         max(1, cfg.n_concentrations))
    # A cap below 1/C for every cluster could not sum to 1; the cap is relaxed to stay feasible.
    cap = np.minimum(1.0, cfg.cap_multiple * p)
    if cap.sum() < 1.0:
        cap = np.minimum(1.0, cap / cap.sum())
    out = np.zeros((0, c))
    seen: set[bytes] = set()
    for _ in range(20):
        need = n - len(out)
        if need <= 0:
            break
        m = max(need + 8, int(need * 1.2))
        scales = rng.choice(ladder, size=m)
        w = apply_caps(_dirichlet_rows(tempered, scales, rng), cap, cfg.min_weight)
        # A sparse row whose few clusters are all capped must spill into empty clusters in amounts
        # below min_weight; such a row cannot satisfy both rules and is redrawn instead.
        ok = ~(w > cap + 1e-9).any(axis=1) & ~((w > 0) & (w < cfg.min_weight)).any(axis=1)
        w = w[ok]
        m = len(w)
        keys = np.round(w, _DEDUP_DECIMALS)
        keep = []
        for i in range(m):
            k = keys[i].tobytes()
            if k not in seen:
                seen.add(k)
                keep.append(i)
        out = np.vstack([out, w[keep]])
    return out[:n]


def dedup_rows(w: np.ndarray, decimals: int = _DEDUP_DECIMALS) -> np.ndarray:
    """Rows of w without repeats (rounded), first occurrence kept, order preserved."""
    if len(w) == 0:
        return w
    _, idx = np.unique(np.round(w, decimals), axis=0, return_index=True)
    return w[np.sort(idx)]
