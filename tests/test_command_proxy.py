"""Command proxies: the job folder, the template run (exit codes, timeouts, cancel, resume), result
parsing (result.json and lm-eval's results JSON), the executors, and a known-answer search through
the command path (tests/cmd_objective.py, whose score is synthetic.true_score of the weights)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from climb_core.config import TargetSpec
from climb_core.proxy import command
from climb_core.search import cancel_search, create_search, run_search, search_runs
from climb_core.search.synthetic import objective, true_score, w_star
from tests.helpers import build_domain_workspace, search_config

OBJ = Path(__file__).resolve().parent / "cmd_objective.py"


def cmd(*opts: str) -> str:
    return " ".join([shlex.quote(sys.executable), shlex.quote(str(OBJ)), "{job}", *map(shlex.quote, opts)])


def command_config(strategy: str, budget: int, template: str, seed: int = 0, timeout: float = 0.0, **search):
    cfg = search_config(strategy, budget, seed, **search)
    cfg.proxy.kind = "command"
    cfg.proxy.command = template
    cfg.proxy.command_timeout_s = timeout
    cfg.search.record_every_s = 0.0
    return cfg


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_domain_workspace(tmp_path_factory.mktemp("cmdproxy") / "ws")


def test_job_folder_holds_the_mixture_and_shared_data(ws):
    sid = create_search(ws, command_config("random", 2, cmd()))
    s = run_search(ws, sid, progress=False)
    assert s.status == "done" and s.n_done == 2
    runs = search_runs(ws, sid)
    dirs = [command.job_dir(ws.root, sid, r) for r in runs["run_id"]]
    jobs = [json.loads((d / "job.json").read_text()) for d in dirs]
    for job, row in zip(jobs, runs.itertuples()):
        assert job["run_id"] == row.run_id and job["seed"] == row.seed and job["round"] == row.round
        assert [c["weight"] for c in job["clusters"]] == pytest.approx(list(row.weights))
        assert job["weights"] == {str(c["id"]): c["weight"] for c in job["clusters"]}
        assert {"id", "label", "weight", "tokens", "train_path", "val_path"} <= set(job["clusters"][0])
        assert job["clusters"][0]["label"].endswith("-0")
        blend = job["data"]["megatron_blend"].split()
        assert len(blend) == 2 * sum(c["weight"] > 0 for c in job["clusters"])
        assert job["data"]["nemo_paths"][1] == blend[1]
        res = json.loads((Path(job["job_dir"]) / "result.json").read_text())
        assert row.score == pytest.approx(res["score"])
    # The data files are shared between runs, not copied per run, and hold every document once.
    assert jobs[0]["clusters"][0]["train_path"] == jobs[1]["clusters"][0]["train_path"]
    n = sum(1 for c in jobs[0]["clusters"] for p in (c["train_path"], c["val_path"]) for _ in open(p))
    assert n == ws.scalar("SELECT count(*) FROM documents")
    first = json.loads(open(jobs[0]["clusters"][0]["train_path"]).readline())
    assert isinstance(first["text"], str) and first["text"]


def test_failures_are_recorded_with_stderr_and_the_search_goes_on(ws):
    sid = create_search(ws, command_config("random", 5, cmd("--fail", "r1-001", "--invalid", "r1-003")))
    s = run_search(ws, sid, progress=False)
    runs = search_runs(ws, sid).set_index("idx")
    assert s.status == "done" and s.n_done == 3 and s.n_failed == 2
    assert "exited with status 3" in runs.loc[1, "error"] and "CUDA out of memory (simulated)" in runs.loc[1, "error"]
    assert "no 'score'" in runs.loc[3, "error"]


def test_timeout_kills_the_process_group(ws, tmp_path):
    pidfile = tmp_path / "child.pid"
    # The shell starts a child that outlives it unless the whole group is killed.
    template = f"sleep 30 & echo $! > {shlex.quote(str(pidfile))}; wait"
    sid = create_search(ws, command_config("random", 1, template, timeout=1.0, verify_seeds=0))
    t0 = time.monotonic()
    s = run_search(ws, sid, progress=False)
    assert time.monotonic() - t0 < 15
    assert s.n_failed == 1 and "timed out after 1 s" in search_runs(ws, sid)["error"][0]
    child = int(pidfile.read_text())
    time.sleep(0.3)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (reaped by init later).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_cancel_kills_the_running_command_and_resume_finishes(ws, tmp_path):
    log = tmp_path / "calls.log"
    sid = create_search(ws, command_config("random", 3, cmd("--sleep", "20", "--log", str(log))))
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("s", run_search(ws, sid, progress=False)))
    t0 = time.monotonic()
    th.start()
    while not log.exists() and time.monotonic() - t0 < 20:
        time.sleep(0.05)
    assert cancel_search(ws, sid) == "cancelling"
    th.join(30)
    assert time.monotonic() - t0 < 15  # the 20 s command did not run out its time
    assert out["s"].status == "cancelled"
    runs = search_runs(ws, sid)
    assert "cancelled" in runs["error"].dropna().iloc[0]


def test_resume_never_reruns_a_run_whose_result_is_valid(ws, tmp_path):
    log = tmp_path / "calls.log"
    template = cmd("--log", str(log))
    sid = create_search(ws, command_config("random", 4, template))
    s = run_search(ws, sid, progress=False)
    assert s.n_done == 4 and len(log.read_text().split()) == 4
    # As if the search had been killed after the commands wrote their results but before any was recorded.
    with ws.connect() as con:
        con.execute("UPDATE proxy_runs SET status = 'running', score = NULL WHERE search_id = ?", [sid])
        con.execute("UPDATE searches SET status = 'running', pid = NULL WHERE search_id = ?", [sid])
    s2 = run_search(ws, sid, progress=False)
    assert s2.status == "done" and s2.n_done == 4
    assert len(log.read_text().split()) == 4  # nothing ran again
    assert sorted(search_runs(ws, sid)["score"]) == pytest.approx(sorted(search_runs(ws, sid)["score"]))


def test_lm_eval_results_json_is_read_by_the_target_metric(ws):
    cfg = command_config("random", 2, cmd("--lm-eval"))
    cfg.target.specs = [TargetSpec(kind="lm-eval", path="synthetic_task", metric="acc")]
    sid = create_search(ws, cfg)
    s = run_search(ws, sid, progress=False)
    assert s.n_done == 2
    run = search_runs(ws, sid).iloc[0]
    assert json.loads(run["scores_json"])["synthetic_task/acc"] == pytest.approx(run["score"])
    # A metric the results do not hold fails the run and names what is there.
    cfg.target.specs = [TargetSpec(kind="lm-eval", path="synthetic_task", metric="acc_norm")]
    s = run_search(ws, create_search(ws, cfg), progress=False)
    assert s.n_failed == 2


def test_read_result_rejects_bad_files(tmp_path):
    (tmp_path / "result.json").write_text('{"score": NaN}')
    with pytest.raises(command.CommandError, match="finite"):
        command.read_result(tmp_path, [])
    (tmp_path / "result.json").write_text("[1, 2]")
    with pytest.raises(command.CommandError, match="object"):
        command.read_result(tmp_path, [])
    (tmp_path / "result.json").write_text('{"score": 0.5, "metrics": {"a": 1}}')
    assert command.read_result(tmp_path, [])["metrics"] == {"a": 1.0}
    (tmp_path / "result.json").unlink()
    with pytest.raises(command.CommandError, match="wrote no"):
        command.read_result(tmp_path, [])


@pytest.mark.parametrize("executor", ["process", "slurm"])
def test_command_runs_through_parallel_executors(ws, executor):
    cfg = command_config("random", 3, cmd(), executor=executor, workers=2)
    cfg.slurm.cluster = "local"
    cfg.slurm.max_jobs = 2
    cfg.slurm.time_min = 5
    s = run_search(ws, create_search(ws, cfg), progress=False)
    local = run_search(ws, create_search(ws, command_config("random", 3, cmd())), progress=False)
    assert s.status == "done" and s.n_done == 3
    assert s.final_weights == pytest.approx(local.final_weights)


def test_known_answer_through_the_command_path(ws):
    """The default search (climb, budget 28) through command proxies finds what the in-process
    synthetic objective finds (the same seeded scores), far closer to the optimum than the prior."""
    s = run_search(ws, create_search(ws, command_config("climb", 28, cmd())), progress=False)
    ref = run_search(ws, create_search(ws, search_config("climb", 28)), objective=objective, progress=False)
    assert s.status == "done" and s.n_done == 28
    np.testing.assert_allclose(s.final_weights, ref.final_weights, atol=1e-9)
    from climb_core.search import search_report

    prior = search_report(ws, s.search_id)["prior"]
    got, base = true_score(s.final_weights), true_score(prior)
    print(f"command path: true score of the final {got:.4f}, of the prior {base:.4f}, optimum 0 at {w_star(10).round(3)}")
    assert got > 0.5 * base  # at least half the distance from the prior to the optimum closed
