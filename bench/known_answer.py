"""A search problem with a known answer, on real text: shared by bench_search_quality.py and studies.

The workspace is built by the real pipeline (ingest, MiniLM embeddings, k-means, refine, tokens)
from a labelled sample of ../shared/data/pool. For a chosen domain, the target is held-out text of
that domain (documents never ingested), so the right answer is known in kind: weight the clusters
that hold that domain's documents. Three reference mixtures make it a number:
  natural      the token prior (training on the corpus as it is);
  domain       that domain's clusters (majority of their tokens from it) at natural proportions;
  share        every cluster weighted by its token share from the domain;
the last two projected onto the search's constraint set (caps), so every reference is a mixture the
search itself was allowed to propose. A strategy's result is the fraction of the best reference's
gain over natural that its final mixture achieves, each mixture scored as the mean of fresh proxy
seeds the search never used.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from climb_core.catalogue.workspace import Workspace  # noqa: E402
from climb_core.config import ClimbConfig, TargetSpec, with_overrides  # noqa: E402

POOL = REPO.parent / "shared" / "data" / "pool"
DOMAINS = ["encyclopedia", "legal", "literature", "news", "political_speech", "reviews",
           "science_abstracts", "usenet"]
DOCS_PER_DOMAIN = 400
HELDOUT_PER_DOMAIN = 80
EVAL_SEED_BASE = 900_000  # proxy seeds for scoring finals; far from any seed a search draws


@dataclass
class Problem:
    ws: Workspace
    domain: str
    target: TargetSpec
    cluster_ids: list[int]
    prior: np.ndarray
    domain_share: np.ndarray  # per cluster: share of its tokens from `domain`


def pipeline_config() -> ClimbConfig:
    # The references are mixtures scored at the proxy's scale, where repeating a small cluster costs
    # nothing: no repetition cap and no final-scale pools here, which could only handicap the search
    # against them, and the constrained-optimum final the published table was measured with.
    # `bench_search_quality.py --final-multiple` measures the final-scale rules (docs/BENCHMARKS.md).
    return with_overrides(ClimbConfig(), {
        "embed.max_seq_length": 128, "cluster.k": 48, "merge.target_clusters": 16,
        "prune.min_size": 3, "prune.min_quality": 0.0, "proxy.kind": "ngram", "proxy.tokens": 200_000,
        "mixture.max_epochs": 0, "proxy.final_repetition": False, "search.final_top_k": 0})


def _sample_pool(out_dir: Path, seed: int = 0) -> tuple[Path, dict[str, Path]]:
    """corpus.jsonl (labelled sample) and one held-out JSONL per domain, disjoint by construction."""
    rng = np.random.default_rng(seed)
    corpus = out_dir / "corpus.jsonl"
    heldout: dict[str, Path] = {}
    with corpus.open("w", encoding="utf-8") as out:
        for domain in DOMAINS:
            with gzip.open(POOL / f"{domain}.jsonl.gz", "rt", encoding="utf-8") as fh:
                recs = [json.loads(line) for line in fh]
            order = rng.permutation(len(recs))
            n_hold = min(HELDOUT_PER_DOMAIN, len(recs) // 4)
            hold, keep = order[:n_hold], order[n_hold:n_hold + DOCS_PER_DOMAIN]
            for i in keep:
                r = recs[i]
                out.write(json.dumps({"id": r["id"], "text": r["text"], "domain": r["domain"]}) + "\n")
            heldout[domain] = out_dir / f"heldout-{domain}.jsonl"
            with heldout[domain].open("w", encoding="utf-8") as h:
                for i in hold:
                    h.write(json.dumps({"text": recs[i]["text"]}) + "\n")
    return corpus, heldout


def build_workspace(cache: Path, progress: bool = True) -> Workspace:
    """The benchmark's workspace, built once under `cache` and reused (delete the folder to rebuild)."""
    from climb_core.pipeline.run import run_all
    from climb_core.pipeline.tokens import run_tokens

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not POOL.exists():
        raise SystemExit(f"{POOL} not found: this benchmark needs ../shared/data beside the repository")
    ready = cache / "READY"
    ws_dir = cache / "ws"
    if ready.exists():
        return Workspace.open(ws_dir)
    cache.mkdir(parents=True, exist_ok=True)
    corpus, _ = _sample_pool(cache)
    config = pipeline_config()
    config.ingest.paths = [str(corpus)]
    ws = Workspace.init(ws_dir, config)
    run_all(ws, config, progress=progress)
    run_tokens(ws, config, progress=progress)
    ready.write_text("ok")
    return ws


def domain_shares(ws: Workspace, cluster_ids: list[int]) -> dict[str, np.ndarray]:
    """Per domain, each cluster's share of its (estimated) tokens that come from that domain."""
    df = ws.query_df("""
        SELECT dc.cluster_id, json_extract_string(d.meta_json, '$.domain') AS domain, sum(s.n_tokens_est) AS t
        FROM doc_clusters dc JOIN documents d USING (doc_idx) JOIN doc_stats s USING (doc_idx)
        GROUP BY ALL""")
    tot = df.groupby("cluster_id")["t"].sum()
    out = {}
    for domain in DOMAINS:
        sub = df[df["domain"] == domain].set_index("cluster_id")["t"]
        out[domain] = np.array([float(sub.get(c, 0.0)) / float(tot.get(c, 1.0)) for c in cluster_ids])
    return out


def problem(ws: Workspace, cache: Path, domain: str) -> Problem:
    from climb_core.pipeline.tokens import token_prior

    ids, prior = token_prior(ws)
    target = TargetSpec(kind="text", path=str(cache / f"heldout-{domain}.jsonl"), name=f"heldout-{domain}",
                        metric="neg_bpb", max_items=HELDOUT_PER_DOMAIN)
    return Problem(ws, domain, target, list(ids), np.asarray(prior), domain_shares(ws, list(ids))[domain])


def references(p: Problem, config: ClimbConfig, blends: tuple[float, ...] = ()) -> dict[str, np.ndarray]:
    """natural, domain (majority clusters at natural proportions) and share, within the constraints;
    with `blends`, also a x domain + (1 - a) x natural for each a: at a final scale where the domain's
    clusters would repeat, the best known mixture lies between the two."""
    from climb_core.search.constraints import constraints_for

    cons = constraints_for(config.mixture, p.prior, p.cluster_ids)
    major = p.domain_share >= 0.5
    if not major.any():
        major = p.domain_share == p.domain_share.max()
    dom = np.where(major, p.prior, 0.0)
    share = p.prior * p.domain_share
    natural = p.prior / p.prior.sum()
    out = {"natural": natural, "domain": cons.project(dom / dom.sum()), "share": cons.project(share / share.sum())}
    for a in blends:
        out[f"blend{a:g}"] = cons.project(a * out["domain"] + (1 - a) * natural)
    return out


def score_mixture(p: Problem, config: ClimbConfig, weights, seeds: int = 3, base: int = EVAL_SEED_BASE) -> float:
    """Mean target score of `weights` over `seeds` fresh proxy trainings (in this process)."""
    from climb_core.proxy.job import run_proxy_job
    from climb_core.proxy.types import ProxyJob

    vals = []
    for s in range(seeds):
        job = ProxyJob(workspace=str(p.ws.root), search_id="bench", run_id=f"eval-{s}", round=0,
                       cluster_ids=list(p.cluster_ids), weights=[float(x) for x in weights], seed=base + s,
                       proxy=config.proxy, targets=[p.target])
        vals.append(run_proxy_job(job).score)
    return float(np.mean(vals))
