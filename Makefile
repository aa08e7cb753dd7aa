# Two commands do all the set-up on a fresh machine:
#   make demo   install, build the demo workspace from data/, run a small search, open the dashboard
#   make test   install, then run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_WS ?= workspaces/demo
HOST ?= 127.0.0.1
PORT ?= 8501
# Extra pip arguments for torch alone, e.g. a CPU-only wheel index on machines without a local wheel.
TORCH_PIP_ARGS ?=

.PHONY: install demo demo-workspace dashboard test test-fast bench clean-demo

install: $(VENV)/.installed

# torch goes in first and alone, pinned, so nothing later can pull a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

demo-workspace: install
	HF_HUB_OFFLINE=1 $(BIN)/climb run-all $(DEMO_WS) --input data/demo_corpus.jsonl.gz --config configs/demo.toml
	$(BIN)/climb search $(DEMO_WS) --name "demo: CLIMB, 3 rounds, n-gram proxies"

dashboard: install
	$(BIN)/climb dashboard $(DEMO_WS) --host $(HOST) --port $(PORT)

demo: demo-workspace dashboard

test: install
	bash scripts/run_tests.sh

test-fast: install
	$(BIN)/python -m pytest -m "not browser and not slow" -q

bench: install
	$(BIN)/python bench/run_all.py

clean-demo:
	rm -rf $(DEMO_WS)
