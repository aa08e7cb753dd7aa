"""Read-only views of a workspace for the dashboard and `climb status`.

Every function opens one short-lived connection, runs its queries and returns plain pandas
DataFrames or dicts. Pages never write SQL: what they need to read is here; what they change goes
through the engine's edit, search and export functions.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace

DOC_STAT_COLUMNS = ["n_chars", "n_words", "n_tokens_est", "quality", "quality_heuristic", "quality_user",
                    "symbol_ratio", "digit_ratio", "repeated_line_frac", "dup_ngram_frac"]


def catalogue_version(ws: Workspace) -> tuple:
    """Changes whenever the catalogue file (or its write-ahead log) changes: a cache key for readers."""
    out = []
    for path in (ws.db_path, ws.db_path.with_name(ws.db_path.name + ".wal")):
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def _scalar(con, sql: str, params: list | None = None) -> Any:
    row = con.execute(sql, params or []).fetchone()
    return None if row is None else row[0]


# ------------------------------------------------------------------------------------ overview
def corpus_overview(ws: Workspace) -> dict[str, Any]:
    """Sizes of the corpus, rejected records by reason, the stages table, cluster counts, searches."""
    with ws.connect() as con:
        docs = int(_scalar(con, "SELECT count(*) FROM documents"))
        chars, tokens, quality = con.execute(
            "SELECT coalesce(sum(n_chars), 0), coalesce(sum(n_tokens_est), 0), avg(quality) FROM doc_stats").fetchone()
        rejected = con.execute(
            "SELECT reason, count(*) AS records FROM rejected GROUP BY reason ORDER BY records DESC, reason").df()
        stages = con.execute(
            "SELECT stage, status, started_at, finished_at, rows_in, rows_out, message, pid, pid_started FROM stages").df()
        states = dict(con.execute("SELECT state, count(*) FROM clusters GROUP BY state").fetchall())
        n_map = int(_scalar(con, "SELECT count(*) FROM map_coords"))
        n_edits = int(_scalar(con, "SELECT count(*) FROM edits WHERE NOT undone"))
        n_searches = int(_scalar(con, "SELECT count(*) FROM searches"))
        latest = con.execute(
            "SELECT search_id, name, strategy, status, message, created_at, updated_at, pid, pid_started FROM searches "
            "ORDER BY created_at DESC LIMIT 1").df()
    stages = _with_shown_status(stages)
    latest = _with_shown_search_status(latest)
    return {
        "documents": docs, "chars": int(chars), "tokens_est": int(tokens),
        "mean_quality": None if quality is None else float(quality),
        "rejected": rejected, "rejected_total": int(rejected["records"].sum()) if len(rejected) else 0,
        "stages": stages, "clusters": {k: int(v) for k, v in states.items()},
        "map_points": n_map, "edits": n_edits, "searches": n_searches,
        "latest_search": None if latest.empty else latest.iloc[0].to_dict(),
    }


def _with_shown_status(stages: pd.DataFrame) -> pd.DataFrame:
    """Stage rows with `status` as users should read it (a dead process's `running` is `interrupted`)."""
    from climb_core.catalogue.stages import shown_stage_status

    out = stages.drop(columns=["pid", "pid_started"])
    # object dtype even for no rows: an empty list would make a float column that "pending" cannot fill.
    out["status"] = pd.Series([shown_stage_status(r.status, r.pid, r.pid_started) for r in stages.itertuples()],
                              index=stages.index, dtype=object)
    return out


def _with_shown_search_status(searches: pd.DataFrame) -> pd.DataFrame:
    """Search rows with `status` as `climb runs` shows it (a dead worker's `running` is `interrupted`)."""
    from climb_core.catalogue.liveness import shown_status

    out = searches.drop(columns=["pid", "pid_started"])
    out["status"] = pd.Series([shown_status(r.status, r.pid, r.pid_started) for r in searches.itertuples()],
                              index=searches.index, dtype=object)
    return out


def stage_status(ws: Workspace) -> pd.DataFrame:
    """The pipeline's stages in order with their status (pending when never run; stale, with the
    reason and the command to run as its message, when a stage it reads ran again since)."""
    from climb_core.pipeline.registry import STAGE_NAMES
    from climb_core.pipeline.run import stale_message, stale_stages

    with ws.connect() as con:
        rec = con.execute("SELECT stage, status, finished_at, rows_in, rows_out, message, pid, pid_started FROM stages").df()
    rec = _with_shown_status(rec)
    order = STAGE_NAMES
    base = pd.DataFrame({"stage": order})
    out = base.merge(rec, on="stage", how="left")
    out["status"] = out["status"].fillna("pending")
    out["message"] = out["message"].astype(object)
    stale = stale_stages(ws)
    for stage, reason in stale.items():
        at = out["stage"] == stage
        out.loc[at, "status"] = "stale"
        out.loc[at, "message"] = stale_message(ws, stage, reason, len(stale) == 1)
    extra = rec[~rec["stage"].isin(order)]
    return pd.concat([out, extra], ignore_index=True) if len(extra) else out


def rejected_sample(ws: Workspace, reason: str | None = None, limit: int = 200) -> pd.DataFrame:
    sql = "SELECT source_file, source_line, doc_id, reason, detail, stage FROM rejected"
    params: list = []
    if reason:
        sql += " WHERE reason = ?"
        params.append(reason)
    with ws.connect() as con:
        return con.execute(sql + f" LIMIT {int(limit)}", params).df()


# ------------------------------------------------------------------------------------ clusters
def cluster_table(ws: Workspace, states: list[str] | None = None) -> pd.DataFrame:
    """One row per cluster: id, label, state, sizes, mean quality, keywords, reason, origins."""
    where = ""
    params: list = []
    if states:
        where = "WHERE state IN (" + ",".join("?" for _ in states) + ")"
        params = list(states)
    with ws.connect() as con:
        df = con.execute(f"""
            SELECT cluster_id, label, state, size_docs, size_tokens, mean_quality,
                   array_to_string(keywords, ', ') AS keywords, reason, auto_label, label_source,
                   parent_ids, merged_into
            FROM clusters {where} ORDER BY state = 'active' DESC, size_docs DESC NULLS LAST, cluster_id""", params).df()
    return df


def _centroid_matrix(con, state: str | None = "active") -> tuple[list[int], list[str], np.ndarray | None]:
    sql = "SELECT cluster_id, label, centroid FROM clusters WHERE centroid IS NOT NULL"
    if state:
        sql += f" AND state = '{state}'"
    rows = con.execute(sql).fetchall()
    if not rows:
        return [], [], None
    ids = [int(r[0]) for r in rows]
    labels = [r[1] for r in rows]
    dim = max(len(r[2]) for r in rows)
    mat = np.zeros((len(rows), dim), dtype=np.float32)
    for i, r in enumerate(rows):
        if len(r[2]) == dim:
            mat[i] = r[2]
    return ids, labels, mat


def nearest_clusters(ws: Workspace, cluster_id: int, k: int = 5) -> pd.DataFrame:
    """The active clusters whose centroids are most cosine-similar to this cluster's."""
    with ws.connect() as con:
        row = con.execute("SELECT centroid FROM clusters WHERE cluster_id = ?", [cluster_id]).fetchone()
        ids, labels, mat = _centroid_matrix(con)
    empty = pd.DataFrame(columns=["cluster_id", "label", "cosine"])
    if row is None or row[0] is None or mat is None or len(row[0]) != mat.shape[1]:
        return empty
    c = np.asarray(row[0], dtype=np.float32)
    norms = np.linalg.norm(mat, axis=1) * (np.linalg.norm(c) or 1.0)
    sims = mat @ c / np.where(norms == 0, 1.0, norms)
    df = pd.DataFrame({"cluster_id": ids, "label": labels, "cosine": sims})
    df = df[df["cluster_id"] != cluster_id].sort_values("cosine", ascending=False).head(k)
    return df.reset_index(drop=True)


def cluster_detail(ws: Workspace, cluster_id: int, n_random: int = 5, seed: int = 0,
                   preview_chars: int = 400) -> dict[str, Any]:
    """A cluster's row, its representatives and random documents (with previews), quality values, neighbours."""
    with ws.connect() as con:
        info = con.execute("SELECT * EXCLUDE (centroid) FROM clusters WHERE cluster_id = ?", [cluster_id]).df()
        reps = con.execute(f"""
            SELECT r.rank, r.doc_idx, r.distance, d.doc_id, left(d.text, {int(preview_chars)}) AS preview, s.quality
            FROM representatives r JOIN documents d USING (doc_idx) LEFT JOIN doc_stats s USING (doc_idx)
            WHERE r.cluster_id = ? ORDER BY r.rank""", [cluster_id]).df()
        rand = con.execute(f"""
            SELECT dc.doc_idx, d.doc_id, left(d.text, {int(preview_chars)}) AS preview, s.quality, s.n_words
            FROM doc_clusters dc JOIN documents d USING (doc_idx) LEFT JOIN doc_stats s USING (doc_idx)
            WHERE dc.cluster_id = ? ORDER BY hash(dc.doc_idx + ?) LIMIT {int(n_random)}""",
                           [cluster_id, int(seed)]).df()
        quality = con.execute(
            "SELECT s.quality FROM doc_clusters dc JOIN doc_stats s USING (doc_idx) WHERE dc.cluster_id = ?",
            [cluster_id]).df()["quality"].to_numpy()
        children = con.execute(
            "SELECT parent_id, child_id, op, edit_id FROM cluster_edges WHERE parent_id = ? OR child_id = ?",
            [cluster_id, cluster_id]).df()
    return {
        "info": None if info.empty else info.iloc[0].to_dict(),
        "representatives": reps, "random_docs": rand, "quality": quality,
        "nearest": nearest_clusters(ws, cluster_id), "lineage": children,
    }


def edit_log(ws: Workspace, limit: int = 200) -> pd.DataFrame:
    with ws.connect() as con:
        return con.execute(
            f"SELECT edit_id, ts, op, summary, undone, source FROM edits ORDER BY edit_id DESC LIMIT {int(limit)}").df()


# ------------------------------------------------------------------------------------ map and documents
def meta_fields(ws: Workspace, sample: int = 500) -> list[str]:
    """Field names found in documents' meta_json (e.g. `domain`, `source`), usable for colouring the map."""
    with ws.connect() as con:
        rows = con.execute(f"SELECT meta_json FROM documents WHERE meta_json IS NOT NULL LIMIT {int(sample)}").fetchall()
    keys: dict[str, int] = {}
    for (text,) in rows:
        try:
            obj = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(v, (str, int, float, bool)) or v is None:
                    keys[k] = keys.get(k, 0) + 1
    return sorted(keys)


def map_points(ws: Workspace, fields: list[str] | None = None, preview_chars: int = 80) -> pd.DataFrame:
    """Every projected document: doc_idx, x, y, cluster_id, label, state, quality, a short preview,
    plus the meta_json fields asked for (as text columns named `meta.<field>`)."""
    fields = fields or []
    cols = "".join(f", json_extract_string(d.meta_json, ?) AS \"meta.{i}\"" for i in range(len(fields)))
    params = [f'$."{f}"' for f in fields]
    with ws.connect() as con:
        df = con.execute(f"""
            SELECT m.doc_idx, m.x, m.y, dc.cluster_id, c.label, c.state, s.quality,
                   regexp_replace(left(d.text, {int(preview_chars)}), '\\s+', ' ', 'g') AS preview {cols}
            FROM map_coords m
            JOIN documents d USING (doc_idx)
            LEFT JOIN doc_clusters dc USING (doc_idx)
            LEFT JOIN clusters c ON c.cluster_id = dc.cluster_id
            LEFT JOIN doc_stats s USING (doc_idx)
            ORDER BY m.doc_idx""", params).df()
    return df.rename(columns={f"meta.{i}": f"meta.{f}" for i, f in enumerate(fields)})


def _map_filter(show_pruned: bool, region) -> tuple[str, list]:
    where, params = ["TRUE"], []
    if not show_pruned:
        where.append("coalesce(c.state, '') <> 'pruned'")
    if region is not None:
        x0, x1, y0, y1 = (float(v) for v in region)
        where.append("m.x BETWEEN ? AND ? AND m.y BETWEEN ? AND ?")
        params += [min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)]
    return " AND ".join(where), params


def map_sample(ws: Workspace, budget: int, fields: list[str] | None = None, *, show_pruned: bool = True,
               region: tuple[float, float, float, float] | None = None, include=(), seed: int = 0,
               preview_chars: int = 80) -> tuple[pd.DataFrame, int]:
    """The map points to draw: at most `budget` (plus the doc_idx in `include` that are in view), and
    how many map points are in view.

    Beyond the budget each cluster is sampled uniformly, in proportion to its size and with at least
    one point (so density within a cluster and small clusters both survive). `region` (x0, x1, y0, y1)
    limits the view to a rectangle: a zoomed view is drawn at full resolution once it holds at most
    `budget` points. Columns as `map_points`, plus `cluster_rank`: the cluster's rank by cluster_id
    among all clusters of the catalogue (stable across views, for colours)."""
    from climb_core.pipeline.map import stratified_sample

    fields = fields or []
    where, params = _map_filter(show_pruned, region)
    joins = """FROM map_coords m
            LEFT JOIN doc_clusters dc USING (doc_idx)
            LEFT JOIN clusters c ON c.cluster_id = dc.cluster_id"""
    with ws.connect() as con:
        light = con.execute(f"SELECT m.doc_idx, coalesce(dc.cluster_id, -1) AS cid {joins} WHERE {where} "
                            "ORDER BY m.doc_idx", params).df()
        n_view = len(light)
        wanted = light["doc_idx"].to_numpy()
        if n_view > budget:
            wanted = wanted[stratified_sample(light["cid"].to_numpy(), max(1, int(budget)), seed)]
        include = np.intersect1d(np.asarray(list(include), dtype=np.int64), light["doc_idx"].to_numpy())
        wanted = np.union1d(wanted, include).astype(np.int64)
        del light
        cols = "".join(f", json_extract_string(d.meta_json, ?) AS \"meta.{i}\"" for i in range(len(fields)))
        con.register("wanted_map", pd.DataFrame({"doc_idx": wanted}))
        df = con.execute(f"""
            SELECT m.doc_idx, m.x, m.y, dc.cluster_id, c.label, c.state, s.quality,
                   regexp_replace(left(d.text, {int(preview_chars)}), '\\s+', ' ', 'g') AS preview,
                   r.cluster_rank {cols}
            FROM wanted_map w
            JOIN map_coords m USING (doc_idx)
            JOIN documents d USING (doc_idx)
            LEFT JOIN doc_clusters dc USING (doc_idx)
            LEFT JOIN clusters c ON c.cluster_id = dc.cluster_id
            LEFT JOIN (SELECT cluster_id, dense_rank() OVER (ORDER BY cluster_id) - 1 AS cluster_rank
                       FROM clusters) r ON r.cluster_id = dc.cluster_id
            LEFT JOIN doc_stats s USING (doc_idx)
            ORDER BY m.doc_idx""", [f'$."{f}"' for f in fields]).df()
        con.unregister("wanted_map")
    return df.rename(columns={f"meta.{i}": f"meta.{f}" for i, f in enumerate(fields)}), n_view


def map_view_points(ws: Workspace, field: str | None = None, *, show_pruned: bool = True,
                    region: tuple[float, float, float, float] | None = None) -> dict[str, np.ndarray]:
    """Every map point in view, with only what colours it: x, y (float32), cluster_rank (as
    `map_sample`, -1 for none), pruned (bool), quality (float32, NaN for none) and, when `field` is a
    meta_json field, its value as text (`meta`). Plain arrays, not a DataFrame: at a million points
    the map's backdrop image is drawn from these and a frame of them would cost several times more."""
    where, params = _map_filter(show_pruned, region)
    meta = ", json_extract_string(d.meta_json, ?) AS meta" if field else ""
    join_docs = "JOIN documents d USING (doc_idx)" if field else ""
    with ws.connect() as con:
        cols = con.execute(f"""
            SELECT m.x::FLOAT AS x, m.y::FLOAT AS y, coalesce(r.cluster_rank, -1)::INTEGER AS cluster_rank,
                   coalesce(c.state = 'pruned', FALSE) AS pruned, s.quality::FLOAT AS quality {meta}
            FROM map_coords m {join_docs}
            LEFT JOIN doc_clusters dc USING (doc_idx)
            LEFT JOIN clusters c ON c.cluster_id = dc.cluster_id
            LEFT JOIN (SELECT cluster_id, dense_rank() OVER (ORDER BY cluster_id) - 1 AS cluster_rank
                       FROM clusters) r ON r.cluster_id = dc.cluster_id
            LEFT JOIN doc_stats s USING (doc_idx)
            WHERE {where}""", ([f'$."{field}"'] if field else []) + params).fetchnumpy()
    out = {k: np.asarray(v) for k, v in cols.items()}
    # fetchnumpy gives masked arrays where a column has NULLs
    out["quality"] = np.ma.filled(np.ma.asarray(cols["quality"], dtype=np.float32), np.nan)
    if field:
        out["meta"] = np.ma.filled(np.ma.asarray(cols["meta"], dtype=object), None)
    return out


def points_in_polygon(x: np.ndarray, y: np.ndarray, px, py) -> np.ndarray:
    """Mask of the points (x, y) inside the polygon with vertices (px, py) (even-odd rule).

    Points are sorted by y once; each edge then only tests the points within its own y-span, so a
    lasso drawn by hand (many short edges) costs about O(points x crossings), not points x edges."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    px, py = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    order = np.argsort(y, kind="stable")
    xs, ys = x[order], y[order]
    inside = np.zeros(len(x), dtype=bool)
    for x0, y0, x1, y1 in zip(px, py, np.roll(px, -1), np.roll(py, -1)):
        if y0 == y1:
            continue
        # half-open span [lo, hi), so a vertex shared by two edges is counted once
        a, b = np.searchsorted(ys, [min(y0, y1), max(y0, y1)], side="left")
        if a == b:
            continue
        cross = x0 + (ys[a:b] - y0) * (x1 - x0) / (y1 - y0)
        inside[a:b] ^= xs[a:b] < cross
    out = np.empty_like(inside)
    out[order] = inside
    return out


def map_docs_in_region(ws: Workspace, lassos=(), boxes=(), *, show_pruned: bool = True,
                       region: tuple[float, float, float, float] | None = None) -> list[int]:
    """doc_idx of every map point inside any lasso polygon ((xs, ys) pairs) or box ((x0, x1, y0, y1)),
    within `region` when given: the documents a selection on a sampled map stands for."""
    where, params = _map_filter(show_pruned, region)
    shapes = [("box", (min(b[0], b[1]), max(b[0], b[1]), min(b[2], b[3]), max(b[2], b[3]))) for b in boxes]
    shapes += [("lasso", (min(xs), max(xs), min(ys), max(ys)), xs, ys) for xs, ys in lassos if len(xs) >= 3]
    found = [np.zeros(0, dtype=np.int64)]
    with ws.connect() as con:
        for kind, (x0, x1, y0, y1), *poly in shapes:
            pts = con.execute(f"""
                SELECT m.doc_idx, m.x, m.y FROM map_coords m
                LEFT JOIN doc_clusters dc USING (doc_idx)
                LEFT JOIN clusters c ON c.cluster_id = dc.cluster_id
                WHERE {where} AND m.x BETWEEN ? AND ? AND m.y BETWEEN ? AND ?""",
                params + [float(x0), float(x1), float(y0), float(y1)]).df()
            idx = pts["doc_idx"].to_numpy(dtype=np.int64)
            if kind == "lasso":
                idx = idx[points_in_polygon(pts["x"].to_numpy(), pts["y"].to_numpy(), *poly)]
            found.append(idx)
    return [int(i) for i in np.unique(np.concatenate(found))]


def search_text(ws: Workspace, text: str, limit: int = 100_000) -> list[int]:
    """doc_idx of documents whose text contains `text` (case-insensitive, literal)."""
    if not text:
        return []
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with ws.connect() as con:
        rows = con.execute(
            f"SELECT doc_idx FROM documents WHERE text ILIKE ? ESCAPE '\\' ORDER BY doc_idx LIMIT {int(limit)}",
            [pattern]).fetchall()
    return [int(r[0]) for r in rows]


def documents(ws: Workspace, doc_idxs, preview_chars: int | None = 300) -> pd.DataFrame:
    """Documents by doc_idx with their cluster and statistics; full text when preview_chars is None."""
    idx = pd.DataFrame({"doc_idx": np.asarray(list(doc_idxs), dtype=np.int64)})
    text = "d.text" if preview_chars is None else f"left(d.text, {int(preview_chars)})"
    stat_cols = ", ".join(f"s.{c}" for c in DOC_STAT_COLUMNS)
    with ws.connect() as con:
        con.register("wanted", idx)
        df = con.execute(f"""
            SELECT d.doc_idx, d.doc_id, dc.cluster_id, c.label AS cluster_label, c.state AS cluster_state,
                   {text} AS text, d.source_file, d.source_line, d.meta_json, {stat_cols}
            FROM wanted w JOIN documents d USING (doc_idx)
            LEFT JOIN doc_clusters dc USING (doc_idx)
            LEFT JOIN clusters c ON c.cluster_id = dc.cluster_id
            LEFT JOIN doc_stats s USING (doc_idx)
            ORDER BY d.doc_idx""").df()
        con.unregister("wanted")
    return df


def document_text(ws: Workspace, doc_idx: int) -> str | None:
    with ws.connect() as con:
        row = con.execute("SELECT text FROM documents WHERE doc_idx = ?", [int(doc_idx)]).fetchone()
    return None if row is None else row[0]


# ------------------------------------------------------------------------------------ searches
def searches(ws: Workspace) -> pd.DataFrame:
    """Every search with its progress: proxies finished / planned, best score so far."""
    from climb_core.search.records import shown_status

    with ws.connect() as con:
        df = con.execute("""
            SELECT s.search_id, s.name, s.strategy, s.status, s.message, s.created_at, s.updated_at, s.pid, s.pid_started,
                   s.final_predicted, s.best_run_id, len(s.cluster_ids) AS n_clusters,
                   coalesce(r.finished, 0) AS runs_finished, coalesce(r.failed, 0) AS runs_failed,
                   coalesce(r.total, 0) AS runs_proposed, r.best_score, r.last_round,
                   try_cast(json_extract(s.config_json, '$.search.budget') AS INTEGER) AS budget,
                   coalesce(r.warm, 0) AS warm_runs
            FROM searches s LEFT JOIN (
                SELECT search_id, count(*) FILTER (WHERE status = 'done' AND NOT warm) AS finished,
                       count(*) FILTER (WHERE status = 'failed') AS failed, count(*) FILTER (WHERE NOT warm) AS total,
                       max(score) FILTER (WHERE status = 'done' AND NOT warm) AS best_score, max(round) AS last_round,
                       count(*) FILTER (WHERE warm) AS warm
                FROM (SELECT *, purpose IS NOT DISTINCT FROM 'warm' AS warm FROM proxy_runs)
                GROUP BY search_id) r USING (search_id)
            ORDER BY s.created_at DESC""").df()
    # A search whose worker died reads 'interrupted', not 'running' forever.
    df["status"] = [shown_status(r) for r in df.to_dict("records")]
    return df


def search_info(ws: Workspace, search_id: str) -> dict[str, Any] | None:
    """A search's row with its config, clusters, prior and final weights decoded."""
    with ws.connect() as con:
        df = con.execute("SELECT * FROM searches WHERE search_id = ?", [search_id]).df()
    if df.empty:
        return None
    row = df.iloc[0].to_dict()
    from climb_core.search.records import shown_status

    row["status"] = shown_status(row)
    for key in ("config_json", "target_json", "final_json"):
        try:
            row[key.removesuffix("_json")] = json.loads(row[key]) if row.get(key) else None
        except (TypeError, ValueError):
            row[key.removesuffix("_json")] = None
    for key in ("cluster_ids", "cluster_labels", "prior", "final_weights"):
        v = row.get(key)
        row[key] = None if v is None or (isinstance(v, float) and np.isnan(v)) else list(v)
    return row


def proxy_runs(ws: Workspace, search_id: str) -> pd.DataFrame:
    """Every proposed and finished proxy run of a search, in proposal order."""
    with ws.connect() as con:
        return con.execute("""
            SELECT run_id, round, idx, coalesce(purpose, 'explore') AS purpose, weights, seed, tokens, predicted,
                   predicted_sd, status, score, scores_json, wall_s, host, proposed_at, finished_at, error,
                   source_search, source_run, mapping
            FROM proxy_runs WHERE search_id = ? ORDER BY round, idx, proposed_at""", [search_id]).df()


def predictor_reports(ws: Workspace, search_id: str) -> pd.DataFrame:
    with ws.connect() as con:
        return con.execute("""
            SELECT round, n_train, predictor, spearman, r2, flat, reason, method, importance, candidates_json,
                   created_at
            FROM predictor_reports WHERE search_id = ? ORDER BY round, created_at""", [search_id]).df()


def best_so_far(runs: pd.DataFrame) -> pd.DataFrame:
    """Best score against proxies trained, from `proxy_runs` output (finished runs in finishing order)."""
    done = runs[runs["status"] == "done"].dropna(subset=["score"])
    if done.empty:
        return pd.DataFrame(columns=["proxies_trained", "score", "best"])
    order = "finished_at" if done["finished_at"].notna().all() else "proposed_at"
    done = done.sort_values([order, "round", "idx"]).reset_index(drop=True)
    return pd.DataFrame({"proxies_trained": np.arange(1, len(done) + 1), "score": done["score"].to_numpy(),
                         "best": done["score"].cummax().to_numpy(), "round": done["round"].to_numpy()})


def exports(ws: Workspace, search_id: str | None = None) -> pd.DataFrame:
    sql = "SELECT export_id, search_id, path, n_tokens, n_docs, manifest_json, created_at FROM exports"
    params: list = []
    if search_id:
        sql += " WHERE search_id = ?"
        params.append(search_id)
    with ws.connect() as con:
        return con.execute(sql + " ORDER BY created_at DESC", params).df()


# ------------------------------------------------------------------------------------ jobs
def jobs(ws: Workspace, limit: int = 100) -> pd.DataFrame:
    with ws.connect() as con:
        return con.execute(
            f"SELECT job_id, kind, status, pid, started_at, finished_at, message, log_path, args_json FROM jobs "
            f"ORDER BY started_at DESC LIMIT {int(limit)}").df()


def warm_start_offers(ws: Workspace) -> pd.DataFrame:
    """Finished searches whose runs a new search can learn from, carried to the current clusters,
    with how many runs would be reused, remapped and dropped (see climb_core.search.warm)."""
    from climb_core.search.warm import warm_offers

    return warm_offers(ws)
