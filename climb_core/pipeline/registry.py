"""The stages, in the order data flows through them: the one table that run-all's order, each stage's
upstream fingerprints, the dashboard's stage jobs and the `climb` stage commands are all built from.

A stage's function is named, not imported, so that reading the table (`climb status`, the
dashboard) does not load torch; `stage_function` imports it on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    run: str                        # "module:function", called as fn(ws, config, force=, progress=)
    upstream: tuple[str, ...]       # stages whose fingerprints chain into this one's
    sections: tuple[str, ...]       # the config sections it reads
    help: str
    in_run_all: bool = True
    # Stages whose outputs it reads, when more than `upstream`: re-running one makes it stale.
    reads: tuple[str, ...] | None = None


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "climb_core.pipeline.ingest:run_ingest", (), ("ingest",),
          "read the corpus: documents, statistics, quality, rejected records"),
    Stage("embed", "climb_core.pipeline.embed:run_embed", ("ingest",), ("embed",),
          "embed every document (resumable shards)"),
    Stage("cluster", "climb_core.pipeline.cluster:run_cluster", ("ingest", "embed"), ("cluster",),
          "k-means the embeddings"),
    Stage("refine", "climb_core.pipeline.refine:run_refine", ("cluster",), ("prune", "merge"),
          "prune low-quality clusters and merge near-duplicates (resets edits)"),
    Stage("describe", "climb_core.pipeline.describe:run_describe", ("refine",), ("describe",),
          "keywords, representatives and labels per cluster"),
    Stage("map", "climb_core.pipeline.map:run_map", ("embed", "refine"), ("map",),
          "2-D UMAP of the embeddings"),
    # Searches run it on demand, against the clusters as edited since run-all; its fingerprint
    # covers the clusters' state itself rather than an upstream stage's.
    Stage("tokens", "climb_core.pipeline.tokens:run_tokens", (), ("tokenizer",),
          "train the tokenizer and tokenise each active cluster", in_run_all=False, reads=("ingest", "refine")),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
STAGE_NAMES: list[str] = [s.name for s in STAGES]
PIPELINE: list[str] = [s.name for s in STAGES if s.in_run_all]
UPSTREAM: dict[str, list[str]] = {s.name: list(s.upstream) for s in STAGES}
# What each stage's outputs are built on, upstream first: a stage is stale once one of these re-ran.
READS: dict[str, list[str]] = {s.name: list(s.upstream if s.reads is None else s.reads) for s in STAGES}


def stage_function(stage: str) -> Callable[..., Any]:
    if stage not in BY_NAME:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_NAMES)}")
    module, _, name = BY_NAME[stage].run.partition(":")
    return getattr(importlib.import_module(module), name)
