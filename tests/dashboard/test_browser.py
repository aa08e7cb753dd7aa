"""End to end in a real browser: `streamlit run dashboard/app.py` driven by headless Chromium (Playwright).

Screenshots of every page go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import os
import shlex
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


TRAIN = REPO / "examples" / "hf_proxy" / "train.py"


def pick(pg, label: str, option: str) -> None:
    """Choose `option` in the selectbox labelled `label`."""
    pg.get_by_test_id("stSelectbox").filter(has_text=label).click()
    pg.get_by_role("option", name=option, exact=True).click()


def launch_command_search(pg, url: str, ws, name: str, template: str, budget: int, lm_eval: str = "") -> str:
    """Fill the Search page for a command proxy, launch it and return the new search's id once its
    worker has created it."""
    goto(pg, url, "search")
    pg.get_by_label("Name (optional)").fill(name)
    pick(pg, "Proxy kind", "command")
    pick(pg, "Executor", "process")
    pg.get_by_label("Command template").fill(template)
    pg.get_by_label("Command timeout").fill("600")
    pg.get_by_label("Budget (proxy runs)").fill(str(budget))
    if lm_eval:
        # the lm-eval task replaces the bundled multiple-choice default, so the score is lm-eval's alone
        ms = pg.get_by_test_id("stMultiSelect").filter(has_text="Multiple-choice targets")
        ms.get_by_role("button", name="Clear all").click()
        pg.get_by_label("lm-eval targets").fill(lm_eval)
    pg.keyboard.press("Tab")  # commit the last field before the form is submitted
    pg.get_by_role("button", name="Launch search").click()
    try:
        pg.get_by_text("started in the background").wait_for(timeout=60_000)
    finally:
        shot(pg, f"search-launched-{name.replace(' ', '-')}")
    no_exception(pg)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        s = queries.searches(ws)
        if (s["name"] == name).any():
            return str(s[s["name"] == name]["search_id"].iloc[0])
        time.sleep(1)
    raise AssertionError(f"the worker never created search {name!r}")


def wait_search_ended(ws, sid: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = queries.search_info(ws, sid) or {}
        if info.get("status") in ("done", "failed", "cancelled"):
            return info
        time.sleep(2)
    raise AssertionError(f"search {sid} still {info.get('status')} after {timeout_s:g} s: "
                         f"{queries.proxy_runs(ws, sid)[['run_id', 'status']].to_string()}")


def open_rounds_of(pg, url: str, name: str) -> None:
    """The Rounds page with the named search selected (the newest search is selected by default)."""
    goto(pg, url, "rounds")
    box = pg.get_by_role("combobox", name="Search", exact=True)
    if name not in box.input_value():
        box.click()
        pg.get_by_role("option").filter(has_text=name).first.click()
        wait_idle(pg)
    assert name in box.input_value()


@pytest.mark.slow
def test_command_search_with_the_hf_trainer_in_browser(server, page):
    """The reference trainer (a tiny transformers decoder scored by lm-eval) as the proxy of a search
    launched from the Search page: budget 8 on CPU, followed to the end on the Rounds page."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("transformers")
    from climb_core.proxy.command import job_dir

    url, ws = server
    # the smallest model examples/hf_proxy/README.md and tests/test_hf_proxy.py train on CPU
    template = (f"{shlex.quote(sys.executable)} {shlex.quote(str(TRAIN))} {{job}} --layers 1 --d-model 32 --heads 2 "
                "--block 64 --batch 8 --vocab 512 --eval-limit 20")
    sid = launch_command_search(page, url, ws, "hf in browser", template, 8, lm_eval="climb_arc_easy,metric=acc_norm")
    info = wait_search_ended(ws, sid, 480)
    runs = queries.proxy_runs(ws, sid)
    assert info["status"] == "done", (info.get("message"), runs[["run_id", "status", "error"]].to_string())
    assert (runs["status"] == "done").sum() == 8 and runs["round"].nunique() >= 2
    assert info["config"]["proxy"]["command"] == template
    job = json.loads((job_dir(ws.root, sid, runs["run_id"].iloc[0]) / "job.json").read_text())
    assert [(t["kind"], t["path"], t["metric"]) for t in job["targets"]] == [("lm-eval", "climb_arc_easy", "acc_norm")]
    assert all("climb_arc_easy/acc_norm" in json.loads(s) for s in runs["scores_json"])
    open_rounds_of(page, url, "hf in browser")
    try:
        page.get_by_test_id("stMetric").filter(has_text="Status").filter(has_text="done").first.wait_for(timeout=30_000)
        page.get_by_test_id("stMetric").filter(has_text="Proxies trained").filter(has_text="8 / 8").first.wait_for()
        best = page.get_by_test_id("stMetric").filter(has_text="Best score").inner_text()
        assert f"{runs['score'].max():.4f}" in best
        page.get_by_text("Commands: 0 running, 0 failed").wait_for()
        page.get_by_text("8/8 runs finished").first.wait_for()
        page.locator("strong", has_text="Final mixture:").wait_for()
        no_exception(page)
    finally:
        shot(page, "rounds-hf-command")


def test_failing_command_shows_its_stderr_in_browser(server, page):
    """A command that exits non-zero: its runs show as failed on the Rounds page, with the stderr tail."""
    url, ws = server
    code = "import sys; sys.stderr.write('boom-marker' + chr(10)); sys.exit(3)"
    template = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {{job}}"
    sid = launch_command_search(page, url, ws, "failing command", template, 2)
    info = wait_search_ended(ws, sid, 180)
    runs = queries.proxy_runs(ws, sid)
    assert info["status"] == "failed" and len(runs) and (runs["status"] == "failed").all(), runs.to_string()
    open_rounds_of(page, url, "failing command")
    try:
        page.get_by_text(f"Commands: 0 running, {len(runs)} failed").wait_for(timeout=30_000)
        failed = page.get_by_test_id("stExpander").filter(has_text="failed: ")
        assert failed.count() == len(runs)
        failed.first.locator("summary").click()
        code_box = failed.first.get_by_test_id("stCode")
        code_box.wait_for()
        wait_idle(page)  # the expander's opening animation, so the screenshot shows the tail
        assert code_box.is_visible()
        text = code_box.inner_text()
        assert "exited with status 3" in text and "boom-marker" in text, text
    finally:
        shot(page, "rounds-failing-command")
