"""A new search: its config checked, the active clusters' prior and token counts, its row recorded."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.search.acquisition import ACQUISITIONS
from climb_core.search.constraints import ConstraintError, constraints_for
from climb_core.search.predictors.select import PREDICTORS
from climb_core.search.records import SearchError, timestamp, ws_tx
from climb_core.search.sampling import DESIGNS
from climb_core.search.strategies import STRATEGIES


def estimated_prior(ws: Workspace) -> tuple[list[int], np.ndarray]:
    """Token shares of the active clusters from doc_stats.n_tokens_est (no tokenizer needed)."""
    with ws.connect() as con:
        rows = con.execute(
            """SELECT c.cluster_id, coalesce(sum(s.n_tokens_est), 0) AS t
               FROM clusters c LEFT JOIN doc_clusters dc ON dc.cluster_id = c.cluster_id
               LEFT JOIN doc_stats s ON s.doc_idx = dc.doc_idx
               WHERE c.state = 'active' GROUP BY c.cluster_id ORDER BY c.cluster_id""").fetchall()
    ids = [int(r[0]) for r in rows]
    t = np.array([float(r[1]) for r in rows])
    if not ids:
        return ids, t
    # A cluster without estimates still deserves a non-zero share, or the sampler could never pick it.
    t = np.maximum(t, 1.0)
    return ids, t / t.sum()


def cluster_prior(ws: Workspace) -> tuple[list[int], np.ndarray]:
    """The search's prior: real train-token shares when the tokens stage has run, else estimates.

    Tests monkeypatch this function to pin the prior."""
    has_tokens = ws.scalar("SELECT count(*) FROM token_shards") or 0
    if has_tokens:
        from climb_core.pipeline.tokens import token_prior

        ids, prior = token_prior(ws)
        return [int(i) for i in ids], np.asarray(prior, dtype=np.float64)
    return estimated_prior(ws)


def cluster_train_tokens(ws: Workspace, cluster_ids: list[int]) -> list[int] | None:
    """Training tokens per cluster (for the repetition cap), or None before the tokens stage."""
    if not (ws.scalar("SELECT count(*) FROM token_shards") or 0):
        return None
    from climb_core.pipeline.tokens import cluster_token_files

    n = {int(f.cluster_id): int(f.n_train) for f in cluster_token_files(ws)}
    return [n.get(int(c), 0) for c in cluster_ids]


def _check_config(config: ClimbConfig) -> None:
    s = config.search
    if s.strategy not in STRATEGIES:
        raise SearchError(f"unknown search.strategy {s.strategy!r}; use one of {', '.join(STRATEGIES)}")
    if s.predictor not in PREDICTORS:
        raise SearchError(f"unknown search.predictor {s.predictor!r}; use one of {', '.join(PREDICTORS)}")
    if s.acquisition not in ACQUISITIONS:
        raise SearchError(f"unknown search.acquisition {s.acquisition!r}; use one of {', '.join(ACQUISITIONS)}")
    eps = list(config.predictor.gp_eps) + list(config.predictor.gp_final_eps)
    if not config.predictor.gp_eps or not config.predictor.gp_final_eps or min(eps) <= 0:
        raise SearchError(f"predictor.gp_eps and predictor.gp_final_eps need at least one value, each > 0; got "
                          f"{config.predictor.gp_eps} and {config.predictor.gp_final_eps}")
    if s.initial_design not in DESIGNS:
        raise SearchError(f"unknown search.initial_design {s.initial_design!r}; use one of {', '.join(DESIGNS)}")
    if s.budget < 1:
        raise SearchError("search.budget must be at least 1 proxy run")
    if s.rounds < 0 or any(v <= 0 for v in s.round_split):
        raise SearchError(f"search.rounds must be >= 0 (0 = by budget) and search.round_split positive integers; "
                          f"got rounds {s.rounds}, round_split {list(s.round_split)}")


def new_search_id() -> str:
    return f"{timestamp():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def create_search(ws: Workspace, config: ClimbConfig, *, name: str | None = None, search_id: str | None = None,
                  warm_start: list[str] | tuple[str, ...] = (), warm_start_any: bool = False) -> str:
    """Record a new search: a snapshot of the active clusters, their labels and prior, and the config.

    `search_id` lets a caller (the dashboard) name the search before a worker process creates it.
    `warm_start`: searches (imported or earlier) whose finished runs join the predictor's training
    data from round 1, carried to the current clusters (see `climb_core.search.warm`); runs scored on
    other targets or proxy settings are refused unless `warm_start_any`.
    Every key, target and warm-start source is checked first, so a bad one is refused with nothing recorded."""
    from climb_core.config import validate
    from climb_core.proxy.targets import validate_targets

    validate(config)
    _check_config(config)
    validate_targets(ws, config.target.specs)
    strategy = config.search.strategy
    ids, prior = cluster_prior(ws)
    if not ids:
        raise SearchError(f"{ws.root} has no active clusters; run `climb refine {ws.root}` first")
    tokens = cluster_train_tokens(ws, ids)
    try:
        constraints_for(config.mixture, prior, ids, tokens, export_tokens=config.export.tokens)
    except ConstraintError as err:
        raise SearchError(f"the mixture constraints cannot be met: {err}") from err
    snap = ws.query_df("SELECT cluster_id, coalesce(label, auto_label, '') AS label, created_edit FROM clusters "
                       "WHERE state = 'active'")
    labels = dict(zip(snap["cluster_id"], snap["label"]))
    created = {int(c): (None if pd.isna(e) else int(e)) for c, e in zip(snap["cluster_id"], snap["created_edit"])}
    now = timestamp()
    search_id = search_id or new_search_id()
    if ws.scalar("SELECT count(*) FROM searches WHERE search_id = ?", [search_id]):
        raise SearchError(f"a search {search_id!r} already exists; continue it with --resume")
    name = name or config.search.name or f"{strategy} {now:%Y-%m-%d %H:%M}"
    target = [dict(vars(s)) for s in config.target.specs]
    config_json, target_json = json.dumps(config.to_dict()), json.dumps(target)
    warm_rows, warm = None, None
    if warm_start:
        from climb_core.search.warm import plan_warm_start

        warm_rows, warm = plan_warm_start(ws, config_json, target_json, ids, list(warm_start), warm_start_any)
    with ws_tx(ws) as con:
        con.execute(
            """INSERT INTO searches (search_id, name, strategy, status, config_json, target_json, cluster_ids,
                   cluster_labels, prior, cluster_tokens, created_at, updated_at, message, cluster_created, warm_json)
               VALUES (?, ?, ?, 'created', ?, ?, ?, ?, ?, ?, ?, ?, 'created', ?, ?)""",
            [search_id, name, strategy, config_json, target_json, ids,
             [str(labels.get(i, "")) for i in ids], [float(p) for p in prior], tokens, now, now,
             [created.get(int(i)) for i in ids], None if warm is None else json.dumps(warm)])
        if warm_rows is not None and len(warm_rows):
            _insert_warm_runs(con, search_id, warm_rows, now)
    return search_id


def _insert_warm_runs(con, search_id: str, rows: pd.DataFrame, now) -> None:
    """Warm runs as round-0 rows of the search: done, never trained, not in the budget."""
    df = rows.assign(search_id=search_id, run_id=[f"{search_id}-w-{i:04d}" for i in range(len(rows))],
                     idx=np.arange(len(rows), dtype=np.int32), proposed_at=now)
    con.register("warm_df", df)
    con.execute("""INSERT INTO proxy_runs (search_id, run_id, round, idx, weights, seed, tokens, status, score,
                       scores_json, purpose, proposed_at, finished_at, source_search, source_run, mapping)
                   SELECT search_id, run_id, 0, idx, weights::DOUBLE[], seed, tokens, 'done', score, scores_json,
                       'warm', proposed_at, finished_at, source_search, source_run, mapping FROM warm_df""")
    con.unregister("warm_df")
