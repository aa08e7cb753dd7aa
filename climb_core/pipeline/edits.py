"""The cluster edit API: rename, prune, restore, merge, split, a cluster from chosen documents, undo.

Every change to the refined clusters, the refine stage's own automatic prunes and merges included,
goes through one edit function. Each edit is one transaction that appends a row to `edits`,
snapshots the prior row of every cluster it touches (with its representatives) in
`edit_cluster_before`, and records each document it moves in `edit_doc_moves`. `undo` replays that
record backwards, so any edit, automatic or not, can be reverted exactly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace, transaction
from climb_core.config import ClimbConfig

REP_JSON_TYPE = '[{"rank": "INTEGER", "doc_idx": "BIGINT", "distance": "FLOAT"}]'


class ClusterEditError(ValueError):
    """An edit that cannot be applied: unknown cluster, wrong state, bad label or k."""


# ------------------------------------------------------------------------------------------ reads
def active_clusters(ws: Workspace) -> pd.DataFrame:
    """Active clusters, largest first (centroid left out)."""
    return ws.query_df("SELECT * EXCLUDE (centroid) FROM clusters WHERE state = 'active' "
                       "ORDER BY size_docs DESC, cluster_id")


def cluster_lineage(ws: Workspace) -> pd.DataFrame:
    """For each cluster holding documents, the k-means base clusters they came from and how many."""
    return ws.query_df("""
        SELECT dc.cluster_id, a.base_cluster, count(*) AS n_docs
        FROM doc_clusters dc JOIN assignments a USING (doc_idx)
        GROUP BY ALL ORDER BY dc.cluster_id, a.base_cluster""")


def list_edits(ws: Workspace) -> pd.DataFrame:
    return ws.query_df("SELECT edit_id, ts, op, args_json, source, undone, undone_at, summary "
                       "FROM edits ORDER BY edit_id")


# --------------------------------------------------------------------------------- edit machinery
@dataclass
class _Edit:
    con: object
    edit_id: int
    summary: str = ""

    def snapshot(self, existing: list[int], new: list[int] = ()) -> None:
        """Record the prior rows (and representatives) of `existing`, and that `new` did not exist."""
        self.con.execute("""
            INSERT INTO edit_cluster_before
            SELECT ?, c.cluster_id, TRUE, json_merge_patch(to_json(c), json_object('representatives',
                (SELECT to_json(list(r ORDER BY r.rank)) FROM representatives r WHERE r.cluster_id = c.cluster_id)))
            FROM clusters c WHERE c.cluster_id IN (SELECT unnest(?::INTEGER[]))""", [self.edit_id, list(existing)])
        if new:
            self.con.execute("INSERT INTO edit_cluster_before SELECT ?, unnest(?::INTEGER[]), FALSE, NULL",
                             [self.edit_id, list(new)])

    def move_docs(self, moves_sql: str, params: list) -> None:
        """Move documents to new clusters; `moves_sql` selects (doc_idx, to_cluster)."""
        self.con.execute(f"""
            INSERT INTO edit_doc_moves
            SELECT ?, dc.doc_idx, dc.cluster_id, m.to_cluster
            FROM doc_clusters dc JOIN ({moves_sql}) m USING (doc_idx)
            WHERE dc.cluster_id IS DISTINCT FROM m.to_cluster""", [self.edit_id, *params])
        self.con.execute("""
            UPDATE doc_clusters SET cluster_id = m.to_cluster FROM edit_doc_moves m
            WHERE m.edit_id = ? AND doc_clusters.doc_idx = m.doc_idx""", [self.edit_id])

    def edges(self, parents: list[int], child: int, op: str) -> None:
        self.con.execute("INSERT INTO cluster_edges SELECT unnest(?::INTEGER[]), ?, ?, ?",
                         [list(parents), child, op, self.edit_id])


@contextlib.contextmanager
def _edit(ws: Workspace, op: str, args: dict, source: str) -> Iterator[_Edit]:
    with ws.connect() as con, transaction(con):
        edit_id = int(con.execute("SELECT coalesce(max(edit_id), 0) + 1 FROM edits").fetchall()[0][0])
        ed = _Edit(con, edit_id)
        yield ed
        con.execute("INSERT INTO edits (edit_id, ts, op, args_json, source, undone, summary) "
                    "VALUES (?, ?, ?, ?, ?, FALSE, ?)",
                    [edit_id, dt.datetime.now(), op, json.dumps(args, default=int), source, ed.summary])


def _clusters(con, ids: list[int]) -> pd.DataFrame:
    """Rows of the given clusters (in the given order); unknown ids raise."""
    ids = [int(i) for i in ids]
    df = con.execute("SELECT * FROM clusters WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))", [ids]).df()
    missing = sorted(set(ids) - set(df["cluster_id"].tolist()))
    if missing:
        raise ClusterEditError(f"unknown cluster id(s) {missing}")
    return df.set_index("cluster_id").loc[ids].reset_index()


def _require_state(rows: pd.DataFrame, allowed: set[str], action: str) -> None:
    bad = rows[~rows["state"].isin(allowed)]
    if len(bad):
        desc = ", ".join(f"#{c} is {s}" for c, s in zip(bad["cluster_id"], bad["state"]))
        raise ClusterEditError(f"cannot {action}: {desc} (only {'/'.join(sorted(allowed))} clusters can be)")


def _next_id(con) -> int:
    return int(con.execute("SELECT coalesce(max(cluster_id), -1) + 1 FROM clusters").fetchall()[0][0])


def _clean_label(label: str | None) -> str | None:
    if label is None:
        return None
    if not str(label).strip():
        raise ClusterEditError("a cluster label cannot be empty")
    return str(label).strip()


def _refresh_stats(con, ids: list[int]) -> None:
    """Recompute size, tokens and mean quality of these clusters from their current documents."""
    con.execute("""
        UPDATE clusters SET size_docs = s.n, size_tokens = s.tokens, mean_quality = s.quality
        FROM (SELECT dc.cluster_id, count(*) AS n, coalesce(sum(ds.n_tokens_est), 0) AS tokens, avg(ds.quality) AS quality
              FROM doc_clusters dc LEFT JOIN doc_stats ds USING (doc_idx)
              WHERE dc.cluster_id IN (SELECT unnest(?::INTEGER[])) GROUP BY dc.cluster_id) s
        WHERE clusters.cluster_id = s.cluster_id""", [list(ids)])


def is_vector(v) -> bool:
    """True for a stored list value; pandas gives None, NaN or NA for SQL NULL."""
    return isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0


def _unit(vec: np.ndarray) -> list[float]:
    vec = np.asarray(vec, dtype=np.float32)
    return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32).tolist()


def _doc_centroids(con, emb: np.ndarray | None, ids: list[int]) -> dict[int, list[float]]:
    """Normalised mean embedding of each cluster's current documents (empty when no embeddings)."""
    if emb is None or not ids:
        return {}
    docs = con.execute("SELECT doc_idx, cluster_id FROM doc_clusters WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))",
                       [list(ids)]).df()
    return {int(c): _unit(np.asarray(emb[g["doc_idx"].to_numpy()], dtype=np.float32).mean(axis=0))
            for c, g in docs.groupby("cluster_id")}


def _set_centroids(con, centroids: dict[int, list[float]]) -> None:
    if not centroids:
        return
    df = pd.DataFrame({"cluster_id": list(centroids), "centroid": list(centroids.values())})
    con.register("cent_df", df)
    con.execute("UPDATE clusters SET centroid = c.centroid::FLOAT[] FROM cent_df c WHERE clusters.cluster_id = c.cluster_id")
    con.unregister("cent_df")


def _insert_cluster(con, row: dict) -> None:
    df = pd.DataFrame([row])
    con.register("new_cluster_df", df)
    casts = {"parent_ids": "INTEGER[]", "centroid": "FLOAT[]", "keywords": "VARCHAR[]"}
    cols = ", ".join(f"{c}::{casts[c]} AS {c}" if c in casts else c for c in df.columns)
    con.execute(f"INSERT INTO clusters BY NAME SELECT {cols} FROM new_cluster_df")
    con.unregister("new_cluster_df")


def _describe(ws: Workspace, con, config: ClimbConfig | None, ids: list[int], emb=None) -> None:
    from climb_core.pipeline.describe import describe_clusters

    describe_clusters(ws, config or ws.load_config(), ids, con=con, embeddings=emb)


def _embeddings(ws: Workspace):
    from climb_core.pipeline.describe import load_embeddings_or_none

    return load_embeddings_or_none(ws)


# ------------------------------------------------------------------------------------- edit API
def rename_cluster(ws: Workspace, cluster_id: int, label: str, *, source: str = "user") -> int:
    label = _clean_label(label)
    if label is None:
        raise ClusterEditError("a cluster label cannot be empty")
    with _edit(ws, "rename", {"cluster_id": cluster_id, "label": label}, source) as ed:
        old = _clusters(ed.con, [cluster_id]).iloc[0]
        ed.snapshot([cluster_id])
        ed.con.execute("UPDATE clusters SET label = ?, label_source = 'user' WHERE cluster_id = ?", [label, cluster_id])
        ed.summary = f"renamed #{cluster_id} from {old['label']!r} to {label!r}"
        return ed.edit_id


def prune_with_reasons(ws: Workspace, reasons: dict[int, str], source: str) -> int:
    ids = [int(c) for c in reasons]
    if not ids:
        raise ClusterEditError("no clusters given to prune")
    with _edit(ws, "prune", {"cluster_ids": ids, "reasons": {str(k): v for k, v in reasons.items()}}, source) as ed:
        _require_state(_clusters(ed.con, ids), {"active"}, "prune")
        ed.snapshot(ids)
        df = pd.DataFrame({"cluster_id": ids, "reason": [reasons[c] for c in ids]})
        ed.con.register("prune_df", df)
        ed.con.execute("UPDATE clusters SET state = 'pruned', reason = p.reason FROM prune_df p "
                       "WHERE clusters.cluster_id = p.cluster_id")
        ed.con.unregister("prune_df")
        ed.summary = f"pruned {len(ids)} cluster(s) {ids}" + (f": {reasons[ids[0]]}" if len(ids) == 1 else "")
        return ed.edit_id


def prune_clusters(ws: Workspace, cluster_ids: list[int], reason: str = "pruned by user", *, source: str = "user") -> int:
    """Mark clusters pruned (left out of the mixture); their documents stay with them, restorable."""
    return prune_with_reasons(ws, {int(c): reason for c in dict.fromkeys(cluster_ids)}, source)


def restore_clusters(ws: Workspace, cluster_ids: list[int], *, source: str = "user") -> int:
    ids = [int(c) for c in dict.fromkeys(cluster_ids)]
    if not ids:
        raise ClusterEditError("no clusters given to restore")
    with _edit(ws, "restore", {"cluster_ids": ids}, source) as ed:
        _require_state(_clusters(ed.con, ids), {"pruned"}, "restore")
        ed.snapshot(ids)
        ed.con.execute("UPDATE clusters SET state = 'active', reason = NULL "
                       "WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))", [ids])
        ed.summary = f"restored {len(ids)} cluster(s) {ids}"
        return ed.edit_id


def merge_clusters(ws: Workspace, cluster_ids: list[int], label: str | None = None, *, source: str = "user",
                   config: ClimbConfig | None = None, describe: bool = True) -> int:
    """Merge active clusters into a new one and return its id; user labels of members are kept.

    `describe=False` leaves keywords and the automatic label to a later describe (the refine stage
    merges many groups and describes once)."""
    ids = [int(c) for c in dict.fromkeys(cluster_ids)]
    label = _clean_label(label)
    if len(ids) < 2:
        raise ClusterEditError(f"merging needs at least 2 distinct clusters, got {ids}")
    with _edit(ws, "merge", {"cluster_ids": ids, "label": label}, source) as ed:
        con = ed.con
        rows = _clusters(con, ids)
        _require_state(rows, {"active"}, "merge")
        new_id = _next_id(con)
        ed.snapshot(ids, [new_id])
        user_labels = [str(x) for x, s in zip(rows["label"], rows["label_source"]) if s == "user" and x]
        if label is None and user_labels:
            label = " + ".join(user_labels)
        centroid = None
        if rows["centroid"].map(is_vector).all():
            weights = rows["size_docs"].fillna(0).to_numpy(dtype=np.float64)
            weights = weights if weights.sum() > 0 else np.ones(len(rows))
            centroid = _unit(np.average(np.stack([np.asarray(v, dtype=np.float64) for v in rows["centroid"]]),
                                        axis=0, weights=weights))
        _insert_cluster(con, {"cluster_id": new_id, "label": label, "label_source": "user" if label else "auto",
                              "state": "active", "parent_ids": ids, "created_edit": ed.edit_id, "centroid": centroid})
        ed.move_docs("SELECT doc_idx, ?::INTEGER AS to_cluster FROM doc_clusters "
                     "WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))", [new_id, ids])
        _refresh_stats(con, [new_id])
        con.execute("UPDATE clusters SET state = 'merged', merged_into = ? WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))",
                    [new_id, ids])
        ed.edges(ids, new_id, "merge")
        if describe:
            _describe(ws, con, config, [new_id])
        ed.summary = f"merged {ids} into #{new_id}" + (f" ({label!r})" if label else "")
        return new_id


def _kmeans_labels(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    try:
        from climb_core.pipeline.cluster import assign, kmeans_fit
    except ImportError:
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    labels, _ = assign(x, kmeans_fit(x, k, seed=seed))
    return labels


def _split_inputs(con, cluster_id: int, k: int, cfg) -> dict:
    """What a split reads: the cluster's documents (with their texts and sampling hash), the other
    clusters holding documents (the keyword background, their texts read later) and the next free id."""
    from climb_core.pipeline.describe import catalogue_token

    _require_state(_clusters(con, [cluster_id]), {"active"}, "split")
    docs = con.execute("""SELECT dc.doc_idx, hash(dc.doc_idx) AS h, d.doc_idx IS NOT NULL AS has_doc, d.text
                          FROM doc_clusters dc LEFT JOIN documents d USING (doc_idx)
                          WHERE dc.cluster_id = ? ORDER BY dc.doc_idx""", [cluster_id]).df()
    if k < 2 or k > len(docs):
        raise ClusterEditError(f"cannot split #{cluster_id} into k={k}: k must be between 2 and its {len(docs)} documents")
    others = [int(r[0]) for r in con.execute(
        "SELECT DISTINCT cluster_id FROM doc_clusters WHERE cluster_id <> ? ORDER BY cluster_id", [cluster_id]).fetchall()]
    return {"token": catalogue_token(con), "docs": docs, "first": _next_id(con), "others": others}


def _split_compute(inputs: dict, cluster_id: int, k: int, seed: int, emb, cfg, read_others) -> dict:
    """k-means, the children's centroids, keywords and representatives, with no connection open
    (`read_others(chunk)` reads the other clusters' sampled texts, a short connection each)."""
    from climb_core.pipeline.describe import DescribeInputs, compute_keywords, compute_representatives

    docs = inputs["docs"]
    doc_idx = docs["doc_idx"].to_numpy()
    labels = _kmeans_labels(np.asarray(emb[doc_idx], dtype=np.float32), k, seed)
    used = np.unique(labels)  # k-means may leave a cluster empty on duplicate points
    first = inputs["first"]
    child_of = {int(lab): first + i for i, lab in enumerate(used)}
    children = list(child_of.values())
    to_cluster = np.array([child_of[int(lab)] for lab in labels], dtype=np.int64)
    # The children's documents, as describe would read them after the moves.
    members = pd.DataFrame({"doc_idx": doc_idx, "cluster_id": to_cluster})
    centroids = {int(c): _unit(np.asarray(emb[g["doc_idx"].to_numpy()], dtype=np.float32).mean(axis=0))
                 for c, g in members.groupby("cluster_id")}
    # Each child's keyword sample: its first max_docs documents by (hash(doc_idx), doc_idx), as describe samples.
    texts: dict[int, str] = {}
    sampled = docs.assign(cluster_id=to_cluster)[docs["has_doc"].to_numpy(dtype=bool)]
    sampled = sampled.sort_values(["h", "doc_idx"], kind="stable")
    for c, g in sampled.groupby("cluster_id", sort=False):
        texts[int(c)] = " ".join(t for t in g["text"].head(cfg.max_docs_per_cluster) if t is not None)
    for c in children:
        texts.setdefault(c, "")
    def fetch(chunk: list[int]) -> dict[int, str]:
        rest = [c for c in chunk if c not in texts]
        return {**(read_others(rest) if rest else {}), **{c: texts[c] for c in chunk if c in texts}}

    class_ids = sorted(set(inputs["others"]) | set(children))
    dinputs = DescribeInputs(children, class_ids, fetch, members, {c: centroids.get(c) for c in children})
    return {"children": children, "moves": pd.DataFrame({"doc_idx": doc_idx, "to_cluster": to_cluster}),
            "centroids": centroids, "kw": compute_keywords(cfg, dinputs), "reps": compute_representatives(cfg, dinputs, emb)}


def split_cluster(ws: Workspace, cluster_id: int, k: int, *, seed: int = 0, source: str = "user",
                  config: ClimbConfig | None = None) -> list[int]:
    """Re-cluster one active cluster's documents into k children (k-means on their embeddings).

    The inputs are read in one short connection, k-means and describing the children run with the
    catalogue closed, and the edit is written in one short transaction, once it has checked that no
    other change came in between (if one did, the split is computed again from the new state)."""
    from climb_core.pipeline.describe import STALE_RETRIES, read_texts

    emb = _embeddings(ws)
    if emb is None:
        raise ClusterEditError(f"splitting needs document embeddings and {ws.embeddings_dir} has none; run `climb embed`")
    k = int(k)
    cfg = (config or ws.load_config()).describe
    for attempt in range(STALE_RETRIES + 1):
        with ws.connect() as con:
            inputs = _split_inputs(con, cluster_id, k, cfg)
        out = _split_compute(inputs, cluster_id, k, seed, emb, cfg, lambda chunk: read_texts(ws, cfg, chunk))
        try:
            children = _write_split(ws, cluster_id, k, seed, source, emb, cfg, inputs, out,
                                    last=attempt == STALE_RETRIES)
        except _Stale:
            continue
        return children
    raise AssertionError("unreachable")


class _Stale(Exception):
    """The catalogue changed between a split's read and its write."""


def _write_split(ws: Workspace, cluster_id: int, k: int, seed: int, source: str, emb, cfg,
                 inputs: dict, out: dict, last: bool) -> list[int]:
    from climb_core.pipeline.describe import catalogue_token, read_class_texts, write_description

    with _edit(ws, "split", {"cluster_id": cluster_id, "k": k, "seed": seed}, source) as ed:
        con = ed.con
        if catalogue_token(con) != inputs["token"]:
            if not last:
                raise _Stale()
            # Still changing under us: compute again, holding the transaction this time.
            inputs = _split_inputs(con, cluster_id, k, cfg)
            out = _split_compute(inputs, cluster_id, k, seed, emb, cfg,
                                 lambda chunk: read_class_texts(con, chunk, cfg.max_docs_per_cluster))
        children = out["children"]
        ed.snapshot([cluster_id], children)
        for child in children:
            _insert_cluster(con, {"cluster_id": child, "label_source": "auto", "state": "active",
                                  "parent_ids": [cluster_id], "created_edit": ed.edit_id})
        con.register("split_moves", out["moves"])
        ed.move_docs("SELECT doc_idx, to_cluster::INTEGER AS to_cluster FROM split_moves", [])
        con.unregister("split_moves")
        _refresh_stats(con, children)
        _set_centroids(con, out["centroids"])
        con.execute("UPDATE clusters SET state = 'split' WHERE cluster_id = ?", [cluster_id])
        for child in children:
            ed.edges([cluster_id], child, "split")
        write_description(con, cfg, out["kw"], out["reps"])
        ed.summary = f"split #{cluster_id} into {len(children)} clusters {children}"
        return children


def cluster_from_documents(ws: Workspace, doc_idxs: list[int], label: str | None = None, *, source: str = "user",
                           config: ClimbConfig | None = None) -> int:
    """Turn a selection of documents (a lasso on the map) into a new active cluster; returns its id.

    The clusters they leave shrink; one left empty is marked merged into the new cluster."""
    docs = sorted({int(d) for d in doc_idxs})
    label = _clean_label(label)
    if not docs:
        raise ClusterEditError("no documents selected")
    emb = _embeddings(ws)
    with _edit(ws, "from_documents", {"n_docs": len(docs), "label": label}, source) as ed:
        con = ed.con
        sel = pd.DataFrame({"doc_idx": docs})
        con.register("sel_docs", sel)
        found = con.execute("SELECT dc.doc_idx, dc.cluster_id FROM doc_clusters dc JOIN sel_docs USING (doc_idx)").df()
        missing = sorted(set(docs) - set(found["doc_idx"].tolist()))
        if missing:
            raise ClusterEditError(f"unknown document(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        sources = sorted(int(c) for c in found["cluster_id"].unique())
        new_id = _next_id(con)
        ed.snapshot(sources, [new_id])
        _insert_cluster(con, {"cluster_id": new_id, "label": label, "label_source": "user" if label else "auto",
                              "state": "active", "parent_ids": sources, "created_edit": ed.edit_id})
        ed.move_docs("SELECT doc_idx, ?::INTEGER AS to_cluster FROM sel_docs", [new_id])
        con.unregister("sel_docs")
        left = [r[0] for r in con.execute(
            "SELECT DISTINCT cluster_id FROM doc_clusters WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))",
            [sources]).fetchall()]
        emptied = sorted(set(sources) - set(left))
        _refresh_stats(con, [new_id, *left])
        _set_centroids(con, _doc_centroids(con, emb, [new_id, *left]))
        if emptied:
            con.execute(f"""UPDATE clusters SET state = 'merged', merged_into = ?, size_docs = 0, size_tokens = 0,
                reason = 'all its documents moved to #{new_id}' WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))""",
                        [new_id, emptied])
        ed.edges(sources, new_id, "select")
        _describe(ws, con, config, [new_id, *left], emb)
        ed.summary = f"{len(docs)} selected documents from {sources} -> new cluster #{new_id}" + (f" ({label!r})" if label else "")
        return new_id


def _json_type(con, table: str) -> str:
    cols = con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = current_database() AND table_name = ? "
                       "ORDER BY ordinal_position", [table]).fetchall()
    return json.dumps({name: dtype for name, dtype in cols})


def undo(ws: Workspace, *, config: ClimbConfig | None = None) -> dict | None:
    """Revert the latest edit not yet undone (of any source); None when there is nothing to undo.

    Restored clusters that had never been described (e.g. members of an automatic merge made
    before the describe stage ran) are described, so they come back with labels."""
    with ws.connect() as con, transaction(con):
        rows = con.execute("SELECT edit_id, op, source, summary FROM edits WHERE NOT undone "
                           "ORDER BY edit_id DESC LIMIT 1").fetchall()
        if not rows:
            return None
        row = rows[0]
        edit_id = int(row[0])
        touched = "SELECT cluster_id FROM edit_cluster_before WHERE edit_id = ?"
        con.execute("""UPDATE doc_clusters SET cluster_id = m.from_cluster FROM edit_doc_moves m
                       WHERE m.edit_id = ? AND doc_clusters.doc_idx = m.doc_idx""", [edit_id])
        con.execute(f"DELETE FROM clusters WHERE cluster_id IN ({touched})", [edit_id])
        con.execute(f"DELETE FROM representatives WHERE cluster_id IN ({touched})", [edit_id])
        con.execute(f"""INSERT INTO clusters BY NAME
            SELECT unnest(json_transform(row_json, '{_json_type(con, "clusters")}'))
            FROM edit_cluster_before WHERE edit_id = ? AND existed""", [edit_id])
        con.execute(f"""INSERT INTO representatives
            SELECT b.cluster_id, r.rank, r.doc_idx, r.distance
            FROM edit_cluster_before b,
                 unnest(json_transform(json_extract(b.row_json, '$.representatives'), '{REP_JSON_TYPE}')) AS t(r)
            WHERE b.edit_id = ? AND b.existed""", [edit_id])
        con.execute("DELETE FROM cluster_edges WHERE edit_id = ?", [edit_id])
        con.execute("UPDATE edits SET undone = TRUE, undone_at = ? WHERE edit_id = ?", [dt.datetime.now(), edit_id])
        bare = [r[0] for r in con.execute(f"""
            SELECT cluster_id FROM clusters WHERE cluster_id IN ({touched}) AND keywords IS NULL
            AND cluster_id IN (SELECT cluster_id FROM doc_clusters)""", [edit_id]).fetchall()]
        if bare:
            _describe(ws, con, config, bare)
    return {"edit_id": edit_id, "op": row[1], "source": row[2], "summary": row[3]}
