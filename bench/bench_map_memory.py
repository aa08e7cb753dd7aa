"""Peak memory of the map stage against corpus size, with UMAP fitted on a sample.

    nice .venv/bin/python bench/bench_map_memory.py [--docs 20000 200000] [--fit-sample 5000] [--dim 64]

Each size runs in its own process (ru_maxrss is a process-lifetime peak) on a synthetic workspace:
minimal documents and one Gaussian blob of embeddings per cluster, written as embedding shards the
way the embed stage writes them, so `run_map` streams them from memmapped .npy files. It prints
the peak RSS, the part of it above the process's baseline after imports and JIT warm-up, and time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build(root: Path, n: int, dim: int, k: int = 50, shard: int = 50_000, seed: int = 0) -> None:
    from climb_core.catalogue.workspace import Workspace
    from climb_core.pipeline.embed import shard_name

    rng = np.random.default_rng(seed)
    ws = Workspace.init(root)
    centres = rng.normal(0, 1, (k, dim)).astype(np.float32)
    labels = rng.integers(0, k, n)
    ws.embeddings_dir.mkdir(parents=True, exist_ok=True)
    for i, lo in enumerate(range(0, n, shard)):
        hi = min(n, lo + shard)
        x = centres[labels[lo:hi]] + rng.normal(0, 0.35, (hi - lo, dim)).astype(np.float32)
        np.save(ws.embeddings_dir / f"{shard_name(i)}.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
    with ws.connect() as con:
        con.execute(f"INSERT INTO documents (doc_idx, doc_id, text) SELECT i, 'd' || i, 'x' FROM range({n}) r(i)")
        import pandas as pd
        con.register("a", pd.DataFrame({"doc_idx": np.arange(n), "c": labels.astype(np.int32)}))
        con.execute("INSERT INTO assignments SELECT doc_idx, c, 0 FROM a")


def child(root: str, fit_sample: int, batch: int) -> None:
    from climb_core.catalogue.workspace import Workspace
    from climb_core.config import ClimbConfig
    from climb_core.pipeline import map as map_stage

    import umap  # noqa: F401 - import cost out of the measured part
    rng = np.random.default_rng(0)
    warm = rng.normal(size=(300, 8)).astype(np.float32)
    umap.UMAP(n_neighbors=10, random_state=0, n_jobs=1).fit(warm).transform(warm[:50])  # numba JIT
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = ClimbConfig()
    cfg.map.fit_sample, cfg.map.transform_batch = fit_sample, batch
    t0 = time.perf_counter()
    out = map_stage.run_map(Workspace.open(root), cfg, force=True, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak, "base_mb": base, "wall_s": time.perf_counter() - t0, "message": out.message}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--fit-sample", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    work = Path(tempfile.mkdtemp(prefix="climb-mapmem-"))
    rows = []
    for n in args.docs:
        root = work / f"ws-{n}"
        build(root, n, args.dim)
        res = subprocess.run([sys.executable, __file__, "--child", str(root), str(args.fit_sample), str(args.batch)],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1]) | {"docs": n}
        rows.append(r)
        print(f"{n:>9,} docs ({args.dim}-d, fit_sample {args.fit_sample}, batch {args.batch}): peak RSS "
              f"{r['peak_mb']:.0f} MB ({r['peak_mb'] - r['base_mb']:.0f} MB above the warmed-up process), "
              f"{r['wall_s']:.0f}s; {r['message']}", flush=True)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"corpus x{b['docs'] / a['docs']:.0f}: peak RSS x{b['peak_mb'] / a['peak_mb']:.2f}, "
              f"above baseline x{(b['peak_mb'] - b['base_mb']) / max(1, a['peak_mb'] - a['base_mb']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
