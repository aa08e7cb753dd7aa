"""The map's backdrop: every point in view drawn on the server into one image.

A browser draws a plotly WebGL trace at roughly 25 ms per thousand points on a 2-core CPU without a
GPU, so a million markers take many seconds; an image of the same points costs the browser one image
decode. The Map page therefore draws every point in view as this image and, on top of it, a
per-cluster sample as markers (hover previews, point selection). A lasso or box stands for every
document inside it either way (`queries.map_docs_in_region`).

Each pixel takes the colour of one of its points, picked at random with a fixed seed (what drawing
the points in a shuffled order would show), and an opacity that grows with the log of how many
points fell on it, so dense cores read as dense.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

# About the plot area of the Map page in Streamlit's wide layout (640 px high): one image pixel per
# screen pixel, so single points stay sharp without zooming.
WIDTH, HEIGHT = 1200, 640
# Below this many points a single pixel per point reads as faint dust: points are drawn 2x2 instead.
SPARSE_POINTS = 300_000


@dataclass(frozen=True)
class Backdrop:
    """An image data URI and the data rectangle it covers (x0, x1, y0, y1)."""
    uri: str
    extent: tuple[float, float, float, float]


def hex_to_rgb(colors: list[str]) -> np.ndarray:
    """'#RRGGBB' strings as a (n, 3) uint8 array."""
    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=np.uint8).reshape(-1, 3)


def colorscale_lut(stops: list[str], n: int = 256) -> np.ndarray:
    """An (n, 3) uint8 lookup table interpolating evenly spaced '#RRGGBB' stops (a plotly scale)."""
    rgb = hex_to_rgb(stops).astype(np.float64)
    at = np.linspace(0, 1, len(stops))
    t = np.linspace(0, 1, n)
    return np.stack([np.interp(t, at, rgb[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def extent_of(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    x0, x1, y0, y1 = float(np.min(x)), float(np.max(x)), float(np.min(y)), float(np.max(y))
    # a degenerate axis (one point, or all on a line) still needs a non-empty rectangle
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    return x0, x1, y0, y1


def rasterise(x: np.ndarray, y: np.ndarray, rgb: np.ndarray, extent: tuple[float, float, float, float],
              width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """An (height, width, 4) RGBA image of the points (row 0 at the top, i.e. at y1)."""
    x0, x1, y0, y1 = extent
    n = len(x)
    ix = np.clip(((np.asarray(x, np.float64) - x0) / (x1 - x0) * width).astype(np.int64), 0, width - 1)
    iy = np.clip(((y1 - np.asarray(y, np.float64)) / (y1 - y0) * height).astype(np.int64), 0, height - 1)
    count = np.bincount(iy * width + ix, minlength=width * height)
    owner = np.full(width * height, -1, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n)
    offsets = [(0, 0)] if n >= SPARSE_POINTS else [(0, 0), (1, 0), (0, 1), (1, 1)]
    ix, iy = ix[order], iy[order]
    for dx, dy in offsets:  # later writes win: a random point's colour per pixel
        owner[np.minimum(iy + dy, height - 1) * width + np.minimum(ix + dx, width - 1)] = order
    img = np.zeros((width * height, 4), dtype=np.uint8)
    hit = owner >= 0
    img[hit, :3] = rgb[owner[hit]]
    density = np.log1p(np.maximum(count, 1)) / np.log1p(max(int(count.max()), 1))
    img[hit, 3] = (120 + 135 * density[hit]).astype(np.uint8)
    return img.reshape(height, width, 4)


def image_data_uri(img: np.ndarray) -> str:
    """Lossless WebP: a 1M-point map is ~0.34 MB against PNG's ~0.8 MB, which the browser receives
    and decodes in ~0.1 s less (bench_map_render.py); `method=1` encodes it in ~0.2 s."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, "RGBA").save(buf, "WEBP", lossless=True, method=1)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def backdrop(x: np.ndarray, y: np.ndarray, rgb: np.ndarray, seed: int = 0) -> Backdrop | None:
    """The backdrop image of these points, or None when there are none."""
    if len(x) == 0:
        return None
    extent = extent_of(x, y)
    return Backdrop(image_data_uri(rasterise(x, y, rgb, extent, seed=seed)), extent)
