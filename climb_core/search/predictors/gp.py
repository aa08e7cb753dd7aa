"""A Gaussian-process predictor: a log-linear trend plus a smooth residual, with a noise term.

Inputs are log(w + eps), standardised. The kernel is
    c1 * DotProduct      the mixing-law trend (a Bayesian linear model on log weights)
  + c2 * Matern(5/2)     what the trend misses: interactions, clusters that substitute for each other
  + White               proxy noise (seed to seed), so repeated or near-identical runs are not
                         interpolated exactly.
Hyperparameters maximise the marginal likelihood (scikit-learn's optimiser, a few restarts, seeded).
Joint posterior draws over a candidate set give Thompson sampling; the posterior mean and sd give
expected improvement.
"""

from __future__ import annotations

import warnings

import numpy as np

from climb_core.search.predictors.base import Fitted, standardise
from climb_core.search.predictors.loglinear import common_scale

EPS = 1e-2


class GPFit(Fitted):
    name = "gp"
    has_posterior = True

    def __init__(self, gp, eps, x_mean, x_scale, y_mean, y_sd, method):
        super().__init__(y_mean, y_sd, method)
        self.gp = gp
        self.eps = eps
        self.x_mean = x_mean
        self.x_scale = x_scale

    def _z(self, X):
        return (np.log(np.clip(X, 0, None) + self.eps) - self.x_mean) / self.x_scale

    def _noise(self) -> float:
        k = self.gp.kernel_
        return float(k.k2.noise_level) if hasattr(k, "k2") and hasattr(k.k2, "noise_level") else 0.0

    def _predict(self, X):
        return self.gp.predict(self._z(X))

    def predict_sd(self, X):
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        _, sd = self.gp.predict(self._z(X), return_std=True)
        # return_std includes the white noise; the search wants the uncertainty of the mean.
        sd = np.sqrt(np.maximum(sd ** 2 - self._noise(), 0.0))
        return self.y_sd * sd

    def draw(self, X, n, rng):
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        mean, cov = self.gp.predict(self._z(X), return_cov=True)
        cov = cov - self._noise() * np.eye(len(X))
        # Eigen-decomposition tolerates the near-singular covariance of close candidates.
        vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
        root = vecs * np.sqrt(np.clip(vals, 0, None))
        z = rng.standard_normal((n, len(X)))
        return self.y_mean + self.y_sd * (mean[None, :] + z @ root.T)


def fit_gp(X, y, seed: int = 0, eps: float = EPS, restarts: int = 2) -> GPFit:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, DotProduct, Matern, WhiteKernel

    X = np.asarray(X, dtype=np.float64)
    ys, y_mean, y_sd = standardise(y)
    F = np.log(np.clip(X, 0, None) + eps)
    x_mean = F.mean(axis=0)
    x_scale = common_scale(F)
    Z = (F - x_mean) / x_scale
    d = Z.shape[1]
    trend = ConstantKernel(0.1, (1e-4, 1e1)) * DotProduct(sigma_0=1.0, sigma_0_bounds="fixed")
    residual = ConstantKernel(0.5, (1e-3, 1e1)) * Matern(length_scale=np.sqrt(d), length_scale_bounds=(1e-1, 1e3), nu=2.5)
    kernel = (trend + residual) + WhiteKernel(0.05, (1e-5, 1.0))
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False, n_restarts_optimizer=restarts,
                                  random_state=seed, alpha=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(Z, ys)
    method = f"GP (log-linear trend + Matern 5/2 + noise) on log(w + {eps:g}), n={len(ys)}; kernel {gp.kernel_}"
    return GPFit(gp, eps, x_mean, x_scale, y_mean, y_sd, method)


def fit_gp_best_eps(X, y, eps_grid, seed: int = 0, restarts: int = 2) -> GPFit:
    """The GP whose offset eps (from `eps_grid`) gives the highest log marginal likelihood.

    The offset sets how quickly the model believes a cluster's returns diminish: 0.01 makes going
    from 1% to 0% cost as much as from 10% to 1%; 1.0 is close to linear in the weights. Which holds
    depends on the target, and the likelihood of the same scores under each input map can tell."""
    grid = sorted({float(e) for e in eps_grid}) or [EPS]
    fits = [fit_gp(X, y, seed=seed, eps=e, restarts=restarts) for e in grid]
    best = max(fits, key=lambda f: f.gp.log_marginal_likelihood_value_)
    if len(grid) > 1:
        lml = ", ".join(f"{f.eps:g}: {f.gp.log_marginal_likelihood_value_:.1f}" for f in fits)
        best.method += f"; eps by marginal likelihood ({lml})"
    return best


def refit_gp(like: GPFit, X, y) -> GPFit:
    """A GP on other data with `like`'s fitted kernel (no hyperparameter search): for CV folds."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    X = np.asarray(X, dtype=np.float64)
    ys, y_mean, y_sd = standardise(y)
    F = np.log(np.clip(X, 0, None) + like.eps)
    x_mean = F.mean(axis=0)
    x_scale = common_scale(F)
    gp = GaussianProcessRegressor(kernel=like.gp.kernel_, optimizer=None, normalize_y=False, alpha=1e-8)
    gp.fit((F - x_mean) / x_scale, ys)
    return GPFit(gp, like.eps, x_mean, x_scale, y_mean, y_sd, like.method + " (kernel kept)")
