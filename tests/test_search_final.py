"""The verified final, independent baselines, and constraints that every strategy respects, through
the real engine and catalogue (synthetic known-optimum objective, no proxy training)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from climb_core.proxy.types import ProxyResult
from climb_core.search import create_search, run_search, search_report, search_runs
from climb_core.search.constraints import constraints_for
from climb_core.search.synthetic import objective, true_score
from tests.helpers import build_domain_workspace, search_config


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_domain_workspace(tmp_path_factory.mktemp("final") / "ws")


def pessimist_objective(job) -> ProxyResult:
    """Verification runs (the last round) score far below anything explored."""
    r = objective(job)
    if "-r4-" in job.run_id:
        r.score -= 10.0
    return r


def test_climb_trains_its_final_and_records_the_verification(ws):
    cfg = search_config("climb", 14, seed=1, rounds=3, round_split=[4, 2, 1])
    cfg.search.verify_seeds = 2
    sid = create_search(ws, cfg)
    s = run_search(ws, sid, objective=objective, progress=False)
    runs = search_runs(ws, sid)
    assert len(runs) == 14 and (runs["status"] == "done").all()   # verification is inside the budget
    verify = runs[runs["purpose"] == "verify"]
    assert len(verify) == 2 and verify["seed"].nunique() == 2
    f = s.final
    proposed = f["weights"] if f["chosen"] == "optimum" else f["proposed_weights"]
    assert all(np.allclose(w, proposed) for w in verify["weights"])
    assert f["verified"] == pytest.approx(verify["score"].mean())
    assert f["predicted"] is not None and f["how"].startswith(("constrained optimum", "mean of the top"))
    # The answer is the verified optimum when it verified at least as well as the best run, else that run.
    if f["chosen"] == "optimum":
        assert f["verified"] >= f["best_run"]["score"] and np.allclose(s.final_weights, proposed)
    else:
        assert f["verified"] < f["best_run"]["score"] and np.allclose(s.final_weights, f["best_run"]["weights"])
    rep = search_report(ws, sid)
    assert rep["verify_round"] == 4 and rep["round_sizes"][-1] == 2
    last = rep["predictor_reports"][-1]
    assert last["round"] == 4 and last["predictor"] in ("loglinear", "gp", "lightgbm")
    assert {c["name"] for c in last["candidates"]} == {"loglinear", "gp", "lightgbm"}


def test_the_final_follows_its_verification_on_every_seed(ws):
    """Whether the optimum or the best run is chosen depends on the seed (17 of 24 seeds chose the
    optimum at budget 14: a quality figure, kept for the benchmark). What holds on every seed is
    the rule: the optimum when it verifies at least as well as the best trained run, else that run."""
    for seed in range(4):
        s = run_search(ws, create_search(ws, search_config("climb", 14, seed=10 + seed)), objective=objective,
                       progress=False)
        f = s.final
        if f["verified"] >= f["best_run"]["score"]:
            assert f["chosen"] == "optimum" and np.allclose(s.final_weights, f["weights"])
        else:
            assert f["chosen"] == "best_run" and np.allclose(s.final_weights, f["best_run"]["weights"])


def test_a_final_that_verifies_below_the_best_run_is_replaced_by_it(ws):
    # Three exploration rounds, so verification is round 4 (what pessimist_objective penalises).
    sid = create_search(ws, search_config("climb", 14, seed=2, rounds=3, round_split=[4, 2, 1]))
    s = run_search(ws, sid, objective=pessimist_objective, progress=False)
    f = s.final
    assert f["chosen"] == "best_run" and "below the best trained run" in f["note"]
    best = search_runs(ws, sid).query("purpose == 'explore'").sort_values("score").iloc[-1]
    assert np.allclose(s.final_weights, best["weights"]) and f["proposed_weights"] != s.final_weights
    assert s.final_predicted is None


def test_baselines_with_one_seed_draw_independent_mixtures(ws):
    rows = {}
    for strategy in ("random", "regmix", "climb"):
        sid = create_search(ws, search_config(strategy, 9, seed=0))
        run_search(ws, sid, objective=objective, progress=False)
        r = search_runs(ws, sid)
        rows[strategy] = np.array(list(r[r["round"] == 1]["weights"]))
    n = min(len(v) for v in rows.values())
    for a, b in (("random", "regmix"), ("random", "climb"), ("regmix", "climb")):
        assert not np.allclose(rows[a][:n], rows[b][:n]), f"{a} and {b} trained the same round-1 mixtures"


@pytest.mark.parametrize("strategy", ["climb", "regmix", "random", "uniform", "natural"])
def test_every_strategy_respects_caps_pins_and_exclusions(ws, strategy):
    cfg = search_config(strategy, 9, seed=3)
    ids = [int(c) for c in ws.query_df("SELECT cluster_id FROM clusters WHERE state = 'active' ORDER BY 1")["cluster_id"]]
    cfg.mixture.cap_multiple = 3.0
    cfg.mixture.min_weight = 0.01
    cfg.mixture.excluded = [ids[1]]
    cfg.mixture.pinned = [f"{ids[0]}=0.05"]
    sid = create_search(ws, cfg)
    s = run_search(ws, sid, objective=objective, progress=False)
    row = ws.query_df("SELECT prior FROM searches WHERE search_id = ?", [sid]).iloc[0]
    cons = constraints_for(cfg.mixture, np.asarray(row["prior"]), ids)
    weights = list(search_runs(ws, sid)["weights"]) + [s.final_weights]
    bad = [cons.violations(np.asarray(w)) for w in weights if cons.violations(np.asarray(w))]
    assert not bad, bad[:2]
    assert all(w[1] == 0 and abs(w[0] - 0.05) < 1e-9 for w in weights)


def test_unknown_predictor_is_refused_before_anything_runs(ws):
    from climb_core.search import SearchError

    from climb_core.config import ConfigError

    cfg = search_config("climb", 6)
    cfg.search.predictor = "xgboost"
    with pytest.raises(ConfigError, match="search.predictor = 'xgboost' is not valid: valid one of auto, loglinear"):
        create_search(ws, cfg)
    cfg.search.predictor = "auto"
    cfg.mixture.cap_multiple = 0.1
    with pytest.raises(SearchError, match="constraints cannot be met"):
        create_search(ws, cfg)


def test_round_reports_are_json(ws):
    sid = create_search(ws, search_config("climb", 8, seed=4))
    run_search(ws, sid, objective=objective, progress=False)
    json.dumps(search_report(ws, sid))


@pytest.mark.parametrize("top_k, how", [(0, "constrained optimum of the"), (128, "mean of the top 128 of")])
def test_final_rule_is_the_optimum_or_the_top_k_mean(ws, top_k, how):
    """search.final_top_k picks the final rule; on the known-optimum objective both land near w*
    (top-k over seeds 0-7 at budget 32: worst -0.012; natural proportions score -0.19)."""
    s = run_search(ws, create_search(ws, search_config("climb", 32, 0, n_pool_samples=20_000, final_top_k=top_k)),
                   objective=objective, progress=False)
    proposed = s.final["weights"] if s.final["chosen"] == "optimum" else s.final["proposed_weights"]
    assert s.final["how"].startswith(how)
    assert true_score(proposed) > -0.05
