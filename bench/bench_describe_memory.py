"""Peak memory of the describe stage (keywords per cluster) as the corpus grows, 100k -> 1M documents.

    python bench/bench_describe_memory.py [--sizes 100000,1000000] [--k 1000] [--work DIR]

A catalogue is written straight into DuckDB for each size: the shared pool's real texts
(../shared/data/pool, else the bundled demo corpus) repeated to N documents, each document put in
one of K active clusters by a hash of its doc_idx (as refined clusters of a real corpus, every
cluster spans the whole corpus). No embeddings: describe then computes keywords only, which is the
part that reads the text. `climb describe` runs as its own process; its peak RSS is sampled every
0.05 s. Baseline, in the same run: the same stage at the smallest size. The ratio is
peak(N) / peak(smallest); the claim is <= 1.5 from 100k to 1M.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from climb_core.catalogue.workspace import Workspace  # noqa: E402
from peak_rss import across_sizes, run_climb  # noqa: E402
from perf import emit  # noqa: E402

POOL = REPO.parent / "shared" / "data" / "pool"
DEMO = REPO / "data" / "demo_corpus.jsonl.gz"


def source_texts() -> tuple[list[str], str]:
    paths = sorted(POOL.glob("*.jsonl.gz")) if POOL.exists() else [DEMO]
    texts = []
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    return texts, ("../shared/data/pool" if POOL.exists() else "data/demo_corpus.jsonl.gz")


def build(folder: Path, n: int, k: int, texts: list[str]) -> Workspace:
    import pandas as pd

    shutil.rmtree(folder, ignore_errors=True)
    ws = Workspace.init(folder)
    base = pd.DataFrame({"i": range(len(texts)), "text": texts})
    with ws.connect() as con:
        con.register("base", base)
        con.execute(f"""INSERT INTO documents (doc_idx, doc_id, text)
                        SELECT r, 'd' || r, b.text FROM range({n}) t(r) JOIN base b ON b.i = r % {len(texts)}""")
        con.execute(f"INSERT INTO doc_clusters SELECT doc_idx, CAST(hash(doc_idx * 7919) % {k} AS INTEGER) FROM documents")
        con.execute("""INSERT INTO clusters (cluster_id, state, size_docs)
                        SELECT cluster_id, 'active', count(*) FROM doc_clusters GROUP BY cluster_id""")
        con.execute("CHECKPOINT")
    return ws


def run_describe(ws: Workspace) -> tuple[float, float, str]:
    m = run_climb(["describe", ws.root, "--force", "--quiet"])
    return m.wall_s, m.peak_mb, m.summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--work", default="/tmp/climb-bench-describe")
    ap.add_argument("--keep", action="store_true", help="keep the catalogues (about 1 GB at 1M)")
    ap.add_argument("--reuse", action="store_true", help="describe catalogues kept by an earlier --keep run")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    texts, source = source_texts()
    print(f"describe memory: {len(texts):,} real texts from {source} repeated to "
          f"{', '.join(f'{n:,}' for n in sizes)} docs, K={args.k} clusters (by hash), keywords only", flush=True)
    rows = across_sizes("describe", sizes, Path(args.work), lambda folder, n: build(folder, n, args.k, texts),
                        run_describe, keep=args.keep, reuse=args.reuse)
    small, big = sizes[0], sizes[-1]
    ratio = rows[big][1] / rows[small][1]
    print(f"peak RSS {big:,} / {small:,}: {ratio:.2f}x (target <= 1.5); time per document "
          f"{(rows[big][0] / big) / (rows[small][0] / small):.2f}x")
    emit("bench_describe_memory.py", "peak RSS of the describe stage (keywords)",
         f"pool texts repeated to {big:,} docs, K={args.k}", f"{rows[big][1]:.0f} MB, {rows[big][0]:.0f} s",
         f"the same at {small:,} docs: {rows[small][1]:.0f} MB, {rows[small][0]:.0f} s", f"{ratio:.2f}x memory")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
