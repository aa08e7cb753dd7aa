"""Embedding throughput: the embed stage (length-sorted chunks, char cut, DuckDB reads, shard writes)
against sentence-transformers' own `encode` on the same documents in input order, same process.

    python bench/bench_embed.py [--docs 600] [--max-seq-length 256] [--batch-size 64]

Documents come from ../shared/data/pool when it is beside the checkout (mixed lengths, shuffled),
else from the bundled demo corpus (--demo forces it; its texts are all cut near 3000 chars, so
length sorting has little to sort there). The model is loaded once, before any timing. Each method
reports wall time and process CPU time: on a machine shared with other work the CPU figure is the
steadier one.

    python bench/bench_embed.py --backends [--docs 1000] [--nmi-per-domain 250] [--models-dir DIR]

compares the embedding backends instead, on pool documents at max_seq_length 256: torch-bf16,
onnx-int8 and static docs/s against fp32 SentenceTransformer.encode on the same documents (mean and
min cosine to it for torch-bf16 and onnx-int8), and how well the final clusters of each recover the pool's 8 true domains (NMI):
ingest, embed, cluster and refine as the pipeline runs them, same K, once with torch and once with
static embeddings. The derived models are built in --models-dir (a fresh temporary folder unless
given, so their build time is measured too; pass a folder to reuse its models between runs).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from climb_core.catalogue.workspace import Workspace  # noqa: E402
from climb_core.config import ClimbConfig, with_overrides  # noqa: E402
from climb_core.pipeline import embed  # noqa: E402
from perf import emit  # noqa: E402

DEMO = REPO / "data" / "demo_corpus.jsonl.gz"
POOL = REPO.parent / "shared" / "data" / "pool"


def load_texts(n: int, demo: bool) -> tuple[list[str], str]:
    if demo or not POOL.exists():
        with gzip.open(DEMO, "rt", encoding="utf-8") as fh:
            return [json.loads(line)["text"] for line in fh][:n], "data/demo_corpus.jsonl.gz"
    texts = []
    for path in sorted(POOL.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    random.Random(0).shuffle(texts)
    return texts[:n], "../shared/data/pool (shuffled)"


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def pool_by_domain(per_domain: int) -> list[dict]:
    """Up to `per_domain` random pool documents of each domain (all of a smaller one), shuffled."""
    rng = random.Random(0)
    rows = []
    for path in sorted(POOL.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            docs = [json.loads(line) for line in fh]
        rows += rng.sample(docs, min(per_domain, len(docs)))
    rng.shuffle(rows)
    return rows


def final_clusters_nmi(rows: list[dict], backend: str, models_root: Path, k: int, tmp: Path) -> tuple[float, float, float]:
    """(final NMI, base k-means NMI, embed wall s) of the pipeline's clusters against the true domains."""
    from sklearn.metrics import normalized_mutual_info_score

    from climb_core.pipeline.run import run_stage

    corpus = tmp / f"pool-{backend}.jsonl"
    # The engine sees id and text only: the true domain stays here.
    corpus.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    truth = {r["id"]: r["domain"] for r in rows}
    # Pipeline defaults but for a fixed K (the same for both) and no pruning, so that both label every document.
    config = with_overrides(ClimbConfig(), {"embed.backend": backend, "embed.max_seq_length": 256, "cluster.k": k,
                                            "prune.min_quality": 0.0, "prune.min_size": 1})
    config.ingest.paths = [str(corpus)]
    ws = Workspace.init(tmp / f"ws-{backend}", config)
    (ws.root / "models").symlink_to(models_root)  # the derived models are built once, not per workspace
    embed_wall = 0.0
    for stage in ("ingest", "embed", "cluster", "refine"):
        t0 = time.perf_counter()
        run_stage(ws, stage, config, progress=False)
        embed_wall = time.perf_counter() - t0 if stage == "embed" else embed_wall
    df = ws.query_df("SELECT d.doc_id, dc.cluster_id, a.base_cluster FROM documents d "
                     "JOIN doc_clusters dc USING (doc_idx) JOIN assignments a USING (doc_idx)")
    domains = np.array([truth[i] for i in df["doc_id"]])
    return (normalized_mutual_info_score(domains, df["cluster_id"]),
            normalized_mutual_info_score(domains, df["base_cluster"]), embed_wall)


def compare_backends(args) -> int:
    from climb_core.pipeline import embed_backends

    if not POOL.exists():
        print(f"--backends needs the pool at {POOL}")
        return 2
    texts, source = load_texts(args.docs, demo=False)
    config = with_overrides(ClimbConfig(), {"embed.max_seq_length": 256, "embed.batch_size": args.batch_size})
    cfg = config.embed
    import torch

    chars = np.array([len(t) for t in texts])
    print(f"data: {len(texts)} documents from {source} for timing; chars median {int(np.median(chars))}, "
          f"total {chars.sum() / 1e6:.2f} M; max_seq_length 256, batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()}, onnxruntime threads {embed_backends._omp_threads() or 'default'}")
    with tempfile.TemporaryDirectory() as tmp:
        models_root = Path(args.models_dir or Path(tmp) / "models").resolve()
        model_path = embed.resolve_model(cfg.model)
        encoders = {"torch": embed.load_encoder(cfg),
                    "torch-bf16": embed.load_encoder(with_overrides(config, {"embed.backend": "torch-bf16"}).embed)}
        for backend in ("onnx-int8", "static"):
            was_there = (embed_backends.cache_dir(models_root, model_path, backend) / embed_backends.BUILT_MARK).exists()
            folder = embed_backends.prepare(backend, model_path, models_root, offline=True)
            encoders[backend] = embed.load_encoder(with_overrides(config, {"embed.backend": backend}).embed, models_root)
            print(f"{backend}: model built in {embed_backends.build_seconds(folder):.1f} s wall"
                  + (" (earlier run; reused now)" if was_there else "") + f", {folder}")
        for enc in encoders.values():
            embed.encode_texts(enc, texts[:args.batch_size], cfg)  # warm-up, untimed

        out: dict[str, np.ndarray] = {}

        def run(name):
            out[name] = (encoders["torch"].encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                                  convert_to_numpy=True) if name == "encode"
                         else embed.encode_texts(encoders[name], texts, cfg))

        times = {name: timed(lambda name=name: run(name)) for name in ("encode", "torch-bf16", "onnx-int8")}
        # The static model is too quick for one pass over these documents to time well: several.
        reps = 10
        static = timed(lambda: [run("static") for _ in range(reps)])
        times["static"] = (static[0] / reps, static[1] / reps)
        n = len(texts)
        base_wall, base_cpu = times["encode"]
        print(f"{'method':56s} {'wall s':>7s} {'docs/s':>8s} {'CPU s':>7s} {'docs/CPU-s':>10s} {'x encode (wall, CPU)':>21s}")
        labels = {"encode": "torch fp32: SentenceTransformer.encode (baseline)",
                  "torch-bf16": "torch-bf16: the same model in bfloat16"
                                + ("" if embed_backends.cpu_has_fast_bf16() else " (no bf16 hardware)"),
                  "onnx-int8": "onnx-int8: int8 ONNX graph on onnxruntime",
                  "static": f"static: model2vec distilled (mean of {reps} passes)"}
        for name, (wall, cpu) in times.items():
            print(f"{labels[name]:56s} {wall:7.2f} {n / wall:8.1f} {cpu:7.2f} {n / cpu:10.1f} "
                  f"{base_wall / wall:10.2f}x {base_cpu / cpu:8.2f}x")
        cos_bf16 = (out["torch-bf16"] * out["encode"]).sum(1)
        print(f"torch-bf16 cosine to fp32 encode over {n} docs: mean {cos_bf16.mean():.5f}, min {cos_bf16.min():.5f}")
        cos = (out["onnx-int8"] * out["encode"]).sum(1)
        print(f"onnx-int8 cosine to fp32 encode over {n} docs: mean {cos.mean():.4f}, min {cos.min():.4f}, "
              f"5th percentile {np.percentile(cos, 5):.4f} (targets: >= 3x docs/s, mean cosine >= 0.99; static >= 30x)")

        rows = pool_by_domain(args.nmi_per_domain)
        k = int(np.clip(round(np.sqrt(len(rows))), 8, 1000))
        print(f"NMI data: {len(rows)} pool documents, up to {args.nmi_per_domain} of each of the 8 domains; "
              f"K={k}, refine Ward-merges to 20 clusters (pruning off)")
        nmi = {}
        for backend in ("torch", "static"):
            nmi[backend] = final_clusters_nmi(rows, backend, models_root, k, Path(tmp))
            print(f"  {backend:7s}: final NMI {nmi[backend][0]:.3f}, k-means NMI {nmi[backend][1]:.3f} "
                  f"(embed stage {nmi[backend][2]:.1f} s wall)")
        print(f"final-cluster NMI, static minus torch: {nmi['static'][0] - nmi['torch'][0]:+.3f} (target: within 0.05); "
              f"k-means NMI difference {nmi['static'][1] - nmi['torch'][1]:+.3f}")
        data = f"{n:,} shared-pool docs at 256 tokens"
        emit("bench_embed.py", "embedding, torch-bf16 backend", data, f"{n / times['torch-bf16'][1]:.1f} docs/CPU-s",
             f"torch fp32 encode {n / base_cpu:.1f} docs/CPU-s",
             f"{base_cpu / times['torch-bf16'][1]:.2f}x (CPU time), {base_wall / times['torch-bf16'][0]:.2f}x wall; "
             f"mean cosine to fp32 {cos_bf16.mean():.5f}" + ("" if embed_backends.cpu_has_fast_bf16() else "; no bf16 hardware"))
        emit("bench_embed.py", "embedding, onnx-int8 backend", data, f"{n / times['onnx-int8'][1]:.1f} docs/CPU-s",
             f"torch fp32 encode {n / base_cpu:.1f} docs/CPU-s",
             f"{base_cpu / times['onnx-int8'][1]:.2f}x (CPU time); mean cosine to fp32 {cos.mean():.4f}")
        emit("bench_embed.py", "embedding, static backend (model2vec)", data, f"{n / times['static'][1]:.0f} docs/CPU-s",
             f"torch fp32 encode {n / base_cpu:.1f} docs/CPU-s",
             f"{base_cpu / times['static'][1]:.0f}x (CPU time); NMI vs 8 domains {nmi['static'][0]:.3f} vs "
             f"MiniLM {nmi['torch'][0]:.3f} (K={k}, merged to 20)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", action="store_true", help="compare the embedding backends (see above)")
    ap.add_argument("--nmi-per-domain", type=int, default=250)
    ap.add_argument("--models-dir", default="", help="where --backends builds or finds the derived models")
    ap.add_argument("--docs", type=int, default=None, help="documents timed (default 400; 1000 with --backends)")
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--demo", action="store_true", help="use the bundled demo corpus even if the pool is present")
    args = ap.parse_args()
    if args.backends:
        args.docs = args.docs or 1000
        return compare_backends(args)
    args.docs = args.docs or 400

    texts, source = load_texts(args.docs, args.demo)
    config = with_overrides(ClimbConfig(), {"embed.max_seq_length": args.max_seq_length,
                                            "embed.batch_size": args.batch_size,
                                            "embed.shard_size": max(1, min(8192, len(texts) // 2))})
    chars = np.array([len(t) for t in texts])
    print(f"data: {len(texts)} documents from {source}; chars median {int(np.median(chars))}, "
          f"total {chars.sum() / 1e6:.2f} M; max_seq_length {args.max_seq_length}, batch {args.batch_size}, "
          f"torch threads {__import__('torch').get_num_threads()}")
    encoder = embed.load_encoder(config.embed)
    encoder.encode(texts[:args.batch_size], batch_size=args.batch_size)  # warm-up, untimed

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws", config)
        df = pd.DataFrame({"doc_idx": np.arange(len(texts), dtype=np.int64), "text": texts})
        with ws.connect() as con:
            con.register("df", df)
            con.execute("INSERT INTO documents (doc_idx, doc_id, text) SELECT doc_idx, CAST(doc_idx AS VARCHAR), text FROM df")
        stage = timed(lambda: embed.run_embed(ws, config, progress=False))
        ours = embed.load_embeddings(ws)

    plain_out = []
    plain = timed(lambda: plain_out.append(encoder.encode(
        texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True)))

    def unsorted_batches():
        # A loop over input-order batches: what a stage without any length sorting would do.
        for lo in range(0, len(texts), args.batch_size):
            encoder.encode(texts[lo:lo + args.batch_size], batch_size=args.batch_size, normalize_embeddings=True)

    naive = timed(unsorted_batches)

    n = len(texts)
    rows = [("run_embed (stage: DuckDB reads, sorted chunks, .npy shards)", stage),
            ("SentenceTransformer.encode(all, input order) [sorts internally]", plain),
            ("encode per batch in input order (no sorting)", naive)]
    print(f"{'method':66s} {'wall s':>7s} {'docs/s':>7s} {'CPU s':>7s} {'docs/CPU-s':>10s}")
    for name, (wall, cpu) in rows:
        print(f"{name:66s} {wall:7.1f} {n / wall:7.1f} {cpu:7.1f} {n / cpu:10.2f}")
    print(f"speed-up of the stage (CPU time): vs encode(all) {plain[1] / stage[1]:.2f}x, "
          f"vs unsorted batches {naive[1] / stage[1]:.2f}x; (wall) {plain[0] / stage[0]:.2f}x, {naive[0] / stage[0]:.2f}x")
    agree = float((ours * plain_out[0]).sum(1).min())
    print(f"min cosine between stage and plain embeddings: {agree:.4f} (float16 storage)")
    emit("bench_embed.py", "embedding, torch backend (stage, with DuckDB reads and shard writes)",
         f"{n:,} docs of the {source} at {args.max_seq_length} tokens", f"{n / stage[1]:.1f} docs/CPU-s",
         f"SentenceTransformer.encode {n / plain[1]:.1f} docs/CPU-s", f"{plain[1] / stage[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
