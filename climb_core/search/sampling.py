"""Candidate mixtures drawn at random: Dirichlet samples around the token prior (RegMix / CLIMB stage 6).

A sample's concentration is drawn from a log-spaced ladder, so one batch holds both near-prior
mixtures (large scale) and sparse, adventurous ones (small scale). Every row is then projected into
the search's constraint set, so a sample is always a mixture the search may train.
"""

from __future__ import annotations

import numpy as np

from climb_core.config import MixtureConfig
from climb_core.search.constraints import Constraints

# Rows that agree to this many decimals count as the same mixture.
DEDUP_DECIMALS = 4


def normalise(prior) -> np.ndarray:
    p = np.asarray(prior, dtype=np.float64).ravel()
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"prior must be non-negative with a positive sum, got {p!r}")
    return p / p.sum()


def uniform_mixture(n_clusters: int) -> np.ndarray:
    return np.full(n_clusters, 1.0 / n_clusters)


def natural_mixture(prior) -> np.ndarray:
    """The token-proportional mixture: what training on the corpus as it is would see."""
    return normalise(prior)


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


def dedup_rows(w: np.ndarray, decimals: int = DEDUP_DECIMALS, seen: set[bytes] | None = None) -> np.ndarray:
    """Rows of w without repeats (rounded), first occurrence kept, order preserved; `seen` rows excluded."""
    seen = set() if seen is None else seen
    keep = []
    for i, key in enumerate(np.round(w, decimals)):
        k = key.tobytes()
        if k not in seen:
            seen.add(k)
            keep.append(i)
    return w[keep]


def sample_mixtures(prior, n: int, cfg: MixtureConfig, rng: np.random.Generator,
                    constraints: Constraints | None = None) -> np.ndarray:
    """n distinct mixtures (n x C, rows sum to 1) drawn around `prior`, inside `constraints`.

    prior ** temperature (renormalised) sets the Dirichlet's mean; each row's concentration is one
    of `n_concentrations` log-spaced scales in [min_concentration, max_concentration]. Duplicates
    (rounded) are dropped and replaced, so fewer than n rows come back only when the set is tiny."""
    from climb_core.search.constraints import constraints_for

    p = normalise(prior)
    c = p.size
    if n <= 0:
        return np.zeros((0, c))
    cons = constraints if constraints is not None else constraints_for(cfg, p, list(range(c)))
    if c == 1:
        return np.ones((1, 1))
    tempered = p ** cfg.temperature
    tempered /= tempered.sum()
    ladder = np.logspace(np.log10(cfg.min_concentration), np.log10(cfg.max_concentration),
                         max(1, cfg.n_concentrations))
    out = np.zeros((0, c))
    seen: set[bytes] = set()
    for _ in range(20):
        need = n - len(out)
        if need <= 0:
            break
        m = max(need + 8, int(need * 1.2))
        w = cons.project(_dirichlet_rows(tempered, rng.choice(ladder, size=m), rng))
        out = np.vstack([out, dedup_rows(w, seen=seen)])
    return out[:n]


DESIGNS = ("cover", "random")


def covering_subset(pool: np.ndarray, n: int, upper: np.ndarray, rng: np.random.Generator,
                    share: float = 0.5) -> np.ndarray:
    """n rows of `pool` picked greedily so that every cluster is tried at a large share of its cap.

    A cluster counts as covered once some picked row gives it `share` of its upper bound; a row's
    gain is how much uncovered cap it adds (each cluster's best share so far, clipped at `share`).
    When every cluster is covered the count starts over, so a longer first round covers twice.
    Why: a first round of i.i.d. Dirichlet draws often never gives the cluster that matters a large
    share; no predictor can then learn its effect, and later rounds rarely recover (on the known-answer
    benchmark the worst seeds were exactly those). Ties go to a random row, not the pool's order."""
    pool = np.asarray(pool, dtype=np.float64)
    n = min(n, len(pool))
    if n <= 0:
        return pool[:0]
    upper = np.asarray(upper, dtype=np.float64)
    # An excluded cluster (cap 0) can never be covered: it is left out, so it cannot hold up the start-over.
    open_ = upper > 1e-12
    u = np.minimum(pool[:, open_] / upper[open_][None, :], share)
    reach = np.zeros(u.shape[1])
    free = np.ones(len(pool), dtype=bool)
    picks: list[int] = []
    jitter = rng.random(len(pool)) * 1e-9
    while len(picks) < n:
        if reach.size and reach.min() >= share - 1e-12:
            reach[:] = 0.0
        gain = np.clip(u - reach[None, :], 0.0, None).sum(axis=1) + jitter
        gain[~free] = -np.inf
        i = int(np.argmax(gain))
        picks.append(i)
        free[i] = False
        reach = np.maximum(reach, u[i])
    return pool[picks]
