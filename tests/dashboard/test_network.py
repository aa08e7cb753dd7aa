"""The dashboard as a network service: `climb dashboard` servers on 127.0.0.1 and free ports, real HTTP,
real signals, headless Chromium for what the page loads; and the password back-off through AppTest.

Every server started here is stopped here (its whole process group), pass or fail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from climb_core.catalogue.workspace import Workspace

pytest.importorskip("streamlit")
from streamlit import config as st_config  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard.netguard import BACKOFF, PasswordBackoff  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
CHROMIUM = "/usr/bin/chromium"
SECRET = "correct horse ✓"
LOCAL_PREFIXES = ("http://127.0.0.1:", "http://localhost:", "ws://127.0.0.1:", "ws://localhost:", "data:", "blob:")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP error is still an answer
    except OSError:
        return False


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def climb_argv() -> list[str]:
    script = Path(sys.executable).with_name("climb")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from climb_core.cli import main; sys.exit(main())"]


def climb_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"CLIMB_PASSWORD", "CLIMB_WORKSPACE"}}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class Launcher:
    """`climb dashboard WS --no-browser` on 127.0.0.1, run from a folder without .streamlit/ (as a user would)."""

    def __init__(self, ws_root: Path, cwd: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            climb_argv() + ["dashboard", str(ws_root), "--host", "127.0.0.1", "--port", str(self.port), "--no-browser"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd, env=climb_env(), start_new_session=True)

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"climb dashboard exited {self.proc.returncode}: {self.log()}")
            if answers(self.url + "/_stcore/health"):
                return
            time.sleep(0.25)
        raise AssertionError(f"climb dashboard did not answer within {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """Whatever the test did: the launcher's group, then any server group it started."""
        groups = [self.proc.pid] + children(self.proc.pid)
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


@pytest.fixture
def empty_ws(tmp_path) -> Path:
    return Workspace.init(tmp_path / "ws").root


@pytest.fixture
def launch(empty_ws, tmp_path):
    started: list[Launcher] = []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def start() -> Launcher:
        launcher = Launcher(empty_ws, elsewhere, tmp_path / f"climb-dashboard-{len(started)}.log")
        started.append(launcher)
        launcher.wait_healthy()
        return launcher

    yield start
    for launcher in started:
        launcher.stop()


# ------------------------------------------------------------------------------------ signals
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_to_the_launcher_stops_the_server(launch, sig):
    server = launch()
    kids = children(server.proc.pid)
    assert len(kids) == 1, kids  # the streamlit server
    os.kill(server.proc.pid, sig)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (server.proc.poll() is None or listening(server.port)):
        time.sleep(0.2)
    assert server.proc.poll() == 128 + sig, (server.proc.returncode, server.log())
    assert not listening(server.port), "the port still answers after the launcher exited"
    assert not group_alive(kids[0]), "a process of the server's group is left running"


# ------------------------------------------------------------------------------ bind refusal
def test_non_local_address_without_password_exits_before_binding(empty_ws, tmp_path):
    port = free_port()
    proc = subprocess.Popen(climb_argv() + ["dashboard", str(empty_ws), "--host", "0.0.0.0", "--port", str(port),
                                            "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=climb_env(),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        for pgid in children(proc.pid) + [proc.pid]:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate()
        pytest.fail("climb dashboard kept running on 0.0.0.0 without CLIMB_PASSWORD")
    assert proc.returncode == 1, (proc.returncode, out, err)
    assert b"CLIMB_PASSWORD" in err and b"0.0.0.0" in err
    assert not listening(port)
    assert not group_alive(proc.pid)


# ---------------------------------------------------------------------------------- metrics
@pytest.mark.slow
def test_metrics_endpoint_is_not_served(launch):
    server = launch()
    with urllib.request.urlopen(server.url + "/_stcore/health", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(server.url + "/", timeout=5) as r:
        assert r.status == 200
    for path in ["/_stcore/metrics", "/_stcore/metrics/", "/_stcore/metrics?families=session_events_total"]:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + path, timeout=5)
        assert err.value.code == 404, path


# ------------------------------------------------------------------------------------ browser
@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt install chromium)")
def test_page_loads_nothing_from_outside_and_has_no_deploy_button(launch):
    sync_api = pytest.importorskip("playwright.sync_api")
    server = launch()
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(60_000)
            page.on("request", lambda r: requests.append(r.url))
            for name in ["", "map", "export"]:
                page.goto(f"{server.url}/{name}")
                page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]')
                page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
                time.sleep(1.5)  # favicon and fonts load after the script has run
            icons = page.eval_on_selector_all("link[rel~='icon']", "els => els.map(e => e.href)")
            deploy = page.get_by_test_id("stAppDeployButton").count() + page.get_by_role("button", name="Deploy").count()
        finally:
            browser.close()
    outside = sorted({u for u in requests if not u.startswith(LOCAL_PREFIXES)})
    assert requests and not outside, outside
    assert icons and all(i.startswith(LOCAL_PREFIXES) for i in icons), icons
    assert deploy == 0


# ------------------------------------------------------------------------------------ back-off
@pytest.fixture
def exposed_app(tmp_path, monkeypatch):
    """The dashboard as served on 0.0.0.0 with a password, on an empty workspace, with a fresh back-off."""
    ws = Workspace.init(tmp_path / "ws")
    monkeypatch.setenv("CLIMB_WORKSPACE", str(ws.root))
    monkeypatch.setenv("CLIMB_PASSWORD", SECRET)
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    BACKOFF.reset()
    now = [1000.0]
    monkeypatch.setattr(BACKOFF, "clock", lambda: now[0])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    yield at, now
    BACKOFF.reset()
    st_config.set_option("server.address", before)


def _type(at: AppTest, text: str) -> AppTest:
    [box] = [t for t in at.text_input if t.label == "Password"]
    return box.input(text).run()


def test_wrong_passwords_lock_the_client_out_even_for_the_right_one(exposed_app):
    at, now = exposed_app
    for i in range(5):
        _type(at, f"guess {i}")
    assert any("Too many wrong passwords" in e.value and "Try again after" in e.value for e in at.error)
    _type(at, SECRET)  # the right password during the back-off: refused too
    assert not at.exception, [e.value for e in at.exception]
    assert not at.title and any("Too many wrong passwords" in e.value for e in at.error)
    now[0] += 61  # the back-off over, the same entry is checked again (the "Try again" button)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title and at.title[0].value == "CLIMB Studio"


def test_a_new_session_does_not_reset_the_count(exposed_app):
    at, _ = exposed_app
    for i in range(5):
        _type(at, f"guess {i}")
    fresh = AppTest.from_file(APP, default_timeout=120)  # another browser tab, same client
    fresh.run()
    _type(fresh, SECRET)
    assert not fresh.title and any("Too many wrong passwords" in e.value for e in fresh.error)


def test_backoff_doubles_up_to_a_minute_and_resets_on_success():
    now = [0.0]
    b = PasswordBackoff(free=5, longest=60, clock=lambda: now[0])
    waits = [b.failed("10.0.0.7") for _ in range(13)]
    assert waits == [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert b.retry_in("10.0.0.7") == 60 and b.retry_in("10.0.0.8") == 0  # per client
    now[0] += 60
    assert b.retry_in("10.0.0.7") == 0
    b.succeeded("10.0.0.7")
    assert b.failed("10.0.0.7") == 0
