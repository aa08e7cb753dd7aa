"""The dashboard reading the catalogue while a search worker writes it, from two processes.

DuckDB lets one process open the file at a time; every component opens short-lived connections and
`Workspace.connect` retries while another holds it. A real search worker runs in a subprocess
(`run_search` with `slow_counting_objective`, as a dashboard-started job would) and the test process
calls the dashboard's read functions 500 times meanwhile: none may fail, and the worker must record
every run.

The other tests check that the long stages do their heavy work with the catalogue closed: describe's
keyword extraction, split's k-means and describe, and ingest's finalise (copied in short connections
and swapped in at the end, so a kill before the swap leaves the old corpus).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from climb_core import queries

from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig
from climb_core.pipeline import describe, edits, ingest
from climb_core.search import create_search
from tests.helpers import (assert_invariants, build_domain_workspace, build_refined_workspace, copy_ws,
                           refine_config, search_config, write_demo_slice)

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
N_READS = 500
BUDGET = 12


@pytest.mark.slow
def test_dashboard_reads_while_search_worker_writes(tmp_path):
    ws = build_domain_workspace(tmp_path / "ws")
    sid = create_search(ws, search_config("climb", BUDGET, seed=3))
    log = tmp_path / "worker.log"
    env = {**os.environ, "CLIMB_TEST_SLEEP": "0.05"}
    env.pop("CLIMB_TEST_CALLS", None)
    code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(REPO)!r}]\n"
            "from climb_core.catalogue.workspace import Workspace\nfrom climb_core.search import run_search\n"
            "from test_search import slow_counting_objective\n"
            f"s = run_search(Workspace.open({str(ws.root)!r}), {sid!r}, objective=slow_counting_objective, progress=False)\n"
            "print('SEARCH', s.status, s.n_done, s.n_runs)\n")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(REPO), stdout=out,
                                stderr=subprocess.STDOUT)
    readers = [
        lambda: queries.searches(ws),
        lambda: queries.proxy_runs(ws, sid),
        lambda: queries.search_info(ws, sid),
        lambda: queries.cluster_table(ws, ["active"]),
    ]
    errors: list[str] = []
    n_calls = n_while_running = 0
    deadline = time.monotonic() + 120
    try:
        while n_calls < N_READS and time.monotonic() < deadline:
            running = proc.poll() is None
            try:
                readers[n_calls % len(readers)]()
            except Exception as err:  # noqa: BLE001 - every failure is the finding
                errors.append(f"{type(err).__name__}: {err}")
            n_calls += 1
            n_while_running += running
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    print(f"{n_calls} reads, {n_while_running} while the worker ran, {len(errors)} errors")
    assert n_calls == N_READS, f"only {n_calls} reads in time"
    assert errors == [], f"{len(errors)} of {n_calls} dashboard reads failed; first: {errors[:3]}"
    assert rc == 0, f"search worker failed (rc={rc}):\n{output[-3000:]}"
    assert f"SEARCH done {BUDGET} {BUDGET}" in output, output[-3000:]
    assert n_while_running >= 50, f"only {n_while_running} reads overlapped the worker; the test proves nothing"
    runs = queries.proxy_runs(ws, sid)
    assert len(runs) == BUDGET and (runs["status"] == "done").all(), runs[["run_id", "status", "error"]]
    info = queries.search_info(ws, sid)
    assert info["status"] == "done"


# ------------------------------------------------------------ heavy work runs with the catalogue closed

@pytest.fixture
def open_connections(monkeypatch):
    """A list whose length is the number of catalogue connections open right now (in this process)."""
    from climb_core.catalogue.workspace import Workspace

    opened: list[int] = []
    real = Workspace.connect

    @contextlib.contextmanager
    def counting(self, *args, **kwargs):
        with real(self, *args, **kwargs) as con:
            opened.append(1)
            try:
                yield con
            finally:
                opened.pop()

    monkeypatch.setattr(Workspace, "connect", counting)
    return opened


@pytest.fixture
def refined(tmp_path_factory, tmp_path):
    return copy_ws(build_refined_workspace(tmp_path_factory), tmp_path / "ws")


def _spy(monkeypatch, module, name: str, opened: list[int], seen: list[int]):
    real = getattr(module, name)

    def wrapped(*args, **kwargs):
        seen.append(len(opened))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_describe_computes_keywords_with_the_catalogue_closed(refined, monkeypatch, open_connections):
    seen: list[int] = []
    _spy(monkeypatch, describe, "compute_keywords", open_connections, seen)
    _spy(monkeypatch, describe, "compute_representatives", open_connections, seen)
    before = refined.query_df("SELECT cluster_id, label, keywords FROM clusters ORDER BY cluster_id")
    describe.run_describe(refined, refine_config(), force=True, progress=False)
    assert seen == [0, 0], "keywords or representatives computed while a connection was open"
    after = refined.query_df("SELECT cluster_id, label, keywords FROM clusters ORDER BY cluster_id")
    assert before.equals(after), "describing again changed the result"


def test_split_runs_kmeans_and_describe_with_the_catalogue_closed(refined, monkeypatch, open_connections):
    seen: list[int] = []
    _spy(monkeypatch, edits, "_kmeans_labels", open_connections, seen)
    _spy(monkeypatch, describe, "compute_keywords", open_connections, seen)
    cid = edits.active_clusters(refined)["cluster_id"].astype(int).tolist()[0]
    children = edits.split_cluster(refined, cid, 3, seed=0, config=refine_config())
    assert seen == [0, 0]
    assert len(children) == 3
    assert_invariants(refined)


def test_split_computed_on_a_stale_state_is_computed_again(refined, monkeypatch):
    """An edit landing between a split's read and its write makes the split start over from the new state."""
    a, b, c = edits.active_clusters(refined)["cluster_id"].astype(int).tolist()[:3]
    real = edits._split_compute
    calls = []

    def compute_then_rename(*args, **kwargs):
        out = real(*args, **kwargs)
        if not calls:
            edits.rename_cluster(refined, b, "renamed meanwhile")  # another process's edit
        calls.append(1)
        return out

    monkeypatch.setattr(edits, "_split_compute", compute_then_rename)
    children = edits.split_cluster(refined, a, 2, seed=0, config=refine_config())
    assert len(calls) == 2
    log = edits.list_edits(refined)
    assert log["op"].tolist()[-2:] == ["rename", "split"]
    assert refined.scalar("SELECT label FROM clusters WHERE cluster_id = ?", [b]) == "renamed meanwhile"
    assert refined.scalar("SELECT count(*) FROM clusters WHERE cluster_id IN (SELECT unnest(?::INTEGER[]))",
                          [children]) == 2
    assert_invariants(refined)
    edits.undo(refined)
    assert refined.scalar("SELECT state FROM clusters WHERE cluster_id = ?", [a]) == "active"


def test_ingest_finalise_killed_before_the_swap_keeps_the_old_corpus(tmp_path, monkeypatch):
    first = write_demo_slice(tmp_path / "first.jsonl", 30)
    second = write_demo_slice(tmp_path / "second.jsonl", 50, start=30)
    config = ClimbConfig()
    config.ingest.paths = [str(first)]
    config.ingest.batch_size = 7
    ws = Workspace.init(tmp_path / "ws")
    ingest.run_ingest(ws, config, progress=False)
    old = ws.query_df("SELECT * FROM documents ORDER BY doc_idx")

    config.ingest.paths = [str(second)]
    real = ingest._connect
    n = []

    @contextlib.contextmanager
    def die_at_swap(ws_, memory_limit):
        with real(ws_, memory_limit) as con:
            tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()").fetchall()}
            if ingest._NEW_REJECTED in tables:
                n.append(1)
                if len(n) > 8:  # every batch is copied (8 of 7 from 50 rows); the next is the swap
                    raise KeyboardInterrupt("killed")
            yield con

    monkeypatch.setattr(ingest, "_connect", die_at_swap)
    with pytest.raises(KeyboardInterrupt):
        ingest.run_ingest(ws, config, progress=False)
    assert ws.query_df("SELECT * FROM documents ORDER BY doc_idx").equals(old), "a half-finished ingest is visible"
    assert ws.scalar("SELECT count(*) FROM ingest_new_documents") == 50

    monkeypatch.setattr(ingest, "_connect", real)
    out = ingest.run_ingest(ws, config, progress=False)
    assert out.rows_out == 50 and ws.table_count("documents") == 50 and ws.table_count("doc_stats") == 50
    tables = {r[0] for r in ws.query_df("SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()").itertuples(index=False)}
    assert not tables & {ingest._ORDER_TABLE, ingest._NEW_REJECTED, *ingest._NEW_TABLES.values()}
