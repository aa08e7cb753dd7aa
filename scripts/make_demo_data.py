"""Rebuild data/ from ../shared/data: the openly licensed domains and evaluation subsets only.

Run once by a maintainer; the output is committed. Fixed seed, so the result is reproducible.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# Open licences only (MANIFEST.md, "Licences in short"): WikiText-2, Legal Case Reports, Gutenberg,
# State of the Union, SciTLDR. Counts keep data/ at a few MB and the demo's embedding under a minute.
POOL = {"encyclopedia": 214, "legal": 260, "literature": 360, "political_speech": 260, "science_abstracts": 700}
EVAL = {"arc_easy": 300, "piqa": 300, "hellaswag": 300, "winogrande": 200}
MAX_CHARS = 3000


def main() -> int:
    if not SHARED.exists():
        print(f"needs {SHARED}", file=sys.stderr)
        return 1
    rng = random.Random(0)
    out = ROOT / "data"
    (out / "eval").mkdir(parents=True, exist_ok=True)
    docs = []
    for domain, n in POOL.items():
        with gzip.open(SHARED / "pool" / f"{domain}.jsonl.gz", "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        rng.shuffle(rows)
        for row in rows[:n]:
            text = row["text"]
            if len(text) > MAX_CHARS:
                cut = text.rfind("\n", 0, MAX_CHARS)
                text = text[: cut if cut > MAX_CHARS // 2 else MAX_CHARS]
            docs.append({"id": row["id"], "text": text, "source": row["source"], "domain": row["domain"]})
    rng.shuffle(docs)
    with gzip.open(out / "demo_corpus.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    for name, n in EVAL.items():
        with open(SHARED / "eval" / f"{name}.jsonl", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        rng.shuffle(rows)
        keep = [{k: r[k] for k in ("id", "context", "choices", "label", "split")} for r in rows[:n]]
        with open(out / "eval" / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for r in keep:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(docs)} documents and {sum(EVAL.values())} evaluation items to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
