"""What every predictor offers the search, and the checks that keep a bad one from steering it.

A predictor is fitted on (weights, score) pairs and answers `predict` (the posterior mean, or the
point prediction of a model without a posterior). Models with a posterior also answer `predict_sd`
and `draw` (joint samples of the score at given mixtures: Thompson sampling), and a model whose
posterior draws can be maximised exactly over the constraint set answers `argmax`.

Scores are standardised before fitting (each model sees zero mean, unit spread), so settings such
as regularisation mean the same thing whatever the target's units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from climb_core.search.constraints import Constraints


class Fitted:
    """A fitted predictor. Subclasses implement `_predict` on standardised scores."""

    name = "base"
    has_posterior = False

    def __init__(self, y_mean: float, y_sd: float, method: str):
        self.y_mean = y_mean
        self.y_sd = y_sd
        self.method = method

    # -- point predictions, in the target's own units
    def predict(self, X) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return self.y_mean + self.y_sd * self._predict(X)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- posterior (optional)
    def predict_sd(self, X) -> np.ndarray | None:
        return None

    def draw(self, X, n: int, rng: np.random.Generator) -> np.ndarray | None:
        """n joint posterior samples of the score at the rows of X (n x len(X)), or None."""
        return None

    def argmax(self, cons: Constraints, rng: np.random.Generator | None = None) -> np.ndarray | None:
        """The constrained maximiser of the posterior mean (rng None) or of one posterior draw."""
        return None

    def importance(self, n_features: int) -> list[float]:
        return [0.0] * n_features


class Constant(Fitted):
    name = "constant"

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(len(X))


def standardise(y) -> tuple[np.ndarray, float, float]:
    y = np.asarray(y, dtype=np.float64)
    mean = float(y.mean()) if len(y) else 0.0
    sd = float(y.std()) if len(y) > 1 else 0.0
    if not np.isfinite(sd) or sd <= 0:
        sd = 1.0
    return (y - mean) / sd, mean, sd


@dataclass
class Quality:
    """How one predictor did in cross-validation on the runs so far."""
    name: str
    n: int
    spearman: float | None
    r2: float | None
    flat: bool
    flat_reason: str = ""
    fit_s: float = 0.0
    oof: list[float] = field(default_factory=list)  # out-of-fold predictions, in run order


def spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def r2(y, pred) -> float | None:
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    sst = float(((y - y.mean()) ** 2).sum())
    return None if sst == 0 else 1.0 - float(((y - pred) ** 2).sum()) / sst


def flatness(pred_probe: np.ndarray, y_sd: float) -> tuple[bool, str]:
    """A predictor is flat when it cannot tell candidates apart: it would rank by accident.

    Flat = its spread over a probe set of candidate mixtures is negligible next to the scores'
    spread, or a large share of the probe ties for the top prediction."""
    p = np.asarray(pred_probe, dtype=np.float64)
    if len(p) == 0:
        return True, "no candidates"
    spread = float(p.std())
    if not np.isfinite(spread) or spread <= 1e-3 * max(y_sd, 1e-12):
        return True, f"predictions spread {spread:.3g} vs scores {y_sd:.3g}"
    tol = 1e-9 * max(abs(float(p.max())), 1.0)
    tied = float((p >= p.max() - tol).mean())
    if tied > 0.01:
        return True, f"{tied:.1%} of {len(p)} candidates tie for the top prediction"
    distinct = len(np.unique(np.round(p / max(spread, 1e-300), 6)))
    if distinct < 0.05 * len(p):
        return True, f"only {distinct} distinct predictions over {len(p)} candidates"
    return False, ""


def folds(n: int, k: int, seed: int) -> np.ndarray:
    """Fold of each point: leave-one-out up to 12 points, k-fold after (shuffled, seeded)."""
    k = n if n <= 12 else max(2, min(k, n))
    return np.random.default_rng(seed).permutation(n) % k
