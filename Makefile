# Two commands do all the set-up on a fresh machine:
#   make demo   install, build the demo workspace from data/, run a small search, open the dashboard
#   make test   install, then run the test suite
# `make install` is the runtime (requirements.lock), `make install-dev` adds Ray, pytest and Playwright
# (requirements-dev.lock). Both locks pin every package but torch, with hashes; `make lock` rewrites
# them from requirements.txt and requirements-dev.txt.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_WS ?= workspaces/demo
HOST ?= 127.0.0.1
PORT ?= 8501
# Extra pip arguments for torch alone, e.g. a CPU-only wheel index on machines without a local wheel.
TORCH_PIP_ARGS ?=

# The version requirements.txt pins; the locks leave torch out (its wheel depends on the machine).
TORCH := torch==2.13.0
# pip-tools, for `make lock` only: in its own venv, apart from the project's.
LOCK_VENV ?= build/lock-venv
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--strip-extras --unsafe-package torch --no-emit-index-url --no-emit-find-links \
	$(if $(TORCH_PIP_ARGS),--pip-args "$(TORCH_PIP_ARGS)") $(LOCK_ARGS)

.PHONY: install install-dev lock demo demo-workspace dashboard test test-fast bench clean-demo

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# torch goes in first and alone, pinned, so nothing later can pull a multi-GB CUDA build. The lock
# (every other package, torch's dependencies at their locked versions included) is then installed in
# hash-checking mode; torch, already installed, satisfies what depends on it. The project itself
# goes in without build isolation, so its build uses the locked setuptools.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) $(TORCH)
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.lock
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	touch $@

# Resolves with this machine's pip settings, so torch must resolve to a CPU build here (pass its index
# in TORCH_PIP_ARGS where there is no local CPU wheel): a CUDA build would drag nvidia-* packages in,
# which the check below refuses. The runtime lock starts from the dev lock, so their pins agree.
# LOCK_ARGS=--upgrade moves every package to its newest allowed version.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PY) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q pip-tools==7.7.0)
	$(PIP_COMPILE) --output-file requirements-dev.lock requirements-dev.txt
	cp requirements-dev.lock requirements.lock
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	! grep -n -i '^nvidia-\|^torch==' requirements.lock requirements-dev.lock

demo-workspace: install
	HF_HUB_OFFLINE=1 $(BIN)/climb run-all $(DEMO_WS) --input data/demo_corpus.jsonl.gz --config configs/demo.toml
	$(BIN)/climb search $(DEMO_WS) --name "demo: CLIMB, 3 rounds, n-gram proxies"

dashboard: install
	$(BIN)/climb dashboard $(DEMO_WS) --host $(HOST) --port $(PORT)

demo: demo-workspace dashboard

test: install-dev
	bash scripts/run_tests.sh

test-fast: install-dev
	$(BIN)/python -m pytest -m "not browser and not slow" -q

bench: install
	$(BIN)/python bench/run_all.py

clean-demo:
	rm -rf $(DEMO_WS)
