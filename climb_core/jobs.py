"""Background jobs started from the dashboard: a `climb` subprocess that outlives the page.

A job is a small wrapper process (`python -m climb_core.jobs run RCFILE -- ARGV...`) started in its own
session, so closing the dashboard does not stop it and cancelling can signal the whole process group.
The wrapper runs ARGV with its output going to WS/logs/<job_id>.log, then writes ARGV's exit code to
WS/logs/<job_id>.rc. The `jobs` table records each job; its status is refreshed from the rc file and
the wrapper's liveness whenever it is read (running -> done | failed | cancelled).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from climb_core.catalogue.liveness import alive, process_start
from climb_core.catalogue.workspace import Workspace
from climb_core.pipeline.registry import STAGE_NAMES

_POPENS: dict[int, subprocess.Popen] = {}  # wrappers started by this process, polled so they are reaped


class JobError(RuntimeError):
    """A job cannot be started, found or cancelled."""


def _now() -> dt.datetime:
    return dt.datetime.now()


def _paths(ws: Workspace, job_id: str) -> tuple[Path, Path]:
    return ws.logs_dir / f"{job_id}.log", ws.logs_dir / f"{job_id}.rc"


def start_job(ws: Workspace, kind: str, argv: list[str], meta: dict[str, Any] | None = None) -> str:
    """Launch `argv` detached from this process; returns the job id. Output goes to WS/logs/<job_id>.log."""
    job_id = f"{kind}-{_now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    ws.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path, rc_path = _paths(ws, job_id)
    wrapper = [sys.executable, "-m", "climb_core.jobs", "run", str(rc_path), "--", *map(str, argv)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "TOKENIZERS_PARALLELISM": "false"}
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(map(str, argv))}\n".encode())
        log.flush()
        proc = subprocess.Popen(wrapper, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=repo, env=env)
    _POPENS[proc.pid] = proc
    args = {"argv": list(map(str, argv)), **(meta or {})}
    with ws.connect() as con:
        con.execute("INSERT INTO jobs (job_id, kind, args_json, status, pid, pid_started, started_at, log_path) "
                    "VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                    [job_id, kind, json.dumps(args), proc.pid, process_start(proc.pid), _now(), str(log_path)])
    return job_id


def _alive(pid: int | None, started: float | None = None) -> bool:
    proc = _POPENS.get(pid) if pid else None
    if proc is not None and proc.poll() is not None:
        return False  # our own child, exited (and now reaped)
    return alive(pid, started)


def log_tail(ws_or_path, job_id: str | None = None, n_lines: int = 20, max_bytes: int = 20_000) -> str:
    """The last lines of a job's log (progress bars' carriage returns folded)."""
    path = Path(ws_or_path) if job_id is None else _paths(ws_or_path, job_id)[0]
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.split("\r")[-1] for ln in data.replace("\r\n", "\n").split("\n")]
    return "\n".join([ln for ln in lines if ln.strip()][-n_lines:])


def _refresh(ws: Workspace, row: dict[str, Any]) -> dict[str, Any]:
    if row["status"] not in ("running", "cancelling"):
        return row
    _, rc_path = _paths(ws, row["job_id"])
    rc: int | None = None
    if rc_path.exists():
        try:
            rc = int(rc_path.read_text().strip() or "1")
        except ValueError:
            rc = 1
    elif _alive(row["pid"], row.get("pid_started")):
        return row
    else:
        rc = None
    if row["status"] == "cancelling":
        status = "cancelled"
    elif rc == 0:
        status = "done"
    elif rc is None:
        status = "failed"
    else:
        status = "failed"
    tail = log_tail(row["log_path"], None, n_lines=1)
    message = tail[-500:] if rc is not None else "the job's process ended without writing an exit code"
    if rc not in (None, 0):
        message = f"exit code {rc}: {message}"
    with ws.connect() as con:
        con.execute("UPDATE jobs SET status = ?, finished_at = ?, message = ? WHERE job_id = ?",
                    [status, _now(), message, row["job_id"]])
    return {**row, "status": status, "finished_at": _now(), "message": message}


def _rows(ws: Workspace, where: str = "", params: list | None = None) -> list[dict[str, Any]]:
    with ws.connect() as con:
        df = con.execute(f"SELECT job_id, kind, args_json, status, pid, pid_started, started_at, finished_at, log_path, message "
                         f"FROM jobs {where} ORDER BY started_at DESC", params or []).df()
    return df.to_dict("records")


def job_status(ws: Workspace, job_id: str) -> dict[str, Any]:
    """A job's row, refreshed: status is running, cancelling, done, failed or cancelled."""
    rows = _rows(ws, "WHERE job_id = ?", [job_id])
    if not rows:
        raise JobError(f"no job {job_id!r} in {ws.root}")
    row = _refresh(ws, rows[0])
    row["args"] = json.loads(row["args_json"]) if row.get("args_json") else {}
    return row


def list_jobs(ws: Workspace, limit: int = 50) -> pd.DataFrame:
    """Jobs, newest first, their status refreshed."""
    rows = [_refresh(ws, r) for r in _rows(ws)[:limit]]
    cols = ["job_id", "kind", "status", "pid", "started_at", "finished_at", "message", "log_path", "args_json"]
    return pd.DataFrame(rows, columns=cols)


def running_jobs(ws: Workspace, kind: str | None = None) -> pd.DataFrame:
    df = list_jobs(ws)
    df = df[df["status"].isin(["running", "cancelling"])]
    return df if kind is None else df[df["kind"] == kind]


def cancel_job(ws: Workspace, job_id: str) -> dict[str, Any]:
    """SIGTERM the job's process group; its status becomes cancelled once the process has gone."""
    row = job_status(ws, job_id)
    if row["status"] not in ("running", "cancelling"):
        return row
    try:
        os.killpg(int(row["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError as err:
        raise JobError(f"cannot signal job {job_id} (pid {row['pid']}): {err}") from err
    with ws.connect() as con:
        con.execute("UPDATE jobs SET status = 'cancelling' WHERE job_id = ? AND status = 'running'", [job_id])
    return job_status(ws, job_id)


def _climb(*args: str) -> list[str]:
    return [sys.executable, "-m", "climb_core.cli", *args]


def start_stage_job(ws: Workspace, stage: str, force: bool = False) -> str:
    """Run one pipeline stage (or `run-all`) as a background `climb` process."""
    if stage not in STAGE_NAMES and stage != "run-all":
        raise JobError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_NAMES)} or run-all")
    argv = _climb(stage, str(ws.root))
    if force:
        argv.append("--force")
    return start_job(ws, stage, argv, {"stage": stage})


def _require_current(ws: Workspace) -> None:
    """The pre-check `climb search`, `study` and `export` make, here too so that the page that starts
    one shows a stale pipeline's message (StageError) at once instead of a failed worker's log."""
    from climb_core.pipeline.run import require_current

    require_current(ws, "refine")


def _start_configured(ws: Workspace, command: str, run_id: str, config, name: str | None,
                      extra: list[str] | None = None) -> None:
    """`climb COMMAND WS --config FILE --COMMAND-id ID` in a worker, its config written beside the logs.

    The config and its targets are checked here, so a bad value is reported to the caller (the
    dashboard) at once instead of in a background worker's log."""
    from climb_core.config import save_config, validate
    from climb_core.proxy.targets import validate_targets

    validate(config)
    validate_targets(ws, config.target.specs)
    _require_current(ws)
    ws.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = ws.logs_dir / f"{command}-{run_id}.toml"
    save_config(config, cfg_path)
    argv = _climb(command, str(ws.root), "--config", str(cfg_path), f"--{command}-id", run_id, "--quiet")
    if name:
        argv += ["--name", name]
    argv += list(extra or [])
    start_job(ws, command, argv, {f"{command}_id": run_id, "name": name})


def start_search_job(ws: Workspace, config, name: str | None = None, warm_start: list[str] | tuple = ()) -> str:
    """Start a new search in a background worker and return its id at once; `warm_start`: the
    searches whose runs it learns from (`climb search --warm-start`).

    The worker (`climb search --config ... --search-id ID`) re-tokenises the clusters if they changed
    since `climb tokens`, then creates the search under ID, so the page can follow it straight away.
    """
    from climb_core.search import new_search_id

    search_id = new_search_id()
    _start_configured(ws, "search", search_id, config, name, [a for sid in warm_start for a in ("--warm-start", sid)])
    return search_id


def start_study_job(ws: Workspace, config, name: str | None = None) -> str:
    """Start `climb study` in a background worker; returns the study id at once."""
    study_id = f"study-{_now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    _start_configured(ws, "study", study_id, config, name)
    return study_id


def resume_search_job(ws: Workspace, search_id: str) -> str:
    """Run (or continue) an existing search in a background worker; returns the job id."""
    _require_current(ws)
    return start_job(ws, "search", _climb("search", str(ws.root), "--resume", search_id, "--quiet"),
                     {"search_id": search_id})


def job_for_search(ws: Workspace, search_id: str) -> dict[str, Any] | None:
    """The newest job that ran this search, refreshed, or None."""
    for row in _rows(ws, "WHERE kind = 'search'"):
        args = json.loads(row["args_json"]) if row.get("args_json") else {}
        sid = args.get("search_id")
        if sid == search_id:
            return _refresh(ws, row)
    return None


def start_export_job(ws: Workspace, search_id: str, out_dir: str | Path, tokens: int | None = None) -> str:
    _require_current(ws)
    argv = _climb("export", str(ws.root), "--search", search_id, "--out", str(out_dir))
    if tokens:
        argv += ["--dataset-tokens", str(int(tokens))]
    return start_job(ws, "export", argv, {"search_id": search_id, "out_dir": str(out_dir)})


# ------------------------------------------------------------------------------------ the wrapper
def _run_wrapper(rc_path: str, argv: list[str]) -> int:
    """Run argv, forward SIGTERM/SIGINT to it, write its exit code to rc_path."""
    child = subprocess.Popen(argv)

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = child.wait()
    tmp = rc_path + ".tmp"
    Path(tmp).write_text(str(rc))
    os.replace(tmp, rc_path)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "run" and sys.argv[3] == "--":
        raise SystemExit(_run_wrapper(sys.argv[2], sys.argv[4:]))
    print("usage: python -m climb_core.jobs run RCFILE -- ARGV...", file=sys.stderr)
    raise SystemExit(2)
