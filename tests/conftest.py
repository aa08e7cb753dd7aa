"""Shared fixtures. Expensive things (the encoder, a small built workspace) are made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    return DATA / "demo_corpus.jsonl.gz"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


from tests.helpers import small_config, write_demo_slice  # noqa: E402


@pytest.fixture(scope="session")
def built_workspace(tmp_path_factory):
    """A workspace built by the real pipeline (ingest .. map) on 400 demo documents, once per session.

    Tests that change it must copy it first (`copy_workspace`)."""
    from climb_core.catalogue.workspace import Workspace
    from climb_core.pipeline.run import run_all

    root = tmp_path_factory.mktemp("built")
    corpus = write_demo_slice(root / "corpus.jsonl", 400)
    config = small_config()
    config.ingest.paths = [str(corpus)]
    ws = Workspace.init(root / "ws", config)
    run_all(ws, config, progress=False)
    return ws


@pytest.fixture
def copy_workspace(tmp_path):
    """Copy a workspace folder so a test can change it without touching the shared one."""
    import shutil

    from climb_core.catalogue.workspace import Workspace

    def _copy(ws):
        dest = tmp_path / "ws-copy"
        shutil.copytree(ws.root, dest)
        return Workspace.open(dest)

    return _copy
