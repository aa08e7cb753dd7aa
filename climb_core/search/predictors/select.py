"""Fit a predictor by name, score every candidate by cross-validation, and pick one per round.

`auto` fits each predictor, scores it by honest cross-validation on the runs so far (each run
predicted by a model that never saw it; leave-one-out up to 12 runs, k-fold after), drops the
flat ones (they cannot tell candidate mixtures apart), and takes the best CV Spearman. Every
candidate's figures and the choice are recorded with the round, whichever predictor was asked for.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from climb_core.config import PredictorConfig
from climb_core.search.predictors.base import Constant, Fitted, Quality, flatness, folds, r2, spearman

PREDICTORS = ("auto", "loglinear", "gp", "lightgbm")
# Preference on equal CV Spearman: the simplest model that ranks as well.
_ORDER = ("gp", "loglinear", "lightgbm")
MIN_POINTS = {"loglinear": 3, "gp": 4, "lightgbm": 6}


class PredictorError(ValueError):
    """An unknown predictor name."""


def fit(name: str, X, y, cfg: PredictorConfig, final: bool = False) -> Fitted:
    """`final`: the fit the final mixture is chosen on (the GP then also picks its log offset)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) == 0 or np.ptp(y) == 0:
        return Constant(float(y.mean()) if len(y) else 0.0, 1.0, f"constant (n={len(y)}, no spread in scores)")
    if name == "loglinear":
        from climb_core.search.predictors.loglinear import fit_loglinear

        return fit_loglinear(X, y)
    if name == "gp":
        from climb_core.search.predictors.gp import fit_gp_best_eps

        return fit_gp_best_eps(X, y, cfg.gp_final_eps if final else cfg.gp_eps, seed=cfg.seed, restarts=cfg.gp_restarts)
    if name == "lightgbm":
        from climb_core.search.predictors.lightgbm import fit_lightgbm

        return fit_lightgbm(X, y, cfg)
    raise PredictorError(f"unknown predictor {name!r}; use one of {', '.join(PREDICTORS)}")


def warm_imports() -> threading.Thread:
    """Import what fitting the predictors needs (scikit-learn's GP, LightGBM, SciPy: ~1 s) on a
    background thread, so that a search's first fit does not pay it after round 1: round 1 trains
    meanwhile, and its proxies spend most of their time in NumPy sorts that release the GIL."""
    def load() -> None:
        import lightgbm  # noqa: F401
        import scipy.optimize  # noqa: F401
        import scipy.stats  # noqa: F401
        import sklearn.gaussian_process  # noqa: F401

    thread = threading.Thread(target=load, name="climb-warm-imports", daemon=True)
    thread.start()
    return thread


def cross_validate(name: str, X, y, cfg: PredictorConfig, probe: np.ndarray | None = None,
                   full: Fitted | None = None) -> Quality:
    """Out-of-fold Spearman and R2 of one predictor, and whether it is flat on `probe`."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    t0 = time.perf_counter()
    full = full or fit(name, X, y, cfg)
    flat, why = (False, "")
    if isinstance(full, Constant):
        flat, why = True, full.method
    elif probe is not None and len(probe):
        flat, why = flatness(full.predict(probe), float(np.std(y)))
    if n < MIN_POINTS.get(name, 3):
        return Quality(name, n, None, None, flat, why or f"fewer than {MIN_POINTS[name]} runs", time.perf_counter() - t0)
    oof = np.empty(n)
    fold = folds(n, cfg.cv_folds, cfg.seed + 1)
    for f in np.unique(fold):
        test = fold == f
        if name == "lightgbm" and getattr(full, "rounds", None):
            from climb_core.search.predictors.lightgbm import fit_lightgbm

            # Nested early stopping would cost k times more and only tunes that one number.
            model = fit_lightgbm(X[~test], y[~test], cfg, rounds=full.rounds)
        elif name == "gp":
            from climb_core.search.predictors.gp import refit_gp

            # The full fit's kernel hyperparameters are kept: refitting them per fold costs ten
            # times more and mostly re-finds the same values.
            model = refit_gp(full, X[~test], y[~test])
        else:
            model = fit(name, X[~test], y[~test], cfg)
        oof[test] = model.predict(X[test])
    return Quality(name, n, spearman(oof, y), r2(y, oof), flat, why, time.perf_counter() - t0, oof.tolist())


@dataclass
class Choice:
    fit: Fitted
    name: str
    qualities: list[Quality] = field(default_factory=list)
    reason: str = ""

    @property
    def quality(self) -> Quality | None:
        return next((q for q in self.qualities if q.name == self.name), None)


def choose(requested: str, X, y, cfg: PredictorConfig, probe: np.ndarray | None = None,
           final: bool = False) -> Choice:
    """The predictor for this round: the requested one, or under `auto` the best by CV.

    Candidates are always cross-validated and reported, so a user who forced one predictor can see
    whether another would have ranked better. A flat predictor is never used to rank: `fit` is then
    None and the caller explores instead."""
    if requested not in PREDICTORS:
        raise PredictorError(f"unknown search.predictor {requested!r}; use one of {', '.join(PREDICTORS)}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    names = _ORDER if requested == "auto" else (requested,) + tuple(n for n in _ORDER if n != requested)
    fits: dict[str, Fitted] = {}
    qualities: list[Quality] = []
    for name in names:
        if len(y) < MIN_POINTS[name]:
            continue
        fits[name] = fit(name, X, y, cfg, final=final)
        qualities.append(cross_validate(name, X, y, cfg, probe, full=fits[name]))
    by_name = {q.name: q for q in qualities}
    if requested != "auto":
        q = by_name.get(requested)
        if q is None:
            return Choice(None, requested, qualities, f"{requested} needs at least {MIN_POINTS[requested]} runs")
        if q.flat:
            return Choice(None, requested, qualities, f"{requested} is flat ({q.flat_reason}); exploring instead")
        return Choice(fits[requested], requested, qualities, "requested")
    usable = [q for q in qualities if not q.flat]
    if not usable:
        return Choice(None, "none", qualities, "every predictor is flat; exploring instead")
    rank = {n: i for i, n in enumerate(_ORDER)}
    # Within 0.05 of the best CV Spearman counts as equal: such differences are noise at these n.
    scored = [q for q in usable if q.spearman is not None]
    if scored:
        top = max(q.spearman for q in scored)
        near = [q for q in scored if q.spearman >= top - 0.05]
        pick = min(near, key=lambda q: rank[q.name])
        reason = (f"best cross-validated Spearman ({pick.spearman:.2f}; candidates "
                  + ", ".join(f"{q.name} {q.spearman:.2f}" if q.spearman is not None else f"{q.name} n/a" for q in qualities) + ")")
    else:
        pick = min(usable, key=lambda q: rank[q.name])
        reason = "too few runs to cross-validate; the simplest non-flat predictor"
    return Choice(fits[pick.name], pick.name, qualities, reason)
