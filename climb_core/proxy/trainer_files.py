"""The files a trainer reads, written from plain inputs: documents, cluster ids, weights, path prefixes.

Both the export and the command proxies hand trainers their data through these functions, so a proxy
run and an exported dataset are read the same way:

- `write_documents_jsonl`: one JSON object per document with a "text" key (what Megatron's
  `tools/preprocess_data.py --json-keys text` and most trainers' JSONL readers take);
- `write_indexed_dataset` / `write_tokenized_documents`: a Megatron indexed dataset, the `.bin`/`.idx`
  pair Megatron-LM and NeMo 2.0 train from, in Megatron's own byte format (megatron-core's
  `IndexedDatasetBuilder` when it is installed, an identical writer here when it is not);
- `blend`, `megatron_data_path`, `write_megatron_data_args`, `megatron_per_split`: the blend for
  Megatron-LM's `--data-path`, `--data-args-path` and `--per-split-data-args-path`;
- `nemo_paths`, `nemo_paths_per_split`: the `paths` argument of NeMo 2.0's `PreTrainingDataModule`.

Documents are tokenised like `preprocess_data.py --append-eod`: a document's ids (no special tokens
added) followed by one end-of-document token; a document with no ids is left out, as that tool does.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DOC_BATCH = 1024  # documents per tokenizer call

# Megatron's IndexedDataset format (megatron/core/datasets/indexed_dataset.py): the .idx header and
# the dtype codes of its DType enum, and the vocabulary size below which token ids are stored as uint16
# (DType.optimal_dtype, which preprocess_data.py calls with the tokenizer's vocab_size).
_INDEX_HEADER = b"MMIDIDX\x00\x00"
_INDEX_VERSION = 1
_DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7, "uint16": 8}
_UINT16_BELOW = 65500
# Special tokens accepted as the end-of-document token when a tokenizer names no eos token.
_EOD_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


class TrainerFileError(ValueError):
    """A tokenizer that cannot be loaded without the network, a blend path a trainer would misread, or a
    blend with nothing to draw from."""


# --------------------------------------------------------------------------- tokenizer

@dataclass
class TrainerTokenizer:
    """A tokenizer as the trainer files need it: batch encoding without special tokens, the
    end-of-document id and the vocabulary size that decides the token dtype."""
    name: str
    vocab_size: int
    eod: int
    encode_batch: Callable[[list[str]], list[list[int]]]


def _eod_from_vocab(vocab: dict[str, int]) -> int | None:
    return next((int(vocab[t]) for t in _EOD_CANDIDATES if t in vocab), None)


def _from_tokenizers_file(path: Path, name: str) -> TrainerTokenizer:
    from tokenizers import Tokenizer

    if not Path(path).is_file():
        raise TrainerFileError(f"no tokenizer file {path}")
    tok = Tokenizer.from_file(str(path))
    eod = _eod_from_vocab(tok.get_vocab(with_added_tokens=True))
    if eod is None:
        raise TrainerFileError(f"tokenizer {name} has no end-of-document token (looked for {', '.join(_EOD_CANDIDATES)})")
    return TrainerTokenizer(name, tok.get_vocab_size(with_added_tokens=True), eod,
                            lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)])


def load_trainer_tokenizer(spec: str | Path | None, default: str | Path | None = None) -> TrainerTokenizer:
    """The tokenizer `spec` names: a Hugging Face tokenizer folder, a `tokenizer.json` file, or the name
    of a tokenizer already in the local Hugging Face cache; None or "" means `default` (a
    `tokenizer.json`, such as the workspace's own). Nothing is downloaded: a name that is not on this
    machine raises TrainerFileError saying how to make it local."""
    if spec is None or str(spec).strip() == "":
        if default is None:
            raise TrainerFileError("no tokenizer given and no default tokenizer")
        return _from_tokenizers_file(Path(default), f"{default}")
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if path.is_file():
        return _from_tokenizers_file(path, str(path))
    try:
        from transformers import AutoTokenizer
    except ImportError as err:  # pragma: no cover - transformers is a dependency of the proxies
        raise TrainerFileError(f"tokenizer {spec!r} needs the transformers package") from err
    try:
        tok = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else spec, local_files_only=True)
    except (OSError, ValueError) as err:
        where = (f"the folder {path} holds no tokenizer transformers can load" if path.is_dir() else
                 f"{spec!r} is neither a tokenizer folder nor a tokenizer in the local Hugging Face cache")
        raise TrainerFileError(
            f"{where}; export reads tokenizers only from this machine, so download it first (for example "
            f"`huggingface-cli download {spec}`, or `AutoTokenizer.from_pretrained(...).save_pretrained(DIR)` and pass "
            f"DIR): {err}") from err
    eod = tok.eos_token_id
    if eod is None:
        eod = _eod_from_vocab(tok.get_vocab())
    if eod is None:
        raise TrainerFileError(f"tokenizer {spec} has no eos token to end documents with; set its eos_token")

    def encode(texts: list[str]) -> list[list[int]]:
        return tok(texts, add_special_tokens=False)["input_ids"]

    # len() counts added tokens too: the largest id + 1, which is what decides whether uint16 holds it.
    return TrainerTokenizer(spec, len(tok), int(eod), encode)


# --------------------------------------------------------------------------- documents

def write_documents_jsonl(path: str | Path, docs: Iterable[str | tuple[str, Any]]) -> int:
    """Documents as JSON lines: {"text": ...} for a string, {"text": ..., "id": ...} for a (text, id)
    pair. Returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for doc in docs:
            row = {"text": doc or ""} if isinstance(doc, str) or doc is None else {"text": doc[0] or "", "id": doc[1]}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


# --------------------------------------------------------------------------- Megatron indexed dataset

def indexed_dtype(vocab_size: int) -> np.dtype:
    """The token dtype Megatron's preprocess_data.py picks for a vocabulary of `vocab_size`."""
    return np.dtype(np.uint16 if vocab_size is not None and vocab_size < _UINT16_BELOW else np.int32)


def bin_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.idx")


def _megatron_builder():
    try:
        import warnings

        with warnings.catch_warnings():
            # megatron.core warns at import about optional GPU kernels a writer does not use.
            warnings.simplefilter("ignore")
            from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    except ImportError:
        return None
    return IndexedDatasetBuilder, DType


class _IndexedWriter:
    """Megatron's IndexedDatasetBuilder with one sequence per document, for when megatron-core is not
    installed: the same bytes, in the same order (the .bin as documents arrive, the .idx at the end)."""

    def __init__(self, bin_file: Path, dtype: np.dtype) -> None:
        self.fh = open(bin_file, "wb")
        self.dtype = np.dtype(dtype)
        self.lengths: list[int] = []

    def add_document(self, ids: np.ndarray, lengths: list[int]) -> None:
        self.fh.write(np.asarray(ids, dtype=self.dtype).tobytes(order="C"))
        self.lengths.extend(lengths)

    def finalize(self, idx_file: str) -> None:
        self.fh.close()
        lengths = np.asarray(self.lengths, dtype=np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        if len(lengths) > 1:
            np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        # One document per sequence: document i ends after sequence i.
        doc_index = np.arange(len(lengths) + 1, dtype=np.int64)
        with open(idx_file, "wb") as fh:
            fh.write(_INDEX_HEADER)
            fh.write(struct.pack("<Q", _INDEX_VERSION))
            fh.write(struct.pack("<B", _DTYPE_CODES[self.dtype.name]))
            fh.write(struct.pack("<Q", len(lengths)))
            fh.write(struct.pack("<Q", len(doc_index)))
            fh.write(lengths.tobytes(order="C"))
            fh.write(pointers.tobytes(order="C"))
            fh.write(doc_index.tobytes(order="C"))


def write_indexed_dataset(prefix: str | Path, docs: Iterable[Sequence[int] | np.ndarray], vocab_size: int, *,
                          use_megatron: bool | None = None) -> dict[str, int]:
    """`prefix`.bin and `prefix`.idx from token-id documents (each already ending in its end-of-document
    token), one sequence per document, as preprocess_data.py writes them. An empty document is skipped.
    use_megatron: True requires megatron-core's IndexedDatasetBuilder, False uses the writer here, None
    the builder when importable. Returns {"docs", "tokens", "dtype"}."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    dtype = indexed_dtype(vocab_size)
    mc = _megatron_builder() if use_megatron is not False else None
    if use_megatron and mc is None:
        raise TrainerFileError("megatron-core is not installed (pip install 'climb-studio[megatron]' or megatron-core)")
    if mc is not None:
        builder_cls, dtype_enum = mc
        builder = builder_cls(str(bin_path(prefix)), dtype=dtype_enum.optimal_dtype(vocab_size))
    else:
        builder = _IndexedWriter(bin_path(prefix), dtype)
    n_docs = n_tokens = 0
    for ids in docs:
        raw = np.asarray(ids)
        if raw.size == 0:
            continue
        if raw.min() < 0 or raw.max() > np.iinfo(dtype).max:
            raise TrainerFileError(f"token id {int(raw.max())} does not fit {dtype.name} "
                                   f"(vocab_size {vocab_size}); give the tokenizer's full vocabulary size")
        arr = raw.astype(dtype, copy=False)
        builder.add_document(arr, [int(arr.size)])
        n_docs += 1
        n_tokens += int(arr.size)
    builder.finalize(str(idx_path(prefix)))
    return {"docs": n_docs, "tokens": n_tokens, "dtype": dtype.name}


def tokenize_documents(texts: Iterable[str], tokenizer: TrainerTokenizer, *, batch: int = DOC_BATCH) -> Iterator[list[int]]:
    """Each text's ids followed by the end-of-document token (nothing for a text with no ids)."""
    buf: list[str] = []

    def flush() -> Iterator[list[int]]:
        for ids in tokenizer.encode_batch(buf):
            if len(ids):
                yield list(ids) + [tokenizer.eod]
        buf.clear()

    for text in texts:
        buf.append(text or "")
        if len(buf) >= batch:
            yield from flush()
    if buf:
        yield from flush()


def write_tokenized_documents(prefix: str | Path, texts: Iterable[str], tokenizer: TrainerTokenizer, *,
                              use_megatron: bool | None = None) -> dict[str, int]:
    """Tokenise `texts` with `tokenizer` (ids, then its end-of-document token) into `prefix`.bin/.idx."""
    return write_indexed_dataset(prefix, tokenize_documents(texts, tokenizer), tokenizer.vocab_size,
                                 use_megatron=use_megatron)


# --------------------------------------------------------------------------- blends

def check_blend_path(prefix: str) -> str:
    """`prefix` unchanged, or TrainerFileError when Megatron would misread it: `--data-path` and
    `--data-args-path` split the blend on whitespace, so a path holding any is cut in pieces."""
    if not prefix or any(ch.isspace() for ch in prefix):
        raise TrainerFileError(f"the path {prefix!r} holds whitespace, and Megatron-LM splits --data-path and "
                               "--data-args-path on whitespace; write the files under a path without spaces")
    return prefix


def blend(weights: Sequence[float], prefixes: Sequence[str | Path]) -> list[tuple[float, str]]:
    """(weight, prefix) pairs of the entries with a positive weight, the weights renormalised to sum to 1."""
    if len(weights) != len(prefixes):
        raise TrainerFileError(f"{len(weights)} weights for {len(prefixes)} prefixes")
    kept = [(float(w), str(p)) for w, p in zip(weights, prefixes) if float(w) > 0]
    total = sum(w for w, _ in kept)
    if not kept or not np.isfinite(total):
        raise TrainerFileError("the blend has no prefix with a positive weight")
    return [(w / total, p) for w, p in kept]


def megatron_data_path(pairs: Sequence[tuple[float, str]]) -> str:
    """The `--data-path` value: "weight prefix weight prefix ..."."""
    return " ".join(f"{w!r} {check_blend_path(p)}" for w, p in pairs)


def write_megatron_data_args(path: str | Path, pairs: Sequence[tuple[float, str]]) -> Path:
    """The file `--data-args-path` reads (its text split on whitespace): one "weight prefix" a line."""
    path = Path(path)
    path.write_text("".join(f"{w!r} {check_blend_path(p)}\n" for w, p in pairs), encoding="utf-8")
    return path


def _flat(pairs: Sequence[tuple[float, str]]) -> list[Any]:
    out: list[Any] = []
    for w, p in pairs:
        out += [w, p]
    return out


def megatron_per_split(train: Sequence[tuple[float, str]], valid: Sequence[str] | None = None,
                       test: Sequence[str] | None = None) -> dict[str, list[Any] | None]:
    """The `--per-split-data-args-path` JSON: train as the weighted blend; valid and test as plain
    prefix lists (evaluated whole, in proportion to their sizes), or null where there are none."""
    return {"train": _flat([(w, check_blend_path(p)) for w, p in train]),
            "valid": [check_blend_path(str(p)) for p in valid] if valid else None,
            "test": [check_blend_path(str(p)) for p in test] if test else None}


def nemo_paths(pairs: Sequence[tuple[float, str]]) -> list[Any]:
    """NeMo 2.0's `PreTrainingDataModule(paths=...)` for one distribution: [weight, prefix, weight, prefix, ...]."""
    return _flat(pairs)


def nemo_paths_per_split(train: Sequence[tuple[float, str]], valid: Sequence[str],
                         test: Sequence[str] | None = None) -> dict[str, list[Any]]:
    """NeMo 2.0's per-split `paths`: {"train": weighted flat list, "validation": prefixes, "test": prefixes}.
    NeMo needs all three keys and a path in each, so test defaults to the validation prefixes; the
    evaluation splits carry no weights because NeMo builds them whole when limit_val_batches <= 1."""
    if not valid:
        raise TrainerFileError("NeMo's per-split paths need at least one validation prefix")
    return {"train": _flat(train), "validation": [str(p) for p in valid],
            "test": [str(p) for p in (test or valid)]}


def jsonl_texts(path: str | Path) -> Iterator[str]:
    """The "text" of each line of a JSONL file, streamed (what write_documents_jsonl wrote)."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line).get("text") or ""
