"""Command proxies: the user's own trainer, run once per proxy run on a job folder.

For each run CLIMB writes `<workspace>/proxy_jobs/<search>/<run>/job.json` (the mixture, the
clusters' data files, the targets) and runs `proxy.command` with `{job}` replaced by that folder
(also `$CLIMB_JOB_DIR`). The command writes `{job}/result.json` (`{"score": ..., "metrics": {...}}`)
or lm-eval's results JSON somewhere under `{job}`. docs/command-proxies.md is the interface.

The job folder is written by the search's own process (`prepare_jobs`), so a worker on another
machine (Ray, Slurm) needs only the shared filesystem, never the catalogue. The command runs in a
session of its own: a timeout, a cancel (the `CANCEL` marker of the search's folder) or an
interrupt kills its whole process group, never only the shell. A run whose folder already holds a
valid result for the same job is not run again (a search killed before recording it, resumed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from climb_core.proxy.types import ProxyJob, ProxyResult

JOBS_DIR = "proxy_jobs"
DATA_DIR = "proxy_data"
CANCEL_MARKER = "CANCEL"
STDERR_TAIL_LINES = 20
KILL_GRACE_S = 3.0
# The grace a command gets after SIGTERM before SIGKILL reaches its whole group.


class CommandError(RuntimeError):
    """A command proxy run failed: non-zero exit, timeout, cancel, or a missing or invalid result."""


# --------------------------------------------------------------------------- paths

def search_dir(workspace: str | Path, search_id: str) -> Path:
    return Path(workspace) / JOBS_DIR / search_id


def job_dir(workspace: str | Path, search_id: str, run_id: str) -> Path:
    return search_dir(workspace, search_id) / run_id


def request_cancel(workspace: str | Path, search_id: str) -> None:
    """Ask running commands of a search to stop: each run's watcher sees the marker within a second."""
    d = search_dir(workspace, search_id)
    if d.is_dir():
        (d / CANCEL_MARKER).touch()


def clear_cancel(workspace: str | Path, search_id: str) -> None:
    (search_dir(workspace, search_id) / CANCEL_MARKER).unlink(missing_ok=True)


# --------------------------------------------------------------------------- data files

def trainer_blends(weights: list[float], prefixes: list[str]) -> dict[str, Any]:
    """The mixture as Megatron's `--data-path` string and NeMo's flat `paths` list, by the export's
    own writers, so a proxy run and an exported dataset hand a trainer the same shapes. A path that
    Megatron would split on whitespace gets no Megatron blend, with the reason, instead of a wrong one."""
    from climb_core.proxy import trainer_files

    pairs = trainer_files.blend(weights, prefixes)
    out: dict[str, Any] = {"nemo_paths": trainer_files.nemo_paths(pairs)}
    try:
        out["megatron_blend"] = trainer_files.megatron_data_path(pairs)
    except trainer_files.TrainerFileError as err:
        out["megatron_blend"], out["megatron_blend_error"] = None, str(err)
    return out


def _membership_key(con, cluster_ids: list[int], val_fraction: float, seed: int) -> str:
    """A digest of which documents are in which of the clusters (and the split settings): the
    data files are shared by every search over the same membership, rewritten when it changes."""
    row = con.execute(
        "SELECT count(*), coalesce(sum(hash(doc_idx, cluster_id)::HUGEINT), 0) FROM doc_clusters "
        "WHERE list_contains(?, cluster_id)", [list(map(int, cluster_ids))]).fetchall()[0]
    text = json.dumps([sorted(map(int, cluster_ids)), int(row[0]), str(row[1]), float(val_fraction), int(seed)])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def cluster_data(ws, cluster_ids: list[int], val_fraction: float, seed: int) -> dict[int, dict[str, Any]]:
    """Each cluster's training and held-out documents as JSONL ({"text": ...}), written once under
    `<workspace>/proxy_data/<key>/` and shared by every run (the split is the tokens stage's own)."""
    import fcntl

    from climb_core.proxy.trainer_files import write_documents_jsonl
    from climb_core.pipeline.tokens import validation_mask

    with ws.connect() as con:
        key = _membership_key(con, cluster_ids, val_fraction, seed)
    out_dir = ws.root / DATA_DIR / key
    manifest = out_dir / "manifest.json"
    if manifest.exists():
        return {int(k): v for k, v in json.loads(manifest.read_text())["clusters"].items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two searches starting together write the files once
        if manifest.exists():
            return {int(k): v for k, v in json.loads(manifest.read_text())["clusters"].items()}
        info: dict[int, dict[str, Any]] = {}
        for cid in cluster_ids:
            with ws.connect() as con:
                rows = con.execute(
                    "SELECT d.doc_id, coalesce(d.text, '') FROM doc_clusters c JOIN documents d USING (doc_idx) "
                    "WHERE c.cluster_id = ? ORDER BY d.doc_idx", [int(cid)]).fetchall()
            is_val = validation_mask([r[0] for r in rows], val_fraction, seed)
            entry: dict[str, Any] = {}
            for split in ("train", "val"):
                path = out_dir / f"cluster-{int(cid)}.{split}.jsonl"
                tmp = path.with_suffix(".jsonl.tmp")
                docs = [(text, doc_id) for (doc_id, text), val in zip(rows, is_val) if bool(val) == (split == "val")]
                n = write_documents_jsonl(tmp, docs)
                n_bytes = sum(len(text.encode("utf-8")) for text, _ in docs)
                os.replace(tmp, path)
                entry[f"{split}_path"], entry[f"{split}_docs"], entry[f"{split}_bytes"] = str(path), n, n_bytes
            info[int(cid)] = entry
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "clusters": {str(k): v for k, v in info.items()}}, indent=1))
        os.replace(tmp, manifest)
    return info


# --------------------------------------------------------------------------- job folders

def _job_record(job: ProxyJob, labels: dict[int, str], data: dict[int, dict[str, Any]],
                include: list[str]) -> dict[str, Any]:
    from climb_core.proxy.lm_eval_tasks import BUNDLED_TASKS_DIR

    d = job_dir(job.workspace, job.search_id, job.run_id)
    clusters = []
    for cid, w in zip(job.cluster_ids, job.weights):
        info = data[int(cid)]
        clusters.append({"id": int(cid), "label": labels.get(int(cid), ""), "weight": float(w),
                         "tokens": int(round(float(w) * job.proxy.tokens)),
                         "train_path": info["train_path"], "val_path": info["val_path"],
                         "train_docs": info["train_docs"], "val_docs": info["val_docs"],
                         "train_bytes": info["train_bytes"]})
    # The prefixes Megatron's tools/preprocess_data.py writes for `--output-prefix <data>/cluster-N.train
    # --json-keys text`: the blend names the tokenised files a Megatron trainer reads.
    prefixes = [str(Path(c["train_path"]).with_suffix("")) + "_text_document" for c in clusters]
    weights = [c["weight"] for c in clusters]
    lm_eval_targets = [t for t in job.targets if t.kind == "lm-eval"]
    return {
        "version": 1,
        "search_id": job.search_id, "run_id": job.run_id, "round": int(job.round), "seed": int(job.seed),
        "tokens": int(job.proxy.tokens),
        # < 1 with proxy.final_repetition: a trainer that repeats data as the final model will draws each
        # cluster from its first pool_fraction of documents (1: the whole cluster).
        "pool_fraction": float(job.pool_fraction),
        "weights": {str(int(c)): float(w) for c, w in zip(job.cluster_ids, job.weights)},
        "clusters": clusters,
        "targets": [dataclasses.asdict(t) for t in job.targets],
        "lm_eval": {"tasks": [t.path for t in lm_eval_targets],
                    "metrics": {t.path: t.metric for t in lm_eval_targets},
                    "limit": max((t.max_items for t in lm_eval_targets), default=0) or None,
                    "include": [str(Path(p).resolve()) for p in include] + [str(BUNDLED_TASKS_DIR)]},
        "data": {"format": "jsonl", "text_key": "text", "dir": str(Path(clusters[0]["train_path"]).parent) if clusters else "",
                 **trainer_blends(weights, prefixes)},
        "proxy": dataclasses.asdict(job.proxy),
        "job_dir": str(d),
        "result_path": str(d / "result.json"),
    }


def prepare_jobs(ws, jobs: list[ProxyJob], val_fraction: float = 0.05, split_seed: int = 0) -> None:
    """Write each run's job folder (and the shared data files once). A folder whose job.json already
    says the same is left as it is, result and logs included."""
    if not jobs:
        return
    cluster_ids = list(jobs[0].cluster_ids)
    data = cluster_data(ws, cluster_ids, val_fraction, split_seed)
    labels = dict(ws.query_df("SELECT cluster_id, coalesce(label, auto_label, '') AS label FROM clusters")
                  .itertuples(index=False, name=None))
    labels = {int(k): str(v) for k, v in labels.items()}
    search_dir(ws.root, jobs[0].search_id).mkdir(parents=True, exist_ok=True)
    for job in jobs:
        _write_job(job, _job_record(job, labels, data, job.lm_eval_include))


def _write_job(job: ProxyJob, record: dict[str, Any]) -> None:
    d = job_dir(job.workspace, job.search_id, job.run_id)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "job.json"
    text = json.dumps(record, indent=1)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    # Another job in this folder (the search was re-created with other settings): its result is not ours.
    _clear_results(d)
    tmp = d / ".job.json.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _prepare_here(job: ProxyJob) -> None:
    """The job folder written by the worker itself (a caller that ran no `prepare_jobs`)."""
    from climb_core.catalogue.workspace import Workspace
    from climb_core.config import config_from_dict

    ws = Workspace.open(job.workspace)
    raw = ws.scalar("SELECT config_json FROM searches WHERE search_id = ?", [job.search_id])
    tok = config_from_dict(json.loads(raw)).tokenizer if raw else ws.load_config().tokenizer
    prepare_jobs(ws, [job], tok.val_fraction, tok.seed)


def _clear_results(d: Path) -> None:
    (d / "result.json").unlink(missing_ok=True)
    for p in _lm_eval_files(d):
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- results

def _lm_eval_files(d: Path) -> list[Path]:
    """lm-eval's results files under the job folder (`lm_eval --output_path {job}/...`), newest last."""
    if not d.is_dir():
        return []
    found = [p for p in d.rglob("results*.json") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise CommandError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def lm_eval_metrics(results: dict[str, Any]) -> dict[str, float]:
    """lm-eval's `results` table flattened to {'task/metric': value} ('acc,none' -> 'acc'; a metric
    under another filter keeps it: 'exact_match,strict-match' -> 'exact_match/strict-match')."""
    out: dict[str, float] = {}
    for task, table in (results or {}).items():
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            if "_stderr" in key or key == "alias" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            name = f"{task}/{metric}" if filt in ("", "none") else f"{task}/{metric}/{filt}"
            if math.isfinite(float(value)):
                out[name] = float(value)
    return out


def score_lm_eval(results: dict[str, Any], targets: list) -> tuple[float, dict[str, float]]:
    """The weighted mean of each lm-eval target's metric, read from lm-eval's `results` table."""
    metrics = lm_eval_metrics(results)
    specs = [t for t in targets if _get(t, "kind") == "lm-eval"]
    if not specs:
        raise CommandError("lm-eval results found, but no target names a metric to read: give "
                           "--target lm-eval:TASK,metric=acc (or write result.json with a score)")
    total = weight = 0.0
    for t in specs:
        task, metric = _get(t, "path"), _get(t, "metric") or "acc"
        metric = "acc" if metric == "loglik" else metric  # loglik is the mc default, not an lm-eval metric
        key = f"{task}/{metric}"
        if key not in metrics:
            have = sorted(k for k in metrics if k.startswith(f"{task}/")) or sorted({k.split('/')[0] for k in metrics})
            raise CommandError(f"lm-eval results have no {metric!r} for task {task!r}; found {have}")
        total += float(_get(t, "weight")) * metrics[key]
        weight += float(_get(t, "weight"))
    if weight <= 0:
        raise CommandError("target weights must sum to more than zero")
    return total / weight, metrics


def _get(t, key):
    return t.get(key) if isinstance(t, dict) else getattr(t, key)


def read_result(d: Path, targets: list) -> dict[str, Any]:
    """The run's outcome from its folder: {'score', 'metrics', 'loss_curve', 'tokens'}; raises
    CommandError saying what is missing or wrong."""
    path = d / "result.json"
    data: Any = None
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CommandError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise CommandError(f"{path} must hold a JSON object, got {type(data).__name__}")
    else:
        files = _lm_eval_files(d)
        if not files:
            raise CommandError(f"the command wrote no {path} (nor lm-eval results under {d})")
        try:
            data = json.loads(files[-1].read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CommandError(f"{files[-1]} is not valid JSON: {err}") from err
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise CommandError(f"{files[-1]} is not an lm-eval results file (no 'results' table)")
    if "score" not in data and isinstance(data.get("results"), dict):
        score, metrics = score_lm_eval(data["results"], targets)
        return {"score": score, "metrics": metrics, "loss_curve": [], "tokens": 0}
    if "score" not in data:
        raise CommandError(f"{path} has no 'score' (expected {{\"score\": float, \"metrics\": {{...}}}})")
    score = _finite(data["score"], f"{path}: 'score'")
    metrics = data.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise CommandError(f"{path}: 'metrics' must be an object of name -> number")
    metrics = {str(k): _finite(v, f"{path}: metric {k!r}") for k, v in metrics.items()}
    curve = data.get("loss_curve") or []
    curve = [float(x) for x in curve if isinstance(x, (int, float)) and math.isfinite(float(x))] if isinstance(curve, list) else []
    tokens = data.get("tokens") if isinstance(data.get("tokens"), int) else 0
    return {"score": score, "metrics": metrics, "loss_curve": curve, "tokens": tokens}


def valid_result(d: Path, targets: list) -> dict[str, Any] | None:
    try:
        return read_result(d, targets)
    except CommandError:
        return None


# --------------------------------------------------------------------------- running

def stderr_tail(d: Path, lines: int = STDERR_TAIL_LINES) -> str:
    path = d / "stderr.log"
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 64_000))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the command's whole process group, SIGKILL after a grace."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The shell is gone; what it started may not be: one SIGKILL for the rest of the group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return


def render(template: str, d: Path) -> str:
    if not template.strip():
        raise CommandError("proxy.kind = command needs proxy.command (e.g. --proxy-command 'python train.py {job}')")
    return template.replace("{job}", shlex.quote(str(d)))


def run_command_job(job: ProxyJob) -> ProxyResult:
    """Run the job's command on its folder and read its result (see the module docstring)."""
    t0 = time.perf_counter()
    d = job_dir(job.workspace, job.search_id, job.run_id)
    if not (d / "job.json").exists():
        _prepare_here(job)
    done = valid_result(d, job.targets)
    if done is None:
        _clear_results(d)
        rc, why = _run(job, d)
        if why:
            tail = stderr_tail(d)
            raise CommandError(f"{why}" + (f"; stderr:\n{tail}" if tail else ""))
        try:
            done = read_result(d, job.targets)
        except CommandError as err:
            tail = stderr_tail(d)
            raise CommandError(f"{err}" + (f"; stderr:\n{tail}" if tail else "")) from None
    return ProxyResult(run_id=job.run_id, score=done["score"], scores=done["metrics"], loss_curve=done["loss_curve"],
                       epochs={}, tokens=int(done["tokens"] or job.proxy.tokens), wall_s=time.perf_counter() - t0,
                       host=socket.gethostname())


def _run(job: ProxyJob, d: Path) -> tuple[int | None, str]:
    """Run the command; (exit code, why it failed or '')."""
    import multiprocessing

    cmd = render(job.proxy.command, d)
    env = dict(os.environ, CLIMB_JOB_DIR=str(d), CLIMB_RUN_ID=job.run_id, CLIMB_SEARCH_ID=job.search_id,
               CLIMB_SEED=str(job.seed))
    timeout = float(job.proxy.command_timeout_s or 0)
    marker = search_dir(job.workspace, job.search_id) / CANCEL_MARKER
    # In a pool worker, a parent that dies (the search killed) re-parents the worker: the command goes too.
    parent = os.getppid() if multiprocessing.parent_process() is not None else None
    with open(d / "stdout.log", "wb") as out, open(d / "stderr.log", "wb") as err:
        proc = subprocess.Popen(cmd, shell=True, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        t_start = time.monotonic()
        step = 0.005
        why = ""
        try:
            while True:
                try:
                    proc.wait(timeout=step)
                    break
                except subprocess.TimeoutExpired:
                    pass
                step = min(step * 2, 0.5)  # short commands are seen at once, long ones cost ~2 wakeups a second
                if timeout and time.monotonic() - t_start > timeout:
                    why = f"timed out after {timeout:g} s (proxy.command_timeout_s); its process group was killed"
                elif marker.exists():
                    why = "cancelled: the search was cancelled while the command ran; its process group was killed"
                elif parent is not None and os.getppid() != parent:
                    why = "the search's process went away; the command's process group was killed"
                if why:
                    _kill_group(proc)
                    return proc.returncode, why
        finally:
            if proc.poll() is None:  # an interrupt (Ctrl-C, SIGTERM) of this process
                _kill_group(proc)
    if proc.returncode != 0:
        return proc.returncode, f"the command exited with status {proc.returncode}: {cmd}"
    return 0, ""
