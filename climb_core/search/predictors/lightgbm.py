"""The paper's predictor: LightGBM regression on the weights alone, made sound at 8-100 points.

The paper fits gbdt with learning rate 0.01, L1 = L2 = 1, depth 4, 5 per leaf and a 90/10 early-
stopping split, on hundreds of runs. At the sizes a CPU search affords, those settings give a
nearly constant model: on raw, unscaled scores the L1/L2 penalties zero most leaves, and without
row or feature subsampling every tree is the same tree. So here scores are standardised first
(penalties then mean the same at any scale), rows and features are subsampled per tree, leaves may
hold a few points, and the number of trees is chosen by k-fold cross-validation with early
stopping, then the model is refit on every point. Once a 10% split holds `min_valid` points, the
paper's split-based early stopping is used instead.
"""

from __future__ import annotations

import numpy as np

from climb_core.config import PredictorConfig
from climb_core.search.predictors.base import Fitted, standardise


class LightGBMFit(Fitted):
    name = "lightgbm"

    def __init__(self, booster, y_mean, y_sd, method, rounds):
        super().__init__(y_mean, y_sd, method)
        self.booster = booster
        self.rounds = rounds

    def _predict(self, X):
        return self.booster.predict(X)

    def importance(self, n_features):
        gain = np.asarray(self.booster.feature_importance(importance_type="gain"), dtype=np.float64)
        return (gain / gain.sum()).tolist() if gain.sum() > 0 else [0.0] * n_features


def params(cfg: PredictorConfig, n: int) -> dict:
    return {
        "objective": "regression", "boosting": "gbdt", "learning_rate": cfg.learning_rate,
        "max_depth": cfg.max_depth, "num_leaves": max(2, min(31, 2 ** cfg.max_depth)),
        "min_data_in_leaf": max(1, min(cfg.min_data_in_leaf, n // 4)), "min_data_in_bin": 1,
        "min_sum_hessian_in_leaf": 0.0, "lambda_l1": cfg.lambda_l1, "lambda_l2": cfg.lambda_l2,
        "bagging_fraction": cfg.bagging_fraction, "bagging_freq": 1 if cfg.bagging_fraction < 1 else 0,
        "feature_fraction": cfg.feature_fraction, "verbose": -1, "seed": cfg.seed,
        # One thread and deterministic mode: a resumed search must refit exactly the same model.
        "num_threads": 1, "deterministic": True, "force_row_wise": True, "feature_pre_filter": False,
    }


def fit_lightgbm(X, y, cfg: PredictorConfig, rounds: int | None = None) -> LightGBMFit:
    import lightgbm as lgb

    X = np.asarray(X, dtype=np.float64)
    ys, y_mean, y_sd = standardise(y)
    n = len(ys)
    p = params(cfg, n)
    ds = lambda a, b: lgb.Dataset(a, b, params={"verbose": -1})  # noqa: E731
    if rounds is not None:
        how = f"{rounds} rounds given"
    else:
        n_valid = int(round(n * cfg.valid_fraction))
        if n_valid >= cfg.min_valid:
            order = np.random.default_rng(cfg.seed).permutation(n)
            valid, train = order[:n_valid], order[n_valid:]
            dtrain = ds(X[train], ys[train])
            probe = lgb.train(p, dtrain, num_boost_round=cfg.num_rounds,
                              valid_sets=[lgb.Dataset(X[valid], ys[valid], reference=dtrain)],
                              callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
            rounds = max(1, probe.best_iteration or cfg.num_rounds)
            how = f"early stopping on a {n_valid}/{n} split at {rounds} rounds"
        else:
            k = max(2, min(cfg.cv_folds, n // 2))
            res = lgb.cv(p, ds(X, ys), num_boost_round=cfg.num_rounds, nfold=k, stratified=False, shuffle=True,
                         seed=cfg.seed, callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
            rounds = max(1, len(next(iter(res.values()))))
            how = f"early stopping by {k}-fold CV at {rounds} rounds"
    booster = lgb.train(p, ds(X, ys), num_boost_round=rounds)
    method = (f"LightGBM on standardised scores, {how}, refit on all {n}; lr {cfg.learning_rate}, "
              f"depth {cfg.max_depth}, leaves >= {p['min_data_in_leaf']}, L1 {cfg.lambda_l1}, L2 {cfg.lambda_l2}, "
              f"rows {cfg.bagging_fraction:.0%}, features {cfg.feature_fraction:.0%} per tree")
    return LightGBMFit(booster, y_mean, y_sd, method, rounds)
