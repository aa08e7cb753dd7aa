"""Streaming readers: JSONL(.gz), Parquet, CSV, folders of .txt files and saved Hugging Face datasets.

Every reader yields fixed-size batches of `batch_size` input units (lines, rows or files), so memory
stays bounded on a corpus larger than RAM, and batch `i` of a file always covers the same units: a
killed ingest can skip the batches it already stored without parsing them again.

A bad record is never fatal: it becomes a `Rejected` with its file, line and reason, and reading
goes on. Only problems with a whole file (a missing text column, an unreadable format) raise
`CorpusError`.

`source_line` is the 1-based line for JSONL and CSV (the line a CSV record starts on, the header
being line 1), the 1-based row for Parquet and Hugging Face datasets, and 1 for a .txt file.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import math
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from climb_core.catalogue.stages import StageError
from climb_core.config import IngestConfig

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
FORMATS = ("auto", "jsonl", "parquet", "csv", "txt", "hf")
# A meta value whose JSON is longer than this is dropped: meta_json is for labels, not payloads.
META_VALUE_MAX_CHARS = 1000
# JSON may spell one character with a 6-byte escape, so a line longer than this cannot hold a text
# under max_chars; it is rejected without ever being held in memory whole.
_BYTES_PER_CHAR_MAX = 6
_SNIPPET = 60


class CorpusError(StageError):
    """An input file cannot be read as a corpus at all (missing text column, unknown format)."""


@dataclass(slots=True)
class Record:
    doc_id: str
    text: str
    source_file: str
    source_line: int
    preset_cluster: str | None = None
    meta_json: str | None = None


@dataclass(slots=True)
class Rejected:
    source_file: str
    source_line: int
    doc_id: str | None
    reason: str  # bad_json | bad_utf8 | not_object | missing_text | not_text | empty | too_long | bad_csv | duplicate
    detail: str


@dataclass(frozen=True)
class Source:
    """One readable unit of input: a file, a folder of .txt files, or one split of a saved HF dataset."""
    path: Path
    format: str  # jsonl | parquet | csv | txt | hf

    @property
    def key(self) -> str:
        return f"{self.format}:{self.path}"


@dataclass(slots=True)
class Batch:
    source: Source
    index: int
    items: list[Record | Rejected] = field(default_factory=list)  # in input order

    @property
    def records(self) -> list[Record]:
        return [r for r in self.items if isinstance(r, Record)]

    @property
    def rejected(self) -> list[Rejected]:
        return [r for r in self.items if isinstance(r, Rejected)]


# ----------------------------------------------------------------------------- discovery

def _suffix_format(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(".txt"):
        return "txt"
    return None


def _hf_sources(folder: Path) -> list[Source]:
    dict_file = folder / "dataset_dict.json"
    if dict_file.exists():
        splits = json.loads(dict_file.read_text(encoding="utf-8")).get("splits", [])
        return [Source(folder / s, "hf") for s in splits]
    return [Source(folder, "hf")]


def discover_sources(paths: Iterable[str | Path], fmt: str = "auto") -> list[Source]:
    """The sources behind the configured paths, in a stable order (folders are read sorted)."""
    if fmt not in FORMATS:
        raise CorpusError(f"unknown ingest.format {fmt!r}; use one of {', '.join(FORMATS)}")
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.exists():
            raise CorpusError(f"input not found: {path}")
        if path.is_file():
            kind = fmt if fmt != "auto" else _suffix_format(path)
            if kind is None:
                raise CorpusError(f"{path}: cannot tell the format from the name; set ingest.format "
                                  "(jsonl, parquet, csv, txt)")
            if kind == "hf":
                raise CorpusError(f"{path}: a Hugging Face dataset is a folder saved with save_to_disk, not a file")
            sources.append(Source(path, kind))
            continue
        if fmt == "hf" or (fmt == "auto" and any((path / m).exists() for m in HF_MARKERS)):
            sources.extend(_hf_sources(path))
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        data = [Source(p, _suffix_format(p)) for p in files if _suffix_format(p) in {"jsonl", "parquet", "csv"}]
        if fmt not in ("auto", "txt"):
            data = [s for s in data if s.format == fmt]
        if data and fmt != "txt":
            sources.extend(data)
        elif any(_suffix_format(p) == "txt" for p in files) and fmt in ("auto", "txt"):
            sources.append(Source(path, "txt"))
        else:
            raise CorpusError(f"{path}: no readable {fmt if fmt != 'auto' else 'JSONL, Parquet, CSV or .txt'} files in this folder")
    return sources


def input_facts(sources: Iterable[Source]) -> list[list[Any]]:
    """Path, size and mtime of every file behind the sources: a change in any re-runs ingest."""
    facts = []
    for src in sources:
        files = [src.path] if src.path.is_file() else sorted(p for p in src.path.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            facts.append([str(f), st.st_size, st.st_mtime_ns])
    return facts


# ----------------------------------------------------------------------------- record building

def _clip(text: str) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."


def _encodable(s: str) -> bool:
    # Lone surrogates (a JSON "\ud800" escape, or bytes smuggled in by surrogateescape) cannot be stored.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _meta_json(obj: dict[str, Any], skip: set[str]) -> str | None:
    meta = {}
    for key, value in obj.items():
        if key in skip or value is None or isinstance(value, (bytes, bytearray)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        try:
            encoded = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            continue
        if len(encoded) <= META_VALUE_MAX_CHARS:
            meta[str(key)] = value
    if not meta:
        return None
    out = json.dumps(meta, ensure_ascii=False, default=str)
    return out if _encodable(out) else json.dumps(meta, default=str)


def derived_id(source_file: str, line: int) -> str:
    return f"{Path(source_file).name}:{line}"


MAX_ID_CHARS = 1000


def _bad_id(raw: Any, text: str) -> str | None:
    """Why a given id cannot be stored as it is, or None. Ids are compared as text (1 and "1" are one id)."""
    if isinstance(raw, (bool, dict, list, tuple, bytes, bytearray)):
        return f"field {_clip(repr(raw))} as id: an id is a string or an integer, not a {type(raw).__name__}"
    if isinstance(raw, float) and not math.isfinite(raw):
        return f"id {raw!r} is not a finite number"
    if not _encodable(text):
        return f"id {_clip(ascii(text))} holds invalid UTF-8 or a lone surrogate escape"
    if len(text) > MAX_ID_CHARS:
        return f"id of {len(text):,} characters is longer than {MAX_ID_CHARS}: {_clip(text)}"
    return None


def make_record(obj: Any, source_file: str, line: int, cfg: IngestConfig,
                default_id: str | None = None) -> Record | Rejected:
    """Validate one decoded record (a dict) and turn it into a `Record`, or say why it is rejected."""
    if not isinstance(obj, dict):
        return Rejected(source_file, line, None, "not_object", f"a JSON {type(obj).__name__}, not an object")
    raw_id = obj.get(cfg.id_field) if cfg.id_field else None
    doc_id = None if raw_id is None or raw_id == "" else str(raw_id)
    if doc_id is not None:
        # A given id is the user's key for the document: one that cannot be kept as given is refused,
        # not replaced by file:line, so nothing downstream silently refers to another id.
        why = _bad_id(raw_id, doc_id)
        if why:
            return Rejected(source_file, line, None, "bad_id", why)
    doc_id = doc_id or default_id or derived_id(source_file, line)
    if cfg.text_field not in obj:
        fields = ", ".join(map(str, list(obj)[:12])) or "none"
        return Rejected(source_file, line, doc_id, "missing_text", f"no field {cfg.text_field!r} (fields: {fields})")
    text = obj[cfg.text_field]
    if text is None:
        return Rejected(source_file, line, doc_id, "missing_text", f"field {cfg.text_field!r} is null")
    if not isinstance(text, str):
        return Rejected(source_file, line, doc_id, "not_text", f"field {cfg.text_field!r} is a {type(text).__name__}, not a string")
    if len(text) > cfg.max_chars:
        return Rejected(source_file, line, doc_id, "too_long", f"{len(text):,} characters > ingest.max_chars {cfg.max_chars:,}")
    if len(text.strip()) < max(cfg.min_chars, 1):
        return Rejected(source_file, line, doc_id, "empty", f"{len(text.strip())} characters after stripping (min {cfg.min_chars})")
    if not _encodable(text):
        return Rejected(source_file, line, doc_id, "bad_utf8", "text holds invalid UTF-8 or a lone surrogate escape")
    cluster = None
    if cfg.cluster_field and obj.get(cfg.cluster_field) is not None:
        cluster = str(obj[cfg.cluster_field])
    skip = {cfg.text_field, cfg.id_field, cfg.cluster_field}
    return Record(doc_id, text, source_file, line, cluster, _meta_json(obj, skip))


# ----------------------------------------------------------------------------- unit readers
# Each yields (line, payload) per input unit; payload is decoded by the format's `_decode_*` only
# for batches that are not skipped.

def _open_binary(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


class _Damaged:
    """Payload standing for the point where a compressed file breaks off: the lines before it are kept."""
    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


# What gzip raises on a truncated or corrupt stream (BadGzipFile is an OSError; zlib.error is not).
_DAMAGE = (EOFError, OSError, zlib.error)


def _damaged(line: int, err: BaseException) -> tuple[int, _Damaged]:
    what = "ends before its end-of-stream marker (truncated)" if isinstance(err, EOFError) else f"is damaged ({err})"
    return line, _Damaged(f"the compressed file {what}; the {line - 1} line(s) before it were read")


class _Oversized:
    """Payload of a line too long to hold: only its length is kept."""
    __slots__ = ("n_bytes",)

    def __init__(self, n_bytes: int) -> None:
        self.n_bytes = n_bytes


def _jsonl_units(src: Source, cfg: IngestConfig) -> Iterator[tuple[int, Any]]:
    limit = cfg.max_chars * _BYTES_PER_CHAR_MAX + 65536
    with _open_binary(src.path) as fh:
        if src.path.name.lower().endswith((".json", ".json.gz")):
            try:
                head = fh.read(4096)
            except _DAMAGE:
                head = b""  # the line reader below reports the damage where it meets it
            if head.lstrip(codecs.BOM_UTF8 + b" \t\r\n").startswith(b"["):
                raise CorpusError(f"{src.path}: a JSON array, not JSON Lines (one object per line); convert it, e.g. "
                                  "`jq -c '.[]' in.json > out.jsonl`")
            fh.seek(0)
        line_no = 0
        while True:
            try:
                chunk = fh.readline(limit)
            except _DAMAGE as err:
                yield _damaged(line_no + 1, err)
                return
            if not chunk:
                return
            line_no += 1
            if len(chunk) >= limit and not chunk.endswith(b"\n"):
                n = len(chunk)
                try:
                    while chunk and not chunk.endswith(b"\n"):  # drain the rest of the line
                        chunk = fh.readline(limit)
                        n += len(chunk)
                except _DAMAGE as err:
                    yield _damaged(line_no, err)
                    return
                yield line_no, _Oversized(n)
                continue
            if line_no == 1 and chunk.startswith(codecs.BOM_UTF8):
                chunk = chunk[len(codecs.BOM_UTF8):]
            if chunk.strip():  # blank lines are not records
                yield line_no, chunk


def _decode_jsonl(src: Source, line: int, payload: Any, cfg: IngestConfig) -> Record | Rejected:
    name = str(src.path)
    if isinstance(payload, _Damaged):
        return Rejected(name, line, None, "damaged", payload.why)
    if isinstance(payload, _Oversized):
        return Rejected(name, line, None, "too_long", f"line of {payload.n_bytes:,} bytes cannot hold a text under "
                                                      f"ingest.max_chars {cfg.max_chars:,}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected(name, line, None, "bad_utf8", f"invalid UTF-8 byte 0x{payload[err.start]:02x} at byte {err.start}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        return Rejected(name, line, None, "bad_json", f"{err.msg} at column {err.colno}: {_clip(text.strip())}")
    except RecursionError:
        return Rejected(name, line, None, "bad_json", "nested too deeply")
    return make_record(obj, name, line, cfg)


def _check_columns(src: Source, columns: list[str], cfg: IngestConfig) -> None:
    if cfg.text_field not in columns:
        raise CorpusError(f"{src.path}: no text column {cfg.text_field!r}; columns are: {', '.join(map(str, columns))}. "
                          "Set ingest.text_field (--text-field) to the column holding the text.")


def _parquet_units(src: Source, cfg: IngestConfig) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(src.path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise CorpusError(f"{src.path}: not a readable Parquet file ({err})") from err
    _check_columns(src, pf.schema_arrow.names, cfg)
    row = 0
    for rb in pf.iter_batches(batch_size=cfg.batch_size):
        for obj in rb.to_pylist():
            row += 1
            yield row, obj


def _csv_units(src: Source, cfg: IngestConfig) -> Iterator[tuple[int, Any]]:
    # Large texts exceed csv's 128 kB default field limit; max_chars decides instead.
    csv.field_size_limit(min(2**31 - 1, max(cfg.max_chars * 4, 1 << 20)))
    delimiter = "\t" if src.path.name.lower().endswith((".tsv", ".tsv.gz")) else ","
    # surrogateescape keeps invalid bytes as lone surrogates, rejected per record in make_record.
    with io.TextIOWrapper(_open_binary(src.path), encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise CorpusError(f"{src.path} line 1: unreadable CSV header ({err})") from err
        if header is None:
            return
        _check_columns(src, header, cfg)
        start = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except _DAMAGE as err:
                yield _damaged(start, err)
                return
            except csv.Error as err:
                raise CorpusError(f"{src.path} line {start}: unreadable CSV ({err})") from err
            if fields:
                yield start, (header, fields)
            start = reader.line_num + 1


def _decode_csv(src: Source, line: int, payload: Any, cfg: IngestConfig) -> Record | Rejected:
    if isinstance(payload, _Damaged):
        return Rejected(str(src.path), line, None, "damaged", payload.why)
    header, fields = payload
    if len(fields) > len(header):
        return Rejected(str(src.path), line, None, "bad_csv", f"{len(fields)} fields but the header has {len(header)}")
    obj = dict(zip(header, fields))
    return make_record(obj, str(src.path), line, cfg)


def _txt_units(src: Source, cfg: IngestConfig) -> Iterator[tuple[int, Any]]:
    files = [src.path] if src.path.is_file() else sorted(
        p for p in src.path.rglob("*.txt") if p.is_file() and not p.name.startswith("."))
    for f in files:
        yield 1, f


def _decode_txt(src: Source, line: int, payload: Any, cfg: IngestConfig) -> Record | Rejected:
    path: Path = payload
    rel = path.name if src.path.is_file() else path.relative_to(src.path).as_posix()
    size = path.stat().st_size
    if size > cfg.max_chars * 4:  # UTF-8 needs at most 4 bytes a character: too long for sure
        return Rejected(str(path), 1, rel, "too_long", f"{size:,} bytes > 4 x ingest.max_chars {cfg.max_chars:,}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        return Rejected(str(path), 1, rel, "bad_utf8", f"invalid UTF-8 at byte {err.start}")
    return make_record({cfg.text_field: text}, str(path), 1, cfg, default_id=rel)


def _hf_units(src: Source, cfg: IngestConfig) -> Iterator[tuple[int, Any]]:
    from datasets import Dataset, load_from_disk

    try:
        ds = load_from_disk(str(src.path))
    except Exception as err:  # noqa: BLE001 - datasets raises several types for a broken folder
        raise CorpusError(f"{src.path}: not a dataset saved with save_to_disk ({err})") from err
    if not isinstance(ds, Dataset):
        raise CorpusError(f"{src.path}: holds several splits; point ingest at the folder above it")
    _check_columns(src, ds.column_names, cfg)
    for start in range(0, len(ds), cfg.batch_size):
        cols = ds[start:start + cfg.batch_size]  # memory-mapped: only this slice is decoded
        names = list(cols)
        for i, values in enumerate(zip(*(cols[n] for n in names))):
            yield start + i + 1, dict(zip(names, values))


def _decode_row(src: Source, line: int, payload: Any, cfg: IngestConfig) -> Record | Rejected:
    return make_record(payload, str(src.path), line, cfg)


_READERS = {
    "jsonl": (_jsonl_units, _decode_jsonl),
    "parquet": (_parquet_units, _decode_row),
    "csv": (_csv_units, _decode_csv),
    "txt": (_txt_units, _decode_txt),
    "hf": (_hf_units, _decode_row),
}


# ----------------------------------------------------------------------------- public API

def iter_batches(src: Source, cfg: IngestConfig, skip: Iterable[int] = ()) -> Iterator[Batch]:
    """Batches of `cfg.batch_size` units of one source; indices in `skip` are passed over undecoded."""
    units_of, decode = _READERS[src.format]
    skip = set(skip)
    units = units_of(src, cfg)
    index = 0
    while True:
        chunk = list(islice(units, cfg.batch_size))
        if not chunk:
            return
        if index not in skip:
            yield Batch(src, index, [decode(src, line, payload, cfg) for line, payload in chunk])
        index += 1


def iter_records(path: str | Path, cfg: IngestConfig) -> Iterator[Record | Rejected]:
    """Every record (or rejection) behind one input path, in input order."""
    for src in discover_sources([path], cfg.format):
        for batch in iter_batches(src, cfg):
            yield from batch.items
