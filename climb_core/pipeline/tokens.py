"""The tokens stage: one tokenizer for the corpus, then each active cluster tokenised once.

A cluster becomes two flat token files (nanoGPT's `train.bin`/`val.bin`): every document's ids
followed by the end-of-text token, uint16 when the vocabulary fits. A mixture is then only weights
over these files, so proxy runs never touch the text again.

Layout under WS/tokens/:
    tokenizer.json              the tokenizer in use (trained here, or a copy of the user's own)
    tokenizer.meta.json         what it was trained from, so an unchanged setting does not retrain it
    <tokenizer-hash>/cluster-<id>.{train,val}.bin
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError, StageOutcome
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline.registry import READS, UPSTREAM

STAGE = "tokens"
EOT = "<|endoftext|>"
# Special tokens we accept as the document separator of a user's own tokenizer, in order of preference.
EOT_CANDIDATES = (EOT, "</s>", "<eos>", "<|end_of_text|>", "[SEP]")
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "tokenizer.meta.json"
DOC_BATCH = 2048


@dataclass
class ClusterTokens:
    cluster_id: int
    label: str
    train_path: Path
    val_path: Path
    n_train: int
    n_val: int
    dtype: str  # numpy dtype name of the files: uint16 or uint32


# --------------------------------------------------------------------------- tokenizer

def train_tokenizer(texts: Iterable[str], vocab_size: int, path: str | Path):
    """Train a byte-level BPE (GPT-2 style) with one end-of-text special token and save it to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
        # All 256 bytes are in the vocabulary, so any text (any script, any emoji) round-trips.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok


def eot_id(tokenizer) -> int:
    for name in EOT_CANDIDATES:
        tid = tokenizer.token_to_id(name)
        if tid is not None:
            return int(tid)
    raise StageError(f"the tokenizer has no end-of-text token (looked for {', '.join(EOT_CANDIDATES)}); "
                     f"add one as a special token to your tokenizer.json")


def tokenizer_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size < 65536 else "uint32"


def load_tokenizer(ws: Workspace):
    """The tokenizer the tokens stage used (WS/tokens/tokenizer.json)."""
    from tokenizers import Tokenizer

    path = ws.tokens_dir / TOKENIZER_FILE
    if not path.exists():
        raise StageError(f"no tokenizer in {ws.tokens_dir}; run `climb tokens {ws.root}` first")
    return Tokenizer.from_file(str(path))


def _ensure_tokenizer(ws: Workspace, config: ClimbConfig) -> tuple[Any, str]:
    """Train (or copy in) the tokenizer unless the one on disk came from the same settings."""
    from tokenizers import Tokenizer

    cfg = config.tokenizer
    path = ws.tokens_dir / TOKENIZER_FILE
    meta_path = ws.tokens_dir / META_FILE
    if cfg.path:
        user = Path(cfg.path).expanduser()
        if not user.exists():
            raise StageError(f"tokenizer.path = {cfg.path!r} does not exist; give a tokenizer.json file or leave it empty")
        wanted = {"source": str(user.resolve()), "sha": tokenizer_hash(user)}
    else:
        with ws.connect() as con:
            n_docs = con.execute("SELECT count(*) FROM documents").fetchone()[0]
        ingest = stages.stage_record(ws, "ingest")
        wanted = {"source": "trained", "vocab_size": cfg.vocab_size, "sample_docs": cfg.sample_docs,
                  "seed": cfg.seed, "n_docs": int(n_docs), "ingest": ingest.fingerprint if ingest else None}
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == wanted:
        tok = Tokenizer.from_file(str(path))
    elif cfg.path:
        shutil.copyfile(wanted["source"], path)
        tok = Tokenizer.from_file(str(path))
    else:
        # Hash order is a deterministic, seeded sample that needs no full sort of the texts in Python.
        with ws.connect() as con:
            texts = [r[0] for r in con.execute(
                "SELECT text FROM documents ORDER BY hash(doc_id || ?) LIMIT ?",
                [str(cfg.seed), cfg.sample_docs]).fetchall()]
        if not texts:
            raise StageError(f"no documents in {ws.root}; run `climb ingest` first")
        tok = train_tokenizer(texts, cfg.vocab_size, path)
    eot_id(tok)
    meta_path.write_text(json.dumps(wanted))
    return tok, tokenizer_hash(path)


# --------------------------------------------------------------------------- stage

def _stage_inputs(ws: Workspace, tok_cfg: dict[str, Any]) -> dict[str, Any]:
    """What the token files depend on besides the settings: active clusters, the edit log, the corpus."""
    with ws.connect() as con:
        clusters = con.execute(
            "SELECT cluster_id, size_docs FROM clusters WHERE state = 'active' ORDER BY cluster_id").fetchall()
        n_edits, max_edit, n_undone = con.execute(
            "SELECT count(*), max(edit_id), count(*) FILTER (WHERE undone) FROM edits").fetchone()
    digest = hashlib.sha256(json.dumps(clusters, default=int).encode()).hexdigest()[:16]
    upstream = {}
    for name in ("ingest", "refine"):
        rec = stages.stage_record(ws, name)
        upstream[name] = rec.fingerprint if rec else None
    user_tok = Path(tok_cfg.get("path") or "").expanduser()
    return {"clusters": digest, "edits": [int(n_edits), max_edit, int(n_undone or 0)], "upstream": upstream,
            "tokenizer_file": tokenizer_hash(user_tok) if tok_cfg.get("path") and user_tok.is_file() else None}


def validation_mask(doc_ids: list[str], val_fraction: float, seed: int) -> np.ndarray:
    """Deterministic per-document split (stable under edits that move documents between clusters)."""
    u = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{d}".encode(), digest_size=8).digest(), "little")
                  for d in doc_ids], dtype=np.float64) / 2.0 ** 64
    is_val = u < val_fraction
    if len(doc_ids) >= 2:
        # A cluster of two or more documents always has some held-out text and some training text.
        if not is_val.any():
            is_val[np.argmin(u)] = True
        if is_val.all():
            is_val[np.argmax(u)] = False
    return is_val


def _tokenise_cluster(ws: Workspace, tok, eot: int, dtype: str, cluster_id: int, out_dir: Path,
                      val_fraction: float, seed: int) -> dict[str, tuple[Path, int, int]]:
    with ws.connect() as con:
        ids = con.execute(
            "SELECT d.doc_idx, d.doc_id FROM doc_clusters c JOIN documents d USING (doc_idx) "
            "WHERE c.cluster_id = ? ORDER BY d.doc_idx", [cluster_id]).fetchall()
    doc_idx = np.array([r[0] for r in ids], dtype=np.int64)
    is_val = validation_mask([r[1] for r in ids], val_fraction, seed)
    paths = {s: out_dir / f"cluster-{cluster_id}.{s}.bin" for s in ("train", "val")}
    tmp = {s: p.with_suffix(".bin.tmp") for s, p in paths.items()}
    counts = {"train": [0, 0], "val": [0, 0]}
    handles = {s: open(p, "wb") for s, p in tmp.items()}
    try:
        for lo in range(0, len(doc_idx), DOC_BATCH):
            chunk = pd.DataFrame({"doc_idx": doc_idx[lo:lo + DOC_BATCH], "val": is_val[lo:lo + DOC_BATCH]})
            # One short connection per batch; the range filter lets DuckDB skip row groups of documents.
            with ws.connect() as con:
                con.register("chunk", chunk)
                rows = con.execute(
                    "SELECT coalesce(d.text, ''), c.val FROM documents d JOIN chunk c USING (doc_idx) "
                    "WHERE d.doc_idx BETWEEN ? AND ? ORDER BY d.doc_idx",
                    [int(chunk.doc_idx.min()), int(chunk.doc_idx.max())]).fetchall()
            encodings = tok.encode_batch([r[0] for r in rows], add_special_tokens=False)
            for split in ("train", "val"):
                parts = []
                for (_, val), enc in zip(rows, encodings):
                    if bool(val) == (split == "val"):
                        parts.append(np.asarray(enc.ids, dtype=dtype))
                        parts.append(np.array([eot], dtype=dtype))
                if parts:
                    arr = np.concatenate(parts)
                    arr.tofile(handles[split])
                    counts[split][0] += len(arr)
                    counts[split][1] += len(parts) // 2
    finally:
        for h in handles.values():
            h.close()
    for split in ("train", "val"):
        os.replace(tmp[split], paths[split])
    return {s: (paths[s], counts[s][0], counts[s][1]) for s in ("train", "val")}


def run_tokens(ws: Workspace, config: ClimbConfig, *, force: bool = False, progress: bool = True) -> StageOutcome:
    """Train the tokenizer if needed, then write train/val token files for every active cluster."""
    from tqdm.auto import tqdm

    from climb_core.pipeline.run import require_current

    # Tokenising clusters whose documents were re-ingested since would write files of the wrong text.
    require_current(ws, "refine", config=config)
    cfg_dict = config.section_dict("tokenizer")
    fp = stages.fingerprint(ws, STAGE, cfg_dict, _stage_inputs(ws, cfg_dict), upstream=UPSTREAM[STAGE])
    repair = False
    if not force and stages.is_current(ws, STAGE, fp):
        # Up to date by the record; by the files only if every cluster's token files are there, whole.
        if not _broken_clusters(ws):
            return StageOutcome(STAGE, skipped=True)
        repair = True  # resume: re-tokenise those clusters, keep the others
    with ws.connect() as con:
        active = con.execute(
            "SELECT cluster_id FROM clusters WHERE state = 'active' ORDER BY cluster_id").fetchall()
    if not active:
        raise StageError(f"no active clusters in {ws.root}; run `climb refine {ws.root}` first (or restore pruned clusters)")
    active_ids = [int(r[0]) for r in active]

    broken = _broken_clusters(ws) if repair else set()
    with stages.run_stage(ws, STAGE, cfg_dict, fp, upstream=READS[STAGE], repair=repair) as run:
        tok, thash = _ensure_tokenizer(ws, config)
        eot = eot_id(tok)
        dtype = token_dtype(tok.get_vocab_size())
        out_dir = ws.tokens_dir / thash
        out_dir.mkdir(parents=True, exist_ok=True)
        done = stages.finished_shards(ws, STAGE) if run.resumed else {}
        if not run.resumed:
            with ws.connect() as con:
                con.execute("DELETE FROM token_shards")
        total_docs = total_tokens = 0
        for cid in tqdm(active_ids, desc="tokens", unit="cluster", disable=not progress):
            shard = f"cluster-{cid}"
            if (shard in done and cid not in broken
                    and json.loads(done[shard][1] or "{}").get("tokenizer") == thash):
                continue
            res = _tokenise_cluster(ws, tok, eot, dtype, cid, out_dir, config.tokenizer.val_fraction, config.tokenizer.seed)
            rows = pd.DataFrame([{"cluster_id": cid, "split": s, "path": str(p.relative_to(ws.root)),
                                  "n_tokens": n, "n_docs": d, "tokenizer_hash": thash} for s, (p, n, d) in res.items()])
            n_tok = sum(n for _, n, _ in res.values())
            n_doc = sum(d for _, _, d in res.values())
            total_docs += n_doc
            total_tokens += n_tok
            # The rows, the cluster's size and the shard mark commit together: a kill leaves all or none.
            with ws.connect() as con:
                con.begin()
                con.execute("DELETE FROM token_shards WHERE cluster_id = ?", [cid])
                con.register("rows", rows)
                con.execute("INSERT INTO token_shards SELECT cluster_id, split, path, n_tokens, n_docs, tokenizer_hash FROM rows")
                con.execute("UPDATE clusters SET size_tokens = ? WHERE cluster_id = ?", [n_tok, cid])
                stages.mark_shard(ws, STAGE, shard, n_doc, {"tokenizer": thash}, con=con)
                con.commit()
        with ws.connect() as con:
            # Clusters no longer active (pruned, merged away) keep no token rows.
            con.execute(f"DELETE FROM token_shards WHERE cluster_id NOT IN ({','.join(map(str, active_ids))})")
            docs, toks = con.execute("SELECT sum(n_docs), sum(n_tokens) FROM token_shards").fetchone()
        run.rows_in = int(docs or 0)
        run.rows_out = int(toks or 0)
        run.message = (f"{len(active_ids)} clusters, {int(toks or 0):,} tokens (workspace tokenizer), vocab {tok.get_vocab_size()} "
                       f"(tokenizer {thash}; this run tokenised {total_docs} docs)")
    return StageOutcome(STAGE, skipped=False, rows_in=run.rows_in, rows_out=run.rows_out, message=run.message)


def _broken_clusters(ws: Workspace) -> set[int]:
    """Clusters whose recorded token files are missing or of another size than their token count
    (every cluster when the tokenizer file is gone)."""
    with ws.connect() as con:
        rows = con.execute("SELECT cluster_id, path, n_tokens FROM token_shards").fetchall()
    tok_path = ws.tokens_dir / TOKENIZER_FILE
    if not tok_path.exists():
        return {int(r[0]) for r in rows} or {-1}
    from tokenizers import Tokenizer

    itemsize = np.dtype(token_dtype(Tokenizer.from_file(str(tok_path)).get_vocab_size())).itemsize
    broken = set()
    for cid, path, n in rows:
        p = ws.root / path
        if not p.exists() or p.stat().st_size != int(n) * itemsize:
            broken.add(int(cid))
    return broken


# --------------------------------------------------------------------------- readers

def _require_current(ws: Workspace) -> None:
    rec = stages.stage_record(ws, STAGE)
    hint = f"run `climb tokens {ws.root}`"
    if rec is None or rec.status != "done":
        raise StageError(f"the clusters have no token files yet; {hint} first")
    # Recomputed with the settings the stage last ran with: a changed cluster state (an edit, a new
    # refine) makes the files stale even if nobody changed a setting.
    cfg_dict = json.loads(rec.config_json)
    fp = stages.fingerprint(ws, STAGE, cfg_dict, _stage_inputs(ws, cfg_dict), upstream=UPSTREAM[STAGE])
    if fp != rec.fingerprint:
        raise StageError(f"the token files are stale (the clusters changed since they were written); {hint} again")


def cluster_token_files(ws: Workspace) -> list[ClusterTokens]:
    """Train/val token files of every active cluster, in cluster_id order."""
    _require_current(ws)
    with ws.connect() as con:
        df = con.execute("""
            SELECT c.cluster_id, coalesce(c.label, c.auto_label, 'cluster ' || c.cluster_id) AS label,
                   t.path AS train_path, v.path AS val_path, t.n_tokens AS n_train, v.n_tokens AS n_val,
                   t.tokenizer_hash
            FROM clusters c
            LEFT JOIN token_shards t ON t.cluster_id = c.cluster_id AND t.split = 'train'
            LEFT JOIN token_shards v ON v.cluster_id = c.cluster_id AND v.split = 'val'
            WHERE c.state = 'active' ORDER BY c.cluster_id""").df()
    tok_path = ws.tokens_dir / TOKENIZER_FILE
    if df.train_path.isna().any() or df.val_path.isna().any() or not tok_path.exists():
        raise StageError(f"some active clusters have no token files; run `climb tokens {ws.root}`")
    thash = tokenizer_hash(tok_path)
    if set(df.tokenizer_hash) != {thash}:
        raise StageError(f"the token files were written with another tokenizer; run `climb tokens {ws.root} --force`")
    from tokenizers import Tokenizer

    dtype = token_dtype(Tokenizer.from_file(str(tok_path)).get_vocab_size())
    out = []
    for r in df.itertuples():
        item = ClusterTokens(int(r.cluster_id), str(r.label), ws.root / r.train_path, ws.root / r.val_path,
                             int(r.n_train), int(r.n_val), dtype)
        for p, n in ((item.train_path, item.n_train), (item.val_path, item.n_val)):
            if not p.exists() or p.stat().st_size != n * np.dtype(dtype).itemsize:
                raise StageError(f"{p} is missing or has the wrong size; run `climb tokens {ws.root} --force`")
        out.append(item)
    return out


def token_prior(ws: Workspace) -> tuple[list[int], np.ndarray]:
    """Active cluster ids and each one's share of the training tokens (the natural mixture)."""
    files = cluster_token_files(ws)
    n = np.array([f.n_train for f in files], dtype=np.float64)
    if n.sum() <= 0:
        raise StageError(f"the active clusters have no training tokens; run `climb tokens {ws.root} --force`")
    return [f.cluster_id for f in files], n / n.sum()
