#!/usr/bin/env bash
# The test suite, as CI and `make test` run it. Browser tests need Debian's chromium (/usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export RAY_AUTH_MODE=disabled
mkdir -p test-artifacts
.venv/bin/python -m pytest -q --durations=15 --junitxml=test-artifacts/junit.xml "$@"
