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

.PHONY: setup run test test-cluster lint report clean setup-labelstudio test-labelstudio mutation

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

# Label Studio (a Django app whose dependencies clash with ours) lives in its own venv, used
# only by the real-server test: it starts `label-studio` on 127.0.0.1 with SQLite under the
# test's tmp dir, labels through the REST API and syncs (tests/test_label_studio.py). The install
# takes about 1.5 min and 1 GB; the test about 1 min (server start-up ~50 s on 2 cores).
LS_VENV := .venv-labelstudio
LABEL_STUDIO_VERSION := 1.23.2
LS_STAMP := $(LS_VENV)/.stamp-install

setup-labelstudio: $(LS_STAMP)

$(LS_STAMP):
	test -d $(LS_VENV) || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --no-cache-dir --upgrade pip
	$(LS_VENV)/bin/pip install -q --no-cache-dir label-studio==$(LABEL_STUDIO_VERSION)
	touch $(LS_STAMP)

test-labelstudio: setup $(LS_STAMP)
	RAYFAL_LABEL_STUDIO_BIN=$(LS_VENV)/bin/label-studio $(PY) -m pytest -q tests/test_label_studio.py

# Mutation testing of the core (mutmut, settings in setup.cfg; not part of `make test`: hours on
# 2 cores). Per module: `make mutation MODULES="evaluation ledger"`; results and the table of
# killed / survived / timeout per module: see TESTING.md. The mutated copy lives in mutants/.
MODULES ?=
mutation: setup
	$(PY) tests/run_mutation.py run $(MODULES)

lint: setup
	$(VENV)/bin/ruff check rayfal tests benchmarks

report: setup
	$(VENV)/bin/rayfal report $(RUN_DIR)

clean:
	rm -rf runs .pytest_cache .ruff_cache
