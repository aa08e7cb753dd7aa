"""Run every benchmark in bench/ one after another, then rewrite the performance table in docs/BENCHMARKS.md.

    python bench/run_all.py [--only NAME,NAME] [--no-table]

Each benchmark prints its figure beside a baseline as a ratio; rows meant for the table are its
`PERF {json}` lines (bench/perf.py). Rows of benchmarks not run this time are kept from
bench/perf_rows.json, so one benchmark can be re-run alone and the table stays whole.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLE_DOC = HERE.parent / "docs" / "BENCHMARKS.md"
ROWS = HERE / "perf_rows.json"  # committed: the table stays whole when one benchmark is re-run
START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
# Benchmarks run more than once, with these arguments (default: once, with none).
RUNS = {"bench_embed.py": [[], ["--backends"]]}


def run(script: Path, extra: list[str]) -> tuple[int, list[dict]]:
    proc = subprocess.Popen([sys.executable, str(script), *extra], cwd=HERE.parent, stdout=subprocess.PIPE, text=True)
    rows = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("PERF "):
            rows.append(json.loads(line[5:]))
    return proc.wait(), rows


def table(rows: list[dict]) -> str:
    lines = ["| what | data | CLIMB Studio | baseline, same run | ratio | machine |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r['what']} (`{r['bench']}`)", r["data"], r["ours"], r["baseline"], r["ratio"], r["machine"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def rewrite_table(rows: list[dict]) -> bool:
    text = TABLE_DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"docs/BENCHMARKS.md has no {START} ... {END} markers: table not written")
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    TABLE_DOC.write_text(f"{head}{START}\n{table(rows)}\n{END}{tail}", encoding="utf-8")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated benchmark names (e.g. bench_kmeans)")
    ap.add_argument("--no-table", action="store_true")
    args = ap.parse_args()
    only = {n.strip().removesuffix(".py") for n in args.only.split(",") if n.strip()}
    scripts = [s for s in sorted(HERE.glob("bench_*.py")) if not only or s.stem in only]
    kept = json.loads(ROWS.read_text()) if ROWS.exists() else {}
    failed = []
    for script in scripts:
        rows, ok = [], True
        for extra in RUNS.get(script.name, [[]]):
            print(f"\n=== {script.name} {' '.join(extra)}", flush=True)
            code, got = run(script, extra)
            ok = ok and code == 0
            rows += got
        if not ok:
            failed.append(script.name)
        elif rows:
            kept[script.name] = rows
    ROWS.parent.mkdir(parents=True, exist_ok=True)
    ROWS.write_text(json.dumps(kept, indent=1))
    if not args.no_table:
        ordered = [row for name in sorted(kept) for row in kept[name]]
        if rewrite_table(ordered):
            print(f"\ndocs/BENCHMARKS.md performance table: {len(ordered)} rows from {len(kept)} benchmarks")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
