"""The Dirichlet mixture sampler: sums, caps, minimum weight, no duplicates, concentration ladder."""

from __future__ import annotations

import numpy as np
import pytest

from climb_core.config import MixtureConfig
from climb_core.mixtures import apply_caps, natural_mixture, sample_mixtures, uniform_mixture

PRIOR = np.array([0.30, 0.20, 0.15, 0.10, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005])


def test_rows_sum_to_one_and_respect_caps_and_min_weight():
    cfg = MixtureConfig(cap_multiple=3.0, min_weight=0.01)
    w = sample_mixtures(PRIOR, 2000, cfg, np.random.default_rng(0))
    assert w.shape == (2000, 10)
    assert np.allclose(w.sum(axis=1), 1.0)
    assert (w <= 3.0 * PRIOR[None, :] + 1e-9).all()
    assert ((w == 0) | (w >= 0.01 - 1e-12)).all()
    assert (w >= 0).all()


def test_no_duplicates_even_when_sparse():
    # Tiny concentrations make many one-hot rows; duplicates must be replaced, not returned.
    cfg = MixtureConfig(min_concentration=0.01, max_concentration=0.02, n_concentrations=2)
    w = sample_mixtures(PRIOR[:4] / PRIOR[:4].sum(), 30, cfg, np.random.default_rng(1))
    keys = {tuple(np.round(r, 4)) for r in w}
    assert len(keys) == len(w)
    assert len(w) <= 30


def test_deterministic_for_a_seed():
    a = sample_mixtures(PRIOR, 50, MixtureConfig(), np.random.default_rng(7))
    b = sample_mixtures(PRIOR, 50, MixtureConfig(), np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_concentration_spreads_sparsity():
    # Low concentration gives spiky mixtures, high gives near-prior ones; the ladder mixes both.
    low = sample_mixtures(PRIOR, 500, MixtureConfig(min_concentration=0.1, max_concentration=0.1, n_concentrations=1), np.random.default_rng(2))
    high = sample_mixtures(PRIOR, 500, MixtureConfig(min_concentration=50, max_concentration=50, n_concentrations=1), np.random.default_rng(2))
    assert low.max(axis=1).mean() > high.max(axis=1).mean() + 0.2
    tempered = PRIOR ** 0.5 / (PRIOR ** 0.5).sum()
    assert np.abs(high.mean(axis=0) - tempered).max() < 0.03


def test_caps_redistribute_excess():
    cap = np.array([0.5, 0.5, 0.5])
    w = apply_caps(np.array([[0.9, 0.1, 0.0], [1.0, 0.0, 0.0]]), cap, 0.0)
    assert np.allclose(w.sum(axis=1), 1.0)
    assert (w <= 0.5 + 1e-12).all()
    assert np.allclose(w[0], [0.5, 0.5, 0.0])


def test_fixed_mixtures():
    assert np.allclose(uniform_mixture(4), 0.25)
    assert np.allclose(natural_mixture([2, 1, 1]), [0.5, 0.25, 0.25])
    with pytest.raises(ValueError):
        natural_mixture([0, 0])
