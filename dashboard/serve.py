"""The dashboard as served by `climb dashboard`: `streamlit run dashboard/serve.py -- --workspace WS`.

The pages are dashboard/app.py's; this file wraps them in an st.App so that HTTP requests pass
through dashboard.netguard.HideCoreEndpoints first (Streamlit has no option to switch off
/_stcore/metrics, which answers without the password). `streamlit run dashboard/app.py` still works
and serves the same pages without that filter.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # streamlit puts dashboard/ on sys.path, not the checkout
    sys.path.insert(0, str(REPO))

from dashboard.netguard import HideCoreEndpoints  # noqa: E402

app = st.App(Path(__file__).resolve().with_name("app.py"), middleware=[Middleware(HideCoreEndpoints)])
