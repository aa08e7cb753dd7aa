"""What a bare GPU machine is given (scripts/gpu_bundle.py) and how bench_gpu.py picks its parts.

The float16 copy of MiniLM must embed like the packaged model once upcast on a CPU, and weigh about
half, or the GPU embedding check would compare against the wrong baseline or its part of the
bundle would not stay under 64 MiB."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["The committee approved the budget after a long debate.",
         "Mitochondria produce most of the cell's chemical energy.",
         "This blender broke after two weeks; do not buy it.",
         "The striker scored twice in the second half."]


def _bundle_module():
    spec = importlib.util.spec_from_file_location("gpu_bundle", REPO / "scripts" / "gpu_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fp16_minilm_embeds_like_the_packaged_model(tmp_path):
    from sentence_transformers import SentenceTransformer

    from climb_core.pipeline.embed import resolve_model

    dest = tmp_path / "minilm-fp16"
    _bundle_module().minilm_fp16(dest)
    src = Path(resolve_model("all-MiniLM-L6-v2"))
    ratio = (dest / "model.safetensors").stat().st_size / (src / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    ref = SentenceTransformer(str(src), device="cpu", local_files_only=True).encode(TEXTS, normalize_embeddings=True)
    half = SentenceTransformer(str(dest), device="cpu", local_files_only=True).float()
    assert next(half.parameters()).dtype.is_floating_point and next(half.parameters()).element_size() == 4
    got = half.encode(TEXTS, normalize_embeddings=True)
    cos = np.sum(ref * got, axis=1)
    assert cos.min() > 0.999
    # Distinct texts stay distinct: the copy did not collapse to one vector.
    assert np.max(got @ got.T - np.eye(len(TEXTS))) < 0.9


def test_bench_gpu_rejects_an_unknown_part():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_gpu.py"), "--only", "proxy,warp-drive"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "warp-drive" in proc.stderr


def test_gpu_session_refuses_an_unknown_part():
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_session.sh"), "kmeans"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert "use proxy or embed" in proc.stdout
