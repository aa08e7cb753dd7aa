"""Runs trained elsewhere, imported as a finished search (strategy `imported`), and a search's runs
exported in the same shape (`climb runs WS --search ID --csv`), so runs round-trip.

The table: one weight column per cluster, named by its id (`3`) or its label, and a `score` column;
other numeric columns are kept as the run's metrics; `run_id`, `round`, `idx`, `purpose` and `seed`
are read when present. With a map (`--map`), weight columns are the user's domain names instead,
each mapped to one or more clusters: domains mapped to one cluster add; a domain mapped to several
is shared among them by their token prior.

An import states its runs' settings: it records the workspace's config (with any --target given)
as the target and proxy they were scored with, which a warm start compares against its own.
Everything is validated before anything is written, and the search and its runs are written in one
transaction: nothing is ever half-imported.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.search.records import SearchError, timestamp, ws_tx

SUM_TOL = 1e-3
META_COLUMNS = ("run_id", "round", "idx", "purpose", "seed", "status", "search_id")


class RunsImportError(SearchError):
    """A runs file that cannot be imported, with what is wrong in it and where."""


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV, JSONL (or JSON records) or Parquet file as a DataFrame, with string column names."""
    path = Path(path)
    if not path.exists():
        raise RunsImportError(f"{path}: no such file")
    name = path.name.lower()
    try:
        if name.endswith(".parquet") or name.endswith(".pq"):
            df = pd.read_parquet(path)
        elif name.endswith(".jsonl") or name.endswith(".ndjson"):
            df = pd.read_json(path, lines=True)
        elif name.endswith(".json"):
            df = pd.read_json(path)
        elif name.endswith(".csv") or name.endswith(".tsv"):
            df = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
        else:
            raise RunsImportError(f"{path}: unknown format; use .csv, .tsv, .jsonl or .parquet")
    except RunsImportError:
        raise
    except Exception as err:  # noqa: BLE001 - the reader's own message names the problem
        raise RunsImportError(f"{path}: cannot be read: {err}") from err
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_map(path: str | Path, active: dict[int, str]) -> dict[str, list[int]]:
    """The user's domain names -> clusters. JSON {"domain": id | label | [ids]}, or a CSV/JSONL with
    columns domain and cluster (one row per pair; a domain on several rows goes to several clusters)."""
    path = Path(path)
    if not path.exists():
        raise RunsImportError(f"--map {path}: no such file")
    pairs: list[tuple[str, Any]] = []
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text())
        except ValueError as err:
            raise RunsImportError(f"--map {path}: not valid JSON: {err}") from err
        if not isinstance(raw, dict):
            raise RunsImportError(f'--map {path}: expected an object {{"domain": cluster or [clusters]}}')
        for dom, v in raw.items():
            for c in (v if isinstance(v, list) else [v]):
                pairs.append((str(dom), c))
    else:
        df = read_table(path)
        if not {"domain", "cluster"} <= set(df.columns):
            raise RunsImportError(f"--map {path}: needs columns 'domain' and 'cluster'; found {list(df.columns)}")
        pairs = [(str(d), c) for d, c in zip(df["domain"], df["cluster"])]
    by_label = {lab: c for c, lab in active.items() if lab}
    out: dict[str, list[int]] = {}
    bad = []
    for dom, c in pairs:
        cid = _cluster_of(str(c), active, by_label)
        if cid is None:
            bad.append(f"{dom} -> {c}")
        else:
            out.setdefault(dom, [])
            if cid not in out[dom]:
                out[dom].append(cid)
    if bad:
        raise RunsImportError(f"--map {path}: unknown or inactive cluster(s): {', '.join(bad[:10])}; "
                           f"active clusters are {_list_clusters(active)}")
    return out


def _cluster_of(name: str, active: dict[int, str], by_label: dict[str, int]) -> int | None:
    s = name.strip()
    if s.lstrip("-").isdigit():
        return int(s) if int(s) in active else None
    if s.endswith(".0") and s[:-2].isdigit():  # 3.0 from a spreadsheet
        return int(s[:-2]) if int(s[:-2]) in active else None
    return by_label.get(s)


def _list_clusters(active: dict[int, str], n: int = 12) -> str:
    items = [f"#{c}" + (f" {lab!r}" if lab else "") for c, lab in sorted(active.items())]
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def parse_runs(df: pd.DataFrame, active: dict[int, str], prior: dict[int, float],
               domain_map: dict[str, list[int]] | None = None, source: str = "file") -> dict[str, Any]:
    """Validate a runs table and return {weights (n x k over sorted active ids), score, metrics, meta}.
    Raises RunsImportError naming every problem found (up to a few rows each)."""
    ids = sorted(active)
    col = {c: j for j, c in enumerate(ids)}
    if "score" not in df.columns:
        raise RunsImportError(f"{source}: no 'score' column (found {', '.join(df.columns[:20])}); "
                           f"the score each run reached is required")
    if df.empty:
        raise RunsImportError(f"{source}: no rows")
    by_label = {lab: c for c, lab in active.items() if lab}
    problems: list[str] = []
    weight_cols: dict[str, list[tuple[int, float]]] = {}  # column -> [(cluster, share)]
    unknown = []
    if domain_map is not None:
        missing = [d for d in domain_map if d not in df.columns]
        if missing:
            problems.append(f"the map's domain(s) {missing[:10]} have no column")
        for dom, cids in domain_map.items():
            if dom in df.columns:
                p = np.array([max(prior.get(c, 0.0), 1e-12) for c in cids])
                weight_cols[dom] = list(zip(cids, (p / p.sum()).tolist()))
    else:
        for name in df.columns:
            if name == "score" or name in META_COLUMNS:
                continue
            cid = _cluster_of(name, active, by_label)
            if cid is not None:
                weight_cols[name] = [(cid, 1.0)]
            elif name.lstrip("-").isdigit():
                unknown.append(name)
        if unknown:
            problems.append(f"unknown or inactive cluster column(s) {unknown[:10]}; active clusters are "
                            f"{_list_clusters(active)}")
        covered = {c for pairs in weight_cols.values() for c, _ in pairs}
        missing = [c for c in ids if c not in covered]
        if missing and not unknown:
            problems.append(f"no weight column for cluster(s) {_list_clusters({c: active[c] for c in missing})}: every "
                            f"active cluster needs one (0 for an unused cluster), named by id or label, or pass "
                            f"--map to map other domain names to clusters")
    if problems:
        raise RunsImportError(f"{source}: " + "; ".join(problems))
    raw = df[list(weight_cols)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    score = pd.to_numeric(df["score"], errors="coerce").to_numpy(dtype=np.float64)
    rows = lambda mask: ", ".join(str(i + 2) for i in np.flatnonzero(mask)[:8])  # noqa: E731 - file line (header is 1)
    if np.isnan(raw).any():
        problems.append(f"missing or non-numeric weights on line(s) {rows(np.isnan(raw).any(axis=1))}")
    if (~np.isfinite(score)).any():
        problems.append(f"missing, non-numeric or infinite score on line(s) {rows(~np.isfinite(score))}")
    if (raw < 0).any():
        problems.append(f"negative weights on line(s) {rows((raw < 0).any(axis=1))}")
    sums = np.nansum(raw, axis=1)
    off = np.abs(sums - 1.0) > SUM_TOL
    if off.any():
        first = int(np.flatnonzero(off)[0])
        problems.append(f"weights do not sum to 1 (within {SUM_TOL:g}) on line(s) {rows(off)} "
                        f"(line {first + 2} sums to {sums[first]:.6f})")
    if problems:
        raise RunsImportError(f"{source}: " + "; ".join(problems))
    W = np.zeros((len(df), len(ids)))
    for j, name in enumerate(weight_cols):
        for c, share in weight_cols[name]:
            W[:, col[c]] += raw[:, j] * share
    W /= W.sum(axis=1, keepdims=True)
    metric_cols = [c for c in df.columns if c not in weight_cols and c != "score" and c not in META_COLUMNS
                   and pd.api.types.is_numeric_dtype(df[c])]
    metrics = [{c: float(v) for c in metric_cols if (v := df[c].iloc[i]) is not None and math.isfinite(float(v))}
               for i in range(len(df))]
    return {"ids": ids, "weights": W, "score": score, "metrics": metrics, "meta": df[[c for c in META_COLUMNS if c in df]]}


def import_runs(ws: Workspace, path: str | Path, *, config: ClimbConfig | None = None, name: str | None = None,
                map_path: str | Path | None = None, search_id: str | None = None) -> str:
    """Import a runs file as a finished search of strategy `imported`; returns its id."""
    from climb_core.search.create import cluster_prior, new_search_id

    config = config or ws.load_config()
    active_df = ws.query_df("SELECT cluster_id, coalesce(label, auto_label, '') AS label, created_edit FROM clusters "
                            "WHERE state = 'active' ORDER BY cluster_id")
    if active_df.empty:
        raise RunsImportError(f"{ws.root} has no active clusters to import runs over; run `climb refine {ws.root}` first")
    active = {int(c): str(lab) for c, lab in zip(active_df["cluster_id"], active_df["label"])}
    pids, pvals = cluster_prior(ws)
    prior = {int(c): float(p) for c, p in zip(pids, pvals)}
    dmap = read_map(map_path, active) if map_path else None
    parsed = parse_runs(read_table(path), active, prior, dmap, source=str(path))
    ids, W, score = parsed["ids"], parsed["weights"], parsed["score"]
    meta = parsed["meta"]
    n = len(score)
    sid = search_id or new_search_id()
    if ws.scalar("SELECT count(*) FROM searches WHERE search_id = ?", [sid]):
        raise RunsImportError(f"a search {sid!r} already exists")
    now = timestamp()
    cfg = config.to_dict()
    cfg.setdefault("search", {})
    cfg["search"].update(budget=n)  # the strategy is the row's: `imported` is no config choice
    best = int(np.argmax(score))
    run_ids = [f"{sid}-r1-{i:03d}" for i in range(n)]
    seeds = (pd.to_numeric(meta["seed"], errors="coerce").fillna(0).astype("int64").tolist()
             if "seed" in meta else [0] * n)
    best_run = {"run_id": run_ids[best], "score": float(score[best]), "weights": [float(v) for v in W[best]]}
    final = {"weights": best_run["weights"], "predicted": None, "predicted_sd": None, "how": "best imported run",
             "chosen": "best_run", "best_run": best_run, "verified_scores": [], "verified": best_run["score"],
             "note": "", "stage": "done", "imported_from": str(path)}
    created = dict(zip(active_df["cluster_id"].astype(int), active_df["created_edit"]))
    runs = pd.DataFrame({
        "search_id": sid, "run_id": run_ids, "round": 1, "idx": np.arange(n, dtype=np.int32),
        "weights": [list(map(float, w)) for w in W], "seed": seeds, "tokens": int(config.proxy.tokens),
        "status": "done", "score": score.astype(float), "purpose": "explore",
        "scores_json": [json.dumps({"score": float(s), **m}) for s, m in zip(score, parsed["metrics"])],
        "proposed_at": now, "finished_at": now,
        "source_run": [str(r) for r in meta["run_id"]] if "run_id" in meta else None,
    })
    label = name or f"imported {Path(path).name}"
    with ws_tx(ws) as con:
        con.execute(
            """INSERT INTO searches (search_id, name, strategy, status, config_json, target_json, cluster_ids,
                   cluster_labels, prior, created_at, updated_at, message, final_weights, best_run_id, final_json,
                   cluster_created)
               VALUES (?, ?, 'imported', 'done', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [sid, label, json.dumps(cfg), json.dumps([dict(vars(s)) for s in config.target.specs]), ids,
             [active[c] for c in ids], [prior.get(c, 0.0) for c in ids], now, now,
             f"done: {n} runs imported from {Path(path).name}", best_run["weights"], best_run["run_id"],
             json.dumps(final), [None if pd.isna(created[c]) else int(created[c]) for c in ids]])
        con.register("imp_runs", runs)
        con.execute("""INSERT INTO proxy_runs (search_id, run_id, round, idx, weights, seed, tokens, status, score,
                           purpose, scores_json, proposed_at, finished_at, source_run)
                       SELECT search_id, run_id, round, idx, weights::DOUBLE[], seed, tokens, status, score, purpose,
                           scores_json, proposed_at, finished_at, source_run FROM imp_runs""")
        con.unregister("imp_runs")
    return sid


def runs_csv(ws: Workspace, search_id: str) -> str:
    """A search's own finished runs as CSV: run_id, round, purpose, seed, one weight column per
    cluster (named by id), score, then every metric in the runs' scores. `import_runs` reads it back."""
    from climb_core.search.records import load_search

    row = load_search(ws, search_id)
    ids = [int(c) for c in row["cluster_ids"]]
    runs = ws.query_df("""SELECT run_id, round, coalesce(purpose, 'explore') AS purpose, seed, weights, score, scores_json
                          FROM proxy_runs WHERE search_id = ? AND status = 'done'
                          AND coalesce(purpose, 'explore') <> 'warm' ORDER BY round, idx""", [search_id])
    metrics: list[str] = []
    parsed = []
    for raw in runs["scores_json"]:
        d = json.loads(raw) if isinstance(raw, str) and raw else {}
        d = {k: v for k, v in d.items() if k != "score" and isinstance(v, (int, float))}
        parsed.append(d)
        metrics += [k for k in d if k not in metrics]
    # A metric named like a weight or meta column would be read back as one: those are prefixed.
    taken = {str(c) for c in ids} | set(META_COLUMNS) | {"score"} | set(list(row["cluster_labels"]) if row["cluster_labels"] is not None else [])
    names = {m: (f"metric:{m}" if m in taken else m) for m in metrics}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run_id", "round", "purpose", "seed", *map(str, ids), "score", *names.values()])
    for r, d in zip(runs.itertuples(index=False), parsed):
        w.writerow([r.run_id, int(r.round), r.purpose, int(r.seed), *(repr(float(x)) for x in r.weights),
                    repr(float(r.score)), *("" if d.get(m) is None else repr(float(d[m])) for m in metrics)])
    return buf.getvalue()
