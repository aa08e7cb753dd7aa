"""How long the Map page takes to be ready in headless Chromium at 100k and 1M points, against a
bare plotly page of the same points.

    nice .venv/bin/python bench/bench_map_render.py [--points 100000 1000000] [--clusters 1000] [--repeats 3]

The workspaces are synthetic (say so in any number quoted): real demo texts repeated as documents,
and map coordinates drawn as one Gaussian blob per cluster (cluster sizes Zipf-like, one cluster
pruned) instead of a UMAP run, because only the map's size matters for drawing.

For each size it starts `streamlit run dashboard/app.py` on the workspace and times, from navigation
start, until the Map page's plotly chart holds and draws every point it draws (SVG points or a
WebGL canvas) and its backdrop image is decoded ("ready"). The Map page draws at most its point budget as markers (a
per-cluster sample) over a server-drawn image of every point in view, and maps a lasso back to every
document in it. Two baselines, each a standalone HTML file with plotly.js inlined:

  bare    all N points in one Scattergl trace coloured by cluster, no hover text: the cheapest
          complete plotly page of the same points (the target compares against this one);
  figure  the Map page's own figure (dashboard.widgets.map_figure of the drawn sample) without
          Streamlit: ours/figure is Streamlit's overhead.

The first dashboard load queries DuckDB (cold); later loads hit st.cache_data (warm).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import emit  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# Ready: every marker the figure holds is in plotly's data (labels, a text trace, not counted) and
# drawn (a WebGL canvas, or that many SVG points), and any backdrop image element is in the DOM.
DRAWN = """(n) => {
    const el = document.querySelector('.js-plotly-plot');
    if (!el || !el._fullData) return false;
    if (!el.querySelector('canvas') && el.querySelectorAll('.scatterlayer .point').length < n) return false;
    const wantImages = (el.layout.images || []).length;
    if (wantImages && el.querySelectorAll('.imagelayer image').length < wantImages) return false;
    return el._fullData.reduce((s, t) => s + (t.x && t.mode !== 'text' ? t.x.length : 0), 0) >= n;
}"""
# Then the backdrop's pixels: decoding a second copy of each image errs on the slow side.
DECODED = """async () => {
    const imgs = [...document.querySelectorAll('.js-plotly-plot .imagelayer image')];
    await Promise.all(imgs.map(i => { const im = new Image(); im.src = i.getAttribute('href'); return im.decode(); }));
    return performance.now();
}"""


def build_map_workspace(root: Path, n: int, k: int, seed: int = 0):
    """A workspace with n documents (demo texts repeated) in k clusters with synthetic map coordinates."""
    from climb_core.catalogue.workspace import Workspace

    rng = np.random.default_rng(seed)
    with gzip.open(REPO / "data" / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f][:2000]
    demo = pd.DataFrame({"j": np.arange(len(recs)), "text": [r["text"][:400] for r in recs],
                         "meta_json": [json.dumps({"domain": r.get("domain"), "source": r.get("source")}) for r in recs]})
    weights = 1 / np.arange(1, k + 1) ** 0.8
    weights /= weights.sum()
    cluster = rng.choice(k, size=n, p=weights).astype(np.int32)
    sizes = np.bincount(cluster, minlength=k)
    centres = rng.uniform(-60, 60, (k, 2))
    spread = 0.6 + 4 * np.sqrt(sizes / sizes.max())
    xy = centres[cluster] + rng.normal(0, 1, (n, 2)) * spread[cluster, None]
    ws = Workspace.init(root)
    with ws.connect() as con:
        con.register("demo", demo)
        con.execute(f"""INSERT INTO documents (doc_idx, doc_id, text, source_file, source_line, text_hash, meta_json)
                        SELECT i, 'doc-' || i, d.text, 'synthetic', i, i::UBIGINT, d.meta_json
                        FROM range({n}) r(i) JOIN demo d ON d.j = i % {len(demo)}""")
        con.execute(f"INSERT INTO doc_stats (doc_idx, quality) SELECT i, (hash(i) % 1000) / 1000.0 FROM range({n}) r(i)")
        frame = pd.DataFrame({"doc_idx": np.arange(n, dtype=np.int64), "cluster_id": cluster,
                              "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32)})
        con.register("frame", frame)
        con.execute("INSERT INTO map_coords SELECT doc_idx, x, y FROM frame")
        con.execute("INSERT INTO doc_clusters SELECT doc_idx, cluster_id FROM frame")
        con.execute("INSERT INTO assignments SELECT doc_idx, cluster_id, 0 FROM frame")
        cl = pd.DataFrame({"cluster_id": np.arange(k), "label": [f"{recs[c % len(recs)].get('domain')} topic {c}" for c in range(k)],
                           "state": ["pruned" if c == k - 1 else "active" for c in range(k)], "size_docs": sizes})
        con.register("cl", cl)
        con.execute("INSERT INTO clusters (cluster_id, label, auto_label, label_source, state, size_docs, size_tokens) "
                    "SELECT cluster_id, label, label, 'auto', state, size_docs, size_docs * 100 FROM cl")
    return ws


def time_until_drawn(browser, url: str, n: int) -> float:
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = ctx.new_page()
    page.set_default_timeout(300_000)
    page.goto(url)
    page.wait_for_function(DRAWN, arg=n, polling="raf")
    ms = page.evaluate(DECODED)
    ctx.close()
    return ms / 1000


def bare_figure(ws):
    """All map points, one Scattergl trace coloured by cluster: the cheapest plotly page of them."""
    import plotly.graph_objects as go

    from dashboard.widgets import distinct_colors

    with ws.connect() as con:
        df = con.execute("SELECT m.x, m.y, coalesce(dc.cluster_id, 0) AS c FROM map_coords m "
                         "LEFT JOIN doc_clusters dc USING (doc_idx) ORDER BY m.doc_idx").df()
    palette = distinct_colors(int(df["c"].max()) + 1)
    k = len(palette)
    scale = [[edge, c] for i, c in enumerate(palette) for edge in (i / k, (i + 1) / k)]
    fig = go.Figure(go.Scattergl(x=df["x"].to_numpy(), y=df["y"].to_numpy(), mode="markers",
                                 marker=dict(size=2.5, color=df["c"].to_numpy(np.float32) + 0.5, colorscale=scale,
                                             cmin=0, cmax=k, opacity=0.75)))
    fig.update_layout(height=640, margin=dict(l=0, r=0, t=10, b=0), dragmode="lasso")
    return fig, len(df)


def serve(root: Path, log_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none", "--", "--workspace", str(root)],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(480):
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=1):
                break
        except OSError:
            time.sleep(0.25)
    return proc, url


def bench_size(p, work: Path, n: int, k: int, repeats: int) -> dict:
    from climb_core import queries
    from dashboard.widgets import MAP_BUDGET, MAP_HOVER, map_figure

    root = work / f"ws-{n}"
    t0 = time.perf_counter()
    if not (root / "climb.duckdb").exists():
        build_map_workspace(root, n, k)
    from climb_core.catalogue.workspace import Workspace
    ws = Workspace.open(root)
    print(f"\n== {n:,} map points, {k} clusters (synthetic workspace, {time.perf_counter() - t0:.1f}s to build/open)")

    t0 = time.perf_counter()
    df, n_view = queries.map_sample(ws, MAP_BUDGET, queries.meta_fields(ws))  # what the page draws by default
    view = queries.map_view_points(ws) if n_view > len(df) else None
    ours_fig, _ = map_figure(df, "cluster", hover_max=MAP_HOVER, view=view)
    t_server = time.perf_counter() - t0
    n_drawn = len(df)
    pages = {}
    for name, fig in (("bare", bare_figure(ws)[0]), ("figure", ours_fig)):
        path = work / f"{name}-{n}.html"
        fig.write_html(str(path), include_plotlyjs=True, full_html=True)
        pages[name] = path
    ours_json = len(ours_fig.to_json())
    print(f"map page draws {n_drawn:,} of {n_view:,} points; its figure JSON {ours_json / 1e6:.2f} MB; "
          f"sample + figure built in {t_server:.2f}s (cold server work)")
    for name, path in pages.items():
        print(f"{name:6s} page: {path.stat().st_size / 1e6:.1f} MB HTML (plotly.js inlined, ~4.7 MB of it)")

    proc, url = serve(root, work / f"streamlit-{n}.log")
    try:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        bare = [time_until_drawn(browser, pages["bare"].as_uri(), n) for _ in range(repeats)]
        figure = [time_until_drawn(browser, pages["figure"].as_uri(), n_drawn) for _ in range(repeats)]
        dash = [time_until_drawn(browser, url + "/map", n_drawn) for _ in range(repeats + 1)]
        browser.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    b, f, cold, warm = statistics.median(bare), statistics.median(figure), dash[0], statistics.median(dash[1:])
    print(f"bare page (all {n:,})  : {b:.2f}s  ({', '.join(f'{x:.2f}' for x in bare)})")
    print(f"figure page ({n_drawn:,}) : {f:.2f}s  ({', '.join(f'{x:.2f}' for x in figure)})")
    print(f"Map page               : cold {cold:.2f}s, warm {warm:.2f}s  (all: {', '.join(f'{x:.2f}' for x in dash)})")
    print(f"ratio ours/bare warm {warm / b:.2f}x (cold {cold / b:.2f}x); ours/figure warm {warm / f:.2f}x")
    emit("bench_map_render.py", "Map page ready in headless Chromium, warm",
         f"{n:,} map points, {k} clusters (synthetic coordinates), {n_drawn:,} drawn as markers over an image of all", f"{warm:.2f} s",
         f"bare plotly Scattergl page of all {n:,} points {b:.2f} s", f"{warm / b:.2f}x")
    return {"points": n, "clusters": k, "drawn": n_drawn, "figure_json_mb": ours_json / 1e6,
            "bare_html_mb": pages["bare"].stat().st_size / 1e6, "server_cold_s": t_server,
            "bare_s": bare, "figure_s": figure, "dashboard_s": dash, "bare_median_s": b, "figure_median_s": f,
            "dashboard_cold_s": cold, "dashboard_warm_median_s": warm,
            "ratio_warm_vs_bare": warm / b, "ratio_warm_vs_figure": warm / f, "synthetic": True}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", default=None, help="where to build the workspaces (default: a temp folder)")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    work = Path(args.workdir or tempfile.mkdtemp(prefix="climb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        results = [bench_size(p, work, n, args.clusters, args.repeats) for n in args.points]
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "map_render.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
