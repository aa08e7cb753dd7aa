"""A small workspace for the dashboard tests.

`build_workspace(root)` uses the real engine (ingest, embed with max_seq_length 128, cluster, refine,
describe, map on ~300 demo documents plus a hostile one) when `climb_core.pipeline.run.run_all` and its
stage modules import; otherwise `build_synthetic_workspace` fills the catalogue tables directly by SQL
(TF-IDF, k-means, PCA as stand-ins for embeddings, clusters and UMAP) so the pages can be tested
while the engine is being written. Both include XSS_TEXT as a document.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo_corpus.jsonl.gz"
XSS_ID = "xss-probe"
XSS_TEXT = ('A hostile record <script>window.__xss=1</script> and <img src=x onerror="window.__xss=2"> '
            'must show as plain text. It talks about court rulings and legal statutes like the others.')


def demo_records(n: int | None = None, seed: int = 0) -> list[dict]:
    with gzip.open(DEMO, "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    if n is not None and n < len(recs):
        rng = np.random.default_rng(seed)
        recs = [recs[i] for i in sorted(rng.choice(len(recs), n, replace=False))]
    return recs + [{"id": XSS_ID, "text": XSS_TEXT, "source": "probe", "domain": "legal"}]


def engine_ready() -> bool:
    """The real pipeline builds the test workspace unless CLIMB_TEST_SYNTHETIC asks for the quick
    SQL-built one (for iterating on page layout). An engine that fails to import fails the tests."""
    return not os.environ.get("CLIMB_TEST_SYNTHETIC")


def build_real_workspace(root: Path, n_docs: int = 300):
    from climb_core.catalogue.workspace import Workspace
    from climb_core.config import ClimbConfig
    from climb_core.pipeline.run import run_all

    root.mkdir(parents=True, exist_ok=True)
    corpus = root.parent / f"{root.name}-corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for r in demo_records(n_docs):
            f.write(json.dumps(r) + "\n")
    cfg = ClimbConfig()
    cfg.ingest.paths = [str(corpus)]
    cfg.embed.max_seq_length = 128
    cfg.embed.device = "cpu"
    cfg.cluster.k = 16
    cfg.merge.target_clusters = 8
    cfg.prune.min_quality = 0.0
    cfg.map.n_neighbors = 10
    tiny_search(cfg)
    ws = Workspace.init(root, cfg)
    run_all(ws, cfg, progress=False)
    # one finished search, so Rounds, Compare and Export have something to show
    from climb_core.cli import main as climb

    assert climb(["search", str(root), "--name", "fixture search", "--quiet"]) == 0
    return ws


def tiny_search(cfg):
    """Search settings that finish in seconds: the n-gram proxy, 3 proxies over 2 rounds, one small target."""
    from climb_core.config import TargetSpec

    cfg.proxy.kind = "ngram"
    cfg.proxy.tokens = 5_000
    cfg.proxy.device = "cpu"
    cfg.search.strategy = "climb"
    cfg.search.budget = 3
    cfg.search.rounds = 2
    cfg.search.round_split = [2, 1]
    cfg.search.n_pool_samples = 500
    cfg.search.executor = "local"
    cfg.tokenizer.vocab_size = 512
    cfg.tokenizer.sample_docs = 500
    cfg.target.specs = [TargetSpec(kind="mc", path=str(REPO / "data" / "eval" / "arc_easy.jsonl"), name="arc_easy",
                                   metric="loglik", max_items=10)]
    return cfg


# ------------------------------------------------------------------------------------ synthetic
def build_synthetic_workspace(root: Path, n_docs: int | None = None, repeat_to: int | None = None,
                              k: int = 12, seed: int = 0):
    """Fill a workspace's catalogue by SQL with real demo documents and stand-in clusters and map.

    repeat_to: repeat the documents (with jittered map coordinates) until there are this many (for
    benchmarks of the map at 100k points).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from climb_core.catalogue.workspace import Workspace
    from climb_core.config import ClimbConfig

    rng = np.random.default_rng(seed)
    recs = demo_records(n_docs, seed)
    texts = [r["text"] for r in recs]
    vec = TfidfVectorizer(max_features=20000, stop_words="english", min_df=2, sublinear_tf=True)
    tfidf = vec.fit_transform(texts)
    emb = TruncatedSVD(64, random_state=seed).fit_transform(tfidf).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9
    km = KMeans(k, n_init=3, random_state=seed).fit(emb)
    labels = km.labels_
    dist = np.linalg.norm(emb - km.cluster_centers_[labels], axis=1)
    xy = PCA(2, random_state=seed).fit_transform(emb) * 10

    n = len(recs)
    reps = 1 if not repeat_to else int(np.ceil(repeat_to / n))
    total = n * reps if not repeat_to else repeat_to
    base = np.arange(total) % n
    doc_idx = np.arange(total)

    cfg = tiny_search(ClimbConfig())
    ws = Workspace.init(root, cfg)
    words = np.array([len(t.split()) for t in texts])
    chars = np.array([len(t) for t in texts])
    quality = np.clip(0.35 + 0.5 * np.tanh(words / 400) + rng.normal(0, 0.08, n), 0, 1).astype(np.float32)
    docs = pd.DataFrame({
        "doc_idx": doc_idx,
        "doc_id": [recs[b]["id"] + (f"#{i // n}" if i >= n else "") for i, b in enumerate(base)],
        "text": [texts[b] for b in base],
        "source_file": str(DEMO),
        "source_line": base + 1,
        "text_hash": (base * 2654435761 + doc_idx // n).astype(np.uint64),
        "preset_cluster": None,
        "meta_json": [json.dumps({"source": recs[b].get("source"), "domain": recs[b].get("domain")}) for b in base],
    })
    stats = pd.DataFrame({
        "doc_idx": doc_idx, "n_chars": chars[base], "n_words": words[base],
        "n_tokens_est": (chars[base] / 4).astype(int), "quality": quality[base],
        "quality_heuristic": quality[base],
    })
    jitter = rng.normal(0, 0.15, (total, 2)) if reps > 1 else np.zeros((total, 2))
    coords = pd.DataFrame({"doc_idx": doc_idx, "x": xy[base, 0] + jitter[:, 0], "y": xy[base, 1] + jitter[:, 1]})
    assign = pd.DataFrame({"doc_idx": doc_idx, "base_cluster": labels[base], "distance": dist[base]})

    terms = np.array(vec.get_feature_names_out())
    clusters = []
    rep_rows = []
    for c in range(k):
        members = np.where(labels == c)[0]
        mean_tfidf = np.asarray(tfidf[members].mean(axis=0)).ravel()
        kw = [str(t) for t in terms[np.argsort(-mean_tfidf)[:8]]]
        size = int((labels[base] == c).sum())
        clusters.append({
            "cluster_id": c, "label": " / ".join(kw[:3]), "auto_label": " / ".join(kw[:3]), "label_source": "auto",
            "state": "active", "reason": None, "parent_ids": [c], "merged_into": None, "created_edit": None,
            "size_docs": size, "size_tokens": int(stats["n_tokens_est"][labels[base] == c].sum()),
            "mean_quality": float(quality[members].mean()), "keywords": kw,
            "centroid": km.cluster_centers_[c].astype(np.float32).tolist(),
        })
        for r, m in enumerate(members[np.argsort(dist[members])][:5]):
            rep_rows.append({"cluster_id": c, "rank": r, "doc_idx": int(m), "distance": float(dist[m])})
    cl = pd.DataFrame(clusters)
    # A pruned cluster, so the state column has something to show.
    worst = int(cl["mean_quality"].idxmin())
    cl.loc[worst, "state"] = "pruned"
    cl.loc[worst, "reason"] = "mean quality below 0.35"
    reps_df = pd.DataFrame(rep_rows)
    now = dt.datetime.now()
    with ws.connect() as con:
        for name, df in [("documents", docs), ("doc_stats", stats), ("map_coords", coords), ("assignments", assign),
                         ("representatives", reps_df)]:
            con.register("df", df)
            cols = ", ".join(df.columns)
            con.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM df")
            con.unregister("df")
        con.register("df", cl)
        con.execute("INSERT INTO clusters SELECT cluster_id, label, auto_label, label_source, state, reason, "
                    "parent_ids::INTEGER[], merged_into, created_edit, size_docs, size_tokens, mean_quality, "
                    "keywords::VARCHAR[], centroid::FLOAT[] FROM df")
        con.execute("INSERT INTO base_clusters SELECT cluster_id, size_docs, centroid::FLOAT[] FROM df")
        con.unregister("df")
        con.execute("INSERT INTO doc_clusters SELECT doc_idx, base_cluster FROM assignments")
        con.execute("INSERT INTO rejected VALUES ('demo.jsonl', 7, 'x1', 'empty', 'no text', 'ingest'), "
                    "('demo.jsonl', 9, 'x2', 'duplicate', 'same as line 3', 'ingest'), "
                    "('demo.jsonl', 12, 'x3', 'duplicate', 'same as line 4', 'ingest')")
        for s in ["ingest", "embed", "cluster", "refine", "describe", "map"]:
            con.execute("INSERT INTO stages (stage, status, config_json, fingerprint, started_at, finished_at, rows_in, rows_out, message) VALUES (?, 'done', '{}', 'synthetic', ?, ?, ?, ?, 'synthetic')",
                        [s, now, now, total, total])
        _fake_search(con, cl[cl.state == "active"], rng, now)
    return ws


def _fake_search(con, active: pd.DataFrame, rng, now) -> None:
    ids = active["cluster_id"].tolist()
    labels = active["label"].tolist()
    prior = (active["size_tokens"] / active["size_tokens"].sum()).tolist()
    sid = "synthetic-climb"
    truth = rng.normal(0, 1, len(ids))
    runs = []
    t = now - dt.timedelta(minutes=10)
    for rnd, n in enumerate([6, 3, 2], start=1):
        for i in range(n):
            w = rng.dirichlet(np.ones(len(ids)) * 0.8)
            score = float(-2 + w @ truth * 0.3 + rng.normal(0, 0.02))
            pred = None if rnd == 1 else score + float(rng.normal(0, 0.03))
            t += dt.timedelta(seconds=5)
            runs.append({"search_id": sid, "run_id": f"r{rnd}-{i}", "round": rnd, "idx": i, "weights": w.tolist(),
                         "seed": i, "tokens": 20000, "predicted": pred, "status": "done", "score": score,
                         "scores_json": json.dumps({"arc_easy": score}), "wall_s": 1.0, "host": "test",
                         "proposed_at": t, "finished_at": t})
    best = max(runs, key=lambda r: r["score"])
    cfg = {"search": {"strategy": "climb", "budget": 11}, "proxy": {"kind": "ngram"}}
    con.execute("INSERT INTO searches (search_id, name, strategy, status, config_json, target_json, cluster_ids, "
                "cluster_labels, prior, created_at, updated_at, pid, message, final_weights, final_predicted, best_run_id) "
                "VALUES (?, 'synthetic', 'climb', 'done', ?, '[]', ?, ?, ?, ?, ?, NULL, "
                "'finished', ?, ?, ?)", [sid, json.dumps(cfg), ids, labels, prior, now, now, best["weights"],
                                         best["score"], best["run_id"]])
    df = pd.DataFrame(runs)
    con.register("df", df)
    con.execute("INSERT INTO proxy_runs (search_id, run_id, round, idx, weights, seed, tokens, predicted, status, "
                "score, scores_json, wall_s, host, proposed_at, finished_at) SELECT search_id, run_id, round, idx, "
                "weights::DOUBLE[], seed, tokens, predicted, status, score, scores_json, wall_s, host, proposed_at, "
                "finished_at FROM df")
    con.unregister("df")
    for rnd, n_train, sp in [(1, 6, 0.6), (2, 9, 0.8)]:
        imp = np.abs(rng.normal(0, 1, len(ids)))
        con.execute("INSERT INTO predictor_reports (search_id, round, n_train, spearman, r2, method, importance, "
                    "created_at, predictor, flat) VALUES (?, ?, ?, ?, ?, 'lightgbm', ?, ?, 'lightgbm', false)",
                    [sid, rnd, n_train, sp, sp - 0.2, (imp / imp.sum()).tolist(), now])


def build_workspace(root: Path, n_docs: int = 300):
    if engine_ready():
        return build_real_workspace(root, n_docs)
    return build_synthetic_workspace(root, n_docs)


@pytest.fixture(scope="session")
def template_ws(tmp_path_factory):
    """Built once per session; tests that change it take a copy (`ws`)."""
    root = tmp_path_factory.mktemp("template") / "ws"
    build_workspace(root)
    return root


@pytest.fixture
def ws(template_ws, tmp_path):
    from climb_core.catalogue.workspace import Workspace

    dst = tmp_path / "ws"
    shutil.copytree(template_ws, dst)
    return Workspace.open(dst)
