"""Files for trainers, written beside an export's Parquet shards: a Megatron-LM data blend, a NeMo blend,
and a Hugging Face dataset card.

Megatron-LM and NeMo train from Megatron indexed datasets (a `.bin`/`.idx` pair per path prefix) that
are tokenised with the model's own tokenizer, not the workspace's small proxy tokenizer. So the export
also gives each cluster's sampled documents as JSONL (`clusters/cluster-<id>.jsonl`, the input of
Megatron's `tools/preprocess_data.py --json-keys text`), and the blends name the prefixes that tool
writes from them (`clusters/cluster-<id>_text_document`). The blend weights are the searched mixture,
renormalised over the clusters that received documents, so a trainer draws the clusters in the
proportions the search chose.

Every writer takes the folder it writes in (`out`, a temporary folder while the export is built) and,
where a trainer needs absolute paths, the folder the export will end up in (`final`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

FORMATS = ("hf", "megatron", "nemo")
CLUSTER_DIR = "clusters"
MEGATRON_TXT = "megatron-blend.txt"
MEGATRON_JSON = "megatron-blend.json"
NEMO_JSON = "nemo-blend.json"
CARD = "README.md"


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """'hf,megatron' (or a list) as a tuple of known format names; None means all of them."""
    if formats is None:
        return FORMATS
    names = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    names = [f for f in names if f and f != "none"]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)} (or 'none')")
    return tuple(f for f in FORMATS if f in names)


def cluster_file(cluster_id: int) -> str:
    return f"{CLUSTER_DIR}/cluster-{cluster_id}.jsonl"


def cluster_prefix(cluster_id: int) -> str:
    # What preprocess_data.py names its output for --output-prefix clusters/cluster-<id> --json-keys text.
    return f"{CLUSTER_DIR}/cluster-{cluster_id}_text_document"


def write_cluster_jsonl(path: Path, rows: Iterable[tuple[str, str]]) -> int:
    """(text, doc_id) rows as JSON lines with "text" and "id"; returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for text, doc_id in rows:
            fh.write(json.dumps({"text": text or "", "id": doc_id}, ensure_ascii=False) + "\n")
            n += 1
    return n


def blend_entries(manifest: dict[str, Any], final: Path) -> list[dict[str, Any]]:
    """One {"weight", "path", "cluster_id", "label"} per cluster with documents; weights sum to 1
    (no entries when the export holds no documents at all)."""
    present = [c for c in manifest["clusters"] if c["docs"] > 0 and c["weight"] > 0]
    total = sum(c["weight"] for c in present)
    if total <= 0:
        return []
    return [{"weight": c["weight"] / total, "path": str(final / cluster_prefix(c["cluster_id"])),
             "cluster_id": c["cluster_id"], "label": c["label"]} for c in present]


def megatron_blend(out: Path, entries: list[dict[str, Any]]) -> list[str]:
    """megatron-blend.txt, the "weight prefix" list `--data-args-path` reads (whitespace separated, so no
    comments), and megatron-blend.json for `--per-split-data-args-path` (train only; Megatron takes null
    for the valid and test splits)."""
    pairs = [f"{e['weight']!r} {e['path']}" for e in entries]
    (out / MEGATRON_TXT).write_text("\n".join(pairs) + "\n", encoding="utf-8")
    flat: list[Any] = []
    for e in entries:
        flat += [e["weight"], e["path"]]
    (out / MEGATRON_JSON).write_text(json.dumps({"train": flat, "valid": None, "test": None}, indent=2), encoding="utf-8")
    return [MEGATRON_TXT, MEGATRON_JSON]


def nemo_blend(out: Path, entries: list[dict[str, Any]]) -> list[str]:
    """nemo-blend.json: a list of {"weight", "path"} (plus the cluster it came from, for people)."""
    (out / NEMO_JSON).write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return [NEMO_JSON]


def _card_front_matter(manifest: dict[str, Any]) -> dict[str, Any]:
    # `configs` is what the Hub and `datasets.load_dataset(<folder>)` read to find the shards; the
    # rest is ours, kept in the front matter so a program can read the mixture without parsing Markdown.
    return {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "part-*.parquet"}]}],
        "tags": ["climb", "data-mixture"],
        "climb": {
            "export_id": manifest["export_id"], "search_id": manifest["search_id"], "strategy": manifest["strategy"],
            "source": manifest["source"], "target": manifest["target"], "scores": manifest.get("scores") or {},
            "tokens": manifest["tokens"], "docs": manifest["docs"], "token_count": manifest["token_count"],
            "mixture": [{"cluster_id": c["cluster_id"], "label": c["label"], "weight": c["weight"],
                         "share": c["share"], "tokens": c["tokens"], "docs": c["docs"]} for c in manifest["clusters"]],
        },
    }


def _target_text(target: list[dict[str, Any]]) -> str:
    if not target:
        return "not recorded"
    return ", ".join(f"{t.get('name') or t.get('path')} ({t.get('metric', '')}, weight {t.get('weight', 1)})" for t in target)


def hf_card(out: Path, manifest: dict[str, Any]) -> list[str]:
    """README.md: YAML front matter (data files, the mixture), then the same in words and a table."""
    scores = manifest.get("scores") or {}
    lines = ["---", yaml.safe_dump(_card_front_matter(manifest), sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# CLIMB mixture export {manifest['export_id']}", "",
             f"Sampled from the {manifest['source']} of search `{manifest['search_id']}` "
             f"(strategy `{manifest['strategy']}`): {manifest['docs']:,} documents, {manifest['tokens']:,} tokens "
             f"({manifest['token_count']}).", "",
             f"- Target: {_target_text(manifest['target'])}",
             f"- Score: {scores.get('score') if scores.get('score') is not None else 'not recorded'}"
             + (f" ({scores['how']})" if scores.get("how") else "")]
    for name, value in sorted((scores.get("components") or {}).items()):
        lines.append(f"  - {name}: {value}")
    lines += [f"- Largest gap between a cluster's share and its weight: {manifest['max_share_deviation']:.4f}",
              f"- Held-out documents left out: {manifest['held_out']['docs']:,} "
              f"(the validation text targets score on) and {manifest['held_out']['duplicates']:,} copies of them", "",
              "| cluster | label | weight | share | tokens | docs | epochs |", "|---:|---|---:|---:|---:|---:|---:|"]
    for c in manifest["clusters"]:
        label = str(c["label"]).replace("|", "\\|")
        lines.append(f"| {c['cluster_id']} | {label} | {c['weight']:.4f} | {c['share']:.4f} | {c['tokens']:,} | "
                     f"{c['docs']:,} | {c['epochs']} |")
    lines += ["", "Load with `datasets.load_dataset(\"parquet\", data_files=\"part-*.parquet\")` in this folder.", ""]
    if (out / MEGATRON_TXT).exists() or (out / NEMO_JSON).exists():
        lines += ["For Megatron-LM or NeMo, tokenise each cluster with the model's tokenizer first:", "", "```",
                  "for f in clusters/cluster-*.jsonl; do",
                  "  python tools/preprocess_data.py --input \"$f\" --output-prefix \"${f%.jsonl}\" --json-keys text \\",
                  "    --tokenizer-type <TYPE> --tokenizer-model <MODEL> --append-eod --workers 8",
                  "done", "```", "",
                  f"then train with `--data-args-path {MEGATRON_TXT}` (Megatron-LM) or the weights and paths of "
                  f"`{NEMO_JSON}` (NeMo). Their paths are absolute: regenerate the export if you move the folder.", ""]
    (out / CARD).write_text("\n".join(lines), encoding="utf-8")
    return [CARD]


def write_formats(out: Path, final: Path, manifest: dict[str, Any], formats: tuple[str, ...]) -> dict[str, list[str]]:
    """The files of each requested format, written in `out`; returns {format: [file names]}."""
    written: dict[str, list[str]] = {}
    entries = blend_entries(manifest, final) if {"megatron", "nemo"} & set(formats) else []
    if "megatron" in formats:
        written["megatron"] = megatron_blend(out, entries)
    if "nemo" in formats:
        written["nemo"] = nemo_blend(out, entries)
    # The card last: it says how to use whichever blend files are there.
    if "hf" in formats:
        written["hf"] = hf_card(out, manifest)
    return written
