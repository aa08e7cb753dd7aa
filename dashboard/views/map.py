"""Map: the corpus in 2-D; select documents by box or lasso, search text, act on the selection."""

from __future__ import annotations

import streamlit as st

from climb_core import queries
from dashboard import widgets as w

ws = w.workspace()
st.title("Map")
if queries.corpus_overview(ws)["map_points"] == 0:
    st.info(f"No map yet: run the map stage (`climb map {ws.root}`) or start it from Home.")
    st.stop()

if flash := st.session_state.pop("map_flash", None):
    st.success(flash)

fields = queries.meta_fields(ws)
gen = st.session_state.setdefault("map_gen", 0)

c1, c2, c3, c4, c5 = st.columns([2, 3, 2, 2, 2])
color_options = ["cluster", "quality"] + [f"meta.{f}" for f in fields]
color_by = c1.selectbox("Colour by", color_options, format_func=lambda s: s.removeprefix("meta."))
query = c2.text_input("Highlight documents containing", key="map_query", placeholder="e.g. neural network")
show_pruned = c3.toggle("Show pruned clusters", value=True)
budget = c4.number_input("Points drawn", 100, 2_000_000, w.MAP_BUDGET, step=5_000,
                         help="Beyond this many points in view, each cluster is sampled in proportion to its size "
                              "(at least one point each) and drawn as points with hover previews; every point in "
                              "view is still drawn, as an image beneath them. Selections take every document in "
                              "the lasso.")
hover_max = c5.number_input("Hover previews (points)", 1000, 200_000, w.MAP_HOVER, step=5000,
                            help="Previews are sent for a random sample of this many points; the rest show their cluster.")

matches = queries.search_text(ws, query) if query else []
if query:
    st.caption(f"{len(matches):,} documents contain “{w.md(query)}”" + (" (ringed on the map)" if matches else ""))

region = st.session_state.get("map_region")
(fig, curves), n_drawn, n_view = w.cached_map_figure(
    str(ws.root), w.version(ws), tuple(fields), color_by, show_pruned, tuple(matches[:20_000]), int(hover_max),
    int(budget), region)
event = st.plotly_chart(fig, key=f"map-{gen}", on_select="rerun", selection_mode=("box", "lasso"),
                        config={"scrollZoom": True, "displaylogo": False})
sampled = n_drawn < n_view  # the drawn points are a subset of those in view
shown = (f"{n_view:,} documents" if not sampled
         else f"{n_drawn:,} of {n_view:,} documents drawn as points (a sample per cluster), every one of them "
              "in the image beneath; a selection takes all of them")
st.caption(shown + (" in the zoomed region" if region else "")
           + ". Drag to lasso-select (box select in the toolbar); double-click to clear.")

lassos, boxes = w.selection_shapes(event)
if sampled and (lassos or boxes):
    # The drawn points are a sample: the selection is every document inside the drawn shapes.
    selected = w.cached_docs_in_region(str(ws.root), w.version(ws), tuple((tuple(a), tuple(b)) for a, b in lassos),
                                       tuple(boxes), show_pruned, region)
else:
    selected = w.selected_doc_idx(event, curves)
z1, z2 = st.columns(2)
if (lassos or boxes) and z1.button("Zoom to the selection", help="Redraws only this region, at full resolution "
                                   "when it holds at most the drawn-points budget."):
    xs = [v for a, _ in lassos for v in a] + [v for b in boxes for v in b[:2]]
    ys = [v for _, a in lassos for v in a] + [v for b in boxes for v in b[2:]]
    st.session_state["map_region"] = (min(xs), max(xs), min(ys), max(ys))
    st.session_state["map_gen"] = gen + 1
    st.rerun()
if region and z2.button("Show the whole map"):
    st.session_state.pop("map_region", None)
    st.session_state["map_gen"] = gen + 1
    st.rerun()
if not selected and matches and st.toggle("Use the text matches as the selection", key="map_use_matches"):
    selected = matches
if not selected:
    st.stop()

st.subheader(f"Selection: {len(selected):,} documents")
table = queries.documents(ws, selected[:5000], preview_chars=200)
w.show_docs(table.drop(columns=["meta_json", "source_file"]), key="map_sel_table", height=320)
if len(selected) > 5000:
    st.caption("The table shows the first 5,000; downloads hold all of them.")

doc = st.selectbox("Read a selected document", selected[:5000], key="map_read_doc")
if doc is not None:
    w.show_text(queries.document_text(ws, int(doc)) or "", f"document {doc}")

d1, d2 = st.columns(2)
full = lambda: queries.documents(ws, selected, preview_chars=None)  # noqa: E731 - built on click only
d1.download_button("Download selection (Parquet)", data=lambda: w.to_parquet_bytes(full()),
                   file_name="selection.parquet", mime="application/octet-stream")
d2.download_button("Download selection (CSV)", data=lambda: w.to_csv_bytes(full()),
                   file_name="selection.csv", mime="text/csv")

with st.form("map_actions"):
    label = st.text_input("Label for a new cluster", value="selected on map")
    a1, a2 = st.columns(2)
    make = a1.form_submit_button("Make a new cluster from the selection", type="primary")
    prune = a2.form_submit_button("Prune the selection", help="Moves the documents into a new cluster and prunes it (undo on Clusters).")
if make or prune:
    from climb_core.pipeline import edits

    try:
        new_id = edits.cluster_from_documents(ws, selected, label=label or None)
        if prune:
            edits.prune_clusters(ws, [new_id], reason=f"pruned on the map ({len(selected)} documents)")
        st.session_state["map_gen"] = gen + 1
        st.session_state["map_flash"] = f"{'Pruned' if prune else 'Created'} cluster {new_id} ({len(selected):,} documents)"
        st.rerun()
    except Exception as err:  # noqa: BLE001 - ClusterEditError and friends, shown to the user
        st.error(f"{type(err).__name__}: {err}")
