"""Run one `climb` command as its own process and sample the peak RSS of its process tree: what the
memory benchmarks (bench_scale, bench_describe_memory, bench_cluster_memory) share.

Output goes to a file, not a pipe: a long stage's progress bars fill a pipe nobody reads until the
end (64 KB), and the stage then blocks on its next write.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Measured:
    wall_s: float
    peak_mb: float
    output: str
    curve: list[tuple[float, float]] = field(default_factory=list)   # (seconds, MB) per sample

    @property
    def summary(self) -> str:
        """The command's last line of output (a stage prints its outcome there)."""
        return self.output.strip().splitlines()[-1] if self.output.strip() else ""


def run_climb(args: list[str], *, interval: float = 0.05, log_path: Path | None = None,
              env: dict[str, str] | None = None) -> Measured:
    """`python -m climb_core.cli ARGS` from the repository; raises SystemExit with its output's tail
    if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
           **(env or {})}
    with (open(log_path, "w+", encoding="utf-8") if log_path else
          tempfile.TemporaryFile("w+", encoding="utf-8")) as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "climb_core.cli", *map(str, args)], cwd=str(REPO), env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        root, peak, curve = psutil.Process(proc.pid), 0, []
        while proc.poll() is None:
            try:
                rss = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
            except psutil.Error:
                pass
            else:
                peak = max(peak, rss)
                curve.append((time.perf_counter() - start, rss / 2**20))
            time.sleep(interval)
        wall = time.perf_counter() - start
        log.seek(0)
        out = log.read()
    if proc.returncode != 0:
        raise SystemExit(f"`climb {' '.join(map(str, args[:2]))}` failed ({proc.returncode}):\n{out[-3000:]}")
    return Measured(wall, peak / 2**20, out, curve)


def across_sizes(stage: str, sizes: list[int], work: Path, build, measure, *, keep: bool, reuse: bool
                 ) -> dict[int, tuple[float, float]]:
    """`measure(ws)` -> (wall_s, peak_mb, summary) of a catalogue `build(folder, n)` made per size
    (or reopened with `reuse`); prints a line per size and removes each catalogue unless `keep`.
    Returns {n: (wall_s, peak_mb)}."""
    from climb_core.catalogue.workspace import Workspace

    rows = {}
    for n in sizes:
        t0 = time.perf_counter()
        folder = Path(work) / f"n{n}"
        ws = Workspace.open(folder) if reuse and folder.exists() else build(folder, n)
        built = time.perf_counter() - t0
        wall, peak, summary = measure(ws)
        rows[n] = (wall, peak)
        print(f"  {n:>9,} docs: catalogue built in {built:.0f} s; {stage} {wall:.1f} s, peak RSS {peak:.0f} MB  "
              f"({summary[:100]})", flush=True)
        if not keep:
            import shutil

            shutil.rmtree(ws.root, ignore_errors=True)
    return rows
