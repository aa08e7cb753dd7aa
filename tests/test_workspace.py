"""The workspace catalogue: versioned schema, migrations, connections that wait for a busy file."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from climb_core import workspace as wsmod
from climb_core.workspace import Workspace, WorkspaceError


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
    cols = reopened.query_df("SELECT column_name FROM information_schema.columns WHERE table_name = 'documents'")
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
        assert str(ws.db_path) in wsmod._HELD  # the inner block's end does not release the file
        assert not _other_process_can_open(ws)
        with ws.connect() as con:
            con.execute("INSERT INTO meta VALUES ('written', 'inside')")
        with pytest.raises(WorkspaceError, match="read-only"):
            with ws.connect(read_only=True):
                pass
    assert wsmod._HELD == {}
    assert _other_process_can_open(ws)
    assert ws.scalar("SELECT value FROM meta WHERE key = 'written'") == "inside"


def test_held_is_released_when_its_block_raises(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    with pytest.raises(ZeroDivisionError):
        with ws.held():
            1 / 0
    assert wsmod._HELD == {}
    assert _other_process_can_open(ws)
