"""A data-mixing-law predictor: score = a + sum_i b_i * log(w_i + eps), fitted as a Bayesian ridge.

The log makes returns diminish: the first tokens of a useful cluster help more than the last, the
shape mixing-law papers (Ye et al. 2024, RegMix's linear baseline on log weights) report. The
Bayesian ridge (scikit-learn's, evidence-maximised priors) gives a Gaussian posterior over b, which
serves two purposes: predictive intervals, and Thompson sampling, where each draw of b is maximised
exactly over the constraint set (the objective is separable and, where b_i > 0, concave: a
water-filling solution found by bisection on its Lagrange multiplier).

eps is chosen per fit from a small grid by the model evidence (the marginal likelihood), because
the right scale depends on how small the weights in the runs are.
"""

from __future__ import annotations

import numpy as np

from climb_core.search.constraints import Constraints
from climb_core.search.predictors.base import Fitted, standardise

EPS_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def common_scale(F: np.ndarray) -> np.ndarray:
    """One scale for every column (the pooled spread of the log weights), not one per column.

    Every feature is a log weight in the same units, so one isotropic prior fits them all. Scaling
    each column by its own spread would blow up a cluster the runs so far barely varied: its
    coefficient would multiply candidates' values far outside the training range."""
    sd = float(F.std(axis=0).mean())
    return np.full(F.shape[1], sd if sd > 1e-12 else 1.0)


def _features(X: np.ndarray, eps: float) -> np.ndarray:
    return np.log(np.clip(X, 0.0, None) + eps)


def maximise_log_sum(b: np.ndarray, eps: float, cons: Constraints) -> np.ndarray:
    """argmax_w sum_i b_i log(w_i + eps) over the constraint set (exact up to bisection tolerance).

    Stationarity gives w_i = clip(b_i / lam - eps, lower_i, upper_i) for b_i > 0; clusters with
    b_i <= 0 sit at their lower bound unless the positive ones cannot hold the mass, in which case
    the rest fills the least harmful clusters first. Weights that land below min_weight are dropped
    (or lifted to it when dropping is infeasible) and the rest solved again."""
    lower, upper = cons.lower.copy(), cons.upper.copy()
    n = len(b)
    for _ in range(n + 1):
        w = _water_fill(b, eps, lower, upper)
        small = (w > 1e-12) & (w < cons.min_weight - 1e-12) & ~cons.pinned
        if not small.any():
            return w
        i = int(np.flatnonzero(small)[np.argmin(w[small])])
        if upper.sum() - upper[i] >= 1 - 1e-9:
            upper[i] = 0.0
        else:
            lower[i] = cons.min_weight
    return cons.project(w)


def _water_fill(b: np.ndarray, eps: float, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    pos = b > 0
    w = lower.copy()
    if pos.any():
        def fill(lam: float) -> np.ndarray:
            return np.where(pos, np.clip(b / lam - eps, lower, upper), lower)

        full = np.where(pos, upper, lower)
        if full.sum() > 1 + 1e-12:
            # fill() falls from full.sum() (lam -> 0) to lower.sum() <= 1 (lam -> inf): bracket 1.
            lo, hi = 1e-12, float(b[pos].max()) / max(eps, 1e-12) * 10 + 1e-12
            for _ in range(100):
                if fill(lo).sum() >= 1:
                    break
                lo *= 1e-3
            for _ in range(200):
                mid = np.sqrt(lo * hi)
                if fill(mid).sum() > 1:
                    lo = mid
                else:
                    hi = mid
                if hi / lo < 1 + 1e-12:
                    break
            w = fill(hi)
            short = 1 - w.sum()
            if short > 0:  # bisection slack: give it to the positive clusters with room
                room = np.where(pos, upper - w, 0.0)
                if room.sum() > 0:
                    w = w + room * min(1.0, short / room.sum())
            return w
        w = full
    # The useful clusters are full: the rest goes to the least harmful clusters, one at a time.
    short = 1 - w.sum()
    for i in np.argsort(np.where(pos, np.inf, -b), kind="stable"):
        if short <= 1e-12:
            break
        if pos[i]:
            continue
        add = min(upper[i] - w[i], short)
        w[i] += add
        short -= add
    return w


class LogLinearFit(Fitted):
    name = "loglinear"
    has_posterior = True

    def __init__(self, model, eps: float, x_mean, x_scale, y_mean, y_sd, method):
        super().__init__(y_mean, y_sd, method)
        self.model = model
        self.eps = eps
        self.x_mean = x_mean
        self.x_scale = x_scale

    def _z(self, X: np.ndarray) -> np.ndarray:
        return (_features(X, self.eps) - self.x_mean) / self.x_scale

    def _predict(self, X):
        return self.model.predict(self._z(X))

    def predict_sd(self, X):
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        _, sd = self.model.predict(self._z(X), return_std=True)
        return self.y_sd * sd

    @property
    def coef(self) -> np.ndarray:
        """b in the units of log(w + eps) and standardised scores."""
        return self.model.coef_ / self.x_scale

    def _coef_draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cov = np.asarray(self.model.sigma_)
        z = rng.multivariate_normal(self.model.coef_, cov, size=n, method="eigh")
        return z / self.x_scale[None, :]

    def draw(self, X, n, rng):
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        F = _features(X, self.eps) - self.x_mean
        b = self._coef_draws(n, rng)
        intercept = self.model.intercept_
        return self.y_mean + self.y_sd * (intercept + b @ F.T)

    def argmax(self, cons, rng=None):
        b = self.coef if rng is None else self._coef_draws(1, rng)[0]
        return maximise_log_sum(b, self.eps, cons)

    def importance(self, n_features):
        a = np.abs(self.coef)
        return (a / a.sum()).tolist() if a.sum() > 0 else [0.0] * n_features


def fit_loglinear(X, y, eps_grid=EPS_GRID) -> LogLinearFit:
    from sklearn.linear_model import BayesianRidge

    X = np.asarray(X, dtype=np.float64)
    ys, y_mean, y_sd = standardise(y)
    best = None
    for eps in eps_grid:
        F = _features(X, eps)
        x_mean = F.mean(axis=0)
        x_scale = common_scale(F)
        model = BayesianRidge(compute_score=True, fit_intercept=True, max_iter=300)
        model.fit((F - x_mean) / x_scale, ys)
        evidence = float(model.scores_[-1])
        if best is None or evidence > best[0]:
            best = (evidence, eps, model, x_mean, x_scale)
    _, eps, model, x_mean, x_scale = best
    method = f"Bayesian ridge on log(w + {eps:g}) (eps by evidence over {list(eps_grid)}), n={len(ys)}"
    return LogLinearFit(model, eps, x_mean, x_scale, y_mean, y_sd, method)
