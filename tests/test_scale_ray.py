"""Scale-out on a real (local) Ray: the embed stage with embed.executor = 'ray'.

The Ray path must give the same shards as the local path, resume a killed run at its first
unfinished shard, and share the local path's fingerprint (where it runs does not change results).
"""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
import pytest

from climb_core.pipeline import embed

from climb_core.catalogue import stages
from tests.helpers import demo_rows, documents_workspace, embed_config

pytestmark = pytest.mark.slow

N_DOCS = 150
SHARD = 50  # three shards
RAY = {"embed.executor": "ray", "embed.workers": 2, "embed.shard_size": SHARD}


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    mp = pytest.MonkeyPatch()
    # Ray writes its session under RAY_TMPDIR; a short path, as its socket paths must stay under 107 chars.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    mp.setenv("RAY_TMPDIR", ray_tmp)
    mp.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        mp.undo()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def rows():
    return demo_rows(N_DOCS)


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, rows):
    config = embed_config(**{"embed.shard_size": SHARD})
    ws = documents_workspace(tmp_path_factory.mktemp("local") / "ws", rows, config)
    embed.run_embed(ws, config, progress=False)
    return ws


def _shards(ws) -> list[np.ndarray]:
    return [np.load(p) for p in sorted(ws.embeddings_dir.glob("shard-*.npy"))]


def test_ray_embedding_equals_local(ray_session, local_ref, rows, tmp_path):
    config = embed_config(**RAY)
    ws = documents_workspace(tmp_path / "ws", rows, config)
    outcome = embed.run_embed(ws, config, progress=False)
    assert not outcome.skipped and outcome.rows_out == N_DOCS and "3 shard(s) of 384-d float16" in outcome.message
    got, ref = _shards(ws), _shards(local_ref)
    assert [len(a) for a in got] == [50, 50, 50] and all(a.dtype == np.float16 for a in got)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    assert set(stages.finished_shards(ws, "embed")) == {"shard-00000", "shard-00001", "shard-00002"}
    assert not list(ws.embeddings_dir.glob("*.tmp"))
    # Where it runs is not part of the fingerprint: the local settings find the stage up to date.
    assert embed.run_embed(ws, embed_config(**{"embed.shard_size": SHARD}), progress=False).skipped


def test_killed_ray_run_resumes_at_first_unfinished_shard(ray_session, local_ref, rows, tmp_path, monkeypatch):
    config = embed_config(**RAY)
    ws = documents_workspace(tmp_path / "ws", rows, config)
    real_mark = stages.mark_shard
    marked: list[str] = []

    def dies_after_first(ws_, stage, shard, rows_, info=None, con=None):
        if marked:
            raise KeyboardInterrupt("killed")
        marked.append(shard)
        return real_mark(ws_, stage, shard, rows_, info, con)

    monkeypatch.setattr(stages, "mark_shard", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        embed.run_embed(ws, config, progress=False)
    monkeypatch.setattr(stages, "mark_shard", real_mark)
    assert stages.stage_record(ws, "embed").status == "interrupted"
    kept = set(stages.finished_shards(ws, "embed"))
    assert kept == set(marked) and len(kept) == 1
    kept_path = ws.embeddings_dir / f"{marked[0]}.npy"
    kept_mtime = kept_path.stat().st_mtime_ns

    submitted: list[int] = []
    real_on_ray = embed._embed_on_ray

    def records(ws_, cfg, todo, bar):
        submitted.extend(i for i, _, _ in todo)
        return real_on_ray(ws_, cfg, todo, bar)

    monkeypatch.setattr(embed, "_embed_on_ray", records)
    outcome = embed.run_embed(ws, config, progress=False)
    assert "resumed, 1 shard(s) kept" in outcome.message
    assert sorted(embed.shard_name(i) for i in submitted) == sorted({"shard-00000", "shard-00001", "shard-00002"} - kept)
    assert kept_path.stat().st_mtime_ns == kept_mtime
    for a, b in zip(_shards(ws), _shards(local_ref)):
        np.testing.assert_array_equal(a, b)
