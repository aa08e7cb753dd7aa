"""Embedding throughput: the embed stage (length-sorted chunks, char cut, DuckDB reads, shard writes)
against sentence-transformers' own `encode` on the same documents in input order, same process.

    python bench/bench_embed.py [--docs 600] [--max-seq-length 256] [--batch-size 64]

Documents come from ../shared/data/pool when it is beside the checkout (mixed lengths, shuffled),
else from the bundled demo corpus (--demo forces it; its texts are all cut near 3000 chars, so
length sorting has little to sort there). The model is loaded once, before any timing. Each method
reports wall time and process CPU time: on a machine shared with other work the CPU figure is the
steadier one.
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

from climb_core import embed  # noqa: E402
from climb_core.config import ClimbConfig, with_overrides  # noqa: E402
from climb_core.workspace import Workspace  # noqa: E402

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--demo", action="store_true", help="use the bundled demo corpus even if the pool is present")
    args = ap.parse_args()

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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
