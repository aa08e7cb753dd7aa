"""Embedding backends (torch, torch-bf16, onnx-int8, static) on real demo documents, all from the bundled MiniLM.

The derived models (int8 ONNX export, model2vec distillation) are built once for this module and
shared; workspaces here link their models/ folder to that one build.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError
from climb_core.pipeline import embed, embed_backends
from climb_core.pipeline.registry import UPSTREAM
from climb_core.config import ConfigError
from tests.helpers import demo_rows, documents_workspace, embed_config

pytest.importorskip("onnxruntime")
pytest.importorskip("model2vec")

N_SAMPLE = 120
DERIVED = ("onnx-int8", "static")


def backend_config(backend: str, **overrides):
    return embed_config(**{"embed.backend": backend, **overrides})


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model_path = embed.resolve_model("all-MiniLM-L6-v2")
    for backend in DERIVED:
        t0 = time.perf_counter()
        embed_backends.prepare(backend, model_path, root)
        print(f"\n{backend} model built in {time.perf_counter() - t0:.1f} s")
    return root


@pytest.fixture(scope="module")
def sample():
    """A fixed random sample across the whole demo corpus, so that all its domains are present."""
    rows = demo_rows(2000)
    pick = np.random.default_rng(0).choice(len(rows), N_SAMPLE, replace=False)
    return [rows[i]["text"] for i in pick], np.array([rows[i]["domain"] for i in pick])


@pytest.fixture(scope="module")
def vectors(models_root, sample):
    texts, _ = sample
    out = {}
    for backend in ("torch", "torch-bf16", *DERIVED):
        cfg = backend_config(backend).embed
        out[backend] = embed.encode_texts(embed.load_encoder(cfg, models_root), texts, cfg)
    return out


def linked_workspace(path: Path, rows, config, models_root: Path):
    ws = documents_workspace(path, rows, config)
    (ws.root / "models").symlink_to(models_root)
    return ws


@pytest.mark.parametrize("backend", ["torch", "torch-bf16", *DERIVED])
def test_each_backend_gives_unit_vectors(backend, vectors, sample, models_root):
    X = vectors[backend]
    assert X.shape == (N_SAMPLE, 384) and X.dtype == np.float32
    assert np.isfinite(X).all()
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    # Texts made only of what the vocabulary lacks must still give a unit vector, not zeros or NaN.
    cfg = backend_config(backend).embed
    odd = embed.encode_texts(embed.load_encoder(cfg, models_root), ["\u2603\u2603 \U0001f642", "a"], cfg)
    assert np.isfinite(odd).all()
    np.testing.assert_allclose(np.linalg.norm(odd, axis=1), 1.0, atol=1e-5)


def test_onnx_int8_is_close_to_torch(vectors):
    cos = (vectors["onnx-int8"] * vectors["torch"]).sum(1)
    print(f"\nonnx-int8 vs torch cosine: mean {cos.mean():.4f}, min {cos.min():.4f}")
    assert cos.mean() > 0.985 and cos.min() > 0.95


def test_torch_bf16_is_close_to_torch(vectors):
    cos = (vectors["torch-bf16"] * vectors["torch"]).sum(1)
    print(f"\ntorch-bf16 vs torch cosine: mean {cos.mean():.5f}, min {cos.min():.5f}")
    assert cos.mean() > 0.999 and cos.min() > 0.99
    assert not np.array_equal(vectors["torch-bf16"], vectors["torch"])  # it did run in bf16


def test_static_keeps_the_domains_apart(vectors, sample):
    """Its space is rotated (PCA), so cosine to torch means nothing; its neighbours must still agree."""
    _, domains = sample
    acc = {}
    for backend in ("torch", "static"):
        sims = vectors[backend] @ vectors[backend].T
        np.fill_diagonal(sims, -2)
        acc[backend] = float((domains[sims.argmax(1)] == domains).mean())
    print(f"\n1-NN domain agreement: {acc}")
    assert acc["static"] > 0.8 and acc["static"] > acc["torch"] - 0.1


def test_static_threads_give_the_same_vectors(models_root, monkeypatch):
    """The static encoder tokenises on every allowed core; the vectors must not depend on it, and a
    process allowed one CPU (a Ray task: OMP_NUM_THREADS=1) must stay on one thread."""
    import threading

    cfg = backend_config("static").embed
    encoder = embed.load_encoder(cfg, models_root)
    texts = [r["text"] for r in demo_rows(600)]
    seen: set[int] = set()
    real = encoder.model.tokenize

    def tokenize(*args, **kwargs):
        seen.add(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder.model, "tokenize", tokenize)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one = encoder.encode(texts)
    assert len(seen) == 1
    seen.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    two = encoder.encode(texts)
    assert len(seen) == 2
    np.testing.assert_array_equal(one, two)


def test_cached_models_are_reused(models_root, monkeypatch):
    model_path = embed.resolve_model("all-MiniLM-L6-v2")
    files = {b: sorted(p for p in embed_backends.cache_dir(models_root, model_path, b).rglob("*") if p.is_file())
             for b in DERIVED}
    before = {p: p.stat().st_mtime_ns for ps in files.values() for p in ps}

    def no_rebuild(*_args):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(embed_backends, "_export_onnx_int8", no_rebuild)
    monkeypatch.setattr(embed_backends, "_distill_static", no_rebuild)
    embed._load.cache_clear()  # a fresh process: only the files on disk remain
    for backend in DERIVED:
        encoder = embed.load_encoder(backend_config(backend).embed, models_root)
        assert encoder.backend == backend and encoder.get_embedding_dimension() == 384
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert len(list(models_root.iterdir())) == 2  # no half-built folder left beside them


def test_switching_backend_re_embeds(models_root, tmp_path):
    rows = demo_rows(24)
    ws = linked_workspace(tmp_path / "ws", rows, backend_config("torch"), models_root)
    first = embed.run_embed(ws, backend_config("torch"), progress=False)
    assert "by the torch backend" in first.message
    torch_vectors = embed.load_embeddings(ws)

    static = embed.run_embed(ws, backend_config("static"), progress=False)
    assert not static.skipped and "by the static backend" in static.message
    assert json.loads(stages.stage_record(ws, "embed").config_json)["backend"] == "static"
    assert embed.run_embed(ws, backend_config("static"), progress=False).skipped
    assert not np.allclose(embed.load_embeddings(ws), torch_vectors, atol=1e-2)

    assert not embed.run_embed(ws, backend_config("onnx-int8"), progress=False).skipped
    bf16 = embed.run_embed(ws, backend_config("torch-bf16"), progress=False)
    assert not bf16.skipped and "by the torch-bf16 backend" in bf16.message
    assert not (ws.root / "models" / "torch-bf16").exists() and len(list((ws.root / "models").iterdir())) == 2
    back = embed.run_embed(ws, backend_config("torch"), progress=False)
    assert not back.skipped
    np.testing.assert_array_equal(embed.load_embeddings(ws), torch_vectors)


def test_torch_fingerprint_is_unchanged_by_the_new_key(tmp_path):
    """Workspaces embedded before `backend` existed must stay current under the default torch."""
    rows = demo_rows(4)
    config = backend_config("torch")
    ws = documents_workspace(tmp_path / "ws", rows, config)
    section = {k: v for k, v in config.section_dict("embed").items() if k not in embed.RUN_ONLY_KEYS}
    old_section = {k: v for k, v in section.items() if k != "backend"}
    old_fp = stages.fingerprint(ws, "embed", old_section, {"n_docs": 4}, upstream=UPSTREAM["embed"])
    embed.run_embed(ws, config, progress=False)
    assert stages.stage_record(ws, "embed").fingerprint == old_fp


def test_ray_shard_task_uses_the_backend(models_root, tmp_path):
    """embed_shard_task is what each Ray worker runs; called here in-process, without a Ray cluster."""
    rows = demo_rows(30)
    config = backend_config("onnx-int8")
    ws = linked_workspace(tmp_path / "ws", rows, config, models_root)
    assert embed.embed_shard_task(str(ws.root), 0, 0, 30, config.embed) == 30
    worker = np.load(ws.embeddings_dir / "shard-00000.npy").astype(np.float32)
    cfg = config.embed
    local = embed.encode_texts(embed.load_encoder(cfg, models_root), [r["text"] for r in rows], cfg)
    np.testing.assert_allclose(worker, local, atol=2e-3)  # float16 storage


def test_bad_backend_name_is_a_clear_stage_error(tmp_path):
    with pytest.raises(ConfigError, match=r"embed\.backend = 'onnx' is not valid: valid one of torch, torch-bf16"):
        backend_config("onnx")
    # A config built around validate() still meets the stage's own check.
    config = backend_config("torch")
    config.embed.backend = "onnx"
    ws = documents_workspace(tmp_path / "ws", demo_rows(3), config)
    with pytest.raises(StageError, match=r"embed\.backend='onnx': use one of torch, torch-bf16, onnx-int8, static"):
        embed.run_embed(ws, config, progress=False)
    assert stages.stage_record(ws, "embed") is None  # refused before the stage started
    with pytest.raises(StageError, match="use one of"):
        embed.load_encoder(config.embed)


def test_missing_optional_package_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "model2vec", None)  # makes `import model2vec` fail
    with pytest.raises(embed_backends.BackendError, match=r"pip install model2vec"):
        embed_backends.prepare("static", embed.resolve_model("all-MiniLM-L6-v2"), tmp_path)
    assert not any(tmp_path.iterdir())
