"""What each strategy spends its budget on, what it proposes per round, and which mixture it returns.

Every strategy gets the same number of proxy runs, verification included:
  climb    rounds of proposals (the first a covering pick of Dirichlet draws, later ones optimised on
           a predictor chosen by cross-validation), then the predictor's constrained optimum trained
           `verify_seeds` times;
  regmix   one round of samples, a LightGBM predictor, the mean of its top-k predicted mixtures
           (RegMix, Liu et al. 2024), trained `verify_seeds` times;
  random   one round of samples; its answer is the best run trained (already verified);
  uniform, natural   a single fixed mixture, trained once.
Each strategy draws from its own random stream (keyed by its name), so two baselines with one seed
train different mixtures: comparisons between them are between independent draws.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from climb_core.config import ClimbConfig
from climb_core.search.acquisition import best_mixture, propose
from climb_core.search.constraints import Constraints
from climb_core.search.predictors.select import Choice, choose, fit
from climb_core.search.sampling import covering_subset, natural_mixture, sample_mixtures, uniform_mixture

STRATEGIES = ("climb", "regmix", "random", "uniform", "natural")
# A probe of this many pool mixtures decides whether a predictor is flat.
PROBE = 2000


# Budgets from this many exploration runs get three rounds at 4:2:1; smaller ones two at 1:1.
THREE_ROUNDS_FROM = 20


def default_split(explore: int) -> list[int]:
    """The round split when neither `rounds` nor `round_split` is set, chosen by measurement on the
    known-answer benchmark (10 seeds, 4 domains): at budget 28 4:2:1 beat 1:1 and 2:1:1; at budget 14
    three rounds leave round 2 fitting on 7 runs, and 1:1 lifted the worst domain (news, 0.76 -> 0.81)
    and the worst seed over all domains (0.48 -> 0.66)."""
    return [4, 2, 1] if explore >= THREE_ROUNDS_FROM else [1, 1]


def round_sizes(strategy: str, budget: int, rounds: int, split: list[int]) -> list[int]:
    """Exploration runs per round. CLIMB splits `budget` by `round_split` (largest remainder, at least
    one each); when round_split's length differs from `rounds`, halving weights (…4:2:1) are used.
    rounds = 0 takes the number of rounds from round_split, and with no split either, `default_split`."""
    if strategy in ("uniform", "natural"):
        return [1]
    if strategy in ("regmix", "random"):
        return [budget]
    if rounds <= 0:
        split = list(split) or default_split(budget)
        rounds = len(split)
    rounds = max(1, min(rounds, budget))
    weights = [float(s) for s in split[:rounds]] if len(split) == rounds else [2.0 ** (rounds - 1 - i) for i in range(rounds)]
    raw = [budget * w / sum(weights) for w in weights]
    sizes = [max(1, int(math.floor(r))) for r in raw]
    # The rest goes to the rounds furthest below their share (a round lifted to 1 is not below it).
    order = sorted(range(rounds), key=lambda i: (-(raw[i] - sizes[i]), i))
    i = 0
    while sum(sizes) < budget:
        sizes[order[i % rounds]] += 1
        i += 1
    while sum(sizes) > budget:  # the max(1, .) floor can overshoot on tiny budgets
        j = max(range(rounds), key=lambda k: (sizes[k], k))
        sizes[j] -= 1
    return sizes


@dataclass
class Plan:
    explore: list[int]   # runs per exploration round
    verify: int          # training runs of the final mixture (0: the final is an already trained run)
    scale: int = 0       # runs retraining the best mixtures at the larger scale (search.scale_runs)

    @property
    def total(self) -> int:
        return sum(self.explore) + self.scale + self.verify

    @property
    def scale_round(self) -> int | None:
        return len(self.explore) + 1 if self.scale else None

    @property
    def verify_round(self) -> int:
        return len(self.explore) + 1 + (1 if self.scale else 0)


def plan(strategy: str, config: ClimbConfig) -> Plan:
    s = config.search
    if strategy in ("uniform", "natural"):
        return Plan([1], 0)
    if strategy in ("random", "imported"):
        return Plan([s.budget], 0)
    # Verification needs at least one exploration run before it; it never takes more than a third.
    v = max(0, min(int(s.verify_seeds), s.budget // 3 if s.budget >= 3 else 0))
    # Scaling runs retrain explored mixtures, so at least two exploration runs stay per scaling run's pick.
    k = min(int(s.scale_runs), max(0, (s.budget - v) // 3)) if strategy == "climb" else 0
    return Plan(round_sizes(strategy, s.budget - v - k, s.rounds, list(s.round_split)), v, k)


def enough_warm(n_warm: int, n_clusters: int) -> bool:
    """Whether warm runs replace climb's covering first round: at least one run per cluster, enough
    for the predictors' cross-validation to choose one. Measured on the known-optimum objective
    (10 clusters, 20 warm random runs, climb budget 10, 5 seeds; true score of the final, 0 best):
    skipping the covering round -0.025 mean, -0.047 worst; keeping it -0.030, -0.066; cold -0.124, -0.228.
    Below that many warm runs the covering round is kept whole and the warm runs join from round 2."""
    return n_warm >= max(WARM_MIN_RUNS, n_clusters)


WARM_MIN_RUNS = 8


def strategy_rng(seed: int, strategy: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(strategy.encode()), *[int(k) for k in keys]])


@dataclass
class Round:
    """One round's proposals and, when a predictor chose them, how."""
    weights: np.ndarray
    predicted: np.ndarray | None = None
    predicted_sd: np.ndarray | None = None
    report: dict[str, Any] | None = None


@dataclass
class Final:
    weights: np.ndarray
    predicted: float | None
    predicted_sd: float | None
    how: str
    report: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _choice_report(choice: Choice, n_train: int, how: str, n_features: int) -> dict[str, Any]:
    q = choice.quality
    return {
        "n_train": n_train, "predictor": choice.name, "reason": choice.reason, "method": how,
        "spearman": None if q is None else q.spearman, "r2": None if q is None else q.r2,
        "flat": choice.fit is None,
        "importance": [0.0] * n_features if choice.fit is None else [float(v) for v in choice.fit.importance(n_features)],
        "candidates": [{"name": c.name, "n": c.n, "spearman": c.spearman, "r2": c.r2, "flat": c.flat,
                        "flat_reason": c.flat_reason, "fit_s": round(c.fit_s, 3)} for c in choice.qualities],
    }


class Strategy:
    def __init__(self, name: str, config: ClimbConfig, prior: np.ndarray, cons: Constraints):
        self.name = name
        self.config = config
        self.prior = prior
        self.cons = cons

    def rng(self, *keys: int) -> np.random.Generator:
        return strategy_rng(self.config.search.seed, self.name, *keys)

    def pool(self, rnd: int, n: int) -> np.ndarray:
        return sample_mixtures(self.prior, n, self.config.mixture, self.rng(rnd, 0), self.cons)

    def propose(self, rnd: int, n: int, X: np.ndarray, y: np.ndarray) -> Round:
        if self.name == "uniform":
            return Round(self.cons.project(uniform_mixture(len(self.prior)))[None, :])
        if self.name == "natural":
            return Round(self.cons.project(natural_mixture(self.prior))[None, :])
        s = self.config.search
        # At round 1, y holds only warm runs (see climb_core.search.warm): with enough of them the
        # predictor proposes from round 1 and the covering design is skipped.
        warm_enough = enough_warm(len(y), len(self.prior))
        if rnd == 1 and self.name == "climb" and s.initial_design == "cover" and not warm_enough:
            return Round(covering_subset(self.pool(rnd, s.n_pool_samples), n, self.cons.upper, self.rng(rnd, 2)))
        if (rnd == 1 and not warm_enough) or len(y) == 0 or self.name != "climb":
            # Round 1 (baselines: i.i.d. draws, as their papers do), or nothing finished to learn from
            # (every earlier run failed): explore.
            return Round(self.pool(rnd, n))
        pool = self.pool(rnd, s.n_pool_samples)
        choice = choose(s.predictor, X, y, self.config.predictor, probe=pool[:PROBE])
        if choice.fit is None:
            report = _choice_report(choice, len(y), "exploring: no usable predictor", len(self.prior))
            return Round(pool[:n], report=report)
        prop = propose(choice.fit, X, y, self.cons, pool, n, self.rng(rnd, 1), s.acquisition, s.min_distance)
        return Round(prop.weights, prop.predicted, prop.predicted_sd, _choice_report(choice, len(y), prop.how, len(self.prior)))

    def _top_k_mean(self, fit, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The mean of the k pool mixtures `fit` predicts best (projected), and their indices."""
        top = np.argsort(-fit.predict(pool), kind="stable")[:k]
        return self.cons.project(pool[top].mean(axis=0)), top

    def final(self, X: np.ndarray, y: np.ndarray, final_round: int) -> Final:
        """The mixture this strategy answers with, before verification."""
        best = X[int(np.argmax(y))]
        if self.name in ("uniform", "natural", "random"):
            return Final(best, None, None, "best trained run")
        s = self.config.search
        pool = self.pool(final_round, s.n_pool_samples)
        if self.name == "regmix":
            model = fit("lightgbm", X, y, self.config.predictor)
            w, top = self._top_k_mean(model, pool, s.regmix_top_k)
            return Final(w, float(model.predict(w[None, :])[0]), None,
                         f"mean of the top {len(top)} of {len(pool)} mixtures predicted by LightGBM (RegMix)")
        choice = choose(s.predictor, X, y, self.config.predictor, probe=pool[:PROBE], final=True)
        if choice.fit is None:
            report = _choice_report(choice, len(y), "no usable predictor: the best trained run", len(self.prior))
            return Final(best, None, None, "best trained run (no usable predictor)", report)
        if s.final_top_k > 1:
            w, top = self._top_k_mean(choice.fit, pool, s.final_top_k)
            how = f"mean of the top {len(top)} of {len(pool)} mixtures predicted by the {choice.name} predictor"
        else:
            w = best_mixture(choice.fit, X, y, self.cons, pool, self.rng(final_round, 1), risk=s.final_risk)
            how = f"constrained optimum of the {choice.name} predictor"
        sd = choice.fit.predict_sd(w[None, :])
        return Final(w, float(choice.fit.predict(w[None, :])[0]), None if sd is None else float(sd[0]), how,
                     _choice_report(choice, len(y), how, len(self.prior)))
