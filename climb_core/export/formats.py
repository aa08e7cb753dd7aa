"""Files for trainers, written beside an export's Parquet shards: Megatron-LM and NeMo 2.0 data files,
and a Hugging Face dataset card.

Megatron-LM and NeMo train from Megatron indexed datasets (a `.bin`/`.idx` pair per path prefix) in the
model's own tokenizer. The export writes them: `clusters/cluster-<id>_text_document.{bin,idx}` per
cluster, and `clusters/valid_text_document.{bin,idx}` from the held-out documents, with the JSONL they
were tokenised from beside them (to re-tokenise with a tokenizer the export could not load). By default
a cluster's files hold all its training documents once and the blend weights do the sampling, as
NVIDIA's CLIMB recipe blends whole clusters; `sample` mode writes the token-budget sample instead.

Every writer takes the folder it writes in (`out`, a temporary folder while the export is built) and,
where a trainer needs absolute paths, the folder the export will end up in (`final`). The functions
that make the files from plain inputs live in climb_core.proxy.trainer_files.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from climb_core.proxy import trainer_files as tf

FORMATS = ("hf", "megatron", "nemo")
CLUSTER_DIR = "clusters"
MEGATRON_TXT = "megatron-blend.txt"
MEGATRON_JSON = "megatron-blend.json"
NEMO_JSON = "nemo-blend.json"
NEMO_SPLITS_JSON = "nemo-blend-splits.json"
CARD = "README.md"
VALID_NAME = "valid"
# What is uploaded by push_to_hub: the dataset and its description, not the trainer files, whose
# blends hold this machine's absolute paths.
HUB_FILES = ["README.md", "part-*.parquet", "weights.json", "manifest.json"]


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


def cluster_file(cluster_id: int | str) -> str:
    return f"{CLUSTER_DIR}/cluster-{cluster_id}.jsonl"


def cluster_prefix(cluster_id: int | str) -> str:
    # What preprocess_data.py names its output for --output-prefix clusters/cluster-<id> --json-keys text,
    # so a user who re-tokenises the JSONL gets the same prefixes the blends name.
    return f"{CLUSTER_DIR}/cluster-{cluster_id}_text_document"


def write_cluster_jsonl(path: Path, rows: Iterable[tuple[str, str]]) -> int:
    """(text, doc_id) rows as JSON lines with "text" and "id"; returns the number written."""
    return tf.write_documents_jsonl(path, rows)


# --------------------------------------------------------------------------- blends

def blend_pairs(trainer: dict[str, Any], final: Path) -> list[tuple[float, str]]:
    """(weight, absolute prefix) of each cluster with tokens, weights renormalised to sum to 1."""
    present = [c for c in trainer["clusters"] if c["tokens"] > 0]
    if not present:
        return []
    return tf.blend([c["weight"] for c in present], [str(final / c["prefix"]) for c in present])


def valid_prefixes(trainer: dict[str, Any], final: Path) -> list[str]:
    valid = trainer.get("valid") or {}
    return [str(final / valid["prefix"])] if valid.get("tokens") else []


def megatron_files(out: Path, final: Path, trainer: dict[str, Any]) -> list[str]:
    """megatron-blend.txt (`--data-args-path`) and megatron-blend.json (`--per-split-data-args-path`:
    train the blend, valid the held-out documents, test null)."""
    pairs = blend_pairs(trainer, final)
    tf.write_megatron_data_args(out / MEGATRON_TXT, pairs)
    per_split = tf.megatron_per_split(pairs, valid_prefixes(trainer, final))
    (out / MEGATRON_JSON).write_text(json.dumps(per_split, indent=2), encoding="utf-8")
    return [MEGATRON_TXT, MEGATRON_JSON]


def nemo_files(out: Path, final: Path, trainer: dict[str, Any]) -> list[str]:
    """nemo-blend.json: the flat [weight, prefix, ...] list `PreTrainingDataModule(paths=...)` takes;
    nemo-blend-splits.json: its per-split dict, validation and test from the held-out documents."""
    pairs = blend_pairs(trainer, final)
    (out / NEMO_JSON).write_text(json.dumps(tf.nemo_paths(pairs), indent=2), encoding="utf-8")
    written = [NEMO_JSON]
    valid = valid_prefixes(trainer, final)
    if valid:
        (out / NEMO_SPLITS_JSON).write_text(json.dumps(tf.nemo_paths_per_split(pairs, valid), indent=2), encoding="utf-8")
        written.append(NEMO_SPLITS_JSON)
    return written


# --------------------------------------------------------------------------- dataset card

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def md_escape(text: Any) -> str:
    """`text` as literal text in a Markdown table cell: one line, HTML escaped, Markdown syntax escaped."""
    one_line = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for `n` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
              (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]
    return next((name for bound, name in bounds if n < bound), "n>1T")


def card_data(manifest: dict[str, Any], card: dict[str, Any]):
    """The card's metadata: only keys the Hub defines (the mixture itself is in weights.json and
    manifest.json, which the card points to)."""
    from huggingface_hub import DatasetCardData

    return DatasetCardData(
        license=card.get("license") or "other",
        language=list(card.get("language") or []) or None,
        size_categories=[size_category(int(manifest["docs"]))],
        task_categories=["text-generation"],
        source_datasets=list(card.get("source_datasets") or []) or ["extended"],
        pretty_name=card.get("pretty_name") or f"CLIMB mixture {manifest['search_id']}",
        tags=["climb", "data-mixture"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "part-*.parquet"}]}])


def _target_text(target: list[dict[str, Any]]) -> str:
    if not target:
        return "not recorded"
    return ", ".join(f"{t.get('name') or t.get('path')} ({t.get('metric', '')}, weight {t.get('weight', 1)})" for t in target)


def _card_body(out: Path, manifest: dict[str, Any], card: dict[str, Any], pretty: str) -> list[str]:
    scores = manifest.get("scores") or {}
    license_ = card.get("license") or "other"
    lines = [f"# {md_escape(pretty)}", "",
             f"A data mixture found by CLIMB: the {md_escape(manifest['source'])} of search `{manifest['search_id']}` "
             f"(strategy `{manifest['strategy']}`), sampled to {manifest['docs']:,} documents and {manifest['tokens']:,} "
             f"tokens ({md_escape(manifest['token_count'])}).", "",
             "## Licence", "",
             (f"Declared as `{license_}`. " if license_ != "other" else "")
             + "Every document comes from the source corpus this mixture was built from, and that corpus's licence "
               "and terms apply to it; this card does not change them.", "",
             "## Use", "",
             "```python", "import datasets", "", "ds = datasets.load_dataset(\"<this folder or repo id>\", split=\"train\")", "```", "",
             "Columns: `text`, `doc_id`, `cluster_id`, `cluster_label`. Documents are whole; a cluster too small for its "
             "share of the tokens is repeated (the `epochs` column below), and its held-out documents (what the "
             "search's targets scored on) are left out.", "",
             "## Mixture", "",
             f"- Target: {md_escape(_target_text(manifest['target']))}",
             f"- Score: {scores.get('score') if scores.get('score') is not None else 'not recorded'}"
             + (f" ({md_escape(scores['how'])})" if scores.get("how") else "")]
    for name, value in sorted((scores.get("components") or {}).items()):
        lines.append(f"  - {md_escape(name)}: {value}")
    lines += [f"- Largest gap between a cluster's share and its weight: {manifest['max_share_deviation']:.4f}",
              f"- Held-out documents left out: {manifest['held_out']['docs']:,} and "
              f"{manifest['held_out']['duplicates']:,} copies of them", "",
              "| cluster | label | weight | share | tokens | rows | distinct documents | epochs |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for c in manifest["clusters"]:
        lines.append(f"| {c['cluster_id']} | {md_escape(c['label'])} | {c['weight']:.4f} | {c['share']:.4f} | "
                     f"{c['tokens']:,} | {c['docs']:,} | {c.get('distinct_docs', c['docs']):,} | {c['epochs']} |")
    lines += ["", "## CLIMB metadata", "",
              "`weights.json` holds the mixture (cluster ids, labels, weights); `manifest.json` holds it with the "
              "search, target, scores, per-cluster counts and the files written. Both are described in CLIMB "
              "Studio's docs/export.md.", ""]
    if (out / MEGATRON_TXT).exists() or (out / NEMO_JSON).exists():
        lines += ["Megatron-LM and NeMo 2.0 files (not uploaded to the Hub: their paths are absolute) are in the "
                  f"export folder: `{MEGATRON_TXT}`, `{MEGATRON_JSON}`, `{NEMO_JSON}`, `{NEMO_SPLITS_JSON}`.", ""]
    return lines


def hf_card(out: Path, manifest: dict[str, Any], card: dict[str, Any] | None = None) -> list[str]:
    """README.md, written as a huggingface_hub DatasetCard: Hub metadata, then the mixture in words and a table."""
    from huggingface_hub import DatasetCard

    card = card or {}
    data = card_data(manifest, card)
    body = _card_body(out, manifest, card, data.pretty_name)
    DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)).save(out / CARD)
    return [CARD]


class PushError(RuntimeError):
    """The export cannot be uploaded: offline mode is on, or the Hub refused it."""


def _hub_api(token: str | None):
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set (the climb command sets it unless told otherwise), so nothing can be "
                        "uploaded; run with HF_HUB_OFFLINE=0 to push the export")
    return HfApi(token=token)


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                api: Any = None) -> str:
    """Upload the card, shards, weights.json and manifest.json of the export in `folder` to the dataset
    repo `repo_id` (created if missing), through huggingface_hub's HfApi (or `api`, an object with its
    create_repo and upload_folder). Returns the repo's URL."""
    api = api if api is not None else _hub_api(token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset", allow_patterns=HUB_FILES,
                          commit_message="CLIMB mixture export")
    except (OSError, ValueError) as err:  # the Hub's HTTP errors are OSErrors
        raise PushError(f"could not push {folder} to the dataset repo {repo_id}: {err}") from err
    return str(url)


def write_formats(out: Path, final: Path, manifest: dict[str, Any], formats: tuple[str, ...],
                  card: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """The files of each requested format, written in `out`; returns {format: [file names]}.
    manifest["trainer_data"] describes the indexed datasets already written for megatron and nemo."""
    written: dict[str, list[str]] = {}
    trainer = manifest.get("trainer_data") or {}
    if "megatron" in formats:
        written["megatron"] = megatron_files(out, final, trainer)
    if "nemo" in formats:
        written["nemo"] = nemo_files(out, final, trainer)
    # The card last: it names whichever trainer files are there.
    if "hf" in formats:
        written["hf"] = hf_card(out, manifest, card)
    return written
