"""The final model's scale in the search: proxies that repeat data as the final model will, and the
scaling mode (part of the budget at a larger scale, a predictor over weights and scale)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from climb_core.proxy.train import POOL_PIECE_TOKENS, MixtureData, ProxyError, scaled_pool
from climb_core.proxy.types import ProxyResult
from climb_core.search import create_search, run_search, search_report
from climb_core.search.synthetic import objective, true_score
from tests.helpers import search_config

# ----------------------------------------------------------------------------- pools


def test_scaled_pool_takes_evenly_spaced_pieces_of_the_whole_cluster():
    tokens = np.arange(40 * POOL_PIECE_TOKENS)
    pool = scaled_pool(tokens, 0.25)
    assert len(pool) == 10 * POOL_PIECE_TOKENS
    starts = pool[::POOL_PIECE_TOKENS]
    assert starts[0] == 0 and starts[-1] == 39 * POOL_PIECE_TOKENS  # both ends of the cluster are sampled
    assert np.all(np.diff(starts) >= 4 * POOL_PIECE_TOKENS)
    assert scaled_pool(tokens, 1.0) is tokens
    assert len(scaled_pool(np.arange(100), 0.01)) == 100  # a cluster under one piece is kept whole


@pytest.fixture(scope="module")
def token_files(tmp_path_factory):
    from climb_core.pipeline.tokens import cluster_token_files, run_tokens
    from tests.test_tokens import make_domain_workspace, token_config

    ws = make_domain_workspace(tmp_path_factory.mktemp("pools") / "ws", per_domain=40)
    run_tokens(ws, token_config(), progress=False)
    return cluster_token_files(ws)


def test_pool_fraction_makes_the_proxy_repeat_as_the_final_model_would(token_files):
    files = token_files[:2]
    ids = [f.cluster_id for f in files]
    sizes = np.array([len(np.memmap(f.train_path, dtype=f.dtype, mode="r")) for f in files])
    proxy_tokens, final_tokens = 4096, 4 * 4096
    w = np.array([0.7, 0.3])
    plain = MixtureData.from_token_files(files, ids, w, 1024)
    scaled = MixtureData.from_token_files(files, ids, w, 1024, pool_fraction=proxy_tokens / final_tokens)
    rng = np.random.default_rng(0)
    plain.chunks(rng, proxy_tokens, 64)
    scaled.chunks(np.random.default_rng(0), proxy_tokens, 64)
    pool = np.array([len(t) for t in scaled.tokens])
    assert np.all(np.abs(pool - sizes / 4) <= POOL_PIECE_TOKENS)
    for i, c in enumerate(ids):
        # Epochs in the proxy: its share over its pool; in the final model: its share of F over the cluster.
        assert scaled.epochs[c] == pytest.approx(round(w[i] * proxy_tokens) / pool[i])
        assert scaled.epochs[c] == pytest.approx(w[i] * final_tokens / sizes[i], rel=0.1)
        assert plain.epochs[c] == pytest.approx(round(w[i] * proxy_tokens) / sizes[i])
    with pytest.raises(ProxyError, match="pool_fraction"):
        MixtureData.from_token_files(files, ids, w, 1024, pool_fraction=0.0)


# ----------------------------------------------------------------------------- the search hands it on

def recording_objective(job) -> ProxyResult:
    """The known-optimum objective, with the scale the run was asked for in its scores."""
    r = objective(job)
    r.scores = {**r.scores, "pool_fraction": float(job.pool_fraction), "tokens": float(job.proxy.tokens)}
    return r


@pytest.fixture
def ws(tmp_path):
    from tests.helpers import build_domain_workspace

    return build_domain_workspace(tmp_path / "ws", split=1)


def scale_config(strategy: str, budget: int, **search):
    """A search over the SQL-built clusters, which have no token files: no repetition cap."""
    cfg = search_config(strategy, budget, **search)
    cfg.mixture.max_epochs = 0
    return cfg


def _scores(ws, sid, key):
    import json

    df = ws.query_df("SELECT purpose, scores_json FROM proxy_runs WHERE search_id = ? ORDER BY round, idx", [sid])
    return [(p, json.loads(s)[key]) for p, s in zip(df["purpose"], df["scores_json"])]


@pytest.mark.parametrize("repetition, expected", [(True, 200_000 / 800_000), (False, 1.0)])
def test_search_sends_the_pool_fraction_of_the_final_scale(ws, repetition, expected):
    cfg = scale_config("random", 4)
    cfg.proxy.tokens, cfg.mixture.final_tokens, cfg.proxy.final_repetition = 200_000, 800_000, repetition
    sid = create_search(ws, cfg)
    run_search(ws, sid, objective=recording_objective, progress=False)
    assert [v for _, v in _scores(ws, sid, "pool_fraction")] == [expected] * 4


def test_final_repetition_is_off_where_the_final_model_is_no_larger(ws):
    cfg = scale_config("random", 2)
    cfg.proxy.tokens, cfg.mixture.final_tokens, cfg.proxy.final_repetition = 200_000, 100_000, True
    sid = create_search(ws, cfg)
    run_search(ws, sid, objective=recording_objective, progress=False)
    assert [v for _, v in _scores(ws, sid, "pool_fraction")] == [1.0, 1.0]


# ----------------------------------------------------------------------------- scaling mode

def scale_shifted_objective(job) -> ProxyResult:
    """The known-optimum objective plus log(tokens): a larger scale scores higher, the ranking holds."""
    r = recording_objective(job)
    r.score += math.log(job.proxy.tokens)
    return r


def test_scaling_mode_spends_its_runs_at_the_larger_scale_and_answers_from_there(ws):
    cfg = scale_config("climb", 28, seed=0, scale_runs=4, scale_multiple=4.0)
    cfg.proxy.tokens, cfg.mixture.final_tokens = 100_000, 1_000_000
    sid = create_search(ws, cfg)
    s = run_search(ws, sid, objective=scale_shifted_objective, progress=False)
    assert s.status == "done" and s.n_runs == 28
    tokens = _scores(ws, sid, "tokens")
    by = {p: sorted({t for q, t in tokens if q == p}) for p, _ in tokens}
    assert by == {"explore": [100_000.0], "scale": [400_000.0], "verify": [400_000.0]}
    assert sum(p == "scale" for p, _ in tokens) == 4
    rep = search_report(ws, sid)
    sc = rep["scaling"]
    assert sc["runs"] == 4 and sc["pairs"] == 4
    # The Spearman it reports is the one of the scores it reports.
    from scipy.stats import spearmanr

    assert sc["spearman"] == pytest.approx(spearmanr(sc["small_scores"], sc["large_scores"]).statistic)
    # The retrained mixtures are the best explored ones, and the answer is judged at the larger scale.
    explore = ws.query_df("SELECT weights, score FROM proxy_runs WHERE search_id = ? AND purpose = 'explore'", [sid])
    best4 = sorted(explore["score"], reverse=True)[:4]
    assert sorted(sc["small_scores"], reverse=True) == pytest.approx(best4)
    assert s.final["best_run"]["score"] > math.log(400_000) - 1  # a larger-scale run, not an explored one
    assert "carried to 4x" in s.final["how"]
    # The scale shift is a constant, so the optimum is where it is at one scale. Over seeds 0-7 the
    # worst final scored -0.017 (natural proportions: -0.19).
    assert true_score(s.final_weights) > -0.05


def test_study_reports_the_scaling_rank_check_of_each_search():
    from climb_core.search.study import scaling_markdown, scaling_summary

    strategies = {"climb:auto": {"label": "climb:auto", "searches": [{"seed": 0, "scale_spearman": 0.8},
                                                                     {"seed": 1, "scale_spearman": 0.4}]},
                  "regmix": {"label": "regmix", "searches": [{"seed": 0, "scale_spearman": None}]}}
    sc = scaling_summary(strategies)
    assert sc["mean"] == pytest.approx(0.6) and sc["min"] == pytest.approx(0.4) and len(sc["searches"]) == 2
    text = "\n".join(scaling_markdown(sc))
    assert "climb:auto seed 0 0.80" in text and "lowest 0.40" in text
    assert scaling_summary({"regmix": strategies["regmix"]}) is None and scaling_markdown(None) == []
