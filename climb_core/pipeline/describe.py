"""Keywords, labels and representative documents of clusters.

Keywords are class-based TF-IDF (c-TF-IDF, as in BERTopic): each cluster's sampled documents are
joined into one "class document", and a term scores high when it is frequent in that class and rare
across classes. Every cluster that holds documents (active or pruned) is a class, so describing one
new cluster after an edit scores its terms against the same background as the describe stage.
Representatives are the documents nearest the cluster's centroid.

The describe stage counts terms in one pass over the sampled documents in doc_idx order, a few
thousand texts per short connection (`stream_class_texts`), adding each batch's counts to its
classes: counts are additive, so this gives the same class-by-term matrix as vectorising each class's
joined text, with memory that does not grow with the corpus. (Joining a chunk of classes' texts in
SQL made DuckDB scan every text once per chunk and hold them: 2.7 GB at 1M documents, 4.2x the peak at
100k; bench/bench_describe_memory.py.) Edits describe through `fetch`, the chunk-of-classes reader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError, StageOutcome
from climb_core.catalogue.workspace import Workspace, transaction
from climb_core.config import ClimbConfig, DescribeConfig
from climb_core.pipeline.registry import READS, UPSTREAM

# Words of two or more letters: numbers, years and case citations say little about a topic.
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"
# Clusters vectorised together; bounds the text held in memory at once.
CLASS_CHUNK = 64
# Sampled documents whose texts are read per connection by the describe stage's single pass.
STREAM_ROWS = 8192
# Classes per block of the streamed term counts (RowBlocks).
ROW_BLOCK = 64
# Document rows scored against their centroid per batch.
ROW_BATCH = 100_000


def load_embeddings_or_none(ws: Workspace):
    """The embeddings by doc_idx as an EmbeddingRows view (rows read on demand, so memory does not grow
    with the corpus), or None when the workspace has none covering every document (a pre-clustered
    corpus skips the embed stage)."""
    try:
        from climb_core.pipeline.embed import embeddings_available
    except ImportError:
        return None
    if not embeddings_available(ws):
        return None
    from climb_core.pipeline.embedding_rows import EmbeddingRows

    return EmbeddingRows(sorted(ws.embeddings_dir.glob("shard-*.npy")))


def _doc_holding_ids(con) -> list[int]:
    return [r[0] for r in con.execute(
        "SELECT DISTINCT cluster_id FROM doc_clusters ORDER BY cluster_id").fetchall()]


def read_class_texts(con, class_ids: list[int], max_docs: int) -> dict[int, str]:
    """The sampled text of each class ('' for one without documents), read in chunks of classes."""
    out: dict[int, str] = {}
    for start in range(0, len(class_ids), CLASS_CHUNK):
        chunk = [int(c) for c in class_ids[start:start + CLASS_CHUNK]]
        # Sample by doc_idx first, then fetch only the sampled texts: a window over the texts themselves
        # made DuckDB hold every text of the chunk's clusters (3.2 GB peak at 870k documents).
        texts = con.execute("""
            WITH picked AS (
                SELECT cluster_id, doc_idx, rn FROM (
                    SELECT cluster_id, doc_idx,
                           row_number() OVER (PARTITION BY cluster_id ORDER BY hash(doc_idx), doc_idx) AS rn
                    FROM doc_clusters WHERE cluster_id IN (SELECT unnest(?::INTEGER[])))
                WHERE rn <= ?)
            SELECT k.cluster_id, coalesce(t.text, '') AS text
            FROM (SELECT unnest(?::INTEGER[]) AS cluster_id) k LEFT JOIN (
                SELECT p.cluster_id, string_agg(d.text, ' ' ORDER BY p.rn) AS text
                FROM picked p JOIN documents d USING (doc_idx) GROUP BY p.cluster_id) t USING (cluster_id)
            ORDER BY list_position(?::INTEGER[], k.cluster_id)""", [chunk, max_docs, chunk, chunk]).fetchall()
        out.update({int(c): t for c, t in texts})
    return out


_SAMPLE_SQL = """
    SELECT doc_idx, cluster_id FROM (
        SELECT cluster_id, doc_idx,
               row_number() OVER (PARTITION BY cluster_id ORDER BY hash(doc_idx), doc_idx) AS rn
        FROM doc_clusters WHERE cluster_id IN (SELECT unnest(?::INTEGER[])))
    WHERE rn <= ? ORDER BY doc_idx"""


def stream_class_texts(ws: Workspace, class_ids: list[int], max_docs: int,
                       rows: int = STREAM_ROWS) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(class position per document, texts) batches over the keyword sample of `class_ids` (each
    class's first `max_docs` documents by hash(doc_idx), as `read_class_texts` samples), in doc_idx
    order, one short connection per batch."""
    with ws.connect() as con:
        picked = con.execute(_SAMPLE_SQL, [[int(c) for c in class_ids], int(max_docs)]).fetchnumpy()
    doc_idx = np.asarray(picked["doc_idx"], dtype=np.int64)
    pos_of = {int(c): i for i, c in enumerate(class_ids)}
    pos = np.array([pos_of[int(c)] for c in picked["cluster_id"]], dtype=np.int64)
    for start in range(0, len(doc_idx), rows):
        ids = doc_idx[start:start + rows]
        with ws.connect() as con:
            # The range lets DuckDB skip row groups; the list picks the sampled rows inside it.
            got = con.execute("SELECT doc_idx, text FROM documents WHERE doc_idx BETWEEN ? AND ? "
                              "AND doc_idx IN (SELECT unnest(?::BIGINT[])) ORDER BY doc_idx",
                              [int(ids[0]), int(ids[-1]), ids.tolist()]).fetchall()
        texts = {int(i): t for i, t in got}
        yield pos[start:start + rows], [texts.get(int(i)) or "" for i in ids]


@dataclass
class RowBlocks:
    """A class-by-term count matrix kept as consecutive row blocks (CSR each, same columns): a
    batch's counts are added one block at a time, so the sum's copy is a block, not the matrix."""
    blocks: list
    shape: tuple[int, int]

    def tocsr(self):
        from scipy import sparse

        return sparse.vstack(self.blocks, format="csr") if self.blocks else sparse.csr_matrix(self.shape)


def _streamed_counts(batches: Iterator[tuple[np.ndarray, list[str]]], n_classes: int,
                     progress: bool = False) -> tuple[RowBlocks, np.ndarray]:
    """Term counts per class (rows = class positions) and the vocabulary, from (class position,
    text) batches; the same matrix `_class_counts` builds from each class's joined text.

    Memory: at a million documents the counts have ~17M cells. They are int32 (4 bytes a value
    against float64's 8) and in blocks of ROW_BLOCK classes, so adding a batch copies one block."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer
    from tqdm import tqdm

    edges = list(range(0, n_classes, ROW_BLOCK)) + [n_classes]
    blocks: list = [None] * (len(edges) - 1)
    vocab: dict[str, int] = {}
    for pos, texts in tqdm(batches, desc="keywords", unit="batch", disable=not progress):
        vec = CountVectorizer(stop_words="english", token_pattern=TOKEN_PATTERN, lowercase=True, dtype=np.int32)
        try:
            counts = vec.fit_transform(texts)
        except ValueError:  # every text in the batch is empty or stop words only
            continue
        remap = np.array([vocab.setdefault(w, len(vocab)) for w in vec.get_feature_names_out()], dtype=np.int32)
        to_class = sparse.csr_matrix((np.ones(len(pos), dtype=np.int32), (pos, np.arange(len(pos)))),
                                     shape=(n_classes, len(pos)))
        per_class = (to_class @ counts).tocsr()
        for b, (lo, hi) in enumerate(zip(edges, edges[1:])):
            rows = per_class[lo:hi]
            if rows.nnz == 0:
                continue
            part = sparse.csr_matrix((rows.data.astype(np.int32), remap[rows.indices], rows.indptr),
                                     shape=(hi - lo, len(vocab)))
            part.sort_indices()
            if blocks[b] is not None:
                blocks[b].resize((hi - lo, len(vocab)))
                part = blocks[b] + part
            blocks[b] = part
    for b, (lo, hi) in enumerate(zip(edges, edges[1:])):
        if blocks[b] is None:
            blocks[b] = sparse.csr_matrix((hi - lo, len(vocab)), dtype=np.int32)
        else:
            blocks[b].resize((hi - lo, len(vocab)))
    words = np.empty(len(vocab), dtype=object)
    for w, i in vocab.items():
        words[i] = w
    return RowBlocks(blocks, (n_classes, len(vocab))), words


def _class_counts(fetch, class_ids: list[int], progress: bool = False):
    """Term counts per class (rows in class_ids order) and the vocabulary, vectorised in chunks;
    `fetch(chunk)` gives the sampled texts of a chunk of classes (class id -> text)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer
    from tqdm import tqdm

    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for start in tqdm(range(0, len(class_ids), CLASS_CHUNK), desc="keywords", unit="chunk", disable=not progress):
        chunk = class_ids[start:start + CLASS_CHUNK]
        class_texts = fetch(chunk)
        vec = CountVectorizer(stop_words="english", token_pattern=TOKEN_PATTERN, lowercase=True)
        try:
            counts = vec.fit_transform([class_texts.get(int(c), "") for c in chunk]).tocoo()
        except ValueError:  # every class in the chunk is empty or stop words only
            continue
        local = vec.get_feature_names_out()
        remap = np.array([vocab.setdefault(w, len(vocab)) for w in local], dtype=np.int64)
        rows.append(counts.row + start)
        cols.append(remap[counts.col])
        vals.append(counts.data)
    if not vocab:
        return sparse.csr_matrix((len(class_ids), 0)), np.array([], dtype=object)
    matrix = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(len(class_ids), len(vocab)), dtype=np.float64)
    words = np.empty(len(vocab), dtype=object)
    for w, i in vocab.items():
        words[i] = w
    return matrix, words


def ctfidf_keywords(counts, words: np.ndarray, n_keywords: int, consume: bool = False) -> list[list[str]]:
    """Top terms per class by c-TF-IDF: tf (per-class share) x log(1 + mean class length / term frequency).

    `counts`: a sparse class-by-term matrix or RowBlocks. Scored one row block at a time, on a
    float copy of that block's values only: at a million documents the matrix has ~17M cells, and
    a copy of it, a row index per cell and a score matrix had held four of them at once. `consume`:
    the caller's blocks are released as each is scored, so the caller must not use them after."""
    from scipy import sparse

    if isinstance(counts, RowBlocks):
        blocks = counts.blocks if consume else list(counts.blocks)
        n_cols = counts.shape[1]
    else:
        blocks = [counts if consume and sparse.isspmatrix_csr(counts) else sparse.csr_matrix(counts)]
        n_cols = counts.shape[1]
    n_rows = sum(b.shape[0] for b in blocks)
    if n_cols == 0:
        return [[] for _ in range(n_rows)]
    for b in blocks:
        if not b.has_canonical_format:
            b.sum_duplicates()
    row_sum = np.concatenate([np.asarray(b.sum(axis=1, dtype=np.float64)).ravel() for b in blocks])
    term_freq = np.zeros(n_cols)
    for b in blocks:
        term_freq += np.asarray(b.sum(axis=0, dtype=np.float64)).ravel()
    idf = np.log1p(row_sum.mean() / np.maximum(term_freq, 1))
    inv_len = 1.0 / np.maximum(row_sum, 1)
    out: list[list[str]] = []
    for k in range(len(blocks)):
        block = blocks[k]
        if consume:
            blocks[k] = None  # this block's counts go once scored
        indptr, indices = block.indptr, block.indices
        scores = block.data.astype(np.float64)
        for r in range(block.shape[0]):
            lo, hi = indptr[r], indptr[r + 1]
            vals = scores[lo:hi]
            # The same two products, in the same order, as diag(1 / row_sum) @ counts @ diag(idf).
            vals *= inv_len[len(out)]
            cols = indices[lo:hi]
            vals *= idf[cols]
            keep = vals != 0  # a stored zero is no keyword
            cols, vals = cols[keep], vals[keep]
            # Sort by score, then word, so ties do not depend on vocabulary order.
            order = np.lexsort((words[cols].astype(str), -vals))[:n_keywords]
            out.append([str(words[cols[j]]) for j in order])
        del block, scores
    return out


@dataclass
class DescribeInputs:
    """What describing `cluster_ids` reads from the catalogue; computing from it needs no connection.

    `class_ids` are the keyword classes (every cluster holding documents, and the described ones);
    `fetch(chunk)` reads the sampled texts of a chunk of them, CLASS_CHUNK classes at a time so the
    texts in memory stay bounded (each read a short connection of its own when describing outside a
    transaction). `rep_docs` (doc_idx, cluster_id) and `rep_centroids` (stored centroid or None) are
    read only when there are embeddings to rank representatives by."""
    cluster_ids: list[int]
    class_ids: list[int]
    fetch: Callable[[list[int]], dict[int, str]]
    rep_docs: pd.DataFrame | None = None
    rep_centroids: dict[int, object] = field(default_factory=dict)
    # When set, keywords count terms from these (class position, texts) batches instead of `fetch`.
    stream: Callable[[], Iterator[tuple[np.ndarray, list[str]]]] | None = None


def read_inputs(con, cfg: DescribeConfig, cluster_ids: list[int], with_embeddings: bool,
                fetch: Callable[[list[int]], dict[int, str]] | None = None) -> DescribeInputs:
    """Read what describing needs; texts are read later through `fetch` (default: on `con`)."""
    class_ids = sorted(set(_doc_holding_ids(con)) | set(cluster_ids))
    if fetch is None:
        def fetch(chunk: list[int]) -> dict[int, str]:
            return read_class_texts(con, chunk, cfg.max_docs_per_cluster)
    inputs = DescribeInputs(cluster_ids, class_ids, fetch)
    if with_embeddings:
        inputs.rep_docs = con.execute(
            "SELECT doc_idx, cluster_id FROM doc_clusters WHERE cluster_id IN (SELECT unnest(?::INTEGER[])) "
            "ORDER BY doc_idx", [cluster_ids]).df()
        cents = con.execute(
            "SELECT cluster_id, centroid FROM clusters WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))",
            [cluster_ids]).fetchall()
        inputs.rep_centroids = {int(c): v for c, v in cents}
    return inputs


def compute_keywords(cfg: DescribeConfig, inputs: DescribeInputs, progress: bool = False) -> pd.DataFrame:
    cluster_ids = inputs.cluster_ids
    class_ids = inputs.class_ids
    if inputs.stream is not None:
        counts, words = _streamed_counts(inputs.stream(), len(class_ids), progress)
    else:
        counts, words = _class_counts(inputs.fetch, class_ids, progress)
    keywords = ctfidf_keywords(counts, words, cfg.n_keywords, consume=True)
    del counts
    pos = {c: i for i, c in enumerate(class_ids)}
    kw = pd.DataFrame({"cluster_id": cluster_ids, "keywords": [keywords[pos[c]] for c in cluster_ids]})
    kw["auto_label"] = [" / ".join(k[:cfg.label_words]) if k else None for k in kw["keywords"]]
    return kw


def _write_keywords(con, kw: pd.DataFrame) -> None:
    con.register("kw_df", kw)
    con.execute("""
        UPDATE clusters SET keywords = k.keywords, auto_label = k.auto_label,
            label = CASE WHEN clusters.label_source = 'user' THEN clusters.label ELSE k.auto_label END,
            label_source = CASE WHEN clusters.label_source = 'user' THEN 'user' ELSE 'auto' END
        FROM kw_df k WHERE clusters.cluster_id = k.cluster_id""")
    con.unregister("kw_df")


def nearest_by_embedding(emb: np.ndarray, docs: pd.DataFrame, stored: dict[int, object], n: int) -> pd.DataFrame:
    """The n documents of each cluster nearest its centroid (`stored`: cluster -> stored centroid or None)."""
    if docs.empty:
        return pd.DataFrame(columns=["cluster_id", "rank", "doc_idx", "distance"])
    centroid = {}
    for cid, vec in stored.items():
        if not isinstance(vec, (list, tuple, np.ndarray)) or len(vec) == 0:
            # No stored centroid: the mean of the cluster's own documents stands in.
            members = docs.loc[docs["cluster_id"] == cid, "doc_idx"].to_numpy()
            vec = np.asarray(emb[members], dtype=np.float32).mean(axis=0) if len(members) else None
        if vec is not None:
            v = np.asarray(vec, dtype=np.float32)
            centroid[cid] = v / max(float(np.linalg.norm(v)), 1e-12)
    docs = docs[docs["cluster_id"].isin(list(centroid))].reset_index(drop=True)
    ids = sorted(centroid)
    if not ids:
        return pd.DataFrame(columns=["cluster_id", "rank", "doc_idx", "distance"])
    cmat = np.stack([centroid[c] for c in ids])
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    dist = np.empty(len(docs), dtype=np.float32)
    doc_idx = docs["doc_idx"].to_numpy()
    crow = row_of.loc[docs["cluster_id"]].to_numpy()
    for s in range(0, len(docs), ROW_BATCH):
        e = np.asarray(emb[doc_idx[s:s + ROW_BATCH]], dtype=np.float32)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        dist[s:s + ROW_BATCH] = 1.0 - np.einsum("ij,ij->i", e, cmat[crow[s:s + ROW_BATCH]])
    docs["distance"] = dist
    top = docs.sort_values(["cluster_id", "distance", "doc_idx"]).groupby("cluster_id").head(n).copy()
    top["rank"] = top.groupby("cluster_id").cumcount()
    return top[["cluster_id", "rank", "doc_idx", "distance"]]


def compute_representatives(cfg: DescribeConfig, inputs: DescribeInputs, emb: np.ndarray | None) -> pd.DataFrame | None:
    """Representatives ranked by embedding, or None when there are none (written by SQL from assignments)."""
    if emb is None or inputs.rep_docs is None:
        return None
    return nearest_by_embedding(emb, inputs.rep_docs, inputs.rep_centroids, cfg.n_representatives)


def _write_representatives(con, cfg: DescribeConfig, cluster_ids: list[int], reps: pd.DataFrame | None) -> int:
    con.execute("DELETE FROM representatives WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))", [cluster_ids])
    if reps is not None:
        con.register("reps_df", reps)
        con.execute("INSERT INTO representatives SELECT cluster_id, rank, doc_idx, distance FROM reps_df")
        con.unregister("reps_df")
    else:
        # Without embeddings, the k-means distance to the document's base centroid is the best proxy.
        con.execute("""
            INSERT INTO representatives
            SELECT cluster_id, rn - 1, doc_idx, distance FROM (
                SELECT dc.cluster_id, dc.doc_idx, a.distance,
                       row_number() OVER (PARTITION BY dc.cluster_id ORDER BY a.distance NULLS LAST, dc.doc_idx) AS rn
                FROM doc_clusters dc LEFT JOIN assignments a USING (doc_idx)
                WHERE dc.cluster_id IN (SELECT unnest(?::INTEGER[])))
            WHERE rn <= ?""", [cluster_ids, cfg.n_representatives])
    return int(con.execute("SELECT count(*) FROM representatives WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))",
                           [cluster_ids]).fetchall()[0][0])


def write_description(con, cfg: DescribeConfig, kw: pd.DataFrame, reps: pd.DataFrame | None) -> None:
    """Store computed keywords, labels and representatives (inside the caller's transaction)."""
    ids = [int(c) for c in kw["cluster_id"]]
    _write_keywords(con, kw)
    _write_representatives(con, cfg, ids, reps)


def read_texts(ws: Workspace, cfg: DescribeConfig, chunk: list[int]) -> dict[int, str]:
    """The sampled texts of a chunk of classes, in a short connection of its own."""
    with ws.connect() as con:
        return read_class_texts(con, chunk, cfg.max_docs_per_cluster)


def catalogue_token(con) -> tuple:
    """Changes whenever the refined clusters could have: the edit log's state and a checksum of doc_clusters.
    Read before computing and again in the writing transaction; a difference means the inputs went stale."""
    edits = con.execute(
        "SELECT count(*), coalesce(max(edit_id), 0), count(*) FILTER (WHERE undone) FROM edits").fetchall()[0]
    docs = con.execute("SELECT count(*), coalesce(sum(hash(doc_idx, cluster_id)), 0) FROM doc_clusters").fetchall()[0]
    cents = con.execute("SELECT coalesce(sum(hash(cluster_id, state, centroid)), 0) FROM clusters").fetchall()[0]
    return (*edits, *docs, *cents)


def _active_ids(con) -> list[int]:
    return [r[0] for r in con.execute(
        "SELECT cluster_id FROM clusters WHERE state = 'active' ORDER BY cluster_id").fetchall()]


# Describes whose inputs changed before they could be written are computed again this many times,
# then once more with the catalogue held open throughout (the old way, which cannot go stale).
STALE_RETRIES = 3


def describe_clusters(ws: Workspace, config: ClimbConfig, cluster_ids: list[int] | None = None, *,
                      con=None, embeddings: np.ndarray | None = None, progress: bool = False) -> pd.DataFrame:
    """Keywords, automatic label and representatives for the given clusters (default: every active one).

    Pass `con` to make the writes part of the caller's transaction (the edit API does). Returns the
    clusters described with their keywords and auto_label.

    Without `con`, the inputs are read in one short connection (the sampled texts in one more short
    connection per STREAM_ROWS documents, in one pass), keywords and representatives are computed with the catalogue
    closed (so a search worker is not kept waiting), and the results are written in one short
    transaction, after checking that the catalogue did not change since the first read (if it did,
    the clusters are described again from the new state).
    """
    emb = embeddings if embeddings is not None else load_embeddings_or_none(ws)
    cfg = config.describe
    if con is not None:
        return _describe_in(con, cfg, cluster_ids, emb, progress)
    for _ in range(STALE_RETRIES):
        with ws.connect() as c:
            token = catalogue_token(c)
            ids = _active_ids(c) if cluster_ids is None else sorted({int(x) for x in cluster_ids})
            if not ids:
                return pd.DataFrame(columns=["cluster_id", "keywords", "auto_label"])
            inputs = read_inputs(c, cfg, ids, emb is not None, fetch=lambda chunk: read_texts(ws, cfg, chunk))
            inputs.stream = lambda: stream_class_texts(ws, inputs.class_ids, cfg.max_docs_per_cluster)
        kw = compute_keywords(cfg, inputs, progress)
        reps = compute_representatives(cfg, inputs, emb)
        with ws.connect() as c, transaction(c):
            if catalogue_token(c) == token:
                write_description(c, cfg, kw, reps)
                return kw
    with ws.connect() as c, transaction(c):
        return _describe_in(c, cfg, cluster_ids, emb, progress)


def _describe_in(con, cfg: DescribeConfig, cluster_ids: list[int] | None, emb, progress: bool) -> pd.DataFrame:
    """Read, compute and write on one connection (inside the caller's transaction)."""
    if cluster_ids is None:
        cluster_ids = _active_ids(con)
    cluster_ids = sorted({int(c) for c in cluster_ids})
    if not cluster_ids:
        return pd.DataFrame(columns=["cluster_id", "keywords", "auto_label"])
    inputs = read_inputs(con, cfg, cluster_ids, emb is not None)
    kw = compute_keywords(cfg, inputs, progress)
    write_description(con, cfg, kw, compute_representatives(cfg, inputs, emb))
    return kw


def _edit_state(ws: Workspace) -> list[int]:
    with ws.connect() as con:
        row = con.execute(
            "SELECT count(*), coalesce(max(edit_id), 0), count(*) FILTER (WHERE undone) FROM edits").fetchall()[0]
    return [int(v) for v in row]


def run_describe(ws: Workspace, config: ClimbConfig, *, force: bool = False, progress: bool = True) -> StageOutcome:
    """Describe every cluster that holds documents (active and pruned), so the dashboard can show why."""
    cfg = config.section_dict("describe")
    # Edits change clusters without changing refine's fingerprint; the edit log's state covers them.
    fp = stages.fingerprint(ws, "describe", cfg, {"edits": _edit_state(ws)}, upstream=UPSTREAM["describe"])
    if not force and stages.is_current(ws, "describe", fp):
        return StageOutcome("describe", skipped=True)
    with ws.connect() as con:
        ids = [r[0] for r in con.execute(
            "SELECT cluster_id FROM clusters WHERE state IN ('active', 'pruned') ORDER BY cluster_id").fetchall()]
    if not ids:
        raise StageError(f"no clusters to describe in {ws.root}; run `climb refine {ws.root}` first")
    with stages.run_stage(ws, "describe", cfg, fp, upstream=READS["describe"]) as run:
        kw = describe_clusters(ws, config, ids, progress=progress)
        with ws.connect() as con:
            n_reps = int(con.execute("SELECT count(*) FROM representatives").fetchall()[0][0])
        run.rows_in = len(ids)
        run.rows_out = len(kw)
        run.message = (f"{len(kw)} clusters described, {int(kw['keywords'].map(bool).sum())} with keywords, "
                       f"{n_reps} representatives")
    return StageOutcome("describe", skipped=False, rows_in=run.rows_in, rows_out=run.rows_out, message=run.message)
