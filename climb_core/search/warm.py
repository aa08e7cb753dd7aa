"""Warm starts: runs of earlier (or imported) searches as training data for a new search's predictor.

A warm run is copied into the new search when it is created, as a row of `proxy_runs` with round 0,
purpose 'warm' and status 'done', naming the run it came from (`source_search`, `source_run`) and
how its weights were carried over (`mapping`). It is never trained, is not counted in the budget,
and is evidence for the predictor only: the search's answer (`proposals.conclude`) is chosen among
its own runs, because a warm run's score may be on another scale.

Carrying weights to the current clusters follows the edit lineage the workspace keeps
(`pipeline/edits.py`): the `clusters` table's state, `merged_into`, the split edges in
`cluster_edges`, and for clusters an undone edit created, that edit's `edit_cluster_before` rows:
  active            the weight stays (a run whose clusters are all still active is "reused");
  merged            the weight goes to the cluster it was merged into (the members' weights add);
  split             the weight is shared among the children by their token counts;
  pruned            the weight is lost; a run that loses at most PRUNE_KEEP of it is kept and
                    renormalised, else dropped (a pruned cluster's data is no longer in any mixture,
                    so a run that leaned on it says little about the mixtures left);
  restored, undone  the clusters table is back in its earlier state, so the earlier mapping applies;
                    a cluster that only existed through an undone merge goes back to its members (by
                    their token counts), one from an undone split to the cluster it was split from.
Runs mapped any way but the first are "remapped".

Settings: warm runs must have been scored on the same targets with the same proxy settings (with
proxy.final_repetition, the same final scale too: it sets the proxies' pool sizes). With
`warm_start_any`, other sources are taken anyway and each gets a per-source offset: its scores are
centred on its own mean and moved to the mean of the search's comparable scores (its own runs, or
warm runs from compatible sources, else 0). The offset corrects a shift between two proxies' score
scales (a larger model's loss is lower everywhere), not a change of scale; the alternative, a
one-hot source feature, would not fit the mixing-law predictor, whose inputs are mixture weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from climb_core.catalogue.workspace import Workspace
from climb_core.search.records import SearchError, finished_rows

# A run keeps at most this much weight on clusters since pruned; more, and it is dropped.
PRUNE_KEEP = 0.05
# Proxy settings that do not change a run's score: where and how fast it ran.
_PROXY_IGNORED = {"device", "threads", "command_timeout_s", "dtype"}
# Target fields that only name a target.
_TARGET_IGNORED = {"name"}


class WarmStartError(SearchError):
    """A warm start that cannot be used: an unknown or unfinished search, other targets or proxy settings."""


# ------------------------------------------------------------------------------------------- lineage
@dataclass
class Mapping:
    """Where one old cluster's weight goes: {current active cluster: share}, and the share lost to prunes."""
    to: dict[int, float]
    lost: float
    same: bool  # the cluster itself, still active


class Lineage:
    """The workspace's clusters and edit log, read once; `resolve` maps an old cluster to the current ones."""

    def __init__(self, ws: Workspace):
        with ws.connect() as con:
            # Token counts from the clusters' current documents (what the search's prior estimates from),
            # else the clusters' recorded size.
            cl = con.execute("""SELECT c.cluster_id, c.state, c.merged_into, c.created_edit,
                                       coalesce(t.tokens, c.size_tokens, c.size_docs, 0)
                                FROM clusters c LEFT JOIN (
                                    SELECT dc.cluster_id, sum(s.n_tokens_est) AS tokens FROM doc_clusters dc
                                    JOIN doc_stats s USING (doc_idx) GROUP BY dc.cluster_id) t USING (cluster_id)""").fetchall()
            edges = con.execute("SELECT parent_id, child_id FROM cluster_edges WHERE op = 'split'").fetchall()
            born = con.execute("""SELECT b.cluster_id, e.edit_id, e.op, e.undone FROM edit_cluster_before b
                                  JOIN edits e USING (edit_id) WHERE NOT b.existed ORDER BY e.edit_id""").fetchall()
            before = con.execute("""SELECT b.edit_id, b.cluster_id,
                                        coalesce(json_extract(b.row_json, '$.size_tokens')::BIGINT, 0)
                                    FROM edit_cluster_before b WHERE b.existed""").fetchall()
        self.rows = {int(c): {"state": s, "merged_into": None if m is None else int(m),
                              "created": None if e is None else int(e), "tokens": float(t or 0)}
                     for c, s, m, e, t in cl}
        self.children: dict[int, list[int]] = {}
        for p, c in edges:
            self.children.setdefault(int(p), []).append(int(c))
        # cluster id -> the edits that created a cluster of that id, oldest first
        self.born: dict[int, list[tuple[int, str, bool]]] = {}
        for c, e, op, undone in born:
            self.born.setdefault(int(c), []).append((int(e), op, bool(undone)))
        self.consumed: dict[int, list[tuple[int, float]]] = {}
        for e, c, t in before:
            self.consumed.setdefault(int(e), []).append((int(c), float(t or 0)))

    def resolve(self, cid: int, created: int | None = None, depth: int = 0) -> Mapping:
        """Where the weight of old cluster `cid` (created by edit `created`, when known) goes now."""
        if depth > 64:  # lineage is acyclic; a damaged catalogue must not loop forever
            return Mapping({}, 1.0, False)
        row = self.rows.get(int(cid))
        if row is None or (created is not None and row["created"] is not None and row["created"] != created):
            return self._undone(int(cid), created, depth)
        state = row["state"]
        if state == "active":
            return Mapping({int(cid): 1.0}, 0.0, True)
        if state == "pruned":
            return Mapping({}, 1.0, False)
        if state == "merged" and row["merged_into"] is not None:
            return self._spread([(row["merged_into"], 1.0)], depth)
        if state == "split" and self.children.get(int(cid)):
            kids = self.children[int(cid)]
            return self._spread(self._by_tokens([(k, self.rows.get(k, {}).get("tokens", 0.0)) for k in kids]), depth)
        return Mapping({}, 1.0, False)

    def _undone(self, cid: int, created: int | None, depth: int) -> Mapping:
        """A cluster whose id no longer names it: the edit that created it was undone (its id may
        since have been given to another cluster). Its weight goes back to what that edit consumed."""
        births = [b for b in self.born.get(cid, []) if b[2] and (created is None or b[0] == created)]
        if not births:
            return Mapping({}, 1.0, False)
        edit_id, op, _ = births[-1]
        parents = [(c, t) for c, t in self.consumed.get(edit_id, []) if c != cid]
        if not parents:
            return Mapping({}, 1.0, False)
        # The parents' current token counts where they exist (a merge's members are back), else recorded ones.
        parents = [(c, self.rows.get(c, {}).get("tokens", t) or t) for c, t in parents]
        return self._spread(self._by_tokens(parents), depth)

    @staticmethod
    def _by_tokens(items: list[tuple[int, float]]) -> list[tuple[int, float]]:
        tot = sum(max(t, 0.0) for _, t in items)
        if tot <= 0:
            return [(c, 1.0 / len(items)) for c, _ in items]
        return [(c, max(t, 0.0) / tot) for c, t in items]

    def _spread(self, shares: list[tuple[int, float]], depth: int) -> Mapping:
        to: dict[int, float] = {}
        lost = 0.0
        for c, share in shares:
            m = self.resolve(c, None, depth + 1)
            lost += share * m.lost
            for k, v in m.to.items():
                to[k] = to.get(k, 0.0) + share * v
        return Mapping(to, lost, False)


@dataclass
class Carried:
    """Runs of one source carried to a search's clusters."""
    weights: np.ndarray          # (kept runs, clusters)
    keep: np.ndarray             # bool per source run
    mapping: list[str]           # per kept run: reused | remapped
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def carry_weights(lineage: Lineage, old_ids: list[int], old_created: list | None, weights: np.ndarray,
                  new_ids: list[int]) -> Carried:
    """Map each run's weights over `old_ids` onto `new_ids` (see the module docstring)."""
    col = {int(c): j for j, c in enumerate(new_ids)}
    k = len(new_ids)
    M = np.zeros((len(old_ids), k))
    lost = np.zeros(len(old_ids))
    same = np.ones(len(old_ids), dtype=bool)
    unplaced = []
    for i, c in enumerate(old_ids):
        created = None if old_created is None else old_created[i]
        m = lineage.resolve(int(c), created)
        same[i] = m.same and int(c) in col
        lost[i] = m.lost
        for t, v in m.to.items():
            if t in col:
                M[i, col[t]] += v
            else:  # active now but left out of this search's snapshot (it cannot happen for a new search)
                lost[i] += v
                unplaced.append(t)
    W = np.asarray(weights, dtype=np.float64).reshape(len(weights), len(old_ids))
    mass_lost = W @ lost
    # Weight on a changed cluster makes a run remapped; a zero weight there changes nothing.
    changed = (W[:, ~same] > 0).any(axis=1) if (~same).any() else np.zeros(len(W), dtype=bool)
    keep = mass_lost <= PRUNE_KEEP + 1e-12
    out = W @ M
    sums = out.sum(axis=1)
    keep &= sums > 0
    out = out[keep] / sums[keep, None]
    mapping = ["remapped" if c else "reused" for c in changed[keep]]
    counts = {"reused": mapping.count("reused"), "remapped": mapping.count("remapped"), "dropped": int((~keep).sum())}
    notes = []
    if counts["dropped"]:
        notes.append(f"{counts['dropped']} run(s) put more than {PRUNE_KEEP:.0%} of their weight on clusters since "
                     f"pruned (or no longer traceable) and were dropped")
    return Carried(out, keep, mapping, counts, notes)


def created_edits(value) -> list[int | None] | None:
    """searches.cluster_created as a list (None per cluster no edit created); None for a search
    recorded before the column existed. DuckDB hands a list with NULLs over as a masked array."""
    if value is None or isinstance(value, float):
        return None
    mask = np.ma.getmaskarray(value) if isinstance(value, np.ma.MaskedArray) else [v is None for v in value]
    data = np.ma.getdata(value) if isinstance(value, np.ma.MaskedArray) else value
    return [None if m or v is None or (isinstance(v, float) and np.isnan(v)) else int(v) for v, m in zip(data, mask)]


# -------------------------------------------------------------------------------------- settings
def _proxy_settings(config_json: str | None) -> dict[str, Any]:
    cfg = json.loads(config_json) if isinstance(config_json, str) and config_json else {}
    out = {k: v for k, v in (cfg.get("proxy") or {}).items() if k not in _PROXY_IGNORED}
    if cfg.get("proxy") and "final_repetition" not in out:
        out["final_repetition"] = False  # stored before the key existed: its proxies trained on whole clusters
    if out.get("final_repetition"):
        # The pools' size follows the final scale, so runs drawn for another final scale are other proxies.
        out["final scale (mixture.final_tokens, export.tokens)"] = [(cfg.get("mixture") or {}).get("final_tokens"),
                                                                    (cfg.get("export") or {}).get("tokens")]
    return out


def _targets(target_json: str | None) -> list[dict[str, Any]]:
    specs = json.loads(target_json) if isinstance(target_json, str) and target_json else []
    return sorted((json.dumps({k: v for k, v in s.items() if k not in _TARGET_IGNORED}, sort_keys=True) for s in specs))


def settings_difference(config_json: str, target_json: str, source: dict[str, Any]) -> str | None:
    """Why a source's runs are not comparable with a search of these settings; None when they are."""
    reasons = []
    if _targets(target_json) != _targets(source.get("target_json")):
        mine = [json.loads(t) for t in _targets(target_json)]
        theirs = [json.loads(t) for t in _targets(source.get("target_json"))]
        reasons.append(f"targets differ ({_short(theirs)} there, {_short(mine)} here)")
    a, b = _proxy_settings(config_json), _proxy_settings(source.get("config_json"))
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        reasons.append("proxy settings differ: " + ", ".join(f"{k} {b.get(k)!r} there, {a.get(k)!r} here" for k in diff[:6]))
    return "; ".join(reasons) or None


def _short(specs: list[dict]) -> str:
    return ", ".join(f"{s.get('kind')}:{s.get('path')}" + (f"/{s.get('metric')}" if s.get("metric") else "")
                     for s in specs) or "none"


# ------------------------------------------------------------------------------------- collecting
def _source_runs(ws: Workspace, search_id: str) -> pd.DataFrame:
    """A source's own trained runs (exploration and verification); its warm runs are its sources'."""
    return ws.query_df("""SELECT run_id, weights, seed, tokens, score, scores_json, finished_at FROM proxy_runs
                          WHERE search_id = ? AND status = 'done' AND coalesce(purpose, 'explore') <> 'warm'
                          AND score IS NOT NULL AND isfinite(score) ORDER BY round, idx""", [search_id])


def _load_source(ws: Workspace, search_id: str) -> dict[str, Any]:
    df = ws.query_df("SELECT * FROM searches WHERE search_id = ?", [search_id])
    if df.empty:
        raise WarmStartError(f"--warm-start {search_id}: no such search in {ws.root}; `climb runs {ws.root}` lists them")
    return df.iloc[0].to_dict()


def plan_warm_start(ws: Workspace, config_json: str, target_json: str, new_ids: list[int], sources: list[str],
                    any_settings: bool = False, lineage: Lineage | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The warm runs a new search over `new_ids` gets from `sources`, and a report of how each was carried.

    Returns (rows for `proxy_runs` without search_id/run_id/idx, report). Raises WarmStartError when a
    source is unknown, has no finished run, or (without `any_settings`) was scored differently."""
    lineage = lineage or Lineage(ws)
    frames, report = [], {"sources": [], "n_warm": 0, "reused": 0, "remapped": 0, "dropped": 0,
                          "prune_keep": PRUNE_KEEP}
    for sid in dict.fromkeys(sources):
        src = _load_source(ws, sid)
        runs = _source_runs(ws, sid)
        if runs.empty:
            raise WarmStartError(f"--warm-start {sid}: the search has no finished proxy run to learn from")
        why = settings_difference(config_json, target_json, src)
        if why and not any_settings:
            raise WarmStartError(f"--warm-start {sid}: its runs are not comparable with this search: {why}. "
                                 f"Pass --warm-start-any to use them anyway (each such source then gets a score offset)")
        created = created_edits(src.get("cluster_created"))
        carried = carry_weights(lineage, [int(c) for c in src["cluster_ids"]], created,
                                np.array([list(w) for w in runs["weights"]], dtype=np.float64), new_ids)
        kept = runs[carried.keep].reset_index(drop=True)
        frames.append(pd.DataFrame({
            "weights": [list(map(float, w)) for w in carried.weights], "seed": kept["seed"].astype("int64"),
            "tokens": kept["tokens"], "score": kept["score"].astype(float), "scores_json": kept["scores_json"],
            "finished_at": kept["finished_at"], "source_search": sid, "source_run": kept["run_id"],
            "mapping": carried.mapping}))
        entry = {"search_id": sid, "name": src.get("name"), "strategy": src.get("strategy"), **carried.counts,
                 "offset": bool(why), "difference": why, "notes": carried.notes}
        report["sources"].append(entry)
        for key in ("reused", "remapped", "dropped"):
            report[key] += carried.counts[key]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    report["n_warm"] = len(rows)
    return rows, report


def describe_warm(report: dict[str, Any]) -> list[str]:
    """Lines for a person: per source, how many runs were reused, remapped and dropped."""
    out = []
    for s in report.get("sources", []):
        line = (f"warm start from {s['search_id']} ({s.get('strategy')}): {s['reused']} run(s) reused, "
                f"{s['remapped']} remapped to the current clusters, {s['dropped']} dropped")
        if s.get("offset"):
            line += f"; scored differently ({s['difference']}), so its scores get an offset"
        out.append(line)
    return out


# ------------------------------------------------------------------------------- the predictor's data
def training_runs(ws: Workspace, search_id: str, warm: dict[str, Any] | None,
                  before_round: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What a search's predictor fits on: its warm runs (offset where their source's settings differ),
    then its own finished exploration runs, in (round, idx) order (deterministic, for exact resumes)."""
    rows = finished_rows(ws, search_id, "weights, score, purpose, source_search", ("explore", "warm"), before_round)
    if not rows:
        return np.zeros((0, 0)), np.zeros(0)
    X = np.array([r[0] for r in rows], dtype=np.float64)
    y = np.array([r[1] for r in rows], dtype=np.float64)
    offset = {s["search_id"] for s in (warm or {}).get("sources", []) if s.get("offset")}
    if offset:
        src = np.array([r[3] if r[2] == "warm" else None for r in rows], dtype=object)
        shifted = np.isin(src, list(offset))
        ref = y[~shifted].mean() if (~shifted).any() else 0.0
        for s in offset:
            m = src == s
            if m.any():
                y[m] = y[m] - y[m].mean() + ref
    return X, y


def warm_info(row: dict[str, Any]) -> dict[str, Any] | None:
    raw = row.get("warm_json")
    return json.loads(raw) if isinstance(raw, str) and raw else None


def warm_offers(ws: Workspace) -> pd.DataFrame:
    """Finished searches whose runs can be carried to the current active clusters, with the counts
    (for the dashboard's offer after an edit). Searches on exactly the current clusters are listed too,
    with every run reused."""
    searches = ws.query_df("SELECT search_id, name, strategy, cluster_ids, cluster_created, created_at FROM searches "
                           "WHERE status = 'done' ORDER BY created_at DESC")
    cols = ["search_id", "name", "strategy", "runs", "reused", "remapped", "dropped", "clusters_changed"]
    if searches.empty:
        return pd.DataFrame(columns=cols)
    new_ids = [int(r[0]) for r in ws.query_df("SELECT cluster_id FROM clusters WHERE state = 'active' "
                                              "ORDER BY cluster_id").itertuples(index=False)]
    lineage = Lineage(ws)
    out = []
    for s in searches.to_dict("records"):
        runs = _source_runs(ws, s["search_id"])
        if runs.empty:
            continue
        created = created_edits(s.get("cluster_created"))
        c = carry_weights(lineage, [int(x) for x in s["cluster_ids"]], created,
                          np.array([list(w) for w in runs["weights"]], dtype=np.float64), new_ids)
        if c.counts["reused"] + c.counts["remapped"] == 0:
            continue
        out.append({"search_id": s["search_id"], "name": s["name"], "strategy": s["strategy"], "runs": len(runs),
                    **c.counts, "clusters_changed": sorted(map(int, s["cluster_ids"])) != sorted(new_ids)})
    return pd.DataFrame(out, columns=cols)
