"""Peak memory of the cluster stage (k-means fit on a sample, assignment of every document) as the
corpus grows, 100k -> 1M documents.

    python bench/bench_cluster_memory.py [--sizes 100000,1000000] [--k 1000] [--work DIR] [--trace]

For each size a catalogue is written straight into DuckDB (N documents with a short text each) beside
float16 embedding shards of 8,192 rows, as the embed stage writes them. The vectors are a mixture of
K_TRUE unit-norm centres in 384 dimensions plus noise, normalised: k-means meets the same kind of
geometry as on MiniLM embeddings, not a uniform cloud. `climb cluster` runs as its own process with
the default config (fit sample 200,000, K given); its peak RSS is sampled every 0.05 s.
Baseline, in the same run: the same stage at the smallest size. The ratio is
peak(N) / peak(smallest); the claim is <= 1.5 from 100k to 1M. `--trace` prints the RSS curve.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from climb_core.catalogue import stages  # noqa: E402
from climb_core.catalogue.workspace import Workspace  # noqa: E402
from climb_core.pipeline.embed import shard_name  # noqa: E402
from peak_rss import across_sizes, run_climb  # noqa: E402
from perf import emit  # noqa: E402

DIM, K_TRUE, SHARD = 384, 200, 8192


def build(folder: Path, n: int) -> Workspace:
    shutil.rmtree(folder, ignore_errors=True)
    ws = Workspace.init(folder)
    with ws.connect() as con:
        con.execute(f"INSERT INTO documents (doc_idx, doc_id, text) SELECT r, 'd' || r, 'doc ' || r FROM range({n}) t(r)")
        con.execute("CHECKPOINT")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((K_TRUE, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ws.embeddings_dir.mkdir(parents=True, exist_ok=True)
    for i, lo in enumerate(range(0, n, SHARD)):
        m = min(SHARD, n - lo)
        x = centres[rng.integers(0, K_TRUE, m)] + 0.6 / np.sqrt(DIM) * rng.standard_normal((m, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(ws.embeddings_dir / f"{shard_name(i)}.npy", x.astype(np.float16))
        stages.mark_shard(ws, "embed", shard_name(i), m, {"lo": lo, "hi": lo + m})
    return ws


def run_cluster(ws: Workspace, k: int, trace: bool) -> tuple[float, float, str]:
    m = run_climb(["cluster", ws.root, "--force", "--quiet", "--set", f"cluster.k={k}"])
    if trace:
        print("    t (s)  RSS (MB)")
        for t, r in m.curve[::max(1, len(m.curve) // 60)]:
            print(f"    {t:6.1f}  {r:7.0f}")
    return m.wall_s, m.peak_mb, m.summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--work", default="/tmp/climb-bench-cluster")
    ap.add_argument("--keep", action="store_true", help="keep the catalogues (about 0.8 GB of shards at 1M)")
    ap.add_argument("--reuse", action="store_true", help="cluster catalogues kept by an earlier --keep run")
    ap.add_argument("--trace", action="store_true", help="print each run's RSS over time")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"cluster memory: synthetic {DIM}-d float16 embeddings ({K_TRUE} true centres), "
          f"{', '.join(f'{n:,}' for n in sizes)} docs, K={args.k}, default fit sample", flush=True)
    rows = across_sizes("cluster", sizes, Path(args.work), build, lambda ws: run_cluster(ws, args.k, args.trace),
                        keep=args.keep, reuse=args.reuse)
    small, big = sizes[0], sizes[-1]
    ratio = rows[big][1] / rows[small][1]
    print(f"peak RSS {big:,} / {small:,}: {ratio:.2f}x (target <= 1.5)")
    emit("bench_cluster_memory.py", "peak RSS of the cluster stage (k-means fit on a sample, assign all)",
         f"synthetic {DIM}-d embeddings, {big:,} docs, K={args.k}", f"{rows[big][1]:.0f} MB, {rows[big][0]:.0f} s",
         f"the same at {small:,} docs: {rows[small][1]:.0f} MB, {rows[small][0]:.0f} s", f"{ratio:.2f}x memory")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
