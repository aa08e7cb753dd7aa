"""Compare: searches side by side: best score vs proxies trained, final weights and their epochs at the
final scale, a score table."""

from __future__ import annotations

import streamlit as st

from climb_core import queries
from climb_core.search import search_final_scale
from dashboard import widgets as w

ws = w.workspace()
st.title("Compare searches")
searches = queries.searches(ws)
if searches.empty:
    st.info("No searches yet: start one on the Search page.")
    st.stop()

names = {r.search_id: f"{r.name or r.search_id} [{r.strategy}]" for r in searches.itertuples()}
chosen = st.multiselect("Searches", list(names), default=list(names)[:3], format_func=names.get)
if not chosen:
    st.stop()

curves, finals, scales, rows = {}, {}, {}, []
labels = ids = None
for sid in chosen:
    info = queries.search_info(ws, sid) or {}
    runs = queries.proxy_runs(ws, sid)
    curve = queries.best_so_far(runs) if not runs.empty else None
    if curve is not None and len(curve):
        curves[names[sid]] = (curve["proxies_trained"], curve["best"])
    this_labels = [f"{c}: {lbl}" for c, lbl in zip(info.get("cluster_ids") or [], info.get("cluster_labels") or [])]
    weights = info.get("final_weights")
    if weights and (labels is None or this_labels == labels):
        labels, ids = this_labels, info.get("cluster_ids") or []
        finals[names[sid]] = weights
        scales[names[sid]] = search_final_scale(ws, sid)
    done = runs[runs["status"] == "done"] if not runs.empty else runs
    rows.append({"search": names[sid], "status": info.get("status"), "proxies trained": len(done),
                 "best trained score": None if done.empty else float(done["score"].max()),
                 "final predicted": info.get("final_predicted"),
                 "tokens per proxy": (info.get("config") or {}).get("proxy", {}).get("tokens"),
                 "proxy": (info.get("config") or {}).get("proxy", {}).get("kind")})

st.dataframe(rows, hide_index=True)
if curves:
    st.plotly_chart(w.line_chart(curves, "Best score vs proxies trained", "proxies trained", "best score"), key="cmp_best")
if finals and labels:
    st.plotly_chart(w.weights_bars(finals, labels, "Final weights"), key="cmp_weights")
    skipped = [names[s] for s in chosen if names[s] not in finals]
    if skipped:
        st.caption("Not shown (no final weights yet, or different clusters): " + w.md(", ".join(skipped)))
    w.final_scale_table({n: (wts, scales[n]) for n, wts in finals.items()}, ids,
                        [lbl.split(": ", 1)[-1] for lbl in labels], key="cmp_epochs")
