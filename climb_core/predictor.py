"""The mixture -> score predictor (CLIMB stage 8): LightGBM on the weights alone, and its quality.

Settings follow the paper (gbdt, lr 0.01, up to 1000 rounds, L1 = L2 = 1, depth 4, 5 per leaf,
90/10 split with early stopping after 20). Early in a search there are only a handful of proxies:
below `SMALL_N` points the model trains on everything for a fixed number of rounds with smaller
leaves, and while a 10% split would hold fewer than `min_valid` points, k-fold CV picks the
stopping round. Either way the model is then refit on every point, and `method` says what was done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from climb_core.config import PredictorConfig

# Below this many points there is no early-stopping split and leaves may be smaller.
SMALL_N = 10


@dataclass
class PredictorReport:
    n_train: int
    spearman: float | None     # out-of-fold predictions vs. true scores
    r2: float | None
    method: str
    importance: list[float] = field(default_factory=list)  # gain share per cluster, sums to 1


class Predictor:
    """A fitted model; `predict` maps an (n x C) array of weights to n predicted scores."""

    def __init__(self, booster=None, constant: float = 0.0, method: str = "", rounds: int | None = None):
        self.booster = booster
        self.constant = constant
        self.method = method
        self.rounds = rounds

    def predict(self, X) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if self.booster is None:
            return np.full(len(X), self.constant)
        return self.booster.predict(X)

    def importance(self, n_features: int) -> list[float]:
        if self.booster is None:
            return [0.0] * n_features
        gain = np.asarray(self.booster.feature_importance(importance_type="gain"), dtype=np.float64)
        return (gain / gain.sum()).tolist() if gain.sum() > 0 else [0.0] * n_features


def _params(cfg: PredictorConfig, min_leaf: int) -> dict:
    return {
        "objective": "regression", "boosting": "gbdt", "learning_rate": cfg.learning_rate,
        "max_depth": cfg.max_depth, "num_leaves": max(2, min(31, 2 ** cfg.max_depth)),
        "min_data_in_leaf": min_leaf, "min_data_in_bin": 1, "min_sum_hessian_in_leaf": 0.0,
        "lambda_l1": cfg.lambda_l1, "lambda_l2": cfg.lambda_l2, "verbose": -1, "seed": cfg.seed,
        # One thread and deterministic mode: a resumed search must refit exactly the same model.
        "num_threads": 1, "deterministic": True, "force_row_wise": True, "feature_pre_filter": False,
    }


def fit_predictor(X, y, cfg: PredictorConfig, *, rounds: int | None = None) -> Predictor:
    """Fit weights -> score. With >= SMALL_N points: 90/10 split, early stopping, then a refit on all
    points for the chosen number of rounds (every proxy is too dear to leave out of the final model).
    While the split would hold fewer than cfg.min_valid points, k-fold CV chooses the rounds instead.
    `rounds` skips the choice and trains that many rounds on all points."""
    import lightgbm as lgb

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n == 0:
        return Predictor(constant=0.0, method="constant (no data)")
    if n < 3 or np.ptp(y) == 0:
        return Predictor(constant=float(y.mean()), method=f"constant mean (n={n})")
    if n < SMALL_N:
        min_leaf = max(1, min(cfg.min_data_in_leaf, n // 3))
        booster = lgb.train(_params(cfg, min_leaf), lgb.Dataset(X, y, params={"verbose": -1}),
                            num_boost_round=cfg.num_rounds)
        return Predictor(booster, method=f"gbdt, {cfg.num_rounds} rounds, no early stopping (n={n} < {SMALL_N}), min_data_in_leaf={min_leaf}",
                         rounds=cfg.num_rounds)
    min_leaf = max(1, min(cfg.min_data_in_leaf, n // 4))
    params = _params(cfg, min_leaf)
    if rounds is not None:
        booster = lgb.train(params, lgb.Dataset(X, y, params={"verbose": -1}), num_boost_round=rounds)
        return Predictor(booster, method=f"gbdt, {rounds} rounds given, min_data_in_leaf={min_leaf}", rounds=rounds)
    n_valid = max(1, int(round(n * cfg.valid_fraction)))
    if n_valid >= cfg.min_valid:
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(n)
        valid, train = order[:n_valid], order[n_valid:]
        dtrain = lgb.Dataset(X[train], y[train], params={"verbose": -1})
        dvalid = lgb.Dataset(X[valid], y[valid], reference=dtrain)
        probe = lgb.train(params, dtrain, num_boost_round=cfg.num_rounds, valid_sets=[dvalid],
                          callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
        rounds = max(1, probe.best_iteration or cfg.num_rounds)
        how = f"early stopping on a {n_valid}/{n} split"
    else:
        # A 10% split of a few dozen points is 2-3 points, and stopping on them is noise (it often
        # stops after one round); the stopping round is chosen by k-fold CV instead.
        k = max(2, min(cfg.cv_folds, n // 2))
        res = lgb.cv(params, lgb.Dataset(X, y, params={"verbose": -1}), num_boost_round=cfg.num_rounds,
                     nfold=k, stratified=False, shuffle=True, seed=cfg.seed,
                     callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
        rounds = max(1, len(next(iter(res.values()))))
        how = f"early stopping by {k}-fold CV (a {cfg.valid_fraction:.0%} split would hold {n_valid} < {cfg.min_valid} points)"
    booster = lgb.train(params, lgb.Dataset(X, y, params={"verbose": -1}), num_boost_round=rounds)
    return Predictor(booster, method=f"gbdt, {how} at {rounds} rounds, refit on all {n}, min_data_in_leaf={min_leaf}",
                     rounds=rounds)


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def _r2(y: np.ndarray, pred: np.ndarray) -> float | None:
    sst = float(((y - y.mean()) ** 2).sum())
    return None if sst == 0 else 1.0 - float(((y - pred) ** 2).sum()) / sst


def out_of_fold(X, y, cfg: PredictorConfig, rounds: int | None = None) -> np.ndarray:
    """Each point predicted by a model that never saw it (k-fold, k = min(cv_folds, n)).

    `rounds` (the full model's boosting rounds) is reused by every fold rather than chosen again
    inside it: nested early stopping would cost k times more and only tunes that one number."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    k = max(2, min(cfg.cv_folds, n))
    folds = np.random.default_rng(cfg.seed + 1).permutation(n) % k
    pred = np.empty(n)
    for f in range(k):
        test = folds == f
        pred[test] = fit_predictor(X[~test], y[~test], cfg, rounds=rounds).predict(X[test])
    return pred


def evaluate(X, y, cfg: PredictorConfig) -> tuple[Predictor, PredictorReport]:
    """The predictor fitted on all points, and its report: out-of-fold Spearman and R2, gain importance."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    full = fit_predictor(X, y, cfg)
    importance = full.importance(X.shape[1]) if n else []
    if n < 4 or full.booster is None:
        return full, PredictorReport(n, None, None, f"{full.method}; too few points to cross-validate", importance)
    pred = out_of_fold(X, y, cfg, rounds=full.rounds if n >= SMALL_N else None)
    k = max(2, min(cfg.cv_folds, n))
    return full, PredictorReport(n, _spearman(pred, y), _r2(y, pred),
                                 f"{full.method}; {k}-fold out-of-fold at the same rounds", importance)


def cross_validate(X, y, cfg: PredictorConfig) -> PredictorReport:
    """How well the predictor ranks proxies it has not seen, plus the full model's importances."""
    return evaluate(X, y, cfg)[1]
