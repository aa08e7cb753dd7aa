"""One row of the performance table in docs/BENCHMARKS.md, printed by a benchmark and collected by run_all.py.

A benchmark calls `emit(...)` once per figure it wants in the table; the row is printed as a line
`PERF {json}` among its normal output. `bench/run_all.py` gathers these lines from every benchmark,
keeps them in bench/perf_rows.json (a benchmark that was not run keeps its previous rows)
and rewrites the table in docs/BENCHMARKS.md between its two marker comments.
"""

from __future__ import annotations

import json
import os
import platform


def machine() -> str:
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        mem = ""
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{os.cpu_count()} CPUs{mem}, {gpu}, {platform.machine()}"


def emit(bench: str, what: str, data: str, ours: str, baseline: str, ratio: str) -> None:
    """Print one table row: what is measured, on which data, our figure, the baseline's, their ratio."""
    row = {"bench": bench, "what": what, "data": data, "ours": ours, "baseline": baseline, "ratio": ratio,
           "machine": machine()}
    print("PERF " + json.dumps(row), flush=True)
