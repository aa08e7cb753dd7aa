"""A command proxy with a known answer: `python tests/cmd_objective.py JOB_DIR [options]`.

Its score is `climb_core.search.synthetic.true_score` of the job's weights plus the same seeded noise
as the in-process `synthetic.objective` (restated here with numpy alone: importing climb_core would
triple each run's start-up), so a search through the command path can be checked against the known
optimum. Options make it misbehave on purpose for the failure tests."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

NOISE, OPTIMUM_SEED = 0.002, 123  # climb_core.search.synthetic's


def true_score(w) -> float:
    w = np.asarray(w, dtype=np.float64)
    return float(-((w - np.random.default_rng(OPTIMUM_SEED).dirichlet(np.ones(len(w)))) ** 2).sum())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("job")
    ap.add_argument("--fail", default="", help="exit 3 for runs whose id ends with this")
    ap.add_argument("--invalid", default="", help="write a result without a score for runs ending with this")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--lm-eval", action="store_true", help="write lm-eval's results format instead of result.json")
    ap.add_argument("--log", default="", help="append 'RUN_ID' to this file for each run")
    args = ap.parse_args()
    job_dir = Path(args.job)
    assert os.environ["CLIMB_JOB_DIR"] == str(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    if args.log:
        with open(args.log, "a") as fh:
            fh.write(job["run_id"] + "\n")
    for c in job["clusters"]:  # the data really is there
        assert Path(c["train_path"]).exists(), c["train_path"]
    if args.sleep:
        time.sleep(args.sleep)
    if args.fail and job["run_id"].endswith(args.fail):
        print("trainer: CUDA out of memory (simulated)", file=sys.stderr)
        return 3
    w = [c["weight"] for c in job["clusters"]]
    clean = true_score(w)
    score = clean + float(np.random.default_rng(job["seed"]).normal(0.0, NOISE))
    if args.invalid and job["run_id"].endswith(args.invalid):
        (job_dir / "result.json").write_text(json.dumps({"metrics": {"x": 1.0}}))
        return 0
    if args.lm_eval:
        out = job_dir / "lm_eval_out" / "model"
        out.mkdir(parents=True, exist_ok=True)
        (out / "results_2025-01-01T00-00-00.json").write_text(json.dumps(
            {"results": {"synthetic_task": {"alias": "synthetic_task", "acc,none": score, "acc_stderr,none": 0.01}}}))
        return 0
    (job_dir / "result.json").write_text(json.dumps({"score": score, "metrics": {"synthetic": clean}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
