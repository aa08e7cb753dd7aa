"""A mixture at the final model's scale: how often each cluster's tokens are seen.

A proxy trains on a few hundred thousand tokens and never exhausts a cluster; the model the mixture
is for trains on far more, and a small cluster given a large weight is then repeated:
  epochs_i = w_i * final_tokens / tokens_i
The final scale is resolved by `final_tokens_for`, the one rule the repetition cap
(`constraints.constraints_for`), the search report and the dashboard all read:
  mixture.final_tokens when set, else export.tokens, or the corpus's training tokens when the
  export is larger (a corpus smaller than its export must repeat every cluster; the cap then keeps
  any cluster from repeating more than max_epochs times as often as the corpus does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from climb_core.config import ClimbConfig, MixtureConfig


def final_tokens_for(mix: MixtureConfig, export_tokens: int, cluster_tokens=None, used=None) -> int:
    """The final scale in tokens. `used` (a boolean mask over `cluster_tokens`) names the clusters
    the corpus's size counts (the excluded ones hold no share, so they do not); 0 when neither
    mixture.final_tokens nor export_tokens is set."""
    if mix.final_tokens > 0:
        return int(mix.final_tokens)
    if export_tokens <= 0 or cluster_tokens is None:
        return max(int(export_tokens), 0)
    tokens = np.asarray(cluster_tokens, dtype=np.float64)
    if used is not None:
        tokens = tokens[np.asarray(used, dtype=bool)]
    # A corpus of no tokens would divide by zero in the cap; 1 keeps every capped share at zero.
    return int(min(float(export_tokens), float(tokens.sum()) or 1.0))


def cluster_epochs(weights, cluster_tokens, final_tokens: int, cluster_ids=None, labels=None) -> list[dict[str, Any]]:
    """Per cluster: weight, training tokens and epochs at `final_tokens` (None where a weighted
    cluster has no tokens at all: it cannot be trained on however often it is repeated)."""
    w = np.asarray(weights, dtype=np.float64)
    t = np.asarray(cluster_tokens, dtype=np.float64)
    if w.shape != t.shape:
        raise ValueError(f"{len(w)} weights for {len(t)} clusters' token counts")
    ids = list(range(len(w))) if cluster_ids is None else [int(c) for c in cluster_ids]
    names = [""] * len(w) if labels is None else [str(x) for x in labels]
    out = []
    for i in range(len(w)):
        if w[i] <= 0:
            ep: float | None = 0.0
        elif t[i] <= 0:
            ep = None
        else:
            ep = float(w[i] * final_tokens / t[i])
        out.append({"cluster_id": ids[i], "label": names[i], "weight": float(w[i]), "tokens": int(t[i]),
                    "epochs": ep})
    return out


def _tokens_of(row: dict[str, Any]) -> list[int] | None:
    tokens = row.get("cluster_tokens")
    if tokens is None or isinstance(tokens, float):  # a NULL column reads as NaN
        return None
    return [int(x) for x in tokens]


def scale_of_row(row: dict[str, Any], config: ClimbConfig, weights=None) -> dict[str, Any]:
    """The final scale of a search's row, with the epochs of `weights` (default: its final weights)."""
    ids = [int(c) for c in row["cluster_ids"]]
    tokens = _tokens_of(row)
    mix = config.mixture
    used = None if tokens is None else [c not in {int(x) for x in mix.excluded} for c in ids]
    n = final_tokens_for(mix, config.export.tokens, tokens, used)
    if mix.final_tokens > 0:
        source = "mixture.final_tokens"
    elif tokens is not None and n < config.export.tokens:
        source = "the corpus's training tokens (smaller than export.tokens)"
    else:
        source = "export.tokens"
    if weights is None:
        fw = row.get("final_weights")
        weights = None if fw is None or isinstance(fw, float) else list(fw)
    clusters = None
    if weights is not None and tokens is not None and len(weights) == len(tokens):
        clusters = cluster_epochs(weights, tokens, n, ids, row.get("cluster_labels"))
    return {"tokens": n, "source": source, "max_epochs": float(mix.max_epochs), "cluster_tokens": tokens,
            "epochs": None if clusters is None else [c["epochs"] for c in clusters], "clusters": clusters}


def search_final_scale(ws, search_id: str, weights=None) -> dict[str, Any]:
    """A search's final scale: `tokens` (the resolved final tokens), `source` (which setting gave
    them), `max_epochs`, `cluster_tokens`, and for `weights` (default: the search's final mixture)
    `epochs` and `clusters` (cluster_id, label, weight, tokens, epochs); those two are None before
    the tokens stage has counted the clusters or while the search has no final mixture."""
    import json

    from climb_core.config import config_from_dict
    from climb_core.search.records import load_search

    row = load_search(ws, search_id)
    cfg = json.loads(row["config_json"]) if isinstance(row.get("config_json"), str) else {}
    return scale_of_row(row, config_from_dict(cfg) if cfg else ClimbConfig(), weights)


__all__ = ["cluster_epochs", "final_tokens_for", "scale_of_row", "search_final_scale"]
