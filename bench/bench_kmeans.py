"""k-means on CPU: our kmeans_fit + assign against faiss.Kmeans and scikit-learn KMeans directly,
same data, same K and iterations. Default: K=1000 on 100k x 384 clustered unit vectors.

    python bench/bench_kmeans.py [--n 100000] [--k 1000] [--niter 25] [--skip-sklearn] [--workspace WS]

With --workspace, the data are that workspace's real embeddings (first --n rows).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402

from climb_core.pipeline import cluster  # noqa: E402
from perf import emit  # noqa: E402


def clustered_data(n: int, d: int, n_true: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors scattered around n_true random directions, like sentence embeddings of topics."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_true, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, n_true, n)
    X = centres[truth] + rng.standard_normal((n, d)).astype(np.float32) * (0.6 / np.sqrt(d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X, dtype=np.float32), truth


def inertia(X: np.ndarray, labels: np.ndarray, C: np.ndarray) -> float:
    return float(((X - C[labels]) ** 2).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--niter", type=int, default=25)
    ap.add_argument("--skip-sklearn", action="store_true", help="skip scikit-learn (about 136 s at the defaults)")
    ap.add_argument("--workspace", help="use this workspace's embeddings instead of generated data")
    args = ap.parse_args()

    import faiss

    truth = None
    if args.workspace:
        from climb_core.catalogue.workspace import Workspace
        from climb_core.pipeline.embed import load_embeddings

        X = np.ascontiguousarray(load_embeddings(Workspace.open(args.workspace))[:args.n])
        what = f"real embeddings of {args.workspace}"
    else:
        X, truth = clustered_data(args.n, args.d, args.k)
        what = f"unit vectors around {args.k} random directions"
    print(f"data: {X.shape[0]} x {X.shape[1]} float32 ({X.nbytes / 1e6:.0f} MB), {what}; K={args.k}, "
          f"{args.niter} iterations; faiss threads {faiss.omp_get_max_threads()}")

    def report(name: str, fn) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        labels, centroids = fn()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        nmi = f"  NMI vs generator {normalized_mutual_info_score(truth, labels):.3f}" if truth is not None else ""
        ratio = f"  x{wall / base[0]:5.2f} wall, x{cpu / base[1]:5.2f} CPU of faiss" if base else ""
        print(f"{name:40s} {wall:7.1f} s wall {cpu:7.1f} s CPU{ratio}  inertia {inertia(X, labels, centroids):8.1f}{nmi}",
              flush=True)
        return wall, cpu

    def faiss_direct():
        km = faiss.Kmeans(X.shape[1], args.k, niter=args.niter, seed=0, verbose=False)
        km.train(X)
        _, ids = km.index.search(X, 1)
        return ids[:, 0], km.centroids

    def ours():
        C = cluster.kmeans_fit(X, args.k, backend="auto", niter=args.niter, seed=0)
        return cluster.assign(X, C)[0], C

    def sklearn_direct():
        from sklearn.cluster import KMeans

        sk = KMeans(n_clusters=args.k, n_init=1, max_iter=args.niter, random_state=0).fit(X)
        return sk.predict(X), sk.cluster_centers_

    base = None  # the faiss figures, once measured: the others are reported as multiples of them
    base = report("faiss.Kmeans + index.search", faiss_direct)
    mine = report(f"ours: kmeans_fit(auto={cluster.pick_backend('auto')}) + assign", ours)
    sk = None if args.skip_sklearn else report("sklearn KMeans(n_init=1) + predict", sklearn_direct)
    emit("bench_kmeans.py", f"k-means K={args.k}, {args.niter} iterations, fit + assign",
         f"{X.shape[0]:,} x {X.shape[1]}", f"{mine[0]:.1f} s ({cluster.pick_backend('auto')})",
         f"faiss.Kmeans {base[0]:.1f} s" + ("" if sk is None else f"; scikit-learn {sk[0]:.1f} s"),
         f"{mine[0] / base[0]:.2f}x faiss" + ("" if sk is None else f"; {sk[0] / mine[0]:.0f}x faster than scikit-learn"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
