"""A tiny study end to end: every strategy searched, finals re-trained, a report written, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from climb_core.config import TargetSpec
from climb_core.search.study import arms, compare_finals, create_study, run_study, study_report
from climb_core.search.synthetic import objective, true_score
from tests.helpers import build_domain_workspace, search_config

CALLS: list[str] = []


def counting_final(job):
    CALLS.append(job.run_id)
    return objective(job)


def test_tiny_study_end_to_end_and_resume(tmp_path):
    ws = build_domain_workspace(tmp_path / "ws")
    cfg = search_config("climb", 8, seed=0, rounds=3, round_split=[4, 2, 1])
    # The synthetic objective never reads the target, but create_study checks that it exists.
    cfg.target.specs = [TargetSpec(kind="text", path="cluster:0", metric="neg_bpb")]
    cfg.study.strategies = ["climb", "random", "natural"]
    cfg.study.seeds = 2
    cfg.study.final_seeds = 2
    cfg.study.final_kind = "ngram"
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
