"""How long the Map page takes to draw 100k points in headless Chromium, against a bare plotly page.

    .venv/bin/python bench/bench_map_render.py [--points 100000] [--repeats 3]

Builds a synthetic-size workspace (the demo corpus repeated, map coordinates jittered), starts
`streamlit run dashboard/app.py` on it, and times, from navigation start, until the Map page's
plotly chart holds every point and its WebGL canvas exists. The baseline is the same figure
(dashboard.widgets.map_figure) written as a standalone plotly HTML file and loaded directly: the
ratio is the dashboard's overhead over plotly itself. The first dashboard load queries DuckDB
(cold cache); later loads hit st.cache_data (warm).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DRAWN = """(n) => {
    const el = document.querySelector('.js-plotly-plot');
    if (!el || !el._fullData || !el.querySelector('canvas')) return false;
    return el._fullData.reduce((s, t) => s + (t.x ? t.x.length : 0), 0) >= n;
}"""


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def time_until_drawn(browser, url: str, n: int, before=None) -> float:
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = ctx.new_page()
    page.set_default_timeout(180_000)
    page.goto(url)
    if before:
        before(page)
    page.wait_for_function(DRAWN, arg=n, polling="raf")
    ms = page.evaluate("performance.now()")
    ctx.close()
    return ms / 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="where to build the workspace (default: a temp folder)")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    conftest = _load(REPO / "tests" / "dashboard" / "conftest.py", "dash_conftest")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="climb-bench-"))
    root = work / "ws"
    t0 = time.perf_counter()
    if not (root / "climb.duckdb").exists():
        conftest.build_synthetic_workspace(root, repeat_to=args.points)
    print(f"workspace with {args.points:,} map points: {root} ({time.perf_counter() - t0:.1f}s to build)")

    from climb_core import queries
    from climb_core.workspace import Workspace
    from dashboard.widgets import map_figure

    ws = Workspace.open(root)
    points = queries.map_points(ws, queries.meta_fields(ws))
    fig, _ = map_figure(points, "cluster")
    baseline_html = work / "baseline.html"
    fig.write_html(str(baseline_html), include_plotlyjs=True, full_html=True)
    print(f"baseline page: {baseline_html} ({baseline_html.stat().st_size / 1e6:.1f} MB, plotly.js inlined)")

    # the dashboard, as `climb dashboard` starts it
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(work / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none", "--", "--workspace", str(root)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.25)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            base = [time_until_drawn(browser, baseline_html.as_uri(), args.points) for _ in range(args.repeats)]
            dash = [time_until_drawn(browser, url + "/map", args.points) for _ in range(args.repeats)]
            browser.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)

    b, d_cold, d_warm = statistics.median(base), dash[0], statistics.median(dash[1:] or dash)
    result = {"points": args.points, "baseline_s": base, "dashboard_s": dash, "baseline_median_s": b,
              "dashboard_cold_s": d_cold, "dashboard_warm_median_s": d_warm,
              "ratio_warm": d_warm / b, "ratio_cold": d_cold / b}
    print(f"bare plotly page   : {b:.2f}s (median of {args.repeats}: {', '.join(f'{x:.2f}' for x in base)})")
    print(f"dashboard Map page : cold {d_cold:.2f}s, warm {d_warm:.2f}s (all: {', '.join(f'{x:.2f}' for x in dash)})")
    print(f"ratio dashboard/baseline: warm {d_warm / b:.2f}x, cold {d_cold / b:.2f}x")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "map_render.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
