"""Encoders other than the reference SentenceTransformer, built once from the same local weights.

`torch-bf16`: the same SentenceTransformer with its weights in bfloat16. On a CPU with AMX or
AVX512-BF16 (Sapphire Rapids and later, Zen 4 and later) the matrix products run in hardware there:
measured 2.7-2.8x the documents per CPU-second of fp32 at 256 tokens, cosine to fp32 0.9999. On a CPU
without them bf16 is emulated and slower than fp32 (`cpu_has_fast_bf16` says which; the embed stage's
message says so too). Nothing is derived or cached for it.

`onnx-int8`: the transformer exported to ONNX with mean pooling and L2 normalisation inside the graph,
then dynamically quantised to int8 and run by onnxruntime on CPU. `static`: a model2vec static model
distilled from the transformer (one vector per token, averaged), for corpora where any transformer is
too slow. Both are derived from the model folder once and cached under the workspace's models/ folder;
both are offered through the two methods the embed stage calls on a SentenceTransformer (`encode` and
`get_embedding_dimension`), so the stage code is the same for every backend.

ONNX route: torch.onnx + onnxruntime.quantization, not sentence-transformers' own `backend="onnx"`.
That one goes through optimum-onnx, whose releases (0.1.0) pin transformers < 4.58, and this project
runs transformers 5.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from climb_core.catalogue.stages import StageError

BACKENDS = ("torch", "torch-bf16", "onnx-int8", "static")
# Backends that are the SentenceTransformer itself (loaded by climb_core.pipeline.embed, on `embed.device`).
TORCH_BACKENDS = ("torch", "torch-bf16")
# Part of the cache folder name: changing how a model is derived must not reuse an old derivation.
RECIPES = {"onnx-int8": "opset17-int8-perchannel-v1", "static": "m2v-pca-auto-sif1e-4-v1"}
# Not model2vec[distill]: that extra pins transformers < 5.4; distilling needs only skeletoken beside it.
INSTALL = {"onnx-int8": "pip install onnxruntime==1.30.0 onnx==1.23.1",
           "static": "pip install model2vec==0.10.0 skeletoken==0.6.1"}
# Per-tensor int8 weights cost about 0.06 of cosine to the fp32 model on MiniLM; per output channel
# keeps it near 0.994 (measured on pool documents at 256 tokens).
PER_CHANNEL = True
ONNX_FILE = "model-int8.onnx"
BUILT_MARK = "climb-built.json"
# The modules of a sentence-transformers folder that the ONNX export rebuilds (by class name, which
# stayed put when sentence-transformers moved them between packages).
ONNX_MODULES = {"Transformer", "Pooling", "Normalize"}


class BackendError(StageError):
    """A backend is unknown, lacks its optional packages, or cannot be built for this model."""


def check_backend(name: str) -> str:
    backend = (name or "torch").strip().lower()
    if backend not in BACKENDS:
        raise BackendError(f"embed.backend={name!r}: use one of {', '.join(BACKENDS)}")
    return backend


def cache_dir(models_root: Path, model_path: str, backend: str) -> Path:
    """Where the derived model of `model_path` for `backend` lives under `models_root`."""
    resolved = os.path.abspath(model_path) if os.path.exists(model_path) else model_path
    key = hashlib.sha256(f"{resolved}|{RECIPES[backend]}".encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(resolved).name or "model")
    return Path(models_root) / f"{backend}-{slug}-{key}"


def _require(backend: str, *modules: str) -> None:
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise BackendError(f"embed.backend={backend!r} needs the {module} package: {INSTALL[backend]}") from err


def prepare(backend: str, model_path: str, models_root: Path, offline: bool = True) -> Path | None:
    """Build the cached model for `backend` if it is not there yet; its folder (None for torch).

    Built in a temporary folder beside the cache and renamed into place, so a killed build leaves
    nothing that looks finished, and of two concurrent builds the first to finish wins.
    """
    backend = check_backend(backend)
    if backend in TORCH_BACKENDS:
        return None
    _require(backend, *(("onnxruntime", "onnx") if backend == "onnx-int8" else ("model2vec",)))
    target = cache_dir(models_root, model_path, backend)
    if (target / BUILT_MARK).exists():
        return target
    if not os.path.isdir(model_path):
        raise BackendError(f"embed.backend={backend!r} is built from a local model folder; {model_path!r} is not one "
                           "(set embed.model to the folder of a sentence-transformers model)")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if backend == "static":
        _require(backend, "skeletoken")  # for distilling only; a built model loads without it
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        t0 = time.perf_counter()
        if backend == "onnx-int8":
            _export_onnx_int8(model_path, tmp)
        else:
            _distill_static(model_path, tmp)
        (tmp / BUILT_MARK).write_text(json.dumps({
            "backend": backend, "source": os.path.abspath(model_path), "recipe": RECIPES[backend],
            "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / BUILT_MARK).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_seconds(folder: Path) -> float:
    """How long the build of a cached model folder took."""
    return float(json.loads((Path(folder) / BUILT_MARK).read_text())["seconds"])


def _check_onnx_modules(model_path: str) -> None:
    modules_file = Path(model_path) / "modules.json"
    if not modules_file.exists():
        return  # a plain transformers folder: mean pooling is what the torch path gives it too
    modules = json.loads(modules_file.read_text())
    other = [m["type"] for m in modules if m["type"].rsplit(".", 1)[-1] not in ONNX_MODULES]
    if other:
        raise BackendError(f"embed.backend='onnx-int8' rebuilds Transformer + mean Pooling + Normalize only; "
                           f"{model_path} also has {other}; use embed.backend=torch")
    for m in modules:
        if m["type"].endswith("Pooling"):
            pooling = json.loads((Path(model_path) / m["path"] / "config.json").read_text())
            modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
            if modes != ["pooling_mode_mean_tokens"]:
                raise BackendError(f"embed.backend='onnx-int8' supports mean pooling only; {model_path} uses {modes}")


def _export_onnx_int8(model_path: str, out: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    _check_onnx_modules(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    # Eager attention traces to plain MatMul/Softmax, which the quantiser and onnxruntime's fusions know.
    model = AutoModel.from_pretrained(model_path, attn_implementation="eager").eval()
    sample = tokenizer(["a short text", "a somewhat longer text to give the sequence axis two lengths"],
                       padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Pooled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            kw = dict(zip(names, inputs))
            hidden = self.inner(**kw).last_hidden_state
            mask = kw["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"embedding": {0: "batch"}}
    fp32 = out / "model-fp32.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        # The TorchScript exporter (dynamo=False) needs no onnxscript and gives dynamic axes directly.
        torch.onnx.export(Pooled(model), tuple(sample[n] for n in names), str(fp32), input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)
    import logging

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs a pre-processing hint at WARNING
    try:
        quantize_dynamic(str(fp32), str(out / ONNX_FILE), weight_type=QuantType.QInt8, per_channel=PER_CHANNEL)
    finally:
        logging.getLogger().setLevel(quiet)
    fp32.unlink()
    tokenizer.save_pretrained(str(out / "tokenizer"))


def _distill_static(model_path: str, out: Path) -> None:
    from model2vec.distill import distill

    # pca_dims="auto" rotates onto principal axes (which model2vec finds helps) but keeps all of the
    # encoder's dimensions; the token vocabulary is the encoder's own, so no word list is needed.
    model = distill(model_name=model_path, pca_dims="auto", device="cpu")
    model.save_pretrained(str(out / "static"))


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16; Linux flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class Bf16Encoder:
    """A SentenceTransformer in bfloat16, called like one; vectors come back float32 and unit length
    (normalised again after the cast: in bf16 the norms are off by up to ~0.3%)."""

    backend = "torch-bf16"

    def __init__(self, model):
        import torch

        self.model = model.to(torch.bfloat16)

    def get_embedding_dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: list[str], batch_size: int = 64, **_ignored) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return _normalise(vectors)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _omp_threads() -> int:
    # OMP_NUM_THREADS, 0 when unset: Ray sets it to a task's CPUs. onnxruntime ignores it, so without
    # passing it on each Ray worker would run one thread per core (0 is onnxruntime's own default).
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


MIN_THREAD_BATCH = 128  # texts: below this a thread's start costs more than it saves


def _cpus_allowed() -> int:
    """CPUs this process should use: OMP_NUM_THREADS where a scheduler set it (Ray sets a task's CPUs
    there), else the cores it may run on."""
    omp = _omp_threads()
    if omp > 0:
        return omp
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OnnxInt8Encoder:
    """The int8 ONNX encoder, called like SentenceTransformer.encode (vectors come out L2-normalised).

    Dynamic quantisation scales activations per batch, so a document's vector moves slightly with its
    batch mates (components by up to ~0.03); for a given shard_size and batch_size the stage batches
    the same way every run, so reruns and resumed runs give the same vectors.
    """

    backend = "onnx-int8"

    def __init__(self, folder: Path, max_seq_length: int):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = _omp_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: on a machine shared with other work, spinning took
        # about a fifth more CPU time for the same documents (measured) and slowed the others.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self.max_seq_length = int(max_seq_length)
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], batch_size: int = 64, **_ignored) -> np.ndarray:
        # Longest first, as sentence-transformers does, so that each batch pads to a similar length.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for lo in range(0, len(texts), batch_size):
            idx = order[lo:lo + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_seq_length, return_tensors="np")
            feed = {n: enc[n].astype(np.int64) for n in self.inputs}
            out[idx] = self.session.run(None, feed)[0]
        # Already unit length from the graph; again here so that int8 rounding leaves no drift.
        return _normalise(out)


class StaticEncoder:
    """The distilled static encoder, called like SentenceTransformer.encode (vectors L2-normalised)."""

    backend = "static"

    def __init__(self, folder: Path, max_seq_length: int):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(folder / "static"), normalize=True)
        self.max_seq_length = int(max_seq_length)
        emb = np.asarray(self.model.embedding, dtype=np.float32)
        self.dim = int(emb.shape[1])
        # A text with no known token has no vector; it gets the vocabulary's mean direction, a unit
        # vector k-means can place, instead of zeros.
        self.fallback = _normalise(emb.mean(0, keepdims=True))[0]

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], batch_size: int = 64, **_ignored) -> np.ndarray:
        # Its own batching: per-text work is a table look-up, so large batches only save overhead.
        # Tokenising is nearly all the work, and the tokenizer releases the GIL: model2vec's threaded
        # path (joblib threads over its batches, one per core) ran 1.9x one thread on 2 cores, with the
        # same vectors. It is model2vec's own path rather than threads of ours around `encode`, which
        # resets the tokenizer's truncation on every call and so cannot run twice at once. A Ray task
        # given one CPU (OMP_NUM_THREADS=1) stays on one thread. The stage hands over a few hundred
        # texts per call, so each thread gets one batch of them.
        threads = _cpus_allowed()
        threaded = threads > 1 and len(texts) >= 2 * MIN_THREAD_BATCH
        batch = max(MIN_THREAD_BATCH, -(-len(texts) // threads)) if threaded else max(1024, batch_size)
        x = np.asarray(self.model.encode(list(texts), max_length=self.max_seq_length, batch_size=batch,
                                         use_multiprocessing=threaded, multiprocessing_threshold=0,
                                         show_progress_bar=False), dtype=np.float32)
        x = x.reshape(len(texts), self.dim)
        norms = np.linalg.norm(x, axis=1)
        x[norms < 1e-6] = self.fallback
        return _normalise(x)


def load(backend: str, model_path: str, max_seq_length: int, models_root: Path | None, offline: bool = True):
    """The encoder for a non-torch backend, building its cached model first if needed."""
    backend = check_backend(backend)
    if backend in TORCH_BACKENDS:
        raise ValueError(f"the {backend} backend is loaded by climb_core.pipeline.embed")
    if models_root is None:
        raise BackendError(f"embed.backend={backend!r} caches its model in a workspace; no workspace was given")
    folder = prepare(backend, model_path, models_root, offline)
    try:
        return (OnnxInt8Encoder if backend == "onnx-int8" else StaticEncoder)(folder, max_seq_length)
    except ImportError as err:
        raise BackendError(f"embed.backend={backend!r}: {err}; {INSTALL[backend]}") from err
    except Exception as err:  # a cache folder damaged after it was marked built
        raise BackendError(f"cannot load the cached {backend} model in {folder} ({type(err).__name__}: {err}); "
                           "delete that folder to rebuild it") from err
