"""The whole pipeline at 10k, 100k and 1M documents: wall time and peak RSS per stage.

    python bench/bench_scale.py [--sizes 10000,100000,1000000] [--backend static] [--k 1000]
                                [--work DIR] [--keep]

The corpora are the shared pool (../shared/data/pool, 32,636 real documents of 8 domains)
REPLICATED to the requested size: copy r of a document has id `<id>~r<r>`, a `replica` field equal
to r, and a light perturbation (two neighbouring words swapped at a place only that copy uses) so that exact
dedup keeps it. Replicas are not new text: cluster quality at 1M says nothing beyond the pool's.

Each stage runs as its own `climb <stage>` process (ingest -> embed -> cluster -> refine -> describe
-> map, K clusters, the embed backend given); the peak RSS of its process tree is sampled every
0.1 s. Baseline, in the same run: the same stage at the next smaller size. The memory ratio is
peak(N) / peak(N/10), which should stay near 1 for every stage (the target is <= 1.5 from 100k to
1M); the time ratio is time(N) / (10 x time(N/10)), 1.0 for a stage linear in N.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
POOL = REPO.parent / "shared" / "data" / "pool"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_rss import run_climb  # noqa: E402
from perf import emit  # noqa: E402
STAGES = ["ingest", "embed", "cluster", "refine", "describe", "map"]
RESULTS = REPO / "bench" / "results" / "scale.jsonl"


def pool_records() -> list[dict]:
    if not POOL.exists():
        raise SystemExit(f"needs the shared pool at {POOL}")
    rows = []
    for path in sorted(POOL.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh)
    return rows


def _perturbed(text: str, r: int) -> str:
    """Copy r >= 1 of `text`, distinct from the original and from every other copy after case and
    whitespace folding (what exact dedup compares): two differing neighbouring words swapped at a
    place that only copy r uses (7919 is prime, so r -> 7919 r mod n is one-to-one for r < n), or a
    marker word where there are too few such places."""
    words = text.split(" ")   # not split(): newlines and layout stay as they were
    plain = [bool(w) and len(w.split()) == 1 and w.split()[0] == w for w in words]   # no layout inside
    swappable = [i for i in range(len(words) - 1)
                 if plain[i] and plain[i + 1] and words[i].casefold() != words[i + 1].casefold()]
    if r < len(swappable):
        i = swappable[(7919 * r) % len(swappable)]
        words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
    return f"{text} ~{r}"


def write_corpus(path: Path, n: int, pool: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            base = pool[i % len(pool)]
            r = i // len(pool)
            row = {"id": base["id"] if r == 0 else f"{base['id']}~r{r}", "replica": r,
                   "domain": base.get("domain"),
                   "text": base["text"] if r == 0 else _perturbed(base["text"], r)}
            out.write(json.dumps(row) + "\n")


def run_stage(ws: Path, stage: str, extra: list[str]) -> dict:
    m = run_climb([stage, ws, *extra], interval=0.1, log_path=ws.parent / f"{stage}.log")
    return {"stage": stage, "wall_s": round(m.wall_s, 2), "peak_rss_mb": round(m.peak_mb, 1), "summary": m.summary}


def build(n: int, work: Path, pool: list[dict], backend: str, k: int, quiet: bool = False) -> list[dict]:
    folder = work / f"n{n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    corpus = folder / "corpus.jsonl"
    t = time.perf_counter()
    write_corpus(corpus, n, pool)
    if not quiet:
        print(f"  corpus: {n:,} docs ({corpus.stat().st_size / 2**30:.2f} GiB) written in {time.perf_counter() - t:.0f} s",
              flush=True)
    ws = folder / "ws"
    subprocess.run([sys.executable, "-m", "climb_core.cli", "init", str(ws)], cwd=str(REPO), check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)
    # One cache of derived encoders for every size: the static model is distilled once, not per size.
    (work / "models").mkdir(parents=True, exist_ok=True)
    (ws / "models").symlink_to(work / "models", target_is_directory=True)
    sets = ["--set", f"embed.backend={backend}", "--set", f"cluster.k={k}"]
    rows = []
    for stage in STAGES:
        extra = ["--input", str(corpus)] if stage == "ingest" else []
        row = run_stage(ws, stage, extra + sets) | {"n_docs": n}
        if not quiet:
            print(f"  {stage:9s} {row['wall_s']:8.1f} s  peak {row['peak_rss_mb']:8.0f} MB   {row['summary'][:90]}",
                  flush=True)
        rows.append(row)
    return rows


def warm_up(work: Path, pool: list[dict], backend: str, n: int = 3000) -> None:
    """Every stage once on a small corpus, untimed: the first size measured would otherwise pay the
    static model's distillation (embed: 1067 MB and 72 s at 100k, against 369 MB and 53 s once the
    model is cached) and numba's first compile of UMAP (map: 1333 MB and 144 s, against 993 MB and 85 s)."""
    t = time.perf_counter()
    build(n, work, pool, backend, k=max(2, n // 100), quiet=True)
    shutil.rmtree(work / f"n{n}", ignore_errors=True)
    print(f"warm-up (static model distilled into {work / 'models'}, numba cache filled): {time.perf_counter() - t:.0f} s",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--backend", default="static")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--work", default="/tmp/climb-bench-scale")
    ap.add_argument("--keep", action="store_true", help="keep the workspaces (several GB at 1M); the derived "
                    "encoders stay in WORK/models either way, so a second run does not distill again")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    pool = pool_records()
    work = Path(args.work)
    print(f"scale benchmark: shared pool ({len(pool):,} real docs) replicated with light perturbation to "
          f"{', '.join(f'{n:,}' for n in sizes)} docs; embed.backend={args.backend}, K={args.k}; "
          f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB", flush=True)
    warm_up(work, pool, args.backend)
    results: dict[int, dict[str, dict]] = {}
    for n in sizes:
        print(f"\n{n:,} documents", flush=True)
        results[n] = {r["stage"]: r for r in build(n, work, pool, args.backend, args.k)}
        if not args.keep:
            shutil.rmtree(work / f"n{n}", ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M"), "backend": args.backend, "k": args.k,
                             "results": {str(n): v for n, v in results.items()}}) + "\n")

    print("\nstage      " + "".join(f"{f'{n:,} docs':>22s}" for n in sizes) + "   memory and time ratios to the next smaller size")
    for stage in STAGES:
        cells = "".join(f"{results[n][stage]['wall_s']:9.1f} s {results[n][stage]['peak_rss_mb']:7.0f} MB" for n in sizes)
        ratios = ""
        for small, big in zip(sizes, sizes[1:]):
            a, b = results[small][stage], results[big][stage]
            ratios += (f"  {b['peak_rss_mb'] / a['peak_rss_mb']:5.2f}x"
                       f" {b['wall_s'] / (a['wall_s'] * big / small):5.2f}x ({small:,}->{big:,})")
        print(f"{stage:10s} {cells}{ratios}")
    total = {n: sum(r["wall_s"] for r in results[n].values()) for n in sizes}
    print("total      " + "".join(f"{total[n]:9.1f} s{'':11s}" for n in sizes))
    if len(sizes) >= 2:
        small, big = sizes[-2], sizes[-1]
        worst = max(STAGES, key=lambda st: results[big][st]["peak_rss_mb"] / results[small][st]["peak_rss_mb"])
        peak = max(r["peak_rss_mb"] for r in results[big].values())
        emit("bench_scale.py", f"whole pipeline at {big:,} docs ({args.backend} embeddings, K={args.k})",
             f"shared pool replicated to {big:,} docs", f"{total[big]:.0f} s, peak RSS {peak:.0f} MB ("
             + ", ".join(f"{st} {results[big][st]['wall_s']:.0f} s" for st in STAGES) + ")",
             f"the same at {small:,} docs: {total[small]:.0f} s",
             f"peak RSS {big:,}/{small:,}: worst stage {worst} "
             f"{results[big][worst]['peak_rss_mb'] / results[small][worst]['peak_rss_mb']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
