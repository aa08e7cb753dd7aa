"""The Map page at scale: distinct colours for 1000 clusters, the per-cluster sample it draws, and
selections on a sampled map mapping back to every document inside the lasso."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from climb_core import queries
from dashboard.widgets import PRUNED_COLOR, _srgb_to_oklab, distinct_colors, map_figure
from tests.dashboard.test_pages import n_values, no_errors, open_page, widget


def _coords(ws) -> pd.DataFrame:
    return ws.query_df("""SELECT m.doc_idx, m.x, m.y, dc.cluster_id, c.state FROM map_coords m
                          LEFT JOIN doc_clusters dc USING (doc_idx) LEFT JOIN clusters c USING (cluster_id)
                          ORDER BY m.doc_idx""")


def test_1000_clusters_get_1000_distinct_colours():
    rng = np.random.default_rng(0)
    k = 1000
    cid = np.repeat(np.arange(k), 3)
    df = pd.DataFrame({"doc_idx": np.arange(len(cid)), "x": rng.normal(size=len(cid)), "y": rng.normal(size=len(cid)),
                       "cluster_id": cid, "label": [f"topic {c}" for c in cid], "state": "active",
                       "quality": 0.5, "preview": "some text", "cluster_rank": cid})
    fig, curves = map_figure(df, "cluster", hover_max=500)
    colour_of: dict[int, set] = {}
    for trace, docs in zip(fig.data, curves):
        colors = np.broadcast_to(np.asarray(trace.marker.color, dtype=object), len(docs))
        for d, col in zip(docs, colors):
            colour_of.setdefault(int(cid[d]), set()).add(col)
    assert len(colour_of) == k and all(len(c) == 1 for c in colour_of.values())  # one colour per cluster
    used = [next(iter(c)) for c in colour_of.values()]
    assert len(set(used)) == k and PRUNED_COLOR not in used
    # not just different hex codes: every pair differs by more than a just-noticeable step (OKLab ~0.02)
    lab = _srgb_to_oklab(np.array([[int(h[i:i + 2], 16) / 255 for i in (1, 3, 5)] for h in distinct_colors(k)]))
    d = np.linalg.norm(lab[:, None] - lab[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert d.min() > 0.02
    # labels at the largest clusters' centres, escaped like every other plotly label
    (labels,) = [t for t in fig.data if t.mode == "text"]
    assert len(labels.text) == 60


def test_sample_keeps_every_cluster_in_proportion(ws):
    full = _coords(ws)
    df, n_view = queries.map_sample(ws, 60, ["domain"])
    assert n_view == len(full) > 200 and len(df) == 60
    assert set(df["cluster_id"]) == set(full["cluster_id"])
    share = df["cluster_id"].value_counts() / len(df)
    truth = full["cluster_id"].value_counts() / len(full)
    assert (share - truth).abs().max() < 0.05  # density within clusters survives the sample
    assert df["cluster_rank"].notna().all() and "meta.domain" in df
    # the doc_idx asked for are always drawn; a region holding fewer than the budget is drawn in full
    df2, _ = queries.map_sample(ws, 60, include=[0, 1, 2])
    assert {0, 1, 2} <= set(df2["doc_idx"])
    x0, x1, y0, y1 = full["x"].quantile(0.2), full["x"].quantile(0.8), full["y"].min(), full["y"].max()
    inside = full[(full.x >= x0) & (full.x <= x1)]
    zoomed, n_zoom = queries.map_sample(ws, 1000, region=(x0, x1, y0, y1))
    assert n_zoom == len(zoomed) == len(inside) and set(zoomed["doc_idx"]) == set(inside["doc_idx"])
    # colours follow the cluster, not the view
    ranks = pd.concat([df, zoomed])[["cluster_id", "cluster_rank"]].drop_duplicates()
    assert ranks["cluster_id"].is_unique


def test_lasso_region_is_every_document_inside(ws):
    full = _coords(ws)
    x, y = full["x"].to_numpy(), full["y"].to_numpy()
    cx, cy, r = np.median(x), np.median(y), 0.5 * (x.max() - x.min())
    tri = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx, cy + r]])
    # independent check: a point is inside a counter-clockwise triangle when it is left of every edge
    left = [(b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]) > 0 for a, b in zip(tri, np.roll(tri, -1, 0))]
    expected = set(full["doc_idx"][np.logical_and.reduce(left)])
    got = queries.map_docs_in_region(ws, lassos=[(tri[:, 0].tolist(), tri[:, 1].tolist())])
    assert 20 < len(expected) < len(full) and set(got) == expected
    box = (cx - r / 2, cx + r / 2, cy - r / 2, cy + r / 2)
    in_box = set(full["doc_idx"][(x >= box[0]) & (x <= box[1]) & (y >= box[2]) & (y <= box[3])])
    both = queries.map_docs_in_region(ws, lassos=[(tri[:, 0].tolist(), tri[:, 1].tolist())], boxes=[box])
    assert set(both) == expected | in_box
    from climb_core.pipeline import edits

    inside_cluster = int(full.set_index("doc_idx").loc[sorted(expected), "cluster_id"].mode()[0])
    edits.prune_clusters(ws, [inside_cluster], reason="test")
    pruned = set(full["doc_idx"][full["cluster_id"] == inside_cluster])
    assert pruned & expected
    unpruned = queries.map_docs_in_region(ws, lassos=[(tri[:, 0].tolist(), tri[:, 1].tolist())], show_pruned=False)
    assert set(unpruned) == expected - pruned


def test_points_in_a_concave_lasso():
    u = ([0, 3, 3, 2, 2, 1, 1, 0], [0, 0, 3, 3, 1, 1, 3, 3])  # a U: the notch (1..2, 1..3) is outside
    px = np.array([0.5, 2.5, 1.5, 1.5, 1.5, 4.0, -0.1])
    py = np.array([2.0, 2.0, 0.5, 2.0, 2.9, 1.0, 1.0])
    assert queries.points_in_polygon(px, py, *u).tolist() == [True, True, True, False, False, False, False]


def test_map_page_draws_its_budget_and_says_so(ws, monkeypatch):
    at = open_page(ws, "map", monkeypatch)
    widget(at.number_input, "Points drawn").set_value(100).run()
    no_errors(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sum(n_values(t["x"]) for t in fig["data"] if t.get("mode") != "text") == 100
    assert len(fig["layout"]["images"]) == 1  # every other point is in the backdrop image
    n = queries.corpus_overview(ws)["map_points"]
    assert any(f"100 of {n} documents drawn" in c.value for c in at.caption)


def test_cluster_labels_at_centres_are_escaped():
    hostile = '<img src=x onerror="window.__xss=3"> legal statutes'
    df = pd.DataFrame({"doc_idx": [0, 1, 2, 3], "x": [0.0, 2.0, 10.0, 11.0], "y": [0.0, 2.0, 5.0, 5.0],
                       "cluster_id": [4, 4, 9, 9], "label": [hostile, hostile, "plain", "plain"], "state": "active",
                       "quality": 0.5, "preview": "text"})
    fig, _ = map_figure(df, "cluster")
    (labels,) = [t for t in fig.data if t.mode == "text"]
    notes = {t: (x, y) for t, x, y in zip(labels.text, labels.x, labels.y)}
    assert notes["9: plain"] == (10.5, 5.0)  # at the cluster's centre
    (text,) = [t for t in notes if t.startswith("4: ")]
    assert "<img" not in text and text.startswith("4: &lt;img src=x onerror=&quot;")


def _backdrop_pixels(fig) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    import base64
    import io

    from PIL import Image

    (image,) = fig.layout.images
    head, data = image.source.split(",", 1)
    assert head.startswith("data:image/")
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGBA"))
    return rgba, (image.x, image.x + image.sizex, image.y - image.sizey, image.y)


def _pixel_of(x, y, shape, extent):
    h, w = shape[:2]
    x0, x1, y0, y1 = extent
    return (np.clip(((y1 - y) / (y1 - y0) * h).astype(int), 0, h - 1),
            np.clip(((x - x0) / (x1 - x0) * w).astype(int), 0, w - 1))


def test_backdrop_holds_every_point_in_view(ws):
    """A sampled map draws every point in view into its backdrop image: each point's pixel is
    painted, and the image covers the axes (plotly's autorange would only see the sample)."""
    full = _coords(ws)
    df, n_view = queries.map_sample(ws, 60)
    view = queries.map_view_points(ws)
    assert len(view["x"]) == n_view == len(full) > 60
    fig, _ = map_figure(df, "cluster", view=view)
    rgba, extent = _backdrop_pixels(fig)
    rows, cols = _pixel_of(full["x"].to_numpy(), full["y"].to_numpy(), rgba.shape, extent)
    assert (rgba[rows, cols, 3] > 0).all()
    assert (rgba[..., 3] > 0).mean() < 0.5  # points, not a filled rectangle
    assert fig.layout.xaxis.range[0] <= full["x"].min() and fig.layout.xaxis.range[1] >= full["x"].max()
    assert fig.layout.yaxis.range[0] <= full["y"].min() and fig.layout.yaxis.range[1] >= full["y"].max()
    # pruned clusters hidden: the backdrop leaves their documents out too
    from climb_core.pipeline import edits

    pruned = int(full["cluster_id"].value_counts().index[0])
    edits.prune_clusters(ws, [pruned], reason="test")
    shown = queries.map_view_points(ws, show_pruned=False)
    assert len(shown["x"]) == int((full["cluster_id"] != pruned).sum())
    assert not shown["pruned"].any() and queries.map_view_points(ws)["pruned"].sum() == (full["cluster_id"] == pruned).sum()


@pytest.mark.parametrize("color_by", ["cluster", "quality", "meta.domain"])
def test_backdrop_uses_the_markers_colours(color_by):
    """Two far-apart groups: the image's pixels at each group take the colour its markers have."""
    rng = np.random.default_rng(0)
    n = 400
    group = np.repeat([0, 1], n // 2)
    df = pd.DataFrame({"doc_idx": np.arange(n), "x": group * 100 + rng.normal(0, 1, n), "y": rng.normal(0, 1, n),
                       "cluster_id": group + 3, "cluster_rank": group, "label": "topic", "state": "active",
                       "quality": np.where(group == 0, 0.1, 0.9), "preview": "text",
                       "meta.domain": np.where(group == 0, "law", "code")})
    view = {"x": df["x"].to_numpy(np.float32), "y": df["y"].to_numpy(np.float32),
            "cluster_rank": group.astype(np.int32), "pruned": np.zeros(n, bool),
            "quality": df["quality"].to_numpy(np.float32), "meta": df["meta.domain"].to_numpy(object)}
    fig, curves = map_figure(df.iloc[::10].reset_index(drop=True), color_by, view=view)
    rgba, extent = _backdrop_pixels(fig)
    rows, cols = _pixel_of(view["x"], view["y"], rgba.shape, extent)
    seen = [set(map(tuple, rgba[rows[group == g], cols[group == g], :3])) for g in (0, 1)]
    assert all(len(s) == 1 for s in seen) and seen[0] != seen[1]  # one colour per group, two groups apart
    if color_by == "quality":
        from dashboard.map_backdrop import colorscale_lut
        import plotly.colors

        lut = colorscale_lut(plotly.colors.sequential.Viridis)
        assert seen[0] == {tuple(lut[round(0.1 * 255)])} and seen[1] == {tuple(lut[round(0.9 * 255)])}
    else:
        # the colour plotly paints each marker, by the group of its document
        painted: list[set] = [set(), set()]
        for t, docs in zip(fig.data, curves):
            if not len(docs):
                continue
            if color_by == "cluster":  # numbers on a stepped colour scale: value v is step int(v)
                values = np.broadcast_to(np.asarray(t.marker.color, dtype=float), len(docs))
                colours = [t.marker.colorscale[2 * int(v)][1] for v in values]
            else:
                colours = [t.marker.color] * len(docs)
            for d, c in zip(docs, colours):
                painted[group[d]].add(tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)))
        assert painted == seen


def test_markers_are_svg_up_to_a_few_thousand_then_webgl():
    from dashboard.widgets import SVG_MAX_POINTS

    rng = np.random.default_rng(0)
    for n, kind in ((SVG_MAX_POINTS, "scatter"), (SVG_MAX_POINTS + 1, "scattergl")):
        df = pd.DataFrame({"doc_idx": np.arange(n), "x": rng.normal(size=n), "y": rng.normal(size=n),
                           "cluster_id": np.arange(n) % 7, "label": "topic", "state": "active", "quality": 0.5,
                           "preview": "text"})
        fig, curves = map_figure(df, "cluster", hover_max=100, highlight=[0, 1])
        markers = [t for t in fig.data if t.mode != "text"]
        assert {t.type for t in markers[:-1]} == {kind}  # the last one rings the 2 highlighted documents
        assert markers[-1].type == "scatter" and sum(len(c) for c in curves) == n + 2
