"""End to end in a real browser: `streamlit run dashboard/app.py` driven by headless Chromium (Playwright).

Screenshots of every page go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from climb_core import queries
from climb_core.catalogue.workspace import Workspace

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
PAGES = {"home": "CLIMB Studio", "map": "Map", "clusters": "Clusters", "search": "Search", "rounds": "Rounds",
         "compare": "Compare searches", "study": "Study", "export": "Export"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(ws_root: Path, log_path: Path):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CLIMB_WORKSPACE", None)
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none", "--", "--workspace", str(ws_root)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.25)
    proc.terminate()
    raise RuntimeError(f"streamlit did not become healthy: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def server(template_ws, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / "ws"
    shutil.copytree(template_ws, root)
    proc, url = start_dashboard(root, root.parent / "streamlit.log")
    yield url, Workspace.open(root)
    os.killpg(proc.pid, 15)
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    ctx.close()


def wait_idle(pg, settle_s: float = 0.4) -> None:
    """Wait until the app is connected and its script has finished running (twice, a moment apart)."""
    pg.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]')
    for _ in range(2):
        pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
        time.sleep(settle_s)


def goto(pg, url: str, name: str) -> None:
    pg.goto(url + ("/" if name == "home" else f"/{name}"))
    wait_idle(pg)
    pg.get_by_role("heading", name=PAGES[name], exact=True).first.wait_for()
    wait_idle(pg)


def no_exception(pg) -> None:
    boxes = pg.get_by_test_id("stException")
    assert boxes.count() == 0, boxes.first.inner_text()
    errors = pg.get_by_test_id("stAlertContentError")
    assert errors.count() == 0, errors.first.inner_text()


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_deep_link_on_a_fresh_server(server, page):
    """The first visitor of a new server opens /map directly: it must get the app (navigation, workspace)."""
    url, _ = server
    goto(page, url, "map")
    no_exception(page)
    nav = page.get_by_test_id("stSidebarNav")
    for title in ["Home", "Map", "Clusters", "Search", "Rounds", "Compare", "Export"]:
        assert nav.get_by_text(title, exact=True).count() == 1, title
    page.get_by_test_id("stPlotlyChart").wait_for()


def test_every_page_loads(server, page):
    url, _ = server
    for name in PAGES:
        goto(page, url, name)
        no_exception(page)
        shot(page, f"page-{name}")


# The map's markers are drawn: SVG points up to a few thousand, else a WebGL canvas.
MARKERS_DRAWN = """() => {
    const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
    return !!(gd && gd._fullData && (gd.querySelector('canvas') || gd.querySelectorAll('.scatterlayer .point').length)); }"""


def test_map_draws_its_points(server, page):
    url, ws = server
    goto(page, url, "map")
    chart = page.get_by_test_id("stPlotlyChart")
    chart.wait_for()
    page.wait_for_function(MARKERS_DRAWN)
    n = page.evaluate("""() => {
        const el = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
        return el && el._fullData ? el._fullData.reduce((s, t) => s + (t.x && t.mode !== 'text' ? t.x.length : 0), 0) : -1; }""")
    assert n == queries.corpus_overview(ws)["map_points"]
    # the markers really are coloured pixels (not just an empty plot)
    png = chart.screenshot()
    from io import BytesIO

    import numpy as np
    from PIL import Image
    img = Image.open(BytesIO(png)).convert("RGB")
    coloured = sum(1 for r, g, b in np.asarray(img).reshape(-1, 3).tolist() if max(r, g, b) - min(r, g, b) > 60)
    assert coloured > 500, f"only {coloured} coloured pixels in the map"
    shot(page, "map-points")
    no_exception(page)


def test_lasso_on_a_sampled_map_takes_every_document_inside(server, page):
    """With fewer points drawn than mapped, a lasso stands for every document inside it, not only
    the drawn ones; making a cluster from it moves exactly those documents."""
    import re

    url, ws = server
    goto(page, url, "map")
    n = queries.corpus_overview(ws)["map_points"]
    budget = page.get_by_role("spinbutton", name="Points drawn")
    budget.fill("100")
    budget.press("Enter")
    wait_idle(page)
    page.get_by_text(f"100 of {n:,} documents drawn").wait_for()
    # the points not drawn as markers are in the backdrop image beneath them
    page.wait_for_selector('[data-testid="stPlotlyChart"] .imagelayer image', state="attached")
    page.wait_for_function("""() => {
        const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
        return gd && gd._fullData && (gd.querySelector('canvas') || gd.querySelectorAll('.scatterlayer .point').length)
            && gd._fullData.reduce((s, t) => s + (t.x && t.mode !== 'text' ? t.x.length : 0), 0) === 100; }""")
    has_lasso = """() => {
        const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
        return !!(gd && gd.layout.selections && gd.layout.selections.length); }"""
    corners = [(0.03, 0.03), (0.55, 0.03), (0.55, 0.97), (0.03, 0.97), (0.03, 0.04)]
    for _ in range(4):  # under load the chart may still be re-rendering when the first drag starts
        time.sleep(0.5)
        area = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
        page.mouse.move(area["x"] + area["width"] * 0.03, area["y"] + area["height"] * 0.03)
        page.mouse.down()
        for fx, fy in corners[1:]:
            page.mouse.move(area["x"] + area["width"] * fx, area["y"] + area["height"] * fy, steps=6)
        page.mouse.up()
        try:
            page.wait_for_function(has_lasso, timeout=5000)
            break
        except sync_api.TimeoutError:
            continue
    drawn = page.evaluate("""() => {
        const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
        const inside = gd.data.reduce((s, t) => s + (t.selectedpoints ? t.selectedpoints.length : 0), 0);
        return {path: gd.layout.selections[0].path, inside}; }""")
    xs, ys = zip(*[map(float, v.split(",")) for v in drawn["path"].strip("MZ").split("L")])
    expected = queries.map_docs_in_region(ws, lassos=[(list(xs), list(ys))])
    heading = page.get_by_role("heading", name=re.compile(r"Selection: [\d,]+ documents"))
    heading.wait_for()
    count = int(re.search(r"([\d,]+) documents", heading.inner_text()).group(1).replace(",", ""))
    assert count == len(expected) > drawn["inside"] > 0
    shot(page, "map-lasso-sampled")
    page.get_by_label("Label for a new cluster").fill("lassoed in browser")
    page.get_by_role("button", name="Make a new cluster from the selection").click()
    page.get_by_text("Created cluster").wait_for()
    wait_idle(page)
    no_exception(page)
    cid = ws.scalar("SELECT cluster_id FROM clusters WHERE label = 'lassoed in browser'")
    moved = ws.query_df(f"SELECT doc_idx FROM doc_clusters WHERE cluster_id = {int(cid)}")["doc_idx"]
    assert sorted(moved) == expected


def test_hostile_document_is_plain_text(server, page):
    url, _ = server
    goto(page, url, "map")
    box = page.get_by_label("Highlight documents containing")
    box.fill("window.__xss")
    box.press("Enter")
    wait_idle(page)
    page.get_by_text("Use the text matches as the selection").click()
    wait_idle(page)
    reader = page.get_by_test_id("stText").filter(has_text="window.__xss=1")
    reader.first.wait_for()
    text = reader.first.inner_text()
    assert "<script>window.__xss=1</script>" in text
    assert '<img src=x onerror="window.__xss=2">' in text
    # hover the ringed match so its (escaped) preview is rendered by plotly too
    for name in ["map", "clusters", "home"]:
        if name != "map":
            goto(page, url, name)
        assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.locator("img[src=x]").count() == 0
    shot(page, "xss-after")


def test_prune_in_browser_reaches_duckdb(server, page):
    url, ws = server
    goto(page, url, "clusters")
    active = queries.cluster_table(ws, ["active"])
    cid = int(active["cluster_id"].iloc[-1])
    label = str(active["label"].iloc[-1])
    ms = page.get_by_test_id("stMultiSelect").filter(has_text="Act on clusters")
    ms.locator("input").click()
    ms.locator("input").fill(f"{cid}: {label}")
    page.keyboard.press("Enter")
    wait_idle(page)
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Prune 1 selected").click()
    wait_idle(page)
    no_exception(page)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ws.scalar("SELECT state FROM clusters WHERE cluster_id = ?", [cid]) == "pruned":
            break
        time.sleep(0.3)
    assert ws.scalar("SELECT state FROM clusters WHERE cluster_id = ?", [cid]) == "pruned"
    page.get_by_text(f"Pruned clusters [{cid}]").wait_for()
    wait_idle(page)
    no_exception(page)
    shot(page, "clusters-after-prune")


def test_search_launched_in_browser_shows_rounds(server, page):
    url, ws = server
    goto(page, url, "search")
    page.get_by_label("Name (optional)").fill("browser search")
    page.get_by_role("button", name="Launch search").click()
    try:
        page.get_by_text("started in the background").wait_for(timeout=60_000)
    finally:
        shot(page, "search-launched")
    no_exception(page)
    wait_idle(page)
    no_exception(page)
    # (the clusters were edited by the prune test, so the worker may re-tokenise before creating the search)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        s = queries.searches(ws)
        if (s["name"] == "browser search").any():
            break
        time.sleep(1)
    sid = s[s["name"] == "browser search"]["search_id"].iloc[0]
    goto(page, url, "rounds")
    # the live fragment refreshes; wait until every proxy of the tiny budget has been trained
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = queries.proxy_runs(ws, sid)
        if len(runs) and (runs["status"] == "done").sum() >= 3:
            break
        time.sleep(1)
    assert (queries.proxy_runs(ws, sid)["status"] == "done").sum() >= 3
    metric = page.get_by_test_id("stMetric").filter(has_text="Proxies trained")
    metric.filter(has_text="3").first.wait_for(timeout=30_000)
    page.get_by_test_id("stPlotlyChart").first.wait_for()
    assert page.get_by_test_id("stPlotlyChart").count() >= 2
    no_exception(page)
    shot(page, "rounds-live")
