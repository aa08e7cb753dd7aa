"""Rounds: a search's proxies round by round, refreshed live while it runs."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from climb_core import jobs, queries
from dashboard import widgets as w

ws = w.workspace()
st.title("Rounds")
searches = queries.searches(ws)
want = st.session_state.get("rounds_search")


@st.fragment(run_every=2)
def _wait_for_worker(search_id: str) -> None:
    """A search launched from the Search page exists once its worker has (re)tokenised the clusters."""
    if search_id in queries.searches(ws)["search_id"].tolist():
        st.rerun(scope="app")
    job = jobs.job_for_search(ws, search_id)
    if job is None or job["status"] not in ("running", "cancelling"):
        st.warning(f"The worker for search {search_id} ended before creating it; see its log on the Search page.")
    else:
        st.info(f"Search {search_id} is starting: its worker is preparing the token files. This page follows it.")


if want and (searches.empty or want not in searches["search_id"].tolist()) and jobs.job_for_search(ws, want):
    _wait_for_worker(want)
    st.stop()
if searches.empty:
    st.info("No searches yet: start one on the Search page.")
    st.page_link("views/search.py", label="Search", icon=":material/search:")
    st.stop()

ids = searches["search_id"].tolist()
meta = searches.set_index("search_id")
sid = st.selectbox("Search", ids, index=ids.index(want) if want in ids else 0,
                   format_func=lambda s: f"{meta.loc[s, 'name'] or s} · {meta.loc[s, 'strategy']} · {meta.loc[s, 'status']} ({s})")
st.session_state["rounds_search"] = sid


def _is_running() -> bool:
    job = jobs.job_for_search(ws, sid)
    if job is not None:
        return job["status"] in ("running", "cancelling")
    return (queries.search_info(ws, sid) or {}).get("status") == "running"  # started from the CLI


def _draw() -> None:
    info = queries.search_info(ws, sid) or {}
    runs = queries.proxy_runs(ws, sid)
    reports = queries.predictor_reports(ws, sid)
    labels = [str(x) for x in (info.get("cluster_labels") or [])]
    ids_ = info.get("cluster_ids") or []
    names = [f"{c}: {lbl}" for c, lbl in zip(ids_, labels)] or [str(i) for i in range(len(labels))]
    done = runs[runs["status"] == "done"] if not runs.empty else runs
    budget = (info.get("config") or {}).get("search", {}).get("budget")

    m = st.columns(5)
    m[0].metric("Status", str(info.get("status")))
    m[1].metric("Proxies trained", f"{len(done)}" + (f" / {budget}" if budget else ""))
    m[2].metric("Rounds", int(runs["round"].max()) if not runs.empty else 0)
    m[3].metric("Best score", "–" if done.empty else f"{done['score'].max():.4f}")
    last_sp = reports["spearman"].dropna()
    m[4].metric("Predictor Spearman", "–" if last_sp.empty else f"{last_sp.iloc[-1]:.3f}")
    if info.get("message"):
        st.caption(w.md(info["message"]))
    if runs.empty:
        st.info("No proxy runs yet.")
        return

    c1, c2 = st.columns(2)
    with c1:
        pv = done.dropna(subset=["predicted", "score"])
        fig = go.Figure()
        for i, (rnd, g) in enumerate(pv.groupby("round")):
            fig.add_scatter(x=g["predicted"], y=g["score"], mode="markers", name=f"round {rnd}",
                            marker=dict(size=8, color=w.PALETTE[i % len(w.PALETTE)]), hovertext=g["run_id"].map(w.esc))
        if not pv.empty:
            lo = float(min(pv["predicted"].min(), pv["score"].min()))
            hi = float(max(pv["predicted"].max(), pv["score"].max()))
            fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(dash="dash", color="#888"))
        fig.update_layout(title="Predicted vs actual", xaxis_title="predicted", yaxis_title="actual", height=340,
                          margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, key="pred_actual")
        if pv.empty:
            st.caption("Predictions appear from the second round on.")
    with c2:
        curve = queries.best_so_far(runs)
        st.plotly_chart(w.line_chart({"best so far": (curve["proxies_trained"], curve["best"]),
                                      "each run": (curve["proxies_trained"], curve["score"])},
                                     "Best so far vs proxies trained", "proxies trained", "score"), key="best")

    c3, c4 = st.columns(2)
    with c3:
        if not reports.empty and reports[["spearman", "r2"]].notna().any().any():
            st.plotly_chart(w.line_chart({"Spearman": (reports["round"], reports["spearman"]),
                                          "R²": (reports["round"], reports["r2"])},
                                         "Predictor quality per round", "round", "value"), key="spearman")
        else:
            st.caption("Predictor quality (cross-validated Spearman and R²) appears once a round has enough runs.")
    with c4:
        imp = reports["importance"].iloc[-1] if not reports.empty else None
        imp = np.nan_to_num(np.asarray(imp, dtype=float)) if isinstance(imp, (list, tuple, np.ndarray)) else None
        if imp is not None and len(imp) == len(names) and imp.any():
            st.plotly_chart(w.weights_bars({f"round {reports['round'].iloc[-1]}": imp}, names,
                                           "Per-cluster importance (latest predictor)", y_title="importance"), key="importance")

    top = done.sort_values("score", ascending=False).head(3)
    mixes = {f"run {r.run_id} ({r.score:.4f})": list(r.weights) for r in top.itertuples()}
    if info.get("final_weights"):
        mixes = {"final (predicted best)": info["final_weights"], **mixes}
    if info.get("prior"):
        mixes["token prior"] = info["prior"]
    if mixes and names and all(len(v) == len(names) for v in mixes.values()):
        st.plotly_chart(w.weights_bars(mixes, names, "Weights of the best mixtures"), key="weights")

    with st.expander("All runs"):
        st.dataframe(runs.drop(columns=["weights"]), hide_index=True)


running = _is_running()
if running:
    st.caption("Live: refreshing every 2 seconds while the search runs.")


def _live() -> None:
    _draw()
    if running and not _is_running():
        st.rerun()


st.fragment(_live, run_every=2 if running else None)()
