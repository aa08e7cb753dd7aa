"""Mixture sampling and the constraint set every strategy must respect (caps, minimum weight,
repetition cap, pins, exclusions), checked as properties over many random vectors and configs."""

from __future__ import annotations

import numpy as np
import pytest

from climb_core.config import MixtureConfig
from climb_core.search.constraints import ConstraintError, Constraints, constraints_for
from climb_core.search.sampling import covering_subset, natural_mixture, sample_mixtures, uniform_mixture

PRIOR = np.array([0.30, 0.20, 0.15, 0.10, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005])
IDS = list(range(100, 110))


def _random_config(rng: np.random.Generator) -> tuple[MixtureConfig, np.ndarray]:
    tokens = (PRIOR * 1e6).astype(int)
    cfg = MixtureConfig(cap_multiple=float(rng.choice([2.0, 5.0, 15.0])),
                        min_weight=float(rng.choice([0.0, 2e-4, 0.02])))
    if rng.random() < 0.5:
        cfg.max_epochs, cfg.final_tokens = 4.0, int(rng.choice([1_000_000, 2_000_000]))
    if rng.random() < 0.5:
        cfg.excluded = [int(rng.choice(IDS[1:4]))]
    if rng.random() < 0.5:
        cfg.pinned = [f"{IDS[0]}=0.2"]
    return cfg, tokens


@pytest.mark.parametrize("seed", range(25))
def test_projection_lands_in_the_set_for_any_vector(seed):
    rng = np.random.default_rng(seed)
    cfg, tokens = _random_config(rng)
    try:
        cons = constraints_for(cfg, PRIOR, IDS, tokens)
    except ConstraintError as err:
        # Some draws of caps cannot sum to 1: that must be said, then the test goes on without them.
        assert "at most" in str(err)
        cfg.max_epochs, cfg.cap_multiple = 0.0, 15.0
        cons = constraints_for(cfg, PRIOR, IDS, tokens)
    # Spiky, flat, sparse, all-zero and NaN vectors: projection must handle each.
    v = np.vstack([rng.dirichlet(np.full(10, a), size=50) for a in (0.05, 1.0, 20.0)]
                  + [np.zeros((1, 10)), np.full((1, 10), np.nan), np.eye(10)])
    w = cons.project(v)
    bad = [(i, cons.violations(row)) for i, row in enumerate(w) if cons.violations(row)]
    assert not bad, bad[:3]
    # Sampling uses the same set.
    s = sample_mixtures(PRIOR, 300, cfg, rng, cons)
    assert all(cons.contains(row) for row in s)
    if cfg.excluded:
        assert (s[:, IDS.index(cfg.excluded[0])] == 0).all()
    if cfg.pinned:
        assert np.allclose(s[:, 0], 0.2)


def test_projection_keeps_a_feasible_vector_and_ratios_where_it_can():
    cons = Constraints(lower=np.zeros(3), upper=np.array([0.5, 0.5, 0.5]))
    assert np.allclose(cons.project([0.4, 0.3, 0.3]), [0.4, 0.3, 0.3])
    w = cons.project([0.9, 0.1, 0.0])   # the cap binds: the excess goes to the others
    assert np.allclose(w, [0.5, 0.5, 0.0])


def test_infeasible_constraints_are_refused_with_a_reason():
    with pytest.raises(ConstraintError, match="cap"):
        constraints_for(MixtureConfig(cap_multiple=0.5), PRIOR, IDS)
    with pytest.raises(ConstraintError, match="CLUSTER_ID=WEIGHT"):
        constraints_for(MixtureConfig(pinned=["three"]), PRIOR, IDS)
    with pytest.raises(ConstraintError, match="not an active cluster"):
        constraints_for(MixtureConfig(excluded=[7]), PRIOR, IDS)
    with pytest.raises(ConstraintError, match="token counts"):
        constraints_for(MixtureConfig(max_epochs=2, final_tokens=10**6), PRIOR, IDS)


def test_repetition_cap_binds_small_clusters():
    tokens = (PRIOR * 1e6).astype(int)   # the smallest cluster holds 5,000 tokens
    cons = constraints_for(MixtureConfig(max_epochs=2, final_tokens=1_000_000), PRIOR, IDS, tokens)
    assert cons.upper[-1] == pytest.approx(2 * 5_000 / 1_000_000)
    w = cons.project(np.eye(10)[-1])     # all weight on the smallest: it must be spread
    assert w[-1] <= 0.01 + 1e-9 and cons.contains(w)


def test_cap_applies_at_the_export_size_and_rises_when_the_corpus_is_small():
    tokens = (PRIOR * 1e6).astype(int)   # 1M tokens in all
    assert MixtureConfig().max_epochs == 0   # off by default: the proxies see the repetition instead
    mix = MixtureConfig(max_epochs=4)    # 4 epochs at final_tokens 0 = the export's size
    assert mix.final_tokens == 0
    cons = constraints_for(mix, PRIOR, IDS, tokens, export_tokens=1_000_000)
    assert cons.upper[-1] == pytest.approx(4 * 5_000 / 1_000_000)
    # no token counts yet, or no export size: no repetition cap
    assert constraints_for(mix, PRIOR, IDS, export_tokens=1_000_000).upper[-1] > 0.02
    # an export of 10M tokens must repeat a 1M-token corpus 10 times: the cap is then taken at the
    # corpus's size, so no cluster is repeated more than 4 times as often as the corpus
    cons = constraints_for(MixtureConfig(cap_multiple=0, max_epochs=4), PRIOR, IDS, tokens, export_tokens=10_000_000)
    assert cons.upper == pytest.approx(np.minimum(1, 4 * tokens / tokens.sum()))
    assert len({tuple(np.round(r, 6)) for r in sample_mixtures(PRIOR, 20, MixtureConfig(), np.random.default_rng(0),
                                                               constraints=cons)}) == 20   # room to search
    # a final_tokens the user set is held to
    with pytest.raises(ConstraintError, match="max_epochs"):
        constraints_for(MixtureConfig(final_tokens=10_000_000, max_epochs=4), PRIOR, IDS, tokens)


def test_sampler_rows_distinct_and_deterministic():
    cfg = MixtureConfig(min_concentration=0.01, max_concentration=0.02, n_concentrations=2)
    p4 = PRIOR[:4] / PRIOR[:4].sum()
    w = sample_mixtures(p4, 30, cfg, np.random.default_rng(1))
    assert len({tuple(np.round(r, 4)) for r in w}) == len(w) <= 30
    a = sample_mixtures(PRIOR, 50, MixtureConfig(), np.random.default_rng(7))
    b = sample_mixtures(PRIOR, 50, MixtureConfig(), np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_concentration_ladder_spreads_sparsity():
    one = dict(n_concentrations=1)
    low = sample_mixtures(PRIOR, 500, MixtureConfig(min_concentration=0.1, max_concentration=0.1, **one), np.random.default_rng(2))
    high = sample_mixtures(PRIOR, 500, MixtureConfig(min_concentration=50, max_concentration=50, **one), np.random.default_rng(2))
    assert low.max(axis=1).mean() > high.max(axis=1).mean() + 0.2


@pytest.mark.parametrize("seed", range(5))
def test_covering_first_round_gives_every_cluster_a_large_share(seed):
    # Ten clusters, five runs: i.i.d. draws leave some cluster below a third of its cap; the
    # covering pick reaches half the cap for every cluster, from the same pool, with distinct rows.
    cfg = MixtureConfig(cap_multiple=4.0)
    cons = constraints_for(cfg, PRIOR, IDS)
    pool = sample_mixtures(PRIOR, 4000, cfg, np.random.default_rng(seed), cons)
    picked = covering_subset(pool, 5, cons.upper, np.random.default_rng(seed))
    reach = (picked / cons.upper).max(axis=0)
    assert reach.min() >= 0.5 - 1e-9, np.round(reach, 2)
    assert len({tuple(r) for r in np.round(picked, 6)}) == 5
    assert all(not cons.violations(w) for w in picked)
    iid = (pool[:5] / cons.upper).max(axis=0)
    assert iid.min() < 0.5


def test_covering_starts_over_once_every_cluster_is_covered():
    pool = np.eye(3).repeat(2, axis=0)  # each one-hot mixture twice
    picked = covering_subset(pool, 6, np.ones(3), np.random.default_rng(0))
    assert sorted(picked.argmax(axis=1).tolist()) == [0, 0, 1, 1, 2, 2]
    first = set(picked[:3].argmax(axis=1).tolist())
    assert first == {0, 1, 2}
    # An excluded cluster (cap 0, never covered) must not stop the second pass.
    weak = 0.2 * np.eye(3)  # worth less than a one-hot row once the count starts over
    rows = np.hstack([np.vstack([pool, weak]), np.zeros((9, 1))])
    picked = covering_subset(rows, 6, np.array([1.0, 1.0, 1.0, 0.0]), np.random.default_rng(0))
    assert sorted(picked[3:].max(axis=1).tolist()) == [1.0, 1.0, 1.0]


def test_fixed_mixtures():
    assert np.allclose(uniform_mixture(4), 0.25)
    assert np.allclose(natural_mixture([2, 1, 1]), [0.5, 0.25, 0.25])
    with pytest.raises(ValueError):
        natural_mixture([0, 0])
