"""Proposals that maximise an acquisition over the constraint set, with diversity inside a batch.

Three cases, by what the predictor offers:
  * an exact maximiser of posterior draws (the log-linear model): Thompson sampling, each proposal
    the constrained argmax of one posterior draw, solved exactly;
  * a posterior without a maximiser (the Gaussian process): Thompson sampling over a candidate set
    (joint draws), or expected improvement with greedy diverse picks;
  * no posterior (LightGBM): the top predictions over a candidate set, picked greedily with
    diversity, ties broken at random rather than by pool order.
The candidate set is a Dirichlet pool around the prior plus local perturbations of the best runs
(and the exact optima of a log-linear fit when one exists), all inside the constraints.
A proposal closer than `min_distance` (L1) to an earlier proposal or a trained run is not taken
while a farther one is available: a batch spends its budget on different mixtures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from climb_core.search.constraints import Constraints
from climb_core.search.predictors.base import Fitted

ACQUISITIONS = ("thompson", "ei")


@dataclass
class Proposal:
    weights: np.ndarray          # (n x C)
    predicted: np.ndarray        # posterior mean (or point prediction) at each proposal
    predicted_sd: np.ndarray | None
    how: str


def _l1_to_set(w: np.ndarray, others: np.ndarray) -> float:
    if len(others) == 0:
        return np.inf
    return float(np.abs(others - w[None, :]).sum(axis=1).min())


def perturb(centres: np.ndarray, n: int, cons: Constraints, rng: np.random.Generator,
            scales=(0.1, 0.3, 0.7)) -> np.ndarray:
    """n mixtures near `centres` (multiplicative log-normal noise, plus moves of mass between two
    clusters), projected into the constraint set."""
    if len(centres) == 0 or n <= 0:
        return np.zeros((0, cons.n))
    base = centres[rng.integers(0, len(centres), size=n)]
    sigma = rng.choice(np.asarray(scales), size=n)[:, None]
    # A floor keeps a zero weight able to grow: some perturbations switch clusters on.
    floor = np.where(rng.random((n, cons.n)) < 0.15, rng.uniform(0.0, 0.05, (n, cons.n)), 0.0)
    w = (base + floor) * np.exp(sigma * rng.standard_normal((n, cons.n)))
    return cons.project(w)


def candidates(fit: Fitted | None, X: np.ndarray, y: np.ndarray, cons: Constraints, pool: np.ndarray,
               rng: np.random.Generator, n_local: int = 1000, top: int = 5) -> np.ndarray:
    """Pool + perturbations of the best runs (+ the fit's exact optimum and its perturbations)."""
    parts = [pool]
    if len(y):
        best = X[np.argsort(-y, kind="stable")[:top]]
        parts.append(perturb(best, n_local, cons, rng))
    if fit is not None:
        opt = fit.argmax(cons)
        if opt is not None:
            parts.append(opt[None, :])
            parts.append(perturb(opt[None, :], n_local // 2, cons, rng, scales=(0.05, 0.15, 0.3)))
    return np.vstack(parts)


def _greedy_diverse(order: np.ndarray, C: np.ndarray, X: np.ndarray, n: int, min_distance: float) -> list[int]:
    chosen: list[int] = []
    for i in order:
        if len(chosen) == n:
            break
        if _l1_to_set(C[i], X) < min_distance or _l1_to_set(C[i], C[chosen]) < min_distance:
            continue
        chosen.append(int(i))
    for i in order:  # not enough far-apart candidates: fill with the best remaining ones
        if len(chosen) == n:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return chosen


def propose(fit: Fitted, X: np.ndarray, y: np.ndarray, cons: Constraints, pool: np.ndarray, n: int,
            rng: np.random.Generator, acquisition: str = "thompson", min_distance: float = 0.05) -> Proposal:
    """n proposals for the next round from a fitted predictor (see the module docstring)."""
    X = np.asarray(X, dtype=np.float64).reshape(-1, cons.n)
    if acquisition == "thompson" and fit.argmax(cons) is not None:
        picks: list[np.ndarray] = []
        for _ in range(n):
            best_far, best_d = None, -1.0
            for _try in range(25):
                w = fit.argmax(cons, rng)
                d = min(_l1_to_set(w, X), _l1_to_set(w, np.array(picks).reshape(-1, cons.n)))
                if d >= min_distance:
                    best_far = w
                    break
                if d > best_d:
                    best_far, best_d = w, d
            if best_d >= 0 and best_d < min_distance:
                # A confident posterior puts every draw's optimum in one spot: step away from it to
                # the best predicted mixture at least min_distance from the others.
                taken = np.vstack([X, np.array(picks).reshape(-1, cons.n)])
                near = perturb(best_far[None, :], 400, cons, rng, scales=(0.1, 0.3, 0.6))
                far = np.array([_l1_to_set(v, taken) >= min_distance for v in near])
                if far.any():
                    near = near[far]
                    best_far = near[int(np.argmax(fit.predict(near)))]
            picks.append(best_far)
        W = np.array(picks)
        return Proposal(W, fit.predict(W), fit.predict_sd(W),
                        f"Thompson sampling: each proposal the exact constrained optimum of one posterior draw ({fit.name})")
    C = candidates(fit, X, y, cons, pool, rng)
    if fit.has_posterior and acquisition == "thompson":
        # Joint draws are O(m^2) in memory: thin the candidate set to the most promising part.
        mean = fit.predict(C)
        sd = fit.predict_sd(C)
        keep = np.argsort(-(mean + 2 * sd), kind="stable")[:600]
        C = C[keep]
        draws = fit.draw(C, n, rng)
        chosen: list[int] = []
        for j in range(n):
            order = np.argsort(-draws[j], kind="stable")
            pick = _greedy_diverse(order, C, np.vstack([X, C[chosen]]) if chosen else X, 1, min_distance)
            chosen.append(pick[0])
        W = C[chosen]
        how = f"Thompson sampling over {len(C)} candidates (joint posterior draws, {fit.name})"
    elif fit.has_posterior:
        from scipy.stats import norm

        mean, sd = fit.predict(C), np.maximum(fit.predict_sd(C), 1e-12)
        best = float(np.max(y)) if len(y) else float(mean.max())
        z = (mean - best) / sd
        ei = (mean - best) * norm.cdf(z) + sd * norm.pdf(z)
        order = np.argsort(-ei, kind="stable")
        W = C[_greedy_diverse(order, C, X, n, min_distance)]
        how = f"expected improvement over {len(C)} candidates, diverse picks ({fit.name})"
    else:
        pred = fit.predict(C)
        # Random tie-breaking: a tree model gives many candidates the same prediction, and taking
        # them in pool order would make the choice an accident of the sampler.
        jitter = rng.random(len(C))
        order = np.lexsort((jitter, -pred))
        W = C[_greedy_diverse(order, C, X, n, min_distance)]
        how = f"top predictions over {len(C)} candidates (pool + perturbations of the best runs), diverse picks ({fit.name})"
    return Proposal(W, fit.predict(W), fit.predict_sd(W), how)


def best_mixture(fit: Fitted, X: np.ndarray, y: np.ndarray, cons: Constraints, pool: np.ndarray,
                 rng: np.random.Generator, climb_steps: int = 3, risk: float = 0.0) -> np.ndarray:
    """The predictor's constrained optimum: exact where the model allows, else the best candidate
    refined by a few rounds of local search around it.

    With a posterior and `risk` > 0 the objective is mean - risk * sd: a final mixture is trained
    once and kept, so a point the model merely cannot rule out (far from every run) should not win
    over one it is sure of."""
    exact = fit.argmax(cons)
    if exact is not None:
        return exact

    def value(W):
        m = fit.predict(W)
        if risk > 0 and fit.has_posterior:
            m = m - risk * fit.predict_sd(W)
        return m

    C = candidates(fit, X, y, cons, pool, rng)
    pred = value(C)
    w = C[int(np.lexsort((rng.random(len(C)), -pred))[0])]
    val = float(value(w[None, :])[0])
    for step in range(climb_steps):
        near = perturb(w[None, :], 400, cons, rng, scales=(0.03, 0.1, 0.2))
        p = value(near)
        i = int(np.argmax(p))
        if p[i] > val:
            w, val = near[i], float(p[i])
    return w
