"""Cost of one short catalogue connection: open, one small query, close.

    python bench/bench_catalogue_connect.py [--docs 20000] [--repeats 200]

Ours: `Workspace.connect()` (the catalogue file ATTACHed to the process's in-memory DuckDB instance
for the block, DETACHed after). Baseline, same run, same file: `duckdb.connect(path)` and `close()`,
a DuckDB instance started on the file for each connection, which is what every short connection
cost before. The workspace is a fresh one with `--docs` synthetic documents, so the catalogue has
real tables and rows; nothing else holds it while timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import emit  # noqa: E402

QUERY = "SELECT count(*) FROM documents WHERE doc_idx % 7 = 0"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()

    import duckdb

    from climb_core.catalogue.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        with ws.connect() as con:
            con.execute(f"""INSERT INTO documents (doc_idx, doc_id, text)
                            SELECT i, 'doc-' || i, repeat('some words of text ', 20) FROM range({args.docs}) r(i)""")
        size_mb = ws.db_path.stat().st_size / 1e6

        def ours():
            with ws.connect() as con:
                return con.execute(QUERY).fetchone()[0]

        def plain():
            con = duckdb.connect(str(ws.db_path))
            try:
                return con.execute(QUERY).fetchone()[0]
            finally:
                con.close()

        assert ours() == plain()
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        for _ in range(args.repeats):  # interleaved, so drift in the machine's load hits both alike
            for name, fn in (("ours", ours), ("plain", plain)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    o, p = (statistics.median(times[k]) * 1000 for k in ("ours", "plain"))
    print(f"data: a catalogue of {args.docs:,} documents ({size_mb:.1f} MB), {args.repeats} connections each, interleaved")
    print(f"Workspace.connect (attach to the process's instance): median {o:.2f} ms")
    print(f"duckdb.connect(path) + close (a new instance each)   : median {p:.2f} ms")
    print(f"ratio {o / p:.2f}x ({p / o:.1f}x faster)")
    emit("bench_catalogue_connect.py", "one short catalogue connection (open, small query, close)",
         f"catalogue of {args.docs:,} documents, {size_mb:.1f} MB, median of {args.repeats}", f"{o:.2f} ms",
         f"duckdb.connect(path) + close {p:.2f} ms", f"{o / p:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
