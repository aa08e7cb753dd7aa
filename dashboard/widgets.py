"""Shared drawing helpers for the pages.

Corpus text is untrusted. It is only ever drawn with st.text, st.code or st.dataframe (which show
it literally), never as Markdown or HTML; in plotly it is HTML-escaped first, because plotly renders
a subset of HTML in hover labels, legends and axis labels.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import streamlit as st

from climb_core import queries
from climb_core.catalogue.workspace import Workspace, WorkspaceError
from dashboard.map_backdrop import backdrop, colorscale_lut, hex_to_rgb

REPO = Path(__file__).resolve().parents[1]
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


# ------------------------------------------------------------------------------------ workspace
def workspace() -> Workspace:
    """The workspace chosen in the sidebar (set by app.py); stops the page with a hint when none."""
    root = st.session_state.get("workspace")
    if not root:
        st.info("No workspace chosen. Start the dashboard with `climb dashboard WORKSPACE`, or type a "
                "workspace folder in the sidebar.")
        st.stop()
    try:
        return open_workspace(root)
    except WorkspaceError as err:
        st.error(str(err))
        st.stop()


@st.cache_resource(show_spinner=False)
def _open_cached(root: str) -> Workspace:
    return Workspace.open(root)


def open_workspace(root: str) -> Workspace:
    return _open_cached(str(Path(root).resolve()))


def version(ws: Workspace) -> tuple:
    """Cache key: changes whenever the catalogue changes, so edits show at once."""
    return queries.catalogue_version(ws)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_map_points(root: str, catalogue: tuple, fields: tuple[str, ...]) -> pd.DataFrame:
    return queries.map_points(open_workspace(root), list(fields))


@st.cache_data(show_spinner=False, max_entries=16)
def cached_cluster_table(root: str, catalogue: tuple) -> pd.DataFrame:
    return queries.cluster_table(open_workspace(root))


# Defaults of the Map page, chosen by bench/bench_map_render.py: a browser without a GPU draws plotly's
# WebGL markers at ~25 ms per thousand and pays ~0.3 s for the WebGL context, so beyond this many
# points in view a per-cluster sample is drawn as SVG markers (hover, click) over a server-drawn
# image of every point (map_backdrop.py).
MAP_BUDGET = 2_000
SVG_MAX_POINTS = 3_000
MAP_HOVER = 5_000


# cache_resource, not cache_data: unpickling a copy of a 50k-point figure re-validates it (over a
# second); the figure is never mutated after it is built, so sessions can share it.
@st.cache_resource(show_spinner=False, max_entries=6)
def cached_map_figure(root: str, catalogue: tuple, fields: tuple[str, ...], color_by: str, show_pruned: bool,
                      highlight: tuple[int, ...], hover_max: int, budget: int = MAP_BUDGET,
                      region: tuple[float, float, float, float] | None = None):
    """The map figure and its per-trace doc_idx, how many points it draws and how many are in view,
    built once per catalogue version and view settings (a box or lasso selection reruns the page; it
    must not rebuild the figure). Beyond `budget` points in view, a per-cluster sample is drawn."""
    ws = open_workspace(root)
    df, n_view = queries.map_sample(ws, budget, list(fields), show_pruned=show_pruned, region=region, include=highlight)
    view = None
    if n_view > len(df):  # a sample is drawn as markers: every point in view goes into the backdrop image
        field = color_by.removeprefix("meta.") if color_by.startswith("meta.") else None
        view = queries.map_view_points(ws, field, show_pruned=show_pruned, region=region)
    return map_figure(df, color_by, list(highlight), hover_max=hover_max, view=view), len(df), n_view


@st.cache_data(show_spinner=False, max_entries=16)
def cached_docs_in_region(root: str, catalogue: tuple, lassos: tuple, boxes: tuple, show_pruned: bool,
                          region: tuple | None) -> list[int]:
    return queries.map_docs_in_region(open_workspace(root), lassos, boxes, show_pruned=show_pruned, region=region)


def clear_caches() -> None:
    cached_map_figure.clear()
    cached_docs_in_region.clear()
    cached_map_points.clear()
    cached_cluster_table.clear()


# ------------------------------------------------------------------------------------ text
def esc(text) -> str:
    """HTML-escape for plotly labels; plotly decodes entities back to the literal characters."""
    return html.escape("" if text is None else str(text), quote=True)


def md(text) -> str:
    """Escape for use inside Markdown (labels in headers, captions, button labels)."""
    return _MD_SPECIAL.sub(r"\\\1", "" if text is None else str(text))


def preview(text, n: int = 300) -> str:
    text = re.sub(r"\s+", " ", "" if text is None else str(text)).strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def show_docs(df: pd.DataFrame, key: str | None = None, height: int | str = "auto", **kwargs):
    """A table of documents; text stays literal (the dataframe widget never renders HTML)."""
    return st.dataframe(df, hide_index=True, key=key, height=height, **kwargs)


def show_text(text: str, title: str | None = None) -> None:
    """A document's text as plain text (st.text never interprets Markdown or HTML)."""
    if title:
        st.caption(md(title))
    st.text(text)


def log_box(text: str) -> None:
    st.code(text or "(no output yet)", language=None)


# ------------------------------------------------------------------------------------ downloads
def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


# ------------------------------------------------------------------------------------ charts
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6",
           "#9D755D", "#BAB0AC", "#1F77B4", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2",
           "#7F7F7F", "#BCBD22", "#17BECF", "#AEC7E8"]


def histogram(values, title: str, nbins: int = 30, x_title: str = "") -> go.Figure:
    fig = go.Figure(go.Histogram(x=np.asarray(values, dtype=float), nbinsx=nbins, marker_color=PALETTE[0]))
    fig.update_layout(title=esc(title), height=260, margin=dict(l=10, r=10, t=40, b=10), bargap=0.05,
                      xaxis_title=esc(x_title), yaxis_title="documents")
    return fig


def weights_bars(weights: dict[str, list[float]], labels: list[str], title: str = "", y_title: str = "weight") -> go.Figure:
    """Grouped bars: one group per cluster (labels on the axis), one bar per named mixture."""
    fig = go.Figure()
    axis = [esc(preview(lbl, 40)) for lbl in labels]
    for i, (name, w) in enumerate(weights.items()):
        fig.add_bar(x=axis, y=list(w), name=esc(name), marker_color=PALETTE[i % len(PALETTE)])
    fig.update_layout(barmode="group", title=esc(title), height=380, margin=dict(l=10, r=10, t=40, b=10),
                      yaxis_title=y_title, legend=dict(orientation="h", y=1.12), xaxis_tickangle=-30)
    return fig


def line_chart(series: dict[str, tuple], title: str, x_title: str, y_title: str, mode: str = "lines+markers",
               integer_x: bool = True) -> go.Figure:
    fig = go.Figure()
    for i, (name, (x, y)) in enumerate(series.items()):
        fig.add_scatter(x=list(x), y=list(y), name=esc(name), mode=mode, line=dict(color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(title=esc(title), height=320, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title=x_title, yaxis_title=y_title, legend=dict(orientation="h", y=1.12, x=0))
    if integer_x:
        xs = [v for x, _ in series.values() for v in list(x)]
        span = (max(xs) - min(xs)) if xs else 0
        fig.update_xaxes(dtick=1 if span <= 12 else None, tickformat="d")
    return fig


def final_scale_table(mixtures: dict[str, tuple[list[float], dict]], ids: list[int], labels: list[str],
                      key: str) -> None:
    """Epochs per cluster at the final scale for each named mixture, given as (weights, its search's
    final scale from `search_final_scale`). A cluster past 1 epoch is marked in words in its own
    column, so the mark survives the dataframe widget (which shows text literally) and a copy-paste."""
    from climb_core.search import cluster_epochs

    shown = {name: (wts, sc) for name, (wts, sc) in mixtures.items()
             if sc and sc.get("cluster_tokens") and wts is not None and len(wts) == len(sc["cluster_tokens"]) == len(ids)}
    st.markdown("**Epochs per cluster at the final scale**")
    if not shown:
        st.caption("Appears once the clusters' tokens are counted (`climb tokens`) and a mixture is shown.")
        return
    scales = {sc["tokens"] for _, sc in shown.values()}
    first = next(iter(shown.values()))[1]
    st.caption(md(
        (f"Final training tokens: {first['tokens']:,} ({first['source']}); " if len(scales) == 1 else
         "Final training tokens: " + "; ".join(f"{n} {sc['tokens']:,}" for n, (_, sc) in shown.items()) + "; ")
        + f"epochs = weight x final tokens / the cluster's training tokens; the repetition cap is "
        f"{first['max_epochs']:g} epochs (0 = none). Past 1 epoch, the final model sees that cluster's tokens again."))
    eps = {name: cluster_epochs(wts, sc["cluster_tokens"], sc["tokens"], ids) for name, (wts, sc) in shown.items()}
    same_tokens = len({tuple(sc["cluster_tokens"]) for _, sc in shown.values()}) == 1
    rows = []
    for i, (c, lbl) in enumerate(zip(ids, labels)):
        row: dict = {"cluster": int(c), "label": str(lbl)}
        if same_tokens:
            row["training tokens"] = int(first["cluster_tokens"][i])
        over = []
        for name, e in eps.items():
            v = e[i]["epochs"]
            row[f"epochs: {name}"] = None if v is None else round(v, 3)
            if v is None:
                over.append(f"{name} (no tokens)")
            elif v > 1:
                over.append(f"{name} {v:.2f}")
        row["past 1 epoch"] = ("REPEATED: " + ", ".join(over)) if over else ""
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key=key)
    for name, e in eps.items():
        past = [f"#{r['cluster_id']} ({r['epochs']:.2f})" for r in e if r["epochs"] is not None and r["epochs"] > 1]
        if past:
            st.caption(md(f"{name}: {len(past)} cluster(s) past 1 epoch: {', '.join(past)}"))


def status_badge(status: str | None) -> str:
    """Markdown: a material icon and the status word."""
    icons = {"done": ":green[:material/check_circle:]", "running": ":blue[:material/progress_activity:]",
             "failed": ":red[:material/error:]", "pending": ":gray[:material/radio_button_unchecked:]",
             "cancelled": ":orange[:material/cancel:]", "cancelling": ":orange[:material/cancel:]",
             "stopped": ":orange[:material/pause_circle:]", "interrupted": ":orange[:material/pause_circle:]", "skipped": ":gray[:material/skip_next:]",
             "stale": ":orange[:material/sync_problem:]"}
    return f"{icons.get(str(status), ':gray[:material/circle:]')} {md(status)}"


# ------------------------------------------------------------------------------------ the map
def _srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    lms = lin @ np.array([[0.4122214708, 0.2119034982, 0.0883024619],
                          [0.5363325363, 0.6806995451, 0.2817188376],
                          [0.0514459929, 0.1073969566, 0.6299787005]])
    return np.cbrt(lms) @ np.array([[0.2104542553, 1.9779984951, 0.0259040371],
                                    [0.7936177850, -2.4285922050, 0.7827717662],
                                    [-0.0040720468, 0.4505937099, -0.8086757660]])


_DISTINCT: list[str] = []


def distinct_colors(n: int) -> list[str]:
    """n different colours, each as far (in OKLab) from the earlier ones as the sRGB cube allows.

    Greedy farthest-point order over a fine sRGB grid: the first colours are the most distinct, so
    any prefix is a good palette; greys and very light or dark colours are left out (grey marks
    pruned clusters, white is the background). Deterministic, computed once and extended on demand."""
    if n <= len(_DISTINCT):
        return _DISTINCT[:n]
    steps = 24 if n <= 3000 else 40
    g = np.linspace(0, 1, steps)
    rgb = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    lab = _srgb_to_oklab(rgb)
    ok = (lab[:, 0] > 0.42) & (lab[:, 0] < 0.9) & (np.hypot(lab[:, 1], lab[:, 2]) > 0.05)
    rgb, lab = rgb[ok], lab[ok]
    if n > len(rgb):
        raise ValueError(f"cannot make {n} distinct colours")
    first = int(np.argmax(np.hypot(lab[:, 1], lab[:, 2])))
    picked = [first]
    dist = np.linalg.norm(lab - lab[first], axis=1)
    while len(picked) < n:
        nxt = int(np.argmax(dist))
        picked.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(lab - lab[nxt], axis=1))
    hexes = ["#%02X%02X%02X" % tuple(int(round(v * 255)) for v in rgb[i]) for i in picked]
    _DISTINCT[:] = hexes
    return hexes[:n]


PRUNED_COLOR = "#BBBBBB"


def map_figure(df: pd.DataFrame, color_by: str = "cluster", highlight: list[int] | None = None,
               hover_max: int = 20_000, max_categories: int = 40, seed: int = 0,
               max_labels: int = 60, view: dict[str, np.ndarray] | None = None) -> tuple[go.Figure, list[np.ndarray]]:
    """A scatter of the map points (SVG up to SVG_MAX_POINTS markers, WebGL beyond); returns the figure
    and, per trace, the doc_idx of its points (so a selection's (curve_number, point_index) maps back
    to documents; the labels' trace holds none).

    Hover previews are HTML-escaped and sent for at most `hover_max` points (a random sample); the
    others show their cluster only, which keeps the page light. Coloured by cluster, every cluster
    has its own colour (`distinct_colors`, by the `cluster_rank` column when present, so a cluster
    keeps its colour when the view changes) and the largest `max_labels` clusters are labelled at
    their centre (the median of their points): one trace per cluster would not scale to 1000.

    `view`: every point in view (`queries.map_view_points`) when `df` is a sample of them. They are
    drawn beneath the markers as one image in the same colours (`map_backdrop`), so the map shows
    every document while the browser draws only the sample.
    """
    n = len(df)
    rng = np.random.default_rng(seed)
    sampled = np.zeros(n, dtype=bool)
    if n:
        sampled[rng.choice(n, min(n, hover_max), replace=False)] = True
    # Escape each distinct label once; previews only for the sampled points.
    label_codes, label_uniques = pd.factorize(df["label"].fillna("(no cluster)").astype(str))
    esc_labels = np.array([esc(preview(u, 60)) for u in label_uniques] or [""], dtype=object)
    cid = df["cluster_id"].fillna(-1).astype(np.int64).to_numpy()
    prev = df["preview"].to_numpy()
    hover = np.full(n, "", dtype=object)
    rows = np.flatnonzero(sampled)
    hover[rows] = [f"<b>{c}: {esc_labels[label_codes[r]]}</b><br>{esc(preview(prev[r], 80))}"
                   for r, c in zip(rows, cid[rows])]
    doc_idx = df["doc_idx"].to_numpy()
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    fig = go.Figure()
    curves: list[np.ndarray] = []
    marker_size = 4 if n < 20_000 else 2.5
    # SVG up to a few thousand markers: a WebGL context costs a CPU-only browser ~0.3 s to set up,
    # more than SVG spends on that many points (bench_map_render.py).
    scatter = go.Scatter if n <= SVG_MAX_POINTS else go.Scattergl
    pruned = df["state"].fillna("").to_numpy() == "pruned" if "state" in df else np.zeros(n, bool)

    def add(mask, name, color, group=None, extra_tpl="", **marker):
        """Two traces: the hover sample with previews, the rest with only their cluster id (from
        customdata, a compact typed array) so 1M-point payloads stay small."""
        for with_preview in (True, False):
            m = mask & (sampled if with_preview else ~sampled)
            if not m.any():
                continue
            col = color[m] if isinstance(color, np.ndarray) else color
            mk = dict(size=marker_size, color=col, opacity=0.75, **marker)
            if not with_preview and "colorbar" in mk and mask[sampled].any():
                mk["showscale"] = False  # one colour bar per pair
            common = dict(x=x[m], y=y[m], mode="markers", name=esc(preview(name, 60)), legendgroup=group or name,
                          marker=mk)
            if with_preview:
                fig.add_trace(scatter(**common, hovertext=hover[m],
                                      hovertemplate="%{hovertext}" + extra_tpl + "<extra></extra>"))
            else:
                fig.add_trace(scatter(**common, customdata=cid[m], showlegend=not mask[sampled].any(),
                                      hovertemplate="cluster %{customdata}" + extra_tpl + "<extra></extra>"))
            curves.append(doc_idx[m])

    view_rgb = None  # the colour of every point in `view`, as the markers are coloured
    if color_by == "quality":
        q = df["quality"].fillna(0).to_numpy()
        add(np.ones(n, bool), "documents", q, extra_tpl="<br>quality %{marker.color:.3f}", colorscale="Viridis",
            cmin=0, cmax=1, colorbar=dict(title="quality", thickness=12))
        if view is not None:
            lut = colorscale_lut(plotly.colors.sequential.Viridis)
            vq = np.nan_to_num(view["quality"], nan=0.0)
            view_rgb = lut[np.clip((vq * (len(lut) - 1)).round().astype(np.int64), 0, len(lut) - 1)]
    elif color_by == "cluster":
        if "cluster_rank" in df:
            rank = df["cluster_rank"].fillna(-1).astype(np.int64).to_numpy()
        else:
            known = np.unique(cid[cid >= 0])
            rank = np.where(cid >= 0, np.searchsorted(known, cid), -1)
        # Colour by number through a stepped colour scale: plotly validates a numeric typed array at
        # once, while 50k+ colour strings are checked one by one (seconds) and weigh more on the wire.
        top_rank = int(rank.max()) if n else 0
        if view is not None and len(view["cluster_rank"]):
            top_rank = max(top_rank, int(view["cluster_rank"].max()))
        palette = distinct_colors(top_rank + 1) + [PRUNED_COLOR]
        k = len(palette)
        if view is not None:
            vr = view["cluster_rank"]
            view_rgb = hex_to_rgb(palette)[np.where((vr >= 0) & ~view["pruned"], vr, k - 1)]
        scale = [[edge, c] for i, c in enumerate(palette) for edge in (i / k, (i + 1) / k)]
        colors = np.where(rank >= 0, rank, k - 1).astype(np.float32) + 0.5
        active = ~pruned
        if active.any():
            add(active, f"{len(np.unique(cid[active])):,} clusters", colors, group="clusters",
                colorscale=scale, cmin=0, cmax=k, showscale=False)
        if pruned.any():
            pc, first = np.unique(cid[pruned], return_index=True)
            big = np.argsort(-np.bincount(np.searchsorted(pc, cid[pruned])), kind="stable")[:3]
            names = [f"{pc[j]}: {preview(df['label'].iloc[np.flatnonzero(pruned)[first[j]]] or '', 30)}" for j in big]
            add(pruned, f"pruned ({len(pc)}): " + ", ".join(names) + (", …" if len(pc) > 3 else ""),
                PRUNED_COLOR, group="pruned")
        # Labels at the centres of the largest clusters, as one text trace (it holds no documents):
        # 60 annotations cost the browser ~0.2 s, a text trace almost nothing.
        notes = []
        for c in pd.Series(cid).value_counts().index[:max_labels] if n else []:
            m = cid == c
            lbl = esc(preview(label_uniques[label_codes[np.flatnonzero(m)[0]]], 28))  # cut, then escape
            notes.append((float(np.median(x[m])), float(np.median(y[m])), f"{c}: {lbl}"))
        if notes:
            lx, ly, lt = zip(*notes)
            # a white halo keeps a label readable over dense colour (annotations had a background box)
            font = dict(size=10, color="#222222", shadow="0 0 2px #FFFFFF, 0 0 3px #FFFFFF")
            fig.add_trace(go.Scatter(x=lx, y=ly, text=lt, mode="text", name="cluster labels", textfont=font,
                                     hoverinfo="skip", showlegend=False, selected=dict(textfont=dict(color=font["color"])),
                                     unselected=dict(textfont=dict(color=font["color"]))))
            curves.append(np.zeros(0, dtype=doc_idx.dtype))
    else:
        key = df[color_by].fillna("(none)").astype(str)
        counts = key.value_counts()
        top = list(counts.index[:max_categories])
        if len(counts) > max_categories:
            key = key.where(key.isin(top), "(other)")
            top.append("(other)")
        keys = key.to_numpy()
        palette = distinct_colors(len(top))
        for i, k in enumerate(top):
            add(keys == k, k, palette[i], group=f"cat-{i}")
        if view is not None:
            colour_of = {k: i for i, k in enumerate(top)}
            fallback = colour_of.get("(other)", len(top))
            lut = hex_to_rgb(palette + [PRUNED_COLOR])
            codes = pd.Series(view["meta"], dtype=object).fillna("(none)").astype(str).map(colour_of)
            view_rgb = lut[codes.fillna(fallback).to_numpy(np.int64)]
    if highlight:
        mask = np.isin(doc_idx, np.asarray(highlight))
        if mask.any():
            rows = np.flatnonzero(mask)
            ring_hover = [f"{esc_labels[label_codes[r]]}<br>{esc(preview(p, 80))}" if i < hover_max
                          else esc_labels[label_codes[r]]
                          for i, (r, p) in enumerate(zip(rows, prev[rows]))]
            fig.add_trace((go.Scatter if mask.sum() <= SVG_MAX_POINTS else go.Scattergl)(
                x=x[mask], y=y[mask], mode="markers", name="text matches", hovertext=ring_hover,
                hovertemplate="%{hovertext}<extra></extra>",
                marker=dict(size=9, color="rgba(0,0,0,0)", line=dict(color="#000000", width=1.5))))
            curves.append(doc_idx[mask])
    fig.update_layout(height=640, margin=dict(l=0, r=0, t=10, b=0), dragmode="lasso", uirevision="map",
                      legend=dict(itemsizing="constant", font=dict(size=10)), hovermode="closest",
                      xaxis=dict(showticklabels=False, zeroline=False, showgrid=False),
                      yaxis=dict(showticklabels=False, zeroline=False, showgrid=False))
    image = backdrop(view["x"], view["y"], view_rgb, seed) if view is not None and view_rgb is not None else None
    if image is not None:
        x0, x1, y0, y1 = image.extent
        fig.add_layout_image(source=image.uri, xref="x", yref="y", x=x0, y=y1, sizex=x1 - x0, sizey=y1 - y0,
                             xanchor="left", yanchor="top", sizing="stretch", layer="below")
        # plotly's autorange ignores images: the axes must cover the backdrop, not only the sample
        px, py = 0.02 * (x1 - x0), 0.02 * (y1 - y0)
        fig.update_xaxes(range=[x0 - px, x1 + px])
        fig.update_yaxes(range=[y0 - py, y1 + py])
    return fig, curves


def selected_doc_idx(event, curves: list[np.ndarray]) -> list[int]:
    """doc_idx of the points selected in a map drawn by `map_figure`."""
    try:
        points = event.selection["points"]
    except (AttributeError, KeyError, TypeError):
        return []
    out: set[int] = set()
    for p in points:
        c = p.get("curve_number")
        i = p.get("point_index", p.get("point_number"))
        if c is None or i is None or c >= len(curves) or i >= len(curves[c]):
            continue
        out.add(int(curves[c][i]))
    return sorted(out)


def selection_shapes(event) -> tuple[list[tuple[list[float], list[float]]], list[tuple[float, float, float, float]]]:
    """The lasso polygons ((xs, ys)) and boxes ((x0, x1, y0, y1)) of a plotly_chart selection event,
    in data coordinates."""
    try:
        sel = event.selection
        raw_lassos, raw_boxes = sel.get("lasso") or [], sel.get("box") or []
    except (AttributeError, KeyError, TypeError):
        return [], []
    lassos, boxes = [], []
    for shape in raw_lassos:
        xs, ys = list(shape.get("x") or []), list(shape.get("y") or [])
        if len(xs) == len(ys) >= 3:
            lassos.append(([float(v) for v in xs], [float(v) for v in ys]))
    for shape in raw_boxes:
        xs, ys = list(shape.get("x") or []), list(shape.get("y") or [])
        if len(xs) == len(ys) == 2:
            boxes.append((float(xs[0]), float(xs[1]), float(ys[0]), float(ys[1])))
    return lassos, boxes
