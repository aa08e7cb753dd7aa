"""A known-optimum objective for checking search strategies without training proxies.

    score(w) = -||w - w*||^2 + N(0, NOISE^2)

w* is a fixed Dirichlet(1) draw (seed OPTIMUM_SEED) over as many clusters as the mixture has, so
the optimum is known (score 0 at w = w*) and a strategy's result can be measured as a distance to
it. The noise is seeded by the run's seed, so a re-run (a resumed search, another executor) gets the
same score. Pass `objective` to `run_search(..., objective=objective)`: it is a top-level function,
so it pickles for the process and Ray executors.

Settings are module-level defaults; `w_star` and `true_score` take them as keyword arguments too.
A spawned worker sees the defaults as written here, not as changed at run time by its parent.
"""

from __future__ import annotations

import numpy as np

from climb_core.proxy.types import ProxyResult

N_CLUSTERS = 10       # the number of clusters `w_star()` describes when not given one
NOISE = 0.002         # standard deviation of the per-run score noise
OPTIMUM_SEED = 123    # seed of the Dirichlet draw that fixes w*


def w_star(c: int = N_CLUSTERS, seed: int = OPTIMUM_SEED) -> np.ndarray:
    """The optimal mixture over `c` clusters."""
    return np.random.default_rng(seed).dirichlet(np.ones(c))


def true_score(w, seed: int = OPTIMUM_SEED) -> float:
    """The noise-free objective of mixture `w`: 0 at the optimum, negative elsewhere."""
    w = np.asarray(w, dtype=np.float64)
    return float(-((w - w_star(len(w), seed)) ** 2).sum())


def objective(job) -> ProxyResult:
    """A ProxyJob scored by the true objective plus noise seeded by `job.seed` (no training)."""
    noise = np.random.default_rng(job.seed).normal(0.0, NOISE)
    clean = true_score(job.weights)
    return ProxyResult(run_id=job.run_id, score=clean + noise, scores={"synthetic": clean},
                       loss_curve=[3.0, 2.5], epochs={0: 1.0}, tokens=1000, wall_s=0.01, host="synthetic")
