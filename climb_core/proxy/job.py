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


def _context(job: ProxyJob) -> tuple[list, dict[str, Any]]:
    from climb_core import stages
    from climb_core.targets import load_targets
    from climb_core.tokens import cluster_token_files, load_tokenizer, tokenizer_hash
    from climb_core.workspace import Workspace

    ws = Workspace.open(job.workspace)
    files = cluster_token_files(ws)  # also refuses stale token files
    # The tokens stage's fingerprint changes whenever the files do ('cluster:' targets read them).
    tokens_fp = stages.stage_record(ws, "tokens").fingerprint
    thash = tokenizer_hash(ws.tokens_dir / "tokenizer.json")
    targets_key = json.dumps([dataclasses.asdict(s) for s in job.targets], sort_keys=True)
    key = (str(ws.root), f"{thash}:{tokens_fp}", targets_key)
    if key not in _CACHE:
        while len(_CACHE) >= 4:  # a long-lived worker outlives many searches; keep the recent ones
            _CACHE.pop(next(iter(_CACHE)))
        tokenizer = load_tokenizer(ws)
        _CACHE[key] = {"tokenizer": tokenizer, "targets": load_targets(ws, job.targets, tokenizer)}
    return files, _CACHE[key]


def run_proxy_job(job: ProxyJob) -> ProxyResult:
    t0 = time.perf_counter()
    files, ctx = _context(job)
    # From here on no DuckDB connection is open: training reads only the memmaps.
    data = MixtureData.from_token_files(files, job.cluster_ids, job.weights, ctx["tokenizer"].get_vocab_size())
    proxy = train_proxy(job.proxy, data, job.seed)

    from climb_core.targets import evaluate_targets

    score, scores = evaluate_targets(proxy, ctx["targets"], job.targets)
    if not np.isfinite(score):
        raise RuntimeError(f"proxy run {job.run_id} scored {score}; the proxy diverged (lower proxy.learning_rate)")
    return ProxyResult(run_id=job.run_id, score=float(score), scores={k: float(v) for k, v in scores.items()},
                       loss_curve=[float(x) for x in proxy.loss_curve], epochs=proxy.epochs,
                       tokens=int(proxy.tokens_seen), wall_s=time.perf_counter() - t0, host=socket.gethostname())
