"""A tiny study end to end: every strategy searched, finals re-trained, a report written, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from climb_core.config import TargetSpec
from climb_core.search.study import (arms, compare_finals, create_study, report_figures, report_markdown, run_study,
                                     study_report, transfer)
from climb_core.search.synthetic import objective, true_score
from tests.helpers import build_domain_workspace, search_config

CALLS: list[str] = []


def counting_final(job):
    CALLS.append(job.run_id)
    return objective(job)


def test_tiny_study_end_to_end_and_resume(tmp_path):
    from climb_core.pipeline.tokens import run_tokens
    from tests.test_tokens import token_config

    ws = build_domain_workspace(tmp_path / "ws")
    run_tokens(ws, token_config(), progress=False)   # the study's repetition cap needs the clusters' tokens
    cfg = search_config("climb", 8, seed=0, rounds=3, round_split=[4, 2, 1])
    # The synthetic objective never reads the target, but create_study checks that it exists.
    cfg.target.specs = [TargetSpec(kind="text", path="cluster:0", metric="neg_bpb")]
    cfg.study.strategies = ["climb", "random", "natural"]
    cfg.study.seeds = 2
    cfg.study.final_seeds = 2
    cfg.study.final_kind = "ngram"
    cfg.mixture.max_epochs = 4   # the cap, held at the final model's tokens
    assert [a.label for a in arms(cfg)] == ["climb:auto", "climb:auto", "random", "random", "natural"]
    study = create_study(ws, cfg, name="tiny")
    rep = run_study(ws, study, objective=objective, final_objective=counting_final, progress=False)
    assert rep["status"] == "done"
    assert len(CALLS) == 5 * 2                     # every final, every final seed
    st = rep["strategies"]
    assert set(st) == {"climb:auto", "random", "natural"}
    for label, s in st.items():
        for one in s["searches"]:
            assert len(one["final_scores"]) == 2
            # The final model's score is the objective at that search's final mixture.
            assert abs(one["final_mean"] - true_score(one["final_weights"])) < 0.01
    assert st["natural"]["final_sd_over"] == "final-model seeds"
    # Which arm wins a two-seed study is luck; what must hold is that the verdict says what its own
    # numbers say.
    assert [c["other"] for c in rep["comparisons"]] == ["natural", "random"]
    for c in rep["comparisons"]:
        assert c["gap"] == pytest.approx(st["climb:auto"]["final_mean"] - st[c["other"]]["final_mean"])
        assert c["spread"] == pytest.approx(max(st["climb:auto"]["final_sd"], st[c["other"]]["final_sd"]))
        expected = ("beats" if c["gap"] > c["spread"] else
                    "trails" if c["gap"] < -c["spread"] else "is within the seed spread of")
        assert c["word"] == expected
        assert f"climb:auto {expected} {c['other']} ({c['gap']:+.4f}; spread {c['spread']:.4f})" in rep["verdict"]
    out = tmp_path / "ws" / "studies" / study
    assert json.loads((out / "study.json").read_text())["study_id"] == study
    md = (out / "study.md").read_text()
    assert "| climb:auto |" in md and "Verdict" in md
    # The searches capped repetition at the final model's tokens, and the report says so.
    assert rep["final_model"]["searches_final_tokens"] == rep["final_model"]["tokens"] == 4 * cfg.proxy.tokens
    assert rep["final_scale"]["tokens"] == rep["final_model"]["tokens"]
    for s in st["climb:auto"]["searches"]:
        assert max(s["final_epochs"]) <= cfg.mixture.max_epochs + 1e-6
    tr = rep["transfer"]
    assert len(tr["rows"]) == 5 and tr["n_searches"] == 5 and tr["n_strategies"] == 3
    assert {r["proxy_score_from"] for r in tr["rows"]} <= {"verified", "best run"}
    assert tr["spearman_searches"] is None or -1 <= tr["spearman_searches"] <= 1
    assert "## Transfer: proxy scale vs final scale" in md
    assert len(report_figures(rep)) == 4
    assert (out / "study.html").stat().st_size > 1000
    # Resuming a finished study trains nothing again.
    CALLS.clear()
    again = run_study(ws, study, objective=objective, final_objective=counting_final, progress=False)
    assert CALLS == [] and again["strategies"]["random"]["final_mean"] == st["random"]["final_mean"]
    assert np.isfinite(study_report(ws, study)["strategies"]["climb:auto"]["final_sd"])


def _arm(label, mean, sd, n):
    return {"label": label, "final_mean": mean, "final_sd": sd, "spread_n": n}


def test_verdict_words_follow_gap_and_spread():
    st = {"climb:auto": _arm("climb:auto", -1.0, 0.05, 3), "natural": _arm("natural", -1.2, 0.01, 2),
          "uniform": _arm("uniform", -0.9, 0.02, 2), "random": _arm("random", -1.03, 0.04, 3)}
    words = {c["other"]: c["word"] for c in compare_finals(st)}
    assert words == {"natural": "beats", "uniform": "trails", "random": "is within the seed spread of"}


def test_one_seed_draws_no_verdict():
    st = {"climb:auto": _arm("climb:auto", -1.0, 0.0, 1), "natural": _arm("natural", -0.8, 0.0, 1)}
    (c,) = compare_finals(st)
    assert c["spread"] is None and c["word"] == "has no seed spread to be judged against"
    from climb_core.search.study import verdict_text

    text = verdict_text([c])
    assert "no verdict" in text and "trails" not in text and "spread 0.0000" not in text


def _strategy(label, pairs, sd, n=None):
    """A study's strategy entry: one search per (proxy score, final mean) pair."""
    searches = [{"search_id": f"{label}-s{i}", "seed": i, "proxy_score": p, "proxy_score_from": "verified",
                 "final_mean": f} for i, (p, f) in enumerate(pairs)]
    return {"label": label, "strategy": label.split(":")[0], "searches": searches,
            "final_mean": float(np.mean([f for _, f in pairs])), "final_sd": sd, "spread_n": n or len(pairs)}


def test_transfer_holds_when_the_final_model_keeps_the_order():
    st = {"climb:auto": _strategy("climb:auto", [(-1.0, -2.0), (-1.1, -2.1)], 0.05),
          "random": _strategy("random", [(-1.3, -2.4), (-1.4, -2.5)], 0.05),
          "natural": _strategy("natural", [(-1.6, -2.9)], 0.01, n=3)}
    tr = transfer(st)
    assert tr["flips"] == [] and tr["warning"] is None
    assert tr["spearman_searches"] == pytest.approx(1.0) and tr["spearman_strategies"] == pytest.approx(1.0)
    means = {p["label"]: p for p in tr["strategies"]}
    assert means["climb:auto"]["proxy_mean"] == pytest.approx(-1.05)
    assert means["climb:auto"]["final_mean"] == pytest.approx(-2.05)


def test_transfer_flags_a_ranking_that_flips_at_the_final_scale():
    # CLIMB is best on the proxies, but on the final model natural leads it by 0.3, far past both
    # spreads (0.05 and 0.01); random keeps its place below natural.
    st = {"climb:auto": _strategy("climb:auto", [(-1.0, -2.3), (-1.1, -2.4)], 0.05),
          "natural": _strategy("natural", [(-1.2, -2.05)], 0.01, n=3),
          "random": _strategy("random", [(-1.5, -2.5), (-1.6, -2.6)], 0.05)}
    tr = transfer(st)
    kinds = {(f["kind"], f.get("proxy_best") or f.get("proxy_ahead"), f.get("final_best") or f.get("final_ahead"))
             for f in tr["flips"]}
    assert kinds == {("best", "climb:auto", "natural"), ("pair", "climb:auto", "natural")}
    assert "climb:auto is best on the proxies but natural is best on the final model" in tr["warning"]
    assert tr["spearman_strategies"] == pytest.approx(0.5)
    # Within the spread: a swap smaller than a strategy's spread is no flip of the pair kind.
    st["natural"]["final_sd"] = 0.5
    assert [f["kind"] for f in transfer(st)["flips"]] == ["best"]
    # One seed on a side: no measured spread, so only the best-strategy rule can fire.
    st["natural"]["final_sd"], st["natural"]["spread_n"] = 0.01, 1
    assert [f["kind"] for f in transfer(st)["flips"]] == ["best"]


def test_transfer_in_the_markdown_after_the_verdict():
    st = {"climb:auto": _strategy("climb:auto", [(-1.0, -2.3), (-1.1, -2.4)], 0.05),
          "natural": _strategy("natural", [(-1.2, -2.05)], 0.01, n=3)}
    for s in st.values():
        s.update(final_sd_over="search seeds", mean_weights=None, best_so_far_mean=[])
        for one in s["searches"]:
            one.update(proxy_best=one["proxy_score"], final_scores=[one["final_mean"]], predictors=[])
    rep = {"study_id": "s", "name": "n", "target": [{"name": "t"}], "budget": 4,
           "proxy": {"kind": "ngram", "tokens": 1000}, "final_model": {"kind": "gpt", "tokens": 4000, "seeds": 2},
           "strategies": st, "verdict": "v", "transfer": transfer(st), "cluster_ids": [], "cluster_labels": []}
    md = report_markdown(rep)
    verdict = md.index("**Verdict:** v")
    assert md.index("**Warning:** the ranking of strategies does not hold") > verdict
    assert "## Transfer: proxy scale vs final scale" in md and "| climb:auto | -1.0500 | -2.3500 |" in md
    assert len(report_figures(rep)) == 4
