"""The ingest stage: input files -> `documents`, `doc_stats` (with quality) and `rejected`.

Each batch of each source is parsed, measured and scored outside any connection, then written to
scratch tables together with its shard record in one transaction; a killed ingest resumes after the
last stored batch. When every batch is stored, optional near-duplicate detection (ingest.near_dup,
climb_core.pipeline.near_dup) lists records that nearly copy an earlier one; then the finalise step removes
exact duplicates (normalised text hash, first occurrence kept) and those near-duplicates, makes
document ids unique, numbers the documents densely in input order and builds new ingest tables
beside the old ones in short connections, then swaps them in with one short transaction, so readers
never see a half-built corpus (see `_finalise`).

Document ids are unique after ingest, by two rules:
- an id given in the input (ingest.id_field) that an earlier kept record already has is a mistake in
  the data: the later record is rejected as `duplicate_id`, naming the file and line of the first;
- ids derived from a file name (`data.jsonl:12` for a record without an id, `doc.txt` for a .txt
  file) collide when files of the same name sit in different folders: every file with such a
  collision has all its derived ids qualified with its path relative to the deepest folder holding
  every input (`a/data.jsonl:12` and `b/data.jsonl:12`). Files without a collision keep the short form.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from climb_core.catalogue import stages
from climb_core.catalogue.workspace import Workspace, transaction
from climb_core.config import ClimbConfig
from climb_core.pipeline.corpus import Batch, Record, Source, derived_id, discover_sources, input_facts, iter_batches
from climb_core.pipeline.quality import combine_quality, heuristic_quality, load_user_scorer
from climb_core.pipeline.registry import READS, UPSTREAM
from climb_core.pipeline.stats import STAT_COLUMNS, batch_stats

STAGE = "ingest"
RAW_DOCS = "ingest_raw"
RAW_REJECTED = "ingest_rejected_raw"
NEAR_DUPS = "ingest_near_dups"

_STAT_SQL = ", ".join(f"{c} {'INTEGER' if c in {'n_chars', 'n_words', 'n_lines', 'stopword_count', 'n_tokens_est'} else 'REAL'}"
                      for c in STAT_COLUMNS)
# Scratch tables of this stage; `shard` ties every row to the batch that wrote it, (src_idx,
# batch_idx, pos) is its place in the input order. `alt_id` is the folder-qualified form of an id
# derived from a file name (NULL for an id given in the input), used if the short form collides.
_SCRATCH = [
    f"""CREATE TABLE IF NOT EXISTS {RAW_DOCS} (
        shard VARCHAR, src_idx INTEGER, batch_idx INTEGER, pos INTEGER, doc_id VARCHAR, alt_id VARCHAR, text VARCHAR,
        source_file VARCHAR, source_line BIGINT, text_hash UBIGINT, preset_cluster VARCHAR, meta_json VARCHAR,
        {_STAT_SQL}, quality_heuristic REAL, quality_user REAL, quality REAL)""",
    # Scratch tables left by a version without alt_id (they outlive a run, emptied).
    f"ALTER TABLE {RAW_DOCS} ADD COLUMN IF NOT EXISTS alt_id VARCHAR",
    f"""CREATE TABLE IF NOT EXISTS {RAW_REJECTED} (
        shard VARCHAR, src_idx INTEGER, batch_idx INTEGER, pos INTEGER, source_file VARCHAR, source_line BIGINT,
        doc_id VARCHAR, reason VARCHAR, detail VARCHAR)""",
]


def text_hash(text: str) -> int:
    """64-bit hash of the text with case and whitespace folded: equal for copies that differ only there."""
    norm = " ".join(text.casefold().split())
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "little")


@contextlib.contextmanager
def _connect(ws: Workspace, memory_limit: str):
    """A catalogue connection whose DuckDB buffer pool is capped: DuckDB otherwise keeps every block
    it wrote cached up to 80% of RAM, so ingest's footprint would grow with the corpus."""
    with ws.connect() as con:
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'")
        yield con


def _shard_name(src: Source, index: int) -> str:
    return f"{src.key}#{index}"


def inputs_root(sources: list[Source]) -> Path:
    """The deepest folder holding every input: derived ids that collide are qualified relative to it."""
    folders = [str(s.path.parent if s.path.is_file() else s.path) for s in sources]
    return Path(os.path.commonpath(folders))


def _qualified_id(src: Source, record: Record, root: Path) -> str | None:
    """The folder-qualified form of a record's id if it was derived from a file name, else None."""
    rel = Path(os.path.relpath(record.source_file, root)).as_posix()
    if src.format == "txt":
        return rel  # a .txt file's id is always its path: there is no id field to read
    if record.doc_id == derived_id(record.source_file, record.source_line):
        return f"{rel}:{record.source_line}"
    return None


def _batch_frames(batch: Batch, src_idx: int, scorer, user_weight: float,
                  root: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of one batch for the scratch tables: documents with stats and quality, and rejections."""
    shard = _shard_name(batch.source, batch.index)
    records = batch.records
    texts = [r.text for r in records]
    root = root if root is not None else inputs_root([batch.source])
    docs = pd.DataFrame({
        "shard": shard, "src_idx": src_idx, "batch_idx": batch.index,
        "pos": np.arange(len(records), dtype=np.int32),
        "doc_id": [r.doc_id for r in records],
        "alt_id": pd.Series([_qualified_id(batch.source, r, root) for r in records], dtype=object),
        "text": texts,
        "source_file": [r.source_file for r in records],
        "source_line": np.array([r.source_line for r in records], dtype=np.int64),
        "text_hash": np.array([text_hash(t) for t in texts], dtype=np.uint64),
        "preset_cluster": pd.Series([r.preset_cluster for r in records], dtype=object),
        "meta_json": pd.Series([r.meta_json for r in records], dtype=object),
    })
    stats = batch_stats(texts)
    heuristic = heuristic_quality(stats)
    user = scorer(texts) if scorer is not None and texts else None
    docs = pd.concat([docs, stats], axis=1)
    docs["quality_heuristic"] = heuristic.astype(np.float32)
    docs["quality_user"] = pd.Series(user, dtype=np.float32) if user is not None else pd.Series([None] * len(records), dtype=object)
    docs["quality"] = combine_quality(heuristic, user, user_weight).astype(np.float32)
    rejected = batch.rejected
    rej = pd.DataFrame({
        "shard": shard, "src_idx": src_idx, "batch_idx": batch.index,
        "pos": np.arange(len(rejected), dtype=np.int32),
        "source_file": [r.source_file for r in rejected],
        "source_line": np.array([r.source_line for r in rejected], dtype=np.int64),
        "doc_id": pd.Series([r.doc_id for r in rejected], dtype=object),
        "reason": [r.reason for r in rejected], "detail": [r.detail for r in rejected],
    })
    return docs, rej


def _one_ahead(batches, frames):
    """(batch, frames(batch)) in input order, the next batch's frames computed on a worker thread
    while the caller stores this one. Storing is DuckDB work (inserts, and the checkpoint when the
    connection ends) that runs without the GIL, and measuring a batch is partly pyarrow, so the two
    share the cores (ingest of 100k pool documents: 43 s one after the other, 33 s so). At most two batches
    are held, and an error in either comes out where the sequential loop would have raised it,
    after every earlier batch was stored."""
    from concurrent.futures import ThreadPoolExecutor

    batches = iter(batches)
    with ThreadPoolExecutor(1, thread_name_prefix="ingest-frames") as pool:
        pending = None
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as err:
                # Reading failed past the batch in hand: that one is stored first, as it would have been.
                if pending is not None:
                    yield pending[0], pending[1].result()
                raise err
            ahead = pool.submit(frames, batch)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, ahead)
        if pending is not None:
            yield pending[0], pending[1].result()


def _store_batch(ws: Workspace, shard: str, docs: pd.DataFrame, rej: pd.DataFrame, memory_limit: str = "") -> None:
    with _connect(ws, memory_limit) as con, transaction(con):
        if len(docs):
            con.register("batch_docs", docs)
            con.execute(f"INSERT INTO {RAW_DOCS} BY NAME SELECT * FROM batch_docs")
        if len(rej):
            con.register("batch_rej", rej)
            con.execute(f"INSERT INTO {RAW_REJECTED} BY NAME SELECT * FROM batch_rej")
        stages.mark_shard(ws, STAGE, shard, len(docs) + len(rej), {"docs": len(docs), "rejected": len(rej)}, con=con)


def _prepare_scratch(ws: Workspace, resumed: bool) -> None:
    with ws.connect() as con:
        for stmt in _SCRATCH:
            con.execute(stmt)
        if resumed:
            # Batches commit with their shard record, so orphans cannot normally exist; this keeps
            # resume exact even for rows written by an older, non-transactional version.
            for table in (RAW_DOCS, RAW_REJECTED):
                con.execute(f"DELETE FROM {table} WHERE shard NOT IN "
                            "(SELECT shard FROM stage_shards WHERE stage = ?)", [STAGE])
        else:
            con.execute(f"DELETE FROM {RAW_DOCS}")
            con.execute(f"DELETE FROM {RAW_REJECTED}")
        con.execute(f"DROP TABLE IF EXISTS {NEAR_DUPS}")


def _find_near_duplicates(ws: Workspace, cfg, progress: bool) -> int:
    """Write NEAR_DUPS: each stored record that nearly copies an earlier one, and which one it copies.

    Runs before finalise and reads one batch per short read, so the catalogue's write lock is not
    held while signatures are computed. Exact copies (same text hash) are left to exact dedup.
    """
    from climb_core.pipeline.near_dup import find_near_duplicates

    with ws.connect() as con:
        batches = con.execute(f"SELECT DISTINCT src_idx, batch_idx FROM {RAW_DOCS} ORDER BY ALL").fetchall()
        total = con.execute(f"SELECT count(*) FROM {RAW_DOCS}").fetchone()[0]

    def records():
        seen: set[int] = set()
        with tqdm(total=total, desc="near-duplicates", unit="doc", disable=not progress) as bar:
            for src_idx, batch_idx in batches:
                with ws.connect() as con:
                    rows = con.execute(f"SELECT pos, text, text_hash FROM {RAW_DOCS} WHERE src_idx = ? AND batch_idx = ? "
                                       "ORDER BY pos", [src_idx, batch_idx]).fetchall()
                for pos, text, h in rows:
                    if not (cfg.dedup and h in seen):
                        seen.add(h)
                        yield (src_idx, batch_idx, pos), text
                bar.update(len(rows))

    found = list(find_near_duplicates(records(), threshold=cfg.near_dup_threshold, ngram=cfg.near_dup_ngram))
    frame = pd.DataFrame({
        "src_idx": [d.key[0] for d in found], "batch_idx": [d.key[1] for d in found], "pos": [d.key[2] for d in found],
        "k_src": [d.kept_key[0] for d in found], "k_batch": [d.kept_key[1] for d in found],
        "k_pos": [d.kept_key[2] for d in found], "jaccard": [d.jaccard for d in found]},
        columns=["src_idx", "batch_idx", "pos", "k_src", "k_batch", "k_pos", "jaccard"])
    frame = frame.astype({c: np.int32 for c in frame.columns if c != "jaccard"} | {"jaccard": np.float64})
    with ws.connect() as con, transaction(con):
        con.execute(f"DROP TABLE IF EXISTS {NEAR_DUPS}")
        con.register("near_frame", frame)
        con.execute(f"CREATE TABLE {NEAR_DUPS} AS SELECT * FROM near_frame")
    return len(found)


_ORDER = "src_idx, batch_idx, pos"


# Staging tables of the finalise step: the new numbering, the new rejections, and the new
# documents/doc_stats, which replace the catalogue's tables in one short transaction at the end.
_ORDER_TABLE = "ingest_final_order"
_NEW_REJECTED = "ingest_new_rejected"
_NEW_TABLES = {"documents": "ingest_new_documents", "doc_stats": "ingest_new_doc_stats"}


def _finalise(ws: Workspace, dedup: bool, memory_limit: str = "", near_dups: bool = False) -> dict[str, int]:
    """Deduplicate, number documents densely and replace documents/doc_stats/rejected in one go.

    Only narrow keys are windowed and sorted; texts are copied batch by batch in input order, so
    memory stays at about one batch however large the corpus (one big INSERT ... ORDER BY would sort
    every text at once).

    The catalogue is not held for the whole of it (a search worker waits on every connection): one
    connection numbers the documents and works out the rejections into staging tables, each batch is
    copied into new documents/doc_stats tables in a connection of its own, and a last, short
    transaction swaps the new tables in and replaces the ingest rejections. Until that swap readers
    see the previous corpus; a kill before it leaves only staging tables, dropped on the next run.
    """
    stat_cols = ", ".join(f"r.{c}" for c in STAT_COLUMNS)
    with _connect(ws, memory_limit) as con, transaction(con):
        for table in (_ORDER_TABLE, _NEW_REJECTED, *_NEW_TABLES.values()):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        if dedup:
            con.execute(f"""CREATE TEMP TABLE ingest_keys AS
                SELECT src_idx, batch_idx, pos, row_number() OVER w AS copy_no,
                       first_value(src_idx) OVER w AS k_src, first_value(batch_idx) OVER w AS k_batch,
                       first_value(pos) OVER w AS k_pos
                FROM {RAW_DOCS} WINDOW w AS (PARTITION BY text_hash ORDER BY {_ORDER})""")
        else:
            con.execute(f"""CREATE TEMP TABLE ingest_keys AS
                SELECT src_idx, batch_idx, pos, 1 AS copy_no, src_idx AS k_src, batch_idx AS k_batch,
                       pos AS k_pos FROM {RAW_DOCS}""")
        if near_dups:
            # copy_no 0: neither kept (1) nor reported as an exact copy (> 1); reported below instead.
            con.execute(f"""UPDATE ingest_keys SET copy_no = 0 FROM {NEAR_DUPS} n
                WHERE ingest_keys.src_idx = n.src_idx AND ingest_keys.batch_idx = n.batch_idx AND ingest_keys.pos = n.pos""")
        _unique_ids(con)
        con.execute(f"""CREATE TABLE {_ORDER_TABLE} AS
            SELECT src_idx, batch_idx, pos, final_id, row_number() OVER (ORDER BY {_ORDER}) - 1 AS doc_idx
            FROM ingest_ids WHERE id_no = 1""")
        con.execute(f"CREATE TABLE {_NEW_REJECTED} AS SELECT * FROM rejected LIMIT 0")
        con.execute(f"""INSERT INTO {_NEW_REJECTED}
            SELECT source_file, source_line, doc_id, reason, detail, '{STAGE}' FROM {RAW_REJECTED}
            ORDER BY {_ORDER}""")
        con.execute(f"""INSERT INTO {_NEW_REJECTED}
            SELECT d.source_file, d.source_line, d.doc_id, 'duplicate',
                   'duplicate of ' || k.doc_id || ' (' || k.source_file || ' line ' || k.source_line || ')', '{STAGE}'
            FROM ingest_keys x
            JOIN {RAW_DOCS} d ON d.src_idx = x.src_idx AND d.batch_idx = x.batch_idx AND d.pos = x.pos
            JOIN {RAW_DOCS} k ON k.src_idx = x.k_src AND k.batch_idx = x.k_batch AND k.pos = x.k_pos
            WHERE x.copy_no > 1 ORDER BY x.src_idx, x.batch_idx, x.pos""")
        if near_dups:
            con.execute(f"""INSERT INTO {_NEW_REJECTED}
                SELECT d.source_file, d.source_line, d.doc_id, 'near_duplicate',
                       'near-duplicate of ' || k.doc_id || ' (' || k.source_file || ' line ' || k.source_line
                       || '), estimated Jaccard ' || printf('%.2f', n.jaccard), '{STAGE}'
                FROM {NEAR_DUPS} n
                JOIN {RAW_DOCS} d ON d.src_idx = n.src_idx AND d.batch_idx = n.batch_idx AND d.pos = n.pos
                JOIN {RAW_DOCS} k ON k.src_idx = n.k_src AND k.batch_idx = n.k_batch AND k.pos = n.k_pos
                ORDER BY n.src_idx, n.batch_idx, n.pos""")
        con.execute(f"""INSERT INTO {_NEW_REJECTED}
            SELECT d.source_file, d.source_line, i.final_id, 'duplicate_id',
                   'id ' || i.final_id || ' is already used by ' || k.source_file || ' line ' || k.source_line
                   || ' (ids are compared as text: 1 and "1" are the same id)', '{STAGE}'
            FROM ingest_ids i
            JOIN {RAW_DOCS} d ON d.src_idx = i.src_idx AND d.batch_idx = i.batch_idx AND d.pos = i.pos
            JOIN {RAW_DOCS} k ON k.src_idx = i.k_src AND k.batch_idx = i.k_batch AND k.pos = i.k_pos
            WHERE i.id_no > 1 ORDER BY i.src_idx, i.batch_idx, i.pos""")
        for table, new in _NEW_TABLES.items():
            con.execute(f"CREATE TABLE {new} AS SELECT * FROM {table} LIMIT 0")
        batches = con.execute(f"SELECT DISTINCT src_idx, batch_idx FROM {_ORDER_TABLE} ORDER BY ALL").fetchall()
        n_docs = con.execute(f"SELECT count(*) FROM {_ORDER_TABLE}").fetchone()[0]
        n_dups = con.execute("SELECT count(*) FROM ingest_keys WHERE copy_no > 1").fetchone()[0]
        reasons = dict(con.execute(f"SELECT reason, count(*) FROM {RAW_REJECTED} GROUP BY reason").fetchall())
        n_dup_ids = con.execute("SELECT count(*) FROM ingest_ids WHERE id_no > 1").fetchone()[0]
        if n_dup_ids:
            reasons["duplicate_id"] = n_dup_ids
        n_near = con.execute("SELECT count(*) FROM ingest_keys WHERE copy_no = 0").fetchone()[0]
        if n_near:
            reasons["near_duplicate"] = n_near
        n_qualified = con.execute("SELECT count(*) FROM ingest_ids WHERE qualified").fetchone()[0]
    new_docs, new_stats = _NEW_TABLES["documents"], _NEW_TABLES["doc_stats"]
    for src_idx, batch_idx in batches:
        where = "src_idx = ? AND batch_idx = ?"
        join = (f"FROM (SELECT * FROM {RAW_DOCS} WHERE {where}) r "
                f"JOIN (SELECT * FROM {_ORDER_TABLE} WHERE {where}) o USING (src_idx, batch_idx, pos) ORDER BY o.doc_idx")
        params = [src_idx, batch_idx, src_idx, batch_idx]
        with _connect(ws, memory_limit) as con, transaction(con):
            con.execute(f"""INSERT INTO {new_docs} SELECT o.doc_idx, o.final_id, r.text, r.source_file, r.source_line,
                            r.text_hash, r.preset_cluster, r.meta_json {join}""", params)
            con.execute(f"""INSERT INTO {new_stats} SELECT o.doc_idx, {stat_cols}, r.quality_heuristic,
                            r.quality_user, r.quality {join}""", params)
    with _connect(ws, memory_limit) as con, transaction(con):
        for table, new in _NEW_TABLES.items():
            con.execute(f"DROP TABLE {table}")
            con.execute(f"ALTER TABLE {new} RENAME TO {table}")
        con.execute("DELETE FROM rejected WHERE stage = ?", [STAGE])
        con.execute(f"INSERT INTO rejected SELECT * FROM {_NEW_REJECTED}")
        con.execute(f"DROP TABLE {_ORDER_TABLE}")
        con.execute(f"DROP TABLE {_NEW_REJECTED}")
        con.execute(f"DROP TABLE IF EXISTS {NEAR_DUPS}")
        # The scratch rows are now in the catalogue proper; keep the file small.
        con.execute(f"DELETE FROM {RAW_DOCS}")
        con.execute(f"DELETE FROM {RAW_REJECTED}")
    return {"documents": int(n_docs), "duplicates": int(n_dups), "qualified_ids": int(n_qualified),
            **{f"rejected:{k}": int(v) for k, v in reasons.items()}}


def _unique_ids(con) -> None:
    """`ingest_ids`: the final id of every record that survived dedup, and whether it is the first with it.

    A file with a derived id that another record shares gets the folder-qualified form for all its
    derived ids, so one file's ids keep one shape (an id given in the input never changes). Any id
    still shared after that keeps only its first record in input order (id_no 1); the others are
    rejected as duplicate_id.
    """
    con.execute(f"""CREATE TEMP TABLE ingest_named AS
        WITH kept AS (
            SELECT x.src_idx, x.batch_idx, x.pos, d.doc_id, d.alt_id, d.source_file,
                   d.alt_id IS NOT NULL AND count(*) OVER (PARTITION BY d.doc_id) > 1 AS clash
            FROM ingest_keys x
            JOIN {RAW_DOCS} d ON d.src_idx = x.src_idx AND d.batch_idx = x.batch_idx AND d.pos = x.pos
            WHERE x.copy_no = 1),
        named AS (
            SELECT src_idx, batch_idx, pos, doc_id, alt_id,
                   alt_id IS NOT NULL AND source_file IN (SELECT source_file FROM kept WHERE clash) AS qualified
            FROM kept)
        SELECT src_idx, batch_idx, pos, qualified, CASE WHEN qualified THEN alt_id ELSE doc_id END AS final_id
        FROM named""")
    con.execute(f"""CREATE TEMP TABLE ingest_ids AS
        SELECT src_idx, batch_idx, pos, qualified, final_id, row_number() OVER w AS id_no,
               first_value(src_idx) OVER w AS k_src, first_value(batch_idx) OVER w AS k_batch,
               first_value(pos) OVER w AS k_pos
        FROM ingest_named WINDOW w AS (PARTITION BY final_id ORDER BY {_ORDER})""")


def _no_documents_error(ws: Workspace, sources: list[Source]) -> stages.StageError:
    with ws.connect() as con:
        rows = con.execute(f"SELECT source_file, source_line, reason, detail FROM {RAW_REJECTED} "
                           f"ORDER BY {_ORDER} LIMIT 3").fetchall()
        reasons = con.execute(f"SELECT reason, count(*) FROM {RAW_REJECTED} GROUP BY reason ORDER BY 2 DESC").fetchall()
    files = ", ".join(str(s.path) for s in sources)
    what = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in reasons) or "no records at all"
    examples = "; ".join(f"{f} line {ln}: {r} ({d})" for f, ln, r, d in rows)
    return stages.StageError(f"no valid documents in {files}: {what}" + (f". First: {examples}" if examples else "")
                             + ". Check ingest.text_field and ingest.format.")


def _message(counts: dict[str, int]) -> str:
    reasons = sorted(((v, k.split(":", 1)[1]) for k, v in counts.items() if k.startswith("rejected:")),
                     key=lambda vr: (-vr[0], vr[1]))
    n_rej = sum(v for v, _ in reasons)
    msg = f"{counts['documents']} documents, {n_rej} rejected"
    if n_rej:
        msg += " (" + ", ".join(f"{n} {r.replace('_', ' ')}" for n, r in reasons) + ")"
    dups = counts["duplicates"]
    msg += f", {dups} duplicate{'' if dups == 1 else 's'}"
    qualified = counts.get("qualified_ids", 0)
    if qualified:
        msg += f", {qualified} file-derived id{'' if qualified == 1 else 's'} qualified with {'its' if qualified == 1 else 'their'} folder"
    return msg


def ingest_fingerprint(ws: Workspace, config: ClimbConfig, sources: list[Source]) -> tuple[dict, str]:
    cfg_dict = {**config.section_dict("ingest"), "quality": config.section_dict("quality")}
    cfg_dict.pop("memory_limit", None)  # how much memory DuckDB may use does not change the output
    return cfg_dict, stages.fingerprint(ws, STAGE, cfg_dict, input_facts(sources), upstream=UPSTREAM[STAGE])


def run_ingest(ws: Workspace, config: ClimbConfig, *, force: bool = False, progress: bool = True) -> stages.StageOutcome:
    """Read every input into documents, doc_stats and rejected; skipped when inputs and config are unchanged."""
    cfg = config.ingest
    if not cfg.paths:
        raise stages.StageError("no input: set ingest.paths (or pass --input PATH)")
    if cfg.batch_size < 1:
        raise stages.StageError(f"ingest.batch_size must be at least 1, got {cfg.batch_size}")
    if cfg.near_dup and not (0.0 < cfg.near_dup_threshold <= 1.0 and cfg.near_dup_ngram >= 1):
        raise stages.StageError(f"ingest.near_dup_threshold must be in (0, 1] and ingest.near_dup_ngram at least 1, "
                                f"got {cfg.near_dup_threshold} and {cfg.near_dup_ngram}")
    sources = discover_sources(cfg.paths, cfg.format)
    cfg_dict, fp = ingest_fingerprint(ws, config, sources)
    if not force and stages.is_current(ws, STAGE, fp):
        return stages.StageOutcome(STAGE, skipped=True)
    # Load the scorer before reading anything, so a typo fails in a second, not after the first batch.
    scorer = load_user_scorer(config.quality.scorer) if config.quality.scorer else None

    with stages.run_stage(ws, STAGE, cfg_dict, fp, upstream=READS[STAGE]) as run:
        _prepare_scratch(ws, run.resumed)
        done = stages.finished_shards(ws, STAGE) if run.resumed else {}
        root = inputs_root(sources)
        bar = tqdm(desc="ingest", unit="rec", disable=not progress)
        try:
            for src_idx, src in enumerate(sources):
                skip = {int(k.rsplit("#", 1)[1]) for k in done if k.rsplit("#", 1)[0] == src.key}
                bar.set_postfix_str(src.path.name)
                def frames(batch, src_idx=src_idx):
                    return _batch_frames(batch, src_idx, scorer, config.quality.user_weight, root)

                for batch, (docs, rej) in _one_ahead(iter_batches(src, cfg, skip=skip), frames):
                    _store_batch(ws, _shard_name(src, batch.index), docs, rej, cfg.memory_limit)
                    bar.update(len(docs) + len(rej))
        finally:
            bar.close()
        with ws.connect() as con:
            n_raw = con.execute(f"SELECT count(*) FROM {RAW_DOCS}").fetchone()[0]
            n_rej = con.execute(f"SELECT count(*) FROM {RAW_REJECTED}").fetchone()[0]
        if n_raw == 0:
            raise _no_documents_error(ws, sources)
        if cfg.near_dup:
            _find_near_duplicates(ws, cfg, progress)
        counts = _finalise(ws, cfg.dedup, cfg.memory_limit, near_dups=cfg.near_dup)
        run.rows_in = int(n_raw + n_rej)
        run.rows_out = counts["documents"]
        run.message = _message(counts)
    return stages.StageOutcome(STAGE, skipped=False, rows_in=run.rows_in, rows_out=run.rows_out, message=run.message)
