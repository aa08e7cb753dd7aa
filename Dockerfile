# CLIMB Studio, CPU image. Build: docker build -t climb-studio .
# Run the demo:  docker run --rm -p 127.0.0.1:8501:8501 -e CLIMB_HOST=0.0.0.0 -e CLIMB_PASSWORD=... climb-studio
# Your corpus:   docker run --rm -v $PWD/my-ws:/ws climb-studio climb run-all /ws --input /ws/corpus.jsonl
#
# The dashboard binds 127.0.0.1 inside the container unless CLIMB_HOST says otherwise, so a plain
# `docker run -p` exposes nothing by accident. With CLIMB_HOST=0.0.0.0 (needed for -p to reach it),
# the dashboard asks for the password in CLIMB_PASSWORD and refuses to run without one: whoever
# reaches the port can read the container's files through it, write exports and start jobs.
#
# GPU: start from an NVIDIA CUDA runtime image with Python 3.11 instead, install a CUDA build of
# torch 2.13, then `pip install -r requirements-gpu.txt` (cuML k-means and UMAP); run with --gpus all.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*

# torch first and alone, so the rest cannot pull a CUDA build; then every other package from the
# hashed runtime lock (as `make install`), and the project built with the locked setuptools.
ARG TORCH_PIP_ARGS=""
RUN pip install $TORCH_PIP_ARGS torch==2.13.0
COPY requirements.lock .
RUN pip install --require-hashes -r requirements.lock

COPY . .
RUN pip install --no-deps --no-build-isolation -e . \
 && climb run-all /app/workspaces/demo --input data/demo_corpus.jsonl.gz --config configs/demo.toml --quiet \
 && climb search /app/workspaces/demo --quiet

EXPOSE 8501
# Loopback by default, as `climb dashboard` outside Docker; CLIMB_HOST=0.0.0.0 exposes it on purpose.
ENV CLIMB_HOST=127.0.0.1
CMD ["sh", "-c", "exec climb dashboard /app/workspaces/demo --host \"$CLIMB_HOST\" --port 8501 --no-browser"]
