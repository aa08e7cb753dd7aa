"""Small helpers shared by tests (import as `from tests.helpers import ...`)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"


def write_demo_slice(path: Path, n: int, start: int = 0) -> Path:
    """The first n documents (from `start`) of the bundled demo corpus as a plain JSONL file."""
    import gzip

    with gzip.open(DATA / "demo_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        lines = fh.readlines()[start:start + n]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def small_config(**sections):
    """Settings for tests: a small, fast pipeline on a few hundred documents."""
    from climb_core.config import ClimbConfig, with_overrides

    overrides = {"embed.max_seq_length": 128, "cluster.k": 16, "merge.target_clusters": 6,
                 "map.n_neighbors": 10, "prune.min_size": 2}
    overrides.update(sections)
    return with_overrides(ClimbConfig(), overrides)
