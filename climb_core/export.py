"""Export a search's mixture: weights.json, and a dataset sampled by those weights as Parquet shards.

Each cluster contributes whole documents until it reaches its share of the requested tokens
(doc_stats.n_tokens_est). A cluster too small for its share is repeated, reshuffled each pass, and
the manifest records how many epochs that took, so a user sees when a mixture leans on repetition.
The shards (columns text, doc_id, cluster_id, cluster_label) load with
`datasets.load_dataset("parquet", data_files=...)`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from climb_core.config import ClimbConfig
from climb_core.workspace import Workspace


class ExportError(RuntimeError):
    """The search has no mixture to export (not finished, unknown run), or a cluster has no documents."""


def _weights(ws: Workspace, search_id: str, which: str) -> tuple[dict[str, Any], np.ndarray, str]:
    df = ws.query_df("SELECT * FROM searches WHERE search_id = ?", [search_id])
    if df.empty:
        raise ExportError(f"no search {search_id!r} in {ws.root}")
    row = df.iloc[0].to_dict()
    if which == "final":
        w, source = row["final_weights"], "final mixture"
        if w is None or isinstance(w, float):
            raise ExportError(f"search {search_id} has no final mixture yet (status {row['status']}); "
                              "finish it, or export which='best' (the best trained run)")
    else:
        sql = ("SELECT run_id, weights FROM proxy_runs WHERE search_id = ? AND status = 'done' ORDER BY score DESC LIMIT 1"
               if which == "best" else "SELECT run_id, weights FROM proxy_runs WHERE search_id = ? AND run_id = ?")
        rows = ws.query_df(sql, [search_id] if which == "best" else [search_id, which])
        if rows.empty:
            raise ExportError(f"search {search_id} has no {'finished run' if which == 'best' else 'run ' + which} to export")
        w, source = rows.iloc[0]["weights"], f"run {rows.iloc[0]['run_id']}"
    w = np.asarray(w, dtype=np.float64)
    return row, w / w.sum(), source


def _sample_cluster(doc_idx: np.ndarray, ntok: np.ndarray, want: float, rng: np.random.Generator) -> tuple[list[int], int, int]:
    """Whole documents, in shuffled passes, until `want` tokens; returns (doc_idx list, tokens, passes)."""
    picked: list[int] = []
    got, passes = 0, 0
    total = int(ntok.sum())
    if want <= 0 or total <= 0:
        return picked, 0, 0
    while got < want:
        passes += 1
        order = rng.permutation(len(doc_idx))
        cum = got + np.cumsum(ntok[order])
        # Take documents until the one that crosses the target, keeping it only if that lands closer.
        stop = int(np.searchsorted(cum, want))
        if stop < len(order) and abs(cum[stop] - want) <= abs(want - (cum[stop - 1] if stop else got)):
            stop += 1
        take = order[:stop] if stop < len(order) else order
        picked.extend(doc_idx[take].tolist())
        got = int(got + ntok[take].sum())
        if stop < len(order):
            break
    return picked, got, passes


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    os.replace(tmp, path)


def export_search(ws: Workspace, search_id: str, out_dir: str | Path | None = None, *, tokens: int | None = None,
                  config: ClimbConfig | None = None, which: str = "final") -> dict[str, Any]:
    """Write weights.json, Parquet shards of about `tokens` tokens sampled by the weights, and manifest.json.

    which: 'final' (the search's answer), 'best' (the best trained run) or a run_id. Returns the manifest."""
    config = config or ws.load_config()
    ecfg = config.export
    tokens = int(tokens if tokens is not None else ecfg.tokens)
    row, weights, source = _weights(ws, search_id, which)
    ids = [int(i) for i in row["cluster_ids"]]
    labels = [str(x) for x in row["cluster_labels"]]
    export_id = f"{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    out = Path(out_dir) if out_dir is not None else ws.exports_dir / export_id
    out.mkdir(parents=True, exist_ok=True)

    base = {"export_id": export_id, "search_id": search_id, "strategy": row["strategy"], "source": source,
            "target": json.loads(row["target_json"] or "[]"), "cluster_ids": ids, "cluster_labels": labels,
            "weights": [float(w) for w in weights]}
    (out / "weights.json").write_text(json.dumps(base, indent=2), encoding="utf-8")

    docs = ws.query_df(
        """SELECT dc.cluster_id, dc.doc_idx, coalesce(s.n_tokens_est, 1) AS ntok
           FROM doc_clusters dc LEFT JOIN doc_stats s USING (doc_idx)
           WHERE dc.cluster_id IN (SELECT unnest(?)) ORDER BY dc.cluster_id, dc.doc_idx""", [ids])
    rng = np.random.default_rng([ecfg.seed, 11])
    sel_idx, sel_cluster, per_cluster = [], [], []
    by_cluster = {c: g for c, g in docs.groupby("cluster_id")}
    for cid, label, w in zip(ids, labels, weights):
        g = by_cluster.get(cid)
        want = w * tokens
        if g is None or g.empty:
            if want > 0:
                raise ExportError(f"cluster {cid} ({label}) has weight {w:.4f} but no documents now; "
                                  "it was edited after the search; re-run the search or export another run")
            per_cluster.append({"cluster_id": cid, "label": label, "weight": float(w), "docs": 0, "tokens": 0,
                                "available_tokens": 0, "epochs": 0.0, "passes": 0})
            continue
        ntok = np.maximum(g["ntok"].to_numpy(dtype=np.int64), 1)
        picked, got, passes = _sample_cluster(g["doc_idx"].to_numpy(), ntok, want, rng)
        sel_idx.extend(picked)
        sel_cluster.extend([cid] * len(picked))
        per_cluster.append({"cluster_id": cid, "label": label, "weight": float(w), "docs": len(picked), "tokens": got,
                            "available_tokens": int(ntok.sum()), "epochs": round(got / int(ntok.sum()), 4), "passes": passes})

    # One global shuffle so every shard holds the mixture, not one cluster after another.
    order = rng.permutation(len(sel_idx))
    sel = pd.DataFrame({"ord": np.arange(len(sel_idx)), "doc_idx": np.asarray(sel_idx, dtype=np.int64)[order],
                        "cluster_id": np.asarray(sel_cluster, dtype=np.int32)[order]})
    label_df = pd.DataFrame({"cluster_id": np.asarray(ids, dtype=np.int32), "cluster_label": labels})
    files = []
    shard_docs = max(1, int(ecfg.shard_docs))
    for k, start in enumerate(range(0, len(sel), shard_docs)):
        part = sel.iloc[start:start + shard_docs]
        with ws.connect() as con:
            con.register("sel", part)
            con.register("lab", label_df)
            shard = con.execute(
                """SELECT d.text, d.doc_id, sel.cluster_id, lab.cluster_label FROM sel
                   JOIN documents d ON d.doc_idx = sel.doc_idx JOIN lab ON lab.cluster_id = sel.cluster_id
                   ORDER BY sel.ord""").df()
        name = f"part-{k:05d}.parquet"
        _write_parquet(shard, out / name)
        files.append({"file": name, "docs": len(shard)})

    n_tokens = int(sum(c["tokens"] for c in per_cluster))
    manifest = {**base, "requested_tokens": tokens, "tokens": n_tokens, "docs": len(sel), "token_count": "doc_stats.n_tokens_est",
                "clusters": per_cluster, "files": files, "created_at": dt.datetime.now().isoformat(), "seed": ecfg.seed,
                "load_with": "datasets.load_dataset('parquet', data_files='<dir>/part-*.parquet')"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    with ws.connect() as con:
        con.execute("INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [export_id, search_id, str(out.resolve()), n_tokens, len(sel), json.dumps(manifest), dt.datetime.now()])
    return manifest
