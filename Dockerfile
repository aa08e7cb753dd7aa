# CLIMB Studio, CPU image. Build: docker build -t climb-studio .
# Run the demo:  docker run --rm -p 8501:8501 climb-studio
# Your corpus:   docker run --rm -p 8501:8501 -v $PWD/my-ws:/ws climb-studio climb run-all /ws --input /ws/corpus.jsonl
#
# GPU: start from an NVIDIA CUDA runtime image with Python 3.11 instead, install a CUDA build of
# torch 2.13, then `pip install -r requirements-gpu.txt` (cuML k-means and UMAP); run with --gpus all.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*

# torch first and alone, so the rest cannot pull a CUDA build.
ARG TORCH_PIP_ARGS=""
RUN pip install $TORCH_PIP_ARGS torch==2.13.0
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN pip install --no-deps -e . \
 && climb run-all /app/workspaces/demo --input data/demo_corpus.jsonl.gz --config configs/demo.toml --quiet \
 && climb search /app/workspaces/demo --quiet

EXPOSE 8501
# Inside a container the server must listen on all interfaces to be reachable through -p;
# outside Docker `climb dashboard` binds 127.0.0.1 by default.
CMD ["climb", "dashboard", "/app/workspaces/demo", "--host", "0.0.0.0", "--port", "8501", "--no-browser"]
