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
import plotly.graph_objects as go
import streamlit as st

from climb_core import queries
from climb_core.workspace import Workspace, WorkspaceError

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


@st.cache_data(show_spinner=False, max_entries=6)
def cached_map_figure(root: str, catalogue: tuple, fields: tuple[str, ...], color_by: str, show_pruned: bool,
                      highlight: tuple[int, ...], hover_max: int):
    """The map figure and its per-trace doc_idx, built once per catalogue version and view settings
    (a box or lasso selection reruns the page; it must not rebuild 100k hover labels)."""
    df = cached_map_points(root, catalogue, fields)
    if not show_pruned:
        df = df[df["state"] != "pruned"]
    return map_figure(df, color_by, list(highlight), hover_max=hover_max), len(df)


def clear_caches() -> None:
    cached_map_figure.clear()
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


def status_badge(status: str | None) -> str:
    """Markdown: a material icon and the status word."""
    icons = {"done": ":green[:material/check_circle:]", "running": ":blue[:material/progress_activity:]",
             "failed": ":red[:material/error:]", "pending": ":gray[:material/radio_button_unchecked:]",
             "cancelled": ":orange[:material/cancel:]", "cancelling": ":orange[:material/cancel:]",
             "stopped": ":orange[:material/pause_circle:]", "interrupted": ":orange[:material/pause_circle:]", "skipped": ":gray[:material/skip_next:]"}
    return f"{icons.get(str(status), ':gray[:material/circle:]')} {md(status)}"


# ------------------------------------------------------------------------------------ the map
def map_figure(df: pd.DataFrame, color_by: str = "cluster", highlight: list[int] | None = None,
               hover_max: int = 20_000, max_categories: int = 40, seed: int = 0) -> tuple[go.Figure, list[np.ndarray]]:
    """A WebGL scatter of the map points; returns the figure and, per trace, the doc_idx of its points
    (so a selection's (curve_number, point_index) maps back to documents).

    Hover previews are HTML-escaped and sent for at most `hover_max` points (a random sample); the
    others show their cluster label only, which keeps the page light at 100k+ points.
    """
    n = len(df)
    rng = np.random.default_rng(seed)
    sample = rng.choice(n, min(n, hover_max), replace=False) if n else np.zeros(0, dtype=int)
    # Escape each distinct label once; previews only for the sampled points.
    label_codes, label_uniques = pd.factorize(df["label"].fillna("(no cluster)").astype(str))
    esc_labels = np.array([esc(preview(u, 60)) for u in label_uniques] or [""], dtype=object)
    in_trace_name = color_by == "cluster"  # the trace name already carries the label
    hover = np.full(n, "", dtype=object) if in_trace_name else esc_labels[label_codes]
    prev = df["preview"].to_numpy()[sample]
    sampled = np.array([esc(preview(p, 80)) for p in prev], dtype=object)
    hover[sample] = sampled if in_trace_name else hover[sample] + "<br>" + sampled
    name_tpl = "<b>%{fullData.name}</b><br>" if in_trace_name else ""
    doc_idx = df["doc_idx"].to_numpy()
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    fig = go.Figure()
    curves: list[np.ndarray] = []
    marker_size = 4 if n < 20_000 else 2.5

    def add(mask, name, color=None, **marker):
        fig.add_trace(go.Scattergl(
            x=x[mask], y=y[mask], mode="markers", name=esc(preview(name, 40)), hovertext=hover[mask],
            hovertemplate=name_tpl + "%{hovertext}<extra></extra>",
            marker=dict(size=marker_size, color=color, opacity=0.75, **marker)))
        curves.append(doc_idx[mask])

    if color_by == "quality":
        q = df["quality"].fillna(0).to_numpy()
        fig.add_trace(go.Scattergl(
            x=x, y=y, mode="markers", name="documents", hovertext=hover,
            hovertemplate="%{hovertext}<br>quality %{marker.color:.3f}<extra></extra>",
            marker=dict(size=marker_size, color=q, colorscale="Viridis", cmin=0, cmax=1, opacity=0.8,
                        colorbar=dict(title="quality", thickness=12))))
        curves.append(doc_idx)
    else:
        if color_by == "cluster":
            key = df["cluster_id"].fillna(-1).astype(np.int64).astype(str)
            firsts = df.drop_duplicates("cluster_id")
            names = {str(int(c)) if c == c else "-1": f"{int(c)}: {lbl}" if c == c else "no cluster"
                     for c, lbl in zip(firsts["cluster_id"], firsts["label"].fillna(""))}
        else:
            key = df[color_by].fillna("(none)").astype(str)
            names = {}
        counts = key.value_counts()
        top = list(counts.index[:max_categories])
        if len(counts) > max_categories:
            key = key.where(key.isin(top), "(other)")
            top.append("(other)")
        keys = key.to_numpy()
        pruned = df["state"].fillna("").to_numpy() == "pruned" if "state" in df else np.zeros(n, bool)
        for i, k in enumerate(top):
            mask = keys == k
            name = names.get(k, k)
            if color_by == "cluster" and pruned[mask].all() and mask.any():
                add(mask, f"{name} (pruned)", "#BBBBBB")
            else:
                add(mask, name, PALETTE[i % len(PALETTE)])
    if highlight:
        mask = np.isin(doc_idx, np.asarray(highlight))
        if mask.any():
            rows = np.flatnonzero(mask)
            ring_hover = [f"{esc_labels[label_codes[r]]}<br>{esc(preview(p, 80))}" if i < hover_max
                          else esc_labels[label_codes[r]]
                          for i, (r, p) in enumerate(zip(rows, df["preview"].to_numpy()[rows]))]
            fig.add_trace(go.Scattergl(
                x=x[mask], y=y[mask], mode="markers", name="text matches", hovertext=ring_hover,
                hovertemplate="%{hovertext}<extra></extra>",
                marker=dict(size=9, color="rgba(0,0,0,0)", line=dict(color="#000000", width=1.5))))
            curves.append(doc_idx[mask])
    fig.update_layout(height=640, margin=dict(l=0, r=0, t=10, b=0), dragmode="lasso", uirevision="map",
                      legend=dict(itemsizing="constant", font=dict(size=10)), hovermode="closest",
                      xaxis=dict(showticklabels=False, zeroline=False, showgrid=False),
                      yaxis=dict(showticklabels=False, zeroline=False, showgrid=False))
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
