# Two commands: `make run` (set up + main job on an embedded local Ray) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch/torchvision pinned to the builds that lie on this machine's disk (pip takes them offline).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.stamp-install
JOB ?= jobs/quickstart.yaml
RUN_DIR ?= runs/quickstart

.PHONY: setup run test test-cluster lint report clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/rayfal run $(JOB) --run-dir $(RUN_DIR)

test: setup
	$(VENV)/bin/ruff check rayfal tests benchmarks
	$(PY) -m pytest -q -x --durations=10
	RAYFAL_CLUSTER_TESTS=1 $(PY) -m pytest -q tests/test_cluster_jobs.py

# The two-node Ray cluster test alone (head + worker via `ray start`, Jobs API submission);
# `make test` runs it too, in its own pytest process after the suite.
test-cluster: setup
	RAYFAL_CLUSTER_TESTS=1 $(PY) -m pytest -q tests/test_cluster_jobs.py

lint: setup
	$(VENV)/bin/ruff check rayfal tests benchmarks

report: setup
	$(VENV)/bin/rayfal report $(RUN_DIR)

clean:
	rm -rf runs .pytest_cache .ruff_cache
