"""The built-in n-gram proxy as a command proxy, for bench/bench_command.py: `ngram_command.py {job}`
trains and scores the job's mixture with climb_core and writes result.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from climb_core.config import ProxyConfig, TargetSpec
    from climb_core.proxy.job import run_proxy_job
    from climb_core.proxy.types import ProxyJob

    d = Path(sys.argv[1])
    job = json.loads((d / "job.json").read_text())
    proxy = ProxyConfig(**{**job["proxy"], "kind": "ngram"})
    pj = ProxyJob(workspace=str(d.parents[2]), search_id=job["search_id"], run_id=job["run_id"], round=job["round"],
                  cluster_ids=[c["id"] for c in job["clusters"]], weights=[c["weight"] for c in job["clusters"]],
                  seed=job["seed"], proxy=proxy, targets=[TargetSpec(**t) for t in job["targets"]])
    r = run_proxy_job(pj)
    (d / "result.json").write_text(json.dumps({"score": r.score, "metrics": r.scores}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
