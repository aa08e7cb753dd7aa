"""CLIMB Studio dashboard: `streamlit run dashboard/app.py -- --workspace WS` (or `climb dashboard WS`).

The workspace comes from `--workspace`, else the CLIMB_WORKSPACE environment variable, and can be
changed in the sidebar. Pages live in dashboard/views/, one short file each.

The folder is deliberately not called `pages/`: Streamlit treats a `pages/` folder beside the main
script as a legacy multipage app until `st.navigation` has run once in the process, so a fresh
server whose first visitor opens a deep link (/map) would run that page without this file (no
workspace, no navigation) and stay in legacy mode for every later session.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `streamlit run dashboard/app.py` from a checkout without `pip install -e`
    sys.path.insert(0, str(REPO))

from dashboard import widgets  # noqa: E402


def _workspace_from_args() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", "-w")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.workspace or os.environ.get("CLIMB_WORKSPACE") or None


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
        if address not in ("127.0.0.1", "localhost", "::1"):
            st.warning(f"Served on {address or 'every network interface'}: anyone who can reach this port can "
                       "edit the workspace and start jobs. Use `--server.address 127.0.0.1` to keep it local.")


st.set_page_config(page_title="CLIMB Studio", page_icon=":material/landscape:", layout="wide")
PAGES = Path(__file__).resolve().parent / "views"
nav = st.navigation([
    st.Page(PAGES / "home.py", title="Home", icon=":material/home:", default=True),
    st.Page(PAGES / "map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page(PAGES / "clusters.py", title="Clusters", icon=":material/workspaces:"),
    st.Page(PAGES / "search.py", title="Search", icon=":material/search:"),
    st.Page(PAGES / "rounds.py", title="Rounds", icon=":material/monitoring:"),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare:"),
    st.Page(PAGES / "study.py", title="Study", icon=":material/science:"),
    st.Page(PAGES / "export.py", title="Export", icon=":material/download:"),
])
_sidebar_chooser()
nav.run()
