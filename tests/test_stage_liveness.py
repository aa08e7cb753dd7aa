"""Stages claim their process: a killed stage reads `interrupted` and resumes; one stage runs once at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from climb_core import queries

from climb_core.catalogue import stages
from climb_core.catalogue.workspace import Workspace
from climb_core.pipeline.run import workspace_status
from tests.helpers import demo_rows, documents_workspace, embed_config

REPO = Path(__file__).resolve().parents[1]
N_DOCS = 320
SHARD = 32


def _workspace(root: Path) -> Workspace:
    ws = documents_workspace(root, demo_rows(N_DOCS), embed_config(**{"embed.shard_size": SHARD}))
    ws.save_config(ws.load_config())
    return ws


def _start_embed(ws: Workspace) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "climb_core.cli", "embed", str(ws.root)],
                            env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_shards(ws: Workspace, proc: subprocess.Popen, n: int = 1, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"embed ended early: {proc.communicate()}"
        done = len(stages.finished_shards(ws, "embed"))
        if done >= n:
            return done
        time.sleep(0.1)
    raise AssertionError("no embed shard finished in time")


def _shown(ws: Workspace, stage: str) -> set[str]:
    """The stage's status as every reader shows it: `climb status`, the dashboard's two queries."""
    table = queries.stage_status(ws)
    overview = queries.corpus_overview(ws)["stages"]
    status = {s["stage"]: s["status"] for s in workspace_status(ws)["stages"]}
    return {table.loc[table.stage == stage, "status"].item(), overview.loc[overview.stage == stage, "status"].item(),
            status[stage]}


@pytest.fixture
def ws(tmp_path):
    return _workspace(tmp_path / "ws")


def test_a_stage_killed_mid_run_reads_interrupted_refuses_a_second_run_while_alive_and_resumes(ws):
    proc = _start_embed(ws)
    try:
        _wait_for_shards(ws, proc)
        assert _shown(ws, "embed") == {"running"}
        # A second run of the same stage while the first lives is refused, naming the process.
        with pytest.raises(stages.StageBusyError, match=rf"already running .*pid {proc.pid}"):
            with stages.run_stage(ws, "embed", {}, "another"):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    rec = stages.stage_record(ws, "embed")
    assert rec.status == "running" and rec.shown_status == "interrupted"   # nothing could record the kill
    assert _shown(ws, "embed") == {"interrupted"}
    kept = len(stages.finished_shards(ws, "embed"))
    assert 1 <= kept < N_DOCS // SHARD

    from climb_core.pipeline.embed import run_embed

    out = run_embed(Workspace.open(ws.root), ws.load_config(), progress=False)
    assert not out.skipped and f"{kept} shard(s) kept" in out.message
    assert stages.stage_record(ws, "embed").status == "done"


def test_sigterm_records_the_stage_interrupted_and_the_cli_says_so(ws):
    proc = _start_embed(ws)
    try:
        _wait_for_shards(ws, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err
    rec = stages.stage_record(ws, "embed")
    assert rec.status == "interrupted" and "resume" in rec.message
    assert _shown(ws, "embed") == {"interrupted"}


def test_a_stage_run_by_a_reused_pid_is_not_busy(ws):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from climb_core.catalogue.liveness import process_start

        with ws.connect() as con:   # as if the stage's process died and its pid went to `other`
            con.execute("INSERT INTO stages (stage, status, config_json, fingerprint, started_at, pid, pid_started) "
                        "VALUES ('map', 'running', '{}', 'fp', now(), ?, ?)", [other.pid, process_start(other.pid) - 60])
        assert _shown(ws, "map") == {"interrupted"}
        with stages.run_stage(ws, "map", {}, "fp") as run:
            assert run.resumed
        assert stages.stage_record(ws, "map").status == "done"
    finally:
        other.kill()
        other.wait()
