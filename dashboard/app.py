"""CLIMB Studio dashboard: `streamlit run dashboard/app.py -- --workspace WS` (or `climb dashboard WS`).

The workspace comes from `--workspace`, else the CLIMB_WORKSPACE environment variable, and can be
changed in the sidebar. Pages live in dashboard/views/, one short file each.

Served on an address other machines can reach (anything but loopback), the app asks for the password
in CLIMB_PASSWORD before any page runs, and refuses to run at all without one: whoever reaches the
port can read files on the server through it, write exports and start jobs. (`climb dashboard` does
not even start the server then.) Wrong passwords lock the client's address out for a while
(dashboard/netguard.py).

The folder is deliberately not called `pages/`: Streamlit treats a `pages/` folder beside the main
script as a legacy multipage app until `st.navigation` has run once in the process, so a fresh
server whose first visitor opens a deep link (/map) would run that page without this file (no
workspace, no navigation) and stay in legacy mode for every later session.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import math
import os
import sys
from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `streamlit run dashboard/app.py` from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO))

from dashboard import widgets  # noqa: E402
from dashboard.netguard import BACKOFF, PASSWORD_ENV, is_loopback  # noqa: E402


def _workspace_from_args() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", "-w")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.workspace or os.environ.get("CLIMB_WORKSPACE") or None


AUTH_KEY = "climb_authenticated"
CHECKED_KEY = "climb_password_checked"
# The favicon is a file served by this server: Streamlit fetches :material/...: page icons from
# fonts.gstatic.com, which fails offline and tells a third party who opens the dashboard.
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.svg"


def _needs_password() -> bool:
    if st.session_state.get(AUTH_KEY):
        return False
    return not is_loopback(st.get_option("server.address") or "")


def _password_gate() -> None:
    """Ask for CLIMB_PASSWORD and stop the script until this session has typed it."""
    address = st.get_option("server.address") or "every network interface"
    expected = os.environ.get(PASSWORD_ENV, "")
    if not expected:
        st.error(f"CLIMB Studio is served on {address}, so anyone who can reach this port could read files on "
                 "the server through it, write exports and start jobs; it will not run there without a password. "
                 f"Set one in the {PASSWORD_ENV} environment variable before starting it (e.g. "
                 f"`{PASSWORD_ENV}=... climb dashboard WS --host 0.0.0.0`, or `docker run -e {PASSWORD_ENV}=...`), "
                 "or serve it on 127.0.0.1 only.")
        st.stop()
    st.subheader("CLIMB Studio: password required")
    typed = st.text_input("Password", type="password", key="climb_password",
                          help=f"The password set in {PASSWORD_ENV} where the dashboard was started.")
    if not typed:
        st.stop()
    # Wrong guesses are counted per client address for the whole server, not per browser session,
    # which a script could open afresh for every guess.
    ip = st.context.ip_address  # None for clients on this machine
    client = ip if isinstance(ip, str) and ip else "this machine"
    wait = BACKOFF.retry_in(client)
    if wait > 0:
        _refuse_for(wait)
    # Compared as bytes: compare_digest takes str only when it is ASCII.
    if hmac.compare_digest(typed.encode("utf-8"), expected.encode("utf-8")):
        BACKOFF.succeeded(client)
        st.session_state[AUTH_KEY] = True
        st.rerun()
    # A rerun with the same entry (a reconnect, a click elsewhere) is not another guess.
    entry = hashlib.sha256(typed.encode("utf-8")).hexdigest()
    if st.session_state.get(CHECKED_KEY) != entry:
        st.session_state[CHECKED_KEY] = entry
        wait = BACKOFF.failed(client)
        if wait > 0:
            _refuse_for(wait)
    st.error("Wrong password.")
    st.stop()


def _refuse_for(seconds: float) -> None:
    """Stop the script: too many wrong passwords from this client, whatever was typed now."""
    seconds = max(1, math.ceil(seconds))
    at = (dt.datetime.now() + dt.timedelta(seconds=seconds)).strftime("%H:%M:%S")
    st.error(f"Too many wrong passwords from this address: no password is checked for {seconds} s. "
             f"Try again after {at}.")
    st.button("Try again")  # checks the password box again without retyping it
    st.stop()


def _sidebar_chooser() -> None:
    if "workspace" not in st.session_state:
        st.session_state["workspace"] = _workspace_from_args()
    current = st.session_state.get("workspace") or ""
    with st.sidebar:
        typed = st.text_input("Workspace folder", value=current, key="workspace_input",
                              help="A folder made by `climb init`; the dashboard reads and edits its catalogue.")
        if typed and typed != current:
            try:
                widgets.open_workspace(typed)
                st.session_state["workspace"] = str(Path(typed).resolve())
                widgets.clear_caches()
                st.rerun()
            except Exception as err:  # noqa: BLE001 - shown to the user
                st.error(str(err))
        if current:
            st.caption(widgets.md(current))
        address = st.get_option("server.address") or ""
        if not is_loopback(address):
            st.warning(f"Served on {address or 'every network interface'}: anyone who can reach this port can "
                       "edit the workspace and start jobs. Use `--server.address 127.0.0.1` to keep it local.")


st.set_page_config(page_title="CLIMB Studio", page_icon=str(FAVICON), layout="wide")
PAGES = Path(__file__).resolve().parent / "views"
locked = _needs_password()
# Navigation is declared even when locked (a deep link such as /map must still resolve), but hidden
# and never run until the password is in.
nav = st.navigation([
    st.Page(PAGES / "home.py", title="Home", icon=":material/home:", default=True),
    st.Page(PAGES / "map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page(PAGES / "clusters.py", title="Clusters", icon=":material/workspaces:"),
    st.Page(PAGES / "search.py", title="Search", icon=":material/search:"),
    st.Page(PAGES / "rounds.py", title="Rounds", icon=":material/monitoring:"),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare:"),
    st.Page(PAGES / "study.py", title="Study", icon=":material/science:"),
    st.Page(PAGES / "export.py", title="Export", icon=":material/download:"),
], position="hidden" if locked else "sidebar")
if locked:
    _password_gate()
_sidebar_chooser()
nav.run()
