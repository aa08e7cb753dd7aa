"""The workspace catalogue: versioned schema, migrations, connections that wait for a busy file."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from climb_core.catalogue import connections
from climb_core.catalogue import workspace as wsmod
from climb_core.catalogue.workspace import Workspace, WorkspaceError


def test_new_workspace_has_the_current_schema(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    assert ws.schema_version() == wsmod.SCHEMA_VERSION
    for table in ("documents", "doc_stats", "rejected", "clusters", "edits", "searches", "proxy_runs"):
        assert ws.table_count(table) == 0


def test_a_newer_catalogue_is_refused_with_a_clear_message(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    with ws.connect() as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(WorkspaceError, match="newer"):
        Workspace.open(ws.root)


def test_migrations_run_in_order(tmp_path, monkeypatch):
    ws = Workspace.init(tmp_path / "ws")
    nxt = wsmod.SCHEMA_VERSION + 1
    monkeypatch.setattr(wsmod, "SCHEMA_VERSION", nxt)
    monkeypatch.setitem(wsmod.MIGRATIONS, nxt - 1, ["ALTER TABLE documents ADD COLUMN lang VARCHAR"])
    reopened = Workspace.open(ws.root)
    assert reopened.schema_version() == nxt
    cols = reopened.query_df("SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() AND table_name = 'documents'")
    assert "lang" in set(cols["column_name"])
    Workspace.open(ws.root)  # already current: nothing runs twice
    assert reopened.schema_version() == nxt


def test_a_version_1_catalogue_is_upgraded_in_place(tmp_path):
    import duckdb

    root = tmp_path / "old"
    Workspace.init(root)
    db = next(root.glob("*.duckdb"))
    db.unlink()
    con = duckdb.connect(str(db))
    for stmt in wsmod.SCHEMA_V1:
        con.execute(stmt)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute("INSERT INTO proxy_runs (search_id, run_id, round, idx, status) VALUES ('s', 'r', 1, 0, 'done')")
    con.close()
    ws = Workspace.open(root)
    assert ws.schema_version() == wsmod.SCHEMA_VERSION
    row = ws.query_df("SELECT run_id, purpose, predicted_sd FROM proxy_runs")
    assert row["run_id"].tolist() == ["r"]  # the old run survives the upgrade
    assert ws.table_count("studies") == 0


def _hold_the_file(path: str, seconds: float, ready) -> None:
    ws = Workspace(wsmod.Path(path))
    with ws.connect() as con:
        con.execute("INSERT INTO meta VALUES ('held', 'yes')")
        ready.set()
        time.sleep(seconds)


def test_connect_waits_while_another_process_writes(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_the_file, args=(str(ws.root), 1.5, ready))
    holder.start()
    assert ready.wait(60)
    start = time.monotonic()
    assert ws.scalar("SELECT value FROM meta WHERE key = 'held'") == "yes"  # waited, then read
    assert time.monotonic() - start > 0.3
    holder.join()


def _try_open(path: str, out) -> None:
    import duckdb

    try:
        duckdb.connect(path).close()
        out.put("opened")
    except duckdb.Error as err:
        out.put(type(err).__name__)


def _other_process_can_open(ws: Workspace) -> bool:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_try_open, args=(str(ws.db_path), out))
    proc.start()
    proc.join(60)
    return out.get(timeout=5) == "opened"


def test_held_keeps_the_file_open_until_the_outermost_block_ends(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    with ws.held():
        with ws.held():
            ws.scalar("SELECT count(*) FROM meta")
        assert str(ws.db_path) in connections.attached()  # the inner block's end does not release the file
        assert not _other_process_can_open(ws)
        with ws.connect() as con:
            con.execute("INSERT INTO meta VALUES ('written', 'inside')")
        with pytest.raises(WorkspaceError, match="read-only"):
            with ws.connect(read_only=True):
                pass
    assert connections.attached() == {}
    assert _other_process_can_open(ws)
    assert ws.scalar("SELECT value FROM meta WHERE key = 'written'") == "inside"


def test_held_is_released_when_its_block_raises(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    with pytest.raises(ZeroDivisionError):
        with ws.held():
            1 / 0
    assert connections.attached() == {}
    assert _other_process_can_open(ws)


def test_threads_share_the_attached_file_and_it_is_released_after_the_last(tmp_path):
    """Connections of several threads share one attach; the file is released (another process can
    open it) only when the last block ends, and each thread's writes are there."""
    import threading

    ws = Workspace.init(tmp_path / "ws")
    inside, go = threading.Barrier(3), threading.Event()
    errors = []

    def worker(i):
        try:
            with ws.connect() as con:
                con.execute("INSERT INTO meta VALUES (?, 'x')", [f"thread-{i}"])
                inside.wait(30)
                go.wait(30)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    inside.wait(30)
    assert connections.attached() == {str(ws.db_path): 2}
    assert not _other_process_can_open(ws)
    go.set()
    for t in threads:
        t.join(30)
    assert not errors and connections.attached() == {}
    assert _other_process_can_open(ws)
    assert ws.scalar("SELECT count(*) FROM meta WHERE key LIKE 'thread-%'") == 2


def test_read_only_waits_for_another_threads_block(tmp_path):
    import threading

    ws = Workspace.init(tmp_path / "ws")
    started = threading.Event()

    def writer():
        with ws.connect() as con:
            started.set()
            time.sleep(0.5)
            con.execute("INSERT INTO meta VALUES ('late', 'write')")

    t = threading.Thread(target=writer)
    t.start()
    started.wait(30)
    t0 = time.monotonic()
    with ws.connect(read_only=True) as con:  # must not open a second instance beside the writer's
        assert con.execute("SELECT value FROM meta WHERE key = 'late'").fetchone() == ("write",)
        with pytest.raises(duckdb_error()):
            con.execute("INSERT INTO meta VALUES ('ro', 'no')")
    assert time.monotonic() - t0 > 0.3
    t.join(30)


def duckdb_error():
    import duckdb

    return duckdb.Error


def test_two_workspaces_in_one_process_do_not_see_each_other(tmp_path):
    a, b = Workspace.init(tmp_path / "a"), Workspace.init(tmp_path / "b")
    with a.connect() as con_a, b.connect() as con_b:
        con_a.execute("CREATE TABLE only_in_a (x INTEGER)")
        assert con_a.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
                             "AND table_name = 'only_in_a'").fetchone()[0] == 1
        assert con_b.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
                             "AND table_name = 'only_in_a'").fetchone()[0] == 0
        with pytest.raises(duckdb_error()):
            con_b.execute("SELECT * FROM only_in_a")
    assert connections.attached() == {}


def _child_reads(path: str, out) -> None:
    out.put(Workspace(wsmod.Path(path)).scalar("SELECT value FROM meta WHERE key = 'schema_version'"))


def test_a_forked_child_opens_the_catalogue_on_its_own(tmp_path):
    """A child forked after the parent used the catalogue does not reuse the parent's DuckDB
    instance (its threads did not survive the fork)."""
    ws = Workspace.init(tmp_path / "ws")
    ws.scalar("SELECT 1")  # the parent's instance exists
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_child_reads, args=(str(ws.root), out))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0 and out.get(timeout=5) == str(wsmod.SCHEMA_VERSION)
