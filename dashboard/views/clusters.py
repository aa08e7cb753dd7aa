"""Clusters: the table of clusters; details; rename, prune/restore, merge, split, undo."""

from __future__ import annotations

import streamlit as st

from climb_core import queries
from dashboard import widgets as w

ws = w.workspace()
st.title("Clusters")
if flash := st.session_state.pop("clusters_flash", None):
    st.success(flash)


def _edit(fn, *args, done: str, **kwargs):
    """Run one edit through the engine's edit API; report its error instead of crashing the page."""
    from climb_core.pipeline import edits

    try:
        result = getattr(edits, fn)(ws, *args, **kwargs)
    except Exception as err:  # noqa: BLE001 - ClusterEditError and friends, shown to the user
        st.error(f"{type(err).__name__}: {err}")
        return None
    st.session_state["clusters_flash"] = done.format(result=result)
    st.session_state["clusters_gen"] = st.session_state.get("clusters_gen", 0) + 1
    st.rerun()


table = w.cached_cluster_table(str(ws.root), w.version(ws))
if table.empty:
    st.info(f"No clusters yet: run `climb run-all {ws.root}` (or the stages on Home).")
    st.stop()

states = st.multiselect("States", ["active", "pruned", "merged", "split"], default=["active", "pruned"])
view = table[table["state"].isin(states)].reset_index(drop=True)
cols = ["cluster_id", "label", "state", "size_docs", "size_tokens", "mean_quality", "keywords", "reason"]
gen = st.session_state.get("clusters_gen", 0)
event = st.dataframe(
    view[cols], hide_index=True, key=f"cluster_table-{gen}", on_select="rerun", selection_mode="multi-row",
    height=min(600, 38 + 35 * max(len(view), 1)),
    column_config={"mean_quality": st.column_config.ProgressColumn("mean quality", min_value=0, max_value=1, format="%.3f"),
                   "size_docs": st.column_config.NumberColumn("docs", format="%d"),
                   "size_tokens": st.column_config.NumberColumn("tokens", format="%d")})
rows = event.selection.rows if event is not None else []
ticked = [int(view.iloc[i]["cluster_id"]) for i in rows]
st.caption(f"{len(view)} clusters shown. Click column headers to sort; tick rows (or pick below) to act on them.")
labels = dict(zip(table["cluster_id"], table["label"]))
selected = st.multiselect("Act on clusters", view["cluster_id"].tolist(), default=ticked,
                          key=f"targets-{gen}-{'-'.join(map(str, ticked))}",
                          format_func=lambda c: f"{c}: {labels.get(c) or ''}")

# ---------------------------------------------------------------------------------------- actions
a1, a2, a3, a4 = st.columns(4)
sel_states = set(view[view["cluster_id"].isin(selected)]["state"])
if a1.button(f"Prune {len(selected)} selected", disabled=not selected or sel_states - {"active"} != set()):
    _edit("prune_clusters", selected, reason="pruned by user", done=f"Pruned clusters {selected}")
if a2.button(f"Restore {len(selected)} selected", disabled=not selected or sel_states != {"pruned"}):
    _edit("restore_clusters", selected, done=f"Restored clusters {selected}")
with a3.popover("Merge selected", disabled=len(selected) < 2):
    merge_label = st.text_input("Label of the merged cluster (blank: keep the largest's)", key="merge_label")
    if st.button("Merge", key="do_merge"):
        _edit("merge_clusters", selected, label=merge_label or None, done="Merged into cluster {result}")
if a4.button("Undo last edit"):
    from climb_core.pipeline import edits

    try:
        undone = edits.undo(ws)
    except Exception as err:  # noqa: BLE001
        st.error(f"{type(err).__name__}: {err}")
    else:
        st.session_state["clusters_flash"] = "Nothing to undo" if undone is None else \
            f"Undid edit {undone.get('edit_id')} ({undone.get('op')})"
        st.session_state["clusters_gen"] = gen + 1
        st.rerun()

# ---------------------------------------------------------------------------------------- detail
st.divider()
ids = view["cluster_id"].tolist()
default = ids.index(selected[0]) if selected else 0
cid = st.selectbox("Cluster detail", ids, index=default, format_func=lambda c: f"{c}: {labels.get(c) or ''}")
if cid is None:
    st.stop()
detail = queries.cluster_detail(ws, int(cid), n_random=5, seed=st.session_state.get("random_seed", 0))
info = detail["info"] or {}
st.subheader(f"Cluster {cid}: {w.md(info.get('label'))}")
m = st.columns(4)
m[0].metric("Documents", f"{info.get('size_docs') or 0:,}")
m[1].metric("Tokens", f"{info.get('size_tokens') or 0:,}")
m[2].metric("Mean quality", "–" if info.get("mean_quality") is None else f"{info['mean_quality']:.3f}")
m[3].metric("State", str(info.get("state")))
kw = info.get("keywords")
if kw is not None and len(kw):
    st.caption("Keywords: " + w.md(", ".join(map(str, kw))))
if info.get("reason"):
    st.caption("Reason: " + w.md(info["reason"]))

e1, e2 = st.columns(2)
with e1.form("rename"):
    new_label = st.text_input("Rename", value=info.get("label") or "")
    if st.form_submit_button("Save label") and new_label.strip():
        _edit("rename_cluster", int(cid), new_label.strip(), done=f"Cluster {cid} renamed")
with e2.form("split"):
    k = st.number_input("Split into k clusters", min_value=2, max_value=50, value=2)
    if st.form_submit_button("Split", disabled=info.get("state") != "active"):
        _edit("split_cluster", int(cid), int(k), done="Split into clusters {result}")

left, right = st.columns([3, 2])
with left:
    st.markdown("**Representatives** (nearest the centroid)")
    for r in detail["representatives"].itertuples():
        w.show_text(w.preview(r.preview, 400), f"#{r.rank} · doc {r.doc_idx} · {r.doc_id}")
    if detail["representatives"].empty:
        st.caption("None recorded (run describe).")
    st.markdown("**Random documents**")
    if st.button("Draw others"):
        st.session_state["random_seed"] = st.session_state.get("random_seed", 0) + 1
        st.rerun()
    for r in detail["random_docs"].itertuples():
        w.show_text(w.preview(r.preview, 400), f"doc {r.doc_idx} · {r.doc_id}")
with right:
    if len(detail["quality"]):
        st.plotly_chart(w.histogram(detail["quality"], "Document quality", x_title="quality"), key="qhist")
    st.markdown("**Nearest clusters** (centroid cosine)")
    st.dataframe(detail["nearest"], hide_index=True)
    if not detail["lineage"].empty:
        st.markdown("**Lineage**")
        st.dataframe(detail["lineage"], hide_index=True)

with st.expander("Edit log"):
    st.dataframe(queries.edit_log(ws), hide_index=True)
