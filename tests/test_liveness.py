"""One liveness rule for searches and jobs: pid plus start time; SIGTERM leaves an honest state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from climb_core.catalogue.liveness import alive, process_start
from climb_core.search import create_search, run_search, search_runs, summarize
from tests.helpers import build_domain_workspace, search_config, start_search_worker



def test_a_reused_pid_is_not_the_process_that_claimed_it():
    me = process_start()
    assert alive(os.getpid(), me)
    assert not alive(os.getpid(), me - 120)   # same pid, another start time: someone else's
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not alive(proc.pid)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)                            # exited, not reaped yet
    assert not alive(zombie.pid)
    zombie.wait()
    assert not alive(None) and not alive(float("nan"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_domain_workspace(tmp_path_factory.mktemp("live") / "ws")


def test_a_search_whose_pid_was_reused_reads_interrupted_and_resumes(ws):
    from climb_core.search.synthetic import objective

    sid = create_search(ws, search_config("random", 4))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with ws.connect() as con:   # as if the worker died and its pid went to `other`
            con.execute("UPDATE searches SET status = 'running', pid = ?, pid_started = ? WHERE search_id = ?",
                        [other.pid, process_start(other.pid) - 60, sid])
        assert summarize(ws, sid).status == "interrupted"
        assert run_search(ws, sid, objective=objective, progress=False).status == "done"
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow
def test_sigterm_marks_the_search_interrupted_and_it_resumes(ws, tmp_path):
    cfg = search_config("random", 12, seed=2)
    sid = create_search(ws, cfg)
    calls = tmp_path / "calls.txt"
    proc = start_search_worker(ws, sid, calls, 0.3)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ws.scalar("SELECT count(*) FROM proxy_runs WHERE search_id = ? AND status = 'done'", [sid]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    row = ws.query_df("SELECT status, message FROM searches WHERE search_id = ?", [sid]).iloc[0]
    assert row["status"] == "interrupted" and "SIGTERM" in row["message"]
    runs = search_runs(ws, sid)
    assert (runs["status"] == "running").sum() == 0       # the run in flight went back to the queue
    n_done = int((runs["status"] == "done").sum())
    from climb_core.search.synthetic import objective

    s = run_search(ws, sid, objective=objective, progress=False)
    assert s.status == "done" and s.n_done == 12 and n_done >= 3
