"""Export a search's mixture: weights.json, and a dataset sampled by those weights as Parquet shards.

Each cluster contributes whole documents until it reaches its share of the requested tokens. Tokens
are counted with the workspace tokenizer, the way the tokens stage counts them (a document's tokens
plus its end-of-text token), because the searched weights are shares of those tokens: an estimate
from characters would shift every cluster's share by how its text tokenises. A cluster too small for
its share is repeated, reshuffled each pass, and the manifest records how many epochs that took, so a
user sees when a mixture leans on repetition.

The documents the tokens stage held out (each cluster's validation split, what `cluster:ID` targets
score on) are left out, and so are training documents whose text is a copy of one: a model trained on
the export is then still measured on text it has not seen.

The shards (columns text, doc_id, cluster_id, cluster_label) load with
`datasets.load_dataset("parquet", data_files=...)`. For Megatron-LM and NeMo the export tokenises, with
the trainer's tokenizer, every training document of each weighted cluster once (or, with `sample`, the
shards' documents) into Megatron indexed datasets, and the held-out documents into a validation one;
climb_core.export.formats writes the blends and the Hugging Face card beside them. The folder is built
under a temporary name and moved into place when complete, so a reader never sees files of two
exports mixed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from climb_core.export import formats as export_formats
from climb_core.proxy import trainer_files

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig, TokenizerConfig

DOC_BATCH = 2048  # documents per tokenizer batch (and per text query)


class ExportError(RuntimeError):
    """The search has no mixture to export (not finished, unknown run), a cluster has no documents, the
    token files are missing, or the output folder cannot be used."""


# --------------------------------------------------------------------------- the mixture

def _weights(ws: Workspace, search_id: str, which: str) -> tuple[dict[str, Any], np.ndarray, str, list[str]]:
    """(search row, normalised weights, where they came from, the runs whose scores describe them)."""
    df = ws.query_df("SELECT * FROM searches WHERE search_id = ?", [search_id])
    if df.empty:
        raise ExportError(f"no search {search_id!r} in {ws.root}")
    row = df.iloc[0].to_dict()
    if which == "final":
        w, source = row["final_weights"], "final mixture"
        if w is None or isinstance(w, float):
            raise ExportError(f"search {search_id} has no final mixture yet (status {row['status']}); "
                              "finish it, or export which='best' (the best trained run)")
        run_ids = _final_runs(ws, search_id, row)
    else:
        sql = ("SELECT run_id, weights FROM proxy_runs WHERE search_id = ? AND status = 'done' ORDER BY score DESC LIMIT 1"
               if which == "best" else "SELECT run_id, weights FROM proxy_runs WHERE search_id = ? AND run_id = ?")
        rows = ws.query_df(sql, [search_id] if which == "best" else [search_id, which])
        if rows.empty:
            raise ExportError(f"search {search_id} has no {'finished run' if which == 'best' else 'run ' + which} to export")
        w, source = rows.iloc[0]["weights"], f"run {rows.iloc[0]['run_id']}"
        run_ids = [str(rows.iloc[0]["run_id"])]
    w = np.asarray(w, dtype=np.float64)
    return row, w / w.sum(), source, run_ids


def _final_json(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("final_json")
    return json.loads(raw) if isinstance(raw, str) and raw else {}


def _final_runs(ws: Workspace, search_id: str, row: dict[str, Any]) -> list[str]:
    """The verification runs when the search answered with its verified optimum, else its best run."""
    final = _final_json(row)
    if final.get("chosen") == "optimum":
        ids = ws.query_df("SELECT run_id FROM proxy_runs WHERE search_id = ? AND purpose = 'verify' AND status = 'done' "
                          "ORDER BY idx", [search_id])["run_id"].tolist()
        if ids:
            return [str(i) for i in ids]
    best = (final.get("best_run") or {}).get("run_id") or row.get("best_run_id")
    return [str(best)] if isinstance(best, str) and best else []


def _scores(ws: Workspace, search_id: str, row: dict[str, Any], which: str, run_ids: list[str]) -> dict[str, Any]:
    """The headline score of the exported mixture and each target metric, averaged over `run_ids`."""
    runs = ws.query_df("SELECT run_id, score, scores_json FROM proxy_runs WHERE search_id = ? AND run_id IN (SELECT unnest(?))",
                       [search_id, run_ids]) if run_ids else pd.DataFrame(columns=["run_id", "score", "scores_json"])
    parts: dict[str, list[float]] = {}
    for raw in runs["scores_json"]:
        for k, v in (json.loads(raw) if isinstance(raw, str) else {}).items():
            if isinstance(v, (int, float)):
                parts.setdefault(k, []).append(float(v))
    final = _final_json(row) if which == "final" else {}
    score = final.get("verified")
    if score is None and runs["score"].notna().any():
        score = float(runs["score"].dropna().mean())
    return {"score": None if score is None else float(score), "runs": list(run_ids),
            "how": final.get("how") or ("run score" if which != "final" else None), "note": final.get("note") or None,
            "components": {k: float(np.mean(v)) for k, v in sorted(parts.items())}}


# --------------------------------------------------------------------------- tokens and held-out text

def _token_setup(ws: Workspace) -> tuple[Any, str, float, int, dict[int, int]]:
    """(tokenizer, its hash, the stage's val_fraction and seed, train tokens per active cluster)."""
    from climb_core.pipeline.tokens import TOKENIZER_FILE, cluster_token_files, load_tokenizer, tokenizer_hash

    try:
        files = cluster_token_files(ws)
    except StageError as err:
        raise ExportError("export counts tokens with the workspace tokenizer and leaves out the held-out "
                          f"documents, so it needs current token files: {err}") from err
    # The split the stage last wrote, not today's settings: those are the documents targets score on.
    cfg = json.loads(stages.stage_record(ws, "tokens").config_json or "{}")
    default = TokenizerConfig()
    return (load_tokenizer(ws), tokenizer_hash(ws.tokens_dir / TOKENIZER_FILE),
            float(cfg.get("val_fraction", default.val_fraction)), int(cfg.get("seed", default.seed)),
            {f.cluster_id: f.n_train for f in files})


def _split(ws: Workspace, cluster_ids: list[int], val_fraction: float, seed: int) -> pd.DataFrame:
    """cluster_id, doc_idx, val for every document of `cluster_ids`: the tokens stage's own split."""
    # The same function on the same per-cluster lists (doc_idx order) the stage used, so `val` marks
    # exactly the documents in each cluster's val.bin.
    from climb_core.pipeline.tokens import validation_mask

    docs = ws.query_df(
        """SELECT c.cluster_id, d.doc_idx, d.doc_id FROM doc_clusters c JOIN documents d USING (doc_idx)
           WHERE c.cluster_id IN (SELECT unnest(?)) ORDER BY c.cluster_id, d.doc_idx""", [cluster_ids])
    val = np.zeros(len(docs), dtype=bool)
    for _, g in docs.groupby("cluster_id", sort=False):
        val[g.index.to_numpy()] = validation_mask(g["doc_id"].astype(str).tolist(), val_fraction, seed)
    return pd.DataFrame({"cluster_id": docs["cluster_id"].to_numpy(dtype=np.int64),
                         "doc_idx": docs["doc_idx"].to_numpy(dtype=np.int64), "val": val})


def _candidates(ws: Workspace, split: pd.DataFrame, cluster_ids: list[int]) -> pd.DataFrame:
    """Training documents of `cluster_ids`, each flagged `dup` when its text equals any held-out
    document's, and `contaminated` when `climb decontam --drop` flagged it (benchmark overlap)."""
    with ws.connect() as con:
        con.register("split", split)
        has_flags = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() AND table_name = 'decontam_flags'"
                                ).fetchone()[0]
        flagged = (set(int(i) for (i,) in con.execute("SELECT DISTINCT doc_idx FROM decontam_flags").fetchall())
                   if has_flags else set())
        df = con.execute(
            """WITH held AS (SELECT DISTINCT md5(coalesce(d.text, '')) AS h FROM split s
                             JOIN documents d USING (doc_idx) WHERE s.val)
               SELECT s.cluster_id, s.doc_idx, md5(coalesce(d.text, '')) IN (SELECT h FROM held) AS dup
               FROM split s JOIN documents d USING (doc_idx)
               WHERE NOT s.val AND s.cluster_id IN (SELECT unnest(?))
               ORDER BY s.cluster_id, s.doc_idx""", [cluster_ids]).df()
    df["contaminated"] = df["doc_idx"].isin(flagged)
    return df


def _token_counts(ws: Workspace, tok, doc_idx: np.ndarray) -> np.ndarray:
    """Each document's tokens plus one end-of-text token, as the tokens stage writes them."""
    counts = np.zeros(len(doc_idx), dtype=np.int64)
    for lo in range(0, len(doc_idx), DOC_BATCH):
        chunk = pd.DataFrame({"doc_idx": doc_idx[lo:lo + DOC_BATCH], "pos": np.arange(lo, min(lo + DOC_BATCH, len(doc_idx)))})
        with ws.connect() as con:
            con.register("chunk", chunk)
            # The range filter lets DuckDB skip row groups, as in the tokens stage.
            rows = con.execute(
                "SELECT c.pos, coalesce(d.text, '') FROM documents d JOIN chunk c USING (doc_idx) "
                "WHERE d.doc_idx BETWEEN ? AND ?", [int(chunk.doc_idx.min()), int(chunk.doc_idx.max())]).fetchall()
        encodings = tok.encode_batch([r[1] for r in rows], add_special_tokens=False)
        counts[[r[0] for r in rows]] = [len(e.ids) + 1 for e in encodings]
    return counts


# --------------------------------------------------------------------------- sampling

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


def _sample(ws: Workspace, tok, ids: list[int], labels: list[str], weights: np.ndarray, tokens: int,
            split: pd.DataFrame, n_train: dict[int, int], rng: np.random.Generator,
            progress: bool = False) -> tuple[list[int], list[int], list[dict]]:
    """(doc_idx picked, their cluster ids, one report per cluster) for `tokens` tokens by `weights`."""
    from tqdm.auto import tqdm
    cand = _candidates(ws, split, [c for c, w in zip(ids, weights) if w * tokens >= 1])
    by_cluster = {c: g for c, g in cand.groupby("cluster_id")}
    n_docs = split.groupby("cluster_id").size().to_dict()
    n_held = split[split.val].groupby("cluster_id").size().to_dict()
    sel_idx: list[int] = []
    sel_cluster: list[int] = []
    per_cluster = []
    for cid, label, w in tqdm(list(zip(ids, labels, weights)), desc="sample", unit="cluster", disable=not progress):
        want = w * tokens
        if not n_docs.get(cid) and want > 0:
            raise ExportError(f"cluster {cid} ({label}) has weight {w:.4f} but no documents now; "
                              "it was edited after the search; re-run the search or export another run")
        g = by_cluster.get(cid)
        train = g[~(g["dup"].astype(bool) | g["contaminated"])] if g is not None else None
        report = {"cluster_id": cid, "label": label, "weight": float(w), "docs": 0, "distinct_docs": 0, "tokens": 0,
                  "available_tokens": int(n_train.get(cid, 0)), "epochs": 0.0, "passes": 0,
                  "held_out_docs": int(n_held.get(cid, 0)), "held_out_duplicates": int(g["dup"].sum()) if g is not None else 0,
                  "contaminated_excluded": int(g["contaminated"].sum()) if g is not None else 0}
        # Below one token a share cannot take a document, so a vanishing weight costs no tokenising.
        if want >= 1:
            if train is None or train.empty:
                raise ExportError(f"cluster {cid} ({label}) has weight {w:.4f} but every one of its documents is "
                                  "held out (or a copy of held-out text); nothing of it can be exported")
            ntok = _token_counts(ws, tok, train["doc_idx"].to_numpy(dtype=np.int64))
            picked, got, passes = _sample_cluster(train["doc_idx"].to_numpy(), ntok, want, rng)
            sel_idx.extend(picked)
            sel_cluster.extend([cid] * len(picked))
            report.update(docs=len(picked), distinct_docs=len(set(picked)), tokens=got, available_tokens=int(ntok.sum()),
                          epochs=round(got / int(ntok.sum()), 4), passes=passes if picked else 0)
        per_cluster.append(report)
    total = sum(c["tokens"] for c in per_cluster)
    for c in per_cluster:
        c["share"] = round(c["tokens"] / total, 6) if total else 0.0
        c["deviation"] = round(c["share"] - c["weight"], 6)
    return sel_idx, sel_cluster, per_cluster


def repeated_clusters(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The clusters an export repeated (more than one epoch of their training documents), most first."""
    return sorted((c for c in manifest.get("clusters") or [] if c.get("epochs", 0) > 1),
                  key=lambda c: -c["epochs"])


def repetition_warning(c: dict[str, Any]) -> str:
    """One line for a repeated cluster: which one, how many epochs, of how many distinct documents."""
    distinct = c.get("distinct_docs", c.get("docs", 0))
    return (f"cluster #{c['cluster_id']} ({c['label']}) repeated {c['epochs']:.1f}x: its {distinct:,} training "
            f"documents fill {c['share']:.1%} of the dataset; lower its weight, export fewer tokens, or search "
            f"with mixture.max_epochs to cap repetition")


# --------------------------------------------------------------------------- the output folder

def _is_export(path: Path) -> bool:
    try:
        return "export_id" in json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _output_dir(ws: Workspace, out_dir: str | Path | None, export_id: str, force: bool) -> Path:
    """The folder to (re)place, refused where replacing it would lose something that is not an export."""
    root = ws.root.resolve()
    exports = ws.exports_dir.resolve()
    out = (Path(out_dir).expanduser() if out_dir is not None else exports / export_id).resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {out} is a file, not a folder; give a folder to write the export in")
    if out == root or root.is_relative_to(out):
        raise ExportError(f"output folder {out} is the workspace {root} or holds it; the export replaces its "
                          "output folder, so give a folder outside the workspace (or under its exports/)")
    if out.is_relative_to(root) and (out == exports or not out.is_relative_to(exports)):
        raise ExportError(f"output folder {out} is inside the workspace {root} but not a folder under {exports}; "
                          "the export replaces its output folder, so give one outside the workspace or under exports/")
    if out.is_dir() and any(out.iterdir()) and not _is_export(out) and not force:
        raise ExportError(f"output folder {out} is not empty and holds no manifest.json of an earlier export; "
                          "give an empty or new folder, or pass --force to replace its contents")
    # The export is built beside `out` and renamed into place, so it is the parent that must be writable;
    # checked here, before the documents are sampled, rather than failing with a bare PermissionError.
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"output folder {out}: cannot create {parent} ({err.strerror or err})") from err
    # A file written and removed, not os.access: that also catches read-only mounts and immutable folders,
    # which bind root too.
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".climb-write-check-"):
            pass
    except OSError as err:
        raise ExportError(f"output folder {out}: {parent} is not writable ({err.strerror or err}); "
                          "give a folder you can write to") from err
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished folder `tmp` at `out`. A rename cannot replace a non-empty folder, so the old
    one moves aside first and is deleted after: a reader finds the old export or the new one (or, for
    an instant, none), never shards of both."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:6]}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def _shard_rows(ws: Workspace, part: pd.DataFrame, label_df: pd.DataFrame) -> pd.DataFrame:
    """text, doc_id, cluster_id, cluster_label of the rows of `part`, in its `ord` order."""
    with ws.connect() as con:
        con.register("sel", part)
        con.register("lab", label_df)
        return con.execute(
            """SELECT d.text, d.doc_id, sel.cluster_id, lab.cluster_label FROM sel
               JOIN documents d ON d.doc_idx = sel.doc_idx JOIN lab ON lab.cluster_id = sel.cluster_id
               ORDER BY sel.ord""").df()


def _write_shards(ws: Workspace, out: Path, sel: pd.DataFrame, label_df: pd.DataFrame, shard_docs: int,
                  progress: bool = False) -> list[dict]:
    from tqdm.auto import tqdm

    files = []
    starts = range(0, len(sel), shard_docs)
    for k, start in enumerate(tqdm(starts, desc="shards", unit="shard", disable=not progress)):
        shard = _shard_rows(ws, sel.iloc[start:start + shard_docs], label_df)
        name = f"part-{k:05d}.parquet"
        _write_parquet(shard, out / name)
        files.append({"file": name, "docs": len(shard)})
    return files


def _doc_texts(ws: Workspace, doc_idx: np.ndarray, batch: int) -> Iterator[tuple[str, str]]:
    """(text, doc_id) of each of `doc_idx`, in that order (a repeated index gives its document again)."""
    for lo in range(0, len(doc_idx), batch):
        chunk = pd.DataFrame({"doc_idx": doc_idx[lo:lo + batch], "pos": np.arange(lo, min(lo + batch, len(doc_idx)))})
        with ws.connect() as con:
            con.register("chunk", chunk)
            yield from con.execute(
                "SELECT coalesce(d.text, ''), d.doc_id FROM chunk c JOIN documents d USING (doc_idx) "
                "WHERE d.doc_idx BETWEEN ? AND ? ORDER BY c.pos", [int(chunk.doc_idx.min()), int(chunk.doc_idx.max())]).fetchall()


def _trainer_docs(ws: Workspace, ids: list[int], weights: np.ndarray, split: pd.DataFrame, sel: pd.DataFrame,
                  sample: bool) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """({cluster: doc_idx of its training files}, doc_idx of the validation file). Whole clusters: every
    training document of each weighted cluster once (held-out copies and flagged ones left out, as in
    the sample). Sample: the shards' rows of each cluster, repeats included."""
    weighted = [c for c, w in zip(ids, weights) if w > 0]
    if sample:
        per = {int(c): g["doc_idx"].to_numpy(dtype=np.int64) for c, g in sel.groupby("cluster_id", sort=True)}
    else:
        cand = _candidates(ws, split, weighted)
        keep = cand[~(cand["dup"].astype(bool) | cand["contaminated"])]
        per = {int(c): g["doc_idx"].to_numpy(dtype=np.int64) for c, g in keep.groupby("cluster_id", sort=True)}
    per = {c: per[c] for c in weighted if c in per and len(per[c])}
    held = split[split.val & split.cluster_id.isin(list(per))]
    return per, held["doc_idx"].to_numpy(dtype=np.int64)


def _write_trainer_data(ws: Workspace, out: Path, ids: list[int], labels: list[str], weights: np.ndarray,
                        docs: dict[int, np.ndarray], valid: np.ndarray, tokenizer: trainer_files.TrainerTokenizer,
                        batch: int, sample: bool, progress: bool) -> dict[str, Any]:
    """Each cluster's documents as JSONL and as a Megatron indexed dataset in `tokenizer`, and the
    held-out documents likewise; returns the manifest's description of them."""
    from tqdm.auto import tqdm

    label = dict(zip(ids, labels))
    weight = dict(zip(ids, (float(w) for w in weights)))

    def write(name: str, prefix: str, doc_idx: np.ndarray) -> dict[str, Any]:
        jsonl = f"{export_formats.CLUSTER_DIR}/{name}.jsonl"
        n = trainer_files.write_documents_jsonl(out / jsonl, _doc_texts(ws, doc_idx, batch))
        stats = trainer_files.write_tokenized_documents(out / prefix, trainer_files.jsonl_texts(out / jsonl), tokenizer)
        return {"prefix": prefix, "jsonl": jsonl, "docs": n, "tokens": stats["tokens"]}

    clusters = []
    for cid in tqdm(list(docs), desc="trainer files", unit="cluster", disable=not progress):
        clusters.append({"cluster_id": cid, "label": label[cid], "weight": weight[cid],
                         **write(f"cluster-{cid}", export_formats.cluster_prefix(cid), docs[cid])})
    held = (write(export_formats.VALID_NAME, f"{export_formats.CLUSTER_DIR}/{export_formats.VALID_NAME}_text_document", valid)
            if len(valid) else None)
    return {"documents": "sample" if sample else "whole clusters",
            "tokenizer": {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size, "eod": tokenizer.eod,
                          "dtype": trainer_files.indexed_dtype(tokenizer.vocab_size).name},
            "clusters": clusters, "valid": held}


# --------------------------------------------------------------------------- export

def export_search(ws: Workspace, search_id: str, out_dir: str | Path | None = None, *, tokens: int | None = None,
                  config: ClimbConfig | None = None, which: str = "final", force: bool = False,
                  formats: str | list[str] | tuple[str, ...] | None = None, tokenizer: str | None = None,
                  sample: bool | None = None, progress: bool = False) -> dict[str, Any]:
    """Write weights.json, Parquet shards of about `tokens` tokens sampled by the weights, the trainer
    files of `formats` (default all of export_formats.FORMATS) and manifest.json into `out_dir`,
    replacing an earlier export there.

    which: 'final' (the search's answer), 'best' (the best trained run) or a run_id. force: replace a
    non-empty folder that is not an earlier export. tokenizer: the Megatron-LM/NeMo files' tokenizer (a
    Hugging Face tokenizer folder, a tokenizer.json or a locally cached name; default export.tokenizer,
    else the workspace's). sample: those files hold the shards' sample instead of whole clusters
    (default export.sample). Returns the manifest."""
    from climb_core.pipeline.run import require_current

    config = config or ws.load_config()
    # Clusters and token files built before the corpus changed hold other documents than their labels say.
    require_current(ws, "refine", config=config)
    ecfg = config.export
    tokens = int(tokens if tokens is not None else ecfg.tokens)
    if tokens < 1:
        raise ExportError(f"export tokens {tokens}: give a positive number of tokens (--dataset-tokens, export.tokens >= 1)")
    sample = bool(ecfg.sample if sample is None else sample)
    try:
        fmts = export_formats.parse_formats(formats)
    except ValueError as err:
        raise ExportError(str(err)) from err
    row, weights, source, run_ids = _weights(ws, search_id, which)
    ids = [int(i) for i in row["cluster_ids"]]
    labels = [str(x) for x in row["cluster_labels"]]
    export_id = f"{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    out = _output_dir(ws, out_dir, export_id, force)
    tok, thash, val_fraction, seed, n_train = _token_setup(ws)
    trainer_tok = None
    if {"megatron", "nemo"} & set(fmts):
        from climb_core.pipeline.tokens import TOKENIZER_FILE

        try:
            if "megatron" in fmts:
                trainer_files.check_blend_path(str(out))
            trainer_tok = trainer_files.load_trainer_tokenizer(tokenizer if tokenizer is not None else ecfg.tokenizer,
                                                               ws.tokens_dir / TOKENIZER_FILE)
        except trainer_files.TrainerFileError as err:
            raise ExportError(f"cannot write the Megatron-LM/NeMo files of {out}: {err}") from err

    split = _split(ws, sorted(set(ids) | set(n_train)), val_fraction, seed)
    rng = np.random.default_rng([ecfg.seed, 11])
    sel_idx, sel_cluster, per_cluster = _sample(ws, tok, ids, labels, weights, tokens, split, n_train, rng, progress)
    # One global shuffle so every shard holds the mixture, not one cluster after another.
    order = rng.permutation(len(sel_idx))
    sel = pd.DataFrame({"ord": np.arange(len(sel_idx)), "doc_idx": np.asarray(sel_idx, dtype=np.int64)[order],
                        "cluster_id": np.asarray(sel_cluster, dtype=np.int32)[order]})
    label_df = pd.DataFrame({"cluster_id": np.asarray(ids, dtype=np.int32), "cluster_label": labels})
    shard_docs = max(1, int(ecfg.shard_docs))

    base = {"export_id": export_id, "search_id": search_id, "strategy": row["strategy"], "source": source,
            "target": json.loads(row["target_json"] or "[]"), "cluster_ids": ids, "cluster_labels": labels,
            "weights": [float(w) for w in weights]}
    n_tokens = int(sum(c["tokens"] for c in per_cluster))
    tmp = out.with_name(f".{out.name}.tmp-{export_id}")
    try:
        tmp.mkdir()
    except OSError as err:
        raise ExportError(f"output folder {out}: cannot write in {out.parent} ({err.strerror or err})") from err
    try:
        (tmp / "weights.json").write_text(json.dumps(base, indent=2), encoding="utf-8")
        files = _write_shards(ws, tmp, sel, label_df, shard_docs, progress)
        trainer_data = None
        if trainer_tok is not None:
            docs, valid = _trainer_docs(ws, ids, weights, split, sel, sample)
            trainer_data = _write_trainer_data(ws, tmp, ids, labels, weights, docs, valid, trainer_tok,
                                               min(shard_docs, DOC_BATCH), sample, progress)
        cluster_files = [{"cluster_id": c["cluster_id"], "file": c["jsonl"], "docs": c["docs"]}
                         for c in (trainer_data or {}).get("clusters", [])]
        manifest = {**base, "requested_tokens": tokens, "tokens": n_tokens, "docs": len(sel),
                    "token_count": f"tokenizer {thash}: each document's tokens plus one end-of-text token",
                    "tokenizer_hash": thash,
                    "max_share_deviation": max((abs(c["deviation"]) for c in per_cluster), default=0.0),
                    "held_out": {"val_fraction": val_fraction, "seed": seed,
                                 "docs": int(sum(c["held_out_docs"] for c in per_cluster)),
                                 "duplicates": int(sum(c["held_out_duplicates"] for c in per_cluster))},
                    "scores": _scores(ws, search_id, row, which, run_ids),
                    "clusters": per_cluster, "files": files, "cluster_files": cluster_files,
                    "trainer_data": trainer_data,
                    "created_at": dt.datetime.now().isoformat(), "seed": ecfg.seed,
                    "load_with": "datasets.load_dataset('parquet', data_files='<dir>/part-*.parquet')"}
        card = {"license": ecfg.license, "language": ecfg.language, "source_datasets": ecfg.source_datasets,
                "pretty_name": ecfg.pretty_name}
        manifest["formats"] = export_formats.write_formats(tmp, out, manifest, fmts, card)
        if trainer_data is not None and "megatron" in fmts:
            trainer_data["megatron_data_path"] = trainer_files.megatron_data_path(export_formats.blend_pairs(trainer_data, out))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with ws.connect() as con:
        con.execute("INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [export_id, search_id, str(out), n_tokens, len(sel), json.dumps(manifest), dt.datetime.now()])
    return manifest
