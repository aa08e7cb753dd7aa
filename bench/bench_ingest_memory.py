"""Peak memory of the ingest stage (streaming batches into DuckDB) against loading the whole file with
`pandas.read_json(lines=True)`, on a corpus made by repeating the demo documents.

    python bench/bench_ingest_memory.py [--docs 60000] [--batch-size 4096] [--embed-docs 1000]

Each measurement runs in its own subprocess and reports its peak RSS (`ru_maxrss`), so one does not
inherit the other's heap; "imports" is the RSS of a process that only imports what ingest uses, the
floor under both. Each repeated document gets a copy marker, so deduplication does not shrink the
workload. With --embed-docs > 0, ingest + embed (the real encoder, CPU unless CUDA is present) on
a smaller slice is measured too, against reading that slice with pandas and encoding it in memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from perf import emit  # noqa: E402
DEMO = REPO / "data" / "demo_corpus.jsonl.gz"


def peak_rss_mb() -> float:
    # ru_maxrss is kilobytes on Linux (bytes on macOS).
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def write_corpus(path: Path, n_docs: int) -> int:
    with gzip.open(DEMO, "rt", encoding="utf-8") as fh:
        demo = [json.loads(line) for line in fh]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n_docs):
            row = dict(demo[i % len(demo)])
            row["id"] = f"{row['id']}-{i}"
            row["text"] = f"{row['text']}\n\n[copy {i // len(demo)}]"
            out.write(json.dumps(row) + "\n")
    return path.stat().st_size


# ----------------------------------------------------------------------------- child processes

def child(mode: str, corpus: str, ws_dir: str, batch_size: int) -> None:
    start = time.perf_counter()
    result: dict = {}
    if mode == "imports":
        import duckdb  # noqa: F401
        import pandas  # noqa: F401

        from climb_core.pipeline import ingest  # noqa: F401
    elif mode == "pandas":
        import pandas as pd

        frame = pd.read_json(corpus, lines=True)
        result["rows"] = len(frame)
    elif mode == "ingest":
        from climb_core.catalogue.workspace import Workspace
        from climb_core.config import ClimbConfig
        from climb_core.pipeline.ingest import run_ingest

        config = ClimbConfig()
        config.ingest.paths = [corpus]
        config.ingest.batch_size = batch_size
        ws = Workspace.init(ws_dir, config)
        result["rows"] = run_ingest(ws, config, progress=False).rows_out
    elif mode == "ingest+embed":
        from climb_core.catalogue.workspace import Workspace
        from climb_core.config import ClimbConfig
        from climb_core.pipeline.embed import run_embed
        from climb_core.pipeline.ingest import run_ingest

        config = ClimbConfig()
        config.ingest.paths = [corpus]
        config.ingest.batch_size = batch_size
        config.embed.max_seq_length = 128
        ws = Workspace.init(ws_dir, config)
        result["rows"] = run_ingest(ws, config, progress=False).rows_out
        run_embed(ws, config, progress=False)
    elif mode == "pandas+encode":
        import pandas as pd

        from climb_core.config import EmbedConfig
        from climb_core.pipeline.embed import load_encoder

        frame = pd.read_json(corpus, lines=True)
        encoder = load_encoder(EmbedConfig(max_seq_length=128))
        vectors = encoder.encode(frame["text"].tolist(), batch_size=64)
        result["rows"] = len(vectors)
    else:
        raise SystemExit(f"unknown mode {mode}")
    result.update(peak_mb=peak_rss_mb(), seconds=time.perf_counter() - start)
    print(json.dumps(result))


def measure(mode: str, corpus: Path, ws_dir: Path, batch_size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(corpus), str(ws_dir), str(batch_size)],
                         check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=60_000)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--embed-docs", type=int, default=1000, help="0 to skip the ingest + embed measurement")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, corpus, ws_dir, batch_size = args.child
        child(mode, corpus, ws_dir, int(batch_size))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp = Path(tmp)
        floor = measure("imports", tmp / "none", tmp / "ws0", args.batch_size)
        print(f"imports only: peak RSS {floor['peak_mb']:.1f} MB; ingest.batch_size {args.batch_size}")
        # Half the size, then the full size: the baseline grows with the data, streaming ingest should not.
        for n_docs in (args.docs // 2, args.docs):
            corpus = tmp / f"corpus-{n_docs}.jsonl"
            size = write_corpus(corpus, n_docs)
            base = measure("pandas", corpus, tmp / f"ws-p{n_docs}", args.batch_size)
            ours = measure("ingest", corpus, tmp / f"ws-i{n_docs}", args.batch_size)
            assert ours["rows"] == n_docs, ours
            print(f"\n{n_docs:,} documents (demo documents repeated), {size / 1e6:.1f} MB of JSONL, "
                  f"{n_docs / args.batch_size:.1f} batches")
            print(f"  baseline pandas.read_json(lines=True): peak RSS {base['peak_mb']:7.1f} MB  ({base['seconds']:.1f} s, parse only)")
            print(f"  run_ingest (stats, quality, dedup):     peak RSS {ours['peak_mb']:7.1f} MB  ({ours['seconds']:.1f} s, "
                  f"{n_docs / ours['seconds']:,.0f} docs/s)")
            print(f"  ratio ingest / pandas: {ours['peak_mb'] / base['peak_mb']:.2f}   above the import floor: "
                  f"{(ours['peak_mb'] - floor['peak_mb']) / max(base['peak_mb'] - floor['peak_mb'], 1e-9):.2f}")
            if n_docs == args.docs:
                emit("bench_ingest_memory.py", "peak memory of ingest", f"{n_docs:,} docs, {size / 1e6:.0f} MB JSONL",
                     f"{ours['peak_mb']:.0f} MB", f"pandas.read_json(lines=True) {base['peak_mb']:.0f} MB",
                     f"{ours['peak_mb'] / base['peak_mb']:.2f}x")

        if args.embed_docs > 0:
            try:
                from climb_core.pipeline.embed import run_embed  # noqa: F401
            except ImportError:
                print("ingest + embed: skipped (climb_core.pipeline.embed.run_embed not available)")
                return 0
            small = tmp / "small.jsonl"
            write_corpus(small, args.embed_docs)
            both = measure("ingest+embed", small, tmp / "ws3", args.batch_size)
            ref = measure("pandas+encode", small, tmp / "ws4", args.batch_size)
            print(f"\nslice of {args.embed_docs:,} documents, embed.max_seq_length 128:")
            print(f"baseline pandas.read_json + encoder.encode: peak RSS {ref['peak_mb']:8.1f} MB  ({ref['seconds']:.1f} s)")
            print(f"run_ingest + run_embed:                     peak RSS {both['peak_mb']:8.1f} MB  ({both['seconds']:.1f} s)")
            print(f"ratio: {both['peak_mb'] / ref['peak_mb']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
