"""One proxy run: train on a mixture, score on the target. What every executor's worker calls."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from typing import Any

import numpy as np

from climb_core.proxy.train import MixtureData, train_proxy
from climb_core.proxy.types import ProxyJob, ProxyResult

# A worker process runs many jobs of one search: the tokenizer and the tokenised targets are built
# once per (workspace, token files, targets) and reused.
_CACHE: dict[tuple[str, str, str], dict[str, Any]] = {}
# Verified token-file lists per (workspace, catalogue stamp): checking that the files are current
# costs ~15 catalogue reads (~0.2 s); the stamp is one read and changes with any stage, cluster or edit.
_FILES: dict[tuple[str, str], tuple[list, str]] = {}
_WORKSPACES: dict[str, Any] = {}
_STAMPS: dict[str, tuple[str, float]] = {}
STAMP_TTL_S = 2.0

_STAMP_SQL = """
    SELECT coalesce((SELECT string_agg(stage || ':' || coalesce(fingerprint, '') || ':' || coalesce(status, '') || ':'
                                       || coalesce(CAST(finished_at AS VARCHAR), ''), ',' ORDER BY stage) FROM stages), '')
        || '|' || coalesce((SELECT string_agg(cluster_id || ':' || state, ',' ORDER BY cluster_id) FROM clusters), '')
        || '|' || (SELECT count(*) FROM edits) || '|' || (SELECT count(*) FROM token_shards)"""


def job_inputs(job: ProxyJob) -> tuple[list, dict[str, Any]]:
    from climb_core.catalogue import stages
    from climb_core.catalogue.workspace import Workspace
    from climb_core.pipeline.tokens import cluster_token_files, load_tokenizer, tokenizer_hash
    from climb_core.proxy.targets import load_targets

    root = str(job.workspace)
    if root not in _WORKSPACES:
        _WORKSPACES[root] = Workspace.open(job.workspace)
    ws = _WORKSPACES[root]
    # The stamp is re-read at most every STAMP_TTL_S: an edit made within that window is no more
    # missed than one made while a proxy trains, which no check before training can see either.
    now = time.monotonic()
    seen = _STAMPS.get(root)
    if seen is None or now - seen[1] > STAMP_TTL_S:
        seen = (str(ws.scalar(_STAMP_SQL)), now)
        _STAMPS[root] = seen
    stamp = seen[0]
    cached = _FILES.get((root, stamp))
    if cached is None:
        files = cluster_token_files(ws)  # also refuses stale token files
        # The tokens stage's fingerprint changes whenever the files do ('cluster:' targets read them).
        tokens_fp = stages.stage_record(ws, "tokens").fingerprint
        cached = (files, f"{tokenizer_hash(ws.tokens_dir / 'tokenizer.json')}:{tokens_fp}")
        _FILES.clear()
        _FILES[(root, stamp)] = cached
    files, files_key = cached
    targets_key = json.dumps([[dataclasses.asdict(s) for s in job.targets], list(job.lm_eval_include)], sort_keys=True)
    key = (str(ws.root), files_key, targets_key)
    if key not in _CACHE:
        while len(_CACHE) >= 4:  # a long-lived worker outlives many searches; keep the recent ones
            _CACHE.pop(next(iter(_CACHE)))
        tokenizer = load_tokenizer(ws)
        _CACHE[key] = {"tokenizer": tokenizer, "targets": load_targets(ws, job.targets, tokenizer, job.lm_eval_include)}
    return files, _CACHE[key]


def run_proxy_job(job: ProxyJob) -> ProxyResult:
    if job.proxy.kind == "command":
        from climb_core.proxy.command import run_command_job

        return run_command_job(job)
    t0 = time.perf_counter()
    files, ctx = job_inputs(job)
    # From here on no DuckDB connection is open: training reads only the memmaps.
    data = MixtureData.from_token_files(files, job.cluster_ids, job.weights, ctx["tokenizer"].get_vocab_size(),
                                             job.pool_fraction)
    proxy = train_proxy(job.proxy, data, job.seed)
    result = job_result(job, proxy, ctx)
    result.wall_s = time.perf_counter() - t0
    return result


def job_result(job: ProxyJob, proxy, ctx: dict[str, Any]) -> ProxyResult:
    """A trained proxy scored on the job's targets (wall_s left to the caller)."""
    from climb_core.proxy.targets import evaluate_targets

    score, scores = evaluate_targets(proxy, ctx["targets"], job.targets)
    if not np.isfinite(score):
        raise RuntimeError(f"proxy run {job.run_id} scored {score}; the proxy diverged (lower proxy.learning_rate)")
    return ProxyResult(run_id=job.run_id, score=float(score), scores={k: float(v) for k, v in scores.items()},
                       loss_curve=[float(x) for x in proxy.loss_curve], epochs=proxy.epochs,
                       tokens=int(proxy.tokens_seen), host=socket.gethostname())
