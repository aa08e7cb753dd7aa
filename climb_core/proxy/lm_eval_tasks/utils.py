"""Loaders of the climb_* lm-eval tasks: the bundled data/eval files, read locally.

The folder is found from $CLIMB_EVAL_DIR, else the repository's data/eval beside this package."""

from __future__ import annotations

import json
import os
from pathlib import Path


def eval_dir() -> Path:
    env = os.environ.get("CLIMB_EVAL_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "data" / "eval"


def load(file: str = "", **_kwargs):
    """The items of data/eval/<file>.jsonl as a DatasetDict with one `test` split."""
    import datasets

    path = eval_dir() / f"{file}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [{"context": str(r.get("context") or ""), "choices": list(r["choices"]), "label": int(r["label"])}
            for r in rows]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
