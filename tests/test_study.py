"""A tiny study end to end: every strategy searched, finals re-trained, a report written, resumable."""

from __future__ import annotations

import json

import numpy as np

from climb_core.config import TargetSpec
from climb_core.search.study import arms, create_study, run_study, study_report
from climb_core.search.synthetic import objective, true_score
from tests.helpers import build_domain_workspace, search_config

CALLS: list[str] = []


def counting_final(job):
    CALLS.append(job.run_id)
    return objective(job)


def test_tiny_study_end_to_end_and_resume(tmp_path):
    ws = build_domain_workspace(tmp_path / "ws")
    cfg = search_config("climb", 8, seed=0, rounds=3, round_split=[4, 2, 1])
    cfg.target.specs = [TargetSpec(kind="text", path="unused-by-the-synthetic-objective.jsonl")]
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
    assert st["climb:auto"]["final_mean"] > st["natural"]["final_mean"]
    assert "climb:auto beats natural" in rep["verdict"]
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
