"""The contract between the search (which proposes mixtures) and the proxy runs (which score them).

A `ProxyJob` is plain data so it can cross a process or Ray boundary; a worker turns it into a
`ProxyResult` with `climb_core.proxy.job.run_proxy_job`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from climb_core.config import ProxyConfig, TargetSpec


@dataclass
class ProxyJob:
    workspace: str                 # workspace folder (workers open their own short-lived connections)
    search_id: str
    run_id: str
    round: int
    cluster_ids: list[int]         # the clusters the weights refer to, in order
    weights: list[float]           # one per cluster, sums to 1
    seed: int
    proxy: ProxyConfig
    targets: list[TargetSpec]
    lm_eval_include: list[str] = field(default_factory=list)  # task YAML folders of the user's own (target.lm_eval_include)
    # Share of each cluster the run may draw from: proxy tokens / final tokens with
    # proxy.final_repetition, so the proxy repeats each cluster as often as the final model will.
    pool_fraction: float = 1.0


@dataclass
class ProxyResult:
    run_id: str
    score: float                   # the combined target score the search maximises
    scores: dict[str, float]       # every metric of every target component
    loss_curve: list[float] = field(default_factory=list)
    epochs: dict[int, float] = field(default_factory=dict)  # cluster id -> times its tokens were repeated
    tokens: int = 0
    wall_s: float = 0.0
    host: str = ""
