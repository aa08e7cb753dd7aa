"""Benchmark decontamination: n-gram overlap between the corpus and multiple-choice evaluation sets.

As in GPT-3's decontamination, text is lowercased and split on non-alphanumeric characters into words,
and a document is flagged when it shares at least one 13-word shingle (n-gram) with an eval item.
An item's n-grams come from its context followed by its correct choice; an item with fewer than n
words has none and can never be matched (counted as `too_short`).

Hashes are stable across runs: each word is hashed to 64 bits (blake2b, 8-byte digest), and an n-gram's
hash is the polynomial combination of its words' hashes mod 2**64, computed for a whole document at once
with numpy. The eval side is a sorted array of those hashes; the corpus is streamed from the catalogue in
batches, so memory stays flat however large the corpus is.

The workspace's edit log has no operation that removes single documents (edits prune, restore, merge and
split whole clusters), so `drop=True` does not delete or move anything: it records the flagged documents
in the table `decontam_flags(doc_idx, eval_name, ngram_hits)` (rows of the same eval sets replaced on a
re-run), for a prune or export step to act on.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from climb_core.catalogue.workspace import Workspace, transaction
from climb_core.config import TargetSpec
from climb_core.proxy.targets import TargetError, read_mc_items, resolve_path, target_name

DEFAULT_N = 13
BATCH_DOCS = 2000
_WORD = re.compile(r"[^\W_]+")          # runs of letters and digits (Unicode-aware)
_MULT = np.uint64(0x100000001B3)        # odd multiplier of the polynomial n-gram hash
FLAGS_TABLE = "decontam_flags"


def words(text: str) -> list[str]:
    """Lowercased words: `text` split on every non-alphanumeric character."""
    return _WORD.findall(text.lower())


class _Hasher:
    """Stable 64-bit hashes of words (cached) and of every n-gram of a word list."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n = n
        self._cache: dict[str, int] = {}

    def _words(self, ws: list[str]) -> np.ndarray:
        cache = self._cache
        vals = list(map(cache.get, ws))                # C-speed lookups; new words hashed below
        if None in vals:
            if len(cache) > 2_000_000:                 # bound the memory of a huge vocabulary
                cache.clear()
            for w in set(ws).difference(cache):
                cache[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
            vals = list(map(cache.__getitem__, ws))
        return np.array(vals, dtype=np.uint64)

    def ngrams(self, ws: list[str]) -> np.ndarray:
        """uint64 hash of each n-gram, in order (empty when fewer than n words)."""
        return self.batch([ws])[0]

    def batch(self, docs: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every n-gram of every document, concatenated, and the document each belongs to.

        One pass over the documents' words joined end to end; n-grams that straddle two documents
        are dropped."""
        n = self.n
        lens = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        total = int(lens.sum())
        if total < n:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        w = self._words([x for d in docs for x in d])
        m = total - n + 1
        h = w[:m].copy()
        with np.errstate(over="ignore"):
            for k in range(1, n):
                h *= _MULT
                h += w[k:k + m]
        ends = np.cumsum(lens)
        doc_of = np.searchsorted(ends, np.arange(m), side="right")   # document of each n-gram's first word
        keep = np.arange(m) + n <= ends[doc_of]                       # ... and its last word in the same one
        return h[keep], doc_of[keep]


@dataclass
class EvalOverlap:
    name: str
    path: str
    n_items: int
    n_ngrams: int                      # distinct n-grams of the set
    too_short: int                     # items with fewer than n words (no n-grams)
    items_touched: int = 0             # items with at least one n-gram found in the corpus
    docs_flagged: int = 0

    @property
    def share_touched(self) -> float:
        return self.items_touched / self.n_items if self.n_items else 0.0


@dataclass
class ClusterOverlap:
    cluster_id: int
    label: str | None
    n_docs: int
    n_flagged: int

    @property
    def share(self) -> float:
        return self.n_flagged / self.n_docs if self.n_docs else 0.0


@dataclass
class DecontamReport:
    n: int
    n_docs: int                                    # documents scanned
    evals: list[EvalOverlap]
    clusters: list[ClusterOverlap]                 # active clusters, most-flagged share first
    flagged_doc_ids: list[str]                     # in doc_idx order
    flagged_doc_idx: list[int]
    hits: dict[int, dict[str, int]] = field(default_factory=dict)   # doc_idx -> eval name -> n-gram hits
    outside_active: int = 0                        # flagged documents in no active cluster
    dropped: bool = False                          # documents removed from their clusters (never, see module doc)
    recorded: bool = False                         # flags written to decontam_flags
    seconds: float = 0.0

    @property
    def n_flagged(self) -> int:
        return len(self.flagged_doc_idx)

    @property
    def docs_per_second(self) -> float:
        return self.n_docs / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hits"] = {str(k): v for k, v in self.hits.items()}
        d["n_flagged"] = self.n_flagged
        d["docs_per_second"] = self.docs_per_second
        for e, src in zip(d["evals"], self.evals):
            e["share_touched"] = src.share_touched
        for c, src in zip(d["clusters"], self.clusters):
            c["share"] = src.share
        return d


def _spec(item: str | Path | TargetSpec) -> TargetSpec:
    if isinstance(item, TargetSpec):
        spec = item
    else:
        from climb_core.proxy.targets import parse_target   # the CLI's shorthands: arc_easy, mc:PATH, ...

        spec = parse_target(str(item))
    if spec.kind != "mc":
        raise TargetError(f"decontamination checks multiple-choice eval sets; {spec.path!r} is a {spec.kind} target")
    return spec


def _eval_index(specs: list[TargetSpec], hasher: _Hasher):
    """Per eval set its summary, and a sorted hash array with, per hash, the (set, item) pairs holding it."""
    evals, keys, owners = [], [], []
    for e, spec in enumerate(specs):
        path = resolve_path(spec.path)
        items = read_mc_items(path)
        if not items:
            raise TargetError(f"{path}: no items")
        too_short, distinct = 0, set()
        for i, it in enumerate(items):
            h = np.unique(hasher.ngrams(words(it["context"] + " " + it["choices"][it["label"]])))
            if not len(h):
                too_short += 1
                continue
            keys.append(h)
            owners.append(np.full(len(h), e * (1 << 32) + i, np.int64))
            distinct.update(h.tolist())
        evals.append(EvalOverlap(target_name(spec), str(path), len(items), len(distinct), too_short))
    if keys:
        all_keys, all_owners = np.concatenate(keys), np.concatenate(owners)
        order = np.argsort(all_keys, kind="stable")
        all_keys, all_owners = all_keys[order], all_owners[order]
    else:
        all_keys, all_owners = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    uniq, first = np.unique(all_keys, return_index=True)
    return evals, uniq, first, all_keys, all_owners


def _record(ws: Workspace, evals: list[EvalOverlap], hits: dict[int, dict[str, int]]) -> None:
    rows = [(d, name, k) for d, per in sorted(hits.items()) for name, k in sorted(per.items())]
    with ws.connect() as con, transaction(con):
        con.execute(f"CREATE TABLE IF NOT EXISTS {FLAGS_TABLE} (doc_idx BIGINT, eval_name VARCHAR, ngram_hits INTEGER)")
        con.execute(f"DELETE FROM {FLAGS_TABLE} WHERE eval_name IN (SELECT unnest(?::VARCHAR[]))",
                    [[e.name for e in evals]])
        if rows:
            con.executemany(f"INSERT INTO {FLAGS_TABLE} VALUES (?, ?, ?)", rows)


def decontaminate(ws: Workspace, eval_paths: list[str | Path | TargetSpec], n: int = DEFAULT_N,
                  drop: bool = False, batch_docs: int = BATCH_DOCS, progress: bool = False) -> DecontamReport:
    """Flag corpus documents sharing an n-gram with an item of the given MC eval sets; see the module doc.

    `eval_paths`: JSONL paths, bundled names (`arc_easy`) or TargetSpecs. With drop=True the flags are
    recorded in `decontam_flags` (the edit log cannot remove single documents; nothing is deleted)."""
    if not eval_paths:
        raise TargetError("no eval sets given to decontaminate against")
    t0 = time.perf_counter()
    hasher = _Hasher(n)
    specs = [_spec(p) for p in eval_paths]
    evals, uniq, first, keys, owners = _eval_index(specs, hasher)
    names = [e.name for e in evals]
    if len(set(names)) != len(names):
        raise TargetError(f"eval sets with the same name {names}; give them distinct names (mc:PATH,name=N)")

    hits: dict[int, dict[str, int]] = {}
    touched: set[int] = set()
    flagged_ids: dict[int, str] = {}
    n_docs = 0
    from tqdm.auto import tqdm

    with ws.connect() as con:
        total = con.execute("SELECT count(*) FROM documents").fetchone()[0]
        bar = tqdm(total=total, desc="decontam", unit="doc", disable=not progress)
        cur = con.execute("SELECT doc_idx, doc_id, text FROM documents ORDER BY doc_idx")
        while True:
            batch = cur.fetchmany(batch_docs)
            if not batch:
                break
            n_docs += len(batch)
            bar.update(len(batch))
            if not len(uniq):
                continue
            h, doc_of = hasher.batch([words(text or "") for _, _, text in batch])
            if not len(h):
                continue
            pos = np.searchsorted(uniq, h)
            pos[pos == len(uniq)] = 0
            found = np.flatnonzero(uniq[pos] == h)
            for j in found.tolist():
                p = int(pos[j])
                doc_idx, doc_id, _ = batch[int(doc_of[j])]
                stop = first[p + 1] if p + 1 < len(first) else len(keys)
                sets_here = set()
                for o in owners[first[p]:stop].tolist():
                    touched.add(o)
                    sets_here.add(o >> 32)
                per = hits.setdefault(int(doc_idx), {})
                for e in sets_here:            # one hit per matching document n-gram and eval set
                    per[names[e]] = per.get(names[e], 0) + 1
                flagged_ids[int(doc_idx)] = str(doc_id)
        bar.close()
        membership = con.execute("""
            SELECT dc.doc_idx, c.cluster_id, c.label FROM doc_clusters dc JOIN clusters c USING (cluster_id)
            WHERE c.state = 'active'""").df()

    for o in touched:
        evals[o >> 32].items_touched += 1
    for per in hits.values():
        for name in per:
            evals[names.index(name)].docs_flagged += 1

    flagged = np.array(sorted(hits), dtype=np.int64)
    clusters = []
    if len(membership):
        membership["flag"] = membership["doc_idx"].isin(flagged)
        g = membership.groupby(["cluster_id", "label"], dropna=False)["flag"].agg(["size", "sum"]).reset_index()
        clusters = [ClusterOverlap(int(r.cluster_id), None if r.label is None or r.label != r.label else str(r.label),
                                   int(r.size), int(r.sum)) for r in g.itertuples()]
        clusters.sort(key=lambda c: (-c.share, -c.n_flagged, c.cluster_id))
        in_active = int(membership.loc[membership["flag"], "doc_idx"].nunique())
    else:
        in_active = 0
    report = DecontamReport(n, n_docs, evals, clusters, [flagged_ids[d] for d in flagged.tolist()],
                            flagged.tolist(), hits, outside_active=len(flagged) - in_active)
    if drop:
        _record(ws, evals, hits)
        report.recorded = True
    report.seconds = time.perf_counter() - t0
    return report


def format_report(rep: DecontamReport) -> str:
    """Plain-text tables: per eval set, then per active cluster."""
    lines = [f"{rep.n}-gram overlap: {rep.n_flagged:,} of {rep.n_docs:,} documents flagged "
             f"({rep.n_flagged / rep.n_docs if rep.n_docs else 0:.2%}) in {rep.seconds:.1f}s "
             f"({rep.docs_per_second:,.0f} docs/s)", "",
             f"{'eval set':<20} {'items':>6} {'touched':>8} {'share':>7} {'too short':>9} {'docs':>6}"]
    for e in rep.evals:
        lines.append(f"{e.name:<20} {e.n_items:>6} {e.items_touched:>8} {e.share_touched:>7.1%} "
                     f"{e.too_short:>9} {e.docs_flagged:>6}")
    lines.append("")
    if rep.clusters:
        lines.append(f"{'cluster':<8} {'docs':>7} {'flagged':>8} {'share':>7}  label")
        for c in rep.clusters:
            lines.append(f"#{c.cluster_id:<7} {c.n_docs:>7} {c.n_flagged:>8} {c.share:>7.2%}  {c.label or ''}")
        if rep.outside_active:
            lines.append(f"   {rep.outside_active} flagged document(s) are in no active cluster")
    else:
        lines.append("no active clusters yet (run refine): per-cluster counts unavailable")
    if rep.recorded:
        lines.append(f"\nrecorded {rep.n_flagged} flagged document(s) in table {FLAGS_TABLE} "
                     "(nothing deleted: the edit log has no single-document removal)")
    elif rep.n_flagged:
        lines.append("\n--drop records them in table decontam_flags")
    return "\n".join(lines)
