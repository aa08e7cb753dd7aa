"""Epochs per cluster at the final model's scale, the one rule for that scale, and the study setting it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from climb_core.config import MixtureConfig, TargetSpec
from climb_core.search import (cluster_epochs, create_search, create_study, final_tokens_for, run_search,
                               search_final_scale, search_report)
from climb_core.search.constraints import constraints_for
from climb_core.search.records import SearchError
from climb_core.search.synthetic import objective
from tests.helpers import build_domain_workspace, search_config


def test_epochs_are_weight_times_final_tokens_over_cluster_tokens():
    rows = cluster_epochs([0.5, 0.3, 0.2, 0.0], [1_000_000, 100_000, 0, 50], 2_000_000,
                          cluster_ids=[4, 7, 9, 11], labels=["a", "b", "c", "d"])
    assert [r["epochs"] for r in rows] == [pytest.approx(1.0), pytest.approx(6.0), None, 0.0]
    assert rows[1] == {"cluster_id": 7, "label": "b", "weight": 0.3, "tokens": 100_000, "epochs": pytest.approx(6.0)}
    with pytest.raises(ValueError):
        cluster_epochs([1.0], [1, 2], 10)


def test_one_rule_for_the_final_scale():
    tokens = [600_000, 300_000, 100_000]
    assert final_tokens_for(MixtureConfig(final_tokens=5_000_000), 1_000, tokens) == 5_000_000   # set by hand
    assert final_tokens_for(MixtureConfig(), 500_000, tokens) == 500_000                          # export.tokens
    assert final_tokens_for(MixtureConfig(), 2_000_000, tokens) == 1_000_000                      # corpus smaller
    assert final_tokens_for(MixtureConfig(), 2_000_000, tokens, [True, False, True]) == 700_000   # one excluded
    assert final_tokens_for(MixtureConfig(), 2_000_000, None) == 2_000_000                        # no counts yet
    # The repetition cap reads the same rule: a cluster's cap is max_epochs of its tokens at that scale.
    prior = np.asarray(tokens) / sum(tokens)
    cons = constraints_for(MixtureConfig(cap_multiple=0, max_epochs=2), prior, [0, 1, 2], tokens,
                           export_tokens=2_000_000)
    assert cons.upper[2] == pytest.approx(2 * 100_000 / 1_000_000)


@pytest.fixture(scope="module")
def tokenised(tmp_path_factory):
    from climb_core.pipeline.tokens import run_tokens
    from tests.test_tokens import token_config

    ws = build_domain_workspace(tmp_path_factory.mktemp("scale") / "ws")
    run_tokens(ws, token_config(), progress=False)
    return ws


def test_a_search_reports_its_final_mixture_at_the_final_scale(tokenised):
    ws = tokenised
    cfg = search_config("random", 4)
    cfg.mixture.final_tokens, cfg.mixture.max_epochs = 300_000, 4
    sid = create_search(ws, cfg)
    run_search(ws, sid, objective=objective, progress=False)
    scale = search_final_scale(ws, sid)
    rep = search_report(ws, sid)
    assert scale["tokens"] == rep["final_scale"]["tokens"] == 300_000
    assert scale["source"] == "mixture.final_tokens" and scale["max_epochs"] == cfg.mixture.max_epochs
    w, t = np.asarray(rep["final_weights"]), np.asarray(scale["cluster_tokens"], dtype=float)
    assert rep["final_scale"]["epochs"] == pytest.approx((w * 300_000 / t).tolist())
    assert [c["cluster_id"] for c in scale["clusters"]] == rep["cluster_ids"]
    assert max(rep["final_scale"]["epochs"]) <= cfg.mixture.max_epochs + 1e-6   # the cap held
    # Any mixture of the search, at the same scale.
    uniform = np.full(len(w), 1 / len(w))
    assert search_final_scale(ws, sid, uniform)["epochs"] == pytest.approx((uniform * 300_000 / t).tolist())
    # Left at 0: export.tokens, or the corpus when that is smaller.
    cfg = search_config("uniform", 1)
    sid = create_search(ws, cfg)
    assert search_final_scale(ws, sid)["tokens"] == min(cfg.export.tokens, int(t.sum()))
    assert search_final_scale(ws, sid)["epochs"] is None   # no final mixture yet


def _study_config():
    cfg = search_config("climb", 4)
    cfg.target.specs = [TargetSpec(kind="text", path="cluster:0", metric="neg_bpb")]
    cfg.proxy.tokens = 20_000
    cfg.study.final_token_multiple = 2.5
    return cfg


def test_create_study_sets_the_final_scale_of_its_searches(tokenised):
    ws = tokenised
    sid = create_study(ws, _study_config(), name="scale")
    stored = json.loads(ws.scalar("SELECT config_json FROM studies WHERE study_id = ?", [sid]))
    assert stored["mixture"]["final_tokens"] == 50_000
    # A final_tokens set by hand is kept.
    cfg = _study_config()
    cfg.mixture.final_tokens = 70_000
    sid = create_study(ws, cfg, name="by hand")
    stored = json.loads(ws.scalar("SELECT config_json FROM studies WHERE study_id = ?", [sid]))
    assert stored["mixture"]["final_tokens"] == 70_000


def test_a_final_scale_past_the_cap_is_refused_before_the_study_exists(tokenised):
    ws = tokenised
    cfg = _study_config()
    cfg.mixture.max_epochs = 4
    cfg.study.final_token_multiple = 1000.0       # 20M tokens from a corpus of well under 1M at 4 epochs
    before = ws.scalar("SELECT count(*) FROM studies")
    with pytest.raises(SearchError, match="final model trains on 20,000,000 tokens"):
        create_study(ws, cfg, name="too big")
    assert ws.scalar("SELECT count(*) FROM studies") == before
