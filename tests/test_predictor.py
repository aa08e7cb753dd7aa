"""The LightGBM predictor: ranks unseen mixtures on a smooth objective, degrades gracefully when tiny."""

from __future__ import annotations

import numpy as np

from climb_core.config import MixtureConfig, PredictorConfig
from climb_core.mixtures import sample_mixtures
from climb_core.predictor import cross_validate, fit_predictor

PRIOR = np.array([0.2, 0.15, 0.15, 0.1, 0.1, 0.1, 0.08, 0.06, 0.04, 0.02])
W_STAR = np.random.default_rng(123).dirichlet(np.ones(10))


def _data(n: int, seed: int):
    X = sample_mixtures(PRIOR, n, MixtureConfig(), np.random.default_rng(seed))
    y = -((X - W_STAR) ** 2).sum(axis=1) + np.random.default_rng(seed + 1).normal(0, 0.002, len(X))
    return X, y


def test_held_out_spearman_on_smooth_objective():
    from scipy.stats import spearmanr

    X, y = _data(64, 0)
    Xt, yt = _data(1000, 99)
    model = fit_predictor(X, y, PredictorConfig())
    # Measured 0.80 on this setup; the floor leaves room for LightGBM versions.
    assert spearmanr(model.predict(Xt), yt).statistic > 0.65
    rep = cross_validate(X, y, PredictorConfig())
    assert rep.n_train == 64
    assert rep.spearman is not None and rep.spearman > 0.65  # measured 0.80 (out-of-fold)
    assert rep.r2 is not None and rep.r2 > 0.45              # measured 0.61
    assert "out-of-fold" in rep.method
    assert len(rep.importance) == 10 and abs(sum(rep.importance) - 1) < 1e-9


def test_small_n_falls_back_and_says_so():
    X, y = _data(6, 3)
    model = fit_predictor(X, y, PredictorConfig())
    assert "no early stopping" in model.method
    assert model.predict(X).shape == (6,)
    rep = cross_validate(X[:3], y[:3], PredictorConfig())
    assert rep.spearman is None and "too few" in rep.method


def test_constant_target_and_determinism():
    X, _ = _data(20, 4)
    m = fit_predictor(X, np.ones(20), PredictorConfig())
    assert np.allclose(m.predict(X), 1.0) and "constant" in m.method
    X, y = _data(40, 5)
    a = fit_predictor(X, y, PredictorConfig()).predict(X)
    b = fit_predictor(X, y, PredictorConfig()).predict(X)
    assert np.array_equal(a, b)
