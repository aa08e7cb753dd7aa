"""Every dashboard page under streamlit's AppTest on a small workspace, and the actions that change it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from climb_core import jobs, queries
from climb_core.catalogue.workspace import Workspace

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
PAGES = ["home", "map", "clusters", "search", "rounds", "compare", "study", "export"]




def open_page(ws: Workspace, page: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("CLIMB_WORKSPACE", str(ws.root))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page != "home":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def widget(items, label: str):
    found = [x for x in items if x.label.startswith(label)]
    assert found, f"no widget labelled {label!r}; have {[x.label for x in items]}"
    return found[0]


def n_values(arr) -> int:
    """Length of a plotly data array, plain or typed ({"dtype": "f8", "bdata": base64})."""
    if isinstance(arr, dict) and "bdata" in arr:
        import base64

        import numpy as np
        return len(base64.b64decode(arr["bdata"])) // np.dtype(arr["dtype"]).itemsize
    return len(arr)


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(ws, page, monkeypatch):
    at = open_page(ws, page, monkeypatch)
    no_errors(at)
    assert at.title, "every page has a title"


def test_map_draws_every_point(ws, monkeypatch):
    at = open_page(ws, "map", monkeypatch)
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    n_points = queries.corpus_overview(ws)["map_points"]
    import json
    fig = json.loads(charts[0].proto.spec)
    markers = [t for t in fig["data"] if t.get("mode") != "text"]  # the other trace holds the cluster labels
    assert sum(n_values(t["x"]) for t in markers) == n_points
    # a small map is drawn as SVG (a WebGL context costs more than a few hundred points), with no backdrop
    assert n_points <= 3000 and all(t["type"] == "scatter" for t in markers)
    assert not fig["layout"].get("images")


def test_empty_workspace_shows_how_to_begin(tmp_path, monkeypatch):
    ws = Workspace.init(tmp_path / "empty")
    for page in PAGES:
        at = open_page(ws, page, monkeypatch)
        no_errors(at)
    at = open_page(ws, "home", monkeypatch)
    assert any("climb ingest" in m.value for m in at.markdown)


def test_hostile_text_never_reaches_markdown(ws, monkeypatch):
    at = open_page(ws, "map", monkeypatch)
    widget(at.text_input, "Highlight documents containing").set_value("window.__xss").run()
    widget(at.toggle, "Use the text matches").set_value(True).run()
    no_errors(at)
    assert any("1 documents contain" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert "<script>window.__xss=1</script>" in table["text"].iloc[0]
    for el in [*at.markdown, *at.caption]:
        assert "<script" not in el.value and "onerror" not in el.value
    # plotly renders hover text as HTML: the ringed match's preview must arrive escaped
    import json
    texts = [h for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"] for h in (t.get("hovertext") or [])
             if isinstance(h, str)]
    assert not [h for h in texts if "<script" in h or "<img" in h]
    assert any("&lt;script&gt;window.__xss=1" in h for h in texts)


def test_map_selection_becomes_a_cluster_then_pruned(ws, monkeypatch):
    at = open_page(ws, "map", monkeypatch)
    widget(at.text_input, "Highlight documents containing").set_value("court").run()
    widget(at.toggle, "Use the text matches").set_value(True).run()
    matched = queries.search_text(ws, "court")
    assert matched
    widget(at.text_input, "Label for a new cluster").set_value("court docs")
    widget(at.button, "Prune the selection").click().run()
    no_errors(at)
    with ws.connect() as con:
        cid, state, size = con.execute(
            "SELECT cluster_id, state, size_docs FROM clusters WHERE label = 'court docs'").fetchone()
        moved = con.execute("SELECT count(*) FROM doc_clusters WHERE cluster_id = ?", [cid]).fetchone()[0]
    assert state == "pruned" and moved == len(matched) == size
    import json
    names = [t.get("name", "") for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert any("court docs" in n and "pruned" in n for n in names), names


def test_cluster_edits_and_undo(ws, monkeypatch):
    at = open_page(ws, "clusters", monkeypatch)
    active = queries.cluster_table(ws, ["active"])
    a, b, c = (int(x) for x in active["cluster_id"].iloc[:3])

    # rename the cluster shown in the detail view
    widget(at.selectbox, "Cluster detail").set_value(a).run()
    widget(at.text_input, "Rename").set_value("My renamed cluster")
    widget(at.button, "Save label").click().run()
    no_errors(at)
    assert ws.scalar("SELECT label FROM clusters WHERE cluster_id = ?", [a]) == "My renamed cluster"
    assert at.dataframe[0].value.set_index("cluster_id").loc[a, "label"] == "My renamed cluster"

    # prune one
    widget(at.multiselect, "Act on clusters").set_value([b]).run()
    widget(at.button, "Prune").click().run()
    no_errors(at)
    assert ws.scalar("SELECT state FROM clusters WHERE cluster_id = ?", [b]) == "pruned"
    shown = at.dataframe[0].value.set_index("cluster_id")
    assert shown.loc[b, "state"] == "pruned", "the table shows the edit at once (cache keyed on the catalogue)"

    # undo the prune
    widget(at.button, "Undo last edit").click().run()
    no_errors(at)
    assert ws.scalar("SELECT state FROM clusters WHERE cluster_id = ?", [b]) == "active"

    # merge two
    n_docs = int(ws.scalar("SELECT count(*) FROM doc_clusters WHERE cluster_id IN (?, ?)", [a, c]))
    widget(at.multiselect, "Act on clusters").set_value([a, c]).run()
    widget(at.text_input, "Label of the merged cluster").set_value("merged pair")
    widget(at.button, "Merge").click().run()
    no_errors(at)
    with ws.connect() as con:
        new_id, size = con.execute("SELECT cluster_id, size_docs FROM clusters WHERE label = 'merged pair' "
                                   "AND state = 'active'").fetchone()
        states = dict(con.execute("SELECT cluster_id, state FROM clusters WHERE cluster_id IN (?, ?)", [a, c]).fetchall())
    assert size == n_docs and set(states.values()) == {"merged"}
    assert int(ws.scalar("SELECT count(*) FROM doc_clusters WHERE cluster_id = ?", [new_id])) == n_docs


@pytest.mark.parametrize("text_target, words", [
    ("cluster:9999", "cluster 9999 is not an active cluster"),
    ("query:text ILIKE", "is not a valid predicate over documents"),
    ("/nonexistent.txt", "/nonexistent.txt does not exist"),
])
def test_search_page_refuses_a_bad_target_before_starting(ws, monkeypatch, text_target, words):
    """The page runs the same target checks as `climb search`: an error naming the target, no job, no search."""
    n_searches, n_jobs = len(queries.searches(ws)), ws.scalar("SELECT count(*) FROM jobs")
    at = open_page(ws, "search", monkeypatch)
    widget(at.text_area, "Text targets").set_value(text_target)
    widget(at.button, "Launch search").click().run()
    assert any(words in e.value for e in at.error), [e.value for e in at.error]
    assert not any("Traceback" in e.value or e.value.startswith(("TargetError", "ConfigError")) for e in at.error)
    assert len(queries.searches(ws)) == n_searches and ws.scalar("SELECT count(*) FROM jobs") == n_jobs


@pytest.mark.parametrize("edited", [False, True], ids=["tokens-current", "clusters-edited"])
def test_launch_search_from_the_page(ws, monkeypatch, edited):
    if edited:
        # an edit makes the token files stale: the worker must re-tokenise before creating the search
        from climb_core.pipeline import edits

        edits.prune_clusters(ws, [int(queries.cluster_table(ws, ["active"])["cluster_id"].iloc[-1])])
    at = open_page(ws, "search", monkeypatch)
    widget(at.text_input, "Name").set_value("from the page")
    widget(at.multiselect, "Multiple-choice targets").set_value(["arc_easy"])
    widget(at.number_input, "Items per target").set_value(10)
    widget(at.selectbox, "Strategy").set_value("climb")
    widget(at.number_input, "Budget").set_value(3)
    widget(at.number_input, "Rounds").set_value(2)
    widget(at.text_input, "Budget split").set_value("2,1")
    widget(at.number_input, "Candidates per round").set_value(500)
    widget(at.selectbox, "Predictor").set_value("loglinear")
    widget(at.number_input, "Verification runs").set_value(1)
    widget(at.selectbox, "First round").set_value("random")
    widget(at.text_input, "Excluded clusters").set_value(str(int(queries.cluster_table(ws, ["active"])["cluster_id"].iloc[0])))
    widget(at.selectbox, "Proxy kind").set_value("ngram")
    widget(at.number_input, "Tokens per proxy").set_value(5000)
    widget(at.button, "Launch search").click().run()
    no_errors(at)
    assert any("started in the background" in s.value for s in at.success)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        s = queries.searches(ws)
        row = s[s["name"] == "from the page"]
        if len(row):
            break
        time.sleep(0.5)
    assert len(row) == 1
    sid = row["search_id"].iloc[0]
    job = jobs.job_for_search(ws, sid)
    assert job is not None
    while job["status"] in ("running", "cancelling") and time.monotonic() < deadline:
        time.sleep(1)
        job = jobs.job_for_search(ws, sid)
    assert job["status"] == "done", jobs.log_tail(ws, job["job_id"], n_lines=40)
    runs = queries.proxy_runs(ws, sid)
    assert (runs["status"] == "done").sum() >= 1
    info = queries.search_info(ws, sid)
    assert info["config"]["proxy"]["kind"] == "ngram" and info["config"]["search"]["budget"] == 3
    assert info["config"]["search"]["initial_design"] == "random"
    assert info["config"]["search"]["predictor"] == "loglinear"
    # The excluded cluster got no weight in any run nor in the final; the final was verified.
    excluded = info["config"]["mixture"]["excluded"][0]
    col = info["cluster_ids"].index(excluded)
    assert all(list(w)[col] == 0 for w in runs["weights"]) and info["final_weights"][col] == 0
    assert (runs["purpose"] == "verify").sum() == 1 and info["final"]["stage"] == "done"
    at = open_page(ws, "rounds", monkeypatch)
    no_errors(at)


# ------------------------------------------------------------------------------------ jobs and queries
def test_job_runs_logs_and_finishes(ws):
    job = jobs.start_job(ws, "probe", [sys.executable, "-c", "print('hello from the job')"])
    deadline = time.monotonic() + 30
    while jobs.job_status(ws, job)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    row = jobs.job_status(ws, job)
    assert row["status"] == "done"
    assert "hello from the job" in jobs.log_tail(ws, job)
    failing = jobs.start_job(ws, "probe", [sys.executable, "-c", "raise SystemExit(3)"])
    while jobs.job_status(ws, failing)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs.job_status(ws, failing)["status"] == "failed"
    assert "exit code 3" in jobs.job_status(ws, failing)["message"]


def test_job_cancel_kills_process_group(ws):
    job = jobs.start_job(ws, "probe", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"])
    deadline = time.monotonic() + 30
    while "started" not in jobs.log_tail(ws, job) and time.monotonic() < deadline:
        time.sleep(0.1)
    jobs.cancel_job(ws, job)
    while jobs.job_status(ws, job)["status"] == "cancelling" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs.job_status(ws, job)["status"] == "cancelled"
    assert list(jobs.running_jobs(ws)["job_id"]) == []


def test_queries_views(ws):
    ov = queries.corpus_overview(ws)
    assert ov["documents"] == ov["map_points"] > 0
    ct = queries.cluster_table(ws)
    assert {"cluster_id", "label", "state", "size_docs", "size_tokens", "mean_quality", "keywords"} <= set(ct.columns)
    cid = int(ct[ct.state == "active"]["cluster_id"].iloc[0])
    d = queries.cluster_detail(ws, cid)
    assert d["info"]["cluster_id"] == cid and len(d["quality"]) == d["info"]["size_docs"]
    assert cid not in set(d["nearest"]["cluster_id"])
    pts = queries.map_points(ws, ["domain"])
    assert {"doc_idx", "x", "y", "cluster_id", "label", "quality", "preview", "meta.domain"} <= set(pts.columns)
    assert pts["preview"].str.len().max() <= 80
    assert "domain" in queries.meta_fields(ws)
    assert queries.search_text(ws, "100%_literal") == []
    hit = queries.search_text(ws, "<SCRIPT>window.__xss")
    assert len(hit) == 1
    doc = queries.documents(ws, hit, preview_chars=None)
    assert doc["doc_id"].iloc[0] == "xss-probe"


def test_export_page_runs_an_export(ws, monkeypatch):
    s = queries.searches(ws)
    done = s[s["status"] == "done"]
    assert not done.empty, "the fixture workspace should hold a finished search"
    at = open_page(ws, "export", monkeypatch)
    widget(at.selectbox, "Search").set_value(done["search_id"].iloc[0]).run()
    widget(at.number_input, "Tokens in the dataset").set_value(20_000)
    widget(at.button, "Export").click().run()
    no_errors(at)
    job = at.session_state["export_job"]
    deadline = time.monotonic() + 120
    while jobs.job_status(ws, job)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs.job_status(ws, job)["status"] == "done", jobs.log_tail(ws, job, n_lines=40)
    at.run()
    no_errors(at)
    assert not queries.exports(ws, done["search_id"].iloc[0]).empty
    assert any(b.label.startswith("Download weights") for b in at.get("download_button"))


def test_study_page_shows_a_finished_study(ws, monkeypatch):
    from climb_core.config import TargetSpec
    import json

    from climb_core.search import create_study, run_study, study_report
    from climb_core.search.synthetic import objective

    cfg = ws.load_config()
    cfg.search.budget = 6
    cfg.study.strategies = ["climb", "natural"]
    cfg.study.seeds = 1
    cfg.study.final_seeds = 2
    # The synthetic objective never reads the target, but create_study checks that it exists.
    cfg.target.specs = [TargetSpec(kind="mc", path="data/eval/arc_easy.jsonl", name="synthetic")]
    sid = create_study(ws, cfg, name="page study")
    run_study(ws, sid, objective=objective, progress=False)
    # A message can quote a cluster label: the label is shown escaped, the page's own bold still renders.
    from climb_core.search.study import _set
    _set(ws, sid, message="stopped at cluster **x** <b>y</b>")
    at = open_page(ws, "study", monkeypatch)
    no_errors(at)
    status = [m.value for m in at.markdown if "Status" in m.value]
    assert status and status[0].startswith("**Status:** done")
    assert r"\*\*x\*\* \<b\>y\</b\>" in status[0]
    assert any(m.value.startswith("**Verdict:** ") for m in at.markdown)
    assert not [m.value for m in at.markdown if "<b>" in m.value]
    table = at.dataframe[0].value
    assert set(table["strategy"]) == {"climb:auto", "natural"}
    assert (table["finals trained"] == 2).all()
    # The transfer from proxy to final scores, and the strategies' mixtures at the final model's scale.
    rep = study_report(ws, sid)
    transfer = [d.value for d in at.dataframe if "proxy score (mean)" in d.value.columns]
    assert transfer and set(transfer[0]["strategy"]) == {"climb:auto", "natural"}
    assert any("Spearman" in c.value for c in at.caption)
    assert rep["final_scale"]["tokens"] == rep["final_model"]["tokens"] == 4 * cfg.proxy.tokens
    assert {"epochs: climb:auto", "epochs: natural"} <= set(epochs_table(at).columns)
    assert any(f"Final training tokens\\: {rep['final_scale']['tokens']:,}" in c.value for c in at.caption)
    assert any(json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Transfer")
               for c in at.get("plotly_chart"))


def epochs_table(at: AppTest):
    tables = [d.value for d in at.dataframe if "past 1 epoch" in d.value.columns]
    assert len(tables) == 1, [list(d.value.columns) for d in at.dataframe]
    return tables[0]


def test_rounds_page_shows_the_final_mixture_in_bold(ws, monkeypatch):
    # A cluster label is corpus text: it reaches the epochs table literally and never Markdown or HTML.
    with ws.connect() as con:
        con.execute("UPDATE searches SET cluster_labels = list_transform(cluster_labels, lambda x: "
                    "'<script>window.__xss=1</script>' || x)")
    at = open_page(ws, "rounds", monkeypatch)
    no_errors(at)
    final = [m.value for m in at.markdown if "Final mixture" in m.value]
    assert final and final[0].startswith("**Final mixture:** "), final
    from climb_core.search import search_final_scale

    sid = queries.searches(ws)["search_id"].iloc[0]
    scale = search_final_scale(ws, sid)
    table = epochs_table(at)
    assert table["label"].str.startswith("<script>").all()
    assert table["epochs: final"].tolist() == pytest.approx([round(e, 3) for e in scale["epochs"]])
    repeated = [e > 1 for e in scale["epochs"]]
    assert (table["past 1 epoch"].str.startswith("REPEATED: final")).tolist() == repeated
    assert any(f"Final training tokens\\: {scale['tokens']:,}" in c.value for c in at.caption)
    for el in [*at.markdown, *at.caption]:
        assert "<script" not in el.value


def test_export_page_warns_of_each_repeated_cluster(ws, monkeypatch):
    from climb_core.export.mixture import export_search

    s = queries.searches(ws)
    sid = s[s["status"] == "done"]["search_id"].iloc[0]
    total = int(ws.scalar("SELECT sum(n_tokens) FROM token_shards WHERE split = 'train'"))
    m = export_search(ws, sid, ws.exports_dir / "big", tokens=3 * total)
    repeated = [c for c in m["clusters"] if c["epochs"] > 1]
    at = open_page(ws, "export", monkeypatch)
    widget(at.selectbox, "Search").set_value(sid).run()
    no_errors(at)
    warned = [x.value for x in at.warning if "repeated" in x.value]
    assert repeated and len(warned) == len(repeated)
    # Apart from the export's own size: the final mixture at the final scale.
    assert "epochs: final" in epochs_table(at).columns
    assert all(any(f"cluster \\#{c['cluster_id']} " in v for v in warned) for c in repeated)


def test_rounds_page_shows_how_the_ranking_held_at_the_larger_scale(ws, monkeypatch):
    from climb_core.cli import main as climb
    from climb_core.search import rank_transfer

    assert climb(["search", str(ws.root), "--name", "scaling", "--budget", "10", "--rounds", "2", "--round-split", "1,1",
                  "--scale-runs", "3", "--scale-multiple", "2", "--executor", "local", "--quiet"]) == 0
    sid = queries.searches(ws)["search_id"].iloc[0]
    transfer = rank_transfer(ws, sid)
    assert transfer["runs"] == 3 and transfer["pairs"] == 3
    at = open_page(ws, "rounds", monkeypatch)
    no_errors(at)
    shown = [m.value.replace("\\", "") for m in at.markdown if m.value.startswith("Scaling mode")]
    assert shown and f"{transfer['spearman']:.2f}" in shown[0] and "3 of the best mixtures" in shown[0], shown
    chart = [c for c in at.get("plotly_chart") if "larger scale" in c.proto.spec]
    assert chart, "the scatter of the two scales is drawn"
