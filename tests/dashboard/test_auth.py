"""The password gate: served beyond loopback, no page runs until CLIMB_PASSWORD is typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from climb_core.catalogue.workspace import Workspace

pytest.importorskip("streamlit")
from streamlit import config as st_config  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
SECRET = "correct horse ✓"


@pytest.fixture
def served_on():
    """Set the address the server is bound to for this test (AppTest reads the process's options)."""
    before = st_config.get_option("server.address")
    yield lambda address: st_config.set_option("server.address", address)
    st_config.set_option("server.address", before)


@pytest.fixture
def app(tmp_path, monkeypatch):
    """The dashboard on an empty workspace: Home still shows its title and metrics."""
    ws = Workspace.init(tmp_path / "ws")
    monkeypatch.setenv("CLIMB_WORKSPACE", str(ws.root))
    monkeypatch.delenv("CLIMB_PASSWORD", raising=False)
    return lambda: AppTest.from_file(APP, default_timeout=120)


def _page_content(at: AppTest) -> bool:
    return bool(at.title) or bool(at.metric)


def _password_boxes(at: AppTest):
    return [t for t in at.text_input if t.label == "Password"]


def test_exposed_server_asks_for_the_password_before_any_page(app, served_on, monkeypatch):
    served_on("0.0.0.0")
    monkeypatch.setenv("CLIMB_PASSWORD", SECRET)
    at = app()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(_password_boxes(at)) == 1
    assert not _page_content(at) and not at.sidebar.text_input  # no page, no workspace chooser
    _password_boxes(at)[0].input("not it").run()
    assert any("Wrong password" in e.value for e in at.error)
    assert not _page_content(at)
    _password_boxes(at)[0].input(SECRET).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not _password_boxes(at)
    assert at.title[0].value == "CLIMB Studio" and at.metric  # Home runs now
    at.run()  # and stays open for this session
    assert not _password_boxes(at) and at.title


def test_exposed_server_without_a_password_refuses_to_run(app, served_on):
    served_on("0.0.0.0")
    at = app()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("CLIMB_PASSWORD" in e.value for e in at.error)
    assert not _password_boxes(at) and not _page_content(at)


def test_every_interface_counts_as_exposed(app, served_on):
    served_on("")  # Streamlit's default when no address is given: all interfaces
    at = app()
    at.run()
    assert any("every network interface" in e.value for e in at.error)
    assert not _page_content(at)


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost", "::1"])
def test_loopback_needs_no_password(app, served_on, monkeypatch, address):
    served_on(address)
    monkeypatch.setenv("CLIMB_PASSWORD", SECRET)  # set or not, a local server opens as before
    at = app()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not _password_boxes(at) and at.title[0].value == "CLIMB Studio"


def test_docker_image_binds_loopback_unless_told_otherwise():
    dockerfile = (Path(APP).parents[1] / "Dockerfile").read_text(encoding="utf-8")
    assert "ENV CLIMB_HOST=127.0.0.1" in dockerfile
    cmd = [line for line in dockerfile.splitlines() if line.startswith("CMD ")]
    assert len(cmd) == 1 and '--host \\"$CLIMB_HOST\\"' in cmd[0] and "0.0.0.0" not in cmd[0]
