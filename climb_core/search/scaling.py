"""Scaling mode: part of a climb search's budget retrains its best mixtures at a larger scale.

A proxy's ranking of mixtures need not hold for a larger model (RegMix checks rank invariance; Data
Mixing Laws fit score as a function of mixture and scale). With `search.scale_runs` = k, after the
exploration rounds the k best distinct mixtures are trained again at `search.scale_multiple` x
proxy.tokens. A mixing law over weights and log scale (`scale_law`) carries every run's score to the
final model's scale, clipped to the largest scale trained (nothing here is trusted to extrapolate in
scale), and the predictor chosen by cross-validation proposes the final from those scores. The final
is verified, and compared, at the larger scale. How well the small scale ranked the retrained
mixtures is reported as a Spearman correlation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.search.predictors.base import spearman
from climb_core.search.records import finished_rows
from climb_core.search.sampling import dedup_rows
from climb_core.search.strategies import Final, Strategy


def scale_tokens(config: ClimbConfig) -> int:
    """Training tokens of the scaling round's runs."""
    return int(round(config.proxy.tokens * config.search.scale_multiple))


def target_log_scale(config: ClimbConfig, final: int) -> float:
    """log(final tokens / proxy tokens), clipped to [0, log scale_multiple]: the scale proposed for."""
    ratio = final / config.proxy.tokens if final > 0 else config.search.scale_multiple
    return float(np.clip(math.log(max(ratio, 1.0)), 0.0, math.log(config.search.scale_multiple)))


def scale_round_weights(X: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """The k best distinct trained mixtures, best first."""
    return dedup_rows(X[np.argsort(-y, kind="stable")])[:k]


def scaled_runs(ws: Workspace, search_id: str, proxy_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, log scale (log of tokens / proxy.tokens) and score of every finished run but warm ones."""
    rows = finished_rows(ws, search_id, "weights, tokens, score", ("explore", "scale", "verify"))
    if not rows:
        return np.zeros((0, 0)), np.zeros(0), np.zeros(0)
    X = np.array([r[0] for r in rows], dtype=np.float64)
    s = np.log(np.array([float(r[1] or proxy_tokens) for r in rows]) / float(proxy_tokens))
    y = np.array([r[2] for r in rows], dtype=np.float64)
    return X, s, y


# Log weights are floored here, as the log-linear predictor's features are (see predictors/loglinear.py).
SCALE_EPS = 1e-2


def scale_law(X: np.ndarray, log_s: np.ndarray, y: np.ndarray):
    """score ~ a + sum_i b_i log(w_i + eps) + log s * (c + sum_i d_i log(w_i + eps)), as a Bayesian ridge.

    c is how much a larger scale lifts every mixture; d_i how much more (or less) cluster i is worth
    at a larger scale. With few runs at the larger scale the evidence-maximised prior shrinks d
    towards 0: scores then shift by scale alone and the ranking is assumed to hold."""
    from sklearn.linear_model import BayesianRidge

    L = np.log(np.clip(X, 0.0, None) + SCALE_EPS)
    F = np.hstack([L, log_s[:, None], L * log_s[:, None]])
    mu, sd = F.mean(axis=0), F.std(axis=0)
    sd[sd < 1e-12] = 1.0
    model = BayesianRidge().fit((F - mu) / sd, y)
    coef = model.coef_ / sd
    n = X.shape[1]
    return coef[n], coef[n + 1:]


def carry_to_scale(X: np.ndarray, log_s: np.ndarray, y: np.ndarray, at: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Each run's score carried from its own scale to log scale `at` by `scale_law`."""
    c, d = scale_law(X, log_s, y)
    L = np.log(np.clip(X, 0.0, None) + SCALE_EPS)
    slope = c + L @ d
    return y + slope * (at - log_s), {"scale_slope_mean": float(slope.mean()),
                                      "interaction_norm": float(np.abs(d).sum())}


def scale_final(strategy: Strategy, X: np.ndarray, log_s: np.ndarray, y: np.ndarray, final_round: int,
                final_tokens: int) -> Final:
    """The final mixture for the final model's scale: every run's score carried to that scale
    (`carry_to_scale`), then the strategy's own final over weights (predictor chosen by cross-validation)."""
    cfg = strategy.config
    at = target_log_scale(cfg, final_tokens)
    y_at, law = carry_to_scale(X, log_s, y, at)
    final = strategy.final(X, y_at, final_round)
    m = math.exp(at)
    final.how += f", on scores carried to {m:.3g}x the proxy's tokens by a mixing law over weights and scale"
    final.extra = {**final.extra, "scale": {"log_scale": at, "multiple": m,
                                            "tokens": int(round(cfg.proxy.tokens * m)), **law}}
    return final


def rank_transfer(ws: Workspace, search_id: str) -> dict[str, Any] | None:
    """How well the proxy's scale ranked the mixtures retrained at the larger scale (None: no scaling runs)."""
    rows = finished_rows(ws, search_id, "weights, tokens, score, purpose", ("explore", "scale"))
    big = [r for r in rows if r[3] == "scale"]
    if not big:
        return None
    small = {np.round(np.asarray(r[0], dtype=np.float64), 4).tobytes(): float(r[2]) for r in rows if r[3] == "explore"}
    pairs = [(small[k], float(r[2])) for r in big if (k := np.round(np.asarray(r[0], dtype=np.float64), 4).tobytes()) in small]
    rho = spearman([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) >= 3 else None
    return {"runs": len(big), "tokens": int(big[0][1]), "pairs": len(pairs), "spearman": rho,
            "small_scores": [p[0] for p in pairs], "large_scores": [p[1] for p in pairs]}


__all__ = ["carry_to_scale", "rank_transfer", "scale_final", "scale_law", "scale_round_weights", "scale_tokens", "scaled_runs",
           "target_log_scale"]
